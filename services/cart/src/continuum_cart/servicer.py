"""The gRPC servicer of continuum.cart.v1.CartService: requests in, answers out.

Protovalidate has already checked every request's shape (the runtime interceptor). Each
mutation reads what it needs from inventory first (no row is locked while the item master
answers, except at checkout), then, in one transaction and at most once per request_id,
locks the owner's cart, applies the domain rule, stores the result and writes its events
to the outbox.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.cart.v1 import cart_events_pb2 as ev
from continuum.cart.v1 import cart_resources_pb2 as res
from continuum.cart.v1 import cart_service_pb2 as pb
from continuum.cart.v1 import cart_service_pb2_grpc
from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum_cart import domain, merging, publish, store
from continuum_cart.domain import OwnerKey
from continuum_cart.inventory import Inventory, ReservationShortage
from continuum_runtime import idempotency
from continuum_runtime.db import Database
from continuum_runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CartService"].full_name
DEFAULT_PAGE_SIZE = 50

M = TypeVar("M", bound=Message)

# How inventory's shortage reasons read on a checkout line.
_SHORTAGE_TO_ISSUE = {
    inv.SHORTAGE_REASON_INSUFFICIENT_STOCK: res.CHECKOUT_ISSUE_REASON_INSUFFICIENT_STOCK,
    inv.SHORTAGE_REASON_NOT_STOCKED: res.CHECKOUT_ISSUE_REASON_INSUFFICIENT_STOCK,
    inv.SHORTAGE_REASON_NO_SHIP_FROM_LOCATION: res.CHECKOUT_ISSUE_REASON_INSUFFICIENT_STOCK,
    inv.SHORTAGE_REASON_ITEM_NOT_SELLABLE: res.CHECKOUT_ISSUE_REASON_ITEM_UNAVAILABLE,
    inv.SHORTAGE_REASON_LOCATION_CLOSED: res.CHECKOUT_ISSUE_REASON_LOCATION_UNAVAILABLE,
    inv.SHORTAGE_REASON_NOT_PICKUP_CAPABLE: res.CHECKOUT_ISSUE_REASON_LOCATION_UNAVAILABLE,
}


def now() -> datetime:
    return datetime.now(UTC)


def _uuid_or_none(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _range(time_range: Any) -> tuple[datetime | None, datetime | None]:
    start = (
        time_range.start_time.ToDatetime(tzinfo=UTC) if time_range.HasField("start_time") else None
    )
    end = time_range.end_time.ToDatetime(tzinfo=UTC) if time_range.HasField("end_time") else None
    return start, end


def checkout_failed(message: str, issues: list[res.CheckoutLineIssue]) -> FailedPrecondition:
    reasons = {issue.reason for issue in issues}
    name = next(
        (
            label
            for reason, label in (
                (res.CHECKOUT_ISSUE_REASON_INSUFFICIENT_STOCK, "INSUFFICIENT_STOCK"),
                (res.CHECKOUT_ISSUE_REASON_ITEM_UNAVAILABLE, "ITEM_UNAVAILABLE"),
                (res.CHECKOUT_ISSUE_REASON_LOCATION_UNAVAILABLE, "LOCATION_UNAVAILABLE"),
            )
            if reason in reasons
        ),
        "PRICE_CHANGED",
    )
    return FailedPrecondition(
        message,
        reason=name,
        metadata={"skus": ",".join(issue.sku for issue in issues)},
        details=[res.CheckoutFailure(lines=issues)],
    )


class CartServicer(cart_service_pb2_grpc.CartServiceServicer):
    """CartService on top of the runtime."""

    def __init__(self, db: Database, inventory: Inventory, reservation_ttl_s: float) -> None:
        self.db = db
        self.inventory = inventory
        self.reservation_ttl_s = reservation_ttl_s

    async def _once(
        self,
        method: str,
        request: Message,
        response_type: type[M],
        work: Callable[[AsyncSession], Awaitable[M]],
    ) -> M:
        return await idempotency.run_once(self.db, method, request, response_type, work)

    # ----------------------------------------------------------------------------------
    # Carts
    # ----------------------------------------------------------------------------------

    async def GetCart(self, request: pb.GetCartRequest, context: Any) -> pb.GetCartResponse:
        if request.WhichOneof("cart") == "cart_id":
            cart_id = _uuid_or_none(request.cart_id)
            cart = await store.cart_by_id(self.db, cart_id) if cart_id else None
            if cart is None:
                raise NotFound(
                    f"no cart {request.cart_id}",
                    reason="CART_NOT_FOUND",
                    metadata={"cart_id": request.cart_id},
                )
            answer = pb.GetCartResponse(cart=cart)
            if request.include_wishlist:
                wishlist = await store.open_wishlist(self.db, OwnerKey.of(cart.owner))
                answer.wishlist.CopyFrom(wishlist or res.Wishlist(owner=cart.owner))
            return answer
        owner = OwnerKey.of(request.owner)
        if request.include_wishlist:
            found, wishlist = await store.open_cart_and_wishlist(self.db, owner)
            return pb.GetCartResponse(
                cart=found or res.Cart(owner=request.owner),
                wishlist=wishlist or res.Wishlist(owner=request.owner),
            )
        found = await store.open_cart(self.db, owner)
        return pb.GetCartResponse(cart=found or res.Cart(owner=request.owner))

    async def AddItem(self, request: pb.AddItemRequest, context: Any) -> pb.AddItemResponse:
        item = await self.inventory.item(request.sku)
        owner = OwnerKey.of(request.owner)

        async def work(session: AsyncSession) -> pb.AddItemResponse:
            at = now()
            cart = await store.lock_or_create_cart(session, owner, domain.new_cart(owner, at))
            domain.check_etag(cart.etag, request.etag)
            change = domain.add_item(
                cart,
                item,
                request.quantity,
                request.channel,
                request.store_id,
                at,
                expected_currency=request.currency_code,
            )
            await store.save_cart(session, cart)
            await self._updated(
                session, cart, ev.CART_CHANGE_TYPE_ITEM_ADDED, [change], request, at
            )
            return pb.AddItemResponse(cart=cart, line_id=change.line.line_id)

        return await self._once("AddItem", request, pb.AddItemResponse, work)

    async def UpdateItem(
        self, request: pb.UpdateItemRequest, context: Any
    ) -> pb.UpdateItemResponse:
        owner = OwnerKey.of(request.owner)
        seen = await store.open_cart(self.db, owner)
        sku = next(
            (ln.sku for ln in (seen.lines if seen else []) if ln.line_id == request.line_id), ""
        )
        item = await self.inventory.item(sku) if sku else None

        async def work(session: AsyncSession) -> pb.UpdateItemResponse:
            at = now()
            cart = await self._locked_cart(session, owner)
            domain.check_etag(cart.etag, request.etag)
            line = domain.line_of(cart, request.line_id)
            priced = item if item is not None and item.sku == line.sku else None
            if priced is None:  # the line changed between the read and the lock
                priced = await self.inventory.item(line.sku)
            change = domain.update_item(
                cart,
                request.line_id,
                request.quantity,
                priced,
                request.channel,
                request.store_id,
                at,
            )
            await store.save_cart(session, cart)
            await self._updated(
                session, cart, ev.CART_CHANGE_TYPE_ITEM_UPDATED, [change], request, at
            )
            return pb.UpdateItemResponse(cart=cart)

        return await self._once("UpdateItem", request, pb.UpdateItemResponse, work)

    async def RemoveItem(
        self, request: pb.RemoveItemRequest, context: Any
    ) -> pb.RemoveItemResponse:
        owner = OwnerKey.of(request.owner)

        async def work(session: AsyncSession) -> pb.RemoveItemResponse:
            at = now()
            cart = await self._locked_cart(session, owner)
            domain.check_etag(cart.etag, request.etag)
            change = domain.remove_item(
                cart, request.line_id, request.channel, request.store_id, at
            )
            await store.save_cart(session, cart)
            await self._updated(
                session, cart, ev.CART_CHANGE_TYPE_ITEM_REMOVED, [change], request, at
            )
            return pb.RemoveItemResponse(cart=cart)

        return await self._once("RemoveItem", request, pb.RemoveItemResponse, work)

    async def ClearCart(self, request: pb.ClearCartRequest, context: Any) -> pb.ClearCartResponse:
        owner = OwnerKey.of(request.owner)

        async def work(session: AsyncSession) -> pb.ClearCartResponse:
            at = now()
            cart = await store.lock_open_cart(session, owner)
            if cart is None:
                return pb.ClearCartResponse(cart=res.Cart(owner=request.owner))
            domain.check_etag(cart.etag, request.etag)
            changes = domain.clear(cart, request.channel, request.store_id, at)
            if changes:
                await store.save_cart(session, cart)
                await self._updated(
                    session, cart, ev.CART_CHANGE_TYPE_CLEARED, changes, request, at
                )
            return pb.ClearCartResponse(cart=cart)

        return await self._once("ClearCart", request, pb.ClearCartResponse, work)

    async def _locked_cart(self, session: AsyncSession, owner: OwnerKey) -> res.Cart:
        cart = await store.lock_open_cart(session, owner)
        if cart is None:
            raise NotFound(f"{owner} has no cart", reason="CART_NOT_FOUND")
        return cart

    async def _updated(
        self,
        session: AsyncSession,
        cart: res.Cart,
        change_type: int,
        changes: list[ev.CartLineChange],
        request: Any,
        at: datetime,
    ) -> None:
        await publish.cart_updated(
            session,
            cart,
            change_type,
            changes,
            channel=request.channel,
            store_id=request.store_id,
            request_id=request.request_id,
            at=at,
        )

    # ----------------------------------------------------------------------------------
    # Wishlists
    # ----------------------------------------------------------------------------------

    async def GetWishlist(
        self, request: pb.GetWishlistRequest, context: Any
    ) -> pb.GetWishlistResponse:
        found = await store.open_wishlist(self.db, OwnerKey.of(request.owner))
        return pb.GetWishlistResponse(wishlist=found or res.Wishlist(owner=request.owner))

    async def AddWishlistItem(
        self, request: pb.AddWishlistItemRequest, context: Any
    ) -> pb.AddWishlistItemResponse:
        item = await self.inventory.item(request.sku)
        owner = OwnerKey.of(request.owner)

        async def work(session: AsyncSession) -> pb.AddWishlistItemResponse:
            at = now()
            wishlist = await store.lock_or_create_wishlist(
                session, owner, domain.new_wishlist(owner, at)
            )
            domain.check_etag(wishlist.etag, request.etag, "wishlist")
            saved, new = domain.save_item(
                wishlist,
                item.sku,
                request.quantity or 1,
                domain.money(item.price_minor, item.currency),
                item.product,
                request.channel,
                request.store_id,
                at,
            )
            await store.save_wishlist(session, wishlist)
            if new:
                await publish.wishlist_item_added(
                    session,
                    wishlist,
                    saved,
                    from_cart=False,
                    channel=request.channel,
                    store_id=request.store_id,
                )
            return pb.AddWishlistItemResponse(wishlist=wishlist, item_id=saved.item_id)

        return await self._once("AddWishlistItem", request, pb.AddWishlistItemResponse, work)

    async def RemoveWishlistItem(
        self, request: pb.RemoveWishlistItemRequest, context: Any
    ) -> pb.RemoveWishlistItemResponse:
        owner = OwnerKey.of(request.owner)

        async def work(session: AsyncSession) -> pb.RemoveWishlistItemResponse:
            at = now()
            wishlist = await store.lock_open_wishlist(session, owner)
            if wishlist is None:
                raise NotFound(f"{owner} has no wishlist", reason="WISHLIST_NOT_FOUND")
            domain.check_etag(wishlist.etag, request.etag, "wishlist")
            index = domain.wishlist_item_index(wishlist, item_id=request.item_id, sku=request.sku)
            del wishlist.items[index]
            domain.wishlist_changed(wishlist, at)
            await store.save_wishlist(session, wishlist)
            return pb.RemoveWishlistItemResponse(wishlist=wishlist)

        return await self._once("RemoveWishlistItem", request, pb.RemoveWishlistItemResponse, work)

    async def MoveToWishlist(
        self, request: pb.MoveToWishlistRequest, context: Any
    ) -> pb.MoveToWishlistResponse:
        owner = OwnerKey.of(request.owner)

        async def work(session: AsyncSession) -> pb.MoveToWishlistResponse:
            at = now()
            cart = await self._locked_cart(session, owner)
            wishlist = await store.lock_or_create_wishlist(
                session, owner, domain.new_wishlist(owner, at)
            )
            domain.check_etag(cart.etag, request.cart_etag)
            domain.check_etag(wishlist.etag, request.wishlist_etag, "wishlist")
            line = domain.line_of(cart, request.line_id)
            saved, new = domain.save_item(
                wishlist,
                line.sku,
                line.quantity,
                line.unit_price,
                line.product,
                request.channel,
                request.store_id,
                at,
            )
            change = domain.remove_item(
                cart, request.line_id, request.channel, request.store_id, at
            )
            await store.save_cart(session, cart)
            await store.save_wishlist(session, wishlist)
            await self._updated(
                session, cart, ev.CART_CHANGE_TYPE_MOVED_TO_WISHLIST, [change], request, at
            )
            if new:
                await publish.wishlist_item_added(
                    session,
                    wishlist,
                    saved,
                    from_cart=True,
                    channel=request.channel,
                    store_id=request.store_id,
                )
            return pb.MoveToWishlistResponse(cart=cart, wishlist=wishlist, item_id=saved.item_id)

        return await self._once("MoveToWishlist", request, pb.MoveToWishlistResponse, work)

    async def MoveToCart(
        self, request: pb.MoveToCartRequest, context: Any
    ) -> pb.MoveToCartResponse:
        owner = OwnerKey.of(request.owner)
        seen = await store.open_wishlist(self.db, owner)
        sku = next(
            (i.sku for i in (seen.items if seen else []) if i.item_id == request.item_id), ""
        )
        item = await self.inventory.item(sku) if sku else None

        async def work(session: AsyncSession) -> pb.MoveToCartResponse:
            at = now()
            cart = await store.lock_or_create_cart(session, owner, domain.new_cart(owner, at))
            wishlist = await store.lock_open_wishlist(session, owner)
            if wishlist is None:
                raise NotFound(f"{owner} has no wishlist", reason="WISHLIST_NOT_FOUND")
            domain.check_etag(cart.etag, request.cart_etag)
            domain.check_etag(wishlist.etag, request.wishlist_etag, "wishlist")
            index = domain.wishlist_item_index(wishlist, item_id=request.item_id)
            saved = wishlist.items[index]
            priced = item if item is not None and item.sku == saved.sku else None
            if priced is None:
                priced = await self.inventory.item(saved.sku)
            quantity = request.quantity or saved.quantity
            change = domain.add_item(cart, priced, quantity, request.channel, request.store_id, at)
            if not request.keep_in_wishlist:
                del wishlist.items[index]
                domain.wishlist_changed(wishlist, at)
                await store.save_wishlist(session, wishlist)
            await store.save_cart(session, cart)
            await self._updated(
                session, cart, ev.CART_CHANGE_TYPE_MOVED_FROM_WISHLIST, [change], request, at
            )
            return pb.MoveToCartResponse(cart=cart, wishlist=wishlist, line_id=change.line.line_id)

        return await self._once("MoveToCart", request, pb.MoveToCartResponse, work)

    # ----------------------------------------------------------------------------------
    # Merging
    # ----------------------------------------------------------------------------------

    async def MergeCarts(
        self, request: pb.MergeCartsRequest, context: Any
    ) -> pb.MergeCartsResponse:
        async def work(session: AsyncSession) -> pb.MergeCartsResponse:
            return await merging.merge_owners(
                session,
                OwnerKey.of(request.source),
                OwnerKey.of(request.target),
                rule=request.rule or res.MERGE_QUANTITY_RULE_MAX,
                trigger=res.MERGE_TRIGGER_EXPLICIT,
                channel=request.channel,
                request_id=request.request_id,
                at=now(),
            )

        return await self._once("MergeCarts", request, pb.MergeCartsResponse, work)

    # ----------------------------------------------------------------------------------
    # Checkout and orders
    # ----------------------------------------------------------------------------------

    async def Checkout(self, request: pb.CheckoutRequest, context: Any) -> pb.CheckoutResponse:
        """Reserve every line through inventory, record the order, publish order placed
        and clear the cart, in the cart's transaction: the cart stays locked while
        inventory reserves, so what is ordered is exactly what was reserved. A reservation
        made by an attempt that then fails is released."""
        owner = OwnerKey.of(request.owner)
        async with self.db.transaction() as session:
            earlier = await idempotency.begin(session, "Checkout", request, pb.CheckoutResponse)
            if earlier is not None:
                return earlier
            at = now()
            cart = await store.lock_open_cart(session, owner)
            if cart is None or not cart.lines:
                raise FailedPrecondition(
                    "the cart is empty", reason="EMPTY_CART", metadata={"owner": str(owner)}
                )
            domain.check_etag(cart.etag, request.etag)
            amounts = self._amounts(request, cart.currency_code)
            current = await self.inventory.items([line.sku for line in cart.lines])
            unavailable, repriced = domain.price_issues(cart, current)
            if unavailable:
                raise checkout_failed("some items can no longer be sold", unavailable)
            if request.HasField("expected_total"):
                total = domain.checkout_total(cart, current, *amounts)
                expected = request.expected_total
                if expected.currency_code != cart.currency_code or expected.amount_minor != total:
                    raise checkout_failed(
                        f"the total is now {total} {cart.currency_code}", repriced
                    )
            order_id = domain.order_id_for(owner, request.request_id)
            pickup = request.fulfilment.type == res.FULFILMENT_TYPE_PICKUP
            location = request.fulfilment.pickup_location_id
            try:
                reservation = await self.inventory.reserve(
                    request_id=f"checkout:{order_id}:{uuid.uuid4()}",
                    kind=(
                        inv.RESERVATION_KIND_CLICK_AND_COLLECT
                        if pickup
                        else inv.RESERVATION_KIND_CHECKOUT
                    ),
                    lines=[(line.sku, location, line.quantity) for line in cart.lines],
                    reference=order_id,
                    customer_id=owner.customer_id,
                    ttl_s=self.reservation_ttl_s,
                )
            except ReservationShortage as short:
                raise checkout_failed(
                    "some lines cannot be reserved", self._issues(cart, short)
                ) from short
            try:
                reserved = {line.sku: line.location_id for line in reservation.lines}
                order = domain.build_order(
                    cart,
                    current,
                    order_id=order_id,
                    locations=[reserved.get(line.sku, location) for line in cart.lines],
                    reservation_id=reservation.reservation_id,
                    channel=request.channel,
                    store_id=request.store_id,
                    fulfilment=request.fulfilment,
                    discount=amounts[0],
                    tax=amounts[1],
                    shipping=amounts[2],
                    at=at,
                )
                await store.insert_order(session, order)
                changes = domain.clear(cart, request.channel, request.store_id, at)
                await store.save_cart(session, cart)
                await publish.order_placed(session, order)
                await self._updated(
                    session, cart, ev.CART_CHANGE_TYPE_CHECKED_OUT, changes, request, at
                )
                return await idempotency.remember(
                    session, "Checkout", request, pb.CheckoutResponse(order=order, cart=cart)
                )
            except BaseException:
                await self._release_quietly(reservation.reservation_id)
                raise

    async def _release_quietly(self, reservation_id: str) -> None:
        try:
            await self.inventory.release(
                request_id=f"checkout-failed:{reservation_id}",
                reservation_id=reservation_id,
                reason="checkout_failed",
            )
        except Exception:
            return

    def _amounts(self, request: pb.CheckoutRequest, currency: str) -> tuple[int, int, int]:
        violations = []
        amounts = []
        for name in ("discount_total", "tax_total", "shipping_total"):
            if not request.HasField(name):
                amounts.append(0)
                continue
            value = getattr(request, name)
            if value.currency_code != currency:
                violations.append(
                    FieldViolation(
                        f"{name}.currency_code",
                        f"must be the cart's currency {currency}",
                        "CURRENCY_MISMATCH",
                    )
                )
            amounts.append(value.amount_minor)
        if violations:
            raise InvalidArgument("amounts must be in the cart's currency", violations=violations)
        return amounts[0], amounts[1], amounts[2]

    def _issues(self, cart: res.Cart, short: ReservationShortage) -> list[res.CheckoutLineIssue]:
        issues = []
        for line in short.short_lines:
            cart_line = cart.lines[line.index] if 0 <= line.index < len(cart.lines) else None
            issues.append(
                res.CheckoutLineIssue(
                    line_id=cart_line.line_id if cart_line else "",
                    sku=line.sku,
                    reason=_SHORTAGE_TO_ISSUE.get(
                        line.reason, res.CHECKOUT_ISSUE_REASON_INSUFFICIENT_STOCK
                    ),
                    requested_quantity=line.requested_quantity,
                    available_quantity=line.available_quantity,
                    location_id=line.location_id,
                )
            )
        return issues

    async def GetOrder(self, request: pb.GetOrderRequest, context: Any) -> pb.GetOrderResponse:
        order_id = _uuid_or_none(request.order_id)
        order = await store.order_by_id(self.db, order_id) if order_id else None
        if order is None:
            raise NotFound(
                f"no order {request.order_id}",
                reason="ORDER_NOT_FOUND",
                metadata={"order_id": request.order_id},
            )
        return pb.GetOrderResponse(order=order)

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: Any
    ) -> pb.ListOrdersResponse:
        after, before = _range(request.place_time_range)
        async with self.db.reader() as conn:
            orders, token = await store.list_orders(
                conn,
                OwnerKey.of(request.owner),
                after,
                before,
                request.page_size or DEFAULT_PAGE_SIZE,
                request.page_token,
            )
        return pb.ListOrdersResponse(orders=orders, next_page_token=token)

    async def ListAbandonedCarts(
        self, request: pb.ListAbandonedCartsRequest, context: Any
    ) -> pb.ListAbandonedCartsResponse:
        after, before = _range(request.abandon_time_range)
        async with self.db.reader() as conn:
            carts, token = await store.list_abandoned(
                conn,
                store.AbandonedFilter(
                    after=after,
                    before=before,
                    last_channel=request.last_channel,
                    last_store_id=request.last_store_id,
                    customers_only=request.customers_only,
                ),
                request.page_size or DEFAULT_PAGE_SIZE,
                request.page_token,
            )
        return pb.ListAbandonedCartsResponse(carts=carts, next_page_token=token)
