"""What the cart asks of the inventory service: item prices and snapshots, reservations.

Items read from the item master are kept for a few seconds (``item_cache_ttl_s``) to price
new lines; checkout always reads them fresh. A failed call to inventory that means "not
now" (unavailable, timed out) surfaces to the caller as UNAVAILABLE through the runtime's
error mapping; nothing is changed in the cart before inventory has answered.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.duration_pb2 import Duration

from continuum.cart.v1 import cart_resources_pb2 as res
from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from continuum_cart.domain import PricedItem
from continuum_runtime.client import error_detail, error_reason
from continuum_runtime.errors import NotFound

SELLABLE = {inv.ITEM_STATE_ACTIVE, inv.ITEM_STATE_DISCONTINUED}


def priced(item: inv.Item) -> PricedItem:
    return PricedItem(
        sku=item.sku,
        price_minor=item.price.amount_minor,
        currency=item.price.currency_code,
        sellable=item.state in SELLABLE,
        product=res.ProductSnapshot(
            product_id=item.product_id,
            name=item.name,
            brand=item.brand,
            category=item.category,
            colour=item.colour,
            size=item.size,
            image_url=item.image_url,
        ),
    )


@dataclass(frozen=True)
class ReservationShortage(Exception):
    """ReserveStock refused: the short lines (index into the request's lines)."""

    short_lines: Sequence[inv.ShortLine]


class Inventory:
    """The inventory calls of the cart service, over one channel."""

    def __init__(self, channel: grpc.aio.Channel, item_cache_ttl_s: float) -> None:
        self._stub = inv_grpc.InventoryServiceStub(channel)
        self._ttl = item_cache_ttl_s
        self._cache: dict[str, tuple[float, PricedItem]] = {}

    async def item(self, sku: str) -> PricedItem:
        """One SKU for pricing a line (cached briefly). NOT_FOUND for an unknown SKU."""
        hit = self._cache.get(sku)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        found = await self.items([sku])
        if sku not in found:
            raise NotFound(f"unknown SKU {sku}", reason="ITEM_NOT_FOUND", metadata={"sku": sku})
        return found[sku]

    async def items(self, skus: Sequence[str]) -> dict[str, PricedItem]:
        """The current item master entries of these SKUs (missing ones are absent)."""
        unique = list(dict.fromkeys(skus))
        if not unique:
            return {}
        answer = await self._stub.BatchGetItems(
            inv_pb.BatchGetItemsRequest(skus=unique, allow_missing=True)
        )
        expires = time.monotonic() + self._ttl
        found: dict[str, PricedItem] = {}
        for item in answer.items:
            found[item.sku] = priced(item)
            self._cache[item.sku] = (expires, found[item.sku])
        if len(self._cache) > 50_000:
            self._cache.clear()
        return found

    async def reserve(
        self,
        *,
        request_id: str,
        kind: int,
        lines: Sequence[tuple[str, str, int]],
        reference: str,
        customer_id: str,
        ttl_s: float = 0.0,
    ) -> inv.Reservation:
        """Reserve (sku, location, quantity) lines, all or nothing; idempotent by
        request_id. Raises ReservationShortage with the short lines."""
        try:
            answer = await self._stub.ReserveStock(
                inv_pb.ReserveStockRequest(
                    request_id=request_id,
                    kind=kind,  # type: ignore[arg-type]
                    lines=[
                        inv.ReserveLine(sku=sku, location_id=location, quantity=quantity)
                        for sku, location, quantity in lines
                    ],
                    reference=reference,
                    customer_id=customer_id,
                    actor="service:cart",
                    ttl=Duration(seconds=int(ttl_s)) if ttl_s > 0 else None,
                )
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                failure = error_detail(err, inv.ReservationFailure)
                if failure is not None:
                    raise ReservationShortage(list(failure.short_lines)) from err
            if err.code() == grpc.StatusCode.NOT_FOUND:
                reason = error_reason(err)
                raise NotFound(
                    err.details() or "not found in inventory",
                    reason=reason or "NOT_FOUND",
                ) from err
            raise
        return answer.reservation

    async def release(self, *, request_id: str, reservation_id: str, reason: str) -> None:
        await self._stub.ReleaseReservation(
            inv_pb.ReleaseReservationRequest(
                request_id=request_id,
                reservation_id=reservation_id,
                reason=reason,
                actor="service:cart",
            )
        )
