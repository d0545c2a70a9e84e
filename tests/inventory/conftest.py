"""The inventory service in-process on loopback, on a fresh database of its own, with
helpers to set up items, locations and stock through the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest_asyncio
import redis.asyncio as aioredis
from google.rpc import status_pb2
from pydantic import SecretStr

from continuum.common.v1 import event_pb2, money_pb2
from continuum.inventory.v1 import inventory_resources_pb2 as res
from continuum.inventory.v1 import inventory_service_pb2 as pb
from continuum.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from continuum_inventory.__main__ import MIGRATIONS, make_server
from continuum_inventory.settings import InventorySettings
from continuum_runtime.app import ServiceContext, open_context
from continuum_runtime.config import AuthSettings
from continuum_runtime.events import stream_key
from continuum_runtime.server import ServiceServer
from continuum_runtime.testing import TestStores, TokenFactory

T = res.StockChangeType
RECEIPT = T.STOCK_CHANGE_TYPE_RECEIPT
STORE = res.LocationType.LOCATION_TYPE_STORE
WAREHOUSE = res.LocationType.LOCATION_TYPE_WAREHOUSE
CHECKOUT = res.ReservationKind.RESERVATION_KIND_CHECKOUT
CLICK_AND_COLLECT = res.ReservationKind.RESERVATION_KIND_CLICK_AND_COLLECT


@dataclass
class Inventory:
    server: ServiceServer
    ctx: ServiceContext
    stub: pb_grpc.InventoryServiceAsyncStub
    metadata: tuple[tuple[str, str], ...]
    redis: aioredis.Redis
    namespace: str
    counter: list[int] = field(default_factory=lambda: [0])

    def rid(self) -> str:
        self.counter[0] += 1
        return f"req-{self.counter[0]}"

    async def item(self, sku: str, **fields: Any) -> res.Item:
        item = res.Item(
            sku=sku,
            product_id=fields.pop("product_id", f"p-{sku}"),
            name=fields.pop("name", f"Item {sku}"),
            price=money_pb2.Money(currency_code="EUR", amount_minor=fields.pop("price", 1999)),
            **fields,
        )
        answer = await self.stub.CreateItem(
            pb.CreateItemRequest(request_id=self.rid(), item=item), metadata=self.metadata
        )
        return answer.item

    async def location(
        self,
        location_id: str,
        *,
        type: int = STORE,
        lat: float = 51.5,
        lon: float = -0.12,
        **fields: Any,
    ) -> res.Location:
        location = res.Location(
            location_id=location_id,
            name=fields.pop("name", location_id),
            type=type,  # type: ignore[arg-type]
            time_zone=fields.pop("time_zone", "Europe/London"),
            **fields,
        )
        location.coordinates.latitude = lat
        location.coordinates.longitude = lon
        answer = await self.stub.CreateLocation(
            pb.CreateLocationRequest(request_id=self.rid(), location=location),
            metadata=self.metadata,
        )
        return answer.location

    async def adjust(
        self, sku: str, location_id: str, delta: int, type: int = RECEIPT, **fields: Any
    ) -> pb.AdjustStockResponse:
        return await self.stub.AdjustStock(
            pb.AdjustStockRequest(
                request_id=fields.pop("request_id", None) or self.rid(),
                sku=sku,
                location_id=location_id,
                type=type,  # type: ignore[arg-type]
                delta=delta,
                reason=fields.pop("reason", "test"),
                **fields,
            ),
            metadata=self.metadata,
        )

    async def level(self, sku: str, location_id: str) -> res.StockLevel:
        answer = await self.stub.GetStockLevel(
            pb.GetStockLevelRequest(sku=sku, location_id=location_id), metadata=self.metadata
        )
        return answer.stock_level

    async def reserve(
        self,
        lines: list[tuple[str, str, int]],
        kind: int = CHECKOUT,
        request_id: str | None = None,
        **fields: Any,
    ) -> res.Reservation:
        answer = await self.stub.ReserveStock(
            pb.ReserveStockRequest(
                request_id=request_id or self.rid(),
                kind=kind,  # type: ignore[arg-type]
                lines=[res.ReserveLine(sku=s, location_id=loc, quantity=q) for s, loc, q in lines],
                **fields,
            ),
            metadata=self.metadata,
        )
        return answer.reservation

    async def events(self, event_type: str | None = None) -> list[event_pb2.EventEnvelope]:
        """Events the relay has published so far, oldest first."""
        entries: Any = await self.redis.xrange(stream_key(self.namespace, "inventory"))
        out = []
        for _, fields in entries:
            envelope = event_pb2.EventEnvelope.FromString(bytes(fields[b"envelope"]))
            if event_type is None or envelope.type == event_type:
                out.append(envelope)
        return out


def status_details(error: grpc.aio.AioRpcError) -> list[Any]:
    """The rich status details of a failed call, unpacked."""
    from google.rpc import error_details_pb2

    out: list[Any] = []
    trailing: Any = error.trailing_metadata() or ()
    raw = dict(trailing).get("grpc-status-details-bin")
    if raw is None:
        return out
    status = status_pb2.Status.FromString(raw)
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            res.ReservationFailure,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                out.append(message)
    return out


def error_info(error: grpc.aio.AioRpcError) -> Any:
    from google.rpc import error_details_pb2

    for detail in status_details(error):
        if isinstance(detail, error_details_pb2.ErrorInfo):
            return detail
    return None


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    from google.rpc import error_details_pb2

    return [
        v.field
        for d in status_details(error)
        if isinstance(d, error_details_pb2.BadRequest)
        for v in d.field_violations
    ]


@pytest_asyncio.fixture
async def inventory(
    database_url: str,
    test_stores: TestStores,
    redis_namespace: str,
    redis_client: aioredis.Redis,
    auth_settings: AuthSettings,
    make_token: TokenFactory,
) -> AsyncIterator[Inventory]:
    settings = InventorySettings(
        database_url=SecretStr(database_url),
        redis_url=SecretStr(test_stores.redis_url),
        redis_namespace=redis_namespace,
        auth=auth_settings,
        environment="test",
        port=0,
        sweep_interval_s=0.1,
        max_concurrent_rpcs=5000,
    )
    settings.db.pool_size = 20
    ctx = await open_context(settings, MIGRATIONS)
    server = make_server(ctx)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        token = make_token(subject="tests")
        yield Inventory(
            server=server,
            ctx=ctx,
            stub=pb_grpc.InventoryServiceStub(channel),
            metadata=(("authorization", f"Bearer {token}"),),
            redis=redis_client,
            namespace=redis_namespace,
        )
    await server.drain(grace_s=0.5)
