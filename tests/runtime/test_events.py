"""The outbox, the relay and consumer groups against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from google.protobuf import wrappers_pb2
from opentelemetry import trace
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.common.v1 import event_pb2
from continuum_runtime.config import EventSettings
from continuum_runtime.db import Database
from continuum_runtime.events import (
    EventConsumer,
    HandlerSpec,
    OutboxRelay,
    add_event,
    outbox_table,
    stream_key,
)
from continuum_runtime.migrations import upgrade
from continuum_runtime.telemetry import quiet
from continuum_runtime.testing import eventually

MIGRATIONS = Path(__file__).parent / "app_migrations"
FAST = EventSettings(consumer_block_ms=50, claim_idle_ms=200, relay_poll_interval_s=0.02)


@pytest.fixture
async def db(database: Database) -> Database:
    await upgrade(database.engine, MIGRATIONS)
    return database


async def create_note(db: Database, note_id: str, body: str = "hello") -> None:
    """A change and its event, committed together."""
    async with db.transaction() as session:
        await session.execute(
            text("INSERT INTO notes (id, body) VALUES (:id, :body)"), {"id": note_id, "body": body}
        )
        await add_event(
            session,
            producer="notes",
            event_type="notes.note_created",
            subject=note_id,
            payload=wrappers_pb2.StringValue(value=note_id),
        )


async def count_note(
    session: AsyncSession, envelope: event_pb2.EventEnvelope, payload: Any
) -> None:
    """The consumer's effect: count how often each note was seen."""
    await session.execute(
        text(
            "INSERT INTO note_counts (note_id, seen) VALUES (:id, 1) "
            "ON CONFLICT (note_id) DO UPDATE SET seen = note_counts.seen + 1"
        ),
        {"id": payload.value},
    )


def consumer(db: Database, redis: aioredis.Redis, ns: str, **kwargs: Any) -> EventConsumer:
    handlers = kwargs.pop("handlers", None) or {
        "notes.note_created": HandlerSpec(wrappers_pb2.StringValue, count_note)
    }
    return EventConsumer(
        db=db,
        redis=redis,
        namespace=ns,
        group="counter",
        producers=["notes"],
        handlers=handlers,
        settings=FAST,
        **kwargs,
    )


async def seen(db: Database) -> dict[str, int]:
    async with db.sessions() as session:
        rows = await session.execute(text("SELECT note_id, seen FROM note_counts"))
        return {row.note_id: row.seen for row in rows}


async def unpublished(db: Database) -> int:
    async with db.sessions() as session:
        return int(
            (
                await session.execute(
                    select(func.count()).where(outbox_table.c.published_at.is_(None))
                )
            ).scalar_one()
        )


async def test_committed_event_reaches_consumer_once(db, redis_client, redis_namespace) -> None:  # type: ignore[no-untyped-def]
    await create_note(db, "n1")
    relay = OutboxRelay(db, redis_client, namespace=redis_namespace, settings=FAST)
    assert await relay.publish_pending() == 1
    assert await unpublished(db) == 0
    c = consumer(db, redis_client, redis_namespace)
    await c.poll_once(block_ms=100)
    assert await seen(db) == {"n1": 1}


async def test_rolled_back_change_publishes_nothing(db, redis_client, redis_namespace) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await add_event(
                session,
                producer="notes",
                event_type="notes.note_created",
                subject="n2",
                payload=wrappers_pb2.StringValue(value="n2"),
            )
            raise RuntimeError("the change failed")
    relay = OutboxRelay(db, redis_client, namespace=redis_namespace, settings=FAST)
    assert await relay.publish_pending() == 0
    assert await redis_client.exists(stream_key(redis_namespace, "notes")) == 0


