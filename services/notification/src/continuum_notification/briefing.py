"""Assembling a briefing: the parts fetched in parallel under one deadline budget.

Order of work, all bounded by the budget's end:

1. profile summary (who, consent to be recognised), cart with wishlist (one call) and the
   customer's visits (notification's own check-ins) start together;
2. as soon as cart and wishlist are in: availability of their SKUs here (with the other
   sizes of the same products, and in the same call the nearest stores that have the
   items that are low or out here) and the next best actions (with, in the same call,
   the complements in stock here) start together.

Other sizes ("sizes") are a nicety: when they fail, the items keep their own counts here
and that part is listed as missing.

A part that fails or is late is listed in ``missing_parts`` with the service, the status
code and the reason (unavailable, timeout, not found); everything else is kept. When the
profile says the customer did not agree to be recognised, the other parts are cancelled
and nothing is kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import timestamp_pb2

from continuum.cart.v1 import cart_resources_pb2 as cart_res
from continuum.cart.v1 import cart_service_pb2 as cart_pb
from continuum.common.v1 import channel_pb2, partial_pb2
from continuum.inventory.v1 import inventory_resources_pb2 as inv_res
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.notification.v1 import notification_resources_pb2 as res
from continuum.profile.v1 import profile_resources_pb2 as prof_res
from continuum.profile.v1 import profile_service_pb2 as prof_pb
from continuum.recommendation.v1 import recommendation_resources_pb2 as rec_res
from continuum.recommendation.v1 import recommendation_service_pb2 as rec_pb
from continuum_notification.dependencies import (
    CART,
    INVENTORY,
    PROFILE,
    RECOMMENDATION,
    Dependencies,
    PartFailed,
    part,
)

_INV_STATUS = {
    inv_res.AVAILABILITY_STATUS_IN_STOCK: res.AVAILABILITY_STATUS_IN_STOCK,
    inv_res.AVAILABILITY_STATUS_LOW_STOCK: res.AVAILABILITY_STATUS_LOW_STOCK,
    inv_res.AVAILABILITY_STATUS_OUT_OF_STOCK: res.AVAILABILITY_STATUS_OUT_OF_STOCK,
    inv_res.AVAILABILITY_STATUS_NOT_STOCKED: res.AVAILABILITY_STATUS_NOT_STOCKED,
}
_REC_STATUS = {
    rec_res.AVAILABILITY_STATUS_IN_STOCK: res.AVAILABILITY_STATUS_IN_STOCK,
    rec_res.AVAILABILITY_STATUS_LOW_STOCK: res.AVAILABILITY_STATUS_LOW_STOCK,
    rec_res.AVAILABILITY_STATUS_OUT_OF_STOCK: res.AVAILABILITY_STATUS_OUT_OF_STOCK,
}
_PRICE_TIER = {
    prof_res.PRICE_TIER_BUDGET: "budget",
    prof_res.PRICE_TIER_MID: "mid",
    prof_res.PRICE_TIER_PREMIUM: "premium",
    prof_res.PRICE_TIER_LUXURY: "luxury",
}
MAX_WISHLIST = 10
MAX_COMPLEMENTS = 5
MAX_ACTIONS = 3
MAX_SIZE_PRODUCTS = 5
# Stores inventory lists for the items short here (each item keeps the nearest three).
NEARBY_STORES = 20

VisitsReader = Callable[[], Awaitable[res.VisitSummary]]


@dataclass
class Assembly:
    """What the fan-out produced; ``consent`` is None when profile could not say."""

    consent: bool | None
    customer: res.CustomerSummary | None = None
    cart: res.BriefingCart | None = None
    wishlist: list[res.ItemSummary] = field(default_factory=list)
    complements: list[res.ItemSummary] = field(default_factory=list)
    actions: list[res.NextBestAction] = field(default_factory=list)
    recommendation_ids: list[str] = field(default_factory=list)
    missing: list[partial_pb2.MissingPart] = field(default_factory=list)


def _now_ts() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def customer_summary(summary: prof_res.ProfileSummary) -> res.CustomerSummary:
    """The associate-facing customer part, from profile's summary."""
    out = res.CustomerSummary(
        customer_id=summary.customer_id,
        display_name=summary.display_name,
        loyalty_tier=summary.loyalty_tier,
        colours=list(summary.colours[:3]),
        brands=list(summary.brands[:3]),
        categories=list(summary.categories[:3]),
        price_tier=_PRICE_TIER.get(summary.price_tier, ""),
        talking_points=list(summary.highlights[:3]),
        order_count=summary.order_count,
        preferred_store_id=summary.preferred_store_id,
    )
    for pref in summary.sizes[:5]:
        sizes = [pref.size.value] if pref.size.value else []
        sizes += [a.value for a in pref.alternatives if a.value][: 3 - len(sizes)]
        out.category_preferences.append(res.CategoryPreference(category=pref.category, sizes=sizes))
    if summary.HasField("lifetime_value"):
        out.lifetime_value.CopyFrom(summary.lifetime_value)
    if summary.HasField("last_seen") and summary.last_seen.channel:
        out.last_seen.append(
            res.ChannelLastSeen(
                channel=summary.last_seen.channel, last_seen_time=summary.last_seen.last_seen_time
            )
        )
    for line in summary.recent_purchases[:3]:
        out.recent_purchases.append(
            res.PurchasedItem(
                order_id=line.order_id,
                sku=line.product.sku,
                product_id=line.product.product_id,
                name=line.product.name,
                size=line.product.size,
                colour=line.product.colour,
                quantity=line.quantity,
                returned_quantity=line.returned_quantity,
                channel=line.channel,
                store_id=line.store_id,
                order_time=line.order_time,
            )
        )
    return out


