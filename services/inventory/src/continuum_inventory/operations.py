"""Stock mutations: adjustments, reservations (reserve, commit, release, expire) and the
signals they fire. Each function runs inside the caller's transaction; the events it
publishes go to the outbox in that same transaction.

Never over-promising: a reservation line is one conditional UPDATE of its level
(``available >= quantity`` checked by PostgreSQL on the row it locks, re-checked after a
concurrent writer commits), lines are taken in (sku, location_id) order, and any short
line rolls the whole transaction back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.inventory.v1 import inventory_events_pb2 as ev
from continuum.inventory.v1 import inventory_resources_pb2 as res
from continuum.inventory.v1 import inventory_service_pb2 as pb
from continuum_inventory import domain, mapping, store
from continuum_inventory.domain import SignalState
from continuum_inventory.store import Defaults, LedgerMeta, threshold_of
from continuum_runtime.errors import Aborted, FailedPrecondition, NotFound
from continuum_runtime.events import new_envelope

PRODUCER = "inventory"
T = res.StockChangeType
KIND = res.ReservationKind
RS = res.ReservationState
SR = res.ShortageReason
CHECKOUT = KIND.RESERVATION_KIND_CHECKOUT
CLICK_AND_COLLECT = KIND.RESERVATION_KIND_CLICK_AND_COLLECT


@dataclass
class Outbox:
    """Events of one transaction, written to the outbox in one statement at the end."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, event_type: str, subject: str, payload: Message, customer_id: str = "") -> None:
        envelope = new_envelope(
            producer=PRODUCER,
            event_type=event_type,
            subject=subject,
            payload=payload,
            customer_id=customer_id,
        )
        self.rows.append(
            {
                "event_id": uuid.UUID(envelope.id),
                "producer": PRODUCER,
                "event_type": event_type,
                "subject": subject,
                "envelope": envelope.SerializeToString(),
            }
        )

    async def flush(self, session: AsyncSession) -> None:
        if self.rows:
            await store.insert_events(session, self.rows)
            self.rows = []


def stock_subject(sku: str, location_id: str) -> str:
    return f"sku:{sku}@{location_id}"


def item_not_found(skus: Sequence[str]) -> NotFound:
    return NotFound(
        f"unknown SKU: {', '.join(skus)}",
        reason="ITEM_NOT_FOUND",
        metadata={"skus": ",".join(skus)},
    )


def location_not_found(location_id: str) -> NotFound:
    return NotFound(
        f"unknown location: {location_id}",
        reason="LOCATION_NOT_FOUND",
        metadata={"location_id": location_id},
    )


def local_day(at: datetime, time_zone: str | None) -> date:
    try:
        zone = ZoneInfo(time_zone) if time_zone else UTC
    except (ValueError, KeyError):
        zone = UTC
    return at.astimezone(zone).date()


def _signal_state(row: Any) -> SignalState:
    return SignalState(
        low_stock=row.low_stock,
        out_of_stock_since=row.out_of_stock_since,
        low_fired_at=row.low_fired_at,
        back_fired_at=row.back_fired_at,
        recheck_at=row.signal_recheck_at,
    )


async def _signals(
    session: AsyncSession,
    row: Any,
    level: res.StockLevel,
    defaults: Defaults,
    outbox: Outbox,
    now: datetime,
) -> None:
    """Evaluate a changed level's signals; publish what fires; store the new state."""
    rule = threshold_of(row, defaults)
    before = _signal_state(row)
    outcome = domain.evaluate_signals(level.available_to_promise, before, rule, now, row.item_state)
    level.low_stock = outcome.state.low_stock
    subject = stock_subject(row.sku, row.location_id)
    detect = mapping.ts(now)
    if outcome.fire_low:
        outbox.add(
            "inventory.low_stock",
            subject,
            ev.LowStockEvent(
                sku=row.sku,
                location_id=row.location_id,
                available_to_promise=level.available_to_promise,
                threshold=mapping.threshold_message(rule),
                stock_level=level,
                detect_time=detect,
            ),
        )
    if outcome.fire_back:
        outbox.add(
            "inventory.back_in_stock",
            subject,
            ev.BackInStockEvent(
                sku=row.sku,
                location_id=row.location_id,
                available_to_promise=level.available_to_promise,
                pickup_available=level.pickup_available,
                product_id=row.product_id,
                name=row.item_name,
                out_of_stock_time=mapping.ts(outcome.out_of_stock_since),
                detect_time=detect,
            ),
        )
    if outcome.state != before:
        await store.save_signals(session, row.sku, row.location_id, outcome.state)


