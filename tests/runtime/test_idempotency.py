"""request_id idempotency against real PostgreSQL: one answer per id, even when concurrent."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf import wrappers_pb2
from sqlalchemy import text

from continuum.identity.v1 import identity_service_pb2 as pb
from continuum_runtime import idempotency
from continuum_runtime.db import Database
from continuum_runtime.errors import FailedPrecondition
from continuum_runtime.events.schema import metadata


@pytest.fixture
async def db(database: Database) -> Database:
    async with database.engine.begin() as conn:
        await conn.run_sync(
            lambda sync: metadata.create_all(sync, tables=[idempotency.request_log_table])
        )
        await conn.execute(text("CREATE TABLE counter (n int NOT NULL)"))
        await conn.execute(text("INSERT INTO counter VALUES (0)"))
    return database


async def run(db: Database, request_id: str, body: str) -> int:
    """A mutation that counts how often it really ran and answers the new count."""
    request = pb.ForgetCustomerRequest(request_id=request_id, customer_id=body, actor="test")
    async with db.transaction() as session:
        earlier = await idempotency.begin(session, "Increment", request, wrappers_pb2.Int64Value)
        if earlier is not None:
            return earlier.value
        await asyncio.sleep(0.01)  # widen the window for a concurrent duplicate
        n = (await session.execute(text("UPDATE counter SET n = n + 1 RETURNING n"))).scalar_one()
        answer = await idempotency.remember(
            session, "Increment", request, wrappers_pb2.Int64Value(value=n)
        )
        return answer.value


async def test_a_replayed_request_id_returns_the_first_answer_and_changes_nothing(
    db: Database,
) -> None:
    first = await run(db, "r-1", "a")
    again = await run(db, "r-1", "a")
    other = await run(db, "r-2", "a")
    assert (first, again, other) == (1, 1, 2)


async def test_concurrent_calls_with_one_request_id_run_once(db: Database) -> None:
    answers = await asyncio.gather(*(run(db, "same", "a") for _ in range(20)))
    assert set(answers) == {1}
    async with db.transaction() as session:
        assert (await session.execute(text("SELECT n FROM counter"))).scalar_one() == 1


async def test_a_request_id_reused_for_another_request_is_refused(db: Database) -> None:
    await run(db, "r-1", "a")
    with pytest.raises(FailedPrecondition) as caught:
        await run(db, "r-1", "b")
    assert caught.value.reason == "REQUEST_ID_REUSED"
    async with db.transaction() as session:
        assert (await session.execute(text("SELECT n FROM counter"))).scalar_one() == 1
