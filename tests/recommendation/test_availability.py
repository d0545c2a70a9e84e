"""Availability at a store as serving sees it: a snapshot of the store's levels, kept in
step with the changes inventory lists, and still used through a short inventory outage."""

from __future__ import annotations

import uuid

from google.protobuf import field_mask_pb2

from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.recommendation.v1 import recommendation_resources_pb2 as res
from continuum_recommendation.inventory import Inventory, Stock
from continuum_runtime.client import service_channel
from continuum_runtime.testing import eventually
from tests.recommendation.conftest import Suite

TTL_S = 1.0
SKUS = ["BAG-1", "BOOT-38", "HAT-1", "UNKNOWN-1"]


async def adjust(suite: Suite, sku: str, delta: int, kind: int) -> None:
    await suite.inventory.AdjustStock(
        inv_pb.AdjustStockRequest(
            request_id=str(uuid.uuid4()),
            sku=sku,
            location_id="store-1",
            type=kind,  # type: ignore[arg-type]
            delta=delta,
            reason="test",
        ),
        metadata=suite.metadata,
    )


async def test_a_stores_availability_is_kept_in_step_and_outlasts_a_short_outage(
    suite: Suite,
) -> None:
    target = f"127.0.0.1:{suite.inventory_server.port}"
    inventory = Inventory(service_channel(suite.ctx.settings, target), TTL_S, 60.0)

    async def levels() -> dict[str, Stock]:
        return await inventory.stock("store-1", SKUS)

    first = await levels()
    assert first["BAG-1"].available == 2
    assert first["BOOT-38"].status == res.AVAILABILITY_STATUS_OUT_OF_STOCK
    assert first["UNKNOWN-1"].status == res.AVAILABILITY_STATUS_NOT_STOCKED

    # a sale, a receipt and a change of the store's pickup buffer all show within seconds
    await adjust(suite, "BAG-1", -2, inv.STOCK_CHANGE_TYPE_SALE)
    await adjust(suite, "BOOT-38", 4, inv.STOCK_CHANGE_TYPE_RECEIPT)
    await suite.inventory.UpdateLocation(
        inv_pb.UpdateLocationRequest(
            request_id="buffer",
            location=inv.Location(location_id="store-1", pickup_buffer=2),
            update_mask=field_mask_pb2.FieldMask(paths=["pickup_buffer"]),
        ),
        metadata=suite.metadata,
    )

    async def in_step() -> bool:
        now = await levels()
        return (
            now["BAG-1"].status == res.AVAILABILITY_STATUS_OUT_OF_STOCK
            and now["BOOT-38"].available == 4
            and now["BOOT-38"].pickup == 2
            and now["HAT-1"].pickup == 1
        )

    await eventually(in_step, timeout_s=10.0)
    checked = (await levels())["HAT-1"].checked_at

    async def confirmed_again() -> bool:
        return (await levels())["HAT-1"].checked_at > checked

    # an unchanged level is confirmed by the next listing of changes
    await eventually(confirmed_again, timeout_s=10.0)

    # with inventory gone, the snapshot still answers for up to three TTLs
    await suite.inventory_server.drain(grace_s=0.1)
    during = await levels()
    assert during["BOOT-38"].available == 4
    assert during["UNKNOWN-1"].status == res.AVAILABILITY_STATUS_NOT_STOCKED
