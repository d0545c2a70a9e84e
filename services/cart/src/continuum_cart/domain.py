"""The cart's rules, on the API's own resources: lines, limits, currency, merges, orders.

Plain functions over continuum.cart.v1 messages, with no I/O: the servicer loads a cart or
wishlist, applies one of these and stores the result. Each function either changes the
resource and says what changed, or raises a domain error and leaves it untouched.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from continuum.cart.v1 import cart_events_pb2 as ev
from continuum.cart.v1 import cart_resources_pb2 as res
from continuum.common.v1 import money_pb2
from continuum_runtime.errors import Aborted, FailedPrecondition, NotFound

MAX_QUANTITY = 99
MAX_CART_LINES = 100
MAX_WISHLIST_ITEMS = 500

# Owner kinds as stored.
CUSTOMER, DEVICE = 1, 2

# Namespace of order ids, which are derived from (owner, request_id).
ORDER_NAMESPACE = uuid.UUID("5a1b7c52-3c38-4d2e-9a55-2f8f3d6b0c11")


@dataclass(frozen=True)
class OwnerKey:
    """A cart's owner as stored: (kind, id)."""

    kind: int
    id: str

    @staticmethod
    def of(owner: res.Owner) -> OwnerKey:
        if owner.WhichOneof("id") == "customer_id":
            return OwnerKey(CUSTOMER, owner.customer_id)
        return OwnerKey(DEVICE, owner.device_id)

    def message(self) -> res.Owner:
        if self.kind == CUSTOMER:
            return res.Owner(customer_id=self.id)
        return res.Owner(device_id=self.id)

    @property
    def customer_id(self) -> str:
        return self.id if self.kind == CUSTOMER else ""

    def __str__(self) -> str:
        return f"{'customer' if self.kind == CUSTOMER else 'device'}:{self.id}"


@dataclass(frozen=True)
class PricedItem:
    """What the item master says about a SKU, as far as the cart cares."""

    sku: str
    price_minor: int
    currency: str
    sellable: bool
    product: res.ProductSnapshot


def new_etag() -> str:
    return secrets.token_hex(8)


def ts(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def money(amount: int, currency: str) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, amount_minor=amount)


def _line_change(line: res.CartLine, previous: int, removed: bool = False) -> ev.CartLineChange:
    copy = res.CartLine()
    copy.CopyFrom(line)
    return ev.CartLineChange(line=copy, previous_quantity=previous, removed=removed)


def _find_line(cart: res.Cart, *, line_id: str = "", sku: str = "") -> int:
    for index, line in enumerate(cart.lines):
        if (line_id and line.line_id == line_id) or (sku and line.sku == sku):
            return index
    return -1


def _check_item(cart_currency: str, item: PricedItem, expected_currency: str = "") -> None:
    if not item.sellable:
        raise FailedPrecondition(
            f"item {item.sku} is not sellable",
            reason="ITEM_NOT_SELLABLE",
            metadata={"sku": item.sku},
        )
    for wanted in (cart_currency, expected_currency):
        if wanted and wanted != item.currency:
            raise FailedPrecondition(
                f"item {item.sku} is priced in {item.currency}, not {wanted}",
                reason="CURRENCY_MISMATCH",
                metadata={"sku": item.sku, "item_currency": item.currency, "currency": wanted},
            )


def _price_line(line: res.CartLine, item: PricedItem) -> None:
    line.unit_price.CopyFrom(money(item.price_minor, item.currency))
    line.line_total.CopyFrom(money(item.price_minor * line.quantity, item.currency))
    line.product.CopyFrom(item.product)


def _stamp(line: res.CartLine, channel: int, store_id: str, at: datetime) -> None:
    line.channel = channel  # type: ignore[assignment]
    line.store_id = store_id
    line.update_time.CopyFrom(ts(at))


def recompute(cart: res.Cart) -> None:
    """Totals, item count and currency from the lines."""
    currency = cart.lines[0].unit_price.currency_code if cart.lines else ""
    cart.currency_code = currency
    cart.item_count = sum(line.quantity for line in cart.lines)
    if currency:
        cart.subtotal.CopyFrom(
            money(sum(line.line_total.amount_minor for line in cart.lines), currency)
        )
    else:
        cart.ClearField("subtotal")


