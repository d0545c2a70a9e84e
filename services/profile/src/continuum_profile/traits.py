"""Trait, intent and purchase derivation: pure, typed, no I/O.

A customer's derived data is a fold over their events. :class:`DeriveState` holds
accumulators (plain JSON-able dicts and lists, stored in the profile row); :func:`fold`
adds one event; the ``*_of`` functions turn a state into the contract's messages at a
given moment.

Recency decay. Every preference score is a sum of event weights, each halved every
``half_life`` since the event: ``score(t) = sum(w_i * 2 ** (-(t - t_i) / h))``. A score is
kept as ``[value, as_of]`` (the sum evaluated at ``as_of``, the newest evidence), so adding
evidence and reading at any time are O(1) and events may arrive in any order. Scores shown
are shares of the trait's total at the time of reading (in [0, 1]); intent scores are
``1 - 2 ** -value`` (one fresh view ~0.5, three ~0.9). Half-lives: traits (sizes, colours,
categories, brands, price) 45 days, intent signals 7 days, store affinity 60 days.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from continuum.common.v1 import channel_pb2, money_pb2
from continuum.profile.v1 import profile_resources_pb2 as res

DAY = 86_400.0
STATE_VERSION = 1


@dataclass(frozen=True)
class DecayConfig:
    traits_half_life_s: float = 45 * DAY
    intent_half_life_s: float = 7 * DAY
    store_half_life_s: float = 60 * DAY


DECAY = DecayConfig()

# Evidence weights per event kind.
W_VIEW = 1.0
W_CLICK = 1.0
W_CART = 3.0
W_WISHLIST = 2.0
W_CHECKOUT = 3.0
W_ORDER = 5.0
W_MENTION = 0.5
W_RETURN_SIZE = -5.0
W_VISIT = 1.0
W_STORE_ORDER = 3.0
W_PICKUP = 2.0

# Price tiers by the median unit price bought or looked at, in minor units.
TIER_LIMITS = (
    (2_500, res.PRICE_TIER_BUDGET),
    (10_000, res.PRICE_TIER_MID),
    (40_000, res.PRICE_TIER_PREMIUM),
)

MAX_TRAIT_VALUES = 30
MAX_VIEWS = 25
MAX_SEQUENCE = 12
MAX_PRICES = 24
MAX_LINES = 20
MAX_ORDER_IDS = 200
SIZE_RETURN_REASONS = ("too_small", "too_large", "size", "fit")

Score = list[float]  # [value, as_of]
Product = dict[str, Any]


def decay(value: float, from_s: float, to_s: float, half_life_s: float) -> float:
    """``value`` measured at ``from_s`` as seen at ``to_s``."""
    return value * math.pow(2.0, -(to_s - from_s) / half_life_s)


def add_score(score: Score, weight: float, at_s: float, half_life_s: float) -> None:
    """Add ``weight`` of evidence at ``at_s`` to ``score`` in place."""
    value, as_of = score[0], score[1]
    if at_s >= as_of:
        score[0] = max(decay(value, as_of, at_s, half_life_s) + weight, 0.0)
        score[1] = at_s
    else:
        score[0] = max(value + decay(weight, at_s, as_of, half_life_s), 0.0)


def score_at(score: Score, now_s: float, half_life_s: float) -> float:
    return decay(score[0], score[1], now_s, half_life_s) if now_s > score[1] else score[0]


def intent_strength(value: float) -> float:
    return 1.0 - math.pow(2.0, -value)


def product_of(ref: res.ProductRef) -> Product:
    """The compact form of a product kept in the state."""
    out: Product = {"s": ref.sku}
    for key, value in (
        ("i", ref.product_id),
        ("n", ref.name),
        ("c", ref.category),
        ("b", ref.brand),
        ("z", ref.size),
        ("o", ref.colour),
    ):
        if value:
            out[key] = value
    if ref.HasField("unit_price") and ref.unit_price.amount_minor > 0:
        out["p"] = ref.unit_price.amount_minor
        out["u"] = ref.unit_price.currency_code
    return out


def product_ref(p: Product) -> res.ProductRef:
    ref = res.ProductRef(
        sku=p["s"],
        product_id=p.get("i", ""),
        name=p.get("n", ""),
        category=p.get("c", ""),
        brand=p.get("b", ""),
        size=p.get("z", ""),
        colour=p.get("o", ""),
    )
    if "p" in p:
        ref.unit_price.CopyFrom(money_pb2.Money(currency_code=p.get("u", ""), amount_minor=p["p"]))
    return ref


def ts(seconds: float) -> Timestamp:
    whole = math.floor(seconds)
    return Timestamp(seconds=whole, nanos=int((seconds - whole) * 1e9))


def money(currency: str, minor: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, amount_minor=minor)


def _norm(value: str) -> str:
    return " ".join(value.split()).lower()


class DeriveState:
    """The accumulators of one customer (see the module docstring)."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        d = data if data is not None and data.get("v") == STATE_VERSION else {}
        self.sizes: dict[str, dict[str, list[float]]] = d.get("sizes", {})
        self.colours: dict[str, list[float]] = d.get("colours", {})
        self.categories: dict[str, list[float]] = d.get("categories", {})
        self.brands: dict[str, list[float]] = d.get("brands", {})
        self.prices: list[list[Any]] = d.get("prices", [])  # [minor, at, weight, currency]
        self.views: dict[str, dict[str, Any]] = d.get("views", {})
        self.sequence: dict[str, list[list[Any]]] = d.get("seq", {})  # category -> [key, at, sku]
        self.cart: dict[str, dict[str, Any]] = d.get("cart", {})
        self.wishlist: dict[str, dict[str, Any]] = d.get("wish", {})
        self.orders: dict[str, Any] = d.get("orders", {"n": 0, "ret": 0, "ltv": {}, "ch": {}})
        self.order_ids: list[str] = d.get("oids", [])
        self.lines: list[dict[str, Any]] = d.get("lines", [])
        self.activity: dict[str, list[float]] = d.get("act", {})  # channel -> [last, count]
        self.stores: dict[str, dict[str, Any]] = d.get("stores", {})

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "sizes": self.sizes,
            "colours": self.colours,
            "categories": self.categories,
            "brands": self.brands,
            "prices": self.prices,
            "views": self.views,
            "seq": self.sequence,
            "cart": self.cart,
            "wish": self.wishlist,
            "orders": self.orders,
            "oids": self.order_ids,
            "lines": self.lines,
            "act": self.activity,
            "stores": self.stores,
        }