def _changed_level(row: Any, defaults: Defaults) -> res.StockLevel:
    return mapping.level_message(
        row,
        threshold_of(row, defaults),
        pickup_capable=row.pickup_capable and row.loc_type == domain.STORE,
        location_active=row.loc_state == domain.LOCATION_ACTIVE,
        buffer=row.pickup_buffer,
    )


async def after_change(
    session: AsyncSession, row: Any, meta: LedgerMeta, defaults: Defaults, outbox: Outbox
) -> tuple[res.StockLevel, res.LedgerEntry]:
    """The level and ledger entry a change_level row describes; publishes stock_changed and
    whatever signals fire."""
    level = _changed_level(row, defaults)
    entry = res.LedgerEntry(
        entry_id=str(row.entry_id),
        sequence=row.revision,
        sku=row.sku,
        location_id=row.location_id,
        type=meta.type,  # type: ignore[arg-type]
        delta=res.StockCounts(
            on_hand=row.d_on_hand,
            reserved=row.d_reserved,
            safety_stock=row.d_safety_stock,
            incoming=row.d_incoming,
        ),
        balance=res.StockCounts(
            on_hand=row.on_hand,
            reserved=row.reserved,
            safety_stock=row.safety_stock,
            incoming=row.incoming,
        ),
        reason=meta.reason,
        note=meta.note,
        request_id=meta.request_id,
        reservation_id=meta.reservation_id,
        reference=meta.reference,
        actor=meta.actor,
    )
    entry.create_time.FromDatetime(row.entry_time)
    previous = domain.available_to_promise(
        row.on_hand - row.d_on_hand,
        row.reserved - row.d_reserved,
        row.safety_stock - row.d_safety_stock,
    )
    await _signals(session, row, level, defaults, outbox, row.update_time)
    outbox.add(
        "inventory.stock_changed",
        stock_subject(row.sku, row.location_id),
        ev.StockChangedEvent(
            sku=row.sku,
            location_id=row.location_id,
            ledger_entry=entry,
            stock_level=level,
            previous_available_to_promise=previous,
        ),
    )
    return level, entry


# --- AdjustStock -------------------------------------------------------------------------


async def adjust(
    session: AsyncSession, request: pb.AdjustStockRequest, defaults: Defaults
) -> pb.AdjustStockResponse:
    item = await store.get_item(session, request.sku)
    location = await store.get_location(session, request.location_id)
    if item is None:
        raise item_not_found([request.sku])
    if location is None:
        raise location_not_found(request.location_id)
    level = await store.lock_level(session, request.sku, request.location_id)
    if request.expected_revision and request.expected_revision != level.revision:
        raise Aborted(
            "the stock level changed since it was read",
            reason="REVISION_MISMATCH",
            metadata={"revision": str(level.revision)},
        )
    kind = request.type
    absolute = request.WhichOneof("change") == "set_quantity"
    deltas = {"on_hand": 0, "reserved": 0, "safety_stock": 0, "incoming": 0}
    if kind in (T.STOCK_CHANGE_TYPE_INCOMING, T.STOCK_CHANGE_TYPE_SAFETY_STOCK):
        quantity = "incoming" if kind == T.STOCK_CHANGE_TYPE_INCOMING else "safety_stock"
    else:
        quantity = "on_hand"
    current = getattr(level, quantity)
    deltas[quantity] = request.set_quantity - current if absolute else request.delta
    if kind == T.STOCK_CHANGE_TYPE_RECEIPT:
        deltas["incoming"] = -min(level.incoming, request.delta)
    for name, change in deltas.items():
        if getattr(level, name) + change < 0:
            raise FailedPrecondition(
                f"{name} would go below zero ({getattr(level, name)} {change:+d})",
                reason="NEGATIVE_STOCK",
                metadata={"field": name, "current": str(getattr(level, name))},
            )
    extra = ""
    params: dict[str, Any] = {}
    if kind == T.STOCK_CHANGE_TYPE_INCOMING:
        if level.incoming + deltas["incoming"] == 0:
            extra = "next_incoming_time = NULL"
        elif request.HasField("next_incoming_time"):
            extra = "next_incoming_time = :nit"
            params["nit"] = request.next_incoming_time.ToDatetime(tzinfo=UTC)
    elif kind == T.STOCK_CHANGE_TYPE_RECEIPT and level.incoming + deltas["incoming"] == 0:
        extra = "next_incoming_time = NULL"
    meta = LedgerMeta(
        type=kind,
        reason=request.reason,
        request_id=request.request_id,
        note=request.note,
        reference=request.reference,
        actor=request.actor,
    )
    outbox = Outbox()
    row = await store.change_level(
        session,
        request.sku,
        request.location_id,
        on_hand=deltas["on_hand"],
        reserved=deltas["reserved"],
        safety_stock=deltas["safety_stock"],
        incoming=deltas["incoming"],
        extra_sets=extra,
        params=params,
        meta=meta,
        default_buffer=defaults.pickup_buffer,
    )
    assert row is not None  # the level is locked and exists, the item and location too
    stock_level, entry = await after_change(session, row, meta, defaults, outbox)
    if kind == T.STOCK_CHANGE_TYPE_SALE:
        await store.add_demand(
            session,
            request.sku,
            request.location_id,
            local_day(row.update_time, row.time_zone),
            -request.delta,
        )
    await outbox.flush(session)
    return pb.AdjustStockResponse(stock_level=stock_level, ledger_entry=entry)


