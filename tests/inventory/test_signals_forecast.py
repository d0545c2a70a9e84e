"""Low-stock and back-in-stock signals with hysteresis; demand history and forecasts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from sqlalchemy import text

from continuum.cart.v1 import cart_events_pb2, cart_resources_pb2
from continuum.inventory.v1 import inventory_events_pb2 as ev
from continuum.inventory.v1 import inventory_resources_pb2 as res
from continuum.inventory.v1 import inventory_service_pb2 as pb
from continuum_runtime.events import new_envelope, stream_key
from continuum_runtime.testing import eventually
from tests.inventory.conftest import Inventory, error_info

T = res.StockChangeType
SCOPE = res.ThresholdScope


async def set_rule(
    inv: Inventory, sku: str, location_id: str, **fields: object
) -> res.LowStockThreshold:
    answer = await inv.stub.SetLowStockThreshold(
        pb.SetLowStockThresholdRequest(
            request_id=inv.rid(),
            threshold=res.LowStockThreshold(sku=sku, location_id=location_id, **fields),  # type: ignore[arg-type]
        ),
        metadata=inv.metadata,
    )
    return answer.threshold


async def sell(inv: Inventory, sku: str, units: int) -> None:
    await inv.adjust(sku, "store-1", -units, type=T.STOCK_CHANGE_TYPE_SALE)


async def test_low_stock_fires_once_until_recovered(inventory: Inventory) -> None:
    inv = inventory
    await inv.item("A")
    await inv.location("store-1")
    rule = await set_rule(inv, "A", "", low_threshold=3, recover_threshold=6)
    assert rule.scope == SCOPE.THRESHOLD_SCOPE_SKU
    await inv.adjust("A", "store-1", 10)
    await sell(inv, "A", 7)  # 3: fires
    await sell(inv, "A", 1)  # 2: already raised
    await inv.adjust("A", "store-1", 2, type=T.STOCK_CHANGE_TYPE_RETURN)  # 4: not recovered
    await sell(inv, "A", 1)  # 3: still raised, no second event
    level = await inv.level("A", "store-1")
    assert level.low_stock
    assert level.status == res.AvailabilityStatus.AVAILABILITY_STATUS_LOW_STOCK
    await inv.adjust("A", "store-1", 3)  # 6: recovered, signal lowered
    assert not (await inv.level("A", "store-1")).low_stock
    await sell(inv, "A", 3)  # 3: fires again

    async def two_events() -> bool:
        return len(await inv.events("inventory.low_stock")) >= 2

    await eventually(two_events)
    events = await inv.events("inventory.low_stock")
    assert len(events) == 2
    payload = ev.LowStockEvent()
    events[0].payload.Unpack(payload)
    assert events[0].subject == "sku:A@store-1"
    assert payload.available_to_promise == 3
    assert payload.threshold.low_threshold == 3


async def test_back_in_stock_needs_the_rule_quantity_and_an_active_item(
    inventory: Inventory,
) -> None:
    inv = inventory
    await inv.item("A")
    await inv.item("OLD")
    await inv.location("store-1", pickup_capable=True)
    await set_rule(
        inv, "", "store-1", low_threshold=1, recover_threshold=2, back_in_stock_quantity=3
    )
    for sku in ("A", "OLD"):
        await inv.adjust(sku, "store-1", 2)
        await sell(inv, sku, 2)  # 0
    await inv.adjust("A", "store-1", 1)  # 1: below the rule's quantity, not "back"
    await inv.adjust("A", "store-1", 1)  # 2
    await inv.adjust("A", "store-1", 4)  # 6: back
    await inv.adjust("A", "store-1", 1)  # 7: nothing new
    await inv.stub.UpdateItem(
        pb.UpdateItemRequest(
            request_id="discontinue",
            item=res.Item(sku="OLD", state=res.ItemState.ITEM_STATE_DISCONTINUED),
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        ),
        metadata=inv.metadata,
    )
    await inv.adjust("OLD", "store-1", 10)  # discontinued: never "back in stock"

    async def published() -> bool:
        return len(await inv.events("inventory.stock_changed")) == 9

    await eventually(published)
    backs = await inv.events("inventory.back_in_stock")
    assert len(backs) == 1
    back = ev.BackInStockEvent()
    backs[0].payload.Unpack(back)
    assert (back.sku, back.available_to_promise, back.pickup_available) == ("A", 6, 5)
    assert back.product_id == "p-A"
    assert back.name == "Item A"
    assert back.HasField("out_of_stock_time")


async def test_cooldown_defers_and_then_re_evaluates(inventory: Inventory) -> None:
    inv = inventory
    await inv.item("A")
    await inv.location("store-1")
    await set_rule(
        inv,
        "A",
        "store-1",
        low_threshold=2,
        recover_threshold=3,
        cooldown=duration_pb2.Duration(seconds=1),
    )
    await inv.adjust("A", "store-1", 5)
    await sell(inv, "A", 3)  # 2: fires
    await inv.adjust("A", "store-1", 1)  # 3: recovered
    await sell(inv, "A", 1)  # 2: low again, but inside the cooldown: deferred

    async def fired_twice() -> bool:
        return len(await inv.events("inventory.low_stock")) == 2

    # The sweeper re-evaluates the level when the cooldown ends.
    await eventually(fired_twice, timeout_s=10)
    assert (await inv.level("A", "store-1")).low_stock


async def test_threshold_rules_crud(inventory: Inventory) -> None:
    inv = inventory
    await inv.item("A")
    await inv.location("store-1")
    default = await inv.stub.GetLowStockThreshold(
        pb.GetLowStockThresholdRequest(sku="A", location_id="store-1"), metadata=inv.metadata
    )
    assert default.threshold.scope == SCOPE.THRESHOLD_SCOPE_DEFAULT
    assert default.threshold.low_threshold == 5  # from the configuration
    await set_rule(inv, "", "", low_threshold=4, recover_threshold=8)
    await set_rule(inv, "", "store-1", low_threshold=2, recover_threshold=4)
    await set_rule(inv, "A", "store-1", low_threshold=1, recover_threshold=2)
    in_force = await inv.stub.GetLowStockThreshold(
        pb.GetLowStockThresholdRequest(sku="A", location_id="store-1"), metadata=inv.metadata
    )
    assert in_force.threshold.scope == SCOPE.THRESHOLD_SCOPE_SKU_AT_LOCATION
    listed = await inv.stub.ListLowStockThresholds(
        pb.ListLowStockThresholdsRequest(), metadata=inv.metadata
    )
    assert [t.scope for t in listed.thresholds] == [
        SCOPE.THRESHOLD_SCOPE_SKU_AT_LOCATION,
        SCOPE.THRESHOLD_SCOPE_LOCATION,
        SCOPE.THRESHOLD_SCOPE_DEFAULT,
    ]
    await inv.stub.DeleteLowStockThreshold(
        pb.DeleteLowStockThresholdRequest(request_id="del", sku="A", location_id="store-1"),
        metadata=inv.metadata,
    )
    after = await inv.stub.GetLowStockThreshold(
        pb.GetLowStockThresholdRequest(sku="A", location_id="store-1"), metadata=inv.metadata
    )
    assert after.threshold.scope == SCOPE.THRESHOLD_SCOPE_LOCATION
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await inv.stub.DeleteLowStockThreshold(
            pb.DeleteLowStockThresholdRequest(request_id="del-2", sku="A", location_id="store-1"),
            metadata=inv.metadata,
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await set_rule(inv, "GHOST", "", low_threshold=1, recover_threshold=2)
    assert error_info(unknown.value).reason == "ITEM_NOT_FOUND"


async def test_order_events_become_demand_history(inventory: Inventory) -> None:
    inv = inventory
    await inv.item("A")
    await inv.location("store-1", time_zone="America/New_York")
    await inv.adjust("A", "store-1", 100)
    placed = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 22:00 on the 19th in New York
    order = cart_resources_pb2.Order(
        order_id="o-1",
        lines=[
            cart_resources_pb2.OrderLine(sku="A", quantity=2, location_id="store-1"),
            cart_resources_pb2.OrderLine(sku="A", quantity=1, location_id="store-1"),
        ],
    )
    order.place_time.FromDatetime(placed)
    envelope = new_envelope(
        producer="cart",
        event_type="cart.order_placed",
        subject="cart-1",
        payload=cart_events_pb2.OrderPlacedEvent(order=order),
    )
    for _ in range(2):  # delivered twice: counted once
        await inv.redis.xadd(
            stream_key(inv.namespace, "cart"),
            {"id": envelope.id, "type": envelope.type, "envelope": envelope.SerializeToString()},
        )

    async def recorded() -> bool:
        async with inv.ctx.db.transaction() as session:
            rows = (await session.execute(text("SELECT day, units FROM demand_daily"))).all()
        return [(str(r.day), r.units) for r in rows] == [("2026-11-19", 3)]

    await eventually(recorded)
    await sell(inv, "A", 4)  # till sales count too
    short = await inv.stub.GetDemandForecast(
        pb.GetDemandForecastRequest(sku="A", location_id="store-1", horizon_days=7),
        metadata=inv.metadata,
    )
    assert short.forecast.insufficient_history
    assert short.forecast.method == "moving_average_28d"
    assert len(short.forecast.days) == 7


async def test_seasonal_demand_is_forecast_better_than_naive(inventory: Inventory) -> None:
    inv = inventory
    await inv.item("A")
    await inv.location("store-1", time_zone="UTC")
    await inv.adjust("A", "store-1", 300)
    rng = np.random.default_rng(7)
    today = datetime.now(UTC).date()
    days = 180
    weekly = np.array([0.7, 0.8, 0.8, 0.9, 1.2, 1.7, 1.4])
    rows = []
    for k in range(days):
        day = today - timedelta(days=days - k)
        mean = 20 * weekly[day.weekday()] * (1 + 0.002 * k)
        rows.append({"day": day, "units": int(rng.poisson(mean))})
    async with inv.ctx.db.transaction() as session:
        await session.execute(
            text(
                "INSERT INTO demand_daily (sku, location_id, day, units) "
                "VALUES ('A', 'store-1', :day, :units)"
            ),
            rows,
        )
    answer = await inv.stub.GetDemandForecast(
        pb.GetDemandForecastRequest(sku="A", location_id="store-1", horizon_days=28),
        metadata=inv.metadata,
    )
    fc = answer.forecast
    assert fc.method == "holt_winters_additive_weekly"
    assert not fc.insufficient_history
    assert fc.fit.holdout_days == 14
    assert fc.fit.mape < fc.fit.naive_mape
    # The weekly shape comes through: Saturdays forecast above Mondays.
    by_weekday: dict[int, float] = {}
    for d in fc.days:
        by_weekday.setdefault(
            datetime(d.date.year, d.date.month, d.date.day).weekday(), d.predicted_units
        )
    assert by_weekday[5] > by_weekday[0] * 1.5
    assert all(d.lower_units <= d.predicted_units <= d.upper_units for d in fc.days)
    # ~25 units a day against 300 available: about 12 days of cover, stock-out inside 28 days.
    assert 8 < fc.days_of_cover < 16
    assert fc.HasField("predicted_stockout_date")
    first_negative = next(d for d in fc.days if d.projected_available < 0)
    assert fc.predicted_stockout_date == first_negative.date
