"""Ingestion: per-event results, duplicates, streaming, resolution and bad input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2

from continuum.profile.v1 import profile_resources_pb2 as res
from continuum.profile.v1 import profile_service_pb2 as pb
from continuum_runtime.embedded import to_asyncpg_dsn
from continuum_runtime.testing import eventually
from tests.profile.conftest import Stack
from tests.profile.factory import (
    account,
    at,
    carted,
    derived,
    device,
    email,
    event,
    ingest,
    product,
    timeline,
    viewed,
)

S = pb.EventResultStatus
R = pb.EventRejectionReason


async def test_a_bad_event_is_rejected_on_its_own_and_the_good_ones_are_kept(stack: Stack) -> None:
    ids = [email("ana@example.com")]
    good1 = viewed(ids, product("SKU-1"))
    no_kind = event(ids)
    no_ids = viewed([], product("SKU-2"))
    future = viewed(ids, product("SKU-3"), when=at(-3600))
    too_old = viewed(ids, product("SKU-4"), when=at(3 * 365 * 86400))
    bad_field = event(ids, cart_item_added=res.CartItemAdded(product=product("SKU-5"), quantity=0))
    good2 = carted(ids, product("SKU-6"))
    answer = await ingest(stack, [good1, no_kind, no_ids, future, too_old, bad_field, good2])

    assert [r.status for r in answer.results] == [
        S.EVENT_RESULT_STATUS_ACCEPTED,
        *[S.EVENT_RESULT_STATUS_REJECTED] * 5,
        S.EVENT_RESULT_STATUS_ACCEPTED,
    ]
    assert [r.rejection_reason for r in answer.results[1:6]] == [
        R.EVENT_REJECTION_REASON_UNKNOWN_EVENT_TYPE,
        R.EVENT_REJECTION_REASON_MISSING_IDENTIFIERS,
        R.EVENT_REJECTION_REASON_TIME_IN_FUTURE,
        R.EVENT_REJECTION_REASON_TIME_TOO_OLD,
        R.EVENT_REJECTION_REASON_INVALID_FIELD,
    ]
    assert [v.field for v in answer.results[5].field_violations] == ["cart_item_added.quantity"]
    assert answer.results[3].field_violations[0].field == "occur_time"
    assert (answer.accepted_count, answer.duplicate_count, answer.rejected_count) == (2, 0, 5)
    customer = answer.results[0].customer_id
    assert customer
    assert answer.results[6].customer_id == customer
    stored = await timeline(stack, customer_id=customer)
    assert {e.event_id for e in stored} == {good1.event_id, good2.event_id}


async def test_duplicates_are_ignored_and_a_reused_event_id_is_a_conflict(stack: Stack) -> None:
    ids = [email("bo@example.com")]
    first = viewed(ids, product("SKU-1"))
    answer = await ingest(stack, [first, first])
    assert [r.status for r in answer.results] == [
        S.EVENT_RESULT_STATUS_ACCEPTED,
        S.EVENT_RESULT_STATUS_DUPLICATE,
    ]
    again = await ingest(stack, [first])
    assert again.results[0].status == S.EVENT_RESULT_STATUS_DUPLICATE
    other = viewed(ids, product("SKU-OTHER"), event_id=first.event_id)
    conflict = await ingest(stack, [other])
    assert conflict.results[0].rejection_reason == R.EVENT_REJECTION_REASON_EVENT_ID_CONFLICT
    stored = await timeline(stack, customer_id=answer.results[0].customer_id)
    assert len(stored) == 1
    assert stored[0].product_viewed.product.sku == "SKU-1"


async def test_streaming_ingestion_counts_every_message_and_lists_rejections(stack: Stack) -> None:
    ids = [email("cy@example.com")]
    batches = [[viewed(ids, product(f"SKU-{i}-{j}")) for j in range(50)] for i in range(4)]
    batches[2][7] = event(ids)  # no kind

    async def messages() -> AsyncIterator[pb.StreamEventsRequest]:
        for batch in batches:
            yield pb.StreamEventsRequest(events=batch)

    answer = await stack.profile.StreamEvents(messages(), metadata=stack.metadata)
    assert (answer.accepted_count, answer.duplicate_count, answer.rejected_count) == (199, 0, 1)
    assert len(answer.rejections) == 1
    assert answer.rejections[0].message_index == 2
    assert answer.rejections[0].result.index == 7


async def test_two_events_with_one_email_land_on_one_customer(stack: Stack) -> None:
    a = await ingest(stack, [viewed([email("Dee@Example.com")], product("SKU-1"))])
    b = await ingest(
        stack, [viewed([email("dee@example.com"), account("acct-dee")], product("SKU-2"))]
    )
    assert a.results[0].customer_id == b.results[0].customer_id != ""
    p = await derived(stack, a.results[0].customer_id, 2)
    assert {s.product.sku for s in p.intent_signals.viewed_repeatedly} == set()
    assert p.channel_activity[0].event_count == 2


async def test_oversized_and_empty_batches_fail_whole_with_field_violations(stack: Stack) -> None:
    ids = [device("dev-1")]
    for events in ([], [viewed(ids, product(f"S{i}")) for i in range(1001)]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ingest(stack, events)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        trailing: Any = caught.value.trailing_metadata() or ()
        details = dict(trailing)["grpc-status-details-bin"]
        from google.rpc import status_pb2

        parsed = status_pb2.Status.FromString(details)
        bad = error_details_pb2.BadRequest()
        assert any(d.Unpack(bad) for d in parsed.details)
        assert [v.field for v in bad.field_violations] == ["events"]


async def test_identifiers_identity_refuses_reject_the_event_with_the_reason(stack: Stack) -> None:
    answer = await ingest(
        stack,
        [
            viewed([email("not-an-email")], product("SKU-1")),
            viewed([email("e@x.com")], product("S")),
        ],
    )
    assert answer.results[0].rejection_reason == R.EVENT_REJECTION_REASON_INVALID_FIELD
    assert answer.results[0].field_violations
    assert answer.results[1].status == S.EVENT_RESULT_STATUS_ACCEPTED
    assert time.time() > 0


async def test_ingestion_waits_while_the_deriver_is_behind_and_never_for_longer_than_the_hold(
    stack: Stack,
) -> None:
    """Backpressure: a batch is held while the deriver's queue is behind (so that accepted
    events show in profiles within about a second), released when it catches up, and
    stored anyway once ingest.max_hold_s (2 s here) has passed."""
    db = stack.profile_ctx.db
    first = await ingest(stack, [viewed([email("held@example.com")], product("SKU-1"))])
    customer = first.results[0].customer_id
    await derived(stack, customer, 1)

    async def blocked_deriver() -> bool:
        rows = await db.fetch(
            "test.waits",
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND query LIKE '%UPDATE profiles%'",
        )
        return bool(rows[0][0])

    async def held_call(address: str) -> asyncio.Task[pb.IngestEventsResponse]:
        task = asyncio.create_task(ingest(stack, [viewed([email(address)], product("SKU-2"))]))
        await asyncio.sleep(0.5)
        assert not task.done(), "the batch was stored while the deriver was behind"
        return task

    for release_after_hold in (False, True):
        # The customer comes due again, 10 s ago: the deriver claims it (10 s behind) and
        # then waits on the lock this transaction holds on the profile row.
        locker = await asyncpg.connect(to_asyncpg_dsn(db.url))
        try:
            lock = locker.transaction()
            await lock.start()
            await locker.execute(
                "SELECT 1 FROM profiles WHERE customer_id = $1 FOR UPDATE", customer
            )
            await db.fetch(
                "test.due",
                "INSERT INTO dirty_customers (customer_id, since, due_at) "
                "VALUES ($1, now(), now() - interval '10 s') ON CONFLICT (customer_id) "
                "DO UPDATE SET due_at = excluded.due_at, gen = dirty_customers.gen + 1",
                customer,
            )
            await eventually(blocked_deriver, timeout_s=10)
            task = await held_call(f"held{int(release_after_hold)}@example.com")
            if release_after_hold:
                answer = await asyncio.wait_for(task, timeout=10)  # the hold ran out
                assert await blocked_deriver()
            await lock.rollback()  # the deriver goes on (and with it a held batch)
            answer = await asyncio.wait_for(task, timeout=10)
        finally:
            await locker.close()
        assert answer.accepted_count == 1
        assert answer.results[0].status == S.EVENT_RESULT_STATUS_ACCEPTED
        await derived(stack, answer.results[0].customer_id, 1)
