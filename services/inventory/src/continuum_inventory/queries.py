"""Read paths: stock levels, availability (store, nearby, ship-to-home) and forecasts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from google.type import date_pb2, latlng_pb2
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from continuum.inventory.v1 import inventory_resources_pb2 as res
from continuum.inventory.v1 import inventory_service_pb2 as pb
from continuum_inventory import domain, forecast, mapping, store
from continuum_inventory.operations import item_not_found, local_day, location_not_found
from continuum_inventory.store import Defaults, threshold_of
from continuum_runtime.db import Database

Reader = AsyncSession | AsyncConnection


def _buffer(location: Any, defaults: Defaults) -> int:
    return location.pickup_buffer if location.pickup_buffer is not None else defaults.pickup_buffer


def _pickup_capable(location: Any) -> bool:
    return bool(
        location.pickup_capable
        and location.type == domain.STORE
        and location.state == domain.LOCATION_ACTIVE
    )


async def require_items(conn: Reader, skus: Sequence[str]) -> dict[str, Any]:
    found = await store.items_by_sku(conn, skus)
    missing = [s for s in skus if s not in found]
    if missing:
        raise item_not_found(missing)
    return found


async def require_location(conn: Reader, location_id: str) -> Any:
    location = await store.get_location(conn, location_id)
    if location is None:
        raise location_not_found(location_id)
    return location


async def stock_levels(
    conn: Reader, keys: Sequence[tuple[str, str]], defaults: Defaults
) -> list[res.StockLevel]:
    """Levels of these pairs in order (NOT_STOCKED zeros for pairs without one)."""
    await require_items(conn, list(dict.fromkeys(k[0] for k in keys)))
    location_ids = list(dict.fromkeys(k[1] for k in keys))
    locations = await store.locations_by_id(conn, location_ids)
    for location_id in location_ids:
        if location_id not in locations:
            raise location_not_found(location_id)
    rows = await store.levels_with_rules(conn, list(dict.fromkeys(keys)))
    out: list[res.StockLevel] = []
    for sku, location_id in keys:
        row = rows.get((sku, location_id))
        if row is None:
            out.append(mapping.empty_level(sku, location_id))
            continue
        location = locations[location_id]
        out.append(
            mapping.level_message(
                row,
                threshold_of(row, defaults),
                pickup_capable=_pickup_capable(location),
                location_active=location.state == domain.LOCATION_ACTIVE,
                buffer=_buffer(location, defaults),
            )
        )
    return out


async def list_levels(
    session: AsyncSession, request: pb.ListStockLevelsRequest, defaults: Defaults
) -> pb.ListStockLevelsResponse:
    after = mapping.decode_token(request.page_token, ["", ""])
    size = mapping.page_size(request.page_size)
    wanted = set(request.statuses)
    rows = await store.list_levels(
        session,
        sku=request.sku,
        location_id=request.location_id,
        after=(str(after[0]), str(after[1])),
        limit=size + 1,
        changed_since=request.changed_since.ToDatetime(tzinfo=UTC)
        if request.HasField("changed_since")
        else None,
    )
    scanned = rows[:size]
    out: list[res.StockLevel] = []
    for row in scanned:
        active = row.loc_state == domain.LOCATION_ACTIVE
        level = mapping.level_message(
            row,
            threshold_of(row, defaults),
            pickup_capable=bool(row.pickup_capable and row.loc_type == domain.STORE and active),
            location_active=active,
            buffer=row.own_buffer if row.own_buffer is not None else defaults.pickup_buffer,
        )
        # Status depends on the rule in force, so it is filtered here: a page may hold
        # fewer than page_size levels and still have a next page.
        if not wanted or level.status in wanted:
            out.append(level)
    token = ""
    if len(rows) > size:
        token = mapping.encode_token([scanned[-1].sku, scanned[-1].location_id])
    answer = pb.ListStockLevelsResponse(stock_levels=out, next_page_token=token)
    answer.changes_from.FromDatetime(await store.changes_from(session))
    return answer


async def check_availability(
    db: Database, request: pb.CheckAvailabilityRequest, defaults: Defaults, radius_km: float
) -> pb.CheckAvailabilityResponse:
    rows = await store.availability(
        db, request.location_id, list(request.skus), defaults.pickup_buffer
    )
    if not rows:
        raise location_not_found(request.location_id)
    missing = [r[0] for r in rows if not r[1]]
    if missing:
        raise item_not_found(missing)
    first = rows[0]
    loc_type, loc_state, pickup_flag, buffer = first[8], first[9], first[10], first[11]
    active = loc_state == domain.LOCATION_ACTIVE
    pickup = bool(pickup_flag and loc_type == domain.STORE and active)
    low_default = defaults.threshold.low
    out = []
    for r in rows:
        if r[2] is None:
            out.append(
                res.SkuAvailability(
                    sku=r[0], location_id=request.location_id, status=domain.NOT_STOCKED
                )
            )
            continue
        atp = domain.available_to_promise(r[2], r[3], r[4])
        item = res.SkuAvailability(
            sku=r[0],
            location_id=request.location_id,
            available_to_promise=atp,
            pickup_available=domain.pickup_available(atp, pickup, active, buffer),
            status=domain.status_of(atp, low_default if r[7] is None else r[7]),
            incoming=r[5],
        )
        if r[6] is not None:
            item.next_incoming_time.FromDatetime(r[6])
        out.append(item)
    answer = pb.CheckAvailabilityResponse(
        availabilities=out, pickup_capable=pickup, pickup_buffer=buffer
    )
    if request.HasField("nearby"):
        await _nearby_of_low(db, request, answer, defaults, radius_km)
    return answer


_SHORT_HERE = (domain.LOW_STOCK, domain.OUT_OF_STOCK, domain.NOT_STOCKED)
MAX_NEARBY_SKUS = 20


async def _nearby_of_low(
    db: Database,
    request: pb.CheckAvailabilityRequest,
    answer: pb.CheckAvailabilityResponse,
    defaults: Defaults,
    radius_km: float,
) -> None:
    """Fill ``answer.nearby`` for the searched SKUs that are short at the location."""
    searched = set(request.nearby.skus or request.skus)
    short = [a.sku for a in answer.availabilities if a.sku in searched and a.status in _SHORT_HERE]
    short = short[:MAX_NEARBY_SKUS]
    if not short:
        return
    found = await find_nearby(
        db,
        pb.FindNearbyStockRequest(
            location_id=request.location_id,
            skus=short,
            min_quantity=1,
            max_distance_km=request.nearby.max_distance_km,
            limit=request.nearby.limit,
        ),
        defaults,
        radius_km,
    )
    answer.nearby.extend(found.locations)
    answer.nearby_skus.extend(short)


async def find_nearby(
    db: Database, request: pb.FindNearbyStockRequest, defaults: Defaults, radius_km: float
) -> pb.FindNearbyStockResponse:
    skus = list(request.skus)
    origin_id = request.location_id if request.WhichOneof("origin") == "location_id" else ""
    rows = await store.nearby_levels(
        db,
        skus,
        origin_id,
        request.coordinates.latitude,
        request.coordinates.longitude,
        request.max_distance_km or radius_km,
    )
    head = rows[0]
    if head.missing_skus:
        raise item_not_found(list(head.missing_skus))
    if origin_id and not head.origin_found:
        raise location_not_found(origin_id)
    need = request.min_quantity or 1
    limit = request.limit or 10
    found: list[res.NearbyLocation] = []
    # Rows come nearest store first, a store's SKUs together in request order.
    for n in range(0, len(rows) if head.location_id is not None else 0, len(skus)):
        s = rows[n]
        if (s.location_id == origin_id and not request.include_origin) or (
            request.pickup_only and not _pickup_capable(s)
        ):
            continue
        pickup = _pickup_capable(s)
        buffer = _buffer(s, defaults)
        availabilities: list[res.SkuAvailability] = []
        qualifying = 0
        for row in rows[n : n + len(skus)]:
            if row.on_hand is None:
                availabilities.append(
                    res.SkuAvailability(
                        sku=row.q_sku, location_id=s.location_id, status=domain.NOT_STOCKED
                    )
                )
                continue
            atp = domain.available_to_promise(row.on_hand, row.reserved, row.safety_stock)
            low = defaults.threshold.low if row.low_threshold is None else row.low_threshold
            item = res.SkuAvailability(
                sku=row.q_sku,
                location_id=s.location_id,
                available_to_promise=atp,
                pickup_available=domain.pickup_available(atp, pickup, True, buffer),
                status=domain.status_of(atp, low),
                incoming=row.incoming,
            )
            if row.next_incoming_time is not None:
                item.next_incoming_time.FromDatetime(row.next_incoming_time)
            availabilities.append(item)
            if (item.pickup_available if request.pickup_only else atp) >= need:
                qualifying += 1
        has_all = qualifying == len(skus)
        if qualifying == 0 or (request.require_all and not has_all):
            continue
        distance = 0.0 if s.location_id == origin_id else float(s.km)
        found.append(
            res.NearbyLocation(
                location=mapping.location_message(s),
                distance_km=round(distance, 3),
                availabilities=availabilities,
                has_all=has_all,
            )
        )
        if len(found) == limit:
            break
    return pb.FindNearbyStockResponse(
        locations=found,
        origin=latlng_pb2.LatLng(latitude=head.origin_lat, longitude=head.origin_lon),
    )


async def ship_to_home(
    conn: AsyncConnection, request: pb.GetShipToHomeAvailabilityRequest, defaults: Defaults
) -> pb.GetShipToHomeAvailabilityResponse:
    skus = [line.sku for line in request.lines]
    await require_items(conn, skus)
    rows = await store.ship_from_levels(conn, skus)
    rules = await store.rules_for(conn, [(sku, "") for sku in skus])
    by_sku: dict[str, list[Any]] = {}
    for row in rows:
        by_sku.setdefault(row.sku, []).append(row)
    items: list[res.ShipToHomeAvailability] = []
    for line in request.lines:
        levels = by_sku.get(line.sku, [])
        total = sum(int(r.atp) for r in levels)
        rule = threshold_of(rules[(line.sku, "")], defaults)
        items.append(
            res.ShipToHomeAvailability(
                sku=line.sku,
                requested_quantity=line.quantity,
                available_to_promise=total,
                available=any(int(r.atp) >= line.quantity for r in levels),
                status=domain.status_of(total, rule.low, stocked=bool(levels)),
                locations=[
                    res.LocationQuantity(location_id=r.location_id, available_to_promise=r.atp)
                    for r in levels
                    if r.atp > 0
                ],
            )
        )
    return pb.GetShipToHomeAvailabilityResponse(
        items=items, all_available=all(i.available for i in items)
    )


def _date(day: date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


async def demand_forecast(
    conn: Reader, request: pb.GetDemandForecastRequest, now: datetime | None = None
) -> res.DemandForecast:
    await require_items(conn, [request.sku])
    time_zone = "UTC"
    if request.location_id:
        time_zone = (await require_location(conn, request.location_id)).time_zone
    now = now or datetime.now(UTC)
    today = local_day(now, time_zone)
    horizon = request.horizon_days or 28
    rows = await store.demand_series(conn, request.sku, request.location_id)
    history = [r for r in rows if r.day < today]
    if history:
        start = history[0].day
        y = np.zeros((today - start).days, dtype=np.float64)
        for r in history:
            y[(r.day - start).days] = float(r.units)
    else:
        y = np.zeros(0, dtype=np.float64)
    # Tomorrow is step 2 after yesterday, the series' last day (today is still running).
    predicted = forecast.forecast(y, horizon + 1)
    mean, lower, upper = predicted.mean[1:], predicted.lower[1:], predicted.upper[1:]
    atp = await store.total_atp(conn, request.sku, request.location_id)
    projected = atp - np.cumsum(mean)
    days = [
        res.DailyDemand(
            date=_date(today + timedelta(days=k + 1)),
            predicted_units=round(float(mean[k]), 4),
            lower_units=round(float(lower[k]), 4),
            upper_units=round(float(upper[k]), 4),
            projected_available=round(float(projected[k]), 4),
        )
        for k in range(horizon)
    ]
    mean_daily = float(mean.mean()) if horizon else 0.0
    result = res.DemandForecast(
        sku=request.sku,
        location_id=request.location_id,
        horizon_days=horizon,
        days=days,
        available_to_promise=atp,
        mean_daily_demand=round(mean_daily, 4),
        method=predicted.method,
        insufficient_history=predicted.insufficient_history,
    )
    if mean_daily > 0:
        result.days_of_cover = round(atp / mean_daily, 3)
    for k in range(horizon):
        if projected[k] < 0:
            result.predicted_stockout_date.CopyFrom(days[k].date)
            break
    evaluation = forecast.evaluate(y) if not predicted.insufficient_history else None
    if evaluation is not None:
        result.fit.CopyFrom(
            res.ForecastFit(
                mape=round(evaluation.mape, 6),
                naive_mape=round(evaluation.naive_mape, 6),
                mae=round(evaluation.mae, 6),
                history_days=evaluation.history_days,
                holdout_days=evaluation.holdout_days,
            )
        )
    result.compute_time.FromDatetime(now)
    return result
