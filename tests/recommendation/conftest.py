"""The recommendation service in-process on loopback, next to a real inventory service (each
on a fresh database of its own). Inventory holds a small catalogue (two sizes of a shoe, a
bag, socks, a scarf, a hat) and a store with some of it in stock; behaviour reaches the
recommendation service as profile's and cart's events on their Redis streams."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest_asyncio
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import latlng_pb2
from pydantic import SecretStr

from continuum.common.v1 import channel_pb2, identifier_pb2, money_pb2
from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from continuum.profile.v1 import profile_events_pb2 as pev
from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum.recommendation.v1 import recommendation_service_pb2_grpc as pb_grpc
from continuum_inventory.__main__ import MIGRATIONS as INVENTORY_MIGRATIONS
from continuum_inventory.__main__ import make_server as make_inventory_server
from continuum_inventory.settings import InventorySettings
from continuum_recommendation.__main__ import MIGRATIONS, make_server
from continuum_recommendation.settings import RecommendationSettings
from continuum_runtime.app import ServiceContext
from continuum_runtime.config import AuthSettings
from continuum_runtime.events import new_envelope, stream_key
from continuum_runtime.server import ServiceServer
from continuum_runtime.testing import (
    TestStores,
    TokenFactory,
    eventually,
    fresh_database,
    service_fields,
    serving,
)

WEB = channel_pb2.CHANNEL_WEB
APP = channel_pb2.CHANNEL_APP
STORE = channel_pb2.CHANNEL_STORE
DAY = 86_400

# sku: (product, name, category, size, colour)
CATALOGUE = {
    "SHOE-38": ("shoe", "Aria runners", "Women > Shoes", "38", "navy"),
    "SHOE-39": ("shoe", "Aria runners", "Women > Shoes", "39", "navy"),
    "BOOT-38": ("boot", "Ember boots", "Women > Shoes", "38", "black"),
    "BAG-1": ("bag", "Leather tote", "Women > Bags", "", "navy"),
    "SOCKS-1": ("socks", "Cotton socks", "Women > Socks", "M", "white"),
    "SCARF-1": ("scarf", "Wool scarf", "Women > Accessories", "", "grey"),
    "HAT-1": ("hat", "Knit hat", "Women > Accessories", "", "grey"),
}
# store-1 stocks everything but the scarf and the boots (sold out).
STOCK = [
    ("SHOE-38", 5),
    ("SHOE-39", 5),
    ("BAG-1", 2),
    ("SOCKS-1", 50),
    ("HAT-1", 3),
    ("BOOT-38", 1),
]


@dataclass
class Suite:
    rec: pb_grpc.RecommendationServiceStub
    inventory: inv_grpc.InventoryServiceStub
    ctx: ServiceContext
    server: ServiceServer
    inventory_server: ServiceServer
    metadata: tuple[tuple[str, str], ...]

    async def publish(
        self, producer: str, event_type: str, payload: Message, subject: str = "s"
    ) -> None:
        """Put an event on the producer's stream and wait until the service acknowledged it."""
        envelope = new_envelope(
            producer=producer, event_type=event_type, subject=subject, payload=payload
        )
        stream = stream_key(self.ctx.settings.redis_namespace, producer)
        redis = self.ctx.redis
        message_id = await redis.xadd(
            stream,
            {"id": envelope.id, "type": envelope.type, "envelope": envelope.SerializeToString()},
        )

        async def handled() -> bool:
            groups = await redis.xinfo_groups(stream)
            group = next(
                (g for g in groups if g["name"] in (b"recommendation", "recommendation")), None
            )
            return bool(
                group and group["last-delivered-id"] == message_id and group["pending"] == 0
            )

        await eventually(handled)


def ts(at: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(at * 1e9))
    return stamp


def ref(sku: str) -> prof.ProductRef:
    product, name, category, size, colour = CATALOGUE[sku]
    return prof.ProductRef(
        sku=sku,
        product_id=product,
        name=name,
        category=category,
        size=size,
        colour=colour,
        brand="Continuum",
        unit_price=money_pb2.Money(currency_code="EUR", amount_minor=5000),
    )


