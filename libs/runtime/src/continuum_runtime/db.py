"""The service's PostgreSQL: an async SQLAlchemy engine on asyncpg and a session helper."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from opentelemetry import trace
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from continuum_runtime.config import DatabaseSettings
from continuum_runtime.embedded import to_asyncpg_dsn
from continuum_runtime.telemetry import db_span, instrument_engine

_tracer = trace.get_tracer("continuum_runtime.db")


class ReadPool:
    """The driver connections behind :meth:`Database.fetch`: one autocommit statement per
    checkout, so a connection goes back as it is (no RESET round trip) and checkout is a
    queue get.

    asyncpg's own pool costs about 45 µs of CPU more per read (a task for its acquire
    timeout, another for the shielded release, the reset bookkeeping), which on a
    cart read was 8% of the server's CPU. Here a wait for a connection is bounded
    by the call's deadline instead, and a connection that saw any error is closed and
    replaced on its next checkout, so a restart of PostgreSQL costs one call per
    connection, as with SQLAlchemy's pool.
    """

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], size: int) -> None:
        self._connect = connect
        # A slot is an open connection or None (to be opened on checkout).
        self._slots: asyncio.Queue[asyncpg.Connection | None] = asyncio.Queue()
        for _ in range(size):
            self._slots.put_nowait(None)
        self._all: set[asyncpg.Connection] = set()

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        conn = await self._slots.get()
        try:
            if conn is None or conn.is_closed():
                conn = None
                conn = await self._connect()
                self._all.add(conn)
            rows: list[Any] = await conn.fetch(sql, *args)
        except BaseException:
            if conn is not None:
                self._all.discard(conn)
                conn.terminate()
            self._slots.put_nowait(None)
            raise
        self._slots.put_nowait(conn)
        return rows

    async def close(self) -> None:
        """Close every connection (a later read opens new ones)."""
        for conn in list(self._all):
            self._all.discard(conn)
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except Exception:
                conn.terminate()


class Database:
    """One engine and session factory per service.

    Every connection runs with a statement timeout and an idle-in-transaction timeout
    (PostgreSQL's defaults are none), so a stuck query cannot hold a pool slot forever.
    """

    def __init__(self, url: str, settings: DatabaseSettings | None = None) -> None:
        cfg = settings or DatabaseSettings()
        self.url = url
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=cfg.pool_size,
            max_overflow=cfg.max_overflow,
            pool_timeout=cfg.pool_timeout_s,
            pool_pre_ping=cfg.pre_ping,
            connect_args={
                "timeout": cfg.connect_timeout_s,
                "server_settings": {
                    "statement_timeout": str(cfg.statement_timeout_ms),
                    "idle_in_transaction_session_timeout": str(cfg.idle_in_transaction_timeout_ms),
                    "application_name": "continuum",
                },
            },
        )
        instrument_engine(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._settings = cfg
        self._read_pool = ReadPool(self._read_connection, cfg.read_pool_size)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncConnection]:
        """A connection in autocommit mode for single-statement reads on hot paths: no
        BEGIN/COMMIT round trips. Each statement sees the latest committed data."""
        async with self.engine.connect() as conn:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    async def fetch(self, span_name: str, sql: str, *args: Any) -> list[Any]:
        """One read statement on a pooled asyncpg connection (autocommit), inside a span of
        its own: for the hottest reads, without SQLAlchemy's checkout and execution layers
        (about a third of the cost of ``reader()``). ``sql`` uses
        $1, $2 ... placeholders. A database outage raises the driver's connection errors,
        which callers see as UNAVAILABLE; the pool reconnects on the next call."""
        with db_span(_tracer, span_name):
            return await self._read_pool.fetch(sql, *args)

    async def _read_connection(self) -> asyncpg.Connection:
        cfg = self._settings
        conn: asyncpg.Connection = await asyncpg.connect(
            to_asyncpg_dsn(self.url),
            timeout=cfg.connect_timeout_s,
            server_settings={
                "statement_timeout": str(cfg.statement_timeout_ms),
                "application_name": "continuum",
            },
        )
        return conn

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self._read_pool.close()
        await self.engine.dispose()
