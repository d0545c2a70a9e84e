"""The outbox relay: committed events to Redis Streams, in commit order."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from opentelemetry import trace
from sqlalchemy import delete, func, select, text, update

from continuum_runtime.config import EventSettings
from continuum_runtime.db import Database
from continuum_runtime.events.schema import outbox_table, processed_events_table
from continuum_runtime.tasks import raise_if_cancelling
from continuum_runtime.telemetry import fresh_context

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("continuum_runtime.events.relay")

# One relay per service database publishes at a time, which keeps the stream in order.
_RELAY_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtext('continuum-outbox-relay'))")


def stream_key(namespace: str, producer: str) -> str:
    """The Redis stream a producer's events go to."""
    return f"{namespace}:events:{producer}"


_PENDING_SQL = "SELECT EXISTS (SELECT 1 FROM outbox WHERE published_at IS NULL)"


class OutboxRelay:
    """Publishes committed outbox rows to Redis Streams and marks them published.

    If the relay dies after publishing but before marking, the next run publishes the
    same events again: delivery is at least once and consumers deduplicate by event id.
    """

    def __init__(
        self,
        db: Database,
        redis: aioredis.Redis,
        *,
        namespace: str,
        settings: EventSettings | None = None,
    ) -> None:
        self._db = db
        self._redis = redis
        self._namespace = namespace
        self._settings = settings or EventSettings()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Publish now rather than at the next poll (call after committing events)."""
        self._wake.set()

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished events; returns how many were published."""
        # The idle poll is one indexed read on the driver-level pool; the locked
        # transaction runs only when there is something to publish.
        pending = await self._db.fetch("SELECT outbox.pending", _PENDING_SQL)
        if not pending[0][0]:
            return 0
        # Publishing is traced (a trace of its own per batch), the idle poll is not.
        with fresh_context(), _tracer.start_as_current_span("outbox.publish"):
            return await self._publish_batch()

    async def _publish_batch(self) -> int:
        async with self._db.transaction() as session:
            locked = (await session.execute(_RELAY_LOCK)).scalar_one()
            if not locked:
                return 0
            rows = (
                await session.execute(
                    select(
                        outbox_table.c.seq,
                        outbox_table.c.event_id,
                        outbox_table.c.producer,
                        outbox_table.c.event_type,
                        outbox_table.c.envelope,
                    )
                    .where(outbox_table.c.published_at.is_(None))
                    .order_by(outbox_table.c.seq)
                    .limit(self._settings.relay_batch_size)
                )
            ).all()
            if not rows:
                return 0
            await self._publish(rows)
            await self._mark_published([row.seq for row in rows], session)
        return len(rows)

    async def _publish(self, rows: Any) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for row in rows:
            pipe.xadd(
                stream_key(self._namespace, row.producer),
                {"id": str(row.event_id), "type": row.event_type, "envelope": row.envelope},
                maxlen=self._settings.stream_maxlen,
                approximate=True,
            )
        await pipe.execute()

    async def _mark_published(self, seqs: list[int], session: Any) -> None:
        await session.execute(
            update(outbox_table).where(outbox_table.c.seq.in_(seqs)).values(published_at=func.now())
        )

    async def run(self) -> None:
        """Relay until cancelled; survives database and Redis outages."""
        backoff = self._settings.relay_poll_interval_s
        while True:
            raise_if_cancelling()  # a cancel swallowed below still stops the relay
            try:
                published = await self.publish_pending()
                backoff = self._settings.relay_poll_interval_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                log.warning("outbox relay failed, retrying: %s", type(exc).__name__)
                published = 0
                backoff = min(backoff * 2, 5.0)
            if published >= self._settings.relay_batch_size:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            except TimeoutError:
                pass

    async def prune(self, *, older_than_s: float = 7 * 24 * 3600.0) -> int:
        """Delete published outbox rows and processed-event records older than this."""
        interval = text(f"now() - make_interval(secs => {float(older_than_s)})")
        async with self._db.transaction() as session:
            out = await session.execute(
                delete(outbox_table).where(
                    outbox_table.c.published_at.is_not(None),
                    outbox_table.c.published_at < interval,
                )
            )
            done = await session.execute(
                delete(processed_events_table).where(
                    processed_events_table.c.processed_at < interval
                )
            )
        return int(getattr(out, "rowcount", 0) or 0) + int(getattr(done, "rowcount", 0) or 0)
