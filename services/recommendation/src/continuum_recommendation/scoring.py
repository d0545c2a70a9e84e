"""Ranking: plain functions over the live model (no I/O), deterministic for the same input.

Personalised score of an item for a customer with purchases (weights in ``Params``):

    frequency * (orders with the item / orders)
  + recency   * (sum over those orders of decay ** orders_ago) / (sum of decay ** k)
  + reorder   * the item's re-order rate over all customers (smoothed)
  + due       * closeness of "days since last bought" to the customer's own cycle for it
  + cooccurrence * co-occurrence with the items of the recent baskets, cart and views
  + traits    * matching size, colour, brand, category
  + popularity * popularity in the store, else the channel, else overall (normalised)

Items never bought only get the co-occurrence, trait and popularity parts. Ties break on the
SKU, so that every channel and replica ranks alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum.recommendation.v1 import recommendation_resources_pb2 as res
from continuum_recommendation.domain import CO_REASON, DAY_S, VIEW, Array
from continuum_recommendation.live import History, LiveModel

COMPLEMENTS_KEPT = 60
POPULAR_KEPT = 60


@dataclass
class Candidate:
    item: int
    score: float
    reason: int
    related: int = -1
    value: str = ""
    support: list[tuple[int, int, str]] = field(default_factory=list)  # (kind, item, value)


def _add(
    out: dict[int, Candidate], item: int, score: float, reason: int, related: int, value: str
) -> None:
    found = out.get(item)
    if found is None:
        out[item] = Candidate(item, score, reason, related, value)
        return
    if score > _strength(found):
        found.support.insert(0, (found.reason, found.related, found.value))
        found.reason, found.related, found.value = reason, related, value
    else:
        found.support.append((reason, related, value))
    found.score += score


def _strength(candidate: Candidate) -> float:
    return candidate.score if not candidate.support else candidate.score / 2


def complements(
    model: LiveModel,
    seeds: dict[int, float],
    out: dict[int, Candidate],
    weight: float,
    keep: int = COMPLEMENTS_KEPT,
) -> None:
    """Add co-occurrence with weighted seed items, normalised to at most ``weight``; only
    the ``keep`` strongest are added (ties on the lower item), each with the seed that
    gives it the most (the first such seed on a tie)."""
    if not seeds:
        return
    items, values, kinds, sources = _seed_neighbours(model, seeds)
    if not len(items):
        return
    # group the entries by item (a stable sort keeps each item's entries in seed order)
    order = np.argsort(items, kind="stable")
    ordered = items[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    unique = ordered[starts]
    group = np.empty(len(items), dtype=np.int64)
    group[order] = np.cumsum(np.concatenate(([0], ordered[1:] != ordered[:-1])))
    # summed in seed order, as a running sum per item would
    scores = np.bincount(group, weights=values, minlength=len(unique))
    # per item, the entry giving the most: by item, then value down, then seed order
    best = np.lexsort((np.arange(len(items)), -values, group))[starts]
    strongest = np.lexsort((unique, -scores))[:keep]
    chosen = best[strongest]
    top_values = scores[strongest].tolist()
    top = top_values[0] or 1.0
    for j, value, kind, seed in zip(
        unique[strongest].tolist(),
        top_values,
        kinds[chosen].tolist(),
        sources[chosen].tolist(),
        strict=True,
    ):
        reason = CO_REASON.get(kind, res.REASON_KIND_BOUGHT_WITH)
        _add(out, j, weight * value / top, reason, seed, "")


def _seed_neighbours(
    model: LiveModel, seeds: dict[int, float]
) -> tuple[Array, Array, Array, Array]:
    """The seeds' neighbours as flat arrays (item, weighted score, kind, seed), seed by
    seed in order; straight from the version's arrays when nothing was learned since."""
    size = len(model.row_of)
    rows = [int(model.row_of[i]) if i < size else -1 for i in seeds]
    if any(i in model.co_delta for i in seeds) or min(rows) < 0:
        lists = [(seed, w, model.neighbour_arrays(seed)) for seed, w in seeds.items()]
        return (
            np.concatenate([n[0] for _, _, n in lists]),
            np.concatenate([n[1] * w for _, w, n in lists]),
            np.concatenate([n[2] for _, _, n in lists]),
            np.repeat([seed for seed, _, _ in lists], [len(n[0]) for _, _, n in lists]),
        )
    block = model.nbr_idx[rows]
    present = block >= 0
    weights = np.fromiter(seeds.values(), dtype=np.float64, count=len(seeds))
    scores = model.nbr_score[rows].astype(np.float64) * weights[:, None]
    sources = np.broadcast_to(
        np.fromiter(seeds, dtype=np.int64, count=len(seeds))[:, None], block.shape
    )
    return (
        block[present],
        scores[present],
        model.nbr_kind[rows][present].astype(np.int64),
        sources[present],
    )


