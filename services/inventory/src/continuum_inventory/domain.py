"""Stock arithmetic and signals: plain typed Python, no database.

available_to_promise = max(0, on_hand - reserved - safety_stock)
pickup_available     = max(0, available_to_promise - pickup_buffer) at pickup-capable,
                       active stores; 0 elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from continuum.inventory.v1 import inventory_resources_pb2 as res

STATUS = res.AvailabilityStatus
IN_STOCK = STATUS.AVAILABILITY_STATUS_IN_STOCK
LOW_STOCK = STATUS.AVAILABILITY_STATUS_LOW_STOCK
OUT_OF_STOCK = STATUS.AVAILABILITY_STATUS_OUT_OF_STOCK
NOT_STOCKED = STATUS.AVAILABILITY_STATUS_NOT_STOCKED

ITEM_ACTIVE = res.ItemState.ITEM_STATE_ACTIVE
ITEM_INACTIVE = res.ItemState.ITEM_STATE_INACTIVE
LOCATION_ACTIVE = res.LocationState.LOCATION_STATE_ACTIVE
LOCATION_CLOSED = res.LocationState.LOCATION_STATE_CLOSED
WAREHOUSE = res.LocationType.LOCATION_TYPE_WAREHOUSE
STORE = res.LocationType.LOCATION_TYPE_STORE

EARTH_RADIUS_KM = 6371.0088


def available_to_promise(on_hand: int, reserved: int, safety_stock: int) -> int:
    return max(0, on_hand - reserved - safety_stock)


def pickup_available(atp: int, pickup_capable: bool, active: bool, buffer: int) -> int:
    return max(0, atp - buffer) if pickup_capable and active else 0


def reservable(
    quantity: int,
    *,
    click_and_collect: bool,
    atp: int,
    item_state: int,
    location_state: int,
    location_type: int,
    pickup_capable: bool,
    pickup_buffer: int,
) -> bool:
    """Whether a reservation line of ``quantity`` can be held at a level now: a sellable
    item at an active location (for click-and-collect, a pickup-capable store, keeping its
    pickup buffer back) with that much available to promise."""
    if item_state == ITEM_INACTIVE or location_state != LOCATION_ACTIVE:
        return False
    if click_and_collect:
        if not (pickup_capable and location_type == STORE):
            return False
        atp -= pickup_buffer
    return atp >= quantity


def status_of(
    atp: int, low_threshold: int, stocked: bool = True
) -> res.AvailabilityStatus.ValueType:
    if not stocked:
        return NOT_STOCKED
    if atp <= 0:
        return OUT_OF_STOCK
    if atp <= low_threshold:
        return LOW_STOCK
    return IN_STOCK


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class Threshold:
    """The low-stock rule in force for a level (see LowStockThreshold)."""

    sku: str
    location_id: str
    low: int
    recover: int
    back_in_stock: int
    cooldown_s: float
    update_time: datetime | None = None

    @property
    def back_quantity(self) -> int:
        return self.back_in_stock or 1

    @property
    def scope(self) -> int:
        scope = res.ThresholdScope
        if self.sku and self.location_id:
            return scope.THRESHOLD_SCOPE_SKU_AT_LOCATION
        if self.sku:
            return scope.THRESHOLD_SCOPE_SKU
        if self.location_id:
            return scope.THRESHOLD_SCOPE_LOCATION
        return scope.THRESHOLD_SCOPE_DEFAULT


@dataclass(frozen=True)
class SignalState:
    """What a level remembers about its signals."""

    low_stock: bool
    out_of_stock_since: datetime | None
    low_fired_at: datetime | None
    back_fired_at: datetime | None
    recheck_at: datetime | None = None


@dataclass(frozen=True)
class SignalOutcome:
    state: SignalState
    fire_low: bool = False
    fire_back: bool = False
    # When the out-of-stock period that ended began (for back_in_stock).
    out_of_stock_since: datetime | None = None


def _cooling(last: datetime | None, cooldown_s: float, now: datetime) -> datetime | None:
    """The end of the cooldown if one is running, else None."""
    if last is None or cooldown_s <= 0:
        return None
    end = last + timedelta(seconds=cooldown_s)
    return end if now < end else None


def evaluate_signals(
    atp: int, state: SignalState, rule: Threshold, now: datetime, item_state: int
) -> SignalOutcome:
    """The signals a level's new available_to_promise fires, with hysteresis.

    low_stock fires when ATP is at or below the low threshold while the signal is not
    raised, and is lowered only when ATP reaches the recover threshold. back_in_stock fires
    when ATP reaches the rule's quantity after having been 0 (never for items that are not
    ACTIVE). Within a signal's cooldown nothing fires; the level is marked for a re-check
    when the cooldown ends.
    """
    new = replace(state, recheck_at=None)
    fire_low = fire_back = False
    ended_since: datetime | None = None
    recheck: list[datetime] = []
    if new.low_stock and atp >= rule.recover:
        new = replace(new, low_stock=False)
    elif not new.low_stock and atp <= rule.low:
        wait = _cooling(new.low_fired_at, rule.cooldown_s, now)
        if wait is None:
            new = replace(new, low_stock=True, low_fired_at=now)
            fire_low = True
        else:
            recheck.append(wait)
    if atp <= 0:
        if new.out_of_stock_since is None:
            new = replace(new, out_of_stock_since=now)
    elif new.out_of_stock_since is not None and atp >= rule.back_quantity:
        if item_state != ITEM_ACTIVE:
            new = replace(new, out_of_stock_since=None)
        else:
            wait = _cooling(new.back_fired_at, rule.cooldown_s, now)
            if wait is None:
                ended_since = new.out_of_stock_since
                new = replace(new, out_of_stock_since=None, back_fired_at=now)
                fire_back = True
            else:
                recheck.append(wait)
    if recheck:
        new = replace(new, recheck_at=min(recheck))
    return SignalOutcome(
        state=new, fire_low=fire_low, fire_back=fire_back, out_of_stock_since=ended_since
    )
