"""Stock mutations: adjustments, reservations (reserve, commit, release, expire) and the
signals they fire. Each function runs inside the caller's transaction; the events it
publishes go to the outbox in that same transaction.

Never over-promising: reservations are decided in batches (:func:`reserve_many`, group
commit). A batch first locks every level it touches (FOR UPDATE, in (sku, location_id)
order, like every other writer), so no other transaction can change those levels until it
commits; it then decides its calls one after the other against its own running counts,
each reservation all or nothing, and writes the outcome in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.inventory.v1 import inventory_events_pb2 as ev
from continuum.inventory.v1 import inventory_resources_pb2 as res
from continuum.inventory.v1 import inventory_service_pb2 as pb
from continuum_inventory import domain, mapping, store
from continuum_inventory.domain import SignalState, Threshold
from continuum_inventory.store import Defaults, LedgerMeta, threshold_of
from continuum_runtime import idempotency
from continuum_runtime.db import DriverSession, Executor
from continuum_runtime.errors import Aborted, DomainError, FailedPrecondition, NotFound
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


def _signal_events(
    row: Any,
    level: res.StockLevel,
    rule: Threshold,
    outcome: domain.SignalOutcome,
    outbox: Outbox,
    now: datetime,
) -> None:
    """Publish the signals that fired for a changed level."""
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


def _evaluate(
    row: Any, level: res.StockLevel, defaults: Defaults, now: datetime
) -> tuple[Threshold, domain.SignalOutcome]:
    """The rule in force and what a level's change does to its signals (``level`` shows
    the new low_stock flag)."""
    rule = threshold_of(row, defaults)
    outcome = domain.evaluate_signals(
        level.available_to_promise, _signal_state(row), rule, now, row.item_state
    )
    level.low_stock = outcome.state.low_stock
    return rule, outcome


async def _signals(
    session: AsyncSession,
    row: Any,
    level: res.StockLevel,
    defaults: Defaults,
    outbox: Outbox,
    now: datetime,
) -> None:
    """Evaluate a changed level's signals; publish what fires; store the new state."""
    rule, outcome = _evaluate(row, level, defaults, now)
    _signal_events(row, level, rule, outcome, outbox, now)
    if outcome.state != _signal_state(row):
        await store.save_signals(session, row.sku, row.location_id, outcome.state)


def _changed_level(row: Any, defaults: Defaults) -> res.StockLevel:
    return mapping.level_message(
        row,
        threshold_of(row, defaults),
        pickup_capable=row.pickup_capable and row.loc_type == domain.STORE,
        location_active=row.loc_state == domain.LOCATION_ACTIVE,
        buffer=row.pickup_buffer,
    )


def _entry_message(row: Any, meta: LedgerMeta) -> res.LedgerEntry:
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
    return entry


def _stock_changed(row: Any, level: res.StockLevel, entry: res.LedgerEntry, outbox: Outbox) -> None:
    previous = domain.available_to_promise(
        row.on_hand - row.d_on_hand,
        row.reserved - row.d_reserved,
        row.safety_stock - row.d_safety_stock,
    )
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


async def after_change(
    session: AsyncSession, row: Any, meta: LedgerMeta, defaults: Defaults, outbox: Outbox
) -> tuple[res.StockLevel, res.LedgerEntry]:
    """The level and ledger entry a change_level row describes; publishes stock_changed and
    whatever signals fire."""
    level = _changed_level(row, defaults)
    entry = _entry_message(row, meta)
    await _signals(session, row, level, defaults, outbox, row.update_time)
    _stock_changed(row, level, entry, outbox)
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


@dataclass(frozen=True)
class Line:
    index: int
    sku: str
    location_id: str  # "" when no ship-from location could be chosen
    requested_location: str
    quantity: int


def _shortage_of(
    kind: int, lines: Sequence[Line], diagnosis: Sequence[Any], done: set[int]
) -> DomainError:
    """Why a reservation failed, from what each line's (sku, location) has now (the rows
    of store.diagnose_lines): NOT_FOUND for unknown keys, else every short line."""
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