def repeat_purchase(
    model: LiveModel, history: History, now: float, out: dict[int, Candidate]
) -> None:
    p = model.params
    baskets = history.baskets
    n = len(baskets)
    if not n:
        return
    counts: dict[int, int] = {}
    decayed: dict[int, float] = {}
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for k, basket in enumerate(baskets):
        w = p.order_decay ** (n - 1 - k)
        for i in basket.items:
            counts[i] = counts.get(i, 0) + 1
            decayed[i] = decayed.get(i, 0.0) + w
            first.setdefault(i, basket.at)
            last[i] = basket.at
    norm = sum(p.order_decay**a for a in range(n))
    for i, c in counts.items():
        score = p.w_frequency * c / n + p.w_recency * decayed[i] / norm
        score += p.w_reorder * model.reorder_rate(i)
        value = ""
        if c >= 2:
            gap = (last[i] - first[i]) / (c - 1)
            if gap > 0:
                x = max((now - last[i]) / gap, 0.05)
                due = math.exp(-(math.log(x) ** 2) / 2) * min(1.0, (c - 1) / 3)
                score += p.w_due * due
                value = str(max(1, round(gap / DAY_S)))
        _add(out, i, score, res.REASON_KIND_REPEAT_PURCHASE, -1, value)


def session_seeds(history: History, params_recent: int) -> dict[int, float]:
    """Items steering co-occurrence: the recent baskets, the cart, recent views."""
    seeds: dict[int, float] = {}
    for basket in history.baskets[-params_recent:]:
        for i in basket.items:
            seeds[i] = max(seeds.get(i, 0.0), 1.0)
    for i in history.in_cart:
        seeds[i] = max(seeds.get(i, 0.0), 1.0)
    for _, i, kind in history.recent[-10:]:
        seeds[i] = max(seeds.get(i, 0.0), 0.5 if kind == VIEW else 0.8)
    return seeds


def intent(history: History, out: dict[int, Candidate]) -> None:
    """Items left in the cart, wishlisted or viewed again lately."""
    for i in history.in_cart:
        if i not in history.bought:
            _add(out, i, 0.5, res.REASON_KIND_IN_YOUR_CART, -1, "")
    for i in history.wishlist:
        _add(out, i, 0.3, res.REASON_KIND_ON_YOUR_WISHLIST, -1, "")
    views: dict[int, int] = {}
    for _, i, kind in history.recent:
        if kind == VIEW:
            views[i] = views.get(i, 0) + 1
    for i, count in views.items():
        if count >= 2 and i not in history.bought:
            _add(out, i, 0.1 * min(count, 5), res.REASON_KIND_RECENTLY_VIEWED, -1, "")