# --- folding events ------------------------------------------------------------------------


def _trait(table: dict[str, list[float]], value: str, weight: float, at: float) -> None:
    """``add_score`` on a trait entry ``[value, as_of, count, last_seen]``, inlined: this
    runs several times per event."""
    if not value:
        return
    entry = table.get(value)
    h = DECAY.traits_half_life_s
    if entry is None:
        if weight <= 0:
            return
        table[value] = [weight, at, 1, at]
        if len(table) > MAX_TRAIT_VALUES:
            weakest = min(table, key=lambda k: score_at(table[k], at, h))
            del table[weakest]
        return
    old, as_of = entry[0], entry[1]
    if at >= as_of:
        entry[0] = max(old * 2.0 ** ((as_of - at) / h) + weight, 0.0)
        entry[1] = at
    else:
        entry[0] = max(old + weight * 2.0 ** ((at - as_of) / h), 0.0)
    if weight > 0:
        entry[2] += 1
        if at > entry[3]:
            entry[3] = at


def _product_traits(state: DeriveState, p: Product, weight: float, at: float) -> None:
    category = p.get("c", "")
    if p.get("z") and category:
        _trait(state.sizes.setdefault(category, {}), p["z"], weight, at)
    if p.get("o"):
        _trait(state.colours, _norm(p["o"]), weight, at)
    if category:
        _trait(state.categories, category, weight, at)
    if p.get("b"):
        _trait(state.brands, p["b"], weight, at)
    if "p" in p and weight > 0:
        state.prices.append([p["p"], at, weight, p.get("u", "")])
        if len(state.prices) > MAX_PRICES:
            state.prices.sort(key=lambda x: x[1])
            del state.prices[: len(state.prices) - MAX_PRICES]


