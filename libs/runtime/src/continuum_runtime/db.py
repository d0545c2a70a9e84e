"""The service's PostgreSQL: an async SQLAlchemy engine on asyncpg and a session helper."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache, partial
from typing import Any, Protocol

import asyncpg
from opentelemetry import trace
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.elements import TextClause

from continuum_runtime.config import DatabaseSettings
from continuum_runtime.embedded import to_asyncpg_dsn
from continuum_runtime.telemetry import db_span, instrument_engine

_tracer = trace.get_tracer("continuum_runtime.db")


# A ``:name`` bind parameter as SQLAlchemy's text() reads it (not ``::type``, not ``\:``).
_NAMED = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


@lru_cache(maxsize=1024)
def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """A text() statement's ``:name`` parameters as asyncpg's ``$n``, and the names in
    order (a name used twice is one parameter)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _NAMED.sub(number, sql), tuple(names)


class Record:
    """An asyncpg record read like a SQLAlchemy row: by attribute, index or iteration."""

    __slots__ = ("_data",)

    def __init__(self, record: Any) -> None:
        self._data = record

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, index: int) -> Any:
        return self._data[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data.values())

    def __len__(self) -> int:
        return len(self._data)

    def _asdict(self) -> dict[str, Any]:
        """As SQLAlchemy's Row._asdict: the columns by name."""
        return dict(self._data.items())


class Rows:
    """The rows of one statement sent on the driver, with the parts of SQLAlchemy's Result
    that stores use."""

    __slots__ = ("_rows",)

    def __init__(self, rows: Sequence[Any]) -> None:
        self._rows = [Record(r) for r in rows]

    def __iter__(self) -> Iterator[Record]:
        return iter(self._rows)

    def all(self) -> list[Record]:
        return list(self._rows)

    def first(self) -> Record | None:
        return self._rows[0] if self._rows else None

    def one(self) -> Record:
        if len(self._rows) != 1:
            raise sa_exc.NoResultFound() if not self._rows else sa_exc.MultipleResultsFound()
        return self._rows[0]

    def one_or_none(self) -> Record | None:
        if len(self._rows) > 1:
            raise sa_exc.MultipleResultsFound()
        return self._rows[0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]


async def _fetch_text(
    fetch: Callable[..., Awaitable[list[Any]]],
    statement: TextClause,
    params: Mapping[str, Any] | None,
) -> Rows:
    """A text() statement through ``fetch`` (sql, *args) with $n parameters; a PostgreSQL
    error as SQLAlchemy's DBAPIError, as a session raises it."""
    sql, names = positional(statement.text)
    values = params or {}
    try:
        rows = await fetch(sql, *(values[n] for n in names))
    except asyncpg.PostgresError as exc:
        raise sa_exc.DBAPIError(statement.text, dict(values), exc) from exc
    return Rows(rows)


class Executor(Protocol):
    """What a store function needs of a transaction: statements with named parameters.
    An AsyncSession is one; so is a :class:`DriverSession`."""

    async def execute(self, statement: Any, params: Any = None) -> Any: ...


class DriverSession:
    """A SQLAlchemy session's transaction whose text() statements go straight to the
    asyncpg connection under it: the same connection and transaction, without SQLAlchemy's
    per-statement execution layers (in identity's resolve, nineteen statements sent 0.55
    ms apart through the session; on the driver its p50 went from 11.4 to 8.5 ms). Other
    statements (Core constructs) run through the session as usual. A PostgreSQL error
    comes out as SQLAlchemy's DBAPIError, as through the session."""

    def __init__(self, session: AsyncSession, driver: Any) -> None:
        self.session = session
        self._driver = driver
        self._begun = False

    async def execute(self, statement: Any, params: Mapping[str, Any] | None = None) -> Any:
        if not self._begun or not isinstance(statement, TextClause):
            # SQLAlchemy begins the transaction on the connection with its first statement
            # (and only then commits it): that one goes through the session.
            self._begun = True
            return await self.session.execute(statement, params)
        with db_span(_tracer, statement.text.split(None, 1)[0]):
            return await _fetch_text(self._driver.fetch, statement, params)


class PooledStatements:
    """Single text() statements, each one its own transaction, on the driver-level read
    pool (:meth:`Database.fetch`): an :class:`Executor` for hot paths whose reads are one
    statement each and whose write is one statement (atomic on its own). A PostgreSQL
    error comes out as SQLAlchemy's DBAPIError, as through a session."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def execute(self, statement: TextClause, params: Mapping[str, Any] | None = None) -> Rows:
        name = statement.text.split(None, 1)[0]
        return await _fetch_text(partial(self._db.fetch, name), statement, params)


class ReadPool:
    """The driver connections behind :meth:`Database.fetch`: one autocommit statement per
    checkout, so a connection goes back as it is (no RESET round trip) and checkout is a
    queue get.

    asyncpg's own pool costs about 45 µs of CPU more per read (a task for its acquire
    timeout, another for the shielded release, the reset bookkeeping), which on a
    cart read was 8% of the server's CPU. Here a wait for a connection is bounded
    by the call's deadline instead. A connection that failed below PostgreSQL (a broken
    socket, a dead server) is closed and replaced on its next checkout, so a restart of
    PostgreSQL costs one call per connection, as with SQLAlchemy's pool; a cancelled
    read or an error PostgreSQL reported keeps its connection (a new backend costs far
    more than waiting for a cancellation to finish).
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
        except (asyncio.CancelledError, asyncpg.PostgresError):
            # The connection is still good: asyncpg completes a cancelled statement's
            # cancellation before the next one, and an error PostgreSQL reported (a
            # statement timeout, a constraint) leaves the session usable. One the server
            # closed (e.g. admin shutdown) is replaced at its next checkout.
            self._slots.put_nowait(conn)
            raise
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
        # Single statements on that pool, for store functions written against Executor.
        self.statements = PooledStatements(self)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def driven_transaction(self) -> AsyncIterator[DriverSession]:
        """Like :meth:`transaction`, with text() statements sent on the driver (see
        :class:`DriverSession`); for write paths made of many small statements."""
        async with self.transaction() as session:
            conn = await session.connection()
            raw = await conn.get_raw_connection()
            yield DriverSession(session, raw.driver_connection)

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
