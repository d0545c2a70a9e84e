"""make bench-cart: GetCart and AddItem through the cart service's gRPC API, against the floor.

An inventory service and a cart service run in processes of their own, each on a fresh
database. Inventory's item master gets ``--items`` items through its API; ``--carts``
customers' carts of three lines each are written straight into the cart database (built
with the service's own domain code, so that they are exactly what AddItem would store).
Then ``--concurrency`` callers read random customers' carts for ``--duration`` seconds,
then add items to random customers' carts for as long (each AddItem with its own
request_id, priced from the item master through the service's short item cache), and the
bare echo floor is measured in the same run.
"""

from __future__ import annotations

import asyncio
import platform
import random
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench._harness import arguments, closed_loop, emit, measure_floor, service_process
from continuum.cart.v1 import cart_resources_pb2 as res
from continuum.cart.v1 import cart_service_pb2 as pb
from continuum.cart.v1 import cart_service_pb2_grpc as pb_grpc
from continuum.common.v1 import channel_pb2, money_pb2
from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from continuum_cart import domain
from continuum_cart.domain import CUSTOMER, OwnerKey, PricedItem
from continuum_runtime.embedded import to_asyncpg_dsn

WEB = channel_pb2.CHANNEL_WEB


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def catalogue(count: int) -> list[PricedItem]:
    rng = random.Random(11)
    items = []
    for n in range(count):
        product = f"P{n // 4:05d}"
        items.append(
            PricedItem(
                sku=f"SKU-{n:06d}",
                price_minor=rng.randrange(500, 30000, 100),
                currency="EUR",
                sellable=True,
                product=res.ProductSnapshot(
                    product_id=product,
                    name=f"Product {product}",
                    brand="Continuum",
                    category="Women > Shoes",
                    colour=("navy", "black", "white", "red")[n % 4],
                    size=str(36 + n % 6),
                ),
            )
        )
    return items


async def create_items(
    stub: inv_grpc.InventoryServiceAsyncStub, md: Any, items: list[PricedItem]
) -> None:
    async def one(item: PricedItem) -> None:
        await stub.CreateItem(
            inv_pb.CreateItemRequest(
                request_id=uuid.uuid4().hex,
                item=inv.Item(
                    sku=item.sku,
                    product_id=item.product.product_id,
                    name=item.product.name,
                    brand=item.product.brand,
                    category=item.product.category,
                    colour=item.product.colour,
                    size=item.product.size,
                    price=money_pb2.Money(currency_code="EUR", amount_minor=item.price_minor),
                ),
            ),
            metadata=md,
            timeout=30,
        )

    for start in range(0, len(items), 64):
        await asyncio.gather(*(one(item) for item in items[start : start + 64]))


async def seed_carts(database_url: str, count: int, items: list[PricedItem]) -> list[str]:
    rng = random.Random(7)
    at = datetime.now(UTC)
    customers = [f"cust-{n:07d}" for n in range(count)]
    rows = []
    for customer in customers:
        owner = OwnerKey(CUSTOMER, customer)
        cart = domain.new_cart(owner, at)
        for item in rng.sample(items, 3):
            domain.add_item(cart, item, rng.randint(1, 3), WEB, "", at)
        rows.append(
            (
                uuid.UUID(cart.cart_id),
                CUSTOMER,
                customer,
                res.CART_STATE_ACTIVE,
                len(cart.lines),
                at,
                WEB,
                "",
                None,
                cart.SerializeToString(),
                at,
            )
        )
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        await conn.copy_records_to_table(
            "carts",
            records=rows,
            columns=[
                "cart_id",
                "owner_kind",
                "owner_id",
                "state",
                "line_count",
                "last_activity_at",
                "last_channel",
                "last_store_id",
                "abandoned_at",
                "body",
                "updated_at",
            ],
        )
        await conn.execute("ANALYZE carts")
    finally:
        await conn.close()
    return customers


async def main() -> None:
    parser = arguments(__doc__ or "")
    parser.add_argument("--carts", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=2_000)
    args = parser.parse_args()
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    items = catalogue(args.items)
    async with service_process("inventory", namespace=namespace) as inventory:
        log(f"item master: {args.items:,} items")
        await create_items(
            inv_grpc.InventoryServiceStub(inventory.channel), inventory.metadata, items
        )
        env = {"CONTINUUM_INVENTORY_TARGET": inventory.target}
        async with service_process("cart", namespace=namespace, env=env) as cart:
            log(f"carts: {args.carts:,} customers with 3 lines each")
            customers = await seed_carts(cart.database_url, args.carts, items)
            stub = pb_grpc.CartServiceStub(cart.channel)
            rng = random.Random(3)

            async def get_cart(_: int) -> object:
                owner = res.Owner(customer_id=customers[rng.randrange(len(customers))])
                return await stub.GetCart(
                    pb.GetCartRequest(owner=owner), metadata=cart.metadata, timeout=10
                )

            async def add_item(_: int) -> object:
                owner = res.Owner(customer_id=customers[rng.randrange(len(customers))])
                return await stub.AddItem(
                    pb.AddItemRequest(
                        request_id=uuid.uuid4().hex,
                        owner=owner,
                        sku=items[rng.randrange(len(items))].sku,
                        quantity=1,
                        channel=WEB,
                    ),
                    metadata=cart.metadata,
                    timeout=10,
                )

            load = {
                "concurrency": args.concurrency,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
            }
            log(f"GetCart at concurrency {args.concurrency} for {args.duration} s")
            gets = await closed_loop(get_cart, **load)
            log(f"AddItem at concurrency {args.concurrency} for {args.duration} s")
            adds = await closed_loop(add_item, **load)
    floor = await measure_floor(**load)
    log(
        f"GetCart {gets.requests_per_s:.0f}/s p99 {gets.percentile_ms(99):.2f} ms; "
        f"AddItem {adds.requests_per_s:.0f}/s p99 {adds.percentile_ms(99):.2f} ms; "
        f"floor {floor.requests_per_s:.0f}/s p99 {floor.percentile_ms(99):.2f} ms"
    )
    emit(
        {
            "benchmark": "cart",
            "carts": args.carts,
            "items": args.items,
            "concurrency": args.concurrency,
            "get_cart_per_s": round(gets.requests_per_s, 1),
            "get_cart_p50_ms": round(gets.percentile_ms(50), 3),
            "get_cart_p99_ms": round(gets.percentile_ms(99), 3),
            "add_item_per_s": round(adds.requests_per_s, 1),
            "add_item_p50_ms": round(adds.percentile_ms(50), 3),
            "add_item_p99_ms": round(adds.percentile_ms(99), 3),
            "floor_per_s": round(floor.requests_per_s, 1),
            "floor_p99_ms": round(floor.percentile_ms(99), 3),
            "get_cart_floor_ratio": round(gets.requests_per_s / floor.requests_per_s, 4),
            "add_item_floor_ratio": round(adds.requests_per_s / floor.requests_per_s, 4),
            "errors": gets.errors + adds.errors,
            "python": platform.python_version(),
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