def _view(state: DeriveState, p: Product, at: float, channel: int) -> None:
    entry = state.views.get(p["s"])
    if entry is None:
        entry = state.views[p["s"]] = {
            "p": p,
            "n": 0,
            "sc": [0.0, at],
            "f": at,
            "l": at,
            "c": channel,
        }
    entry["n"] += 1
    add_score(entry["sc"], 1.0, at, DECAY.intent_half_life_s)
    entry["f"] = min(entry["f"], at)
    if at >= entry["l"]:
        entry["l"], entry["c"], entry["p"] = at, channel, p
    if len(state.views) > MAX_VIEWS:
        weakest = min(
            state.views, key=lambda k: score_at(state.views[k]["sc"], at, DECAY.intent_half_life_s)
        )
        del state.views[weakest]
    category = p.get("c", "")
    if category:
        seq = state.sequence.setdefault(category, [])
        seq.append([p.get("i") or p["s"], at, p["s"]])
        seq.sort(key=lambda x: x[1])
        del seq[: max(0, len(seq) - MAX_SEQUENCE)]


def _hold(
    table: dict[str, dict[str, Any]], p: Product, qty: int, at: float, channel: int, container: str
) -> None:
    entry = table.get(p["s"])
    if entry is None:
        entry = table[p["s"]] = {"p": p, "q": 0, "f": at, "l": at, "c": channel, "id": container}
    entry["q"] += qty
    entry["f"] = min(entry["f"], at)
    if at >= entry["l"]:
        entry["l"], entry["c"], entry["p"] = at, channel, p
        entry["id"] = container or entry["id"]


def _release(table: dict[str, dict[str, Any]], sku: str, qty: int | None) -> None:
    entry = table.get(sku)
    if entry is None:
        return
    entry["q"] = 0 if qty is None else entry["q"] - qty
    if entry["q"] <= 0:
        del table[sku]


def _store(
    state: DeriveState, store_id: str, weight: float, at: float, visit: bool, order: bool
) -> None:
    if not store_id:
        return
    entry = state.stores.get(store_id)
    if entry is None:
        entry = state.stores[store_id] = {"sc": [0.0, at], "v": 0, "o": 0, "lv": 0.0}
    add_score(entry["sc"], weight, at, DECAY.store_half_life_s)
    if visit:
        entry["v"] += 1
        entry["lv"] = max(entry["lv"], at)
    if order:
        entry["o"] += 1


def _order(state: DeriveState, event: res.BehaviouralEvent, at: float) -> None:
    order = event.order_placed
    if order.order_id in state.order_ids:
        return  # the same order sent again under another event id
    state.order_ids.append(order.order_id)
    del state.order_ids[: max(0, len(state.order_ids) - MAX_ORDER_IDS)]
    totals = state.orders
    totals["n"] += 1
    currency = order.total.currency_code
    ltv: dict[str, int] = totals.setdefault("ltv", {})
    ltv[currency] = ltv.get(currency, 0) + order.total.amount_minor
    totals["first"] = min(totals.get("first", at), at)
    totals["last"] = max(totals.get("last", at), at)
    by_channel: dict[str, list[Any]] = totals.setdefault("ch", {})
    row = by_channel.setdefault(str(event.channel), [0, 0, currency])
    row[0] += 1
    row[1] += order.total.amount_minor
    for line in order.lines:
        p = product_of(line.product)
        _product_traits(state, p, W_ORDER, at)
        _release(state.cart, p["s"], None)
        _release(state.wishlist, p["s"], None)
        state.lines.append(
            {
                "o": order.order_id,
                "p": p,
                "q": line.quantity,
                "t": line.line_total.amount_minor,
                "u": line.line_total.currency_code or currency,
                "c": event.channel,
                "st": event.store_id or order.pickup_store_id,
                "at": at,
                "r": 0,
            }
        )
    if order.cart_id:
        for sku in [s for s, e in state.cart.items() if e.get("id") == order.cart_id]:
            del state.cart[sku]
    state.lines.sort(key=lambda x: x["at"], reverse=True)
    del state.lines[MAX_LINES:]
    _store(state, event.store_id, W_STORE_ORDER, at, visit=False, order=True)
    if order.pickup_store_id and order.pickup_store_id != event.store_id:
        _store(state, order.pickup_store_id, W_PICKUP, at, visit=False, order=False)