def _snapshot_item(
    sku: str,
    snapshot: cart_res.ProductSnapshot,
    unit_price: Any,
    quantity: int,
    add_time: timestamp_pb2.Timestamp,
    channel: int,
) -> res.ItemSummary:
    item = res.ItemSummary(
        sku=sku,
        product_id=snapshot.product_id,
        name=snapshot.name,
        brand=snapshot.brand,
        category=snapshot.category,
        size=snapshot.size,
        colour=snapshot.colour,
        image_url=snapshot.image_url,
        quantity=quantity,
        add_time=add_time,
        add_channel=channel,  # type: ignore[arg-type]
    )
    if unit_price is not None and unit_price.currency_code:
        item.unit_price.CopyFrom(unit_price)
    return item


def briefing_cart(cart: cart_res.Cart) -> res.BriefingCart | None:
    if not cart.lines:
        return None
    out = res.BriefingCart(
        cart_id=cart.cart_id,
        channel=cart.last_channel,
        update_time=cart.update_time,
        items=[
            _snapshot_item(
                line.sku, line.product, line.unit_price, line.quantity, line.add_time, line.channel
            )
            for line in cart.lines
        ],
    )
    if cart.HasField("subtotal"):
        out.subtotal.CopyFrom(cart.subtotal)
    if cart.HasField("abandon_time"):
        out.abandon_time.CopyFrom(cart.abandon_time)
    return out


def wishlist_items(wishlist: cart_res.Wishlist) -> list[res.ItemSummary]:
    items = sorted(wishlist.items, key=lambda i: i.add_time.ToNanoseconds(), reverse=True)
    return [
        _snapshot_item(i.sku, i.product, i.unit_price, 0, i.add_time, i.channel)
        for i in items[:MAX_WISHLIST]
    ]


def recommended_item(item: rec_res.RecommendedItem) -> res.ItemSummary:
    out = res.ItemSummary(
        sku=item.sku,
        product_id=item.product_id,
        name=item.name,
        brand=item.brand,
        category=item.category,
        size=item.size,
        colour=item.colour,
        image_url=item.image_url,
    )
    if item.HasField("unit_price"):
        out.unit_price.CopyFrom(item.unit_price)
    if item.HasField("reason"):
        kind = rec_res.ReasonKind.Name(item.reason.kind).removeprefix("REASON_KIND_").lower()
        out.reason.CopyFrom(
            res.ItemReason(
                code="" if kind == "unspecified" else kind,
                text=item.reason.text,
                related_sku=item.reason.related_sku,
            )
        )
    if item.HasField("availability") and item.availability.store_id:
        a = item.availability
        out.availability.CopyFrom(
            res.StoreAvailability(
                store_id=a.store_id,
                status=_REC_STATUS.get(a.status, res.AVAILABILITY_STATUS_UNKNOWN),
                available_count=a.available_quantity,
                sizes_available=[res.SizeAvailability(size=s) for s in a.sizes_in_stock],
                check_time=a.check_time,
            )
        )
    return out


