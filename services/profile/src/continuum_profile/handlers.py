"""What the profile does with identity's events (consumer group ``profile``).

Each handler runs in the consumer's transaction, with the record that the event was
processed, so a redelivery changes nothing. They re-key stored events and queue the
customers concerned for a full rebuild by the deriver; the resolution cache entries of
those customers are dropped in every replica (Redis pub/sub, see :class:`CacheBus`).

* ``identity.customer_merged``: the merged customers' events move to the survivor, their
  ids become aliases (reads of an alias answer with the survivor), their consents join
  the survivor's (newer answer wins).
* ``identity.customer_unmerged``: each part gets back the events that were resolved to
  it or to one of its aliases, and the anonymous events of its devices.
* ``identity.device_linked``: a device's anonymous events (seen with device ids only) held
  under the previous customer follow the device to the customer who signed in.
* ``identity.identifiers_linked``: a customer that became known stops being anonymous.
* ``identity.customer_forgotten``: the customer, every alias and every listed device's
  anonymous events are erased (as ForgetCustomer does).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.common.v1 import event_pb2
from continuum.identity.v1 import identity_events_pb2 as iev
from continuum_profile import store
from continuum_profile.forget import erase
from continuum_profile.resolution import ResolutionCache
from continuum_runtime.events import HandlerSpec
from continuum_runtime.tasks import raise_if_cancelling

log = logging.getLogger(__name__)


class CacheBus:
    """Drops resolution cache entries here and, through Redis pub/sub, in every replica."""

    def __init__(self, cache: ResolutionCache, redis: aioredis.Redis, namespace: str) -> None:
        self.cache = cache
        self.redis = redis
        self.channel = f"{namespace}:profile:resolution-cache"

    async def invalidate(self, customer_ids: Iterable[str], device_ids: Iterable[str] = ()) -> None:
        message = {"customers": sorted(set(customer_ids)), "devices": sorted(set(device_ids))}
        self._apply(message)
        try:
            await self.redis.publish(self.channel, json.dumps(message))
        except Exception as exc:  # the local cache is right; others expire by TTL
            log.warning("cache invalidation not broadcast: %s", type(exc).__name__)

    def _apply(self, message: dict[str, Any]) -> None:
        self.cache.invalidate(message.get("customers", []))
        for device in message.get("devices", []):
            self.cache.invalidate_device(device)

    async def listen(self) -> None:
        """Apply other replicas' invalidations until cancelled."""
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(self.channel)
                try:
                    async for item in pubsub.listen():
                        if item.get("type") == "message":
                            self._apply(json.loads(item["data"]))
                finally:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                log.warning("cache invalidation listener failed: %s", type(exc).__name__)
                self.cache.clear()  # missed messages: start clean
                await asyncio.sleep(1.0)


class IdentityHandlers:
    def __init__(self, bus: CacheBus) -> None:
        self.bus = bus

    def specs(self) -> dict[str, HandlerSpec]:
        return {
            "identity.customer_merged": HandlerSpec(iev.CustomerMergedEvent, self.merged),
            "identity.customer_unmerged": HandlerSpec(iev.CustomerUnmergedEvent, self.unmerged),
            "identity.device_linked": HandlerSpec(iev.DeviceLinkedEvent, self.device_linked),
            "identity.identifiers_linked": HandlerSpec(
                iev.IdentifiersLinkedEvent, self.identifiers_linked
            ),
            "identity.customer_forgotten": HandlerSpec(iev.CustomerForgottenEvent, self.forgotten),
        }

    async def merged(
        self, session: AsyncSession, envelope: event_pb2.EventEnvelope, payload: Any
    ) -> None:
        survivor = payload.surviving_customer_id
        merged = [m for m in payload.merged_customer_ids if m != survivor]
        await store.mark_dirty_in(session, [survivor, *merged], rebuild=True)
        await store.rekey_merged(session, survivor, merged)
        if await store.any_known(session, survivor):
            await store.set_known(session, survivor)
        await store.merge_profile_data(session, survivor, merged)
        await self.bus.invalidate([survivor, *merged])

    async def unmerged(
        self, session: AsyncSession, envelope: event_pb2.EventEnvelope, payload: Any
    ) -> None:
        source = payload.customer_id
        parts = [p.customer_id for p in payload.parts]
        await store.mark_dirty_in(session, [source, *parts], rebuild=True)
        devices: list[str] = []
        for part in payload.parts:
            devices.extend(part.device_ids)
            if part.customer_id == source:
                continue
            origins = [part.customer_id, *part.alias_customer_ids]
            await store.move_part(session, source, part.customer_id, origins, list(part.device_ids))
            await store.ensure_profile(session, part.customer_id)
        await self.bus.invalidate([source, *parts], devices)

    async def device_linked(
        self, session: AsyncSession, envelope: event_pb2.EventEnvelope, payload: Any
    ) -> None:
        previous = payload.previous_customer_id
        if previous and previous != payload.customer_id:
            await store.mark_dirty_in(session, [payload.customer_id, previous], rebuild=True)
            await store.move_device(session, payload.device_id, previous, payload.customer_id)
            await self.bus.invalidate([previous, payload.customer_id], [payload.device_id])

    async def identifiers_linked(
        self, session: AsyncSession, envelope: event_pb2.EventEnvelope, payload: Any
    ) -> None:
        if payload.became_known:
            await store.set_known(session, payload.customer_id)

    async def forgotten(
        self, session: AsyncSession, envelope: event_pb2.EventEnvelope, payload: Any
    ) -> None:
        ids = [payload.customer_id, *payload.alias_customer_ids]
        await erase(
            session, payload.customer_id, ids, list(payload.device_ids), triggered_by_identity=True
        )
        await self.bus.invalidate(ids, payload.device_ids)
