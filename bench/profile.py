"""make bench-profile: sustained ingestion with lag, and the associate summary at scale.

Identity and profile run in processes of their own on fresh databases (one Redis
namespace, profile consuming identity's events), as in a deployment: one identity and
``--replicas`` profile processes (default 2, one per core; the client balances over them
round robin, and their derivers share the work queue).

1. **Ingestion.** ``--shoppers`` customers (default 20,000) are seeded into identity's
   tables (an email each, as ``bench.identity`` seeds); profile starts cold, and a
   warm-up sends every shopper's first event to every replica, so that their resolution
   caches fill from real ``BatchResolveIdentity`` calls before the measured window. ``--streams`` callers
   send batches of ``--batch`` events (default 4 x 500) for ``--duration`` seconds
   (default 60): each batch holds short sessions (``--session`` events of one shopper:
   product views with size and colour, cart adds, wishlist saves, now and then an order),
   the way a channel gateway batches its traffic. ``events_per_s`` counts accepted events
   only. Traits are derived by profile's background deriver while the load runs.
2. **Lag.** Every 500 ms during the load, a probe shopper (not in the load) sends one view
   and the benchmark polls GetProfileSummary every 50 ms until the profile shows it
   (``last_seen`` reaches the event's time): lag = first poll that sees it minus the
   moment IngestEvents returned (so it includes up to 50 ms of polling granularity).
3. **Summary.** ``--customers`` profile rows (default 1,000,000) are bulk-loaded with COPY
   (summaries computed by the service's own trait code from generated sessions), then
   ``--concurrency`` callers (default 32) read random customers' summaries. The floor is
   measured in the same run.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import platform
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import numpy as np

from bench._harness import arguments, closed_loop, emit, free_port, measure_floor, server_process
from bench.identity import KEY, seed
from continuum.common.v1 import channel_pb2, money_pb2
from continuum.common.v1 import identifier_pb2 as idpb
from continuum.profile.v1 import profile_resources_pb2 as res
from continuum.profile.v1 import profile_service_pb2 as pb
from continuum.profile.v1 import profile_service_pb2_grpc as pb_grpc
from continuum_profile import traits
from continuum_runtime.auth import PrincipalKind, issue_token
from continuum_runtime.config import AuthSettings, project_data_dir
from continuum_runtime.embedded import (
    drop_database,
    ensure_database,
    resolve_store_urls,
    to_asyncpg_dsn,
    with_database,
)

TOKEN_KEY = uuid.uuid4().hex * 2
INGEST_METHOD = "/continuum.profile.v1.ProfileService/IngestEvents"
CATEGORIES = [
    ("Women > Shoes", ["37", "38", "39", "40"]),
    ("Women > Coats", ["S", "M", "L"]),
    ("Men > Shirts", ["M", "L", "XL"]),
    ("Men > Trainers", ["9", "10", "11"]),
    ("Home > Bedding", ["single", "double", "king"]),
]
COLOURS = ["black", "navy", "camel", "white", "red", "green", "grey"]
BRANDS = ["Aria", "Stride", "Northway", "Lumen", "Harbour"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Stack:
    stub: pb_grpc.ProfileServiceAsyncStub
    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]
    profile_url: str
    # Each replica's address (the warm-up reaches every replica's resolution cache).
    targets: list[str]


@asynccontextmanager
async def services(shoppers: int, replicas: int) -> AsyncIterator[Stack]:
    urls = await resolve_store_urls(
        "bench",
        os.environ.get("CONTINUUM_DATABASE_URL", ""),
        os.environ.get("CONTINUUM_REDIS_URL", ""),
        project_data_dir(),
    )
    tag = uuid.uuid4().hex[:8]
    identity_url = with_database(urls.database_url, f"bench_pi_{tag}")
    profile_url = with_database(urls.database_url, f"bench_pp_{tag}")
    await ensure_database(identity_url)
    await ensure_database(profile_url)
    common = {
        "CONTINUUM_REDIS_URL": urls.redis_url,
        "CONTINUUM_REDIS_NAMESPACE": f"bench{tag}",
        "CONTINUUM_AUTH__TOKEN_KEY": TOKEN_KEY,
        "CONTINUUM_ENVIRONMENT": "bench",
        "CONTINUUM_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "CONTINUUM_MAX_CONCURRENT_RPCS": "10000",
    }
    identity_port = free_port()
    ports = [free_port() for _ in range(replicas)]
    token = issue_token(
        AuthSettings(token_key=TOKEN_KEY),  # type: ignore[arg-type]
        subject="bench",
        kind=PrincipalKind.SERVICE,
        ttl_s=7200,
    )
    try:
        # identity's schema first, then the seeded customers, then the service
        async with server_process(
            ["-m", "continuum_identity", "serve"],
            port=identity_port,
            env={
                **common,
                "CONTINUUM_PORT": str(identity_port),
                "CONTINUUM_DATABASE_URL": identity_url,
                "CONTINUUM_IDENTIFIER_KEY": KEY,
            },
        ):
            await seed(identity_url, shoppers)
            async with _profiles(common, ports, identity_port, profile_url) as channel:
                yield Stack(
                    stub=pb_grpc.ProfileServiceStub(channel),
                    channel=channel,
                    metadata=(("authorization", f"Bearer {token}"),),
                    profile_url=profile_url,
                    targets=[f"127.0.0.1:{p}" for p in ports],
                )
    finally:
        await drop_database(identity_url)
        await drop_database(profile_url)


@asynccontextmanager
async def _profiles(
    common: dict[str, str], ports: list[int], identity_port: int, profile_url: str
) -> AsyncIterator[grpc.aio.Channel]:
    env = {
        **common,
        "CONTINUUM_DATABASE_URL": profile_url,
        "CONTINUUM_IDENTITY_TARGET": f"127.0.0.1:{identity_port}",
        "CONTINUUM_EVENTS__RELAY_BATCH_SIZE": "2000",
        "CONTINUUM_DB__POOL_SIZE": "20",
    }
    async with contextlib_stack(
        [
            server_process(
                [*_profiler(port), "-m", "continuum_profile", "serve"],
                port=port,
                env={**env, "CONTINUUM_PORT": str(port)},
            )
            for port in ports
        ]
    ):
        target = (
            f"ipv4:{','.join(f'127.0.0.1:{p}' for p in ports)}"
            if len(ports) > 1
            else f"127.0.0.1:{ports[0]}"
        )
        options = [("grpc.lb_policy_name", "round_robin")] if len(ports) > 1 else []
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            await channel.channel_ready()
            yield channel


def _profiler(port: int) -> list[str]:
    """BENCH_CPROFILE=<dir>: run each profile process under cProfile (where the time goes)."""
    folder = os.environ.get("BENCH_CPROFILE", "")
    return ["-m", "cProfile", "-o", f"{folder}/profile-{port}.pstats"] if folder else []


@asynccontextmanager
async def contextlib_stack(managers: list[Any]) -> AsyncIterator[None]:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        for manager in managers:
            await stack.enter_async_context(manager)
        yield


# --- events ------------------------------------------------------------------------------


def ref(rng: random.Random, shopper: int) -> res.ProductRef:
    category, sizes = CATEGORIES[shopper % len(CATEGORIES)]
    pid = f"P{rng.randrange(400):03d}"
    size = sizes[(shopper + rng.randrange(2)) % len(sizes)]
    colour = COLOURS[(shopper + rng.randrange(2) * rng.randrange(3)) % len(COLOURS)]
    return res.ProductRef(
        sku=f"{pid}-{size}-{colour}",
        product_id=pid,
        name=f"Product {pid}",
        category=category,
        brand=BRANDS[int(pid[1:]) % len(BRANDS)],
        size=size,
        colour=colour,
        unit_price=money_pb2.Money(currency_code="GBP", amount_minor=1000 + 137 * int(pid[1:])),
    )


def session(
    rng: random.Random, shopper: int, length: int, now: float, tag: str = ""
) -> list[res.BehaviouralEvent]:
    """One shopper's session. With ``tag``, event and order ids are the tag followed by a
    counter, so that copies of a serialized batch can be given new ids by replacing it."""

    def new_id() -> str:
        return f"{tag}{next(_ids):024x}" if tag else uuid.uuid4().hex

    ids = [idpb.Identifier(type=idpb.IDENTIFIER_TYPE_EMAIL, value=f"shopper{shopper}@example.com")]
    channel = rng.choice([channel_pb2.CHANNEL_WEB, channel_pb2.CHANNEL_APP])
    out = []
    products = [ref(rng, shopper) for _ in range(3)]
    for i in range(length):
        event = res.BehaviouralEvent(event_id=new_id(), channel=channel, identifiers=ids)
        event.occur_time.FromNanoseconds(int((now - length + i) * 1e9))
        p = products[rng.randrange(len(products))]
        roll = rng.random()
        if roll < 0.75:
            event.product_viewed.product.CopyFrom(p)
        elif roll < 0.88:
            event.cart_item_added.CopyFrom(
                res.CartItemAdded(cart_id=f"c{shopper}", product=p, quantity=1)
            )
        elif roll < 0.96:
            event.wishlist_item_added.CopyFrom(res.WishlistItemAdded(product=p))
        else:
            event.order_placed.CopyFrom(
                res.OrderPlaced(
                    order_id=new_id(),
                    lines=[res.OrderLine(product=p, quantity=1, line_total=p.unit_price)],
                    total=p.unit_price,
                    cart_id=f"c{shopper}",
                )
            )
        out.append(event)
    return out


_ids = itertools.count()
TAG_LEN = 12


def batches(count: int, batch: int, session_len: int, shoppers: int, seed_: int) -> list[bytes]:
    """``count`` serialized batches: up to 1,000 generated ones (50,000 sessions of random
    shoppers, so that nearly every shopper is in the load), then copies of those with every
    event and order id made new (the generated ids start with a tag of the batch's own,
    replaced in the bytes), so that a high rate costs little to prepare."""
    rng = random.Random(seed_)
    now = time.time()
    templates: list[tuple[bytes, bytes]] = []
    for _ in range(min(count, 1000)):
        label = f"~{uuid.uuid4().hex[: TAG_LEN - 2]}~"
        events: list[res.BehaviouralEvent] = []
        while len(events) < batch:
            events += session(rng, rng.randrange(shoppers), session_len, now, label)
        body = pb.IngestEventsRequest(events=events[:batch]).SerializeToString()
        templates.append((label.encode(), body))
    out = []
    for n in range(count):
        tag, body = templates[n % len(templates)]
        fresh = f"~{n:0{TAG_LEN - 2}x}~".encode()
        out.append(body if n < len(templates) else body.replace(tag, fresh))
    return out


# --- phases ------------------------------------------------------------------------------


async def ingestion(
    stack: Stack, args: Any, probes: list[int]
) -> tuple[float, int, int, list[float], list[float]]:
    ingest = stack.channel.unary_unary(
        INGEST_METHOD,
        request_serializer=None,
        response_deserializer=pb.IngestEventsResponse.FromString,
    )
    per_s = args.max_rate
    needed = int(per_s * (args.duration + args.warmup + 5) / args.batch) + args.streams
    log(f"ingestion: generating {needed} batches of {args.batch} events")
    prepared = batches(needed, args.batch, args.session, args.shoppers, 11)
    cursor = 0
    accepted = rejected = 0
    lags: list[float] = []
    calls: list[float] = []  # the probes' IngestEvents calls, ms (backpressure included)
    measure_from = stop_at = 0.0

    async def stream(_: int) -> None:
        nonlocal cursor, accepted, rejected
        while True:
            started = time.perf_counter()
            if started >= stop_at or cursor >= len(prepared):
                return
            body = prepared[cursor]
            cursor += 1
            answer = await ingest(body, metadata=stack.metadata, timeout=30)
            if started >= measure_from and time.perf_counter() <= stop_at:
                accepted += answer.accepted_count
                rejected += answer.rejected_count

    async def probe_once(rng: random.Random, shopper: int) -> None:
        event = session(rng, shopper, 1, time.time())[0]
        event.ClearField("payload")
        event.product_viewed.product.CopyFrom(ref(rng, shopper))
        event.occur_time.GetCurrentTime()
        sent_at = time.perf_counter()
        answer = await stack.stub.IngestEvents(
            pb.IngestEventsRequest(events=[event]), metadata=stack.metadata, timeout=10
        )
        accepted_at = time.perf_counter()
        calls.append((accepted_at - sent_at) * 1000)
        customer = answer.results[0].customer_id
        target = event.occur_time.ToNanoseconds()
        while time.perf_counter() - accepted_at < 30:
            try:
                found = await stack.stub.GetProfileSummary(
                    pb.GetProfileSummaryRequest(customer_id=customer),
                    metadata=stack.metadata,
                    timeout=5,
                )
                if found.summary.last_seen.last_seen_time.ToNanoseconds() >= target:
                    lags.append((time.perf_counter() - accepted_at) * 1000)
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)

    async def probe() -> None:
        """One probe every 500 ms, each on a shopper of its own, running side by side."""
        rng = random.Random(3)
        running: list[asyncio.Task[None]] = []
        free = list(probes)
        while time.perf_counter() < stop_at:
            await asyncio.sleep(0.5)
            if time.perf_counter() < measure_from or not free:
                continue
            shopper = free.pop(rng.randrange(len(free)))
            task = asyncio.create_task(probe_once(rng, shopper))
            task.add_done_callback(lambda _, s=shopper: free.append(s))  # type: ignore[misc]
            running.append(task)
        await asyncio.gather(*running, return_exceptions=True)

    # Every shopper (and probe) has been seen by every replica before the load, as
    # returning shoppers have: the measured window is the sustained state, with warm
    # resolution caches (a replica's cache is its own).
    log(f"ingestion: warming up with one event per shopper ({args.shoppers + len(probes):,})")
    for target in stack.targets:
        warm = [
            session(random.Random(p), p, 1, time.time())[0]
            for p in [*range(args.shoppers), *probes]
        ]
        async with grpc.aio.insecure_channel(target) as channel:
            replica = pb_grpc.ProfileServiceStub(channel)
            for start in range(0, len(warm), 500):
                await replica.IngestEvents(
                    pb.IngestEventsRequest(events=warm[start : start + 500]),
                    metadata=stack.metadata,
                    timeout=60,
                )
    log(f"ingestion: load started ({args.warmup:.0f} s warm-up, then {args.duration:.0f} s)")
    begin = time.perf_counter()
    measure_from = begin + args.warmup
    stop_at = measure_from + args.duration
    await asyncio.gather(probe(), *(stream(i) for i in range(args.streams)))
    if cursor >= len(prepared):
        log("ingestion: ran out of prepared batches (the figure is a lower bound)")
    return accepted / args.duration, accepted, rejected, lags, calls


async def settle(url: str, timeout_s: float = 180.0) -> None:
    """Wait until the ingestion phase's derivation backlog is done (reads are measured on a
    service that is not still deriving)."""
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            queued = await conn.fetchval(
                "SELECT (SELECT count(*) FROM dirty_customers) "
                "+ (SELECT count(*) FROM events WHERE customer_id IS NULL)"
            )
            if not queued:
                break
            await asyncio.sleep(1.0)
        log(f"summary: derivation backlog done after {time.perf_counter() - started:.0f} s")
    finally:
        await conn.close()


async def bulk_profiles(url: str, count: int) -> list[str]:
    """``count`` profile rows with summaries computed by the service's trait code."""
    rng = random.Random(7)
    now = time.time()
    templates = []
    for n in range(200):
        state = traits.DeriveState()
        for event in session(rng, n, 25, now - rng.randrange(7 * 86400)):
            traits.fold(state, event)
        templates.append(traits.summary_of(state, now).SerializeToString())
    ids = [f"cus_bulk{n:08d}" for n in range(count)]
    conn = await asyncpg.connect(to_asyncpg_dsn(url))
    try:
        chunk = 100_000
        for start in range(0, count, chunk):
            rows = [
                (cid, templates[n % len(templates)], f"Shopper {n % 997}.", "gold", "Europe/London")
                for n, cid in enumerate(ids[start : start + chunk], start)
            ]
            await conn.copy_records_to_table(
                "profiles",
                records=rows,
                columns=["customer_id", "summary", "display_name", "loyalty_tier", "time_zone"],
            )
            log(f"summary: loaded {start + len(rows):,} profiles")
        await conn.execute("ANALYZE profiles")
    finally:
        await conn.close()
    return ids