def _return(state: DeriveState, event: res.BehaviouralEvent, at: float) -> None:
    ret = event.order_returned
    state.orders["ret"] = state.orders.get("ret", 0) + 1
    ltv: dict[str, int] = state.orders.setdefault("ltv", {})
    if ret.HasField("refund_total"):
        currency = ret.refund_total.currency_code
        ltv[currency] = ltv.get(currency, 0) - ret.refund_total.amount_minor
    for line in ret.lines:
        p = product_of(line.product)
        sized = any(word in line.reason.lower() for word in SIZE_RETURN_REASONS)
        if sized and p.get("z") and p.get("c"):
            _trait(state.sizes.setdefault(p["c"], {}), p["z"], W_RETURN_SIZE, at)
        for bought in state.lines:
            if bought["o"] == ret.order_id and bought["p"]["s"] == p["s"]:
                bought["r"] = min(bought["q"], bought["r"] + line.quantity)


def _products_of(event: res.BehaviouralEvent) -> Iterable[res.ProductRef]:
    kind = event.WhichOneof("payload")
    if kind == "checkout_started":
        return [line.product for line in event.checkout_started.lines]
    if kind == "chat_message_sent":
        return list(event.chat_message_sent.products)
    if kind == "email_clicked" and event.email_clicked.HasField("product"):
        return [event.email_clicked.product]
    return []


def fold(state: DeriveState, event: res.BehaviouralEvent) -> None:
    """Add one event's evidence to ``state``."""
    at = event.occur_time.seconds + event.occur_time.nanos / 1e9
    channel = event.channel
    act = state.activity.setdefault(str(channel), [at, 0])
    act[0] = max(act[0], at)
    act[1] += 1
    kind = event.WhichOneof("payload")
    if kind == "product_viewed":
        p = product_of(event.product_viewed.product)
        _product_traits(state, p, W_VIEW, at)
        _view(state, p, at, channel)
    elif kind == "recommendation_clicked":
        p = product_of(event.recommendation_clicked.product)
        _product_traits(state, p, W_CLICK, at)
        _view(state, p, at, channel)
    elif kind == "cart_item_added":
        add = event.cart_item_added
        p = product_of(add.product)
        _product_traits(state, p, W_CART, at)
        _hold(state.cart, p, add.quantity or 1, at, channel, add.cart_id)
    elif kind == "cart_item_removed":
        removed = event.cart_item_removed
        _release(state.cart, removed.product.sku, removed.quantity or 1)
    elif kind == "wishlist_item_added":
        wish = event.wishlist_item_added
        p = product_of(wish.product)
        _product_traits(state, p, W_WISHLIST, at)
        _hold(state.wishlist, p, 1, at, channel, wish.wishlist_id)
        state.wishlist[p["s"]]["q"] = 1
    elif kind == "checkout_started":
        for ref in _products_of(event):
            _product_traits(state, product_of(ref), W_CHECKOUT, at)
    elif kind == "order_placed":
        _order(state, event, at)
    elif kind == "order_returned":
        _return(state, event, at)
    elif kind == "store_visited":
        _store(state, event.store_id, W_VISIT, at, visit=True, order=False)
    elif kind in ("chat_message_sent", "email_clicked"):
        for ref in _products_of(event):
            _product_traits(state, product_of(ref), W_MENTION, at)
    if event.store_id and kind not in ("store_visited", "order_placed"):
        _store(state, event.store_id, W_MENTION, at, visit=False, order=False)


# --- reading the state ---------------------------------------------------------------------


def _scored(table: dict[str, list[float]], now: float, limit: int) -> list[res.ScoredValue]:
    h = DECAY.traits_half_life_s
    values = [(k, score_at(v[:2], now, h), int(v[2]), v[3]) for k, v in table.items()]
    values = [v for v in values if v[1] > 1e-6]
    total = sum(v[1] for v in values)
    values.sort(key=lambda v: (-v[1], v[0]))
    return [
        res.ScoredValue(
            value=k, score=round(s / total, 4), evidence_count=n, last_seen_time=ts(last)
        )
        for k, s, n, last in values[:limit]
    ]


def sizes_of(state: DeriveState, now: float, limit: int = 20) -> list[res.SizePreference]:
    out = []
    for category, table in state.sizes.items():
        scored = _scored(table, now, 5)
        if scored:
            out.append(
                res.SizePreference(category=category, size=scored[0], alternatives=scored[1:])
            )
    out.sort(key=lambda s: (-s.size.evidence_count, -s.size.score, s.category))
    return out[:limit]


