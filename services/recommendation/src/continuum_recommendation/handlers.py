"""The events the recommendation service learns from (each in the consumer's transaction,
once per event): behaviour is appended to ``interactions``, item attributes seen in events
to ``items``, traits to ``traits``; every replica's follower applies them to its model.

- profile.event_ingested / profile.events_ingested: views, cart adds and removals, wishlist
  adds, recommendation clicks (as views), orders (each line a purchase in the order's basket);
- profile.profile_updated: the customer's traits;
- profile.customer_forgotten: the customer's behaviour and traits are erased;
- cart.order_placed, cart.cart_updated, cart.wishlist_item_added: the same behaviour when it
  comes through the cart service. An order reported by both profile and cart counts once
  (purchases are unique per subject, order and SKU).
"""

from __future__ import annotations

import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.cart.v1 import cart_events_pb2 as cev
from continuum.cart.v1 import cart_resources_pb2 as cres
from continuum.common.v1 import event_pb2
from continuum.profile.v1 import profile_events_pb2 as pev
from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum_recommendation import store
from continuum_recommendation.domain import (
    CART,
    CART_REMOVE,
    PURCHASE,
    VIEW,
    WISHLIST,
    Interaction,
    subject_of,
)
from continuum_recommendation.live import ItemInfo
from continuum_runtime.config import EventSettings
from continuum_runtime.db import Database
from continuum_runtime.events import EventConsumer, HandlerSpec

GROUP = "recommendation"


def _at(stamp: Timestamp, envelope: event_pb2.EventEnvelope) -> float:
    chosen = stamp if stamp.seconds or stamp.nanos else envelope.time
    return chosen.seconds + chosen.nanos / 1e9


def _ref_info(ref: prof.ProductRef) -> ItemInfo:
    return ItemInfo(
        sku=ref.sku,
        product_id=ref.product_id,
        name=ref.name,
        category=ref.category,
        brand=ref.brand,
        size=ref.size,
        colour=ref.colour,
        price_minor=ref.unit_price.amount_minor,
        currency=ref.unit_price.currency_code,
    )


def _snapshot_info(sku: str, snap: cres.ProductSnapshot) -> ItemInfo:
    return ItemInfo(
        sku=sku,
        product_id=snap.product_id,
        name=snap.name,
        category=snap.category,
        brand=snap.brand,
        size=snap.size,
        colour=snap.colour,
        image_url=snap.image_url,
    )


def behaviour(
    item: pev.EventIngestedEvent, envelope: event_pb2.EventEnvelope
) -> tuple[list[Interaction], list[ItemInfo]]:
    """The interactions and item attributes of one ingested behavioural event."""
    event = item.event
    subject = subject_of(item.customer_id or event.customer_id, item.device_id or event.device_id)
    if not subject:
        return [], []
    at = _at(event.occur_time, envelope)
    session = event.session_id
    lines: list[tuple[prof.ProductRef, int, int, str]] = []  # (product, kind, quantity, basket)
    kind = event.WhichOneof("payload")
    if kind == "product_viewed":
        lines.append((event.product_viewed.product, VIEW, 1, session))
    elif kind == "recommendation_clicked":
        lines.append((event.recommendation_clicked.product, VIEW, 1, session))
    elif kind == "cart_item_added":
        added = event.cart_item_added
        lines.append((added.product, CART, added.quantity, added.cart_id or session))
    elif kind == "cart_item_removed":
        removed = event.cart_item_removed
        lines.append((removed.product, CART_REMOVE, removed.quantity, removed.cart_id or session))
    elif kind == "wishlist_item_added":
        lines.append((event.wishlist_item_added.product, WISHLIST, 1, ""))
    elif kind == "email_clicked" and event.email_clicked.product.sku:
        lines.append((event.email_clicked.product, VIEW, 1, session))
    elif kind == "order_placed":
        order = event.order_placed
        for line in order.lines:
            lines.append((line.product, PURCHASE, line.quantity, f"order:{order.order_id}"))
    rows = [
        Interaction(0, subject, ref.sku, k, max(q, 1), basket, event.channel, event.store_id, at)
        for ref, k, q, basket in lines
        if ref.sku
    ]
    return rows, [_ref_info(ref) for ref, _, _, _ in lines if ref.sku]


async def _record(session: AsyncSession, rows: list[Interaction], items: list[ItemInfo]) -> None:
    await store.upsert_items(session, items)
    await store.add_interactions(session, rows)


async def on_event_ingested(
    session: AsyncSession, envelope: event_pb2.EventEnvelope, event: pev.EventIngestedEvent
) -> None:
    rows, items = behaviour(event, envelope)
    await _record(session, rows, items)