# --- reservations ------------------------------------------------------------------------

_RESERVE_CONDITION = (
    "i.state <> 2 AND l.state = 1 AND (:kind = 1 OR (l.pickup_capable AND l.type = 2)) "
    "AND s.on_hand - s.reserved - s.safety_stock - "
    "CASE WHEN :kind = 2 THEN COALESCE(l.pickup_buffer, :dbuf) ELSE 0 END >= :q"
)


@dataclass(frozen=True)
class Line:
    index: int
    sku: str
    location_id: str  # "" when no ship-from location could be chosen
    requested_location: str
    quantity: int


async def _shortage(
    session: AsyncSession,
    kind: int,
    lines: Sequence[Line],
    done: set[int],
    defaults: Defaults,
) -> Exception:
    """Why the reservation failed: NOT_FOUND for unknown keys, else every short line."""
    diagnosis = await store.diagnose_lines(
        session, [(line.sku, line.location_id) for line in lines], defaults.pickup_buffer
    )
    unknown_skus = [line.sku for line, d in zip(lines, diagnosis, strict=True) if not d.item_exists]
    if unknown_skus:
        return item_not_found(list(dict.fromkeys(unknown_skus)))
    for line, d in zip(lines, diagnosis, strict=True):
        if line.location_id and not d.loc_exists:
            return location_not_found(line.location_id)
    short: list[res.ShortLine] = []
    for line, d in zip(lines, diagnosis, strict=True):
        if line.index in done:
            continue
        available = 0
        if d.stocked:
            available = domain.available_to_promise(d.on_hand, d.reserved, d.safety_stock)
            if kind == CLICK_AND_COLLECT:
                available = max(0, available - d.pickup_buffer)
        reason = SR.SHORTAGE_REASON_INSUFFICIENT_STOCK
        if not line.location_id:
            reason = SR.SHORTAGE_REASON_NO_SHIP_FROM_LOCATION
            available = 0  # filled in by _fill_best
        elif d.item_state == domain.ITEM_INACTIVE:
            reason = SR.SHORTAGE_REASON_ITEM_NOT_SELLABLE
        elif d.loc_state == domain.LOCATION_CLOSED:
            reason = SR.SHORTAGE_REASON_LOCATION_CLOSED
        elif kind == CLICK_AND_COLLECT and not (d.pickup_capable and d.loc_type == domain.STORE):
            reason = SR.SHORTAGE_REASON_NOT_PICKUP_CAPABLE
            available = 0
        elif not d.stocked:
            reason = SR.SHORTAGE_REASON_NOT_STOCKED
        elif available >= line.quantity:
            continue  # enough now: this line was not the problem
        short.append(
            res.ShortLine(
                index=line.index,
                sku=line.sku,
                location_id=line.requested_location,
                requested_quantity=line.quantity,
                available_quantity=available,
                reason=reason,
            )
        )
    return FailedPrecondition(
        "not enough stock for "
        + ", ".join(f"lines[{s.index}] ({s.sku})" for s in short or [])
        + ("" if short else "the request"),
        reason="INSUFFICIENT_STOCK",
        metadata={"short_lines": ",".join(str(s.index) for s in short)},
        details=[res.ReservationFailure(short_lines=short)],
    )


