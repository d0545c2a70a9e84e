"""The model as serving reads it, per replica: the active version's artifacts, every
subject's behaviour, and increments learned since the version was built.

Each replica follows the ``interactions`` table (written by the event handlers) and applies
new rows in order: a purchase joins its order's basket and adds co-occurrence pairs, a view
or cart add joins the subject's session, counts and popularity grow. Every change bumps the
subject's ``generation`` so that cached answers for it are dropped. Scoring is pure Python
over these structures (no I/O), see :mod:`continuum_recommendation.scoring`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum_recommendation.domain import (
    CART,
    CART_REMOVE,
    DAY_S,
    POPULARITY_WEIGHT,
    PURCHASE,
    VIEW,
    WISHLIST,
    Array,
    Interaction,
    Params,
)
from continuum_recommendation.model import Artifacts

RECENT_EVENTS = 50
# A neighbour list: items, scores, kinds (parallel arrays)
Neighbours = tuple[Array, Array, Array]
SESSIONS_KEPT = 4


@dataclass
class ItemInfo:
    sku: str
    product_id: str = ""
    name: str = ""
    category: str = ""
    brand: str = ""
    size: str = ""
    colour: str = ""
    price_minor: int = 0
    currency: str = ""
    image_url: str = ""


@dataclass
class Basket:
    at: float
    key: str
    items: list[int] = field(default_factory=list)


@dataclass
class History:
    """What one subject did, as scoring needs it."""

    baskets: list[Basket] = field(default_factory=list)
    by_key: dict[str, Basket] = field(default_factory=dict)
    bought: set[int] = field(default_factory=set)
    recent: list[tuple[float, int, int]] = field(default_factory=list)  # (at, item, kind)
    in_cart: dict[int, float] = field(default_factory=dict)
    wishlist: dict[int, float] = field(default_factory=dict)
    sessions: dict[str, list[int]] = field(default_factory=dict)
    generation: int = 0
    last_at: float = 0.0


class LiveModel:
    """Serving state of one replica."""

    def __init__(self, params: Params | None = None) -> None:
        self.params = params or Params()
        self.index: dict[str, int] = {}
        self.skus: list[str] = []
        self.catalogue: dict[str, ItemInfo] = {}
        self.traits: dict[str, prof.Traits] = {}
        self.histories: dict[str, History] = {}
        self.version_id = ""
        self.version_generation = 0
        self.built_at = 0.0
        self.incremental_updates = 0
        self.last_event_at = 0.0
        self._size = 0
        self.popularity: Array = np.zeros(0)
        self.bought: Array = np.zeros(0, dtype=np.int64)
        self.repeated: Array = np.zeros(0, dtype=np.int64)
        self.row_of: Array = np.zeros(0, dtype=np.int64)
        self.nbr_idx: Array = np.zeros((0, 0), dtype=np.int64)
        self.nbr_score: Array = np.zeros((0, 0), dtype=np.float32)
        self.nbr_kind: Array = np.zeros((0, 0), dtype=np.int8)
        self.co_delta: dict[int, dict[int, list[float]]] = defaultdict(dict)
        self._neighbours: dict[int, Neighbours] = {}
        self.contexts: dict[str, list[tuple[int, float]]] = {}
        self.popular_global: list[tuple[int, float]] = []
        self._popular_dirty = True
        self.by_product: dict[str, list[int]] = defaultdict(list)
        self.by_category: dict[str, list[int]] = defaultdict(list)

    # --- items -------------------------------------------------------------------------

    def item(self, sku: str) -> int:
        """The global index of a SKU, adding it if new."""
        found = self.index.get(sku)
        if found is not None:
            return found
        i = len(self.skus)
        self.index[sku] = i
        self.skus.append(sku)
        if i >= self._size:
            self._grow(max(1024, 2 * self._size))
        return i

    def _grow(self, size: int) -> None:
        def grown(array: Array, fill: float) -> Array:
            out = np.full(size, fill, dtype=array.dtype)
            out[: len(array)] = array
            return out

        self.popularity = grown(self.popularity, 0.0)
        self.bought = grown(self.bought, 0)
        self.repeated = grown(self.repeated, 0)
        self.row_of = grown(self.row_of, -1)
        self._size = size

    def put_item(self, info: ItemInfo) -> None:
        old = self.catalogue.get(info.sku)
        i = self.item(info.sku)
        if old is not None:
            if old.product_id and i in self.by_product.get(old.product_id, []):
                self.by_product[old.product_id].remove(i)
            if old.category and i in self.by_category.get(old.category, []):
                self.by_category[old.category].remove(i)
        self.catalogue[info.sku] = info
        if info.product_id:
            self.by_product[info.product_id].append(i)
        if info.category:
            self.by_category[info.category].append(i)

    def info(self, i: int) -> ItemInfo:
        sku = self.skus[i]
        return self.catalogue.get(sku) or ItemInfo(sku=sku)

    def product_of(self, i: int) -> str:
        info = self.catalogue.get(self.skus[i])
        return info.product_id if info is not None and info.product_id else self.skus[i]

    def name_of(self, i: int) -> str:
        info = self.catalogue.get(self.skus[i])
        return info.name if info is not None and info.name else self.skus[i]

    # --- versions ----------------------------------------------------------------------

    def load(self, version_id: str, artifacts: Artifacts, params: Params) -> None:
        """Serve from a version's artifacts (increments since it was built are dropped: the
        version's own counts already include the behaviour stored before it was built)."""
        mapping = np.array([self.item(s) for s in artifacts.skus], dtype=np.int64)
        self.params = params
        self.popularity[:] = 0.0
        self.bought[:] = 0
        self.repeated[:] = 0
        self.row_of[:] = -1
        n = len(mapping)
        if n:
            self.popularity[mapping] = artifacts.popularity
            self.bought[mapping] = artifacts.bought
            self.repeated[mapping] = artifacts.repeated
            self.row_of[mapping] = np.arange(n)
        raw = artifacts.nbr_idx.astype(np.int64)
        self.nbr_idx = np.where(raw >= 0, mapping[np.clip(raw, 0, max(0, n - 1))], -1)
        self.nbr_score = artifacts.nbr_score
        self.nbr_kind = artifacts.nbr_kind
        self.co_delta = defaultdict(dict)
        self._neighbours = {}
        self.contexts = {}
        for c, key in enumerate(artifacts.context_keys):
            top = artifacts.context_top[c]
            self.contexts[key] = [
                (int(mapping[t]), float(s))
                for t, s in zip(top, artifacts.context_score[c], strict=True)
                if t >= 0
            ]
        self.version_id = version_id
        self.version_generation += 1
        self.built_at = artifacts.built_at
        self.incremental_updates = 0
        self._popular_dirty = True

    # --- behaviour ---------------------------------------------------------------------

    def apply(self, row: Interaction, *, learn: bool) -> None:
        """Apply one stored interaction. ``learn``: also update the counts and pairs (only
        for behaviour newer than the version's build, which the version already counts)."""
        i = self.item(row.sku)
        history = self.histories.get(row.subject)
        if history is None:
            history = self.histories[row.subject] = History()
        history.generation += 1
        history.last_at = max(history.last_at, row.at)
        self.last_event_at = max(self.last_event_at, row.at)
        if learn:
            self.incremental_updates += 1
            weight = POPULARITY_WEIGHT.get(row.kind, 0.0)
            if weight:
                self.popularity[i] += weight
                self._popular_dirty = True
        if row.kind == PURCHASE:
            key = row.basket or f"day:{int(row.at // DAY_S)}"
            basket = history.by_key.get(key)
            if basket is None:
                basket = history.by_key[key] = Basket(row.at, key)
                history.baskets.append(basket)
                if len(history.baskets) > 1 and history.baskets[-2].at > row.at:
                    history.baskets.sort(key=lambda b: (b.at, b.key))
            if i not in basket.items:
                if learn:
                    for j in basket.items:
                        self._pair(i, j, PURCHASE, 1.0)
                    self.bought[i] += 1
                    if i in history.bought:
                        self.repeated[i] += 1
                basket.items.append(i)
            history.bought.add(i)
            history.in_cart.pop(i, None)
            history.wishlist.pop(i, None)
        elif row.kind == CART_REMOVE:
            history.in_cart.pop(i, None)
        elif row.kind in (CART, VIEW, WISHLIST):
            if row.kind == CART:
                history.in_cart[i] = row.at
            elif row.kind == WISHLIST:
                history.wishlist[i] = row.at
            history.recent.append((row.at, i, row.kind))
            if len(history.recent) > RECENT_EVENTS:
                del history.recent[: len(history.recent) - RECENT_EVENTS]
            if row.kind in (CART, VIEW):
                key = row.basket or f"day:{int(row.at // DAY_S)}"
                session = history.sessions.get(key)
                if session is None:
                    session = history.sessions[key] = []
                    if len(history.sessions) > SESSIONS_KEPT:
                        del history.sessions[next(iter(history.sessions))]
                if i not in session:
                    if learn:
                        weight = (
                            self.params.w_cart_basket
                            if row.kind == CART
                            else self.params.w_view_basket
                        )
                        for j in session:
                            self._pair(i, j, row.kind, weight)
                    session.append(i)

    def _pair(self, i: int, j: int, kind: int, weight: float) -> None:
        if i == j:
            return
        norm = math.sqrt((float(self.bought[i]) + 1.0) * (float(self.bought[j]) + 1.0)) + 1.0
        value = weight / norm
        self._neighbours.pop(i, None)
        self._neighbours.pop(j, None)
        for a, b in ((i, j), (j, i)):
            entry = self.co_delta[a].get(b)
            if entry is None:
                self.co_delta[a][b] = [value, float(kind)]
            else:
                entry[0] += value

    # --- reads for scoring -------------------------------------------------------------

    def neighbours(self, i: int) -> list[tuple[int, float, int]]:
        """Co-occurring items of ``i``: (item, score, kind), strongest first."""
        items, scores, kinds = self.neighbour_arrays(i)
        return list(zip(items.tolist(), scores.tolist(), kinds.tolist(), strict=True))

    def neighbour_arrays(self, i: int) -> Neighbours:
        """Co-occurring items of ``i`` as arrays (items, scores, kinds), strongest first,
        ties on the lower item (memoised until a new pair with ``i`` is learned or another
        version is loaded)."""
        memo = self._neighbours.get(i)
        if memo is not None:
            return memo
        out: dict[int, list[float]] = {}
        row = int(self.row_of[i]) if i < len(self.row_of) else -1
        if row >= 0 and row < len(self.nbr_idx):
            for j, s, k in zip(
                self.nbr_idx[row].tolist(),
                self.nbr_score[row].tolist(),
                self.nbr_kind[row].tolist(),
                strict=True,
            ):
                if j < 0:
                    break
                out[j] = [s, float(k)]
        for j, (s, k) in self.co_delta.get(i, {}).items():
            entry = out.get(j)
            if entry is None:
                out[j] = [s, k]
            else:
                entry[0] += s
        ranked = sorted(out.items(), key=lambda kv: (-kv[1][0], kv[0]))
        ranked = ranked[: max(self.params.neighbours, 1) * 2]
        found = (
            np.array([j for j, _ in ranked], dtype=np.int64),
            np.array([v[0] for _, v in ranked], dtype=np.float64),
            np.array([int(v[1]) for _, v in ranked], dtype=np.int64),
        )
        if len(self._neighbours) > 200_000:
            self._neighbours.clear()
        self._neighbours[i] = found
        return found

    def reorder_rate(self, i: int) -> float:
        return (float(self.repeated[i]) + 1.0) / (float(self.bought[i]) + 2.0)

    def popular(self, context: str = "") -> list[tuple[int, float]]:
        """Most popular items in a context ("store:<id>", "channel:<n>") or overall."""
        if context:
            return self.contexts.get(context, [])
        if self._popular_dirty:
            n = len(self.skus)
            values = self.popularity[:n]
            top = np.argsort(-values, kind="stable")[:200]
            self.popular_global = [(int(t), float(values[t])) for t in top if values[t] > 0]
            self._popular_dirty = False
        return self.popular_global
