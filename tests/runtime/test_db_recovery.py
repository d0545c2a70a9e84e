"""A database connection that dies (server restart, failover) costs one call, not the pool."""

from __future__ import annotations

import pytest
from sqlalchemy import text

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
