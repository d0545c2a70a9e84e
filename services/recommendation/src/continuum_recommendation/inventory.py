"""What the recommendation service asks of the inventory service: availability at a store
(batched, cached for ``availability_ttl_s``), whether a store exists, unknown SKUs.

A store asked about gets a snapshot of its whole availability (ListStockLevels, paged,
in the background), used while at most three TTLs old: serving then needs no call to
inventory. Once older than the TTL it is brought up to date with the levels changed since
the last listing (``changed_since``), and listed in full again hourly (``FULL_EVERY_S``:
a low-stock rule's change shows only in a full listing). Until the first
snapshot is in, and for stores too large to snapshot, availability per (store, SKU) comes
from batched CheckAvailability calls and is kept for ``availability_ttl_s``. A failed call
that means "not now" (unavailable, timed out) raises :class:`InventoryDown`; the caller
decides whether to leave items out (filters) or mark them UNKNOWN (no filter).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2

from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from continuum.recommendation.v1 import recommendation_resources_pb2 as res
from continuum_recommendation.live import ItemInfo
from continuum_runtime.client import error_detail

log = logging.getLogger(__name__)

CHUNK = 100
CACHE_LIMIT = 500_000
# A store's whole availability is kept when it has at most this many stock levels.
SNAPSHOT_LIMIT = 300_000
SNAPSHOT_STALE = 3
# A snapshot is listed in full again this long after its last full listing (between
# them, only changes are listed: a level whose status moved between IN_STOCK and LOW_STOCK
# because a low-stock rule changed shows as such at the next full listing).
FULL_EVERY_S = 3600.0

STATUS = {
    inv.AVAILABILITY_STATUS_IN_STOCK: res.AVAILABILITY_STATUS_IN_STOCK,
    inv.AVAILABILITY_STATUS_LOW_STOCK: res.AVAILABILITY_STATUS_LOW_STOCK,
    inv.AVAILABILITY_STATUS_OUT_OF_STOCK: res.AVAILABILITY_STATUS_OUT_OF_STOCK,
    inv.AVAILABILITY_STATUS_NOT_STOCKED: res.AVAILABILITY_STATUS_NOT_STOCKED,
}


@dataclass(frozen=True)
class Stock:
    status: int  # recommendation AvailabilityStatus
    available: int
    pickup: int
    checked_at: float


NOT_STOCKED = Stock(res.AVAILABILITY_STATUS_NOT_STOCKED, 0, 0, 0.0)
Level = tuple[int, int, int]  # (status, available, pickup)
NOT_STOCKED_LEVEL: Level = (res.AVAILABILITY_STATUS_NOT_STOCKED, 0, 0)


@dataclass
class _Snapshot:
    """A store's whole availability as of one listing."""

    levels: dict[str, Level]
    listed: float  # monotonic time at which the last listing started
    checked_at: float  # the same, wall clock
    changes_from: Timestamp | None  # where the next listing of changes starts
    full_listed: float  # monotonic time at which the last full listing started
    answers: dict[Level, Stock] = field(default_factory=dict)

    def stock(self, sku: str) -> Stock:
        level = self.levels.get(sku, NOT_STOCKED_LEVEL)
        found = self.answers.get(level)
        if found is None:
            found = self.answers[level] = Stock(*level, self.checked_at)
        return found


class UnknownStore(Exception):
    pass


class InventoryDown(Exception):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self.code = code


OUTAGE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


