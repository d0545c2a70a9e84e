"""Database.driven_transaction: text statements sent on the driver are still one
transaction with the session's own statements."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from continuum_runtime.db import Database, positional


async def _table(database: Database) -> str:
    name = f"driven_{uuid.uuid4().hex[:8]}"
    async with database.transaction() as session:
        await session.execute(text(f"CREATE TABLE {name} (k text PRIMARY KEY, v int NOT NULL)"))
    return name


async def _rows(database: Database, table: str) -> list[tuple[str, int]]:
    async with database.transaction() as session:
        rows = (await session.execute(text(f"SELECT k, v FROM {table} ORDER BY k"))).all()
    return [(r.k, r.v) for r in rows]


async def test_statements_commit_together_and_roll_back_together(database: Database) -> None:
    table = await _table(database)
    insert = text(f"INSERT INTO {table} (k, v) VALUES (:k, :v) RETURNING k, v")
    async with database.driven_transaction() as session:
        first = (await session.execute(insert, {"k": "a", "v": 1})).one()
        second = (await session.execute(insert, {"k": "b", "v": 2})).one()
        assert (first.k, second[1]) == ("a", 2)
        seen = await session.execute(text(f"SELECT k, v FROM {table} ORDER BY k"))
        assert [tuple(r) for r in seen] == [("a", 1), ("b", 2)]
    assert await _rows(database, table) == [("a", 1), ("b", 2)]

    with pytest.raises(sa_exc.DBAPIError) as failed:
        async with database.driven_transaction() as session:
            await session.execute(insert, {"k": "c", "v": 3})
            await session.execute(insert, {"k": "d", "v": 4})  # sent on the driver
            await session.execute(insert, {"k": "a", "v": 5})  # duplicate key
    assert "duplicate key" in str(failed.value.orig)
    # Nothing of the failed transaction is kept, the statements sent on the driver included.
    assert await _rows(database, table) == [("a", 1), ("b", 2)]


async def test_an_advisory_lock_taken_on_the_driver_is_held_to_the_end(
    database: Database,
) -> None:
    key = int(uuid.uuid4().int % 2**62)
    async with database.driven_transaction() as session:
        await session.execute(text("SELECT 1"))
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        async with database.transaction() as other:
            taken = (
                await other.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key})
            ).scalar_one()
        assert taken is False


def test_named_parameters_become_positional_once_each() -> None:
    sql, names = positional(
        "SELECT CAST(:a AS int), CAST(:b AS text), :a, '{}'::jsonb, x\\:y FROM t WHERE c = :c_2"
    )
    assert names == ("a", "b", "c_2")
    assert (
        sql
        == "SELECT CAST($1 AS int), CAST($2 AS text), $1, '{}'::jsonb, x\\:y FROM t WHERE c = $3"
    )


async def test_pooled_statements_commit_each_statement_and_report_errors_as_a_session_does(
    database: Database,
) -> None:
    table = await _table(database)
    insert = text(f"INSERT INTO {table} (k, v) VALUES (:k, :v) RETURNING v")
    assert (await database.statements.execute(insert, {"k": "a", "v": 7})).scalar_one() == 7
    assert await _rows(database, table) == [("a", 7)]  # committed on its own
    with pytest.raises(sa_exc.DBAPIError) as failed:
        await database.statements.execute(insert, {"k": "a", "v": 8})
    assert "duplicate key" in str(failed.value.orig)
    found = await database.statements.execute(
        text(f"SELECT k, v FROM {table} WHERE k = :k"), {"k": "a"}
    )
    assert [(r.k, r.v) for r in found] == [("a", 7)]
