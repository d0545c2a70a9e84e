"""Pytest fixtures for every Continuum test suite (load with ``pytest_plugins``).

Tests talk to a real PostgreSQL and a real Redis. When ``CONTINUUM_DATABASE_URL`` and
``CONTINUUM_REDIS_URL`` are set, those servers are used (each test gets its own new
database on that PostgreSQL server and its own Redis key namespace); otherwise the embedded
stack is started in ``.data/test`` under the project.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from continuum_runtime.app import ServiceContext, open_context
from continuum_runtime.auth import PrincipalKind, issue_token
from continuum_runtime.config import AuthSettings, ServiceSettings
from continuum_runtime.db import Database
from continuum_runtime.embedded import (
    drop_database,
    embedded_stack,
    ensure_database,
    with_database,
)
from continuum_runtime.server import ServiceServer
from continuum_runtime.telemetry import setup_telemetry


@dataclass(frozen=True)
class TestStores:
    """Where the test PostgreSQL server and Redis are."""

    __test__ = False  # not a test class, despite the name

    postgres_url: str  # any database on the server; tests derive their own from it
    redis_url: str
    embedded: bool


def _project_root() -> Path:
    here = Path.cwd()
    for candidate in (here, *here.parents):
        if (candidate / "Makefile").exists() and (candidate / "proto").is_dir():
            return candidate
    return here


@pytest.fixture(scope="session")
def test_stores() -> Iterator[TestStores]:
    database_url = os.environ.get("CONTINUUM_DATABASE_URL", "")
    redis_url = os.environ.get("CONTINUUM_REDIS_URL", "")
    if database_url and redis_url:
        yield TestStores(database_url, redis_url, embedded=False)
        return
    stack = embedded_stack(_project_root() / ".data" / "test")
    yield TestStores(
        database_url or stack.postgres_url("postgres"),
        redis_url or stack.redis_url(),
        embedded=True,
    )


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    setup_telemetry("continuum-tests", exporter=exporter)
    return exporter


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    """The in-memory span exporter, emptied at the start of the test."""
    span_exporter.clear()
    return span_exporter


@asynccontextmanager
async def fresh_database(test_stores: TestStores, prefix: str = "t") -> AsyncIterator[str]:
    """A new, empty database on the test server (for a second service in a test), dropped
    afterwards."""
    url = with_database(test_stores.postgres_url, f"{prefix}_{uuid.uuid4().hex[:16]}")
    await ensure_database(url)
    try:
        yield url
    finally:
        await drop_database(url)


def service_fields(
    test_stores: TestStores, namespace: str, auth: AuthSettings, **extra: Any
) -> dict[str, Any]:
    """The settings every in-process test service shares (its Redis, key namespace, token
    key, test environment, a free port, no heap freezing: the services share the test
    process), plus ``extra``; add the service's own."""
    return {
        "redis_url": SecretStr(test_stores.redis_url),
        "redis_namespace": namespace,
        "auth": auth,
        "environment": "test",
        "port": 0,
        "freeze_heap": False,
        **extra,
    }


@asynccontextmanager
async def serving(
    settings: ServiceSettings,
    migrations: Path,
    make_server: Callable[[ServiceContext], ServiceServer],
) -> AsyncIterator[tuple[ServiceServer, ServiceContext]]:
    """A service in-process on loopback (``settings.port`` 0 picks a free port): migrated,
    started, and drained afterwards."""
    ctx = await open_context(settings, migrations)
    server = make_server(ctx)
    await server.start()
    try:
        yield server, ctx
    finally:
        await server.drain(grace_s=0.5)


@pytest_asyncio.fixture
async def database_url(test_stores: TestStores) -> AsyncIterator[str]:
    """A new, empty database for this test; dropped afterwards."""
    async with fresh_database(test_stores) as url:
        yield url


@pytest_asyncio.fixture
async def database(
    database_url: str, span_exporter: InMemorySpanExporter
) -> AsyncIterator[Database]:
    db = Database(database_url)
    yield db
    await db.dispose()


@pytest.fixture
def redis_namespace() -> str:
    """A key prefix of this test's own, so tests never see each other's streams."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture
async def redis_client(
    test_stores: TestStores, redis_namespace: str, span_exporter: InMemorySpanExporter
) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(test_stores.redis_url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{redis_namespace}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(scope="session")
def auth_settings() -> AuthSettings:
    return AuthSettings(token_key=SecretStr(uuid.uuid4().hex + uuid.uuid4().hex))


TokenFactory = Callable[..., str]


@pytest.fixture
def make_token(auth_settings: AuthSettings) -> TokenFactory:
    """Mint a token: ``make_token(kind=PrincipalKind.ASSOCIATE, stores=["s1"])``."""

    def make(
        subject: str = "test-client",
        kind: PrincipalKind = PrincipalKind.CHANNEL_APP,
        stores: tuple[str, ...] | list[str] = (),
        ttl_s: float = 300.0,
        key: str | None = None,
    ) -> str:
        return issue_token(
            auth_settings, subject=subject, kind=kind, stores=stores, ttl_s=ttl_s, key=key
        )

    return make


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float = 10.0, interval_s: float = 0.05
) -> None:
    """Wait until ``check`` returns True (AssertionError after ``timeout_s``)."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)
