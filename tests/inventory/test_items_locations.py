"""Item master and locations: CRUD, field masks, etags, bad input."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from continuum.common.v1 import money_pb2
from continuum.inventory.v1 import inventory_events_pb2 as ev
from continuum.inventory.v1 import inventory_resources_pb2 as res
from continuum.inventory.v1 import inventory_service_pb2 as pb
from continuum_runtime.testing import eventually
from tests.inventory.conftest import WAREHOUSE, Inventory, error_info, violations


async def test_item_create_get_update_list_and_batch_get(inventory: Inventory) -> None:
    inv = inventory
    created = await inv.item(
        "SHOE-9-BLK",
        product_id="SHOE",
        name="Runner",
        brand="Acme",
        category="Women > Shoes > Runners",
        colour="black",
        size="9",
        attributes={"material": "mesh"},
        gtin="12345678",
    )
    assert created.state == res.ItemState.ITEM_STATE_ACTIVE
    assert created.etag
    await inv.item("SHOE-8-BLK", product_id="SHOE", category="Women > Shoes")
    await inv.item("BAG-1", product_id="BAG", category="Women > Bags")

    got = (await inv.stub.GetItem(pb.GetItemRequest(sku="SHOE-9-BLK"), metadata=inv.metadata)).item
    assert got.attributes["material"] == "mesh"
    assert got.price.amount_minor == 1999

    update = res.Item(
        sku="SHOE-9-BLK",
        etag=created.etag,
        price=money_pb2.Money(currency_code="EUR", amount_minor=2499),
    )
    updated = (
        await inv.stub.UpdateItem(
            pb.UpdateItemRequest(
                request_id="u1",
                item=update,
                update_mask=field_mask_pb2.FieldMask(paths=["price"]),
            ),
            metadata=inv.metadata,
        )
    ).item
    assert updated.price.amount_minor == 2499
    assert updated.name == "Runner"  # not in the mask: unchanged
    assert updated.etag != created.etag

    # A stale etag is ABORTED and changes nothing.
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await inv.stub.UpdateItem(
            pb.UpdateItemRequest(
                request_id="u2",
                item=res.Item(sku="SHOE-9-BLK", etag=created.etag, brand="Other"),
                update_mask=field_mask_pb2.FieldMask(paths=["brand"]),
            ),
            metadata=inv.metadata,
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert error_info(stale.value).reason == "ETAG_MISMATCH"

    listed = await inv.stub.ListItems(
        pb.ListItemsRequest(category="Women > Shoes", page_size=1), metadata=inv.metadata
    )
    assert [i.sku for i in listed.items] == ["SHOE-8-BLK"]
    page2 = await inv.stub.ListItems(
        pb.ListItemsRequest(
            category="Women > Shoes", page_size=1, page_token=listed.next_page_token
        ),
        metadata=inv.metadata,
    )
    assert [i.sku for i in page2.items] == ["SHOE-9-BLK"]
    assert page2.next_page_token == ""

    batch = await inv.stub.BatchGetItems(
        pb.BatchGetItemsRequest(skus=["BAG-1", "NOPE", "SHOE-8-BLK"], allow_missing=True),
        metadata=inv.metadata,
    )
    assert [i.sku for i in batch.items] == ["BAG-1", "SHOE-8-BLK"]
    assert list(batch.missing_skus) == ["NOPE"]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await inv.stub.BatchGetItems(
            pb.BatchGetItemsRequest(skus=["BAG-1", "NOPE", "NADA"]), metadata=inv.metadata
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(missing.value).metadata["skus"] == "NOPE,NADA"

    async def published() -> bool:
        events = await inv.events("inventory.item_updated")
        return len(events) == 4

    await eventually(published)
    last = ev.ItemUpdatedEvent()
    (await inv.events("inventory.item_updated"))[-1].payload.Unpack(last)
    assert not last.created
    assert list(last.changed_fields) == ["price"]


async def test_item_bad_input_and_unknown_sku(inventory: Inventory) -> None:
    inv = inventory
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await inv.stub.GetItem(pb.GetItemRequest(sku="GHOST"), metadata=inv.metadata)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(unknown.value).reason == "ITEM_NOT_FOUND"

    with pytest.raises(grpc.aio.AioRpcError) as negative:
        await inv.item("NEG", price=-1)
    assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "item.price" in violations(negative.value)

    with pytest.raises(grpc.aio.AioRpcError) as space:
        await inv.item("has space")
    assert space.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "item.sku" in violations(space.value)

    await inv.item("A1")
    with pytest.raises(grpc.aio.AioRpcError) as dup:
        await inv.item("A1")
    assert dup.value.code() == grpc.StatusCode.ALREADY_EXISTS

    with pytest.raises(grpc.aio.AioRpcError) as path:
        await inv.stub.UpdateItem(
            pb.UpdateItemRequest(
                request_id="bad-path",
                item=res.Item(sku="A1"),
                update_mask=field_mask_pb2.FieldMask(paths=["sku", "name"]),
            ),
            metadata=inv.metadata,
        )
    assert path.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(path.value) == ["update_mask.paths[0]"]
    got = (await inv.stub.GetItem(pb.GetItemRequest(sku="A1"), metadata=inv.metadata)).item
    assert got.name == "Item A1"


async def test_locations_crud_and_rules(inventory: Inventory) -> None:
    inv = inventory
    store = await inv.location("store-1", pickup_capable=True, pickup_buffer=2)
    assert store.pickup_buffer == 2
    assert store.state == res.LocationState.LOCATION_STATE_ACTIVE
    await inv.location("dc-1", type=WAREHOUSE, ship_from_capable=True)

    with pytest.raises(grpc.aio.AioRpcError) as zone:
        await inv.location("store-x", time_zone="Mars/Olympus")
    assert zone.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(zone.value) == ["location.time_zone"]

    with pytest.raises(grpc.aio.AioRpcError) as immutable:
        await inv.stub.UpdateLocation(
            pb.UpdateLocationRequest(
                request_id="imm",
                location=res.Location(location_id="store-1", type=WAREHOUSE),
                update_mask=field_mask_pb2.FieldMask(paths=["type"]),
            ),
            metadata=inv.metadata,
        )
    assert immutable.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    closed = await inv.stub.UpdateLocation(
        pb.UpdateLocationRequest(
            request_id="close",
            location=res.Location(
                location_id="store-1", state=res.LocationState.LOCATION_STATE_CLOSED
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["state", "pickup_buffer"]),
        ),
        metadata=inv.metadata,
    )
    assert closed.location.state == res.LocationState.LOCATION_STATE_CLOSED
    assert not closed.location.HasField("pickup_buffer")  # cleared to the default

    listed = await inv.stub.ListLocations(
        pb.ListLocationsRequest(ship_from_capable_only=True), metadata=inv.metadata
    )
    assert [loc.location_id for loc in listed.locations] == ["dc-1"]
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await inv.stub.GetLocation(
            pb.GetLocationRequest(location_id="nowhere"), metadata=inv.metadata
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(unknown.value).reason == "LOCATION_NOT_FOUND"


async def test_rules_across_fields_are_invalid_argument(inventory: Inventory) -> None:
    """The contract's message-level rules: INVALID_ARGUMENT, and nothing is written."""
    inv = inventory
    await inv.item("A")
    await inv.location("store-1")
    with pytest.raises(grpc.aio.AioRpcError) as wh_pickup:
        await inv.location("dc-2", type=WAREHOUSE, pickup_capable=True)
    assert wh_pickup.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as positive_sale:
        await inv.adjust("A", "store-1", 5, type=res.StockChangeType.STOCK_CHANGE_TYPE_SALE)
    assert positive_sale.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as repeated:
        await inv.stub.ReserveStock(
            pb.ReserveStockRequest(
                request_id="dup-lines",
                kind=res.ReservationKind.RESERVATION_KIND_CHECKOUT,
                lines=[
                    res.ReserveLine(sku="A", location_id="store-1", quantity=1),
                    res.ReserveLine(sku="A", location_id="store-1", quantity=2),
                ],
            ),
            metadata=inv.metadata,
        )
    assert repeated.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as inverted:
        await inv.stub.SetLowStockThreshold(
            pb.SetLowStockThresholdRequest(
                request_id="inverted",
                threshold=res.LowStockThreshold(low_threshold=5, recover_threshold=5),
            ),
            metadata=inv.metadata,
        )
    assert inverted.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = await inv.stub.ListLocations(pb.ListLocationsRequest(), metadata=inv.metadata)
    assert [loc.location_id for loc in listed.locations] == ["store-1"]
    level = await inv.level("A", "store-1")
    assert level.status == res.AvailabilityStatus.AVAILABILITY_STATUS_NOT_STOCKED
