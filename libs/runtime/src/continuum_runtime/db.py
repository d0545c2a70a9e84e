"""The service's PostgreSQL: an async SQLAlchemy engine on asyncpg and a session helper."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from continuum_runtime.config import DatabaseSettings
from continuum_runtime.telemetry import instrument_engine


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

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
