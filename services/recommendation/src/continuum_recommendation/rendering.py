"""Recommended items as messages, assembled from serialized parts kept per item, reason and
availability: a message's encodings concatenated parse as the message with all their
fields (repeated fields in order), so an answer's items are parsed from bytes reused
across answers instead of built field by field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from continuum.common.v1 import money_pb2
from continuum.recommendation.v1 import recommendation_resources_pb2 as res
from continuum_recommendation.inventory import Stock
from continuum_recommendation.live import ItemInfo, LiveModel

# Parts kept per kind before that kind's parts are dropped and built again on demand.
PARTS_KEPT = 200_000

Item = res.RecommendedItem


class Parts:
    """Serialized parts of RecommendedItem, each checked against what it was made from."""

    def __init__(self, model: LiveModel, reason_text: Callable[..., str]) -> None:
        self.model = model
        self.reason_text = reason_text
        self._items: dict[int, tuple[ItemInfo, bytes]] = {}
        self._reasons: dict[tuple[Any, ...], tuple[ItemInfo | None, bytes]] = {}
        self._availability: dict[tuple[Any, ...], bytes] = {}

    def item(self, i: int) -> bytes:
        """The item's own fields: SKU, product, names, attributes and price."""
        info = self.model.info(i)
        found = self._items.get(i)
        if found is not None and found[0] is info:
            return found[1]
        message = Item(
            sku=info.sku,
            product_id=info.product_id,
            name=info.name,
            category=info.category,
            brand=info.brand,
            size=info.size,
            colour=info.colour,
            image_url=info.image_url,
        )
        if info.currency:
            message.unit_price.CopyFrom(
                money_pb2.Money(currency_code=info.currency, amount_minor=info.price_minor)
            )
        blob = message.SerializeToString()
        _bounded(self._items)[i] = (info, blob)
        return blob

    def reason(self, kind: int, related: int, value: str, in_cart: bool, main: bool) -> bytes:
        """A reason, as the item's main reason or as one of its supporting reasons."""
        key = (kind, related, value, in_cart, main)
        info = self.model.info(related) if related >= 0 else None
        found = self._reasons.get(key)
        if found is not None and found[0] is info:
            return found[1]
        cart = {related} if in_cart else set()
        reason = res.Reason(
            kind=kind,  # type: ignore[arg-type]
            text=self.reason_text(self.model, kind, related, value, cart),
        )
        if info is not None:
            reason.related_sku = info.sku
            reason.related_product_id = info.product_id
        if value and kind != res.REASON_KIND_REPEAT_PURCHASE:
            reason.related_value = value
        elif value:
            reason.related_value = f"{value}d"
        message = Item(reason=reason) if main else Item(supporting_reasons=[reason])
        blob = message.SerializeToString()
        _bounded(self._reasons)[key] = (info, blob)
        return blob

    def availability(self, stock: Stock, store_id: str, pickup_filter: bool) -> bytes:
        """Availability at the store (the pickup count under a pickup filter)."""
        key = (stock, store_id, pickup_filter)
        found = self._availability.get(key)
        if found is not None:
            return found
        message = Item()
        availability = message.availability
        availability.store_id = store_id
        availability.status = stock.status  # type: ignore[assignment]
        availability.available_quantity = stock.pickup if pickup_filter else stock.available
        availability.pickup_available = stock.pickup > 0
        if stock.checked_at:
            availability.check_time.FromNanoseconds(int(stock.checked_at * 1e9))
        blob = message.SerializeToString()
        _bounded(self._availability)[key] = blob
        return blob


def _bounded(parts: dict[Any, Any]) -> dict[Any, Any]:
    if len(parts) >= PARTS_KEPT:
        parts.clear()
    return parts