def _weighted_percentile(points: list[tuple[float, float]], q: float) -> float:
    points = sorted(points)
    total = sum(w for _, w in points)
    running = 0.0
    for value, weight in points:
        running += weight
        if running >= q * total:
            return value
    return points[-1][0]


def price_band_of(state: DeriveState, now: float) -> res.PriceBand | None:
    if not state.prices:
        return None
    currencies: dict[str, float] = {}
    for _, _, weight, currency in state.prices:
        currencies[currency] = currencies.get(currency, 0.0) + weight
    currency = max(currencies, key=lambda c: currencies[c])
    h = DECAY.traits_half_life_s
    points = [
        (float(minor), decay(weight, at, now, h) if now > at else weight)
        for minor, at, weight, cur in state.prices
        if cur == currency
    ]
    median = _weighted_percentile(points, 0.5)
    tier = res.PRICE_TIER_LUXURY
    for limit, name in TIER_LIMITS:
        if median < limit:
            tier = name
            break
    evidence = sum(w for _, w in points)
    return res.PriceBand(
        tier=tier,
        low=money(currency, int(_weighted_percentile(points, 0.2))),
        high=money(currency, int(_weighted_percentile(points, 0.8))),
        score=round(min(1.0, evidence / 10.0), 4),
    )


def traits_of(state: DeriveState, now: float) -> res.Traits:
    traits = res.Traits(
        sizes=sizes_of(state, now),
        colours=_scored(state.colours, now, 10),
        categories=_scored(state.categories, now, 10),
        brands=_scored(state.brands, now, 10),
        update_time=ts(now),
    )
    band = price_band_of(state, now)
    if band is not None:
        traits.price_band.CopyFrom(band)
    return traits


def _signal(entry: dict[str, Any], count: int, score: float) -> res.ProductSignal:
    return res.ProductSignal(
        product=product_ref(entry["p"]),
        count=count,
        score=round(score, 4),
        first_time=ts(entry["f"]),
        last_time=ts(entry["l"]),
        container_id=entry.get("id", ""),
        channel=entry.get("c", 0),
    )


def viewed_repeatedly_of(
    state: DeriveState, now: float, limit: int = 10
) -> list[res.ProductSignal]:
    h = DECAY.intent_half_life_s
    found = []
    for entry in state.views.values():
        if entry["n"] < 2:
            continue
        value = score_at(entry["sc"], now, h)
        if value >= 1.0:  # still at least one fresh view's worth of evidence
            found.append((value, entry))
    found.sort(key=lambda x: (-x[0], x[1]["p"]["s"]))
    return [_signal(e, e["n"], intent_strength(v)) for v, e in found[:limit]]


def compared_of(state: DeriveState, now: float, limit: int = 5) -> list[res.ComparisonSignal]:
    """Products alternated within a category: at least two products, each viewed at least
    twice, with at least two switches back and forth among the category's recent views."""
    h = DECAY.intent_half_life_s
    out = []
    for category, seq in state.sequence.items():
        recent = [row for row in seq if now - row[1] <= 3 * h]
        counts: dict[str, int] = {}
        sku_of: dict[str, str] = {}
        for key, _, sku in recent:
            counts[key] = counts.get(key, 0) + 1
            sku_of[key] = sku
        repeated = [k for k, n in counts.items() if n >= 2]
        if len(repeated) < 2:
            continue
        chain = [row[0] for row in recent if row[0] in repeated]
        switches = sum(1 for a, b in itertools.pairwise(chain) if a != b)
        if switches < 2:
            continue
        last = max(row[1] for row in recent)
        score = min(1.0, switches / 4.0) * math.pow(2.0, -max(0.0, now - last) / h)
        products = []
        for key in sorted(repeated, key=lambda k: -counts[k])[:4]:
            view = state.views.get(sku_of[key])
            products.append(product_ref(view["p"]) if view else res.ProductRef(sku=sku_of[key]))
        out.append(
            res.ComparisonSignal(
                category=category, products=products, score=round(score, 4), last_time=ts(last)
            )
        )
    out.sort(key=lambda c: -c.score)
    return out[:limit]


def _held(table: dict[str, dict[str, Any]], now: float, limit: int) -> list[res.ProductSignal]:
    h = DECAY.intent_half_life_s
    entries = sorted(table.values(), key=lambda e: (-e["l"], e["p"]["s"]))
    return [
        _signal(e, int(e["q"]), math.pow(2.0, -max(0.0, now - e["l"]) / h)) for e in entries[:limit]
    ]