def _metadata(err: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    info = error_detail(err, error_details_pb2.ErrorInfo)
    if info is None:
        return "", {}
    return info.reason, dict(info.metadata)


class Inventory:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        ttl_s: float,
        store_ttl_s: float,
        snapshots: bool = True,
    ) -> None:
        self._stub = inv_grpc.InventoryServiceStub(channel)
        self._ttl = ttl_s
        self._store_ttl = store_ttl_s
        self._stock: dict[tuple[str, str], tuple[float, Stock]] = {}
        self._stores: dict[str, float] = {}
        self._categories: dict[str, tuple[float, list[ItemInfo]]] = {}
        self._snapshots_enabled = snapshots and ttl_s > 0
        self._snapshots: dict[str, _Snapshot] = {}
        self._loading: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def cached(self, store_id: str, sku: str, now: float) -> Stock | None:
        hit = self._stock.get((store_id, sku))
        if hit is not None and hit[0] > now:
            return hit[1]
        return None

    def _snapshot(self, store_id: str, now: float) -> _Snapshot | None:
        """The store's whole availability if a recent snapshot exists (refreshed in the
        background once older than the TTL; used up to ``SNAPSHOT_STALE`` x TTL old)."""
        if not self._snapshots_enabled:
            return None
        found = self._snapshots.get(store_id)
        if (found is None or found.listed + self._ttl < now) and store_id not in self._loading:
            self._loading.add(store_id)
            task = asyncio.create_task(self._load_snapshot(store_id, found))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if found is not None and found.listed + SNAPSHOT_STALE * self._ttl >= now:
            return found
        return None

    async def _load_snapshot(self, store_id: str, previous: _Snapshot | None) -> None:
        """List the store's stock levels, only those changed since the previous listing
        when there is one (SKUs without a level are NOT_STOCKED)."""
        since: Timestamp | None = None  # where this listing of changes starts, if it is one
        if previous is not None and previous.full_listed + FULL_EVERY_S > time.monotonic():
            since = previous.changes_from
        try:
            listed, checked_at = time.monotonic(), time.time()
            levels: dict[str, Level] = {}
            changes_from: Timestamp | None = None
            token = ""
            while True:
                request = inv_pb.ListStockLevelsRequest(
                    location_id=store_id, page_size=1000, page_token=token
                )
                if since is not None:
                    request.changed_since.CopyFrom(since)
                answer = await self._stub.ListStockLevels(request)
                if changes_from is None and answer.HasField("changes_from"):
                    changes_from = answer.changes_from
                for level in answer.stock_levels:
                    levels[level.sku] = (
                        STATUS.get(level.status, res.AVAILABILITY_STATUS_UNKNOWN),
                        level.available_to_promise,
                        level.pickup_available,
                    )
                token = answer.next_page_token
                if not token or len(levels) > SNAPSHOT_LIMIT:
                    break
            full_listed, found = listed, len(levels)
            if since is not None and previous is not None:
                previous.levels.update(levels)
                levels, full_listed = previous.levels, previous.full_listed
            if len(levels) <= SNAPSHOT_LIMIT:
                self._snapshots[store_id] = _Snapshot(
                    levels, listed, checked_at, changes_from, full_listed
                )
                log.log(
                    logging.DEBUG if since is not None else logging.INFO,
                    "availability at %s: %d levels listed in %.1f s (%s)",
                    store_id,
                    found,
                    time.monotonic() - listed,
                    "changes" if since is not None else "full",
                )
            else:
                self._snapshots.pop(store_id, None)
        except grpc.aio.AioRpcError:
            pass  # per-SKU checks go on; the next request retries the snapshot
        finally:
            self._loading.discard(store_id)

    async def stock(self, store_id: str, skus: Sequence[str]) -> dict[str, Stock]:
        """Availability of SKUs at a store; raises UnknownStore or InventoryDown."""
        now = time.monotonic()
        snapshot = self._snapshot(store_id, now)
        if snapshot is not None:
            return {sku: snapshot.stock(sku) for sku in skus}
        out: dict[str, Stock] = {}
        missing: list[str] = []
        for sku in dict.fromkeys(skus):
            hit = self.cached(store_id, sku, now)
            if hit is None:
                missing.append(sku)
            else:
                out[sku] = hit
        if not missing and self._stores.get(store_id, 0.0) > now:
            return out
        if not missing:
            await self.require_store(store_id)
            return out
        chunks = [missing[k : k + CHUNK] for k in range(0, len(missing), CHUNK)]
        for found in await asyncio.gather(*(self._check(store_id, c) for c in chunks)):
            out.update(found)
        expires = time.monotonic() + self._ttl
        if len(self._stock) > CACHE_LIMIT:
            self._stock.clear()
        for sku in missing:
            self._stock[(store_id, sku)] = (expires, out[sku])
        self._stores[store_id] = time.monotonic() + self._store_ttl
        return out

    async def _check(self, store_id: str, skus: list[str]) -> dict[str, Stock]:
        remaining = list(skus)
        out: dict[str, Stock] = {}
        while remaining:
            try:
                answer = await self._stub.CheckAvailability(
                    inv_pb.CheckAvailabilityRequest(location_id=store_id, skus=remaining)
                )
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    reason, metadata = _metadata(err)
                    if reason == "LOCATION_NOT_FOUND":
                        raise UnknownStore(store_id) from err
                    unknown = set(metadata.get("skus", "").split(",")) & set(remaining)
                    if reason == "ITEM_NOT_FOUND" and unknown:
                        for sku in unknown:
                            out[sku] = NOT_STOCKED
                        remaining = [s for s in remaining if s not in unknown]
                        continue
                if err.code() in OUTAGE or err.code() == grpc.StatusCode.NOT_FOUND:
                    raise InventoryDown(err.code()) from err
                raise
            now = time.time()
            for a in answer.availabilities:
                out[a.sku] = Stock(
                    STATUS.get(a.status, res.AVAILABILITY_STATUS_UNKNOWN),
                    a.available_to_promise,
                    a.pickup_available,
                    now,
                )
            break
        return out

    async def require_store(self, store_id: str) -> None:
        """Raises UnknownStore for a store inventory does not know (InventoryDown if it
        cannot tell)."""
        if self._stores.get(store_id, 0.0) > time.monotonic():
            return
        try:
            await self._stub.GetLocation(inv_pb.GetLocationRequest(location_id=store_id))
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise UnknownStore(store_id) from err
            raise InventoryDown(err.code()) from err
        self._stores[store_id] = time.monotonic() + self._store_ttl

    async def category_items(self, category: str, limit: int = 200) -> list[ItemInfo]:
        """Active items of a category from the item master (cached like stores);
        InventoryDown on outage."""
        hit = self._categories.get(category)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        try:
            answer = await self._stub.ListItems(
                inv_pb.ListItemsRequest(
                    category=category, states=[inv.ITEM_STATE_ACTIVE], page_size=limit
                )
            )
        except grpc.aio.AioRpcError as err:
            raise InventoryDown(err.code()) from err
        found = [_info(item) for item in answer.items]
        self._categories[category] = (time.monotonic() + self._store_ttl, found)
        return found

    async def items(self, skus: Sequence[str]) -> dict[str, ItemInfo]:
        """Item master entries of SKUs (unknown ones absent); InventoryDown on outage."""
        unique = list(dict.fromkeys(skus))
        out: dict[str, ItemInfo] = {}
        for start in range(0, len(unique), 1000):
            try:
                answer = await self._stub.BatchGetItems(
                    inv_pb.BatchGetItemsRequest(
                        skus=unique[start : start + 1000], allow_missing=True
                    )
                )
            except grpc.aio.AioRpcError as err:
                raise InventoryDown(err.code()) from err
            for item in answer.items:
                out[item.sku] = _info(item)
        return out


def _info(item: inv.Item) -> ItemInfo:
    return ItemInfo(
        sku=item.sku,
        product_id=item.product_id,
        name=item.name,
        category=item.category,
        brand=item.brand,
        size=item.size,
        colour=item.colour,
        price_minor=item.price.amount_minor,
        currency=item.price.currency_code,
        image_url=item.image_url,
    )
