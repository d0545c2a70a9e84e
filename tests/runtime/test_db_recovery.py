"""A database connection that dies (server restart, failover) costs one call, not the pool."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text

from continuum_runtime.config import DatabaseSettings
from continuum_runtime.db import Database
from continuum_runtime.errors import is_dependency_outage


async def test_killed_connections_fail_one_call_as_an_outage_then_the_pool_reconnects(
    database: Database, database_url: str
) -> None:
    async with database.transaction() as session:
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    killer = Database(database_url)
    try:
        async with killer.transaction() as session:
            killed = (
                await session.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            ).scalar_one()
        assert killed >= 1
        with pytest.raises(Exception) as caught:  # noqa: PT011 - any driver error will do
            async with database.transaction() as session:
                await session.execute(text("SELECT 1"))
        assert is_dependency_outage(caught.value)
        async with database.transaction() as session:
            assert (await session.execute(text("SELECT 2"))).scalar_one() == 2
    finally:
        await killer.dispose()


async def test_the_read_pool_survives_killed_connections(
    database: Database, database_url: str
) -> None:
    assert [tuple(r) for r in await database.fetch("SELECT probe", "SELECT $1::int", 7)] == [(7,)]
    killer = Database(database_url)
    try:
        async with killer.transaction() as session:
            await session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        answers: list[int] = []
        failures: list[Exception] = []
        for _ in range(3):
            try:
                answers.append((await database.fetch("SELECT probe", "SELECT 8"))[0][0])
            except Exception as exc:  # the first call may see a dead pooled connection
                failures.append(exc)
        assert answers
        assert answers[-1] == 8
        assert all(is_dependency_outage(exc) for exc in failures), [repr(e) for e in failures]
    finally:
        await killer.dispose()


async def test_reads_beyond_the_read_pool_wait_their_turn_and_cancelled_reads_free_their_slot(
    database_url: str,
) -> None:
    database = Database(database_url, DatabaseSettings(read_pool_size=2))
    try:
        sql = "SELECT $1::int FROM pg_sleep(0.02)"
        # Ten readers on two connections: every one gets its own answer.
        answers = await asyncio.gather(*(database.fetch("SELECT probe", sql, n) for n in range(10)))
        assert [rows[0][0] for rows in answers] == list(range(10))
        # Callers that give up mid-read (a deadline) must not take their connection along.
        for _ in range(4):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.005):
                    await database.fetch("SELECT probe", "SELECT 1 FROM pg_sleep(1)")
        async with asyncio.timeout(10):
            again = await asyncio.gather(*(database.fetch("SELECT probe", sql, n) for n in (7, 8)))
        assert [rows[0][0] for rows in again] == [7, 8]
    finally:
        await database.dispose()


async def test_a_cancelled_or_failed_read_keeps_its_connection(database_url: str) -> None:
    # Opening a PostgreSQL backend costs far more than waiting for a cancellation: a read
    # its caller gave up on, or one PostgreSQL refused, leaves the same backend in the pool.
    database = Database(database_url, DatabaseSettings(read_pool_size=1))
    try:
        backend = "SELECT pg_backend_pid()"
        first = (await database.fetch("SELECT probe", backend))[0][0]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await database.fetch("SELECT probe", "SELECT 1 FROM pg_sleep(2)")
        async with asyncio.timeout(5):  # the cancelled sleep does not hold the connection
            assert (await database.fetch("SELECT probe", backend))[0][0] == first
        with pytest.raises(asyncpg.DivisionByZeroError):
            await database.fetch("SELECT probe", "SELECT 1 / 0")
        assert (await database.fetch("SELECT probe", backend))[0][0] == first
    finally:
        await database.dispose()
