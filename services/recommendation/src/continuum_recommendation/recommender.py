"""Answers: candidates from :mod:`scoring`, then exclusions, category and availability
filters, display attributes and reasons a person can read; cached per subject and context.

The answer cache is keyed by (method, subject, context, seeds, limit) and holds an answer
while the subject's behaviour generation and the model version are unchanged, for at most
``availability_ttl_s`` (the availability it was filtered with). Ranking ties break on the SKU;
the channel only matters for cold-start popularity, so a known customer gets the same
ranking on every channel.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from continuum.common.v1 import partial_pb2
from continuum.recommendation.v1 import recommendation_resources_pb2 as res
from continuum_recommendation import scoring
from continuum_recommendation.inventory import Inventory, InventoryDown, Stock, UnknownStore
from continuum_recommendation.live import History, LiveModel
from continuum_recommendation.rendering import Parts
from continuum_recommendation.scoring import Candidate
from continuum_runtime.errors import FieldViolation, InvalidArgument, Unavailable

INVENTORY_SERVICE = "continuum.inventory.v1.InventoryService"
DEFAULT_LIMIT = 10
AVAILABLE = (res.AVAILABILITY_STATUS_IN_STOCK, res.AVAILABILITY_STATUS_LOW_STOCK)


def new_recommendation_id() -> str:
    """Answer ids carry their time (hex milliseconds) for attribution windows."""
    return f"r{int(time.time() * 1000):x}-{os.urandom(5).hex()}"


def recommendation_time(recommendation_id: str) -> float | None:
    head = recommendation_id[1:].split("-", 1)[0] if recommendation_id.startswith("r") else ""
    try:
        return int(head, 16) / 1000.0
    except ValueError:
        return None


def reason_text(model: LiveModel, kind: int, related: int, value: str, cart: set[int]) -> str:
    name = model.name_of(related) if related >= 0 else ""
    where = " in your cart" if related in cart else ""
    if kind == res.REASON_KIND_BOUGHT_WITH:
        return f"Often bought with the {name}{where}"
    if kind == res.REASON_KIND_CARTED_WITH:
        return f"Often in the same basket as the {name}{where}"
    if kind == res.REASON_KIND_VIEWED_WITH:
        return f"Shoppers who looked at the {name} also looked at this"
    if kind == res.REASON_KIND_REPEAT_PURCHASE:
        if value:
            days = int(value)
            every = (
                "every day"
                if days == 1
                else f"every {days} days"
                if days < 14
                else f"every {round(days / 7)} weeks"
            )
            return f"You buy this about {every}"
        return "You have bought this before"
    if kind == res.REASON_KIND_POPULAR_IN_STORE:
        return "Popular in this store"
    if kind == res.REASON_KIND_POPULAR:
        return "Popular right now"
    if kind == res.REASON_KIND_IN_YOUR_SIZE:
        return f"In your size ({value})"
    if kind == res.REASON_KIND_MATCHES_YOUR_STYLE:
        return f"Matches your taste for {value}"
    if kind == res.REASON_KIND_IN_YOUR_CART:
        return "Still in your cart"
    if kind == res.REASON_KIND_ON_YOUR_WISHLIST:
        return "On your wishlist"
    if kind == res.REASON_KIND_RECENTLY_VIEWED:
        return "You looked at this recently"
    if kind == res.REASON_KIND_SIMILAR:
        return f"Similar to the {name}"
    return "Recommended for you"


@dataclass
class Context:
    store_id: str = ""
    channel: int = 0
    placement: str = ""
    filter: int = res.AVAILABILITY_FILTER_NONE
    exclude: frozenset[str] = frozenset()
    categories: tuple[str, ...] = ()

    @classmethod
    def of(cls, message: res.RecommendationContext | None, store_id: str = "") -> Context:
        if message is None:
            return cls(
                store_id=store_id,
                filter=res.AVAILABILITY_FILTER_IN_STORE
                if store_id
                else res.AVAILABILITY_FILTER_NONE,
            )
        store = message.store_id or store_id
        chosen = message.availability_filter
        if chosen == res.AVAILABILITY_FILTER_UNSPECIFIED:
            chosen = res.AVAILABILITY_FILTER_IN_STORE if store else res.AVAILABILITY_FILTER_NONE
        return cls(
            store_id=store,
            channel=message.channel,
            placement=message.placement,
            filter=chosen,
            exclude=frozenset(message.exclude_skus),
            categories=tuple(message.categories),
        )

    def key(self) -> tuple[Any, ...]:
        return (
            self.store_id,
            self.placement,
            self.filter,
            tuple(sorted(self.exclude)),
            self.categories,
        )


@dataclass
class Ranked:
    items: list[res.RecommendedItem] = field(default_factory=list)
    missing: list[partial_pb2.MissingPart] = field(default_factory=list)


class Recommender:
    def __init__(
        self, model: LiveModel, inventory: Inventory, ttl_s: float, cache_size: int
    ) -> None:
        self.model = model
        self.inventory = inventory
        self.ttl_s = ttl_s
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[Any, ...], tuple[float, int, int, Any]] = OrderedDict()
        self.parts = Parts(model, reason_text)

    # --- cache -------------------------------------------------------------------------

    def cached(self, key: tuple[Any, ...], generation: int) -> Any:
        hit = self._cache.get(key)
        if hit is None:
            return None
        expires, gen, version, answer = hit
        if (
            expires < time.monotonic()
            or gen != generation
            or version != self.model.version_generation
        ):
            return None
        return answer

    def remember(self, key: tuple[Any, ...], generation: int, answer: Any) -> None:
        self._cache[key] = (
            time.monotonic() + self.ttl_s,
            generation,
            self.model.version_generation,
            answer,
        )
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # --- validation --------------------------------------------------------------------

    async def require_items(
        self, skus: Sequence[str], field_name: str, *, single: bool = False
    ) -> list[int]:
        """Indexes of SKUs; INVALID_ARGUMENT UNKNOWN_ITEM naming every unknown one."""
        model = self.model
        unknown = [
            s for s in dict.fromkeys(skus) if s not in model.catalogue and s not in model.index
        ]
        if unknown:
            try:
                found = await self.inventory.items(unknown)
            except InventoryDown as exc:
                raise Unavailable(
                    "the item master cannot be reached to check the items",
                    reason="INVENTORY_UNAVAILABLE",
                ) from exc
            for info in found.values():
                model.put_item(info)
            missing = [s for s in unknown if s not in found]
            if missing:
                violations = [
                    FieldViolation(
                        field_name if single else f"{field_name}[{n}]",
                        f"unknown SKU {s}",
                        "UNKNOWN_ITEM",
                    )
                    for n, s in enumerate(skus)
                    if s in missing
                ]
                raise InvalidArgument(
                    f"unknown SKU: {', '.join(missing)}",
                    reason="UNKNOWN_ITEM",
                    metadata={"skus": ",".join(missing)},
                    violations=violations,
                )
        return [model.item(s) for s in skus]

    async def require_store(self, store_id: str, field_name: str) -> None:
        try:
            await self.inventory.require_store(store_id)
        except UnknownStore as exc:
            raise _unknown_store(store_id, field_name) from exc
        except InventoryDown as exc:
            raise Unavailable(
                "inventory cannot be reached to check the store", reason="INVENTORY_UNAVAILABLE"
            ) from exc

    # --- candidates --------------------------------------------------------------------

    def history(self, subject: str) -> History | None:
        return self.model.histories.get(subject) if subject else None

    def for_subject(
        self, subject: str, customer_id: str, ctx: Context, seeds: Sequence[int], now: float
    ) -> tuple[dict[int, Candidate], int]:
        """Candidates for a subject in a context, and the strategy."""
        model = self.model
        history = self.history(subject)
        out: dict[int, Candidate] = {}
        strategy = res.STRATEGY_COLD_START
        if history is not None and (history.baskets or history.recent or history.in_cart):
            if subject.startswith("c:") and history.baskets:
                strategy = res.STRATEGY_PERSONALISED
            out = scoring.personal(model, history, now)
        if seeds:
            scoring.complements(model, dict.fromkeys(seeds, 1.0), out, 1.0)
        if (
            customer_id
            and model.traits.get(customer_id) is not None
            and strategy != res.STRATEGY_PERSONALISED
        ):
            strategy = res.STRATEGY_PERSONALISED
        scoring.popularity(
            model,
            ctx.store_id,
            ctx.channel if strategy != res.STRATEGY_PERSONALISED else 0,
            out,
            model.params.w_popularity,
        )
        scoring.traits_boost(
            model,
            model.traits.get(customer_id) if customer_id else None,
            out,
            model.params.w_traits,
        )
        return out, strategy

    # --- finishing ---------------------------------------------------------------------

    async def finish(
        self,
        candidates: dict[int, Candidate],
        ctx: Context,
        limit: int,
        *,
        exclude: Sequence[int] = (),
        exclude_products: bool = False,
        cart: set[int] | None = None,
    ) -> Ranked:
        """Rank, filter and render; raises Unavailable when a filter cannot be applied."""
        model = self.model
        skus = model.skus
        excluded = set(exclude)
        products = {model.product_of(i) for i in exclude} if exclude_products else set()
        keyed = [(-round(c.score, 9), skus[c.item], c) for c in candidates.values()]
        keyed.sort(key=itemgetter(0, 1))
        ranked = [c for _, _, c in keyed]
        chosen: list[tuple[Candidate, Stock | None]] = []
        missing: list[partial_pb2.MissingPart] = []
        batch = max(limit * 3, 30)
        position = 0
        pool: list[Candidate] = []
        for c in ranked:
            sku = skus[c.item]
            if c.item in excluded or sku in ctx.exclude:
                continue
            if products and model.product_of(c.item) in products:
                continue
            if ctx.categories:
                info = model.catalogue.get(sku)
                if info is None or not any(info.category.startswith(p) for p in ctx.categories):
                    continue
            pool.append(c)
        while len(chosen) < limit and position < len(pool):
            window = pool[position : position + batch]
            position += batch
            if not ctx.store_id:
                chosen += [(c, None) for c in window]
                continue
            try:
                stock = await self.inventory.stock(ctx.store_id, [skus[c.item] for c in window])
            except UnknownStore as exc:
                raise _unknown_store(ctx.store_id, "context.store_id") from exc
            except InventoryDown as exc:
                if ctx.filter != res.AVAILABILITY_FILTER_NONE:
                    raise Unavailable(
                        "availability at the store cannot be checked now",
                        reason="AVAILABILITY_UNAVAILABLE",
                        metadata={"store_id": ctx.store_id},
                    ) from exc
                missing = [
                    partial_pb2.MissingPart(
                        part="availability", service=INVENTORY_SERVICE, code=exc.code.name
                    )
                ]
                unknown = Stock(res.AVAILABILITY_STATUS_UNKNOWN, 0, 0, 0.0)
                chosen += [(c, unknown) for c in window]
                continue
            for c in window:
                s = stock[skus[c.item]]
                if ctx.filter == res.AVAILABILITY_FILTER_IN_STORE and (
                    s.status not in AVAILABLE or s.available <= 0
                ):
                    continue
                if ctx.filter == res.AVAILABILITY_FILTER_PICKUP and s.pickup <= 0:
                    continue
                chosen.append((c, s))
        in_cart = cart or set()
        items = [self.render(c, s, ctx, n, in_cart) for n, (c, s) in enumerate(chosen[:limit])]
        return Ranked(items, missing)

    def render(
        self, c: Candidate, stock: Stock | None, ctx: Context, position: int, cart: set[int]
    ) -> res.RecommendedItem:
        parts = self.parts
        blobs = [
            parts.item(c.item),
            parts.reason(c.reason, c.related, c.value, c.related in cart, True),
        ]
        for kind, related, value in _distinct(c.support, c.reason)[:3]:
            blobs.append(parts.reason(kind, related, value, related in cart, False))
        if stock is not None:
            pickup = ctx.filter == res.AVAILABILITY_FILTER_PICKUP
            blobs.append(parts.availability(stock, ctx.store_id, pickup))
        item = res.RecommendedItem.FromString(b"".join(blobs))
        item.score = round(c.score, 6)
        item.position = position
        return item


def _distinct(support: list[tuple[int, int, str]], main: int) -> list[tuple[int, int, str]]:
    seen = {main}
    out = []
    for kind, related, value in support:
        if kind in seen:
            continue
        seen.add(kind)
        out.append((kind, related, value))
    return out


def _unknown_store(store_id: str, field_name: str) -> InvalidArgument:
    return InvalidArgument(
        f"unknown store {store_id}",
        reason="UNKNOWN_STORE",
        metadata={"store_id": store_id},
        violations=[FieldViolation(field_name, f"unknown store {store_id}", "UNKNOWN_STORE")],
    )


def timestamp(at: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(at * 1e9))
    return stamp
