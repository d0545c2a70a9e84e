"""Cart operations with etags: add, change a quantity, remove, and check out for pickup.

    CONTINUUM_TOKEN=... python examples/sdk/cart_checkout.py

CONTINUUM_EXAMPLE_SKU / CONTINUUM_EXAMPLE_BAG_SKU pick the products and
CONTINUUM_EXAMPLE_STORE the pickup store (defaults: the demo data of `make run`).
"""

from __future__ import annotations

import asyncio
import os
import uuid

from continuum_sdk import AsyncContinuum, ClientConfig, guest, pickup
from continuum_sdk import errors as e

SKU = os.environ.get("CONTINUUM_EXAMPLE_SKU", "ARIA-RUN-BLK-39")
BAG_SKU = os.environ.get("CONTINUUM_EXAMPLE_BAG_SKU", "MARA-TOTE-BLK")
STORE = os.environ.get("CONTINUUM_EXAMPLE_STORE", "store-paris-marais")


async def main() -> None:
    owner = guest(f"web-cookie-{uuid.uuid4().hex[:8]}")
    async with AsyncContinuum(ClientConfig.from_env()) as cx:
        shoe = await cx.carts.add(owner, SKU)
        bag = await cx.carts.add(owner, BAG_SKU, etag=shoe.cart.etag)
        cart = await cx.carts.update(owner, shoe.line_id, 2, etag=bag.cart.etag)
        print(f"cart {cart.cart_id}: {[(line.sku, line.quantity) for line in cart.lines]}")

        # Someone else changed the cart since `shoe` was read: the etag is stale.
        try:
            await cx.carts.remove(owner, bag.line_id, etag=shoe.cart.etag)
        except e.Aborted as conflict:
            print(f"conflict: {conflict.reason}, current etag {conflict.metadata['current_etag']}")
        cart = await cx.carts.remove(owner, bag.line_id, etag=cart.etag)

        placed = await cx.carts.checkout(
            owner, fulfilment=pickup(STORE), etag=cart.etag, expected_total=cart.subtotal
        )
        total = placed.order.total
        print(
            f"order {placed.order.order_id}: {total.amount_minor / 100:.2f} {total.currency_code}"
        )


if __name__ == "__main__":
    asyncio.run(main())
