"""The events notification consumes (group ``notification``), each handled in the
consumer's transaction, once per event:

- cart.cart_abandoned: schedule an abandoned-cart reminder (customer-owned carts);
- cart.order_placed: suppress the customer's scheduled reminders (PURCHASED);
- cart.wishlist_item_added: remember who wishlisted the SKU (back-in-stock alerts);
- inventory.back_in_stock: alerts for those customers, no more than units available;
- profile.consent_changed: keep the recognition-consent cache (used only while profile is
  unreachable) in step with changes, for customers notification has checked before.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.cart.v1 import cart_events_pb2 as cart_ev
from continuum.common.v1 import channel_pb2, event_pb2
from continuum.inventory.v1 import inventory_events_pb2 as inv_ev
from continuum.profile.v1 import profile_events_pb2 as prof_ev
from continuum.profile.v1 import profile_resources_pb2 as prof_res
from continuum_notification import store
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
        producers=["cart", "inventory", "profile"],
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
        },
        settings=settings,
    )