METHOD = "ReserveStock"


@dataclass(frozen=True)
class ReserveCall:
    """One ReserveStock call of a batch, with its hold time."""

    request: pb.ReserveStockRequest
    ttl_s: float


@dataclass
class _Held:
    """A level a reservation batch has locked, as the batch changes it."""

    row: dict[str, Any]  # store.lock_levels columns, before the batch
    reserved: int
    revision: int
    signals: SignalState

    @classmethod
    def of(cls, row: dict[str, Any]) -> _Held:
        return cls(row, row["reserved"], row["revision"], _signal_state(SimpleNamespace(**row)))

    def atp(self) -> int:
        return domain.available_to_promise(
            self.row["on_hand"], self.reserved, self.row["safety_stock"]
        )

    def diagnosis(self) -> SimpleNamespace:
        """What store.diagnose_lines would read for this level now."""
        r = self.row
        return SimpleNamespace(
            item_exists=True,
            item_state=r["item_state"],
            loc_exists=True,
            loc_state=r["loc_state"],
            loc_type=r["loc_type"],
            pickup_capable=r["pickup_capable"],
            pickup_buffer=r["pickup_buffer"],
            stocked=True,
            on_hand=r["on_hand"],
            reserved=self.reserved,
            safety_stock=r["safety_stock"],
        )


@dataclass
class _Change:
    """One reservation line applied to a level: the change_level-shaped row (entry_id
    filled in once written), its level message and what its signals did."""

    row: SimpleNamespace
    level: res.StockLevel
    rule: Threshold
    outcome: domain.SignalOutcome


@dataclass
class _Partial:
    """A reservation that could not hold every line: the holds it took before the line
    that could not be held (``undo`` gives them back)."""

    taken: list[tuple[_Held, Line, int, int]]  # level, line, reserved, revision after

    def done(self) -> set[int]:
        return {line.index for _, line, _, _ in self.taken}

    def undo(self) -> None:
        for level, line, _, _ in reversed(self.taken):
            level.reserved -= line.quantity
            level.revision -= 1


@dataclass
class _Reserved:
    call: ReserveCall
    reservation: res.Reservation
    meta: LedgerMeta
    new: store.NewReservation
    changes: list[_Change]


async def _plan_lines(
    session: Executor, request: pb.ReserveStockRequest
) -> tuple[list[Line], dict[int, int]]:
    """The request's lines, a ship-from location chosen for those without one; and for
    those, the most any single ship-from location has."""
    lines: list[Line] = []
    best: dict[int, int] = {}
    for index, wanted in enumerate(request.lines):
        location_id = wanted.location_id
        if not location_id:
            chosen, most = await store.choose_ship_from(session, wanted.sku, wanted.quantity)
            best[index] = most
            location_id = chosen or ""
        lines.append(Line(index, wanted.sku, location_id, wanted.location_id, wanted.quantity))
    return lines, best


async def _refusal(
    session: Executor,
    kind: int,
    lines: Sequence[Line],
    held: dict[tuple[str, str], _Held],
    done: set[int],
    best: dict[int, int],
    default_buffer: int,
) -> DomainError:
    """The error of a reservation that cannot be held, from the batch's view of the levels
    it holds and the database's view of the keys it does not (unknown or unstocked)."""
    keys = [(line.sku, line.location_id) for line in lines]
    missing = [k for k in keys if k not in held]
    read: dict[tuple[str, str], Any] = {}
    if missing:
        found = await store.diagnose_lines(session, missing, default_buffer)
        read = dict(zip(missing, found, strict=True))
    diagnosis = [held[k].diagnosis() if k in held else read[k] for k in keys]
    error = _shortage_of(kind, lines, diagnosis, done)
    if isinstance(error, FailedPrecondition):
        _fill_best(error, best)
    return error