def touch(cart: res.Cart, channel: int, store_id: str, at: datetime) -> None:
    """Record owner activity: the cart is ACTIVE again and gets a new etag."""
    cart.state = res.CART_STATE_ACTIVE
    cart.ClearField("abandon_time")
    cart.last_activity_time.CopyFrom(ts(at))
    cart.last_channel = channel  # type: ignore[assignment]
    cart.last_store_id = store_id
    changed(cart, at)


def changed(cart: res.Cart, at: datetime) -> None:
    recompute(cart)
    cart.etag = new_etag()
    cart.update_time.CopyFrom(ts(at))


def check_etag(current: str, given: str, what: str = "cart") -> None:
    if given and given != current:
        raise Aborted(
            f"the {what} changed since it was read; read it again and retry",
            reason="ETAG_MISMATCH",
            metadata={"current_etag": current},
        )


def new_cart(owner: OwnerKey, at: datetime) -> res.Cart:
    cart = res.Cart(
        cart_id=str(uuid.uuid4()),
        owner=owner.message(),
        state=res.CART_STATE_ACTIVE,
    )
    cart.create_time.CopyFrom(ts(at))
    cart.update_time.CopyFrom(ts(at))
    cart.last_activity_time.CopyFrom(ts(at))
    return cart


def add_item(
    cart: res.Cart,
    item: PricedItem,
    quantity: int,
    channel: int,
    store_id: str,
    at: datetime,
    expected_currency: str = "",
) -> ev.CartLineChange:
    """Add units of a SKU: more on its line, or a new line."""
    _check_item(cart.currency_code, item, expected_currency)
    index = _find_line(cart, sku=item.sku)
    if index >= 0:
        line = cart.lines[index]
        previous = line.quantity
        if previous + quantity > MAX_QUANTITY:
            raise FailedPrecondition(
                f"a line holds at most {MAX_QUANTITY} units ({previous} already in the cart)",
                reason="LINE_QUANTITY_LIMIT",
                metadata={"sku": item.sku, "quantity": str(previous), "max": str(MAX_QUANTITY)},
            )
        line.quantity = previous + quantity
    else:
        if len(cart.lines) >= MAX_CART_LINES:
            raise FailedPrecondition(
                f"a cart holds at most {MAX_CART_LINES} lines",
                reason="CART_LINE_LIMIT",
                metadata={"max": str(MAX_CART_LINES)},
            )
        previous = 0
        line = cart.lines.add(line_id=str(uuid.uuid4()), sku=item.sku, quantity=quantity)
        line.add_time.CopyFrom(ts(at))
    _price_line(line, item)
    _stamp(line, channel, store_id, at)
    touch(cart, channel, store_id, at)
    return _line_change(line, previous)


def line_of(cart: res.Cart, line_id: str) -> res.CartLine:
    index = _find_line(cart, line_id=line_id)
    if index < 0:
        raise NotFound(
            f"no line {line_id} in the cart", reason="LINE_NOT_FOUND", metadata={"line_id": line_id}
        )
    return cart.lines[index]


def update_item(
    cart: res.Cart,
    line_id: str,
    quantity: int,
    item: PricedItem,
    channel: int,
    store_id: str,
    at: datetime,
) -> ev.CartLineChange:
    """Set a line's quantity and refresh its price."""
    line = line_of(cart, line_id)
    others = [other for other in cart.lines if other.line_id != line_id]
    _check_item(others[0].unit_price.currency_code if others else "", item)
    previous = line.quantity
    line.quantity = quantity
    _price_line(line, item)
    _stamp(line, channel, store_id, at)
    touch(cart, channel, store_id, at)
    return _line_change(line, previous)


def remove_item(
    cart: res.Cart, line_id: str, channel: int, store_id: str, at: datetime
) -> ev.CartLineChange:
    line = line_of(cart, line_id)
    change = _line_change(line, line.quantity, removed=True)
    del cart.lines[_find_line(cart, line_id=line_id)]
    touch(cart, channel, store_id, at)
    return change


def clear(cart: res.Cart, channel: int, store_id: str, at: datetime) -> list[ev.CartLineChange]:
    """Remove every line; no change (and no new etag) for an empty cart."""
    changes = [_line_change(line, line.quantity, removed=True) for line in cart.lines]
    if changes:
        del cart.lines[:]
        touch(cart, channel, store_id, at)
    return changes


# --------------------------------------------------------------------------------------
# Wishlists
# --------------------------------------------------------------------------------------


