"""The service's PostgreSQL: an async SQLAlchemy engine on asyncpg and a session helper."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The read pool's connections change no session state (one autocommit SELECT each),
    so a connection goes back to the pool as it is: no RESET ALL round trip per read."""


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
        self._read_pool: asyncpg.Pool | None = None
        self._read_pool_lock = asyncio.Lock()

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
        pool = self._read_pool or await self._open_read_pool()
        with db_span(_tracer, span_name):
            async with pool.acquire(timeout=self._settings.pool_timeout_s) as conn:
                rows: list[Any] = await conn.fetch(sql, *args)
        return rows

    async def _open_read_pool(self) -> asyncpg.Pool:
        async with self._read_pool_lock:
            if self._read_pool is None:
                cfg = self._settings
                self._read_pool = await asyncpg.create_pool(
                    to_asyncpg_dsn(self.url),
                    min_size=1,
                    max_size=cfg.read_pool_size,
                    reset=_keep_session,
                    timeout=cfg.connect_timeout_s,
                    server_settings={
                        "statement_timeout": str(cfg.statement_timeout_ms),
                        "application_name": "continuum",
                    },
                )
            return self._read_pool

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._read_pool is not None:
            await self._read_pool.close()
            self._read_pool = None
        await self.engine.dispose()
