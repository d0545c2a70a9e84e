"""The store feed: a Redis Stream per store, written through a database queue, read by
every replica.

Writing: a feed item is inserted into ``feed_pending`` in the same transaction as the
change it reports (briefing, action update, handoff). After the commit it is moved to the
store's stream (``<namespace>:notification:feed:<store>``): the row is deleted in a
transaction that also XADDs it, so a crash or a Redis outage leaves the row for the
re-publisher loop, which retries older rows. The stream is trimmed to the feed retention
by entry id (MINID).

Reading: the stream entry id is the item's cursor (``<ms>-<n>``) and gives its sequence,
so a cursor is valid on every replica and across restarts. Each replica runs one reader
task per store that has local subscribers (XREAD BLOCK) and fans the entries out to the
subscribers' queues; a subscriber first registers, then reads the backlog after its
cursor with XRANGE, then takes live entries newer than the last one it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.notification.v1 import notification_resources_pb2 as res
from continuum_runtime.db import Database
from continuum_runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument
from continuum_runtime.tasks import raise_if_cancelling

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000


def feed_key(namespace: str, store_id: str) -> str:
    return f"{namespace}:notification:feed:{store_id}"


def parse_cursor(cursor: str) -> tuple[int, int]:
    """``<ms>-<n>`` as integers; INVALID_ARGUMENT for anything else."""
    ms, sep, n = cursor.partition("-")
    if not sep or not ms.isdigit() or not n.isdigit():
        raise InvalidArgument(
            "resume_after is not a cursor this feed issued",
            reason="INVALID_CURSOR",
            violations=[FieldViolation("resume_after", "not a feed cursor", "INVALID_CURSOR")],
        )
    return int(ms), int(n)


def sequence_of(cursor: str) -> int:
    ms, n = parse_cursor(cursor)
    return ms * 1_000_000 + n


def _id(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def item_from_entry(entry_id: Any, fields: dict[Any, Any]) -> res.FeedItem:
    item = res.FeedItem.FromString(fields[b"item"])
    cursor = _id(entry_id)
    item.cursor = cursor
    item.sequence = sequence_of(cursor)
    return item


async def enqueue(session: AsyncSession, item: res.FeedItem) -> int:
    """Queue ``item`` for the store's feed, in the caller's transaction; its queue seq."""
    if not item.HasField("publish_time"):
        item.publish_time.GetCurrentTime()
    seq = (
        await session.execute(
            text("INSERT INTO feed_pending (store_id, body) VALUES (:s, :b) RETURNING seq"),
            {"s": item.store_id, "b": item.SerializeToString()},
        )
    ).scalar_one()
    return int(seq)


class FeedPublisher:
    """Moves queued feed items onto the stores' streams."""

    def __init__(
        self,
        db: Database,
        redis: aioredis.Redis,
        namespace: str,
        retention_s: Callable[[], Awaitable[float]],
    ) -> None:
        self._db = db
        self._redis = redis
        self._namespace = namespace
        self._retention_s = retention_s

    async def _xadd(self, store_id: str, body: bytes) -> None:
        min_id = f"{int((time.time() - await self._retention_s()) * 1000)}-0"
        await self._redis.xadd(
            feed_key(self._namespace, store_id),
            {"item": body},
            minid=min_id,
            approximate=True,
        )

    async def publish(self, seqs: Sequence[int]) -> int:
        """Publish the queued items ``seqs`` (those still queued); how many were."""
        if not seqs:
            return 0
        async with self._db.transaction() as session:
            rows = (
                await session.execute(
                    text(
                        "DELETE FROM feed_pending WHERE seq IN ("
                        " SELECT seq FROM feed_pending WHERE seq = ANY(:seqs)"
                        " ORDER BY seq FOR UPDATE SKIP LOCKED)"
                        " RETURNING seq, store_id, body"
                    ),
                    {"seqs": list(seqs)},
                )
            ).all()
            for row in sorted(rows, key=lambda r: int(r.seq)):
                await self._xadd(row.store_id, bytes(row.body))
        return len(rows)

    async def publish_one(self, seq: int, store_id: str, item: res.FeedItem) -> None:
        """The check-in hot path: XADD the item just committed, then drop its queue row
        (one autocommit statement). A failure leaves the row to the re-publisher, which
        only takes rows older than ``STALE_S``."""
        try:
            await self._xadd(store_id, item.SerializeToString())
            await self._db.statements.execute(
                text("DELETE FROM feed_pending WHERE seq = :s"), {"s": seq}
            )
        except Exception:
            raise_if_cancelling()
            log.warning("feed publish deferred", exc_info=True)

    async def publish_now(self, seqs: Sequence[int]) -> None:
        """Best effort right after a commit: a failure leaves the items to the loop."""
        try:
            await self.publish(seqs)
        except Exception:
            raise_if_cancelling()
            log.warning("feed publish deferred", exc_info=True)

    async def republish_stale(self, older_than_s: float = 10.0, batch: int = 200) -> int:
        async with self._db.reader() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT seq FROM feed_pending"
                        " WHERE created_at < now() - make_interval(secs => :age)"
                        " ORDER BY seq LIMIT :n"
                    ),
                    {"age": older_than_s, "n": batch},
                )
            ).all()
        return await self.publish([int(r.seq) for r in rows])