def new_wishlist(owner: OwnerKey, at: datetime) -> res.Wishlist:
    wishlist = res.Wishlist(
        wishlist_id=str(uuid.uuid4()), owner=owner.message(), state=res.WISHLIST_STATE_ACTIVE
    )
    wishlist.create_time.CopyFrom(ts(at))
    wishlist.update_time.CopyFrom(ts(at))
    return wishlist


def wishlist_changed(wishlist: res.Wishlist, at: datetime) -> None:
    wishlist.item_count = len(wishlist.items)
    wishlist.etag = new_etag()
    wishlist.update_time.CopyFrom(ts(at))


def save_item(
    wishlist: res.Wishlist,
    sku: str,
    quantity: int,
    unit_price: money_pb2.Money,
    product: res.ProductSnapshot,
    channel: int,
    store_id: str,
    at: datetime,
    *,
    enforce_limit: bool = True,
) -> tuple[res.WishlistItem, bool]:
    """Save a SKU (kept once, with the larger quantity). Returns the item and whether it
    is new on the wishlist."""
    for item in wishlist.items:
        if item.sku == sku:
            item.quantity = max(item.quantity, quantity)
            wishlist_changed(wishlist, at)
            return item, False
    if enforce_limit and len(wishlist.items) >= MAX_WISHLIST_ITEMS:
        raise FailedPrecondition(
            f"a wishlist holds at most {MAX_WISHLIST_ITEMS} items",
            reason="WISHLIST_ITEM_LIMIT",
            metadata={"max": str(MAX_WISHLIST_ITEMS)},
        )
    item = res.WishlistItem(
        item_id=str(uuid.uuid4()),
        sku=sku,
        quantity=quantity,
        unit_price=unit_price,
        product=product,
        channel=channel,  # type: ignore[arg-type]
        store_id=store_id,
    )
    item.add_time.CopyFrom(ts(at))
    wishlist.items.insert(0, item)  # newest first
    wishlist_changed(wishlist, at)
    return wishlist.items[0], True


def wishlist_item_index(wishlist: res.Wishlist, *, item_id: str = "", sku: str = "") -> int:
    for index, item in enumerate(wishlist.items):
        if (item_id and item.item_id == item_id) or (sku and item.sku == sku):
            return index
    raise NotFound(
        f"no item {item_id or sku} on the wishlist",
        reason="WISHLIST_ITEM_NOT_FOUND",
        metadata={"item_id": item_id} if item_id else {"sku": sku},
    )


# --------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------


@dataclass
class MergeOutcome:
    summary: res.MergeSummary
    changes: list[ev.CartLineChange] = field(default_factory=list)
    # Lines that could not go into the target cart (line limit, or another currency):
    # they go to the target's wishlist instead.
    overflow: list[res.CartLine] = field(default_factory=list)


def merge_lines(
    target: res.Cart,
    source_lines: Sequence[res.CartLine],
    rule: int,
    at: datetime,
) -> MergeOutcome:
    """Merge a source cart's lines into ``target``.

    A SKU in both carts becomes one line with the larger quantity (MAX) or the sum (SUM),
    capped at 99, at the target's price. Lines only in the source move as they are. When
    the target is full (100 lines), or the line is priced in another currency than the
    target's, the line goes to the overflow (the target's wishlist): nothing is lost.
    """
    outcome = MergeOutcome(summary=res.MergeSummary())
    summary = outcome.summary
    for incoming in source_lines:
        index = _find_line(target, sku=incoming.sku)
        if index >= 0:
            line = target.lines[index]
            previous = line.quantity
            if rule == res.MERGE_QUANTITY_RULE_SUM:
                wanted = previous + incoming.quantity
            else:
                wanted = max(previous, incoming.quantity)
            if wanted > MAX_QUANTITY:
                summary.capped_line_count += 1
                wanted = MAX_QUANTITY
            summary.combined_line_count += 1
            if wanted != previous:
                line.quantity = wanted
                line.line_total.amount_minor = line.unit_price.amount_minor * wanted
                line.update_time.CopyFrom(ts(at))
                outcome.changes.append(_line_change(line, previous))
            continue
        currency = target.lines[0].unit_price.currency_code if target.lines else ""
        if len(target.lines) >= MAX_CART_LINES or (
            currency and incoming.unit_price.currency_code != currency
        ):
            outcome.overflow.append(incoming)
            summary.overflow_to_wishlist_count += 1
            continue
        moved = target.lines.add()
        moved.CopyFrom(incoming)
        if _find_line(target, line_id=incoming.line_id) != len(target.lines) - 1:
            moved.line_id = str(uuid.uuid4())  # the id is taken in the target
        summary.moved_line_count += 1
        outcome.changes.append(_line_change(moved, 0))
    return outcome


