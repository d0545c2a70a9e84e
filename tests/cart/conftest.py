"""The cart service in-process on loopback, next to a real inventory service (each on a
fresh database of its own), with a small catalogue: two shoe sizes, a bag, a scarf priced
in another currency, an inactive item; a warehouse and a pickup store with stock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest_asyncio
from google.type import latlng_pb2
from pydantic import SecretStr
from sqlalchemy import text

from continuum.cart.v1 import cart_resources_pb2 as res
from continuum.cart.v1 import cart_service_pb2_grpc as pb_grpc
from continuum.common.v1 import channel_pb2, event_pb2, money_pb2
from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from continuum_cart.__main__ import MIGRATIONS as CART_MIGRATIONS
from continuum_cart.__main__ import make_server as make_cart_server
from continuum_cart.settings import CartSettings
from continuum_inventory.__main__ import MIGRATIONS as INVENTORY_MIGRATIONS
from continuum_inventory.__main__ import make_server as make_inventory_server
from continuum_inventory.settings import InventorySettings
from continuum_runtime.app import ServiceContext
from continuum_runtime.config import AuthSettings
from continuum_runtime.server import ServiceServer
from continuum_runtime.testing import (
    TestStores,
    TokenFactory,
    fresh_database,
    service_fields,
    serving,
)

WEB = channel_pb2.CHANNEL_WEB
STORE = channel_pb2.CHANNEL_STORE
APP = channel_pb2.CHANNEL_APP

# sku: (product, name, colour, size, price in minor units, currency, state)
CATALOGUE: dict[str, tuple[str, str, str, str, int, str, int]] = {
    "SHOE-38": ("shoe", "Runner shoe", "navy", "38", 8900, "EUR", inv.ITEM_STATE_ACTIVE),
    "SHOE-39": ("shoe", "Runner shoe", "navy", "39", 8900, "EUR", inv.ITEM_STATE_ACTIVE),
    "BAG-1": ("bag", "Leather tote", "navy", "", 12900, "EUR", inv.ITEM_STATE_ACTIVE),
    "SCARF-GBP": ("scarf", "Wool scarf", "grey", "", 3500, "GBP", inv.ITEM_STATE_ACTIVE),
    "OLD-1": ("old", "Recalled kettle", "", "", 2000, "EUR", inv.ITEM_STATE_INACTIVE),
}
# (sku, location, units)
STOCK = [
    ("SHOE-38", "wh-1", 20),
    ("SHOE-39", "wh-1", 2),
    ("BAG-1", "wh-1", 10),
    ("SHOE-38", "store-1", 3),
    ("BAG-1", "store-1", 1),
]


@dataclass
class Suite:
    cart: pb_grpc.CartServiceStub
    inventory: inv_grpc.InventoryServiceStub
    cart_server: ServiceServer
    cart_ctx: ServiceContext
    inventory_server: ServiceServer
    metadata: tuple[tuple[str, str], ...]

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.cart_ctx.db.sessions() as session:
            return list((await session.execute(text(sql), params)).all())

    async def events(self, event_type: str) -> list[event_pb2.EventEnvelope]:
        found = await self.rows(
            "SELECT envelope FROM outbox WHERE event_type = :t ORDER BY seq", t=event_type
        )
        return [event_pb2.EventEnvelope.FromString(bytes(r[0])) for r in found]


def rid() -> str:
    return str(uuid.uuid4())


def customer(cid: str) -> res.Owner:
    return res.Owner(customer_id=cid)


def device(did: str) -> res.Owner:
    return res.Owner(device_id=did)


async def _seed(stub: inv_grpc.InventoryServiceStub, md: Any) -> None:
    for sku, (product, name, colour, size, price, currency, state) in CATALOGUE.items():
        await stub.CreateItem(
            inv_pb.CreateItemRequest(
                request_id=rid(),
                item=inv.Item(
                    sku=sku,
                    product_id=product,
                    name=name,
                    brand="Continuum",
                    category="Women > Shoes" if product == "shoe" else "Women > Accessories",
                    colour=colour,
                    size=size,
                    price=money_pb2.Money(currency_code=currency, amount_minor=price),
                    state=state,  # type: ignore[arg-type]
                ),
            ),
            metadata=md,
        )
    for loc, kind, pickup in (
        ("wh-1", inv.LOCATION_TYPE_WAREHOUSE, False),
        ("store-1", inv.LOCATION_TYPE_STORE, True),
    ):
        await stub.CreateLocation(
            inv_pb.CreateLocationRequest(
                request_id=rid(),
                location=inv.Location(
                    location_id=loc,
                    name=loc,
                    type=kind,
                    coordinates=latlng_pb2.LatLng(latitude=48.85, longitude=2.35),
                    time_zone="Europe/Paris",
                    pickup_capable=pickup,
                    ship_from_capable=not pickup,
                    pickup_buffer=0,
                ),
            ),
            metadata=md,
        )
    for sku, loc, units in STOCK:
        await stub.AdjustStock(
            inv_pb.AdjustStockRequest(
                request_id=rid(),
                sku=sku,
                location_id=loc,
                type=inv.STOCK_CHANGE_TYPE_RECEIPT,
                delta=units,
                reason="initial receipt",
            ),
            metadata=md,
        )


@pytest_asyncio.fixture
async def suite(
    database_url: str,
    test_stores: TestStores,
    redis_namespace: str,
    auth_settings: AuthSettings,
    make_token: TokenFactory,
) -> AsyncIterator[Suite]:
    common = service_fields(test_stores, redis_namespace, auth_settings)
    async with (
        fresh_database(test_stores, "inv") as inventory_url,
        serving(
            InventorySettings(database_url=SecretStr(inventory_url), **common),
            INVENTORY_MIGRATIONS,
            make_inventory_server,
        ) as (inventory_server, _),
        serving(
            CartSettings(
                database_url=SecretStr(database_url),
                inventory_target=f"127.0.0.1:{inventory_server.port}",
                item_cache_ttl_s=0.0,
                abandon_after_s=3600.0,
                abandon_check_interval_s=3600.0,
                **common,
            ),
            CART_MIGRATIONS,
            make_cart_server,
        ) as (cart_server, cart_ctx),
        grpc.aio.insecure_channel(f"127.0.0.1:{cart_server.port}") as cart_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{inventory_server.port}") as inv_channel,
    ):
        md = (("authorization", f"Bearer {make_token(subject='tests')}"),)
        inventory = inv_grpc.InventoryServiceStub(inv_channel)
        await _seed(inventory, md)
        yield Suite(
            cart=pb_grpc.CartServiceStub(cart_channel),
            inventory=inventory,
            cart_server=cart_server,
            cart_ctx=cart_ctx,
            inventory_server=inventory_server,
            metadata=md,
        )
