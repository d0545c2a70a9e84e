"""Plain domain types of the recommendation service: interactions, parameters, reasons."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from continuum.recommendation.v1 import recommendation_resources_pb2 as res

Array = np.ndarray[Any, Any]

# Interaction kinds, as stored in ``interactions.kind``.
VIEW = 1
CART = 2
WISHLIST = 3
PURCHASE = 4
CART_REMOVE = 5

# Weight of each kind in popularity.
POPULARITY_WEIGHT = {VIEW: 0.1, CART: 0.5, WISHLIST: 0.4, PURCHASE: 1.0}

# Co-occurrence groups: which reason a pair learned from each kind of basket gives.
CO_KINDS = (PURCHASE, CART, VIEW)
CO_REASON = {
    PURCHASE: res.REASON_KIND_BOUGHT_WITH,
    CART: res.REASON_KIND_CARTED_WITH,
    VIEW: res.REASON_KIND_VIEWED_WITH,
}

DAY_S = 86_400.0


@dataclass(frozen=True)
class Interaction:
    """One thing a subject (``c:<customer>`` or ``d:<device>``) did with one SKU."""

    seq: int
    subject: str
    sku: str
    kind: int
    quantity: int
    basket: str
    channel: int
    store_id: str
    at: float  # epoch seconds


@dataclass(frozen=True)
class Params:
    """Hyper-parameters of a model version. The ranking weights were tuned on a validation
    split carved from training orders (each user's second-to-last order), never on the
    held-out last orders; see docs/recommendation.md."""

    neighbours: int = 30
    recent_baskets: int = 2
    order_decay: float = 0.7
    w_frequency: float = 1.0
    w_recency: float = 2.0
    w_reorder: float = 0.6
    w_due: float = 0.6
    w_cooccurrence: float = 0.3
    w_popularity: float = 0.3
    w_cart_basket: float = 0.6
    w_view_basket: float = 0.3
    popularity_half_life_days: float = 14.0
    w_traits: float = 0.05

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def with_overrides(self, overrides: dict[str, str]) -> Params:
        """A copy with string overrides; ValueError names an unknown key or a bad value."""
        changes: dict[str, Any] = {}
        current = {f.name: f for f in fields(self)}
        for key, raw in overrides.items():
            if key not in current:
                raise KeyError(key)
            kind = type(getattr(self, key))
            changes[key] = kind(raw)
        return replace(self, **changes)

    def as_strings(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


def subject_of(customer_id: str, device_id: str) -> str:
    if customer_id:
        return f"c:{customer_id}"
    if device_id:
        return f"d:{device_id}"
    return ""
