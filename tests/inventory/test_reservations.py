"""Reservations: lifecycle, expiry, shortages, idempotency, and the concurrency proof."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from continuum.inventory.v1 import inventory_events_pb2 as ev
from continuum.inventory.v1 import inventory_resources_pb2 as res
from continuum.inventory.v1 import inventory_service_pb2 as pb
from continuum_runtime.testing import eventually
from tests.inventory.conftest import (
    CHECKOUT,
    CLICK_AND_COLLECT,
    WAREHOUSE,
    Inventory,
    error_info,
    status_details,
)

RS = res.ReservationState
SR = res.ShortageReason
T = res.StockChangeType


def failure_of(error: grpc.aio.AioRpcError) -> res.ReservationFailure:
    (failure,) = [d for d in status_details(error) if isinstance(d, res.ReservationFailure)]
    return failure


async def test_reserve_commit_release_lifecycle(inventory: Inventory) -> None:
    inv = inventory
    await inv.item("A")
    await inv.item("B")
    await inv.location("store-1", pickup_capable=True, pickup_buffer=2)
    await inv.adjust("A", "store-1", 10)
    await inv.adjust("B", "store-1", 5)

    held = await inv.reserve(
        [("B", "store-1", 2), ("A", "store-1", 3)],
        reference="order-1",
        customer_id="cus_1",
    )
    assert held.state == RS.RESERVATION_STATE_ACTIVE
    assert [(x.sku, x.quantity) for x in held.lines] == [("B", 2), ("A", 3)]
    a = await inv.level("A", "store-1")
    assert (a.on_hand, a.reserved, a.available_to_promise, a.pickup_available) == (10, 3, 7, 5)

    committed = await inv.stub.CommitReservation(
        pb.CommitReservationRequest(request_id="c1", reservation_id=held.reservation_id),
        metadata=inv.metadata,
    )
    assert committed.reservation.state == RS.RESERVATION_STATE_COMMITTED
    a = await inv.level("A", "store-1")
    assert (a.on_hand, a.reserved) == (7, 0)
    # Committing again returns it unchanged; releasing a committed one is refused.
    again = await inv.stub.CommitReservation(
        pb.CommitReservationRequest(request_id="c2", reservation_id=held.reservation_id),
        metadata=inv.metadata,
    )
    assert again.reservation == committed.reservation
    with pytest.raises(grpc.aio.AioRpcError) as after_commit:
        await inv.stub.ReleaseReservation(
            pb.ReleaseReservationRequest(
                request_id="r0", reservation_id=held.reservation_id, reason="oops"
            ),
            metadata=inv.metadata,
        )
    assert after_commit.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(after_commit.value).reason == "RESERVATION_COMMITTED"

    pickup = await inv.reserve([("B", "store-1", 1)], kind=CLICK_AND_COLLECT)
    released = await inv.stub.ReleaseReservation(
        pb.ReleaseReservationRequest(
            request_id="r1", reservation_id=pickup.reservation_id, reason="not_collected"
        ),
        metadata=inv.metadata,
    )
    assert released.reservation.state == RS.RESERVATION_STATE_RELEASED
    assert released.reservation.release_reason == "not_collected"
    b = await inv.level("B", "store-1")
    assert (b.on_hand, b.reserved) == (3, 0)
    with pytest.raises(grpc.aio.AioRpcError) as commit_released:
        await inv.stub.CommitReservation(
            pb.CommitReservationRequest(request_id="c3", reservation_id=pickup.reservation_id),
            metadata=inv.metadata,
        )
    assert error_info(commit_released.value).reason == "RESERVATION_RELEASED"

    listed = await inv.stub.ListReservations(
        pb.ListReservationsRequest(location_id="store-1", sku="B"), metadata=inv.metadata
    )
    assert [r.reservation_id for r in listed.reservations] == [
        pickup.reservation_id,
        held.reservation_id,
    ]
    ledger = await inv.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(reservation_id=held.reservation_id), metadata=inv.metadata
    )
    assert sorted((e.sku, e.type) for e in ledger.ledger_entries) == [
        ("A", T.STOCK_CHANGE_TYPE_RESERVATION),
        ("A", T.STOCK_CHANGE_TYPE_RESERVATION_COMMIT),
        ("B", T.STOCK_CHANGE_TYPE_RESERVATION),
        ("B", T.STOCK_CHANGE_TYPE_RESERVATION_COMMIT),
    ]

    async def published() -> bool:
        types = [e.type for e in await inv.events()]
        return {
            "inventory.reservation_created",
            "inventory.reservation_committed",
            "inventory.reservation_released",
        } <= set(types)

    await eventually(published)
    created = await inv.events("inventory.reservation_created")
    assert created[0].subject == f"reservation:{held.reservation_id}"
    assert created[0].customer_id == "cus_1"
    report = await inv.stub.ReconcileStock(pb.ReconcileStockRequest(), metadata=inv.metadata)
    assert report.discrepancy_count == 0


async def test_expiry_releases_the_hold_exactly_once(inventory: Inventory) -> None:
    inv = inventory
    await inv.item("A")
    await inv.location("store-1")
    await inv.adjust("A", "store-1", 4)
    held = await inv.reserve(
        [("A", "store-1", 3)], request_id="hold-1", ttl=duration_pb2.Duration(seconds=1)
    )
    assert (await inv.level("A", "store-1")).available_to_promise == 1

    async def expired() -> bool:
        got = await inv.stub.GetReservation(
            pb.GetReservationRequest(reservation_id=held.reservation_id), metadata=inv.metadata
        )
        return got.reservation.state == RS.RESERVATION_STATE_EXPIRED

    await eventually(expired, timeout_s=10)
    level = await inv.level("A", "store-1")
    assert (level.reserved, level.available_to_promise) == (0, 4)
    # A replay of the ReserveStock returns the same reservation, as it is now.
    replay = await inv.reserve(
        [("A", "store-1", 3)], request_id="hold-1", ttl=duration_pb2.Duration(seconds=1)
    )
    assert replay.reservation_id == held.reservation_id
    assert (await inv.level("A", "store-1")).reserved == 0
    with pytest.raises(grpc.aio.AioRpcError) as commit_expired:
        await inv.stub.CommitReservation(
            pb.CommitReservationRequest(request_id="late", reservation_id=held.reservation_id),
            metadata=inv.metadata,
        )
    assert error_info(commit_expired.value).reason == "RESERVATION_EXPIRED"
    entries = await inv.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(types=[T.STOCK_CHANGE_TYPE_RESERVATION_EXPIRY]),
        metadata=inv.metadata,
    )
    (entry,) = entries.ledger_entries
    assert entry.request_id == f"expiry:{held.reservation_id}"
    assert entry.reason == "ttl_expired"

    async def event_published() -> bool:
        return len(await inv.events("inventory.reservation_expired")) == 1

    await eventually(event_published)


async def test_shortages_are_reported_per_line_and_nothing_is_held(inventory: Inventory) -> None:
    inv = inventory
    for sku in ("A", "B", "C", "D"):
        await inv.item(sku)
    await inv.location("store-1", pickup_capable=True, pickup_buffer=1)
    await inv.location("store-2")
    await inv.adjust("A", "store-1", 5)
    await inv.adjust("B", "store-1", 2)
    await inv.adjust("D", "store-2", 9)
    with pytest.raises(grpc.aio.AioRpcError) as short:
        await inv.reserve(
            [("A", "store-1", 5), ("B", "store-1", 2), ("C", "store-1", 1), ("D", "store-2", 1)],
            kind=CLICK_AND_COLLECT,
        )
    assert short.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(short.value).reason == "INSUFFICIENT_STOCK"
    lines = [
        (s.index, s.sku, s.requested_quantity, s.available_quantity, s.reason)
        for s in failure_of(short.value).short_lines
    ]
    assert lines == [
        (0, "A", 5, 4, SR.SHORTAGE_REASON_INSUFFICIENT_STOCK),  # pickup buffer of 1
        (1, "B", 2, 1, SR.SHORTAGE_REASON_INSUFFICIENT_STOCK),
        (2, "C", 1, 0, SR.SHORTAGE_REASON_NOT_STOCKED),
        (3, "D", 1, 0, SR.SHORTAGE_REASON_NOT_PICKUP_CAPABLE),
    ]
    assert (await inv.level("A", "store-1")).reserved == 0  # all or nothing

    # Inactive items and closed stores are refused with their reasons.
    await inv.stub.UpdateItem(
        pb.UpdateItemRequest(
            request_id="deactivate",
            item=res.Item(sku="A", state=res.ItemState.ITEM_STATE_INACTIVE),
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        ),
        metadata=inv.metadata,
    )
    await inv.stub.UpdateLocation(
        pb.UpdateLocationRequest(
            request_id="close",
            location=res.Location(
                location_id="store-2", state=res.LocationState.LOCATION_STATE_CLOSED
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        ),
        metadata=inv.metadata,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await inv.reserve([("A", "store-1", 1), ("D", "store-2", 1)])
    assert [s.reason for s in failure_of(refused.value).short_lines] == [
        SR.SHORTAGE_REASON_ITEM_NOT_SELLABLE,
        SR.SHORTAGE_REASON_LOCATION_CLOSED,
    ]

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await inv.reserve([("B", "store-1", 1), ("GHOST", "store-1", 1)])
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(unknown.value).metadata["skus"] == "GHOST"
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await inv.reserve([("B", "store-1", 0), ("B", "store-2", 10001)])
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    from tests.inventory.conftest import violations

    assert violations(too_many.value) == ["lines[0].quantity", "lines[1].quantity"]


async def test_checkout_without_location_picks_a_ship_from_location(inventory: Inventory) -> None:
    inv = inventory
    await inv.item("A")
    await inv.location("dc-1", type=WAREHOUSE, ship_from_capable=True)
    await inv.location("dc-2", type=WAREHOUSE, ship_from_capable=True)
    await inv.location("store-1")
    await inv.adjust("A", "dc-1", 3)
    await inv.adjust("A", "dc-2", 8)
    await inv.adjust("A", "store-1", 50)  # not ship-from: never chosen
    held = await inv.reserve([("A", "", 6)], kind=CHECKOUT)
    assert held.lines[0].location_id == "dc-2"
    with pytest.raises(grpc.aio.AioRpcError) as none_whole:
        await inv.reserve([("A", "", 4)])
    (short,) = failure_of(none_whole.value).short_lines
    assert short.reason == SR.SHORTAGE_REASON_NO_SHIP_FROM_LOCATION
    assert short.available_quantity == 3  # the most any single ship-from location had
    assert short.location_id == ""


async def test_concurrent_reservations_never_over_promise(inventory: Inventory) -> None:
    """Hundreds of concurrent callers over real gRPC at the last few units."""
    inv = inventory
    await inv.item("HOT")
    await inv.item("PAIR")
    await inv.location("store-1")
    await inv.adjust("HOT", "store-1", 7)
    await inv.adjust("HOT", "store-1", 2, type=T.STOCK_CHANGE_TYPE_SAFETY_STOCK)
    await inv.adjust("PAIR", "store-1", 1000)
    available = 5  # 7 on hand - 2 safety stock

    async def attempt(n: int) -> res.Reservation | grpc.aio.AioRpcError:
        # Two lines, half of the callers listing them in the other order (lock order).
        lines = [("HOT", "store-1", 1), ("PAIR", "store-1", 1)]
        if n % 2:
            lines.reverse()
        try:
            return await inv.reserve(lines, request_id=f"rush-{n}")
        except grpc.aio.AioRpcError as error:
            return error

    outcomes = await asyncio.gather(*(attempt(n) for n in range(300)))
    won = [o for o in outcomes if isinstance(o, res.Reservation)]
    lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(won) == available
    assert len(lost) == 300 - available
    for n, error in enumerate(lost):
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
        (short,) = failure_of(error).short_lines
        assert short.sku == "HOT"
        assert short.available_quantity == 0
        assert short.reason == SR.SHORTAGE_REASON_INSUFFICIENT_STOCK
        del n
    hot = await inv.level("HOT", "store-1")
    assert (hot.on_hand, hot.reserved, hot.available_to_promise) == (7, 5, 0)
    pair = await inv.level("PAIR", "store-1")
    assert pair.reserved == available  # losers held nothing on their other line
    report = await inv.stub.ReconcileStock(pb.ReconcileStockRequest(), metadata=inv.metadata)
    assert report.checked_level_count == 2
    assert report.discrepancy_count == 0

    # Releasing one lets exactly one more through.
    await inv.stub.ReleaseReservation(
        pb.ReleaseReservationRequest(
            request_id="free-1", reservation_id=won[0].reservation_id, reason="cancelled"
        ),
        metadata=inv.metadata,
    )
    second = await asyncio.gather(*(attempt(1000 + n) for n in range(50)))
    assert sum(isinstance(o, res.Reservation) for o in second) == 1
    assert (await inv.level("HOT", "store-1")).reserved == 5


async def test_reservations_decided_together_each_get_their_own_answer(
    inventory: Inventory,
) -> None:
    """Calls that arrive together share a transaction (group commit); each still gets the
    answer it would get alone: retries of one request id one reservation, a request id
    reused for another request REQUEST_ID_REUSED, a short or unknown line its own error,
    and every hold its ledger entry and event."""
    inv = inventory
    await inv.item("A")
    await inv.item("B")
    await inv.location("store-1")
    await inv.adjust("A", "store-1", 20)
    await inv.adjust("B", "store-1", 3)

    async def call(
        lines: list[tuple[str, str, int]], request_id: str
    ) -> res.Reservation | grpc.aio.AioRpcError:
        try:
            return await inv.reserve(lines, request_id=request_id)
        except grpc.aio.AioRpcError as error:
            return error

    calls = []
    for n in range(6):
        calls.append(call([("A", "store-1", 1)], "retried"))  # one request, sent six times
        calls.append(call([("A", "store-1", 2)] if n % 2 else [("A", "store-1", 3)], "reused"))
        calls.append(call([("A", "store-1", 1), ("B", "store-1", 1)], f"pair-{n}"))
    calls.append(call([("A", "store-1", 1), ("GHOST", "store-1", 1)], "ghost"))
    outcomes = await asyncio.gather(*calls)

    retried = outcomes[0:18:3]
    assert all(isinstance(o, res.Reservation) for o in retried), retried
    assert len({o.reservation_id for o in retried if isinstance(o, res.Reservation)}) == 1

    # "reused": whichever request came first holds the id; the other request is refused.
    reused = outcomes[1:18:3]
    won = [o for o in reused if isinstance(o, res.Reservation)]
    refused = [o for o in reused if isinstance(o, grpc.aio.AioRpcError)]
    assert len(won) == 3
    assert len({o.reservation_id for o in won}) == 1
    assert len(refused) == 3
    assert {error_info(e).reason for e in refused} == {"REQUEST_ID_REUSED"}
    reused_units = won[0].lines[0].quantity

    # Only three B units: three pairs are held in full, three hold nothing.
    pairs = outcomes[2:18:3]
    held_pairs = [o for o in pairs if isinstance(o, res.Reservation)]
    short_pairs = [o for o in pairs if isinstance(o, grpc.aio.AioRpcError)]
    assert len(held_pairs) == 3
    assert len(short_pairs) == 3
    for error in short_pairs:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert [(s.sku, s.available_quantity) for s in failure_of(error).short_lines] == [("B", 0)]

    ghost = outcomes[-1]
    assert isinstance(ghost, grpc.aio.AioRpcError)
    assert ghost.code() == grpc.StatusCode.NOT_FOUND

    a = await inv.level("A", "store-1")
    assert a.reserved == 1 + reused_units + 3
    assert (await inv.level("B", "store-1")).reserved == 3
    report = await inv.stub.ReconcileStock(pb.ReconcileStockRequest(), metadata=inv.metadata)
    assert report.discrepancy_count == 0

    # Every hold has its ledger entry (sequences without gaps) and its stock_changed event,
    # which names that entry.
    ledger = await inv.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(
            sku="A", location_id="store-1", types=[T.STOCK_CHANGE_TYPE_RESERVATION]
        ),
        metadata=inv.metadata,
    )
    entries = {e.entry_id: e for e in ledger.ledger_entries}
    assert sorted(e.sequence for e in entries.values()) == list(range(2, 2 + 5))
    assert sum(e.delta.reserved for e in entries.values()) == a.reserved

    async def all_published() -> bool:
        changed = await inv.events("inventory.stock_changed")
        return len(changed) == 2 + 5 + 3  # two receipts, five holds of A, three of B

    await eventually(all_published)
    for envelope in await inv.events("inventory.stock_changed"):
        event = ev.StockChangedEvent()
        envelope.payload.Unpack(event)
        if event.sku == "A" and event.ledger_entry.type == T.STOCK_CHANGE_TYPE_RESERVATION:
            stored = entries[event.ledger_entry.entry_id]
            assert stored.sequence == event.ledger_entry.sequence == event.stock_level.revision
            assert stored.balance == event.ledger_entry.balance
    created = await inv.events("inventory.reservation_created")
    assert len(created) == 5


async def test_reservation_events_carry_the_levels(inventory: Inventory) -> None:
    inv = inventory
    await inv.item("A")
    await inv.location("store-1")
    await inv.adjust("A", "store-1", 30)
    await inv.reserve([("A", "store-1", 4)])

    async def published() -> bool:
        return len(await inv.events("inventory.stock_changed")) == 2

    await eventually(published)
    last = ev.StockChangedEvent()
    (await inv.events("inventory.stock_changed"))[-1].payload.Unpack(last)
    assert last.previous_available_to_promise == 30
    assert last.stock_level.available_to_promise == 26
    assert last.ledger_entry.type == T.STOCK_CHANGE_TYPE_RESERVATION
    assert last.ledger_entry.delta.reserved == 4


async def test_several_sweepers_expire_each_reservation_once(
    inventory: Inventory, database_url: str
) -> None:
    """Replicas sweep at the same time: every due reservation expires exactly once."""
    from continuum_inventory.handlers import sweep_once
    from continuum_inventory.servicer import defaults_of
    from continuum_inventory.settings import InventorySettings
    from continuum_runtime.db import Database

    inv = inventory
    await inv.item("A")
    await inv.location("store-1")
    await inv.adjust("A", "store-1", 100)
    held = [
        await inv.reserve([("A", "store-1", 2)], ttl=duration_pb2.Duration(seconds=1))
        for _ in range(20)
    ]
    await asyncio.sleep(1.1)
    replicas = [Database(database_url) for _ in range(3)]
    defaults = defaults_of(InventorySettings())
    try:
        # Three "replicas" plus the service's own sweeper, all at once.
        await asyncio.gather(*(sweep_once(db, defaults, 50) for db in replicas))
    finally:
        for db in replicas:
            await db.dispose()

    async def all_expired() -> bool:
        listed = await inv.stub.ListReservations(
            pb.ListReservationsRequest(states=[RS.RESERVATION_STATE_EXPIRED]),
            metadata=inv.metadata,
        )
        return len(listed.reservations) == len(held)

    await eventually(all_expired)
    entries = await inv.stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(types=[T.STOCK_CHANGE_TYPE_RESERVATION_EXPIRY]),
        metadata=inv.metadata,
    )
    assert sorted(e.reservation_id for e in entries.ledger_entries) == sorted(
        r.reservation_id for r in held
    )
    level = await inv.level("A", "store-1")
    assert (level.reserved, level.available_to_promise) == (0, 100)
    report = await inv.stub.ReconcileStock(pb.ReconcileStockRequest(), metadata=inv.metadata)
    assert report.discrepancy_count == 0