def intent_of(state: DeriveState, now: float) -> res.IntentSignals:
    return res.IntentSignals(
        viewed_repeatedly=viewed_repeatedly_of(state, now),
        compared=compared_of(state, now),
        left_in_cart=_held(state.cart, now, 20),
        wishlisted=_held(state.wishlist, now, 20),
        update_time=ts(now),
    )


def _ltv(state: DeriveState) -> tuple[str, int]:
    ltv: dict[str, int] = state.orders.get("ltv", {})
    if not ltv:
        return "", 0
    currency = max(ltv, key=lambda c: abs(ltv[c]))
    return currency, ltv[currency]


def purchased_line(line: dict[str, Any]) -> res.PurchasedLine:
    return res.PurchasedLine(
        order_id=line["o"],
        product=product_ref(line["p"]),
        quantity=line["q"],
        line_total=money(line["u"], line["t"]),
        channel=line["c"],
        store_id=line["st"],
        order_time=ts(line["at"]),
        returned_quantity=line["r"],
    )


def purchases_of(state: DeriveState, now: float) -> res.PurchaseSummary:
    orders = state.orders
    currency, value = _ltv(state)
    summary = res.PurchaseSummary(
        order_count=orders.get("n", 0),
        return_count=orders.get("ret", 0),
        recent_lines=[purchased_line(line) for line in state.lines],
    )
    if currency:
        summary.lifetime_value.CopyFrom(money(currency, value))
    if summary.order_count:
        first, last = orders["first"], orders["last"]
        summary.first_order_time.CopyFrom(ts(first))
        summary.last_order_time.CopyFrom(ts(last))
        years = max(now - first, 30 * DAY) / (365 * DAY)
        summary.orders_per_year = round(summary.order_count / years, 3)
    for channel, (n, total, cur) in sorted(orders.get("ch", {}).items()):
        summary.by_channel.append(
            res.ChannelPurchases(
                channel=int(channel),  # type: ignore[arg-type]
                order_count=n,
                total=money(cur, total),
            )
        )
    return summary


def activity_of(state: DeriveState) -> list[res.ChannelActivity]:
    rows = sorted(state.activity.items(), key=lambda kv: -kv[1][0])
    return [
        res.ChannelActivity(
            channel=int(ch),  # type: ignore[arg-type]
            last_seen_time=ts(last),
            event_count=int(n),
        )
        for ch, (last, n) in rows
    ]


def stores_of(state: DeriveState, now: float, limit: int = 10) -> list[res.StoreAffinity]:
    h = DECAY.store_half_life_s
    scored = [(sid, score_at(e["sc"], now, h), e) for sid, e in state.stores.items()]
    total = sum(s for _, s, _ in scored) or 1.0
    scored.sort(key=lambda x: (-x[1], x[0]))
    out = []
    for sid, s, e in scored[:limit]:
        aff = res.StoreAffinity(
            store_id=sid, score=round(s / total, 4), visit_count=e["v"], order_count=e["o"]
        )
        if e["lv"]:
            aff.last_visit_time.CopyFrom(ts(e["lv"]))
        out.append(aff)
    return out


def _top(table: dict[str, list[float]], now: float, limit: int) -> list[str]:
    h = DECAY.traits_half_life_s
    ranked = sorted(
        ((score_at(v, now, h), k) for k, v in table.items()), key=lambda x: (-x[0], x[1])
    )
    return [k for score, k in ranked[:limit] if score > 1e-6]


def _tier(state: DeriveState, now: float) -> int:
    if not state.prices:
        return res.PRICE_TIER_UNSPECIFIED
    h = DECAY.traits_half_life_s
    currency = state.prices[-1][3]
    median = _weighted_percentile(
        [(float(p[0]), decay(p[2], p[1], now, h)) for p in state.prices if p[3] == currency], 0.5
    )
    for limit, tier in TIER_LIMITS:
        if median < limit:
            return tier
    return res.PRICE_TIER_LUXURY