@dataclass(eq=False)
class Subscription:
    store_id: str
    queue: asyncio.Queue[tuple[str, dict[Any, Any]]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT)
    )
    overflowed: bool = False


class _StoreReader:
    def __init__(self, hub: FeedHub, store_id: str, start_id: str) -> None:
        self.subs: set[Subscription] = set()
        self.hub = hub
        self.store_id = store_id
        self.last_id = start_id
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        key = feed_key(self.hub.namespace, self.store_id)
        while self.subs:
            try:
                answer = await self.hub.redis.xread({key: self.last_id}, block=1000, count=500)
            except Exception:
                raise_if_cancelling()
                log.warning("feed read failed", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            streams: Any = answer or ()
            for _stream, entries in streams:
                for entry_id, fields in entries:
                    self.last_id = _id(entry_id)
                    for sub in list(self.subs):
                        try:
                            sub.queue.put_nowait((self.last_id, fields))
                        except asyncio.QueueFull:
                            sub.overflowed = True


class FeedHub:
    """One stream reader per store with local subscribers, fanning out to queues."""

    def __init__(self, redis: aioredis.Redis, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self._readers: dict[str, _StoreReader] = {}
        self._lock = asyncio.Lock()

    async def top_id(self, store_id: str) -> str:
        """The id of the newest entry of the store's stream ("0-0" when empty)."""
        newest = await self.redis.xrevrange(feed_key(self.namespace, store_id), count=1)
        return _id(newest[0][0]) if newest else "0-0"

    async def subscribe(self, store_id: str) -> Subscription:
        sub = Subscription(store_id)
        async with self._lock:
            reader = self._readers.get(store_id)
            if reader is None or reader.task is None or reader.task.done():
                reader = _StoreReader(self, store_id, await self.top_id(store_id))
                self._readers[store_id] = reader
                reader.subs.add(sub)
                reader.task = asyncio.create_task(reader.run(), name=f"feed-{store_id}")
            else:
                reader.subs.add(sub)
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        async with self._lock:
            reader = self._readers.get(sub.store_id)
            if reader is None:
                return
            reader.subs.discard(sub)
            if not reader.subs and reader.task is not None:
                reader.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader.task
                del self._readers[sub.store_id]

    async def backlog(
        self, store_id: str, after: str, count: int = 500
    ) -> list[tuple[str, dict[Any, Any]]]:
        """Entries after ``after`` (exclusive), oldest first, at most ``count``."""
        entries: Any = await self.redis.xrange(
            feed_key(self.namespace, store_id), min=f"({after}", count=count
        )
        return [(_id(i), dict(f)) for i, f in entries or ()]

    async def close(self) -> None:
        for reader in list(self._readers.values()):
            if reader.task is not None:
                reader.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader.task
        self._readers.clear()


def _item_customer(item: res.FeedItem) -> str:
    if item.HasField("briefing"):
        return item.briefing.customer_id
    if item.HasField("handoff"):
        return item.handoff.customer_id
    return ""


async def erase_customers(
    redis: aioredis.Redis,
    namespace: str,
    store_ids: Sequence[str],
    customer_ids: Sequence[str],
    batch: int = 500,
) -> int:
    """Delete the entries of these stores' feeds that carry these customers' briefings or
    handoffs (a forgotten customer's name and cart must not stay readable on a stream);
    returns how many went."""
    wanted = set(customer_ids)
    erased = 0
    for store_id in store_ids:
        key = feed_key(namespace, store_id)
        after = "-"
        while True:
            entries: Any = await redis.xrange(key, min=after, count=batch)
            if not entries:
                break
            doomed = []
            for entry_id, fields in entries:
                body = dict(fields).get(b"item")
                if body is not None and _item_customer(res.FeedItem.FromString(body)) in wanted:
                    doomed.append(entry_id)
            if doomed:
                erased += int(await redis.xdel(key, *doomed))
            if len(entries) < batch:
                break
            after = f"({_id(entries[-1][0])}"
    return erased


def pending_of(bodies: Sequence[tuple[int, bytes]], customer_ids: Sequence[str]) -> list[int]:
    """The queued feed items (seq, body) that carry these customers' briefings or handoffs."""
    wanted = set(customer_ids)
    return [seq for seq, body in bodies if _item_customer(res.FeedItem.FromString(body)) in wanted]


def check_cursor_age(cursor: str, retention_s: float) -> None:
    """FAILED_PRECONDITION (FEED_CURSOR_EXPIRED) for a cursor older than the retention."""
    ms, _ = parse_cursor(cursor)
    if ms < (time.time() - retention_s) * 1000:
        raise FailedPrecondition(
            "the cursor is older than the feed's retention: reconnect without one and fill"
            " the gap with ListBriefings",
            reason="FEED_CURSOR_EXPIRED",
        )