def behaviour(
    customer: str = "",
    device: str = "",
    at: float = 0.0,
    channel: int = WEB,
    store_id: str = "",
    **payload: Message,
) -> pev.EventIngestedEvent:
    event = prof.BehaviouralEvent(
        event_id=str(uuid.uuid4()),
        channel=channel,  # type: ignore[arg-type]
        occur_time=ts(at),
        identifiers=[
            identifier_pb2.Identifier(
                type=identifier_pb2.IDENTIFIER_TYPE_DEVICE_ID, value=device or "d"
            )
        ],
        store_id=store_id,
        customer_id=customer,
        device_id=device,
        **payload,  # type: ignore[arg-type]
    )
    return pev.EventIngestedEvent(customer_id=customer, device_id=device, event=event)


def order(
    customer: str, skus: list[str], at: float, order_id: str = "", **kw: Any
) -> pev.EventIngestedEvent:
    placed = prof.OrderPlaced(
        order_id=order_id or str(uuid.uuid4()),
        lines=[prof.OrderLine(product=ref(s), quantity=1) for s in skus],
        total=money_pb2.Money(currency_code="EUR", amount_minor=1000),
    )
    return behaviour(customer=customer, at=at, order_placed=placed, **kw)


def viewed(
    at: float, sku: str, customer: str = "", device: str = "", **kw: Any
) -> pev.EventIngestedEvent:
    return behaviour(
        customer=customer,
        device=device,
        at=at,
        product_viewed=prof.ProductViewed(product=ref(sku)),
        **kw,
    )


async def _seed(stub: inv_grpc.InventoryServiceStub, md: Any) -> None:
    for sku, (product, name, category, size, colour) in CATALOGUE.items():
        await stub.CreateItem(
            inv_pb.CreateItemRequest(
                request_id=str(uuid.uuid4()),
                item=inv.Item(
                    sku=sku,
                    product_id=product,
                    name=name,
                    brand="Continuum",
                    category=category,
                    colour=colour,
                    size=size,
                    price=money_pb2.Money(currency_code="EUR", amount_minor=5000),
                    state=inv.ITEM_STATE_ACTIVE,
                ),
            ),
            metadata=md,
        )
    await stub.CreateLocation(
        inv_pb.CreateLocationRequest(
            request_id=str(uuid.uuid4()),
            location=inv.Location(
                location_id="store-1",
                name="store-1",
                type=inv.LOCATION_TYPE_STORE,
                coordinates=latlng_pb2.LatLng(latitude=48.85, longitude=2.35),
                time_zone="Europe/Paris",
                pickup_capable=True,
                pickup_buffer=0,
            ),
        ),
        metadata=md,
    )
    for sku, units in STOCK:
        await stub.AdjustStock(
            inv_pb.AdjustStockRequest(
                request_id=str(uuid.uuid4()),
                sku=sku,
                location_id="store-1",
                type=inv.STOCK_CHANGE_TYPE_RECEIPT,
                delta=units,
                reason="initial receipt",
            ),
            metadata=md,
        )
    # The boots sell out.
    await stub.AdjustStock(
        inv_pb.AdjustStockRequest(
            request_id=str(uuid.uuid4()),
            sku="BOOT-38",
            location_id="store-1",
            type=inv.STOCK_CHANGE_TYPE_SALE,
            delta=-1,
            reason="sold",
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
            RecommendationSettings(
                database_url=SecretStr(database_url),
                inventory_target=f"127.0.0.1:{inventory_server.port}",
                availability_ttl_s=0.0,
                follow_interval_s=0.05,
                **common,
            ),
            MIGRATIONS,
            make_server,
        ) as (server, ctx),
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{inventory_server.port}") as inv_channel,
    ):
        md = (("authorization", f"Bearer {make_token(subject='tests')}"),)
        inventory = inv_grpc.InventoryServiceStub(inv_channel)
        await _seed(inventory, md)
        yield Suite(
            rec=pb_grpc.RecommendationServiceStub(channel),
            inventory=inventory,
            ctx=ctx,
            server=server,
            inventory_server=inventory_server,
            metadata=md,
        )