async def on_events_ingested(
    session: AsyncSession, envelope: event_pb2.EventEnvelope, event: pev.EventsIngestedEvent
) -> None:
    rows: list[Interaction] = []
    items: list[ItemInfo] = []
    for one in event.events:
        r, i = behaviour(one, envelope)
        rows += r
        items += i
    await _record(session, rows, items)


async def on_profile_updated(
    session: AsyncSession, envelope: event_pb2.EventEnvelope, event: pev.ProfileUpdatedEvent
) -> None:
    if "traits" in event.changed_fields or event.HasField("traits"):
        await store.put_traits(
            session, event.customer_id, event.traits.SerializeToString(), event.revision
        )


async def on_customer_forgotten(
    session: AsyncSession, envelope: event_pb2.EventEnvelope, event: pev.CustomerForgottenEvent
) -> None:
    await store.forget_subjects(session, [f"c:{event.customer_id}"], event.customer_id)


def _owner_subject(owner: cres.Owner) -> str:
    return subject_of(owner.customer_id, owner.device_id)


async def on_order_placed(
    session: AsyncSession, envelope: event_pb2.EventEnvelope, event: cev.OrderPlacedEvent
) -> None:
    order = event.order
    subject = _owner_subject(order.owner)
    if not subject:
        return
    at = _at(order.place_time, envelope)
    rows = [
        Interaction(
            0,
            subject,
            line.sku,
            PURCHASE,
            max(line.quantity, 1),
            f"order:{order.order_id}",
            order.channel,
            order.store_id,
            at,
        )
        for line in order.lines
    ]
    await _record(session, rows, [_snapshot_info(line.sku, line.product) for line in order.lines])


async def on_cart_updated(
    session: AsyncSession, envelope: event_pb2.EventEnvelope, event: cev.CartUpdatedEvent
) -> None:
    subject = _owner_subject(event.cart.owner)
    if not subject:
        return
    at = _at(event.update_time, envelope)
    rows: list[Interaction] = []
    items: list[ItemInfo] = []
    for change in event.changes:
        line = change.line
        if not line.sku:
            continue
        if change.removed or event.change_type == cev.CART_CHANGE_TYPE_ITEM_REMOVED:
            kind = CART_REMOVE
        elif event.change_type in (
            cev.CART_CHANGE_TYPE_ITEM_ADDED,
            cev.CART_CHANGE_TYPE_MOVED_FROM_WISHLIST,
        ) or (
            event.change_type == cev.CART_CHANGE_TYPE_ITEM_UPDATED
            and line.quantity > change.previous_quantity
        ):
            kind = CART
        else:
            continue
        rows.append(
            Interaction(
                0,
                subject,
                line.sku,
                kind,
                max(line.quantity, 1),
                event.cart.cart_id,
                event.channel,
                event.store_id,
                at,
            )
        )
        items.append(_snapshot_info(line.sku, line.product))
    await _record(session, rows, items)


async def on_wishlist_item_added(
    session: AsyncSession, envelope: event_pb2.EventEnvelope, event: cev.WishlistItemAddedEvent
) -> None:
    subject = _owner_subject(event.owner)
    if not subject or not event.item.sku:
        return
    at = _at(event.item.add_time, envelope)
    row = Interaction(
        0, subject, event.item.sku, WISHLIST, 1, "", event.channel, event.store_id, at
    )
    await _record(session, [row], [_snapshot_info(event.item.sku, event.item.product)])


def behaviour_consumer(
    db: Database, redis: aioredis.Redis, namespace: str, settings: EventSettings
) -> EventConsumer:
    return EventConsumer(
        db=db,
        redis=redis,
        namespace=namespace,
        group=GROUP,
        producers=["profile", "cart"],
        handlers={
            "profile.event_ingested": HandlerSpec(pev.EventIngestedEvent, on_event_ingested),
            "profile.events_ingested": HandlerSpec(pev.EventsIngestedEvent, on_events_ingested),
            "profile.profile_updated": HandlerSpec(pev.ProfileUpdatedEvent, on_profile_updated),
            "profile.customer_forgotten": HandlerSpec(
                pev.CustomerForgottenEvent, on_customer_forgotten
            ),
            "cart.order_placed": HandlerSpec(cev.OrderPlacedEvent, on_order_placed),
            "cart.cart_updated": HandlerSpec(cev.CartUpdatedEvent, on_cart_updated),
            "cart.wishlist_item_added": HandlerSpec(
                cev.WishlistItemAddedEvent, on_wishlist_item_added
            ),
        },
        settings=settings,
    )
