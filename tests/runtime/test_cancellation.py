"""Background loops stop when cancelled, even when the driver turns the cancel into an error."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from continuum_runtime.db import Database
from continuum_runtime.events import OutboxRelay


async def test_the_relay_stops_when_a_cancel_surfaces_as_a_driver_error(
    database: Database, redis_client: aioredis.Redis, redis_namespace: str
) -> None:
    relay = OutboxRelay(database, redis_client, namespace=redis_namespace)
    started = asyncio.Event()

    async def stuck_publish() -> int:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            # What asyncpg does when cancelled mid-operation: its own error, not CancelledError.
            raise RuntimeError("another operation is in progress") from None
        return 0

    relay.publish_pending = stuck_publish  # type: ignore[method-assign]
    task = asyncio.create_task(relay.run())
    await started.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    if task not in done:  # the bug: the loop swallowed the cancel; end it another way
        relay.publish_pending = _really_cancel  # type: ignore[method-assign]
        relay.wake()
        await asyncio.wait([task], timeout=10)
    assert task in done
    assert task.cancelled()


async def _really_cancel() -> int:
    raise asyncio.CancelledError