async def reserve(
    session: AsyncSession,
    request: pb.ReserveStockRequest,
    defaults: Defaults,
    ttl_s: float,
) -> res.Reservation:
    reservation_id = str(uuid.uuid4())
    lines: list[Line] = []
    best: dict[int, int] = {}
    for index, wanted in enumerate(request.lines):
        location_id = wanted.location_id
        if not location_id:
            chosen, most = await store.choose_ship_from(session, wanted.sku, wanted.quantity)
            best[index] = most
            location_id = chosen or ""
        lines.append(Line(index, wanted.sku, location_id, wanted.location_id, wanted.quantity))
    meta = LedgerMeta(
        type=T.STOCK_CHANGE_TYPE_RESERVATION,
        reason="reservation",
        request_id=request.request_id,
        reservation_id=reservation_id,
        reference=request.reference,
        actor=request.actor,
    )
    outbox = Outbox()
    done: set[int] = set()
    rows: list[Any] = []
    # The reservation row first: the level rows' locks are then held for as short a time
    # as possible (a failure rolls the row back with everything else).
    stored = await store.insert_reservation(
        session,
        {
            "reservation_id": reservation_id,
            "kind": request.kind,
            "skus": [line.sku for line in lines],
            "location_ids": [line.location_id for line in lines],
            "quantities": [line.quantity for line in lines],
            "reference": request.reference,
            "customer_id": request.customer_id,
            "request_id": request.request_id,
            "ttl": ttl_s,
        },
    )
    for line in sorted(lines, key=lambda x: (x.sku, x.location_id)):
        row = None
        if line.location_id:
            row = await store.change_level(
                session,
                line.sku,
                line.location_id,
                reserved=line.quantity,
                condition=_RESERVE_CONDITION,
                params={"q": line.quantity, "kind": request.kind},
                meta=meta,
                default_buffer=defaults.pickup_buffer,
            )
        if row is None:
            error = await _shortage(session, request.kind, lines, done, defaults)
            if isinstance(error, FailedPrecondition):
                _fill_best(error, best)
            raise error
        done.add(line.index)
        rows.append(row)
    for row in rows:
        await after_change(session, row, meta, defaults, outbox)
    reservation = mapping.reservation_message(stored)
    outbox.add(
        "inventory.reservation_created",
        f"reservation:{reservation_id}",
        ev.ReservationCreatedEvent(reservation=reservation),
        customer_id=request.customer_id,
    )
    await outbox.flush(session)
    return reservation


def _fill_best(error: FailedPrecondition, best: dict[int, int]) -> None:
    """For lines without a location: the most any single ship-from location had."""
    for detail in error.details:
        if isinstance(detail, res.ReservationFailure):
            for short in detail.short_lines:
                if short.reason == SR.SHORTAGE_REASON_NO_SHIP_FROM_LOCATION:
                    short.available_quantity = best.get(short.index, 0)


async def _load_active(session: AsyncSession, reservation_id: str) -> Any:
    row = await store.get_reservation(session, reservation_id, lock=True)
    if row is None:
        raise NotFound(
            f"unknown reservation: {reservation_id}",
            reason="RESERVATION_NOT_FOUND",
            metadata={"reservation_id": reservation_id},
        )
    return row


def _not_active(row: Any) -> FailedPrecondition:
    reasons = {
        RS.RESERVATION_STATE_RELEASED: "RESERVATION_RELEASED",
        RS.RESERVATION_STATE_EXPIRED: "RESERVATION_EXPIRED",
        RS.RESERVATION_STATE_COMMITTED: "RESERVATION_COMMITTED",
    }
    reason = reasons.get(row.state, "RESERVATION_EXPIRED")
    return FailedPrecondition(
        f"reservation {row.reservation_id} is no longer active ({reason.lower()})",
        reason=reason,
        metadata={"reservation_id": row.reservation_id},
    )


def _sorted_lines(row: Any) -> list[tuple[str, str, int]]:
    return sorted(zip(row.skus, row.location_ids, row.quantities, strict=True))