def popularity(
    model: LiveModel,
    store_id: str,
    channel: int,
    out: dict[int, Candidate],
    scale: float,
    keep: int = POPULAR_KEPT,
) -> None:
    """Blend in popularity in the store, else the channel, else overall, at most ``scale``
    (fewer items when the shopper's own candidates are many)."""
    if store_id and model.popular(f"store:{store_id}"):
        ranked, reason, value = (
            model.popular(f"store:{store_id}"),
            res.REASON_KIND_POPULAR_IN_STORE,
            store_id,
        )
    elif channel and model.popular(f"channel:{channel}"):
        ranked, reason, value = model.popular(f"channel:{channel}"), res.REASON_KIND_POPULAR, ""
    else:
        ranked, reason, value = model.popular(), res.REASON_KIND_POPULAR, ""
    if not ranked:
        return
    top = ranked[0][1] or 1.0
    for i, s in ranked[: max(keep // 3, keep - len(out))]:
        found = out.get(i)
        if found is None:
            out[i] = Candidate(i, scale * s / top, reason, -1, value)
        else:
            found.score += scale * s / top


def traits_boost(
    model: LiveModel, traits: prof.Traits | None, out: dict[int, Candidate], weight: float
) -> None:
    """Raise items in the customer's size, colours, brands and categories (and say so)."""
    if traits is None:
        return
    sizes = {s.category: s.size.value for s in traits.sizes if s.size.value}
    colours = {c.value.lower(): c.score for c in traits.colours}
    brands = {b.value.lower(): b.score for b in traits.brands}
    categories = {c.value: c.score for c in traits.categories}
    for candidate in out.values():
        info = model.catalogue.get(model.skus[candidate.item])
        if info is None:
            continue
        bonus = 0.0
        if info.size and sizes.get(info.category) == info.size:
            bonus += weight
            candidate.support.insert(0, (res.REASON_KIND_IN_YOUR_SIZE, -1, info.size))
        style = ""
        if info.colour and info.colour.lower() in colours:
            bonus += weight * colours[info.colour.lower()]
            style = info.colour
        if info.brand and info.brand.lower() in brands:
            bonus += weight * brands[info.brand.lower()]
            style = style or info.brand
        for category, score in categories.items():
            if info.category.startswith(category):
                bonus += weight * score
                style = style or category
                break
        if style:
            candidate.support.append((res.REASON_KIND_MATCHES_YOUR_STYLE, -1, style))
        candidate.score += bonus


def personal(model: LiveModel, history: History, now: float) -> dict[int, Candidate]:
    """The customer's own candidates: repeat purchases, intent, and what goes with the
    recent baskets, cart and views."""
    out: dict[int, Candidate] = {}
    repeat_purchase(model, history, now, out)
    intent(history, out)
    seeds = session_seeds(history, model.params.recent_baskets)
    complements(model, seeds, out, model.params.w_cooccurrence)
    return out


def similar(model: LiveModel, item: int) -> dict[int, Candidate]:
    """Alternatives: viewed together with it, same category, same brand, close in price."""
    out: dict[int, Candidate] = {}
    info = model.catalogue.get(model.skus[item])
    product = model.product_of(item)
    for j, s, kind in model.neighbours(item):
        if kind != VIEW:
            continue  # bought or carted together: a complement, not an alternative
        other = model.catalogue.get(model.skus[j])
        known = info is not None and other is not None and info.category and other.category
        if known and other is not None and info is not None and other.category != info.category:
            continue
        out[j] = Candidate(j, s, res.REASON_KIND_SIMILAR, item, "")
    if info is not None and info.category:
        peers = model.by_category.get(info.category, [])
        pop = model.popularity
        top = max((float(pop[j]) for j in peers), default=0.0) or 1.0
        for j in peers:
            other = model.catalogue.get(model.skus[j])
            bonus = 0.5 + 0.2 * float(pop[j]) / top
            if other is not None:
                if other.brand and other.brand == info.brand:
                    bonus += 0.1
                if info.price_minor and other.price_minor:
                    ratio = min(info.price_minor, other.price_minor) / max(
                        info.price_minor, other.price_minor
                    )
                    bonus += 0.2 * ratio
            found = out.get(j)
            if found is None:
                out[j] = Candidate(j, bonus, res.REASON_KIND_SIMILAR, item, "")
            else:
                found.score += bonus
    for j in list(out):
        if j == item or model.product_of(j) == product:
            del out[j]
    return out
