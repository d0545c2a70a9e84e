"""make bench-handoff: store check-in to briefing on the associate's stream, all six services.

Identity, inventory, profile, cart, recommendation and notification each run in a process
of their own on a fresh database, sharing one Redis namespace. Through the services' APIs:
inventory gets a catalogue (shoes in four sizes, bags) and ``--stores`` stores with stock;
``--customers`` customers are created in identity with a loyalty id, get a profile (name,
loyalty tier, recognition consent) in profile, two cart lines and a wishlist item in cart.
One associate stream per store subscribes to notification's feed. Then check-ins are fired
open-loop at ``--rate`` per second for ``--duration`` seconds (each a distinct customer and
store, so none is deduplicated), and for each the time from sending the check-in to the
briefing arriving on its store's stream is recorded. A briefing not received within
``--grace`` seconds after the last check-in counts as missing. The bare echo floor is
measured in the same run. Last line: one JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.type import latlng_pb2

from bench._harness import BENCH_TOKEN_KEY, emit, measure_floor, service_process
from bench._harness import arguments as base_arguments
from continuum.cart.v1 import cart_resources_pb2 as cart_res
from continuum.cart.v1 import cart_service_pb2 as cart_pb
from continuum.cart.v1 import cart_service_pb2_grpc as cart_grpc
from continuum.common.v1 import channel_pb2, identifier_pb2, money_pb2
from continuum.identity.v1 import identity_service_pb2 as id_pb
from continuum.identity.v1 import identity_service_pb2_grpc as id_grpc
from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from continuum.notification.v1 import notification_resources_pb2 as res
from continuum.notification.v1 import notification_service_pb2 as pb
from continuum.notification.v1 import notification_service_pb2_grpc as pb_grpc
from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum.profile.v1 import profile_service_pb2 as prof_pb
from continuum.profile.v1 import profile_service_pb2_grpc as prof_grpc
from continuum_runtime.auth import PrincipalKind, issue_token
from continuum_runtime.config import AuthSettings

WEB = channel_pb2.CHANNEL_WEB
SIZES = ("37", "38", "39", "40")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rid() -> str:
    return str(uuid.uuid4())


def loyalty(n: int) -> identifier_pb2.Identifier:
    return identifier_pb2.Identifier(
        type=identifier_pb2.IDENTIFIER_TYPE_LOYALTY_ID, value=f"BENCH-{n:06d}"
    )


def service_cpu(namespace: str) -> dict[str, float]:
    """CPU seconds used so far by each service process of this benchmark (Linux /proc:
    the processes whose environment carries the benchmark's Redis namespace)."""
    used: dict[str, float] = {}
    marker = f"CONTINUUM_REDIS_NAMESPACE={namespace}".encode()
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = next((a.removeprefix("continuum_") for a in argv if a.startswith("continuum_")), "")
        if name:
            used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def catalogue() -> list[inv.Item]:
    items = []
    for p in range(10):
        for size in SIZES:
            items.append(
                inv.Item(
                    sku=f"SHOE-{p}-{size}",
                    product_id=f"shoe-{p}",
                    name=f"Runner {p}",
                    brand="Continuum",
                    category="Women > Shoes",
                    colour="black",
                    size=size,
                    price=money_pb2.Money(currency_code="EUR", amount_minor=8900),
                    state=inv.ITEM_STATE_ACTIVE,
                )
            )
        items.append(
            inv.Item(
                sku=f"BAG-{p}",
                product_id=f"bag-{p}",
                name=f"Tote {p}",
                brand="Continuum",
                category="Women > Bags",
                colour="black",
                price=money_pb2.Money(currency_code="EUR", amount_minor=12900),
                state=inv.ITEM_STATE_ACTIVE,
            )
        )
    return items


async def bounded(jobs: list[Any], concurrency: int = 8) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Any) -> None:
        async with gate:
            await job

    await asyncio.gather(*(run(j) for j in jobs))


