"""The events notification consumes (group ``notification``), each handled in the
consumer's transaction, once per event:

- cart.cart_abandoned: schedule an abandoned-cart reminder (customer-owned carts);
- cart.order_placed: suppress the customer's scheduled reminders (PURCHASED);
- cart.wishlist_item_added: remember who wishlisted the SKU (back-in-stock alerts);
- inventory.back_in_stock: alerts for those customers, no more than units available;
- identity.customer_forgotten: erase what notification holds about the customer and its
  aliases (check-ins, briefings, handoffs, messages, preferences, caches) and the
  entries of the stores' feeds that carry their briefings or handoffs;
- profile.consent_changed: keep the recognition-consent cache (used only while profile is
  unreachable) in step with changes, for customers notification has checked before.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.cart.v1 import cart_events_pb2 as cart_ev
from continuum.common.v1 import channel_pb2, event_pb2
from continuum.identity.v1 import identity_events_pb2 as id_ev
from continuum.inventory.v1 import inventory_events_pb2 as inv_ev
from continuum.profile.v1 import profile_events_pb2 as prof_ev
from continuum.profile.v1 import profile_resources_pb2 as prof_res
from continuum_notification import feed, store
from continuum_notification.messages import Messages
from continuum_runtime.config import EventSettings
from continuum_runtime.db import Database
from continuum_runtime.events import EventConsumer, HandlerSpec

GROUP = "notification"


async def on_consent_changed(
    session: AsyncSession, envelope: event_pb2.EventEnvelope, event: Any
) -> None:
    assert isinstance(event, prof_ev.ConsentChangedEvent)
    for change in event.changes:
        c = change.consent
        if (
            c.channel == channel_pb2.CHANNEL_STORE
            and c.purpose == prof_res.CONSENT_PURPOSE_STORE_RECOGNITION
        ):
            await store.update_cached_consent(
                session, event.customer_id, c.status == prof_res.CONSENT_STATUS_GRANTED
            )


def customer_forgotten(redis: aioredis.Redis, namespace: str) -> Any:
    async def handle(session: AsyncSession, envelope: event_pb2.EventEnvelope, event: Any) -> None:
        assert isinstance(event, id_ev.CustomerForgottenEvent)
        ids = [event.customer_id, *event.alias_customer_ids]
        stores = await store.forget_customers(session, ids)
        queued = feed.pending_of(await store.pending_feed(session, stores), ids)
        if queued:
            await store.drop_pending_feed(session, queued)
        # Redis first, the database's commit after: should the commit fail, the event is
        # handled again and both erasures are repeated (each is idempotent).
        await feed.erase_customers(redis, namespace, stores, ids)

    return handle


def notification_consumer(
    db: Database,
    redis: aioredis.Redis,
    namespace: str,
    settings: EventSettings,
    messages: Messages,
) -> EventConsumer:
    return EventConsumer(
        db=db,
        redis=redis,
        namespace=namespace,
        group=GROUP,
        producers=["cart", "identity", "inventory", "profile"],
        handlers={
            "cart.cart_abandoned": HandlerSpec(
                cart_ev.CartAbandonedEvent, messages.on_cart_abandoned
            ),
            "cart.order_placed": HandlerSpec(cart_ev.OrderPlacedEvent, messages.on_order_placed),
            "cart.wishlist_item_added": HandlerSpec(
                cart_ev.WishlistItemAddedEvent, messages.on_wishlist_item_added
            ),
            "inventory.back_in_stock": HandlerSpec(
                inv_ev.BackInStockEvent, messages.on_back_in_stock
            ),
            "profile.consent_changed": HandlerSpec(prof_ev.ConsentChangedEvent, on_consent_changed),
            "identity.customer_forgotten": HandlerSpec(
                id_ev.CustomerForgottenEvent, customer_forgotten(redis, namespace)
            ),
        },
        settings=settings,
    )