def next_best_action(index: int, action: rec_res.NextBestAction) -> res.NextBestAction:
    return res.NextBestAction(
        action_id=action.action_id or f"action-{index + 1}",
        kind=action.kind,  # type: ignore[arg-type]  # the same numbering by design
        title=action.title,
        explanation=action.explanation,
        items=[recommended_item(i) for i in action.items],
        score=action.score,
        priority=action.priority,  # type: ignore[arg-type]
        offer_id=action.offer_id,
        reference_id=action.reference_id,
        state=res.ACTION_STATE_PROPOSED,
    )


def _size_key(size: str) -> tuple[int, float, str]:
    try:
        return (0, float(size), size)
    except ValueError:
        return (1, 0.0, size)


class Availability:
    """Availability of the briefing's items at the store, with sizes and nearby stock."""

    def __init__(self, deps: Dependencies, store_id: str, deadline: float) -> None:
        self._deps = deps
        self._store = store_id
        self._deadline = deadline
        # Parts that are niceties (other sizes): when they fail, the items' own counts
        # still show and the briefing names what is missing.
        self.missing: list[partial_pb2.MissingPart] = []
        # Nearby stores with stock, per SKU short here (inventory searches them in the
        # same call as the counts).
        self.nearby: dict[str, list[res.NearbyAvailability]] = {}

    def _left(self) -> float:
        return self._deadline - time.monotonic()

    def _note(self, failed: PartFailed) -> None:
        if all(m.part != failed.missing.part for m in self.missing):
            self.missing.append(failed.missing)

    async def _check(
        self, skus: Sequence[str], nearby_for: Sequence[str] = ()
    ) -> dict[str, inv_res.SkuAvailability]:
        """Counts here; for those of ``nearby_for`` that are short here, inventory also
        searches the nearest stores in the same call (kept in ``self.nearby``)."""
        found: dict[str, inv_res.SkuAvailability] = {}
        for start in range(0, len(skus), 100):
            chunk = list(skus[start : start + 100])
            request = inv_pb.CheckAvailabilityRequest(location_id=self._store, skus=chunk)
            in_chunk = set(chunk)
            searched = [s for s in nearby_for if s in in_chunk]
            if searched:
                request.nearby.skus.extend(searched)
                request.nearby.limit = NEARBY_STORES
            answer = await part(
                "availability",
                INVENTORY,
                self._deps.inventory.CheckAvailability(request, timeout=self._left()),
                self._left(),
            )
            found.update({a.sku: a for a in answer.availabilities})
            self._keep_nearby(answer.nearby)
        return found

    async def _siblings(self, product_id: str) -> list[inv_res.Item]:
        cached = self._deps.cached_product(product_id)
        if cached is not None:
            return cached
        try:
            answer = await part(
                "sizes",
                INVENTORY,
                self._deps.inventory.ListItems(
                    inv_pb.ListItemsRequest(
                        product_id=product_id,
                        states=[inv_res.ITEM_STATE_ACTIVE],
                        page_size=50,
                    ),
                    timeout=self._left(),
                ),
                self._left(),
            )
        except PartFailed as failed:
            self._note(failed)
            return []
        items = list(answer.items)
        self._deps.cache_product(product_id, items)
        return items

    def _keep_nearby(self, locations: Sequence[inv_res.NearbyLocation]) -> None:
        """Up to three other stores per SKU, nearest first, with units of it."""
        for loc in locations:
            if loc.location.location_id == self._store:
                continue
            for a in loc.availabilities:
                if a.available_to_promise > 0 and len(self.nearby.setdefault(a.sku, [])) < 3:
                    self.nearby[a.sku].append(
                        res.NearbyAvailability(
                            store_id=loc.location.location_id,
                            store_name=loc.location.name,
                            distance_meters=int(loc.distance_km * 1000),
                            available_count=a.available_to_promise,
                        )
                    )

    async def _counts(
        self,
        skus: list[str],
        products: list[str],
        known: list[list[inv_res.Item] | None],
    ) -> tuple[
        dict[str, inv_res.SkuAvailability],
        dict[str, inv_res.SkuAvailability],
        list[list[inv_res.Item]],
    ]:
        """The items' counts here, the counts of their other sizes, and those sizes."""
        extra: dict[str, inv_res.SkuAvailability] = {}
        if all(k is not None for k in known):
            # The usual case: the products' sizes are cached, one call answers everything.
            sibling_lists = [k for k in known if k is not None]
            sibling_skus = [s.sku for group in sibling_lists for s in group]
            own = await self._check(list(dict.fromkeys(skus + sibling_skus)), nearby_for=skus)
            return own, extra, sibling_lists
        own_task = asyncio.ensure_future(self._check(skus, nearby_for=skus))
        sibling_lists = list(await asyncio.gather(*(self._siblings(p) for p in products)))
        own = await own_task
        extra_skus = list(
            dict.fromkeys(s.sku for group in sibling_lists for s in group if s.sku not in own)
        )
        if extra_skus:
            try:
                extra = await self._check(extra_skus)
            except PartFailed as failed:
                failed.missing.part = "sizes"
                self._note(failed)
        return own, extra, sibling_lists

    async def fill(self, items: Sequence[res.ItemSummary]) -> None:
        """Set ``availability`` on every item (PartFailed when inventory cannot answer)."""
        skus = list(dict.fromkeys(i.sku for i in items))
        if not skus:
            return
        products = list(dict.fromkeys(i.product_id for i in items if i.product_id))
        products = products[:MAX_SIZE_PRODUCTS]
        known = [self._deps.cached_product(p) for p in products]
        own, extra, sibling_lists = await self._counts(skus, products, known)
        counts = {**extra, **own}
        by_product: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for group in sibling_lists:
            for s in group:
                by_product.setdefault((s.product_id, s.colour), []).append((s.size, s.sku))
        check_time = _now_ts()
        for item in items:
            a = own.get(item.sku)
            avail = res.StoreAvailability(store_id=self._store, check_time=check_time)
            if a is None:
                avail.status = res.AVAILABILITY_STATUS_NOT_STOCKED
            else:
                avail.status = _INV_STATUS.get(a.status, res.AVAILABILITY_STATUS_UNKNOWN)
                avail.available_count = a.available_to_promise
            sizes = by_product.get((item.product_id, item.colour), [])
            if not sizes and avail.available_count > 0 and item.size:
                sizes = [(item.size, item.sku)]
            for size, sku in sorted(set(sizes), key=lambda p: _size_key(p[0])):
                count = counts[sku].available_to_promise if sku in counts else 0
                if count > 0 and size:
                    avail.sizes_available.append(
                        res.SizeAvailability(size=size, sku=sku, available_count=count)
                    )
            avail.nearby.extend(self.nearby.get(item.sku, []))
            item.availability.CopyFrom(avail)


