"""What every benchmark shares: a closed-loop load generator, server processes, the floor.

A benchmark measures its own figures and, in the same run, the floor (a bare grpc.aio unary
echo server and client, see `bench.floor`), and reports ratios against it: machines are noisy,
ratios measured side by side are comparable across them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from continuum_runtime.auth import PrincipalKind, issue_token
from continuum_runtime.config import AuthSettings, project_data_dir
from continuum_runtime.embedded import (
    drop_database,
    ensure_database,
    resolve_store_urls,
    with_database,
)

DEFAULT_DURATION_S = 5.0
DEFAULT_WARMUP_S = 1.0
DEFAULT_CONCURRENCY = 32


@dataclass(frozen=True)
class LoadResult:
    """Outcome of a closed-loop load: every worker issues its next call when one returns."""

    requests: int
    errors: int
    elapsed_s: float
    concurrency: int
    latencies_ms: np.ndarray[Any, np.dtype[np.float64]] = field(repr=False)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        if self.latencies_ms.size == 0:
            return float("nan")
        return float(np.percentile(self.latencies_ms, q))

    def summary(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "concurrency": self.concurrency,
            "duration_s": round(self.elapsed_s, 3),
            "requests_per_s": round(self.requests_per_s, 1),
            "p50_ms": round(self.percentile_ms(50), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
        }


async def closed_loop(
    call: Callable[[int], Awaitable[object]],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    duration_s: float = DEFAULT_DURATION_S,
    warmup_s: float = DEFAULT_WARMUP_S,
) -> LoadResult:
    """Run `call(worker_index)` from `concurrency` workers for `duration_s` after a warm-up.

    Calls that raise count as errors and are not in the latencies. Only calls that both start
    and finish inside the measured window count.
    """
    latencies: list[float] = []
    errors = 0
    stop_at = 0.0
    measure_from = 0.0

    async def worker(index: int) -> None:
        nonlocal errors
        clock = time.perf_counter
        while True:
            started = clock()
            if started >= stop_at:
                return
            try:
                await call(index)
            except Exception:
                if started >= measure_from:
                    errors += 1
                continue
            if started >= measure_from:
                finished = clock()
                if finished <= stop_at:
                    latencies.append(finished - started)

    begin = time.perf_counter()
    measure_from = begin + warmup_s
    stop_at = measure_from + duration_s
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return LoadResult(
        requests=len(latencies),
        errors=errors,
        elapsed_s=duration_s,
        concurrency=concurrency,
        latencies_ms=np.asarray(latencies, dtype=np.float64) * 1000.0,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def server_process(
    argv: Sequence[str], *, port: int, env: dict[str, str] | None = None, timeout_s: float = 60
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start a server in its own process and wait until its port accepts connections."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, env={**os.environ, **(env or {})}
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{' '.join(argv)} did not listen on {port}") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            break
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# One token key for every service a benchmark starts, and a service token signed with it.
BENCH_TOKEN_KEY = os.urandom(32).hex()


def bench_token(subject: str = "bench") -> str:
    settings = AuthSettings(token_key=BENCH_TOKEN_KEY)  # type: ignore[arg-type]
    return issue_token(settings, subject=subject, kind=PrincipalKind.SERVICE, ttl_s=6 * 3600)


@dataclass
class RunningService:
    """A Continuum service in a process of its own, on a fresh database."""

    name: str
    target: str
    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]
    database_url: str
    redis_url: str


# Services of one benchmark share a Redis namespace; the last of them to stop removes its
# keys (event streams, feeds, caches), as its database is dropped. Left behind, every run's
# streams stayed in the embedded Redis: its append-only file grew by tens of MB a run, and
# the rewrites that followed forked the server in the middle of later runs.
_namespace_users: dict[str, int] = {}


async def _forget_namespace(redis_url: str, namespace: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        batch: list[Any] = []
        async for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch = []
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def service_process(
    service: str, *, namespace: str, env: dict[str, str] | None = None
) -> AsyncIterator[RunningService]:
    """Start ``continuum_<service> serve`` on a new database of the benchmark's PostgreSQL
    (CONTINUUM_DATABASE_URL, or the embedded stack) with Redis key namespace ``namespace``
    (services of one benchmark share it, so their events flow); the database is dropped
    afterwards."""
    urls = await resolve_store_urls(
        "bench",
        os.environ.get("CONTINUUM_DATABASE_URL", ""),
        os.environ.get("CONTINUUM_REDIS_URL", ""),
        project_data_dir(),
    )
    database_url = with_database(urls.database_url, f"bench_{service}_{os.urandom(4).hex()}")
    await ensure_database(database_url)
    port = free_port()
    settings = {
        "CONTINUUM_PORT": str(port),
        "CONTINUUM_DATABASE_URL": database_url,
        "CONTINUUM_REDIS_URL": urls.redis_url,
        "CONTINUUM_REDIS_NAMESPACE": namespace,
        "CONTINUUM_AUTH__TOKEN_KEY": BENCH_TOKEN_KEY,
        "CONTINUUM_ENVIRONMENT": "bench",
        "CONTINUUM_LOG_LEVEL": "WARNING",
        "CONTINUUM_MAX_CONCURRENT_RPCS": "10000",
        **(env or {}),
    }
    target = f"127.0.0.1:{port}"
    _namespace_users[namespace] = _namespace_users.get(namespace, 0) + 1
    try:
        async with (
            server_process(["-m", f"continuum_{service}", "serve"], port=port, env=settings),
            grpc.aio.insecure_channel(target) as channel,
        ):
            await channel.channel_ready()
            yield RunningService(
                name=service,
                target=target,
                channel=channel,
                metadata=(("authorization", f"Bearer {bench_token()}"),),
                database_url=database_url,
                redis_url=urls.redis_url,
            )
    finally:
        await drop_database(database_url)
        _namespace_users[namespace] -= 1
        if not _namespace_users[namespace]:
            del _namespace_users[namespace]
            try:
                await _forget_namespace(urls.redis_url, namespace)
            except Exception as exc:  # a teardown step: never hide the run's own outcome
                print(f"could not remove Redis namespace {namespace}: {exc!r}", file=sys.stderr)


ECHO_METHOD = "/continuum.bench.Floor/Echo"
FLOOR_PAYLOAD = b"x" * 64


async def measure_floor(
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    duration_s: float = DEFAULT_DURATION_S,
    warmup_s: float = DEFAULT_WARMUP_S,
) -> LoadResult:
    """The floor: a bare grpc.aio unary echo, server and client in separate processes."""
    port = free_port()
    async with (
        server_process(["-m", "bench.floor", "--serve", str(port)], port=port),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        echo = channel.unary_unary(ECHO_METHOD, request_serializer=None, response_deserializer=None)
        await channel.channel_ready()

        async def call(_: int) -> object:
            return await echo(FLOOR_PAYLOAD, timeout=10)

        return await closed_loop(
            call, concurrency=concurrency, duration_s=duration_s, warmup_s=warmup_s
        )


def ratios(measured: LoadResult, floor: LoadResult) -> dict[str, float]:
    """The measured figures as multiples of the floor's (throughput: share of the floor)."""
    return {
        "requests_per_s_vs_floor": round(measured.requests_per_s / floor.requests_per_s, 4),
        "p50_vs_floor": round(measured.percentile_ms(50) / floor.percentile_ms(50), 2),
        "p99_vs_floor": round(measured.percentile_ms(99) / floor.percentile_ms(99), 2),
    }


def arguments(description: str) -> argparse.ArgumentParser:
    """Flags every benchmark takes; BENCH_DURATION sets the default duration."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("BENCH_DURATION", DEFAULT_DURATION_S)),
        help="measured seconds per phase (default: $BENCH_DURATION or %(default)s)",
    )
    parser.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    return parser


def emit(result: dict[str, Any]) -> None:
    """Print the benchmark's result as one JSON object on the last line."""
    print(json.dumps(result, sort_keys=False), flush=True)
