"""make bench-suite: a mixed load on the six services, started with the suite launcher.

The six services run as separate processes (``continuum_cli.suite.start_suite``, the
launcher of ``make run``) on the embedded PostgreSQL and Redis in a temporary data
directory, or on the machine's servers when ``CONTINUUM_DATABASE_URL`` and
``CONTINUUM_REDIS_URL`` are set (fresh databases, dropped afterwards). Through the SDK
(``continuum_sdk.AsyncContinuum``) the benchmark seeds its own data: a catalogue of shoes
in four sizes and bags, ``--stores`` stores with stock (a third of the items not carried
in each), ``--customers`` customers with a loyalty id and an e-mail address, a profile
(name, tier, store-recognition consent), two cart lines and a wishlist item. Notification's
check-in deduplication window is set to one second (operator settings) so that a
customer may check in at a store again during the run.

Then, for ``--duration`` seconds (default 300) after ``--warmup``, closed-loop workers
(each issues its next call when the last one returns) run side by side:

* ``--ingest-workers`` send browsing events to profile (IngestEvents, batches of
  ``--batch`` product views and cart adds of the seeded customers, by e-mail);
* ``--cart-workers`` run cart operations on random customers' carts: GetCart (50%),
  AddItem (25%), UpdateItem of a known line's quantity (25%);
* ``--checkin-workers`` check customers in at stores (CheckIn) while one associate per
  store is subscribed to the store's feed (SubscribeFeed, an associate token for that
  store): ``check_in`` is the RPC, ``briefing`` the time from sending the check-in to
  its briefing arriving on the feed (matched by briefing id). A BRIEFED check-in whose
  briefing did not arrive within ``--grace`` seconds after the load counts as a
  ``briefing`` error. Only check-ins whose RPC both started and ended inside the window
  count, for ``check_in`` and ``briefing`` alike.

Every operation's count, throughput, p50/p99 latency and errors are printed; the bare
echo floor (``bench.floor``) is measured in the same run at the same total concurrency.
Last line: one JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import duration_pb2, field_mask_pb2
from google.type import latlng_pb2

from bench._harness import arguments as base_arguments
from bench._harness import emit, free_port, measure_floor
from bench.handoff import SIZES, bounded, catalogue, seed_customer, service_cpu
from continuum.cart.v1 import cart_resources_pb2 as cart_res
from continuum.cart.v1 import cart_service_pb2 as cart_pb
from continuum.common.v1 import channel_pb2, identifier_pb2, money_pb2
from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.notification.v1 import notification_resources_pb2 as note
from continuum.notification.v1 import notification_service_pb2 as note_pb
from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum.profile.v1 import profile_service_pb2 as prof_pb
from continuum_cli.suite import RunningSuite, start_suite
from continuum_runtime.auth import PrincipalKind
from continuum_runtime.embedded import drop_database, with_database
from continuum_sdk import AsyncContinuum
from continuum_sdk.config import SERVICES
from continuum_sdk.errors import DeadlineExceeded, Unavailable

WEB = channel_pb2.CHANNEL_WEB
CART_MIX = (("cart_get", 0.5), ("cart_add", 0.25), ("cart_update", 0.25))
# Small pools: six services share PostgreSQL (its max_connections) and two cores; no
# overflow (see bench/handoff.py).
POOL = {"CONTINUUM_DB__POOL_SIZE": "8", "CONTINUUM_DB__MAX_OVERFLOW": "0"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rid() -> str:
    return str(uuid.uuid4())


def error_name(exc: BaseException) -> str:
    """The gRPC status name of an SDK or grpc error, else the exception's class name."""
    code = getattr(exc, "code", None)
    if callable(code):
        with contextlib.suppress(Exception):
            code = code()
    name = getattr(code, "name", None)
    return str(name) if name else type(exc).__name__