def _try_reserve(
    call: ReserveCall,
    lines: Sequence[Line],
    held: dict[tuple[str, str], _Held],
    locked: store.Locked | None,
    defaults: Defaults,
) -> _Reserved | _Partial:
    """Hold every line of one reservation on the batch's levels. Returns the reservation
    (levels changed, signals evaluated in order), or else the holds taken before a line
    could not be held, for the caller to explain the refusal and then undo."""
    request = call.request
    click_and_collect = request.kind == CLICK_AND_COLLECT
    taken: list[tuple[_Held, Line, int, int]] = []  # level, line, reserved, revision after
    for line in sorted(lines, key=lambda x: (x.sku, x.location_id)):
        level = held.get((line.sku, line.location_id)) if line.location_id else None
        if level is None or not domain.reservable(
            line.quantity,
            click_and_collect=click_and_collect,
            atp=level.atp(),
            item_state=level.row["item_state"],
            location_state=level.row["loc_state"],
            location_type=level.row["loc_type"],
            pickup_capable=level.row["pickup_capable"],
            pickup_buffer=level.row["pickup_buffer"],
        ):
            return _Partial(taken)
        level.reserved += line.quantity
        level.revision += 1
        taken.append((level, line, level.reserved, level.revision))
    assert locked is not None  # a line was held, so its level was locked
    now = locked.now
    reservation_id = str(uuid.uuid4())
    meta = LedgerMeta(
        type=T.STOCK_CHANGE_TYPE_RESERVATION,
        reason="reservation",
        request_id=request.request_id,
        reservation_id=reservation_id,
        reference=request.reference,
        actor=request.actor,
    )
    changes: list[_Change] = []
    for level, line, reserved, revision in taken:
        row = SimpleNamespace(
            **{
                **level.row,
                "reserved": reserved,
                "revision": revision,
                "low_stock": level.signals.low_stock,
                "out_of_stock_since": level.signals.out_of_stock_since,
                "low_fired_at": level.signals.low_fired_at,
                "back_fired_at": level.signals.back_fired_at,
                "signal_recheck_at": level.signals.recheck_at,
                "update_time": now,
                "entry_id": next(locked.entry_ids),
                "entry_time": now,
                "d_on_hand": 0,
                "d_reserved": line.quantity,
                "d_safety_stock": 0,
                "d_incoming": 0,
            }
        )
        message = _changed_level(row, defaults)
        rule, outcome = _evaluate(row, message, defaults, now)
        level.signals = outcome.state
        changes.append(_Change(row, message, rule, outcome))
    new = store.NewReservation(
        reservation_id=reservation_id,
        kind=request.kind,
        lines=[(line.sku, line.location_id, line.quantity) for line in lines],
        reference=request.reference,
        customer_id=request.customer_id,
        request_id=request.request_id,
        expire_time=now + timedelta(seconds=call.ttl_s),
    )
    reservation = mapping.reservation_message(
        SimpleNamespace(
            reservation_id=reservation_id,
            kind=request.kind,
            state=RS.RESERVATION_STATE_ACTIVE,
            skus=[x[0] for x in new.lines],
            location_ids=[x[1] for x in new.lines],
            quantities=[x[2] for x in new.lines],
            reference=request.reference,
            customer_id=request.customer_id,
            request_id=request.request_id,
            release_reason="",
            create_time=now,
            expire_time=new.expire_time,
            commit_time=None,
            release_time=None,
        )
    )
    return _Reserved(call, reservation, meta, new, changes)