async def commit(
    session: AsyncSession, request: pb.CommitReservationRequest, defaults: Defaults
) -> res.Reservation:
    row = await _load_active(session, request.reservation_id)
    if row.state == RS.RESERVATION_STATE_COMMITTED:
        return mapping.reservation_message(row)
    if row.state != RS.RESERVATION_STATE_ACTIVE or row.due:
        raise _not_active(row)
    meta = LedgerMeta(
        type=T.STOCK_CHANGE_TYPE_RESERVATION_COMMIT,
        reason="fulfilled",
        request_id=request.request_id,
        reservation_id=row.reservation_id,
        reference=request.reference or row.reference,
        actor=request.actor,
    )
    outbox = Outbox()
    for sku, location_id, quantity in _sorted_lines(row):
        changed = await store.change_level(
            session,
            sku,
            location_id,
            on_hand=-quantity,
            reserved=-quantity,
            condition="s.on_hand >= :q AND s.reserved >= :q",
            params={"q": quantity},
            meta=meta,
            default_buffer=defaults.pickup_buffer,
        )
        if changed is None:
            raise FailedPrecondition(
                f"on hand no longer covers {sku} at {location_id}: receive stock or release",
                reason="RESERVED_SHORTFALL",
                metadata={"sku": sku, "location_id": location_id},
            )
        await after_change(session, changed, meta, defaults, outbox)
    finished = await store.finish_reservation(
        session, row.reservation_id, RS.RESERVATION_STATE_COMMITTED, ""
    )
    reservation = mapping.reservation_message(finished)
    outbox.add(
        "inventory.reservation_committed",
        f"reservation:{row.reservation_id}",
        ev.ReservationCommittedEvent(reservation=reservation),
        customer_id=row.customer_id,
    )
    await outbox.flush(session)
    return reservation


async def _release_lines(
    session: AsyncSession, row: Any, meta: LedgerMeta, defaults: Defaults, outbox: Outbox
) -> None:
    for sku, location_id, quantity in _sorted_lines(row):
        changed = await store.change_level(
            session,
            sku,
            location_id,
            reserved=-quantity,
            condition="s.reserved >= :q",
            params={"q": quantity},
            meta=meta,
            default_buffer=defaults.pickup_buffer,
        )
        if changed is None:
            raise Aborted(
                f"reserved units of {sku} at {location_id} do not match the reservation",
                reason="RESERVED_MISMATCH",
                metadata={"sku": sku, "location_id": location_id},
            )
        await after_change(session, changed, meta, defaults, outbox)


async def release(
    session: AsyncSession, request: pb.ReleaseReservationRequest, defaults: Defaults
) -> res.Reservation:
    row = await _load_active(session, request.reservation_id)
    if row.state in (RS.RESERVATION_STATE_RELEASED, RS.RESERVATION_STATE_EXPIRED):
        return mapping.reservation_message(row)
    if row.state == RS.RESERVATION_STATE_COMMITTED:
        raise _not_active(row)
    meta = LedgerMeta(
        type=T.STOCK_CHANGE_TYPE_RESERVATION_RELEASE,
        reason=request.reason,
        request_id=request.request_id,
        reservation_id=row.reservation_id,
        reference=row.reference,
        actor=request.actor,
    )
    outbox = Outbox()
    await _release_lines(session, row, meta, defaults, outbox)
    finished = await store.finish_reservation(
        session, row.reservation_id, RS.RESERVATION_STATE_RELEASED, request.reason
    )
    reservation = mapping.reservation_message(finished)
    outbox.add(
        "inventory.reservation_released",
        f"reservation:{row.reservation_id}",
        ev.ReservationReleasedEvent(reservation=reservation),
        customer_id=row.customer_id,
    )
    await outbox.flush(session)
    return reservation


async def expire(session: AsyncSession, reservation_id: str, defaults: Defaults) -> bool:
    """Release one due reservation as EXPIRED; False if another replica holds it or it is
    no longer due (exactly once, whoever sweeps)."""
    row = await store.get_reservation(session, reservation_id, lock=True, skip_locked=True)
    if row is None or row.state != RS.RESERVATION_STATE_ACTIVE or not row.due:
        return False
    meta = LedgerMeta(
        type=T.STOCK_CHANGE_TYPE_RESERVATION_EXPIRY,
        reason="ttl_expired",
        request_id=f"expiry:{reservation_id}",
        reservation_id=reservation_id,
        reference=row.reference,
        actor="sweeper",
    )
    outbox = Outbox()
    await _release_lines(session, row, meta, defaults, outbox)
    finished = await store.finish_reservation(
        session, reservation_id, RS.RESERVATION_STATE_EXPIRED, "ttl_expired"
    )
    outbox.add(
        "inventory.reservation_expired",
        f"reservation:{reservation_id}",
        ev.ReservationExpiredEvent(reservation=mapping.reservation_message(finished)),
        customer_id=row.customer_id,
    )
    await outbox.flush(session)
    return True


async def recheck_signals(session: AsyncSession, defaults: Defaults, limit: int) -> int:
    """Re-evaluate levels whose signal cooldown ended while a change waited."""
    rows = await store.recheck_due(session, limit, defaults.pickup_buffer)
    outbox = Outbox()
    for row in rows:
        level = _changed_level(row, defaults)
        now = datetime.now(UTC)
        await _signals(session, row, level, defaults, outbox, now)
    await outbox.flush(session)
    return len(rows)
