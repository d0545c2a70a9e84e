"""The events notification consumes (group ``notification``), each handled in the
consumer's transaction, once per event:

- cart.cart_abandoned: schedule an abandoned-cart reminder (customer-owned carts);
- cart.order_placed: suppress the customer's scheduled reminders (PURCHASED);
- cart.cart_updated: the basket hint's cart (what a check-in starts its lookups with);
- cart.wishlist_item_added: remember who wishlisted the SKU (back-in-stock alerts), and add
  it to the basket hint's wishlist;
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


async def on_cart_updated(
    session: AsyncSession, envelope: event_pb2.EventEnvelope, event: Any
) -> None:
    assert isinstance(event, cart_ev.CartUpdatedEvent)
    customer_id = event.cart.owner.customer_id
    if not customer_id:
        return
    at = event.update_time if event.HasField("update_time") else envelope.time
    items = [
        (line.sku, line.product.product_id, line.product.colour, line.product.size, 0)
        for line in event.cart.lines
    ]
    await store.hint_cart(session, customer_id, items, store.ts_dt(at))


def wishlist_added(messages: Messages) -> Any:
    async def handle(session: AsyncSession, envelope: event_pb2.EventEnvelope, event: Any) -> None:
        assert isinstance(event, cart_ev.WishlistItemAddedEvent)
        await messages.on_wishlist_item_added(session, envelope, event)
        item = event.item
        if event.owner.customer_id and item.sku:
            added = item.add_time.ToNanoseconds() if item.HasField("add_time") else 0
            hint = (item.sku, item.product.product_id, item.product.colour, item.product.size)
            await store.hint_wishlist_add(session, event.owner.customer_id, (*hint, added))

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
        producers=["cart", "inventory", "profile"],
        handlers={
            "cart.cart_abandoned": HandlerSpec(
                cart_ev.CartAbandonedEvent, messages.on_cart_abandoned
            ),
            "cart.order_placed": HandlerSpec(cart_ev.OrderPlacedEvent, messages.on_order_placed),
            "cart.cart_updated": HandlerSpec(cart_ev.CartUpdatedEvent, on_cart_updated),
            "cart.wishlist_item_added": HandlerSpec(
                cart_ev.WishlistItemAddedEvent, wishlist_added(messages)
            ),
            "inventory.back_in_stock": HandlerSpec(
                inv_ev.BackInStockEvent, messages.on_back_in_stock
            ),
            "profile.consent_changed": HandlerSpec(prof_ev.ConsentChangedEvent, on_consent_changed),
        },
        settings=settings,
    )
