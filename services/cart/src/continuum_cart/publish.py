"""The events the cart service publishes, written to its outbox in the caller's
transaction (see docs/events.md). Cart events have the cart id as subject; wishlist events
the wishlist id."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from continuum.cart.v1 import cart_events_pb2 as ev
from continuum.cart.v1 import cart_resources_pb2 as res
from continuum_cart.domain import OwnerKey, ts
from continuum_runtime.events import add_event

PRODUCER = "cart"


def _customer(owner: res.Owner) -> str:
    return OwnerKey.of(owner).customer_id


async def cart_updated(
    session: AsyncSession,
    cart: res.Cart,
    change_type: int,
    changes: Sequence[ev.CartLineChange],
    *,
    channel: int,
    store_id: str,
    request_id: str,
    at: datetime,
) -> None:
    await add_event(
        session,
        producer=PRODUCER,
        event_type="cart.cart_updated",
        subject=cart.cart_id,
        customer_id=_customer(cart.owner),
        payload=ev.CartUpdatedEvent(
            change_type=change_type,  # type: ignore[arg-type]
            changes=changes,
            cart=cart,
            channel=channel,  # type: ignore[arg-type]
            store_id=store_id,
            request_id=request_id,
            update_time=ts(at),
        ),
    )


async def cart_abandoned(session: AsyncSession, cart: res.Cart) -> None:
    await add_event(
        session,
        producer=PRODUCER,
        event_type="cart.cart_abandoned",
        subject=cart.cart_id,
        customer_id=_customer(cart.owner),
        payload=ev.CartAbandonedEvent(
            cart_id=cart.cart_id,
            owner=cart.owner,
            lines=cart.lines,
            subtotal=cart.subtotal,
            item_count=cart.item_count,
            last_activity_time=cart.last_activity_time,
            last_channel=cart.last_channel,
            last_store_id=cart.last_store_id,
            abandon_time=cart.abandon_time,
            etag=cart.etag,
        ),
    )


async def wishlist_item_added(
    session: AsyncSession,
    wishlist: res.Wishlist,
    item: res.WishlistItem,
    *,
    from_cart: bool,
    channel: int,
    store_id: str,
) -> None:
    await add_event(
        session,
        producer=PRODUCER,
        event_type="cart.wishlist_item_added",
        subject=wishlist.wishlist_id,
        customer_id=_customer(wishlist.owner),
        payload=ev.WishlistItemAddedEvent(
            wishlist_id=wishlist.wishlist_id,
            owner=wishlist.owner,
            item=item,
            from_cart=from_cart,
            channel=channel,  # type: ignore[arg-type]
            store_id=store_id,
        ),
    )


async def order_placed(session: AsyncSession, order: res.Order) -> None:
    await add_event(
        session,
        producer=PRODUCER,
        event_type="cart.order_placed",
        subject=order.cart_id,
        customer_id=_customer(order.owner),
        payload=ev.OrderPlacedEvent(order=order),
    )


async def carts_merged(session: AsyncSession, event: ev.CartsMergedEvent) -> None:
    await add_event(
        session,
        producer=PRODUCER,
        event_type="cart.carts_merged",
        subject=event.target_cart_id or event.target_wishlist_id,
        customer_id=_customer(event.target_owner),
        payload=event,
    )
