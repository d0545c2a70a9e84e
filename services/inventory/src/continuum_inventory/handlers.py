"""Events the inventory service consumes, and its background loops.

* ``cart.order_placed``: each order line adds its units to the daily demand of its SKU and
  location (the local day of the order at that location), which forecasts learn from.
  Idempotent: the consumer records each event id in the same transaction.
* The expiry sweeper releases reservations past their expiry time. Every replica sweeps;
  a reservation is claimed with ``FOR UPDATE SKIP LOCKED`` and re-checked under the lock,
  so each expires exactly once.
* The same loop re-evaluates stock signals whose cooldown has ended.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.cart.v1 import cart_events_pb2
from continuum.common.v1 import event_pb2
from continuum_inventory import operations, store
from continuum_inventory.settings import InventorySettings
from continuum_inventory.store import Defaults
from continuum_runtime.db import Database
from continuum_runtime.events import EventConsumer, HandlerSpec
from continuum_runtime.tasks import raise_if_cancelling

log = logging.getLogger(__name__)
GROUP = "inventory"


async def on_order_placed(
    session: AsyncSession, envelope: event_pb2.EventEnvelope, payload: Any
) -> None:
    order = payload.order
    at = (order.place_time if order.HasField("place_time") else envelope.time).ToDatetime(
        tzinfo=UTC
    )
    location_ids = list({line.location_id for line in order.lines if line.location_id})
    locations = await store.locations_by_id(session, location_ids)
    totals: dict[tuple[str, str], int] = {}
    for line in order.lines:
        if line.quantity > 0 and line.sku:
            key = (line.sku, line.location_id)
            totals[key] = totals.get(key, 0) + line.quantity
    for (sku, location_id), units in sorted(totals.items()):
        location = locations.get(location_id)
        day = operations.local_day(at, location.time_zone if location else None)
        await store.add_demand(session, sku, location_id, day, units)


def order_consumer(
    db: Database, redis: aioredis.Redis, settings: InventorySettings
) -> EventConsumer:
    return EventConsumer(
        db=db,
        redis=redis,
        namespace=settings.redis_namespace,
        group=GROUP,
        producers=["cart"],
        handlers={
            "cart.order_placed": HandlerSpec(cart_events_pb2.OrderPlacedEvent, on_order_placed)
        },
        settings=settings.events,
    )


async def sweep_once(db: Database, defaults: Defaults, batch: int) -> int:
    """Expire due reservations (one transaction each) and re-check cooled-down signals."""
    async with db.transaction() as session:
        due = await store.expired_reservation_ids(session, batch)
    expired = 0
    for reservation_id in due:
        async with db.transaction() as session:
            expired += await operations.expire(session, reservation_id, defaults)
    async with db.transaction() as session:
        await operations.recheck_signals(session, defaults, batch)
    return expired


class Sweeper:
    def __init__(self, db: Database, defaults: Defaults, settings: InventorySettings) -> None:
        self.db = db
        self.defaults = defaults
        self.interval_s = settings.sweep_interval_s
        self.batch = settings.sweep_batch

    async def run(self) -> None:
        while True:
            raise_if_cancelling()  # a cancel swallowed below still stops the loop
            try:
                while await sweep_once(self.db, self.defaults, self.batch) >= self.batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                log.warning("expiry sweep failed, retrying: %s", type(exc).__name__)
            await asyncio.sleep(self.interval_s)