async def assemble(
    deps: Dependencies,
    *,
    customer_id: str,
    store_id: str,
    check_in_id: str,
    budget_s: float,
    visits: VisitsReader | None = None,
) -> Assembly:
    """Fan out to the five services under one budget; see the module docstring."""
    deadline = time.monotonic() + budget_s

    def left() -> float:
        return deadline - time.monotonic()

    owner = cart_res.Owner(customer_id=customer_id)
    profile_t = asyncio.ensure_future(
        part(
            "customer",
            PROFILE,
            deps.profile.GetProfileSummary(
                prof_pb.GetProfileSummaryRequest(customer_id=customer_id, store_id=store_id),
                timeout=left(),
            ),
            left(),
        )
    )
    # The cart and the wishlist in one call (cart reads both in one statement).
    basket_t = asyncio.ensure_future(
        part(
            "cart",
            CART,
            deps.cart.GetCart(
                cart_pb.GetCartRequest(owner=owner, include_wishlist=True), timeout=left()
            ),
            left(),
        )
    )
    visits_t = asyncio.ensure_future(visits()) if visits is not None else None
    later: list[asyncio.Future[Any]] = []
    out = Assembly(consent=None)

    async def rest() -> None:
        try:
            basket = await basket_t
        except PartFailed as failed:
            out.missing += [failed.missing, failed.also("wishlist")]
        else:
            out.cart = briefing_cart(basket.cart)
            out.wishlist = wishlist_items(basket.wishlist)
        cart_items = list(out.cart.items) if out.cart is not None else []
        cart_skus = [i.sku for i in cart_items]
        wish_skus = [i.sku for i in out.wishlist]
        seeds = list(dict.fromkeys(cart_skus + wish_skus))[:50]
        availability = Availability(deps, store_id, deadline)
        avail_t = asyncio.ensure_future(availability.fill(cart_items + out.wishlist))
        later.append(avail_t)
        nba_t = asyncio.ensure_future(
            part(
                "next_best_actions",
                RECOMMENDATION,
                deps.recommendation.GetNextBestAction(
                    rec_pb.GetNextBestActionRequest(
                        customer_id=customer_id,
                        store_id=store_id,
                        channel=channel_pb2.CHANNEL_STORE,
                        max_actions=MAX_ACTIONS,
                        cart_skus=cart_skus[:100],
                        wishlist_skus=wish_skus[:100],
                        check_in_id=check_in_id,
                        # What goes with the cart and wishlist, in stock here, in the
                        # same call.
                        complements_limit=MAX_COMPLEMENTS if seeds else 0,
                    ),
                    timeout=left(),
                ),
                left(),
            )
        )
        later.append(nba_t)
        avail_r = await asyncio.gather(avail_t, return_exceptions=True)
        if isinstance(avail_r[0], PartFailed):
            out.missing.append(avail_r[0].missing)
            for item in cart_items + out.wishlist:
                item.availability.CopyFrom(
                    res.StoreAvailability(store_id=store_id, status=res.AVAILABILITY_STATUS_UNKNOWN)
                )
        elif isinstance(avail_r[0], BaseException):
            raise avail_r[0]
        else:
            out.missing.extend(availability.missing)
        nba_r = (await asyncio.gather(nba_t, return_exceptions=True))[0]
        if isinstance(nba_r, PartFailed):
            if seeds:
                out.missing.append(nba_r.also("complements"))
            out.missing.append(nba_r.missing)
        elif isinstance(nba_r, BaseException):
            raise nba_r
        else:
            out.complements = [recommended_item(i) for i in nba_r.complements[:MAX_COMPLEMENTS]]
            out.actions = [
                next_best_action(i, a) for i, a in enumerate(nba_r.actions[:MAX_ACTIONS])
            ]
            if nba_r.recommendation_id:
                out.recommendation_ids.append(nba_r.recommendation_id)

    rest_t = asyncio.ensure_future(rest())
    everything: list[asyncio.Future[Any]] = [profile_t, basket_t, rest_t]
    try:
        try:
            summary = (await profile_t).summary
        except PartFailed as failed:
            out.missing.insert(0, failed.missing)
        else:
            out.consent = summary.store_recognition_allowed
            if not out.consent:
                return out
            out.customer = customer_summary(summary)
        await rest_t
        if visits_t is not None and out.customer is not None:
            out.customer.visits.CopyFrom(await visits_t)
        return out
    finally:
        for task in [*everything, *later, *([visits_t] if visits_t else [])]:
            if not task.done():
                task.cancel()
        # Retrieve exceptions of cancelled or failed helpers so none is reported unhandled.
        await asyncio.gather(*everything, *later, return_exceptions=True)
        if visits_t is not None:
            await asyncio.gather(visits_t, return_exceptions=True)