async def seed_inventory(stub: Any, md: Any, stores: list[str]) -> None:
    items = catalogue()
    await bounded(
        [
            stub.CreateItem(inv_pb.CreateItemRequest(request_id=rid(), item=i), metadata=md)
            for i in items
        ]
    )
    for n, store in enumerate(stores):
        await stub.CreateLocation(
            inv_pb.CreateLocationRequest(
                request_id=rid(),
                location=inv.Location(
                    location_id=store,
                    name=f"Store {n}",
                    type=inv.LOCATION_TYPE_STORE,
                    coordinates=latlng_pb2.LatLng(latitude=48.80 + n * 0.01, longitude=2.35),
                    time_zone="Europe/Paris",
                    pickup_capable=True,
                    pickup_buffer=0,
                ),
            ),
            metadata=md,
        )
    adjustments = []
    for n, store in enumerate(stores):
        for i, item in enumerate(items):
            if (i + n) % 3 == 0:
                continue  # some items are not carried here: nearby stock gets asked for
            adjustments.append(
                stub.AdjustStock(
                    inv_pb.AdjustStockRequest(
                        request_id=rid(),
                        sku=item.sku,
                        location_id=store,
                        type=inv.STOCK_CHANGE_TYPE_RECEIPT,
                        delta=1 + (i * 7 + n) % 6,
                        reason="bench receipt",
                    ),
                    metadata=md,
                )
            )
    await bounded(adjustments)


async def seed_customer(n: int, identity: Any, profile: Any, cart: Any, md: Any) -> str:
    resolved = await identity.ResolveIdentity(
        id_pb.ResolveIdentityRequest(
            request_id=rid(),
            identifiers=[
                loyalty(n),
                identifier_pb2.Identifier(
                    type=identifier_pb2.IDENTIFIER_TYPE_EMAIL, value=f"bench{n}@example.com"
                ),
            ],
            channel=WEB,
        ),
        metadata=md,
    )
    cid = str(resolved.resolution.customer_id)
    await profile.UpdateProfile(
        prof_pb.UpdateProfileRequest(
            request_id=rid(),
            profile=prof.Profile(
                customer_id=cid,
                contact=prof.ContactDetails(given_name=f"Shopper{n}", family_name="Bench"),
                loyalty_tier=("gold", "silver", "")[n % 3],
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["contact", "loyalty_tier"]),
        ),
        metadata=md,
    )
    consent_time = timestamp_pb2.Timestamp()
    consent_time.GetCurrentTime()
    await profile.UpdateConsent(
        prof_pb.UpdateConsentRequest(
            request_id=rid(),
            customer_id=cid,
            consents=[
                prof.Consent(
                    channel=channel_pb2.CHANNEL_STORE,
                    purpose=prof.CONSENT_PURPOSE_STORE_RECOGNITION,
                    status=prof.CONSENT_STATUS_GRANTED,
                    source="bench",
                    consent_time=consent_time,
                )
            ],
        ),
        metadata=md,
    )
    owner = cart_res.Owner(customer_id=cid)
    p = n % 10
    for sku in (f"SHOE-{p}-{SIZES[n % 4]}", f"BAG-{(p + 1) % 10}"):
        await cart.AddItem(
            cart_pb.AddItemRequest(request_id=rid(), owner=owner, sku=sku, quantity=1, channel=WEB),
            metadata=md,
        )
    await cart.AddWishlistItem(
        cart_pb.AddWishlistItemRequest(
            request_id=rid(), owner=owner, sku=f"SHOE-{(p + 3) % 10}-38", quantity=1, channel=WEB
        ),
        metadata=md,
    )
    return cid


# Small pools: six services share the machine's PostgreSQL (max_connections) with
# everything else running on it. No overflow: an overflow connection is closed when it
# is returned, and opening new PostgreSQL backends under a burst prolonged the burst
# (latency spikes of 1-2 s seen to follow the backends' churn).
POOL = {"CONTINUUM_DB__POOL_SIZE": "8", "CONTINUUM_DB__MAX_OVERFLOW": "0"}