def merge_wishlist_items(
    target: res.Wishlist, items: Iterable[res.WishlistItem], at: datetime
) -> tuple[int, list[res.WishlistItem]]:
    """Move wishlist items into ``target`` (a SKU already there is kept once, with the
    larger quantity). Merges may take a wishlist past its limit rather than drop items.
    Returns how many items were merged and the items that are new on the target."""
    count = 0
    added: list[res.WishlistItem] = []
    for item in sorted(items, key=lambda i: i.add_time.ToNanoseconds()):
        saved, new = save_item(
            target,
            item.sku,
            item.quantity,
            item.unit_price,
            item.product,
            item.channel,
            item.store_id,
            at,
            enforce_limit=False,
        )
        if new:
            saved.add_time.CopyFrom(item.add_time)
            added.append(saved)
        count += 1
    return count, added


# --------------------------------------------------------------------------------------
# Checkout
# --------------------------------------------------------------------------------------


def order_id_for(owner: OwnerKey, request_id: str) -> str:
    """The order id of a checkout request: the same for every retry of the request, so a
    retry finds the same reservation in inventory."""
    return str(uuid.uuid5(ORDER_NAMESPACE, f"{owner}/{request_id}"))


def price_issues(
    cart: res.Cart, current: dict[str, PricedItem]
) -> tuple[list[res.CheckoutLineIssue], list[res.CheckoutLineIssue]]:
    """(unavailable lines, lines whose price changed) against the item master now."""
    unavailable: list[res.CheckoutLineIssue] = []
    repriced: list[res.CheckoutLineIssue] = []
    for line in cart.lines:
        item = current.get(line.sku)
        if item is None or not item.sellable:
            unavailable.append(
                res.CheckoutLineIssue(
                    line_id=line.line_id,
                    sku=line.sku,
                    reason=res.CHECKOUT_ISSUE_REASON_ITEM_UNAVAILABLE,
                    requested_quantity=line.quantity,
                )
            )
        elif (
            item.price_minor != line.unit_price.amount_minor
            or item.currency != line.unit_price.currency_code
        ):
            repriced.append(
                res.CheckoutLineIssue(
                    line_id=line.line_id,
                    sku=line.sku,
                    reason=res.CHECKOUT_ISSUE_REASON_PRICE_CHANGED,
                    requested_quantity=line.quantity,
                    current_unit_price=money(item.price_minor, item.currency),
                )
            )
    return unavailable, repriced


def build_order(
    cart: res.Cart,
    current: dict[str, PricedItem],
    *,
    order_id: str,
    locations: Sequence[str],
    reservation_id: str,
    channel: int,
    store_id: str,
    fulfilment: res.Fulfilment,
    discount: int,
    tax: int,
    shipping: int,
    at: datetime,
) -> res.Order:
    """The order for a cart's lines at the current prices (``locations`` per line, as
    reserved)."""
    currency = cart.currency_code
    order = res.Order(
        order_id=order_id,
        cart_id=cart.cart_id,
        owner=cart.owner,
        channel=channel,  # type: ignore[arg-type]
        store_id=store_id,
        fulfilment=fulfilment,
        reservation_id=reservation_id,
    )
    for line, location in zip(cart.lines, locations, strict=True):
        price = current[line.sku].price_minor
        order.lines.add(
            line_id=line.line_id,
            sku=line.sku,
            quantity=line.quantity,
            unit_price=money(price, currency),
            line_total=money(price * line.quantity, currency),
            product=line.product,
            location_id=location,
        )
    subtotal = sum(line.line_total.amount_minor for line in order.lines)
    order.subtotal.CopyFrom(money(subtotal, currency))
    order.discount_total.CopyFrom(money(discount, currency))
    order.tax_total.CopyFrom(money(tax, currency))
    order.shipping_total.CopyFrom(money(shipping, currency))
    order.total.CopyFrom(money(subtotal - discount + tax + shipping, currency))
    order.item_count = sum(line.quantity for line in order.lines)
    order.place_time.CopyFrom(ts(at))
    return order


def checkout_total(
    cart: res.Cart, current: dict[str, PricedItem], discount: int, tax: int, shipping: int
) -> int:
    subtotal = sum(current[line.sku].price_minor * line.quantity for line in cart.lines)
    return subtotal - discount + tax + shipping