def summary_of(state: DeriveState, now: float) -> res.ProfileSummary:
    """The derived part of the associate summary (name, tier, consent and highlights are
    added when it is read). Computes only the short lists it shows."""
    sizes = []
    for size in sizes_of(state, now, 3):
        del size.alternatives[2:]
        sizes.append(size)
    summary = res.ProfileSummary(
        sizes=sizes,
        colours=_top(state.colours, now, 3),
        categories=_top(state.categories, now, 3),
        brands=_top(state.brands, now, 3),
        price_tier=_tier(state, now),  # type: ignore[arg-type]
        left_in_cart=_held(state.cart, now, 5),
        wishlisted=_held(state.wishlist, now, 5),
        viewed_repeatedly=viewed_repeatedly_of(state, now, 5),
        recent_purchases=[purchased_line(line) for line in state.lines[:3]],
        order_count=state.orders.get("n", 0),
        compute_time=ts(now),
    )
    currency, value = _ltv(state)
    if currency:
        summary.lifetime_value.CopyFrom(money(currency, value))
    if summary.order_count:
        summary.last_order_time.CopyFrom(ts(state.orders["last"]))
    if state.activity:
        channel, (last, count) = max(state.activity.items(), key=lambda kv: kv[1][0])
        summary.last_seen.CopyFrom(
            res.ChannelActivity(
                channel=int(channel),  # type: ignore[arg-type]
                last_seen_time=ts(last),
                event_count=int(count),
            )
        )
    if state.stores:
        h = DECAY.store_half_life_s
        summary.preferred_store_id = max(
            state.stores, key=lambda sid: (score_at(state.stores[sid]["sc"], now, h), sid)
        )
    return summary


# --- words for the associate ---------------------------------------------------------------


def ago(seconds: float) -> str:
    if seconds < 3600:
        return "just now" if seconds < 120 else f"{int(seconds // 60)} minutes ago"
    if seconds < DAY:
        hours = int(seconds // 3600)
        return "1 hour ago" if hours == 1 else f"{hours} hours ago"
    days = int(seconds // DAY)
    return "yesterday" if days == 1 else f"{days} days ago"


def _describe(ref: res.ProductRef) -> str:
    name = ref.name or ref.sku
    detail = ", ".join(v for v in (ref.size, ref.colour) if v)
    return f"the {name} ({detail})" if detail else f"the {name}"


_CHANNEL_WORDS = {
    channel_pb2.CHANNEL_WEB: "online",
    channel_pb2.CHANNEL_APP: "in the app",
    channel_pb2.CHANNEL_STORE: "in store",
}


def _seconds(t: Timestamp) -> float:
    return t.seconds + t.nanos / 1e9


def highlights(summary: res.ProfileSummary, now: float, store_id: str = "") -> list[str]:
    """Two or three sentences, most useful first."""
    out: list[str] = []
    if summary.left_in_cart:
        item = summary.left_in_cart[0]
        where = _CHANNEL_WORDS.get(item.channel, "")
        cart = f"in the {where} cart" if where and where != "in store" else "in the cart"
        cart = cart.replace("in the in the app cart", "in the app cart")
        more = len(summary.left_in_cart) - 1
        tail = f" (and {more} more)" if more else ""
        out.append(
            f"Left {_describe(item.product)} {cart} {ago(now - _seconds(item.last_time))}{tail}."
        )
    if summary.viewed_repeatedly:
        item = summary.viewed_repeatedly[0]
        out.append(f"Viewed {_describe(item.product)} {item.count} times recently.")
    if summary.sizes and len(out) < 3:
        size = summary.sizes[0]
        colour = f"; likes {', '.join(summary.colours[:2])}" if summary.colours else ""
        out.append(f"Usually {size.size.value} in {size.category}{colour}.")
    if summary.recent_purchases and len(out) < 3:
        line = summary.recent_purchases[0]
        here = " here" if store_id and line.store_id == store_id else ""
        out.append(
            f"Bought {_describe(line.product)}{here} {ago(now - _seconds(line.order_time))}."
        )
    if summary.wishlisted and len(out) < 3:
        out.append(f"Wishlisted {_describe(summary.wishlisted[0].product)}.")
    return out[:3]


def display_name(contact: res.ContactDetails) -> str:
    """ "Sam K." from the preferred or given name and the family name's initial."""
    first = contact.preferred_name or contact.given_name
    if not first:
        return ""
    initial = f" {contact.family_name[0].upper()}." if contact.family_name else ""
    return f"{first}{initial}"


def now_s() -> float:
    return datetime.now(UTC).timestamp()