async def run(args: Any) -> dict[str, Any]:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    stores = [f"bench-store-{n}" for n in range(args.stores)]
    async with contextlib.AsyncExitStack() as stack:
        log("starting identity, inventory, recommendation ...")
        identity = await stack.enter_async_context(
            service_process(
                "identity",
                namespace=namespace,
                env={"CONTINUUM_IDENTIFIER_KEY": "bench-key", **POOL},
            )
        )
        inventory = await stack.enter_async_context(
            service_process("inventory", namespace=namespace, env=POOL)
        )
        recommendation = await stack.enter_async_context(
            service_process(
                "recommendation",
                namespace=namespace,
                env={"CONTINUUM_INVENTORY_TARGET": inventory.target, **POOL},
            )
        )
        log("starting profile, cart ...")
        profile = await stack.enter_async_context(
            service_process(
                "profile",
                namespace=namespace,
                env={"CONTINUUM_IDENTITY_TARGET": identity.target, **POOL},
            )
        )
        cart = await stack.enter_async_context(
            service_process(
                "cart",
                namespace=namespace,
                env={"CONTINUUM_INVENTORY_TARGET": inventory.target, **POOL},
            )
        )
        log("starting notification ...")
        notification = await stack.enter_async_context(
            service_process(
                "notification",
                namespace=namespace,
                env={
                    "CONTINUUM_IDENTITY_TARGET": identity.target,
                    "CONTINUUM_PROFILE_TARGET": profile.target,
                    "CONTINUUM_CART_TARGET": cart.target,
                    "CONTINUUM_INVENTORY_TARGET": inventory.target,
                    "CONTINUUM_RECOMMENDATION_TARGET": recommendation.target,
                    **POOL,
                },
            )
        )
        md = identity.metadata
        log(f"seeding {len(stores)} stores and {args.customers} customers ...")
        seed_started = time.perf_counter()
        await seed_inventory(inv_grpc.InventoryServiceStub(inventory.channel), md, stores)
        id_stub = id_grpc.IdentityServiceStub(identity.channel)
        prof_stub = prof_grpc.ProfileServiceStub(profile.channel)
        cart_stub = cart_grpc.CartServiceStub(cart.channel)
        customers: list[str] = [""] * args.customers

        async def seed(n: int) -> None:
            customers[n] = await seed_customer(n, id_stub, prof_stub, cart_stub, md)

        await bounded([seed(n) for n in range(args.customers)])
        log(f"seeded in {time.perf_counter() - seed_started:.1f}s")

        stub = pb_grpc.NotificationServiceStub(notification.channel)
        auth = AuthSettings(token_key=BENCH_TOKEN_KEY)  # type: ignore[arg-type]
        received: dict[tuple[str, str], float] = {}
        missing_parts: dict[str, int] = {}
        ready = asyncio.Event()
        arrived = asyncio.Event()
        caught_up = 0

        async def subscribe(store: str) -> None:
            nonlocal caught_up
            token = issue_token(
                auth, subject=f"assoc-{store}", kind=PrincipalKind.ASSOCIATE, stores=[store]
            )
            call = stub.SubscribeFeed(
                pb.SubscribeFeedRequest(store_id=store),
                metadata=(("authorization", f"Bearer {token}"),),
            )
            async for answer in call:
                item = answer.item
                if item.kind == res.FEED_ITEM_KIND_CAUGHT_UP:
                    caught_up += 1
                    if caught_up == len(stores):
                        ready.set()
                elif item.kind == res.FEED_ITEM_KIND_BRIEFING:
                    received[(item.briefing.customer_id, item.store_id)] = time.perf_counter()
                    arrived.set()
                    for part in item.briefing.missing_parts:
                        missing_parts[part.part] = missing_parts.get(part.part, 0) + 1

        readers = [asyncio.ensure_future(subscribe(s)) for s in stores]
        await asyncio.wait_for(ready.wait(), timeout=30)

        sent: dict[tuple[str, str], float] = {}
        rpc_ms: list[float] = []
        statuses: dict[str, int] = {}
        errors: dict[str, int] = {}

        async def check_in(k: int, warmup: bool) -> None:
            n = k % args.customers
            store = stores[(k // args.customers) % len(stores)]
            started = time.perf_counter()
            if not warmup:
                sent[(customers[n], store)] = started
            try:
                answer = await stub.CheckIn(
                    pb.CheckInRequest(
                        request_id=rid(),
                        identifiers=[loyalty(n)],
                        store_id=store,
                        source=res.CHECK_IN_SOURCE_APP_GEOFENCE,
                    ),
                    metadata=md,
                    timeout=10,
                )
            except Exception as exc:
                name = type(exc).__name__
                code = getattr(exc, "code", None)
                if callable(code):
                    name = str(code().name)
                errors[name] = errors.get(name, 0) + 1
                return
            if warmup:
                return
            rpc_ms.append((time.perf_counter() - started) * 1000)
            status = res.CheckInStatus.Name(answer.check_in.status)
            statuses[status] = statuses.get(status, 0) + 1

        total = int(args.rate * args.duration)
        warm = int(args.rate * args.warmup)
        if total + warm > args.customers * len(stores):
            raise SystemExit(
                f"{total + warm} check-ins need more than {args.customers} customers x "
                f"{len(stores)} stores distinct pairs: raise --customers or --stores"
            )
        log(f"firing {total} check-ins at {args.rate}/s after {warm} warm-up ...")
        tasks: list[asyncio.Future[None]] = []
        cpu_before = service_cpu(namespace)
        client_before = own_cpu()
        interval = 1.0 / args.rate
        begin = time.perf_counter()
        for k in range(warm + total):
            target = begin + k * interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(check_in(k, warmup=k < warm)))
        fire_s = time.perf_counter() - begin
        await asyncio.gather(*tasks)
        cpu_after = service_cpu(namespace)
        client_after = own_cpu()
        fired = warm + total
        cpu_ms = {
            name: round((cpu_after[name] - cpu_before.get(name, 0.0)) * 1000 / fired, 1)
            for name in sorted(cpu_after)
        }
        cpu_ms["bench_client"] = round((client_after - client_before) * 1000 / fired, 1)
        deadline = time.perf_counter() + args.grace
        while not all(key in received for key in sent):
            arrived.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), timeout=left)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

        briefed = statuses.get("CHECK_IN_STATUS_BRIEFED", 0)
        latencies = np.asarray(
            [(received[key] - at) * 1000 for key, at in sent.items() if key in received],
            dtype=np.float64,
        )
        missing = sum(1 for key in sent if key not in received)
        log("measuring the floor ...")
        floor = await measure_floor(duration_s=min(5.0, args.duration), warmup_s=1.0)

        def pct(values: Any, q: float) -> float:
            return round(float(np.percentile(values, q)), 2) if len(values) else float("nan")

        return {
            "benchmark": "handoff",
            "checkins": len(sent),
            "briefed": briefed,
            "briefings_received": int(latencies.size),
            "briefings_missing": missing,
            "briefing_p50_ms": pct(latencies, 50),
            "briefing_p90_ms": pct(latencies, 90),
            "briefing_p99_ms": pct(latencies, 99),
            "briefing_max_ms": round(float(latencies.max()), 2) if latencies.size else None,
            "checkin_rpc_p50_ms": pct(rpc_ms, 50),
            "checkin_rpc_p99_ms": pct(rpc_ms, 99),
            "rate_per_s": args.rate,
            "achieved_rate_per_s": round(total / fire_s, 1) if fire_s > 0 else None,
            "duration_s": args.duration,
            "statuses": statuses,
            "errors": errors,
            "missing_parts": missing_parts,
            "cpu_ms_per_checkin": cpu_ms,
            "load_average_1m": round(os.getloadavg()[0], 1),
            "stores": len(stores),
            "customers": args.customers,
            "floor_p50_ms": round(floor.percentile_ms(50), 3),
            "floor_p99_ms": round(floor.percentile_ms(99), 3),
            "briefing_p99_vs_floor_p99": round(pct(latencies, 99) / floor.percentile_ms(99), 1)
            if latencies.size
            else None,
            "target_p99_ms": 30,
            "machine": f"{platform.machine()} {platform.python_version()}",
        }


def main() -> None:
    parser = base_arguments(__doc__ or "")
    parser.set_defaults(duration=60.0, warmup=2.0)
    parser.add_argument("--rate", type=float, default=50.0, help="check-ins per second")
    parser.add_argument("--stores", type=int, default=8)
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--grace", type=float, default=5.0)
    args = parser.parse_args()
    emit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
