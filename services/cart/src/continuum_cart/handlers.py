"""Identity's events, as the cart service handles them (each in the consumer's
transaction, once per event).

- identity.device_linked: the guest's device cart and wishlist merge into the customer's.
- identity.customer_merged: each merged-away customer's cart and wishlist merge into the
  survivor's.
- identity.customer_forgotten: the carts and wishlists of the customer, its aliases and its
  devices are erased; their orders stay, without an owner.

Merges use MERGE_QUANTITY_RULE_MAX and the event id as request id. Unmerges in identity do
not split carts back (the contract's documented choice).
"""

from __future__ import annotations

from datetime import UTC, datetime

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.cart.v1 import cart_resources_pb2 as res
from continuum.common.v1 import event_pb2
from continuum.identity.v1 import identity_events_pb2 as idev
from continuum_cart import merging, store
from continuum_cart.domain import CUSTOMER, DEVICE, OwnerKey
from continuum_runtime.config import EventSettings
from continuum_runtime.db import Database
from continuum_runtime.events import EventConsumer, HandlerSpec

GROUP = "cart"


def _at(stamp: object, envelope: event_pb2.EventEnvelope) -> datetime:
    chosen = stamp if getattr(stamp, "seconds", 0) else envelope.time
    return chosen.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


async def on_device_linked(
    session: AsyncSession, envelope: event_pb2.EventEnvelope, event: idev.DeviceLinkedEvent
) -> None:
    if not event.device_id or not event.customer_id:
        return
    await merging.merge_owners(
        session,
        OwnerKey(DEVICE, event.device_id),
        OwnerKey(CUSTOMER, event.customer_id),
        rule=res.MERGE_QUANTITY_RULE_MAX,
        trigger=res.MERGE_TRIGGER_DEVICE_LINKED,
        channel=event.channel,
        request_id=envelope.id,
        at=_at(event.link_time, envelope),
        trigger_event_id=envelope.id,
    )


async def on_customer_merged(
    session: AsyncSession, envelope: event_pb2.EventEnvelope, event: idev.CustomerMergedEvent
) -> None:
    for merged in event.merged_customer_ids:
        if merged == event.surviving_customer_id:
            continue
        await merging.merge_owners(
            session,
            OwnerKey(CUSTOMER, merged),
            OwnerKey(CUSTOMER, event.surviving_customer_id),
            rule=res.MERGE_QUANTITY_RULE_MAX,
            trigger=res.MERGE_TRIGGER_CUSTOMER_MERGED,
            channel=event.channel,
            request_id=envelope.id,
            at=_at(event.merge_time, envelope),
            trigger_event_id=envelope.id,
        )


async def on_customer_forgotten(
    session: AsyncSession, envelope: event_pb2.EventEnvelope, event: idev.CustomerForgottenEvent
) -> None:
    owners = [OwnerKey(CUSTOMER, event.customer_id)]
    owners += [OwnerKey(CUSTOMER, alias) for alias in event.alias_customer_ids]
    owners += [OwnerKey(DEVICE, device) for device in event.device_ids]
    await store.forget_owners(session, owners)


def identity_consumer(
    db: Database, redis: aioredis.Redis, namespace: str, settings: EventSettings
) -> EventConsumer:
    return EventConsumer(
        db=db,
        redis=redis,
        namespace=namespace,
        group=GROUP,
        producers=["identity"],
        handlers={
            "identity.device_linked": HandlerSpec(idev.DeviceLinkedEvent, on_device_linked),
            "identity.customer_merged": HandlerSpec(idev.CustomerMergedEvent, on_customer_merged),
            "identity.customer_forgotten": HandlerSpec(
                idev.CustomerForgottenEvent, on_customer_forgotten
            ),
        },
        settings=settings,
    )
