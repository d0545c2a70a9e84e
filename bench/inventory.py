"""make bench-inventory: availability, hot-SKU reservations, oversell and forecast error.

One inventory service process on a fresh database (the embedded stack unless
CONTINUUM_DATABASE_URL / CONTINUUM_REDIS_URL are set), every figure through its gRPC API:

1. **Load.** 50 locations (45 pickup-capable stores, 5 ship-from warehouses) through the
   API, then ``--skus`` items (default 100,000) and one stock level per SKU and location
   (5,000,000 rows by default) bulk-loaded with COPY straight into the service's tables.
   Bulk-loaded levels are opening balances: they have no ledger entries (revision 0), as
   after a migration from another system; every level the benchmark changes through the
   API is reconciled at the end.
2. **Availability.** ``--availability-concurrency`` callers (default 4) ask
   CheckAvailability for 50 random SKUs at a random store for ``--duration`` seconds.
3. **Hot SKU.** ``--concurrency`` callers (default 32) reserve 1 unit each of one SKU at
   one store for ``--duration`` seconds (unique request ids, CHECKOUT). Then the last
   units: the same SKU is set to ``--last-units`` available and ``--rush`` concurrent
   reservations race for them. ``oversold`` is units promised beyond what was available
   over both (must be 0); ReconcileStock then checks the hot level against its ledger and
   its ACTIVE reservations. The hot SKU is created and received through the API.
4. **Floor.** The bare gRPC echo at the hot-SKU concurrency, and at the availability
   concurrency, in the same run.
5. **Forecast.** ``--series`` synthetic daily demand series (a fixed seed; one year each;
   per-series level, weekly profile, trend, yearly swing, promotions and over-dispersed
   noise) are loaded into the demand history; GetDemandForecast returns, per series, the
   MAPE of Holt-Winters and of the seasonal naive forecast on the last 14 days held out.
   Both are averaged.
"""

from __future__ import annotations

import asyncio
import platform
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import numpy as np

from bench._harness import arguments, closed_loop, emit, measure_floor, service_process
from continuum.common.v1 import money_pb2
from continuum.inventory.v1 import inventory_resources_pb2 as res
from continuum.inventory.v1 import inventory_service_pb2 as pb
from continuum.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from continuum_runtime.embedded import (
    to_asyncpg_dsn,
)

LOCATIONS = 50
WAREHOUSES = 5
CHUNK = 250_000
FLOOR_PER_S = 2_000  # the target for hot-SKU reservations


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Service:
    stub: pb_grpc.InventoryServiceAsyncStub
    metadata: tuple[tuple[str, str], ...]
    database_url: str


@asynccontextmanager
async def inventory_service() -> AsyncIterator[Service]:
    """An inventory service process on a fresh database (bench._harness.service_process),
    with a larger pool and long statement timeouts for the bulk phases."""
    env = {"CONTINUUM_DB__POOL_SIZE": "20", "CONTINUUM_DB__STATEMENT_TIMEOUT_MS": "600000"}
    async with service_process(
        "inventory", namespace=f"bench{uuid.uuid4().hex[:8]}", env=env
    ) as running:
        yield Service(
            stub=pb_grpc.InventoryServiceStub(running.channel),
            metadata=running.metadata,
            database_url=running.database_url,
        )


# --- load --------------------------------------------------------------------------------


def sku_name(n: int) -> str:
    return f"SKU{n:07d}"


def location_name(n: int) -> str:
    return f"dc-{n:02d}" if n < WAREHOUSES else f"store-{n:03d}"


async def create_locations(service: Service) -> None:
    rng = random.Random(11)
    for n in range(LOCATIONS):
        warehouse = n < WAREHOUSES
        location = res.Location(
            location_id=location_name(n),
            name=location_name(n),
            type=res.LocationType.LOCATION_TYPE_WAREHOUSE
            if warehouse
            else res.LocationType.LOCATION_TYPE_STORE,
            time_zone="Europe/London",
            pickup_capable=not warehouse,
            ship_from_capable=warehouse,
        )
        location.coordinates.latitude = 50.5 + rng.random() * 4
        location.coordinates.longitude = -3.5 + rng.random() * 4
        await service.stub.CreateLocation(
            pb.CreateLocationRequest(request_id=f"loc-{n}", location=location),
            metadata=service.metadata,
        )