async def reserve_many(
    session: DriverSession, calls: Sequence[ReserveCall], defaults: Defaults
) -> list[pb.ReserveStockResponse | DomainError]:
    """ReserveStock for a batch of calls in the caller's one transaction (group commit:
    each level locked once for the whole batch, one write, one commit).

    Every level the batch touches is locked first, in the writers' lock order; the calls
    are then decided in arrival order against the batch's running counts, each all or
    nothing (a reservation that cannot be held in full holds nothing, and the next call
    is decided as if it had never come). A request id answered before, or earlier in this
    batch, gets that answer again: the request log is read once the levels are locked, so
    a retry of the same request (the same levels) in another transaction waits for this
    one and then finds its answer. A request with a line without a location chooses that
    location by reading, so for those the request id's own lock is taken first.
    """
    requests = [c.request for c in calls]
    unlocated = [r.request_id for r in requests if any(not x.location_id for x in r.lines)]
    if unlocated:
        await idempotency.lock_many(session, METHOD, unlocated)
    plans = [await _plan_lines(session, request) for request in requests]
    pairs = sorted({(x.sku, x.location_id) for lines, _ in plans for x in lines if x.location_id})
    locked = None
    if pairs:
        wanted_ids = sum(len(lines) for lines, _ in plans)
        locked = await store.lock_levels(session, pairs, defaults.pickup_buffer, wanted_ids)
    held = {(r["sku"], r["location_id"]): _Held.of(r) for r in locked.levels} if locked else {}
    outcomes: list[pb.ReserveStockResponse | DomainError | None] = list(
        await idempotency.earlier_many(session, METHOD, requests, pb.ReserveStockResponse)
    )
    reserved: list[tuple[int, _Reserved]] = []
    first_of: dict[str, int] = {}  # request id -> the call of this batch that holds it
    duplicates: list[int] = []
    for n, (lines, best) in enumerate(plans):
        if outcomes[n] is not None:
            continue
        request = requests[n]
        first = first_of.get(request.request_id)
        if first is not None:
            if idempotency.fingerprint(request) != idempotency.fingerprint(requests[first]):
                outcomes[n] = idempotency.reused(request.request_id)
            else:
                duplicates.append(n)
            continue
        attempt = _try_reserve(calls[n], lines, held, locked, defaults)
        if isinstance(attempt, _Reserved):
            first_of[request.request_id] = n
            reserved.append((n, attempt))
        else:
            # Explained with this reservation's earlier lines still held (as one line
            # after another would see them), then given back.
            outcomes[n] = await _refusal(
                session, request.kind, lines, held, attempt.done(), best, defaults.pickup_buffer
            )
            attempt.undo()
    if reserved:
        await _write(session, reserved, held, outcomes)
    for n in duplicates:
        outcomes[n] = outcomes[first_of[requests[n].request_id]]
    answers: list[pb.ReserveStockResponse | DomainError] = []
    for outcome in outcomes:
        assert outcome is not None  # every call was replayed, refused or reserved
        answers.append(outcome)
    return answers


async def _write(
    session: DriverSession,
    reserved: Sequence[tuple[int, _Reserved]],
    held: dict[tuple[str, str], _Held],
    outcomes: list[pb.ReserveStockResponse | DomainError | None],
) -> None:
    """Write a batch's levels, reservations, ledger entries, events and answers in one
    statement; fill in each reserved call's answer."""
    touched = {(c.row.sku, c.row.location_id) for _, r in reserved for c in r.changes}
    writes = [
        store.LevelWrite(k[0], k[1], held[k].reserved, held[k].revision, held[k].signals)
        for k in sorted(touched)
    ]
    entries: list[store.ReserveEntry] = []
    outbox = Outbox()
    answered: list[tuple[Message, Message]] = []
    for n, r in reserved:
        for c in r.changes:
            row = c.row
            entries.append(
                store.ReserveEntry(
                    entry_id=row.entry_id,
                    sku=row.sku,
                    location_id=row.location_id,
                    sequence=row.revision,
                    quantity=row.d_reserved,
                    on_hand=row.on_hand,
                    reserved=row.reserved,
                    safety_stock=row.safety_stock,
                    incoming=row.incoming,
                    meta=r.meta,
                )
            )
            _signal_events(row, c.level, c.rule, c.outcome, outbox, row.update_time)
            _stock_changed(row, c.level, _entry_message(row, r.meta), outbox)
        outbox.add(
            "inventory.reservation_created",
            f"reservation:{r.new.reservation_id}",
            ev.ReservationCreatedEvent(reservation=r.reservation),
            customer_id=r.call.request.customer_id,
        )
        response = pb.ReserveStockResponse(reservation=r.reservation)
        outcomes[n] = response
        answered.append((r.call.request, response))
    await store.apply_reservations(
        session,
        writes,
        [r.new for _, r in reserved],
        entries,
        outbox.rows,
        idempotency.remember_values(METHOD, answered),
    )


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
