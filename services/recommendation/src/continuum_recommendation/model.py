"""The model a version holds, and how a full rebuild computes it from stored behaviour.

A version's artifacts are per-item arrays: popularity (recency-decayed), purchase and
repeat-purchase counts (an item's re-order rate), the top-K co-occurrence neighbours of
every item with the kind of basket that made the pair (bought, carted or viewed together),
and the most popular items per store and per channel. They are stored as one compressed
numpy archive in ``model_artifacts`` and loaded into memory by every replica.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from continuum_recommendation.domain import (
    CART,
    CO_KINDS,
    DAY_S,
    POPULARITY_WEIGHT,
    PURCHASE,
    VIEW,
    Array,
    Interaction,
    Params,
)

TOP_PER_CONTEXT = 200

Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass
class Artifacts:
    skus: list[str]
    popularity: Array  # float64 [n]
    bought: Array  # int64 [n]: purchases (one per order line)
    repeated: Array  # int64 [n]: purchases by a customer who had bought it before
    nbr_idx: Array  # int32 [n, K], -1 padded
    nbr_score: Array  # float32 [n, K]
    nbr_kind: Array  # int8 [n, K]
    context_keys: list[str]  # "store:<id>" / "channel:<n>"
    context_top: Array  # int32 [contexts, TOP], -1 padded
    context_score: Array  # float32 [contexts, TOP]
    interaction_count: int
    customer_count: int
    built_at: float

    def dumps(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            skus=np.array(self.skus, dtype=object).astype(str),
            popularity=self.popularity,
            bought=self.bought,
            repeated=self.repeated,
            nbr_idx=self.nbr_idx,
            nbr_score=self.nbr_score,
            nbr_kind=self.nbr_kind,
            context_keys=np.array(self.context_keys, dtype=object).astype(str),
            context_top=self.context_top,
            context_score=self.context_score,
            counts=np.array([self.interaction_count, self.customer_count], dtype=np.int64),
            built_at=np.array([self.built_at]),
        )
        return buffer.getvalue()

    @classmethod
    def loads(cls, blob: bytes) -> Artifacts:
        data = np.load(io.BytesIO(blob), allow_pickle=False)
        counts = data["counts"]
        return cls(
            skus=[str(s) for s in data["skus"]],
            popularity=data["popularity"],
            bought=data["bought"],
            repeated=data["repeated"],
            nbr_idx=data["nbr_idx"],
            nbr_score=data["nbr_score"],
            nbr_kind=data["nbr_kind"],
            context_keys=[str(s) for s in data["context_keys"]],
            context_top=data["context_top"],
            context_score=data["context_score"],
            interaction_count=int(counts[0]),
            customer_count=int(counts[1]),
            built_at=float(data["built_at"][0]),
        )


def basket_key(row: Interaction) -> tuple[str, str]:
    """The basket a row belongs to for co-occurrence: its order, cart or session, else the
    subject's day."""
    if row.basket:
        return (row.subject, row.basket)
    return (row.subject, f"day:{int(row.at // DAY_S)}")