async def main() -> None:
    parser = arguments(__doc__ or "")
    parser.set_defaults(duration=float(os.environ.get("BENCH_DURATION", 60.0)))
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--shoppers", type=int, default=20_000)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--session", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--summary-duration", type=float, default=10.0)
    # Batches are generated before the load, for at most this many events per second.
    parser.add_argument("--max-rate", type=int, default=20_000)
    args = parser.parse_args()
    probes = list(range(args.shoppers, args.shoppers + 200))
    result: dict[str, Any] = {"benchmark": "profile"}
    async with services(args.shoppers + len(probes), args.replicas) as stack:
        log(
            f"ingestion: {args.streams} streams x {args.batch} events, sessions of "
            f"{args.session}, {args.shoppers:,} shoppers, {args.duration:.0f} s"
        )
        rate, accepted, rejected, lags, calls = await ingestion(stack, args, probes)
        lag = np.asarray(lags) if lags else np.asarray([float("nan")])
        call = np.asarray(calls) if calls else np.asarray([float("nan")])
        log(
            f"ingestion: {rate:,.0f} events/s ({accepted:,} accepted, {rejected} rejected); "
            f"lag p50 {np.percentile(lag, 50):.0f} ms p99 {np.percentile(lag, 99):.0f} ms "
            f"({len(lags)} probes); the probes' IngestEvents p50 {np.percentile(call, 50):.0f} "
            f"ms p99 {np.percentile(call, 99):.0f} ms"
        )
        await settle(stack.profile_url)
        ids = await bulk_profiles(stack.profile_url, args.customers)
        rng = random.Random(5)

        async def read(_: int) -> object:
            return await stack.stub.GetProfileSummary(
                pb.GetProfileSummaryRequest(customer_id=ids[rng.randrange(len(ids))]),
                metadata=stack.metadata,
                timeout=10,
            )

        measured = await closed_loop(
            read,
            concurrency=args.concurrency,
            duration_s=args.summary_duration,
            warmup_s=args.warmup,
        )
    floor = await measure_floor(
        concurrency=args.concurrency, duration_s=args.summary_duration, warmup_s=args.warmup
    )
    log(
        f"summary: {measured.requests_per_s:,.0f}/s p50 {measured.percentile_ms(50):.2f} ms "
        f"p99 {measured.percentile_ms(99):.2f} ms ({measured.errors} errors); floor "
        f"{floor.requests_per_s:,.0f}/s p99 {floor.percentile_ms(99):.2f} ms"
    )
    result.update(
        {
            "events_per_s": round(rate, 1),
            "accepted_events": accepted,
            "rejected_events": rejected,
            "lag_p50_ms": round(float(np.percentile(lag, 50)), 1),
            "lag_p99_ms": round(float(np.percentile(lag, 99)), 1),
            "lag_probes": len(lags),
            "probe_ingest_p50_ms": round(float(np.percentile(call, 50)), 1),
            "probe_ingest_p99_ms": round(float(np.percentile(call, 99)), 1),
            "ingest_duration_s": args.duration,
            "streams": args.streams,
            "batch": args.batch,
            "session_events": args.session,
            "shoppers": args.shoppers,
            "replicas": args.replicas,
            "stored_customers": args.customers,
            "concurrency": args.concurrency,
            "summary_per_s": round(measured.requests_per_s, 1),
            "summary_p50_ms": round(measured.percentile_ms(50), 3),
            "summary_p99_ms": round(measured.percentile_ms(99), 3),
            "summary_errors": measured.errors,
            "floor_requests_per_s": round(floor.requests_per_s, 1),
            "floor_p99_ms": round(floor.percentile_ms(99), 3),
            "floor_ratio": round(measured.requests_per_s / floor.requests_per_s, 4),
            "p99_vs_floor": round(measured.percentile_ms(99) / floor.percentile_ms(99), 2),
            "python": platform.python_version(),
        }
    )
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
