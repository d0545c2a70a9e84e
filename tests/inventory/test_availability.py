"""Availability: one store, nearby stores by distance, ship-to-home, pickup buffer."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.type import latlng_pb2

from continuum.inventory.v1 import inventory_resources_pb2 as res
from continuum.inventory.v1 import inventory_service_pb2 as pb
from tests.inventory.conftest import WAREHOUSE, Inventory, error_info

S = res.AvailabilityStatus
T = res.StockChangeType


async def test_check_availability_at_one_store(inventory: Inventory) -> None:
    inv = inventory
    for sku in ("A", "B", "C"):
        await inv.item(sku)
    await inv.location("store-1", pickup_capable=True, pickup_buffer=2)
    await inv.adjust("A", "store-1", 20)
    await inv.adjust("B", "store-1", 3)
    await inv.adjust("B", "store-1", 5, type=T.STOCK_CHANGE_TYPE_INCOMING)
    answer = await inv.stub.CheckAvailability(
        pb.CheckAvailabilityRequest(location_id="store-1", skus=["C", "B", "A"]),
        metadata=inv.metadata,
    )
    assert answer.pickup_capable
    assert answer.pickup_buffer == 2
    got = [
        (a.sku, a.available_to_promise, a.pickup_available, a.status, a.incoming)
        for a in answer.availabilities
    ]
    assert got == [
        ("C", 0, 0, S.AVAILABILITY_STATUS_NOT_STOCKED, 0),
        ("B", 3, 1, S.AVAILABILITY_STATUS_LOW_STOCK, 5),
        ("A", 20, 18, S.AVAILABILITY_STATUS_IN_STOCK, 0),
    ]
    await inv.reserve([("A", "store-1", 20)])
    sold_out = await inv.stub.CheckAvailability(
        pb.CheckAvailabilityRequest(location_id="store-1", skus=["A"]), metadata=inv.metadata
    )
    assert sold_out.availabilities[0].status == S.AVAILABILITY_STATUS_OUT_OF_STOCK

    with pytest.raises(grpc.aio.AioRpcError) as unknown_location:
        await inv.stub.CheckAvailability(
            pb.CheckAvailabilityRequest(location_id="nowhere", skus=["A"]), metadata=inv.metadata
        )
    assert unknown_location.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as unknown_sku:
        await inv.stub.CheckAvailability(
            pb.CheckAvailabilityRequest(location_id="store-1", skus=["A", "X", "Y"]),
            metadata=inv.metadata,
        )
    assert error_info(unknown_sku.value).metadata["skus"] == "X,Y"


async def test_nearby_stores_by_distance(inventory: Inventory) -> None:
    inv = inventory
    await inv.item("A")
    await inv.item("B")
    # Leeds origin; York ~35 km, Manchester ~58 km, Sheffield ~48 km, London ~270 km.
    await inv.location("leeds", lat=53.7997, lon=-1.5492, pickup_capable=True)
    await inv.location("york", lat=53.9590, lon=-1.0815, pickup_capable=True, pickup_buffer=0)
    await inv.location("sheffield", lat=53.3811, lon=-1.4701)
    await inv.location("manchester", lat=53.4808, lon=-2.2426, pickup_capable=True)
    await inv.location("london", lat=51.5072, lon=-0.1276, pickup_capable=True)
    await inv.location("dc", type=WAREHOUSE, lat=53.80, lon=-1.55, ship_from_capable=True)
    for loc, a, b in (
        ("leeds", 5, 0),
        ("york", 2, 2),
        ("sheffield", 9, 9),
        ("manchester", 1, 4),
        ("london", 50, 50),
        ("dc", 99, 99),
    ):
        if a:
            await inv.adjust("A", loc, a)
        if b:
            await inv.adjust("B", loc, b)

    near = await inv.stub.FindNearbyStock(
        pb.FindNearbyStockRequest(location_id="leeds", skus=["A", "B"], max_distance_km=100),
        metadata=inv.metadata,
    )
    assert [loc.location.location_id for loc in near.locations] == [
        "york",
        "sheffield",
        "manchester",
    ]
    distances = [loc.distance_km for loc in near.locations]
    assert distances == sorted(distances)
    assert 30 < distances[0] < 40
    assert [loc.has_all for loc in near.locations] == [True, True, True]

    need_two = await inv.stub.FindNearbyStock(
        pb.FindNearbyStockRequest(
            location_id="leeds",
            skus=["A", "B"],
            min_quantity=2,
            require_all=True,
            include_origin=True,
            max_distance_km=100,
        ),
        metadata=inv.metadata,
    )
    assert [loc.location.location_id for loc in need_two.locations] == ["york", "sheffield"]

    pickup = await inv.stub.FindNearbyStock(
        pb.FindNearbyStockRequest(
            coordinates=latlng_pb2.LatLng(latitude=53.7997, longitude=-1.5492),
            skus=["A"],
            pickup_only=True,
            max_distance_km=100,
        ),
        metadata=inv.metadata,
    )
    # Leeds: 5 - buffer 1 = 4; York: buffer 0 -> 2; Manchester: 1 - 1 = 0 (left out);
    # Sheffield is not pickup capable.
    assert [
        (loc.location.location_id, loc.availabilities[0].pickup_available)
        for loc in pickup.locations
    ] == [("leeds", 4), ("york", 2)]

    default_radius = await inv.stub.FindNearbyStock(
        pb.FindNearbyStockRequest(location_id="leeds", skus=["A"], limit=2, include_origin=True),
        metadata=inv.metadata,
    )
    assert [loc.location.location_id for loc in default_radius.locations] == ["leeds", "york"]
    assert default_radius.locations[0].distance_km == 0

    # Each store's counts carry the status under the low-stock rule in force there: York's
    # own rule for B makes its 2 units low; by the default rule Sheffield's 9 are in stock
    # and Manchester's 4 are low.
    await inv.stub.SetLowStockThreshold(
        pb.SetLowStockThresholdRequest(
            request_id=inv.rid(),
            threshold=res.LowStockThreshold(
                sku="B", location_id="york", low_threshold=3, recover_threshold=4
            ),
        ),
        metadata=inv.metadata,
    )
    statuses = await inv.stub.FindNearbyStock(
        pb.FindNearbyStockRequest(location_id="leeds", skus=["B"], max_distance_km=100),
        metadata=inv.metadata,
    )
    assert [
        (loc.location.location_id, a.available_to_promise, a.status)
        for loc in statuses.locations
        for a in loc.availabilities
    ] == [
        ("york", 2, S.AVAILABILITY_STATUS_LOW_STOCK),
        ("sheffield", 9, S.AVAILABILITY_STATUS_IN_STOCK),
        ("manchester", 4, S.AVAILABILITY_STATUS_LOW_STOCK),
    ]
    assert statuses.locations[0].location.name  # the store's details come along

    # A point with no store within the radius: an empty answer that echoes the point.
    nowhere = await inv.stub.FindNearbyStock(
        pb.FindNearbyStockRequest(
            coordinates=latlng_pb2.LatLng(latitude=10.0, longitude=10.0), skus=["A"]
        ),
        metadata=inv.metadata,
    )
    assert list(nowhere.locations) == []
    assert nowhere.origin.latitude == 10.0

    with pytest.raises(grpc.aio.AioRpcError) as unknown_origin:
        await inv.stub.FindNearbyStock(
            pb.FindNearbyStockRequest(location_id="atlantis", skus=["A"]), metadata=inv.metadata
        )
    assert unknown_origin.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(unknown_origin.value).metadata["location_id"] == "atlantis"
    with pytest.raises(grpc.aio.AioRpcError) as unknown_sku:
        await inv.stub.FindNearbyStock(
            pb.FindNearbyStockRequest(location_id="leeds", skus=["Q", "A", "P"]),
            metadata=inv.metadata,
        )
    assert unknown_sku.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(unknown_sku.value).metadata["skus"] == "Q,P"


async def test_availability_with_nearby_stock_for_what_is_short_here(
    inventory: Inventory,
) -> None:
    """CheckAvailability with `nearby`: the store's counts, and for the searched SKUs that
    are low, out or not carried there, the nearest other stores that have them."""
    inv = inventory
    for sku in ("PLENTY", "LOW", "OUT", "NONE"):
        await inv.item(sku)
    await inv.location("leeds", lat=53.7997, lon=-1.5492)
    await inv.location("york", lat=53.9590, lon=-1.0815)
    await inv.location("sheffield", lat=53.3811, lon=-1.4701)
    await inv.location("london", lat=51.5072, lon=-0.1276)
    for sku, loc, units in (
        ("PLENTY", "leeds", 40),
        ("PLENTY", "york", 40),
        ("LOW", "leeds", 2),
        ("LOW", "sheffield", 8),
        ("OUT", "york", 3),
        ("NONE", "london", 9),
    ):
        await inv.adjust(sku, loc, units)
    await inv.adjust("OUT", "leeds", 1)
    await inv.reserve([("OUT", "leeds", 1)])

    answer = await inv.stub.CheckAvailability(
        pb.CheckAvailabilityRequest(
            location_id="leeds",
            skus=["PLENTY", "LOW", "OUT", "NONE"],
            nearby=pb.NearbySearch(max_distance_km=100),
        ),
        metadata=inv.metadata,
    )
    assert [a.status for a in answer.availabilities] == [
        S.AVAILABILITY_STATUS_IN_STOCK,
        S.AVAILABILITY_STATUS_LOW_STOCK,
        S.AVAILABILITY_STATUS_OUT_OF_STOCK,
        S.AVAILABILITY_STATUS_NOT_STOCKED,
    ]
    assert list(answer.nearby_skus) == ["LOW", "OUT", "NONE"]  # not PLENTY: plenty here
    # London is beyond 100 km; nearest first; each store with the searched SKUs' counts.
    assert [
        (loc.location.location_id, [(a.sku, a.available_to_promise) for a in loc.availabilities])
        for loc in answer.nearby
    ] == [
        ("york", [("LOW", 0), ("OUT", 3), ("NONE", 0)]),
        ("sheffield", [("LOW", 8), ("OUT", 0), ("NONE", 0)]),
    ]
    assert answer.nearby[0].distance_km < answer.nearby[1].distance_km

    # Only the SKUs named are searched; none of them short here: no search at all.
    only_plenty = await inv.stub.CheckAvailability(
        pb.CheckAvailabilityRequest(
            location_id="leeds",
            skus=["PLENTY", "LOW"],
            nearby=pb.NearbySearch(skus=["PLENTY"], max_distance_km=100),
        ),
        metadata=inv.metadata,
    )
    assert not only_plenty.nearby
    assert not only_plenty.nearby_skus
    without = await inv.stub.CheckAvailability(
        pb.CheckAvailabilityRequest(location_id="leeds", skus=["LOW"]), metadata=inv.metadata
    )
    assert not without.nearby

    with pytest.raises(grpc.aio.AioRpcError) as stranger:
        await inv.stub.CheckAvailability(
            pb.CheckAvailabilityRequest(
                location_id="leeds", skus=["LOW"], nearby=pb.NearbySearch(skus=["OUT"])
            ),
            metadata=inv.metadata,
        )
    assert stranger.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_ship_to_home_from_warehouses(inventory: Inventory) -> None:
    inv = inventory
    await inv.item("A")
    await inv.item("B")
    await inv.location("dc-1", type=WAREHOUSE, ship_from_capable=True)
    await inv.location("dc-2", type=WAREHOUSE, ship_from_capable=True)
    await inv.location("store-1")
    await inv.adjust("A", "dc-1", 4)
    await inv.adjust("A", "dc-2", 6)
    await inv.adjust("B", "store-1", 100)
    answer = await inv.stub.GetShipToHomeAvailability(
        pb.GetShipToHomeAvailabilityRequest(
            lines=[pb.SkuQuantity(sku="A", quantity=5), pb.SkuQuantity(sku="B", quantity=1)]
        ),
        metadata=inv.metadata,
    )
    a, b = answer.items
    assert (a.available_to_promise, a.available) == (10, True)
    assert [(x.location_id, x.available_to_promise) for x in a.locations] == [
        ("dc-2", 6),
        ("dc-1", 4),
    ]
    assert (b.available_to_promise, b.available, b.status) == (
        0,
        False,
        S.AVAILABILITY_STATUS_NOT_STOCKED,
    )
    assert not answer.all_available
    too_many = await inv.stub.GetShipToHomeAvailability(
        pb.GetShipToHomeAvailabilityRequest(lines=[pb.SkuQuantity(sku="A", quantity=7)]),
        metadata=inv.metadata,
    )
    assert not too_many.items[0].available  # 10 in total, but no single location has 7


async def test_closed_store_drops_out_of_pickup(inventory: Inventory) -> None:
    inv = inventory
    await inv.item("A")
    await inv.location("store-1", pickup_capable=True)
    await inv.adjust("A", "store-1", 10)
    await inv.stub.UpdateLocation(
        pb.UpdateLocationRequest(
            request_id="close",
            location=res.Location(
                location_id="store-1", state=res.LocationState.LOCATION_STATE_CLOSED
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        ),
        metadata=inv.metadata,
    )
    answer = await inv.stub.CheckAvailability(
        pb.CheckAvailabilityRequest(location_id="store-1", skus=["A"]), metadata=inv.metadata
    )
    assert not answer.pickup_capable
    assert answer.availabilities[0].pickup_available == 0


async def test_availability_takes_the_most_specific_low_stock_rule(inventory: Inventory) -> None:
    """Each SKU's status at a store follows the most specific rule in force: the SKU's own
    at that store, then the SKU's anywhere, then the store's, then the global one."""
    inv = inventory
    skus = ["OWN", "SKUWIDE", "STOREWIDE", "GLOBAL"]
    for sku in skus:
        await inv.item(sku)
    for store in ("store-1", "store-2"):
        await inv.location(store, pickup_capable=True)
        for sku in skus:
            await inv.adjust(sku, store, 6)

    async def rule(sku: str, location_id: str, low: int) -> None:
        await inv.stub.SetLowStockThreshold(
            pb.SetLowStockThresholdRequest(
                request_id=inv.rid(),
                threshold=res.LowStockThreshold(
                    sku=sku, location_id=location_id, low_threshold=low, recover_threshold=low + 1
                ),
            ),
            metadata=inv.metadata,
        )

    async def statuses(store: str) -> list[int]:
        answer = await inv.stub.CheckAvailability(
            pb.CheckAvailabilityRequest(location_id=store, skus=skus), metadata=inv.metadata
        )
        return [a.status for a in answer.availabilities]

    await rule("", "", 6)  # 6 units: low everywhere by the global rule
    await rule("", "store-1", 2)  # in stock at store-1 ...
    await rule("SKUWIDE", "", 7)  # ... except this SKU, low everywhere ...
    await rule("OWN", "store-1", 9)  # ... and this one, low at store-1 only ...
    await rule("OWN", "", 1)  # ... while in stock elsewhere
    low, ok = S.AVAILABILITY_STATUS_LOW_STOCK, S.AVAILABILITY_STATUS_IN_STOCK
    assert await statuses("store-1") == [low, low, ok, ok]
    assert await statuses("store-2") == [ok, low, low, low]
