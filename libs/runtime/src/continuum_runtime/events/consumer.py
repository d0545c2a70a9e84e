"""Consuming events through Redis consumer groups, idempotently."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from google.protobuf.message import DecodeError, Message
from opentelemetry import trace
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.common.v1 import event_pb2
from continuum_runtime.config import EventSettings
from continuum_runtime.db import Database
from continuum_runtime.events.relay import stream_key
from continuum_runtime.events.schema import processed_events_table
from continuum_runtime.tasks import raise_if_cancelling
from continuum_runtime.telemetry import extract_context, fresh_context

log = logging.getLogger(__name__)

# A handler gets the open transaction, the envelope and the unpacked payload. Whatever it
# writes commits together with the record that the event was processed.
Handler = Callable[[AsyncSession, event_pb2.EventEnvelope, Any], Awaitable[None]]


@dataclass(frozen=True)
class HandlerSpec:
    """What to do with one event type: the payload's message class and the handler."""

    payload_type: type[Message]
    handler: Handler


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class EventConsumer:
    """Reads the producers' streams as consumer group ``group`` and runs handlers.

    * Each event is handled in one database transaction that also inserts its
      ``processed_events`` row; a redelivered event finds the row and changes nothing.
    * The message is acknowledged only after that transaction commits, so a consumer
      that crashes mid-way leaves it pending; after ``claim_idle_ms`` another consumer
      (or this one, restarted) claims it.
    * After ``max_deliveries`` failed deliveries the message moves to ``<stream>:dead``.
    * The handler's span continues the trace carried in the envelope.
    """

    def __init__(
        self,
        *,
        db: Database,
        redis: aioredis.Redis,
        namespace: str,
        group: str,
        producers: Sequence[str],
        handlers: Mapping[str, HandlerSpec],
        settings: EventSettings | None = None,
        consumer_name: str | None = None,
    ) -> None:
        self._db = db
        self._redis = redis
        self._group = group
        self._streams = [stream_key(namespace, p) for p in producers]
        self._handlers = dict(handlers)
        self._settings = settings or EventSettings()
        self.consumer_name = consumer_name or default_consumer_name()
        self._tracer = trace.get_tracer("continuum_runtime.events")
        self._groups_ready = False

    async def ensure_groups(self) -> None:
        """Create the consumer group on every stream, from the stream's beginning."""
        for stream in self._streams:
            try:
                await self._redis.xgroup_create(stream, self._group, id="0", mkstream=True)
            except aioredis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    async def poll_once(self, block_ms: int | None = None) -> int:
        """Claim stale messages, then read new ones and handle them. Returns how many."""
        if not self._groups_ready:
            await self.ensure_groups()
        handled = await self.claim_stale()
        response: Any = await self._redis.xreadgroup(
            self._group,
            self.consumer_name,
            {stream: ">" for stream in self._streams},
            count=self._settings.consumer_batch_size,
            block=self._settings.consumer_block_ms if block_ms is None else block_ms,
        )
        for stream, messages in response or []:
            stream_name = stream.decode() if isinstance(stream, bytes) else stream
            for message_id, fields in messages:
                if await self.handle(stream_name, message_id, fields):
                    handled += 1
        return handled

    async def claim_stale(self) -> int:
        """Take over messages pending longer than ``claim_idle_ms`` (crashed consumers)."""
        handled = 0
        for stream in self._streams:
            pending: Any = await self._redis.xpending_range(
                stream,
                self._group,
                min="-",
                max="+",
                count=self._settings.consumer_batch_size,
                idle=self._settings.claim_idle_ms,
            )
            for entry in pending:
                message_id = entry["message_id"]
                if entry["times_delivered"] >= self._settings.max_deliveries:
                    await self._dead_letter(stream, message_id, entry["times_delivered"])
                    continue
                claimed: Any = await self._redis.xclaim(
                    stream,
                    self._group,
                    self.consumer_name,
                    min_idle_time=self._settings.claim_idle_ms,
                    message_ids=[message_id],
                )
                for claimed_id, fields in claimed:
                    if fields and await self.handle(stream, claimed_id, fields):
                        handled += 1
        return handled

    async def _dead_letter(self, stream: str, message_id: Any, deliveries: int) -> None:
        entries: Any = await self._redis.xrange(stream, min=message_id, max=message_id)
        fields: dict[Any, Any] = dict(entries[0][1]) if entries else {}
        fields[b"deliveries"] = str(deliveries).encode()
        fields[b"group"] = self._group.encode()
        await self._redis.xadd(f"{stream}:dead", fields)
        await self._redis.xack(stream, self._group, message_id)
        log.error(
            "event moved to dead-letter stream after %d deliveries",
            deliveries,
            extra={"stream": stream, "group": self._group},
        )

    async def handle(self, stream: str, message_id: Any, fields: Mapping[bytes, bytes]) -> bool:
        """Handle one message; True if it was acknowledged."""
        raw = fields.get(b"envelope")
        envelope = event_pb2.EventEnvelope()
        try:
            if raw is None:
                raise DecodeError("no envelope field")
            envelope.ParseFromString(raw)
        except DecodeError:
            log.error("undecodable event on %s; moved to dead letters", stream)
            await self._redis.xadd(f"{stream}:dead", cast(Any, dict(fields)))
            await self._redis.xack(stream, self._group, message_id)
            return True
        spec = self._handlers.get(envelope.type)
        if spec is None:  # an event type this consumer does not care about
            await self._redis.xack(stream, self._group, message_id)
            return True
        parent = extract_context(dict(envelope.trace_context))
        with (
            fresh_context(parent),
            self._tracer.start_as_current_span(
                f"{envelope.type} process",
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "redis",
                    "messaging.destination.name": stream,
                    "messaging.consumer.group.name": self._group,
                    "messaging.message.id": envelope.id,
                    "continuum.event.type": envelope.type,
                },
            ) as span,
        ):
            try:
                payload = spec.payload_type()
                if not envelope.payload.Unpack(payload):
                    raise ValueError(f"payload is {envelope.payload.type_url}")
                await self._run_once(envelope, spec, payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()  # a cancel the driver turned into its own error
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR))
                log.warning(
                    "event handler failed; will be redelivered",
                    extra={"event_type": envelope.type, "error": type(exc).__name__},
                    exc_info=True,
                )
                return False
        await self._redis.xack(stream, self._group, message_id)
        return True

    async def _run_once(
        self, envelope: event_pb2.EventEnvelope, spec: HandlerSpec, payload: Message
    ) -> None:
        async with self._db.transaction() as session:
            inserted = await session.execute(
                pg_insert(processed_events_table)
                .values(consumer_group=self._group, event_id=envelope.id, event_type=envelope.type)
                .on_conflict_do_nothing()
                .returning(processed_events_table.c.event_id)
            )
            if inserted.first() is None:
                return  # already processed: a redelivery changes nothing
            await spec.handler(session, envelope, payload)

    async def already_processed(self, event_id: str) -> bool:
        async with self._db.sessions() as session:
            row = await session.execute(
                select(processed_events_table.c.event_id).where(
                    processed_events_table.c.consumer_group == self._group,
                    processed_events_table.c.event_id == event_id,
                )
            )
            return row.first() is not None

    async def run(self) -> None:
        """Consume until cancelled; survives database and Redis outages."""
        backoff = 0.1
        while True:
            # A cancel swallowed anywhere below (a driver's error, a handler) still stops us.
            raise_if_cancelling()
            try:
                await self.poll_once()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                log.warning(
                    "event consumer %s failed, retrying: %s", self._group, type(exc).__name__
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


__all__ = ["EventConsumer", "Handler", "HandlerSpec"]