def headline(briefing: res.Briefing) -> str:
    """One line for a lock screen, e.g. "Sam K. (gold): 9 black Runner in cart, 3 here;
    Leather tote goes with it"."""
    who = "Customer"
    if briefing.HasField("customer") and briefing.customer.display_name:
        who = briefing.customer.display_name
        if briefing.customer.loyalty_tier:
            who += f" ({briefing.customer.loyalty_tier})"
    bits: list[str] = []
    if briefing.HasField("cart") and briefing.cart.items:
        first = briefing.cart.items[0]
        label = " ".join(p for p in (first.size, first.colour, first.name or first.sku) if p)
        text = f"{label} in cart"
        if first.HasField("availability") and first.availability.status in (
            res.AVAILABILITY_STATUS_IN_STOCK,
            res.AVAILABILITY_STATUS_LOW_STOCK,
        ):
            text += f", {first.availability.available_count} here"
        elif first.HasField("availability") and first.availability.status in (
            res.AVAILABILITY_STATUS_OUT_OF_STOCK,
            res.AVAILABILITY_STATUS_NOT_STOCKED,
        ):
            text += ", not here"
        bits.append(text)
        if len(briefing.cart.items) > 1:
            bits[-1] += f" (+{len(briefing.cart.items) - 1} more)"
    elif briefing.wishlist_items:
        bits.append(f"{len(briefing.wishlist_items)} on wishlist")
    if briefing.complements:
        bits.append(f"{briefing.complements[0].name or briefing.complements[0].sku} goes with it")
    if briefing.missing_parts:
        bits.append("partial: " + ", ".join(m.part for m in briefing.missing_parts))
    return f"{who}: " + ("; ".join(bits) if bits else "no open cart")
