"""Merging one owner's cart and wishlist into another's: MergeCarts, and identity's
device-linked and customer-merged events.

The source cart becomes MERGED (read only, pointing at the target); its lines join the
target by the quantity rule (domain.merge_lines), and lines that cannot (the target is
full, or priced in another currency) go to the target's wishlist, so that no line is lost.
Running it again finds no open source cart and does nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from continuum.cart.v1 import cart_events_pb2 as ev
from continuum.cart.v1 import cart_resources_pb2 as res
from continuum.cart.v1 import cart_service_pb2 as pb
from continuum_cart import domain, publish, store
from continuum_cart.domain import OwnerKey, ts


async def merge_owners(
    session: AsyncSession,
    source: OwnerKey,
    target: OwnerKey,
    *,
    rule: int,
    trigger: int,
    channel: int,
    request_id: str,
    at: datetime,
    trigger_event_id: str = "",
) -> pb.MergeCartsResponse:
    summary = res.MergeSummary()
    # Locks in a stable order (carts before wishlists, owners sorted), as every other
    # mutation takes them, so that concurrent merges in both directions cannot deadlock.
    owners = sorted({source, target}, key=lambda o: (o.kind, o.id))
    carts = {owner: await store.lock_open_cart(session, owner) for owner in owners}
    wishlists = {owner: await store.lock_open_wishlist(session, owner) for owner in owners}
    source_cart, target_cart = carts[source], carts[target]
    source_wishlist, target_wishlist = wishlists[source], wishlists[target]
    has_lines = source_cart is not None and len(source_cart.lines) > 0
    has_items = source_wishlist is not None and len(source_wishlist.items) > 0
    if not has_lines and not has_items:
        summary.noop = True
        # An empty source is closed anyway so that it stops being the owner's cart.
        if source_cart is not None and target_cart is not None:
            _close(source_cart, target_cart.cart_id, at)
            await store.save_cart(session, source_cart)
        return pb.MergeCartsResponse(
            cart=target_cart or res.Cart(owner=target.message()),
            wishlist=target_wishlist or res.Wishlist(owner=target.message()),
            summary=summary,
        )

    event = ev.CartsMergedEvent(
        source_owner=source.message(),
        target_owner=target.message(),
        trigger=trigger,  # type: ignore[arg-type]
        rule=rule,  # type: ignore[arg-type]
        trigger_event_id=trigger_event_id,
        merge_time=ts(at),
    )
    overflow: list[res.CartLine] = []
    if source_cart is not None and has_lines:
        if target_cart is None:
            target_cart = await store.lock_or_create_cart(
                session, target, domain.new_cart(target, at)
            )
        outcome = domain.merge_lines(target_cart, list(source_cart.lines), rule, at)
        summary.MergeFrom(outcome.summary)
        overflow = outcome.overflow
        # The shopper was active on the source cart: the target's activity is the later.
        latest = max(
            source_cart.last_activity_time.ToNanoseconds(),
            target_cart.last_activity_time.ToNanoseconds(),
        )
        if latest == source_cart.last_activity_time.ToNanoseconds():
            target_cart.last_activity_time.CopyFrom(source_cart.last_activity_time)
            target_cart.last_channel = source_cart.last_channel
            target_cart.last_store_id = source_cart.last_store_id
        target_cart.state = res.CART_STATE_ACTIVE
        target_cart.ClearField("abandon_time")
        domain.changed(target_cart, at)
        await store.save_cart(session, target_cart)
        _close(source_cart, target_cart.cart_id, at)
        await store.save_cart(session, source_cart)
        event.source_cart_id = source_cart.cart_id
        event.target_cart_id = target_cart.cart_id
        if outcome.changes:
            await publish.cart_updated(
                session,
                target_cart,
                ev.CART_CHANGE_TYPE_MERGED,
                outcome.changes,
                channel=channel,
                store_id="",
                request_id=request_id,
                at=at,
            )
    elif source_cart is not None and target_cart is not None:
        _close(source_cart, target_cart.cart_id, at)
        await store.save_cart(session, source_cart)

    moved_items = list(source_wishlist.items) if source_wishlist is not None else []
    if moved_items or overflow:
        if target_wishlist is None:
            target_wishlist = await store.lock_or_create_wishlist(
                session, target, domain.new_wishlist(target, at)
            )
        count, added = domain.merge_wishlist_items(target_wishlist, moved_items, at)
        summary.wishlist_item_count = count
        for line in overflow:
            saved, new = domain.save_item(
                target_wishlist,
                line.sku,
                line.quantity,
                line.unit_price,
                line.product,
                line.channel,
                line.store_id,
                at,
                enforce_limit=False,
            )
            if new:
                added.append(saved)
        await store.save_wishlist(session, target_wishlist)
        for item in added:
            await publish.wishlist_item_added(
                session,
                target_wishlist,
                item,
                from_cart=any(line.sku == item.sku for line in overflow),
                channel=channel,
                store_id="",
            )
        event.target_wishlist_id = target_wishlist.wishlist_id
    if source_wishlist is not None and target_wishlist is not None:
        source_wishlist.state = res.WISHLIST_STATE_MERGED
        source_wishlist.merged_into_wishlist_id = target_wishlist.wishlist_id
        domain.wishlist_changed(source_wishlist, at)
        await store.save_wishlist(session, source_wishlist)
        event.source_wishlist_id = source_wishlist.wishlist_id

    event.summary.CopyFrom(summary)
    await publish.carts_merged(session, event)
    return pb.MergeCartsResponse(
        cart=target_cart or res.Cart(owner=target.message()),
        wishlist=target_wishlist or res.Wishlist(owner=target.message()),
        summary=summary,
    )


def _close(cart: res.Cart, into: str, at: datetime) -> None:
    cart.state = res.CART_STATE_MERGED
    cart.merged_into_cart_id = into
    cart.ClearField("abandon_time")
    cart.etag = domain.new_etag()
    cart.update_time.CopyFrom(ts(at))