@dataclass
class Operation:
    """Latencies and errors of one kind of call inside the measured window."""

    name: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def pct(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        return round(float(np.percentile(np.asarray(self.latencies_ms), q)), 2)

    def summary(self, duration_s: float) -> dict[str, Any]:
        count = len(self.latencies_ms)
        return {
            "count": count,
            "throughput": round(count / duration_s, 2),
            "p50_ms": self.pct(50),
            "p99_ms": self.pct(99),
            "errors": self.error_count,
            "error_kinds": dict(self.errors),
        }


@dataclass
class Window:
    """The measured window: calls that start at or after ``start`` and end by ``stop``."""

    start: float
    stop: float

    def counts(self, started: float, finished: float) -> bool:
        return started >= self.start and finished <= self.stop


class Load:
    """The closed-loop workers of one run and what they measured."""

    def __init__(self, client: AsyncContinuum, customers: list[str], stores: list[str]) -> None:
        self.client = client
        self.customers = customers
        self.stores = stores
        self.ops = {
            name: Operation(name)
            for name in ("ingest_batch", "cart_get", "cart_add", "cart_update", "check_in")
        }
        self.briefing = Operation("briefing")
        self.events_accepted = 0
        self.events_rejected = 0
        self.lines: dict[int, list[str]] = {}
        self.statuses: dict[str, int] = {}
        self.missing_parts: dict[str, int] = {}
        # briefing id -> perf_counter when the check-in was sent / the briefing arrived
        self.sent: dict[str, float] = {}
        self.arrived: dict[str, float] = {}
        self.window = Window(float("inf"), float("inf"))
        self.checkin_pairs = 0
        self.arrival = asyncio.Event()  # set whenever a briefing is matched

    async def timed(self, name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run one call, recording it if it falls inside the window; None if it failed."""
        op = self.ops[name]
        started = time.perf_counter()
        try:
            result = await call()
        except Exception as exc:
            if started >= self.window.start and time.perf_counter() <= self.window.stop:
                op.error(error_name(exc))
            return None
        finished = time.perf_counter()
        if self.window.counts(started, finished):
            op.latencies_ms.append((finished - started) * 1000)
        return result

    async def worker(self, body: Callable[[random.Random], Awaitable[None]], seed: int) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < self.window.stop:
            await body(rng)

    # --- browsing events ------------------------------------------------------------------

    def browsing_batch(self, rng: random.Random, size: int) -> prof_pb.IngestEventsRequest:
        now = time.time()
        events: list[prof.BehaviouralEvent] = []
        while len(events) < size:
            n = rng.randrange(len(self.customers))
            ids = [
                identifier_pb2.Identifier(
                    type=identifier_pb2.IDENTIFIER_TYPE_EMAIL, value=f"bench{n}@example.com"
                )
            ]
            channel = rng.choice((channel_pb2.CHANNEL_WEB, channel_pb2.CHANNEL_APP))
            for i in range(min(5, size - len(events))):
                p = rng.randrange(10)
                product = prof.ProductRef(
                    sku=f"SHOE-{p}-{rng.choice(SIZES)}",
                    product_id=f"shoe-{p}",
                    name=f"Runner {p}",
                    category="Women > Shoes",
                    brand="Continuum",
                    colour="black",
                    unit_price=money_pb2.Money(currency_code="EUR", amount_minor=8900),
                )
                event = prof.BehaviouralEvent(event_id=uuid.uuid4().hex, channel=channel)
                event.identifiers.extend(ids)
                event.occur_time.FromNanoseconds(int((now - 5 + i) * 1e9))
                if rng.random() < 0.85:
                    event.product_viewed.product.CopyFrom(product)
                else:
                    event.cart_item_added.CopyFrom(
                        prof.CartItemAdded(cart_id=f"bench-cart-{n}", product=product, quantity=1)
                    )
                events.append(event)
        return prof_pb.IngestEventsRequest(events=events)

    def ingest(self, batch: int) -> Callable[[random.Random], Awaitable[None]]:
        async def body(rng: random.Random) -> None:
            request = self.browsing_batch(rng, batch)
            started = time.perf_counter()
            answer = await self.timed(
                "ingest_batch", lambda: self.client.profile.IngestEvents(request, timeout=30)
            )
            if answer is not None and self.window.counts(started, time.perf_counter()):
                self.events_accepted += answer.accepted_count
                self.events_rejected += answer.rejected_count

        return body

    # --- cart -----------------------------------------------------------------------------

    def remember(self, n: int, answer: Any) -> None:
        if answer is not None:
            self.lines[n] = [line.line_id for line in answer.cart.lines]

    async def cart_op(self, rng: random.Random) -> None:
        n = rng.randrange(len(self.customers))
        owner = cart_res.Owner(customer_id=self.customers[n])
        roll, what = rng.random(), "cart_get"
        for name, share in CART_MIX:
            if roll < share:
                what = name
                break
            roll -= share
        if what == "cart_update" and not self.lines.get(n):
            what = "cart_get"  # no line known yet for this cart: read it first
        if what == "cart_get":
            answer = await self.timed(
                what, lambda: self.client.cart.GetCart(cart_pb.GetCartRequest(owner=owner))
            )
        elif what == "cart_add":
            sku = f"BAG-{rng.randrange(10)}" if rng.random() < 0.3 else None
            sku = sku or f"SHOE-{rng.randrange(10)}-{rng.choice(SIZES)}"
            request = cart_pb.AddItemRequest(
                request_id=rid(), owner=owner, sku=sku, quantity=1, channel=WEB
            )
            answer = await self.timed(what, lambda: self.client.cart.AddItem(request))
        else:
            update = cart_pb.UpdateItemRequest(
                request_id=rid(),
                owner=owner,
                line_id=rng.choice(self.lines[n]),
                quantity=rng.randint(1, 3),
                channel=WEB,
            )
            answer = await self.timed(what, lambda: self.client.cart.UpdateItem(update))
        self.remember(n, answer)

    # --- check-ins and the feed -------------------------------------------------------------

    async def subscribe(self, suite: RunningSuite, store: str, ready: asyncio.Event) -> None:
        token = suite.token(f"associate-{store}", kind=PrincipalKind.ASSOCIATE, stores=(store,))
        async with suite.client(token=token) as associate:
            feed = associate.notification.SubscribeFeed(
                note_pb.SubscribeFeedRequest(store_id=store)
            )
            async for answer in feed:
                item = answer.item
                if item.kind == note.FEED_ITEM_KIND_CAUGHT_UP:
                    ready.set()
                elif item.kind == note.FEED_ITEM_KIND_BRIEFING:
                    briefing_id = item.briefing.briefing_id
                    self.arrived.setdefault(briefing_id, time.perf_counter())
                    self.match(briefing_id)

    def match(self, briefing_id: str) -> None:
        if briefing_id in self.sent and briefing_id in self.arrived:
            started = self.sent.pop(briefing_id)
            arrived = self.arrived.pop(briefing_id)
            self.arrival.set()
            self.briefing.latencies_ms.append((arrived - started) * 1000)

    async def check_in(self, rng: random.Random) -> None:
        k = self.checkin_pairs
        self.checkin_pairs += 1
        n = (k * 7919) % len(self.customers)  # walks every customer, then the next store
        store = self.stores[(k // len(self.customers)) % len(self.stores)]
        request = note_pb.CheckInRequest(
            request_id=rid(),
            identifiers=[
                identifier_pb2.Identifier(
                    type=identifier_pb2.IDENTIFIER_TYPE_LOYALTY_ID, value=f"BENCH-{n:06d}"
                )
            ],
            store_id=store,
            source=note.CHECK_IN_SOURCE_APP_GEOFENCE,
        )
        started = time.perf_counter()
        answer = await self.timed(
            "check_in", lambda: self.client.notification.CheckIn(request, timeout=10)
        )
        if answer is None:
            return
        briefing_id = answer.check_in.briefing_id
        if not self.window.counts(started, time.perf_counter()):
            self.arrived.pop(briefing_id, None)  # warm-up, or ended after the window
            return
        status = note.CheckInStatus.Name(answer.check_in.status)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if answer.check_in.status == note.CHECK_IN_STATUS_BRIEFED:
            self.sent[briefing_id] = started
            self.match(briefing_id)

    def briefings_missing(self) -> int:
        """BRIEFED check-ins of the window whose briefing has not arrived."""
        return len(self.sent)


async def retried(job: Callable[[], Awaitable[Any]], attempts: int = 4) -> Any:
    """A seeding step, again if the loaded machine let its deadline pass (the requests
    carry request ids or are idempotent, so a repeat changes nothing)."""
    for attempt in range(attempts):
        try:
            return await job()
        except (DeadlineExceeded, Unavailable):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(1.0 + attempt)
    return None


async def seed_stores(client: AsyncContinuum, stores: list[str]) -> None:
    """The catalogue, the stores, and stock (a third of the items not carried in each
    store, so briefings ask for nearby stock), a few calls at a time."""
    items = catalogue()
    gate = asyncio.Semaphore(4)

    async def call(make: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            await retried(make)

    def create(item: inv.Item) -> Callable[[], Awaitable[Any]]:
        request = inv_pb.CreateItemRequest(request_id=rid(), item=item)
        return lambda: client.inventory.CreateItem(request)

    await asyncio.gather(*(call(create(item)) for item in items))
    for n, store in enumerate(stores):
        location = inv_pb.CreateLocationRequest(
            request_id=rid(),
            location=inv.Location(
                location_id=store,
                name=f"Store {n}",
                type=inv.LOCATION_TYPE_STORE,
                coordinates=latlng_pb2.LatLng(latitude=48.80 + n * 0.01, longitude=2.35),
                time_zone="Europe/Paris",
                pickup_capable=True,
            ),
        )
        await retried(functools.partial(client.inventory.CreateLocation, location))

    def adjust(sku: str, store: str, units: int) -> Callable[[], Awaitable[Any]]:
        request = inv_pb.AdjustStockRequest(
            request_id=rid(),
            sku=sku,
            location_id=store,
            type=inv.STOCK_CHANGE_TYPE_RECEIPT,
            delta=units,
            reason="bench receipt",
        )
        return lambda: client.inventory.AdjustStock(request)

    await asyncio.gather(
        *(
            call(adjust(item.sku, store, 1 + (i * 7 + n) % 6))
            for n, store in enumerate(stores)
            for i, item in enumerate(items)
            if (i + n) % 3
        )
    )


async def settle_dedup_window(client: AsyncContinuum, seconds: int) -> None:
    await client.notification.UpdateNotificationSettings(
        note_pb.UpdateNotificationSettingsRequest(
            request_id=rid(),
            settings=note.NotificationSettings(
                check_in_dedup_window=duration_pb2.Duration(seconds=seconds)
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["check_in_dedup_window"]),
            actor="bench-suite",
        )
    )


@contextlib.asynccontextmanager
async def suite_stack(namespace: str) -> AsyncIterator[RunningSuite]:
    """The six services on the machine's stores (env) or the embedded stack in a temp dir."""
    database_url = os.environ.get("CONTINUUM_DATABASE_URL", "")
    redis_url = os.environ.get("CONTINUUM_REDIS_URL", "")
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp:
        data_dir = Path(tmp)
        urls: dict[str, str] = {}
        if database_url:
            urls = {s: with_database(database_url, f"{namespace}_{s}") for s in SERVICES}
        env = {
            "CONTINUUM_REDIS_NAMESPACE": namespace,
            "CONTINUUM_ENVIRONMENT": "bench",
            "CONTINUUM_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            "CONTINUUM_MAX_CONCURRENT_RPCS": "10000",
            **POOL,
        }
        suite = await start_suite(
            data_dir,
            ports={s: free_port() for s in SERVICES},
            env=env,
            service_env={"identity": {"CONTINUUM_IDENTIFIER_KEY": f"bench-{namespace}"}},
            database_urls=urls,
            redis_url=redis_url,
            token_key=os.urandom(32).hex(),
        )
        try:
            yield suite
        finally:
            await suite.stop()
            for url in urls.values():
                await drop_database(url)


async def run(args: Any) -> dict[str, Any]:
    namespace = f"bsuite{uuid.uuid4().hex[:8]}"
    stores = [f"bench-store-{n}" for n in range(args.stores)]
    started = time.perf_counter()
    log("starting the six services ...")
    async with suite_stack(namespace) as suite:
        log(f"serving after {time.perf_counter() - started:.1f}s; seeding ...")
        token = suite.token("bench-suite", kind=PrincipalKind.SERVICE)
        # Seeding gets long deadlines (the machine may be busy); the load the default 5 s.
        async with suite.client(token=token, deadline_s=60.0) as seeder:
            await retried(lambda: settle_dedup_window(seeder, 1))
            seed_started = time.perf_counter()
            await seed_stores(seeder, stores)
            customers = [""] * args.customers

            async def seed(n: int) -> None:
                customers[n] = await retried(
                    lambda: seed_customer(n, seeder.identity, seeder.profile, seeder.cart, ())
                )

            await bounded([seed(n) for n in range(args.customers)], concurrency=4)
            seed_s = time.perf_counter() - seed_started
        client = suite.client(token=token)
        async with client:
            log(f"seeded {len(stores)} stores, {args.customers} customers in {seed_s:.1f}s")

            load = Load(client, customers, stores)
            ready = [asyncio.Event() for _ in stores]
            readers = [
                asyncio.ensure_future(load.subscribe(suite, store, event))
                for store, event in zip(stores, ready, strict=True)
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), timeout=60)

            now = time.perf_counter()
            load.window = Window(now + args.warmup, now + args.warmup + args.duration)
            log(
                f"mixed load for {args.duration:.0f}s after {args.warmup:.0f}s warm-up: "
                f"{args.ingest_workers} ingest, {args.cart_workers} cart, "
                f"{args.checkin_workers} check-in workers, {len(stores)} feeds ..."
            )
            cpu_before = service_cpu(namespace)
            workers = [
                *(load.worker(load.ingest(args.batch), i) for i in range(args.ingest_workers)),
                *(load.worker(load.cart_op, 100 + i) for i in range(args.cart_workers)),
                *(load.worker(load.check_in, 200 + i) for i in range(args.checkin_workers)),
            ]
            await asyncio.gather(*workers)
            cpu_after = service_cpu(namespace)
            deadline = time.perf_counter() + args.grace
            while load.briefings_missing() and (left := deadline - time.perf_counter()) > 0:
                load.arrival.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(load.arrival.wait(), timeout=left)
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            missing = load.briefings_missing()
            if missing:
                load.briefing.errors["not_received"] = missing

        concurrency = args.ingest_workers + args.cart_workers + args.checkin_workers
        log(f"measuring the floor at concurrency {concurrency} ...")
        floor = await measure_floor(
            concurrency=concurrency, duration_s=min(10.0, args.duration), warmup_s=1.0
        )

    duration = args.duration
    per_operation = {name: op.summary(duration) for name, op in load.ops.items()}
    per_operation["briefing"] = load.briefing.summary(duration)
    requests = sum(len(op.latencies_ms) for op in load.ops.values())
    errors = sum(op.error_count for op in load.ops.values())
    floor_p99 = floor.percentile_ms(99)
    floor_p50 = floor.percentile_ms(50)
    for summary in per_operation.values():
        p50, p99 = summary["p50_ms"], summary["p99_ms"]
        summary["p50_vs_floor"] = round(p50 / floor_p50, 1) if p50 is not None else None
        summary["p99_vs_floor"] = round(p99 / floor_p99, 1) if p99 is not None else None
    rps = requests / duration
    cpu_s = {
        name: round(cpu_after.get(name, 0.0) - cpu_before.get(name, 0.0), 1)
        for name in sorted(cpu_after)
    }
    return {
        "benchmark": "suite",
        "duration_s": duration,
        "requests": requests,
        "requests_per_s": round(rps, 1),
        "errors": errors,
        "error_rate": round(errors / (requests + errors), 5) if requests + errors else 0.0,
        "per_operation": per_operation,
        "events_ingested": load.events_accepted,
        "events_per_s": round(load.events_accepted / duration, 1),
        "events_rejected": load.events_rejected,
        "check_in_statuses": load.statuses,
        "briefings_missing": load.briefing.errors.get("not_received", 0),
        "floor_requests_per_s": round(floor.requests_per_s, 1),
        "floor_p50_ms": round(floor_p50, 3),
        "floor_p99_ms": round(floor_p99, 3),
        "floor_ratio": round(rps / floor.requests_per_s, 4) if floor.requests_per_s else None,
        "concurrency": concurrency,
        "workers": {
            "ingest": args.ingest_workers,
            "cart": args.cart_workers,
            "check_in": args.checkin_workers,
            "feeds": len(stores),
        },
        "service_cpu_s": cpu_s,
        "customers": args.customers,
        "stores": len(stores),
        "batch": args.batch,
        "seed_s": round(seed_s, 1),
        "stores_backend": "external" if os.environ.get("CONTINUUM_DATABASE_URL") else "embedded",
        "load_average_1m": round(os.getloadavg()[0], 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
    }


def report(result: dict[str, Any]) -> None:
    """The human-readable table, on stderr."""
    log(f"{'operation':14} {'count':>7} {'per s':>8} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}")
    for name, op in result["per_operation"].items():
        p50 = "-" if op["p50_ms"] is None else f"{op['p50_ms']:.1f}"
        p99 = "-" if op["p99_ms"] is None else f"{op['p99_ms']:.1f}"
        log(
            f"{name:14} {op['count']:>7} {op['throughput']:>8.2f} {p50:>9} {p99:>9} "
            f"{op['errors']:>7}"
        )
    log(
        f"total {result['requests']} requests in {result['duration_s']:.0f}s "
        f"({result['requests_per_s']}/s), error rate {result['error_rate']}, "
        f"{result['events_per_s']} events/s ingested; floor {result['floor_requests_per_s']}/s "
        f"p99 {result['floor_p99_ms']} ms, floor_ratio {result['floor_ratio']}"
    )


def main() -> None:
    parser = base_arguments(__doc__ or "")
    parser.set_defaults(duration=float(os.environ.get("BENCH_DURATION", 300.0)), warmup=10.0)
    parser.add_argument("--stores", type=int, default=6)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--batch", type=int, default=100, help="events per IngestEvents call")
    parser.add_argument("--ingest-workers", type=int, default=2)
    parser.add_argument("--cart-workers", type=int, default=4)
    parser.add_argument("--checkin-workers", type=int, default=2)
    parser.add_argument("--grace", type=float, default=10.0)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    report(result)
    emit(result)


if __name__ == "__main__":
    main()