async def test_event_survives_relay_killed_between_commit_and_publish(
    db, redis_client, redis_namespace
) -> None:  # type: ignore[no-untyped-def]
    class DiesBeforePublishing(OutboxRelay):
        async def _publish(self, rows: Any) -> None:
            raise ConnectionError("relay process killed")

    await create_note(db, "n3")
    with pytest.raises(ConnectionError):
        await DiesBeforePublishing(db, redis_client, namespace=redis_namespace).publish_pending()
    assert await unpublished(db) == 1  # still waiting in the outbox

    relay_task = asyncio.create_task(
        OutboxRelay(db, redis_client, namespace=redis_namespace, settings=FAST).run()
    )
    c = consumer(db, redis_client, redis_namespace)
    consumer_task = asyncio.create_task(c.run())
    try:
        await eventually(lambda: _seen_is(db, {"n3": 1}))
    finally:
        for task in (relay_task, consumer_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_relay_dying_after_publish_republishes_and_consumer_dedupes(
    db, redis_client, redis_namespace
) -> None:  # type: ignore[no-untyped-def]
    class DiesAfterPublishing(OutboxRelay):
        async def _mark_published(self, seqs: list[int], session: Any) -> None:
            raise ConnectionError("relay process killed before marking")

    await create_note(db, "n4")
    with pytest.raises(ConnectionError):
        await DiesAfterPublishing(db, redis_client, namespace=redis_namespace).publish_pending()
    assert await OutboxRelay(db, redis_client, namespace=redis_namespace).publish_pending() == 1
    stream = stream_key(redis_namespace, "notes")
    assert await redis_client.xlen(stream) == 2  # the same event, published twice

    c = consumer(db, redis_client, redis_namespace)
    await c.poll_once(block_ms=100)
    assert await seen(db) == {"n4": 1}


async def test_redelivered_event_changes_nothing(db, redis_client, redis_namespace) -> None:  # type: ignore[no-untyped-def]
    await create_note(db, "n5")
    await OutboxRelay(db, redis_client, namespace=redis_namespace).publish_pending()
    c = consumer(db, redis_client, redis_namespace)
    await c.poll_once(block_ms=100)
    stream = stream_key(redis_namespace, "notes")
    ((message_id, fields),) = await redis_client.xrange(stream)
    # Deliver the very same message again, as Redis would after a lost acknowledgement.
    assert await c.handle(stream, message_id, fields)
    await c.poll_once(block_ms=50)
    assert await seen(db) == {"n5": 1}


async def test_crashed_consumers_message_is_claimed_by_another(
    db, redis_client, redis_namespace
) -> None:  # type: ignore[no-untyped-def]
    crashing = asyncio.Event()

    async def crash(session: AsyncSession, envelope: event_pb2.EventEnvelope, payload: Any) -> None:
        await count_note(session, envelope, payload)  # written, then the process dies
        crashing.set()
        raise SystemExit("consumer process died")  # nothing commits, nothing is acked

    await create_note(db, "n6")
    await OutboxRelay(db, redis_client, namespace=redis_namespace).publish_pending()
    first = consumer(
        db,
        redis_client,
        redis_namespace,
        consumer_name="a",
        handlers={"notes.note_created": HandlerSpec(wrappers_pb2.StringValue, crash)},
    )
    with pytest.raises(SystemExit):
        await first.poll_once(block_ms=100)
    assert crashing.is_set()
    assert await seen(db) == {}
    pending = await redis_client.xpending(stream_key(redis_namespace, "notes"), "counter")
    assert pending["pending"] == 1

    second = consumer(db, redis_client, redis_namespace, consumer_name="b")
    await asyncio.sleep(FAST.claim_idle_ms / 1000 + 0.05)
    await second.poll_once(block_ms=50)
    assert await seen(db) == {"n6": 1}
    pending = await redis_client.xpending(stream_key(redis_namespace, "notes"), "counter")
    assert pending["pending"] == 0


async def test_poison_message_goes_to_dead_letters(db, redis_client, redis_namespace) -> None:  # type: ignore[no-untyped-def]
    async def always_fails(session: AsyncSession, envelope: Any, payload: Any) -> None:
        raise ValueError("cannot handle")

    settings = EventSettings(consumer_block_ms=20, claim_idle_ms=1, max_deliveries=3)
    await create_note(db, "n7")
    await OutboxRelay(db, redis_client, namespace=redis_namespace).publish_pending()
    c = EventConsumer(
        db=db,
        redis=redis_client,
        namespace=redis_namespace,
        group="counter",
        producers=["notes"],
        handlers={"notes.note_created": HandlerSpec(wrappers_pb2.StringValue, always_fails)},
        settings=settings,
    )
    stream = stream_key(redis_namespace, "notes")
    for _ in range(6):
        await c.poll_once(block_ms=5)
        await asyncio.sleep(0.01)
    assert await redis_client.xlen(f"{stream}:dead") == 1
    assert (await redis_client.xpending(stream, "counter"))["pending"] == 0


async def test_trace_context_crosses_the_event(db, redis_client, redis_namespace, spans) -> None:  # type: ignore[no-untyped-def]
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("check-in request") as producer_span:
        await create_note(db, "n8")
        trace_id = producer_span.get_span_context().trace_id
    await OutboxRelay(db, redis_client, namespace=redis_namespace).publish_pending()
    await consumer(db, redis_client, redis_namespace).poll_once(block_ms=100)
    assert await seen(db) == {"n8": 1}

    finished = spans.get_finished_spans()
    consumer_spans = [s for s in finished if s.name == "notes.note_created process"]
    assert len(consumer_spans) == 1
    assert consumer_spans[0].context.trace_id == trace_id
    assert consumer_spans[0].kind is trace.SpanKind.CONSUMER
    # The handler's own database statements belong to the same trace.
    db_spans = [
        s
        for s in finished
        if s.context.trace_id == trace_id and "note_counts" in s.name + str(s.attributes)
    ]
    assert db_spans


async def test_quiet_loops_trace_their_work_but_not_their_idle_polls(  # type: ignore[no-untyped-def]
    db, redis_client, redis_namespace, spans
) -> None:
    """Background loops run under quiet() (as the server starts them): polling an empty
    outbox and an empty stream makes no spans; a published batch and a handled event do,
    the handler's in the producer's trace."""
    relay = OutboxRelay(db, redis_client, namespace=redis_namespace)
    reader = consumer(db, redis_client, redis_namespace)
    with quiet():
        assert await relay.publish_pending() == 0
        assert await reader.poll_once(block_ms=20) == 0
    assert spans.get_finished_spans() == ()

    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as producer_span:
        await create_note(db, "n9")
        trace_id = producer_span.get_span_context().trace_id
    spans.clear()
    with quiet():
        assert await relay.publish_pending() == 1
        await reader.poll_once(block_ms=100)
    assert await seen(db) == {"n9": 1}
    finished = spans.get_finished_spans()
    publish = [s for s in finished if s.name == "outbox.publish"]
    assert len(publish) == 1
    assert any(
        s.parent is not None and s.parent.span_id == publish[0].context.span_id for s in finished
    ), "the batch's statements and XADD are inside the publish span"
    handled = [s for s in finished if s.name == "notes.note_created process"]
    assert [s.context.trace_id for s in handled] == [trace_id]
    assert any(
        s.context.trace_id == trace_id and "note_counts" in s.name + str(s.attributes)
        for s in finished
    ), "the handler's statements are traced although its loop is quiet"


async def _seen_is(db: Database, expected: dict[str, int]) -> bool:
    return await seen(db) == expected