def _topk(matrix: sparse.csr_matrix, k: int, progress: Progress) -> tuple[Array, Array]:
    n = matrix.shape[0]
    idx = np.full((n, k), -1, dtype=np.int32)
    score = np.zeros((n, k), dtype=np.float32)
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    step = max(1, n // 100)
    for row in range(n):
        start, stop = indptr[row], indptr[row + 1]
        if stop > start:
            cols = indices[start:stop]
            vals = data[start:stop]
            if stop - start > k:
                part = np.argpartition(-vals, k - 1)[:k]
                cols, vals = cols[part], vals[part]
            order = np.lexsort((cols, -vals))
            m = len(order)
            idx[row, :m] = cols[order]
            score[row, :m] = vals[order]
        if row % step == 0:
            progress("neighbours", row, n)
    progress("neighbours", n, n)
    return idx, score


def build(
    rows: Iterable[Interaction],
    params: Params,
    *,
    now: float,
    extra_skus: Iterable[str] = (),
    progress: Progress = _no_progress,
) -> Artifacts:
    """Compute a version's artifacts from behaviour (any order)."""
    index: dict[str, int] = {}
    for sku in extra_skus:
        index.setdefault(sku, len(index))
    rows = sorted(rows, key=lambda r: (r.at, r.seq))
    total = len(rows)
    progress("reading", 0, total)
    baskets: dict[int, dict[tuple[str, str], int]] = {k: {} for k in CO_KINDS}
    co_rows: dict[int, list[int]] = {k: [] for k in CO_KINDS}
    co_cols: dict[int, list[int]] = {k: [] for k in CO_KINDS}
    pop: dict[int, float] = defaultdict(float)
    bought: dict[int, int] = defaultdict(int)
    repeated: dict[int, int] = defaultdict(int)
    seen_bought: set[tuple[str, int]] = set()
    contexts: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    customers: set[str] = set()
    half_life = params.popularity_half_life_days * DAY_S
    for n, row in enumerate(rows):
        i = index.setdefault(row.sku, len(index))
        if row.subject.startswith("c:"):
            customers.add(row.subject)
        weight = POPULARITY_WEIGHT.get(row.kind, 0.0)
        if weight:
            decayed = weight * math.pow(0.5, max(0.0, now - row.at) / half_life)
            pop[i] += decayed
            if row.store_id:
                contexts[f"store:{row.store_id}"][i] += decayed
            if row.channel:
                contexts[f"channel:{row.channel}"][i] += decayed
        if row.kind == PURCHASE:
            bought[i] += 1
            if (row.subject, i) in seen_bought:
                repeated[i] += 1
            else:
                seen_bought.add((row.subject, i))
        if row.kind in baskets:
            keys = baskets[row.kind]
            b = keys.setdefault(basket_key(row), len(keys))
            co_rows[row.kind].append(b)
            co_cols[row.kind].append(i)
        if n % 50_000 == 0:
            progress("reading", n, total)
    progress("reading", total, total)
    n_items = len(index)
    weights = {PURCHASE: 1.0, CART: params.w_cart_basket, VIEW: params.w_view_basket}
    parts: dict[int, sparse.csr_matrix] = {}
    for kind in CO_KINDS:
        matrix = sparse.csr_matrix(
            (
                np.ones(len(co_rows[kind]), dtype=np.float32),
                (np.array(co_rows[kind], dtype=np.int64), np.array(co_cols[kind], dtype=np.int64)),
            ),
            shape=(max(1, len(baskets[kind])), n_items),
        )
        matrix.data[:] = 1.0  # duplicates summed: back to presence
        counts = np.asarray(matrix.sum(axis=0)).ravel()
        square = (matrix.T @ matrix).tocsr()
        square.setdiag(0)
        square.eliminate_zeros()
        pairs = square.tocoo()
        counts64 = counts.astype(np.float64)
        norm = np.sqrt(counts64[pairs.row] * counts64[pairs.col]) + 1.0
        pairs.data = (pairs.data / norm * weights[kind]).astype(np.float32)
        parts[kind] = pairs.tocsr()
        progress("co-occurrence", CO_KINDS.index(kind) + 1, len(CO_KINDS))
    combined = (parts[PURCHASE] + parts[CART] + parts[VIEW]).tocsr()
    combined.sort_indices()
    nbr_idx, nbr_score = _topk(combined, params.neighbours, progress)
    nbr_kind = np.zeros(nbr_idx.shape, dtype=np.int8)
    stacked = [parts[k] for k in CO_KINDS]
    rows_idx, cols_idx = np.nonzero(nbr_idx >= 0)
    if len(rows_idx):
        targets = nbr_idx[rows_idx, cols_idx]
        values = np.vstack(
            [np.asarray(m[rows_idx, targets]).ravel() for m in stacked]
        )  # [kinds, entries]
        best = np.argmax(values, axis=0)
        nbr_kind[rows_idx, cols_idx] = np.array(CO_KINDS, dtype=np.int8)[best]
    context_keys = sorted(contexts)
    context_top = np.full((len(context_keys), TOP_PER_CONTEXT), -1, dtype=np.int32)
    context_score = np.zeros((len(context_keys), TOP_PER_CONTEXT), dtype=np.float32)
    for c, key in enumerate(context_keys):
        ranked = sorted(contexts[key].items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_PER_CONTEXT]
        for p, (i, value) in enumerate(ranked):
            context_top[c, p] = i
            context_score[c, p] = value
    skus = [""] * n_items
    for sku, i in index.items():
        skus[i] = sku

    def dense(values: dict[int, float] | dict[int, int], dtype: type) -> Array:
        out: Array = np.zeros(n_items, dtype=dtype)
        for i, v in values.items():
            out[i] = v
        return out

    return Artifacts(
        skus=skus,
        popularity=dense(pop, np.float64),
        bought=dense(bought, np.int64),
        repeated=dense(repeated, np.int64),
        nbr_idx=nbr_idx,
        nbr_score=nbr_score,
        nbr_kind=nbr_kind,
        context_keys=context_keys,
        context_top=context_top,
        context_score=context_score,
        interaction_count=total,
        customer_count=len(customers),
        built_at=now,
    )
