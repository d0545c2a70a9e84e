"""Stock levels, adjustments, the ledger and its reconciliation."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import text

from continuum.inventory.v1 import inventory_resources_pb2 as res
from continuum.inventory.v1 import inventory_service_pb2 as pb
from tests.inventory.conftest import Inventory, error_info, violations

T = res.StockChangeType


async def _setup(inv: Inventory) -> None:
    await inv.item("SKU-1")
    await inv.location("store-1", pickup_capable=True)


async def test_receipts_adjustments_sales_and_the_ledger(inventory: Inventory) -> None:
    inv = inventory
    await _setup(inv)
    empty = await inv.level("SKU-1", "store-1")
    assert empty.status == res.AvailabilityStatus.AVAILABILITY_STATUS_NOT_STOCKED

    incoming = await inv.stub.AdjustStock(
        pb.AdjustStockRequest(
            request_id="po-1",
            sku="SKU-1",
            location_id="store-1",
            type=T.STOCK_CHANGE_TYPE_INCOMING,
            set_quantity=30,
            reason="po_placed",
        ),
        metadata=inv.metadata,
    )
    assert incoming.stock_level.incoming == 30
    receipt = await inv.adjust("SKU-1", "store-1", 20, reason="po_receipt", reference="PO-1")
    assert receipt.stock_level.on_hand == 20
    assert receipt.stock_level.incoming == 10  # the receipt lowers incoming
    assert receipt.ledger_entry.delta.on_hand == 20
    assert receipt.ledger_entry.delta.incoming == -20
    assert receipt.ledger_entry.sequence == 2
    await inv.adjust("SKU-1", "store-1", -3, type=T.STOCK_CHANGE_TYPE_SALE, reason="till_sale")
    await inv.adjust("SKU-1", "store-1", 2, type=T.STOCK_CHANGE_TYPE_SAFETY_STOCK)
    count = await inv.stub.AdjustStock(
        pb.AdjustStockRequest(
            request_id="count-1",
            sku="SKU-1",
            location_id="store-1",
            type=T.STOCK_CHANGE_TYPE_ADJUSTMENT,
            set_quantity=15,
            reason="cycle_count",
            expected_revision=4,
        ),
        metadata=inv.metadata,
    )
    level = count.stock_level
    assert (level.on_hand, level.safety_stock, level.available_to_promise) == (15, 2, 13)
    assert level.pickup_available == 12  # default pickup buffer 1
    assert level.revision == 5
    assert count.ledger_entry.delta.on_hand == -2  # 17 counted down to 15

    # A count based on a stale read is ABORTED and changes nothing.
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await inv.stub.AdjustStock(
            pb.AdjustStockRequest(
                request_id="count-2",
                sku="SKU-1",
                location_id="store-1",
                type=T.STOCK_CHANGE_TYPE_ADJUSTMENT,
                set_quantity=1,
                reason="cycle_count",
                expected_revision=4,
            ),
            metadata=inv.metadata,
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert error_info(stale.value).reason == "REVISION_MISMATCH"

    # on_hand can never go below zero.
    with pytest.raises(grpc.aio.AioRpcError) as negative:
        await inv.adjust("SKU-1", "store-1", -16, type=T.STOCK_CHANGE_TYPE_ADJUSTMENT)
    assert negative.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(negative.value).reason == "NEGATIVE_STOCK"
    assert (await inv.level("SKU-1", "store-1")).on_hand == 15

    entries = await inv.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(sku="SKU-1", location_id="store-1", page_size=3),
        metadata=inv.metadata,
    )
    assert [e.sequence for e in entries.ledger_entries] == [1, 2, 3]
    rest = await inv.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(
            sku="SKU-1", location_id="store-1", page_token=entries.next_page_token
        ),
        metadata=inv.metadata,
    )
    assert [e.sequence for e in rest.ledger_entries] == [4, 5]
    assert rest.ledger_entries[-1].reason == "cycle_count"
    assert rest.ledger_entries[-1].request_id == "count-1"
    sales = await inv.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(types=[T.STOCK_CHANGE_TYPE_SALE]), metadata=inv.metadata
    )
    assert [e.delta.on_hand for e in sales.ledger_entries] == [-3]

    report = await inv.stub.ReconcileStock(pb.ReconcileStockRequest(), metadata=inv.metadata)
    assert report.checked_level_count == 1
    assert report.discrepancy_count == 0


async def test_reconciliation_finds_a_level_that_does_not_add_up(inventory: Inventory) -> None:
    inv = inventory
    await _setup(inv)
    await inv.adjust("SKU-1", "store-1", 10)
    # Someone edits the table behind the service's back.
    async with inv.ctx.db.transaction() as session:
        from sqlalchemy import text

        await session.execute(text("UPDATE stock_levels SET on_hand = 12, reserved = 1"))
    report = await inv.stub.ReconcileStock(
        pb.ReconcileStockRequest(skus=["SKU-1"]), metadata=inv.metadata
    )
    assert report.discrepancy_count == 1
    (found,) = report.discrepancies
    assert found.level.on_hand == 12
    assert found.ledger_sum.on_hand == 10
    assert list(found.mismatched_fields) == ["on_hand", "reserved", "active_reservations"]


async def test_stock_bad_input(inventory: Inventory) -> None:
    inv = inventory
    await _setup(inv)
    with pytest.raises(grpc.aio.AioRpcError) as unknown_sku:
        await inv.adjust("GHOST", "store-1", 5)
    assert unknown_sku.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(unknown_sku.value).metadata["skus"] == "GHOST"
    with pytest.raises(grpc.aio.AioRpcError) as unknown_location:
        await inv.adjust("SKU-1", "nowhere", 5)
    assert unknown_location.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(unknown_location.value).reason == "LOCATION_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as negative_count:
        await inv.stub.AdjustStock(
            pb.AdjustStockRequest(
                request_id="neg",
                sku="SKU-1",
                location_id="store-1",
                type=T.STOCK_CHANGE_TYPE_ADJUSTMENT,
                set_quantity=-4,
                reason="count",
            ),
            metadata=inv.metadata,
        )
    assert negative_count.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(negative_count.value) == ["set_quantity"]
    with pytest.raises(grpc.aio.AioRpcError) as level_unknown:
        await inv.level("SKU-1", "nowhere")
    assert level_unknown.value.code() == grpc.StatusCode.NOT_FOUND
    # Nothing was written by any of these.
    assert (
        await inv.stub.ReconcileStock(pb.ReconcileStockRequest(), metadata=inv.metadata)
    ).checked_level_count == 0


async def test_idempotent_replay_of_adjustments(inventory: Inventory) -> None:
    inv = inventory
    await _setup(inv)
    first = await inv.adjust("SKU-1", "store-1", 7, request_id="same")
    again = await inv.adjust("SKU-1", "store-1", 7, request_id="same")
    assert again == first
    assert (await inv.level("SKU-1", "store-1")).on_hand == 7
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await inv.adjust("SKU-1", "store-1", 8, request_id="same")
    assert reused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(reused.value).reason == "REQUEST_ID_REUSED"


async def test_batch_and_list_levels(inventory: Inventory) -> None:
    inv = inventory
    await _setup(inv)
    await inv.item("SKU-2")
    await inv.adjust("SKU-1", "store-1", 50)
    await inv.adjust("SKU-2", "store-1", 3)
    batch = await inv.stub.BatchGetStockLevels(
        pb.BatchGetStockLevelsRequest(
            keys=[
                pb.StockKey(sku="SKU-2", location_id="store-1"),
                pb.StockKey(sku="SKU-1", location_id="store-1"),
            ]
        ),
        metadata=inv.metadata,
    )
    assert [lv.on_hand for lv in batch.stock_levels] == [3, 50]
    low = await inv.stub.ListStockLevels(
        pb.ListStockLevelsRequest(
            location_id="store-1", statuses=[res.AvailabilityStatus.AVAILABILITY_STATUS_LOW_STOCK]
        ),
        metadata=inv.metadata,
    )
    assert [lv.sku for lv in low.stock_levels] == ["SKU-2"]


async def _listing(inv: Inventory, **fields: Any) -> tuple[list[res.StockLevel], Any]:
    levels: list[res.StockLevel] = []
    token = ""
    first = None
    while True:
        page = await inv.stub.ListStockLevels(
            pb.ListStockLevelsRequest(location_id="store-1", page_token=token, **fields),
            metadata=inv.metadata,
        )
        first = first or page
        levels += page.stock_levels
        token = page.next_page_token
        if not token:
            return levels, first.changes_from


async def test_a_copy_of_a_stores_levels_kept_in_step_by_listing_the_changes(
    inventory: Inventory,
) -> None:
    inv = inventory
    await _setup(inv)
    await inv.location("store-2")
    for sku in ("SKU-1", "SKU-2", "SKU-3"):
        if sku != "SKU-1":
            await inv.item(sku)
        await inv.adjust(sku, "store-1", 5)
    await inv.adjust("SKU-1", "store-2", 5)
    # an hour goes by
    async with inv.ctx.db.transaction() as session:
        for table in ("stock_levels", "locations"):
            await session.execute(
                text(f"UPDATE {table} SET update_time = update_time - interval '1 hour'")
            )

    full, since = await _listing(inv)
    assert [lv.sku for lv in full] == ["SKU-1", "SKU-2", "SKU-3"]
    quiet, _ = await _listing(inv, changed_since=since)
    assert quiet == []

    await inv.adjust("SKU-3", "store-1", -2, type=T.STOCK_CHANGE_TYPE_SALE)
    await inv.reserve([("SKU-2", "store-1", 1)])
    await inv.adjust("SKU-1", "store-2", 1)  # another store's change is not listed
    changed, _ = await _listing(inv, changed_since=since, page_size=1)
    assert [(lv.sku, lv.available_to_promise) for lv in changed] == [("SKU-2", 4), ("SKU-3", 3)]

    # a change of the store itself changes every level's pickup availability
    await inv.stub.UpdateLocation(
        pb.UpdateLocationRequest(
            request_id="buffer",
            location=res.Location(location_id="store-1", pickup_buffer=3),
            update_mask=field_mask_pb2.FieldMask(paths=["pickup_buffer"]),
        ),
        metadata=inv.metadata,
    )
    changed, _ = await _listing(inv, changed_since=since)
    assert [(lv.sku, lv.pickup_available) for lv in changed] == [
        ("SKU-1", 2),
        ("SKU-2", 1),
        ("SKU-3", 0),
    ]