def level_rows(start: int, stop: int, seed: int) -> Iterator[tuple[Any, ...]]:
    rng = np.random.default_rng(seed)
    count = (stop - start) * LOCATIONS
    on_hand = rng.poisson(6.0, count)
    safety = (rng.random(count) < 0.2).astype(int)
    k = 0
    for n in range(start, stop):
        sku = sku_name(n)
        for loc in range(LOCATIONS):
            yield (sku, location_name(loc), int(on_hand[k]), int(safety[k]))
            k += 1


async def bulk_load(database_url: str, skus: int) -> float:
    """Items and SKUs x locations stock levels with COPY; returns seconds taken."""
    started = time.perf_counter()
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        await conn.execute("SET synchronous_commit = off")
        for start in range(0, skus, CHUNK):
            stop = min(start + CHUNK, skus)
            await conn.copy_records_to_table(
                "items",
                records=[
                    (sku_name(n), f"P{n // 4:06d}", f"Item {n}", "EUR", 1000 + n % 9000, "bench")
                    for n in range(start, stop)
                ],
                columns=["sku", "product_id", "name", "currency", "price_minor", "etag"],
            )
        per_chunk = max(1, CHUNK // LOCATIONS)
        for start in range(0, skus, per_chunk):
            stop = min(start + per_chunk, skus)
            await conn.copy_records_to_table(
                "stock_levels",
                records=level_rows(start, stop, start),
                columns=["sku", "location_id", "on_hand", "safety_stock"],
            )
            if (stop // per_chunk) % 20 == 0 or stop == skus:
                log(
                    f"load: {stop * LOCATIONS:,} stock levels ({time.perf_counter() - started:.0f} s)"
                )
        # As autovacuum leaves a table in service: hint bits and visibility map set (the
        # first reads of freshly copied pages would otherwise write them back).
        await conn.execute("VACUUM (ANALYZE) items")
        await conn.execute("VACUUM (ANALYZE) stock_levels")
    finally:
        await conn.close()
    return time.perf_counter() - started


# --- phases ------------------------------------------------------------------------------


async def availability(
    service: Service, skus: int, concurrency: int, duration_s: float, warmup_s: float
) -> Any:
    rng = random.Random(3)
    stores = [location_name(n) for n in range(WAREHOUSES, LOCATIONS)]

    async def call(_: int) -> object:
        return await service.stub.CheckAvailability(
            pb.CheckAvailabilityRequest(
                location_id=rng.choice(stores),
                skus=[sku_name(n) for n in rng.sample(range(skus), 50)],
            ),
            metadata=service.metadata,
            timeout=10,
        )

    return await closed_loop(
        call, concurrency=concurrency, duration_s=duration_s, warmup_s=warmup_s
    )


async def set_available(service: Service, sku: str, location_id: str, units: int) -> int:
    """Count the level so that exactly ``units`` are available; returns them."""
    level = (
        await service.stub.GetStockLevel(
            pb.GetStockLevelRequest(sku=sku, location_id=location_id), metadata=service.metadata
        )
    ).stock_level
    for kind, value in (
        (res.StockChangeType.STOCK_CHANGE_TYPE_SAFETY_STOCK, 0),
        (res.StockChangeType.STOCK_CHANGE_TYPE_ADJUSTMENT, level.reserved + units),
    ):
        await service.stub.AdjustStock(
            pb.AdjustStockRequest(
                request_id=uuid.uuid4().hex,
                sku=sku,
                location_id=location_id,
                type=kind,
                set_quantity=value,
                reason="bench_count",
            ),
            metadata=service.metadata,
        )
    return units


async def hot_sku(service: Service, args: Any) -> tuple[Any, dict[str, Any]]:
    sku, location_id = "HOT-SKU", location_name(WAREHOUSES)
    await service.stub.CreateItem(
        pb.CreateItemRequest(
            request_id="hot-item",
            item=res.Item(
                sku=sku,
                product_id=sku,
                name="The hot SKU",
                price=money_pb2.Money(currency_code="EUR", amount_minor=4999),
            ),
        ),
        metadata=service.metadata,
    )
    await service.stub.AdjustStock(
        pb.AdjustStockRequest(
            request_id="hot-receipt",
            sku=sku,
            location_id=location_id,
            type=res.StockChangeType.STOCK_CHANGE_TYPE_RECEIPT,
            delta=5_000_000,
            reason="po_receipt",
        ),
        metadata=service.metadata,
    )
    granted = 0
    failures: dict[str, int] = {}
    start_units = 5_000_000

    async def reserve(_: int) -> object:
        nonlocal granted
        try:
            answer = await service.stub.ReserveStock(
                pb.ReserveStockRequest(
                    request_id=uuid.uuid4().hex,
                    kind=res.ReservationKind.RESERVATION_KIND_CHECKOUT,
                    lines=[res.ReserveLine(sku=sku, location_id=location_id, quantity=1)],
                ),
                metadata=service.metadata,
                timeout=30,
            )
        except grpc.aio.AioRpcError as error:
            failures[error.code().name] = failures.get(error.code().name, 0) + 1
            raise
        granted += answer.reservation.lines[0].quantity
        return answer

    measured = await closed_loop(
        reserve, concurrency=args.concurrency, duration_s=args.duration, warmup_s=args.warmup
    )
    oversold = max(0, granted - start_units)

    # The last units: many more callers than units.
    last = await set_available(service, sku, location_id, args.last_units)
    rush_granted = 0
    rush_refused = 0

    async def one(n: int) -> None:
        nonlocal rush_granted, rush_refused
        try:
            await service.stub.ReserveStock(
                pb.ReserveStockRequest(
                    request_id=f"rush-{n}",
                    kind=res.ReservationKind.RESERVATION_KIND_CHECKOUT,
                    lines=[res.ReserveLine(sku=sku, location_id=location_id, quantity=1)],
                ),
                metadata=service.metadata,
                timeout=60,
            )
            rush_granted += 1
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            rush_refused += 1

    await asyncio.gather(*(one(n) for n in range(args.rush)))
    level = (
        await service.stub.GetStockLevel(
            pb.GetStockLevelRequest(sku=sku, location_id=location_id), metadata=service.metadata
        )
    ).stock_level
    oversold += max(0, rush_granted - last)
    report = await service.stub.ReconcileStock(
        pb.ReconcileStockRequest(skus=[sku], location_ids=[location_id]),
        metadata=service.metadata,
        timeout=120,
    )
    return measured, {
        "oversold": oversold,
        "hot_sku_granted_units": granted,
        "hot_sku_errors_by_code": failures,
        "last_units": last,
        "rush_callers": args.rush,
        "rush_granted": rush_granted,
        "rush_refused": rush_refused,
        "final_available_to_promise": level.available_to_promise,
        "final_reserved_shortfall": level.reserved_shortfall,
        "reconcile_discrepancies": report.discrepancy_count,
        "reconcile_checked_levels": report.checked_level_count,
    }


# --- forecast ----------------------------------------------------------------------------


def synthetic_demand(series: int, days: int, seed: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Daily demand of ``series`` SKU-store pairs: level, weekly profile, trend, yearly
    swing, promotions and negative-binomial noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(days)
    base_profile = np.array([0.85, 0.8, 0.85, 0.95, 1.1, 1.45, 1.2])
    out = np.zeros((series, days), dtype=np.int64)
    for s in range(series):
        level = rng.lognormal(mean=2.2, sigma=0.6)
        profile = base_profile * rng.normal(1.0, 0.08, 7)
        trend = 1 + rng.normal(0.0, 0.0008) * t
        yearly = 1 + 0.15 * np.sin(2 * np.pi * (t + rng.integers(365)) / 365)
        promo = np.ones(days)
        for start in rng.choice(days - 4, size=4, replace=False):
            promo[start : start + 3] *= 1.6
        mean = np.maximum(level * profile[t % 7] * trend * yearly * promo, 0.05)
        dispersion = 8.0
        out[s] = rng.negative_binomial(dispersion, dispersion / (dispersion + mean))
    return out


async def forecast_eval(service: Service, series: int) -> dict[str, Any]:
    days = 364
    demand = synthetic_demand(series, days, seed=20261123)
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days)
    conn = await asyncpg.connect(to_asyncpg_dsn(service.database_url))
    try:
        await conn.copy_records_to_table(
            "demand_daily",
            records=[
                (
                    sku_name(s),
                    location_name(WAREHOUSES + s % (LOCATIONS - WAREHOUSES)),
                    first + timedelta(days=d),
                    int(demand[s, d]),
                )
                for s in range(series)
                for d in range(days)
            ],
            columns=["sku", "location_id", "day", "units"],
        )
    finally:
        await conn.close()
    mapes, naive, seconds = [], [], []
    for s in range(series):
        started = time.perf_counter()
        answer = await service.stub.GetDemandForecast(
            pb.GetDemandForecastRequest(
                sku=sku_name(s),
                location_id=location_name(WAREHOUSES + s % (LOCATIONS - WAREHOUSES)),
            ),
            metadata=service.metadata,
            timeout=30,
        )
        seconds.append(time.perf_counter() - started)
        mapes.append(answer.forecast.fit.mape)
        naive.append(answer.forecast.fit.naive_mape)
    return {
        "mape": round(float(np.mean(mapes)), 4),
        "naive_mape": round(float(np.mean(naive)), 4),
        "series": series,
        "history_days": days,
        "holdout_days": 14,
        "better_than_naive_share": round(float(np.mean(np.array(mapes) < np.array(naive))), 3),
        "get_forecast_p50_ms": round(float(np.percentile(seconds, 50)) * 1000, 2),
    }


async def main() -> None:
    parser = arguments(__doc__ or "")
    parser.add_argument("--skus", type=int, default=100_000)
    parser.add_argument("--availability-concurrency", type=int, default=4)
    parser.add_argument("--last-units", type=int, default=25)
    parser.add_argument("--rush", type=int, default=500)
    parser.add_argument("--series", type=int, default=200)
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "inventory", "skus": args.skus, "locations": LOCATIONS}
    async with inventory_service() as service:
        await create_locations(service)
        load_s = await bulk_load(service.database_url, args.skus)
        log(f"load: {args.skus * LOCATIONS:,} levels in {load_s:.1f} s")
        avail = await availability(
            service, args.skus, args.availability_concurrency, args.duration, args.warmup
        )
        log(
            f"availability (50 SKUs, concurrency {args.availability_concurrency}): "
            f"{avail.requests_per_s:.0f}/s p50 {avail.percentile_ms(50):.2f} ms "
            f"p99 {avail.percentile_ms(99):.2f} ms ({avail.errors} errors)"
        )
        hot, hot_facts = await hot_sku(service, args)
        log(
            f"hot SKU (concurrency {args.concurrency}): {hot.requests_per_s:.0f} reservations/s "
            f"p50 {hot.percentile_ms(50):.2f} ms p99 {hot.percentile_ms(99):.2f} ms; "
            f"oversold {hot_facts['oversold']}; rush {hot_facts['rush_granted']} of "
            f"{hot_facts['rush_callers']} for {hot_facts['last_units']} units"
        )
        fc = await forecast_eval(service, args.series)
        log(f"forecast: MAPE {fc['mape']:.3f} vs seasonal naive {fc['naive_mape']:.3f}")
    floor = await measure_floor(
        concurrency=args.concurrency, duration_s=args.duration, warmup_s=args.warmup
    )
    floor_low = await measure_floor(
        concurrency=args.availability_concurrency, duration_s=args.duration, warmup_s=args.warmup
    )
    log(
        f"floor: {floor.requests_per_s:.0f}/s at {args.concurrency} (p99 "
        f"{floor.percentile_ms(99):.2f} ms); {floor_low.requests_per_s:.0f}/s at "
        f"{args.availability_concurrency} (p99 {floor_low.percentile_ms(99):.2f} ms)"
    )
    result.update(
        {
            "load_s": round(load_s, 1),
            "availability_concurrency": args.availability_concurrency,
            "availability_per_s": round(avail.requests_per_s, 1),
            "availability_p50_ms": round(avail.percentile_ms(50), 3),
            "availability_p99_ms": round(avail.percentile_ms(99), 3),
            "availability_errors": avail.errors,
            "hot_sku_concurrency": args.concurrency,
            "hot_sku_reservations_per_s": round(hot.requests_per_s, 1),
            "hot_sku_p50_ms": round(hot.percentile_ms(50), 3),
            "hot_sku_p99_ms": round(hot.percentile_ms(99), 3),
            "hot_sku_errors": hot.errors,
            **hot_facts,
            "floor_per_s": round(floor.requests_per_s, 1),
            "floor_p99_ms": round(floor.percentile_ms(99), 3),
            "hot_sku_vs_floor": round(hot.requests_per_s / floor.requests_per_s, 4),
            "target_per_s": FLOOR_PER_S,
            "floor_at_availability_concurrency_per_s": round(floor_low.requests_per_s, 1),
            "floor_at_availability_concurrency_p99_ms": round(floor_low.percentile_ms(99), 3),
            "availability_p99_vs_floor": round(
                avail.percentile_ms(99) / floor_low.percentile_ms(99), 2
            ),
            "forecast": fc,
            "python": platform.python_version(),
        }
    )
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
