"""The runtime's Batcher (group commit): concurrent calls share batches, each call keeps
its own outcome, a failed batch fails only its own calls, a caller that gives up is left
out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from continuum_runtime.batching import Batcher
from continuum_runtime.testing import eventually


class Handler:
    """Doubles numbers one batch at a time; odd numbers are refused; a batch holding -1
    fails as a whole. Each batch takes a little while, as a transaction would."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.gate.wait()
        await asyncio.sleep(0.01)
        if -1 in items:
            raise ConnectionError("the database went away")
        return [ValueError(f"odd: {n}") if n % 2 else n * 2 for n in items]


async def running(handler: Handler, batches: int) -> None:
    """Until the handler has started ``batches`` batches."""

    async def started() -> bool:
        return len(handler.batches) >= batches

    await eventually(started, timeout_s=5, interval_s=0.001)


async def test_calls_that_arrive_together_share_a_batch_and_keep_their_answers() -> None:
    handler = Handler()
    batcher: Batcher[int, int] = Batcher(handler, name="double", workers=1, max_batch=8)
    try:
        outcomes = await asyncio.gather(
            *(batcher.submit(n) for n in range(20)), return_exceptions=True
        )
        for n, outcome in enumerate(outcomes):
            if n % 2:
                assert isinstance(outcome, ValueError)
                assert str(outcome) == f"odd: {n}"
            else:
                assert outcome == n * 2
        # All twenty were queued before the worker first ran: batches of at most 8.
        assert [len(b) for b in handler.batches] == [8, 8, 4]
        assert sorted(n for b in handler.batches for n in b) == list(range(20))
    finally:
        await batcher.close()


async def test_a_failed_batch_fails_its_own_calls_only() -> None:
    handler = Handler()
    batcher: Batcher[int, int] = Batcher(handler, name="double", workers=1, max_batch=8)
    try:
        handler.gate.clear()
        first = asyncio.ensure_future(batcher.submit(2))
        await running(handler, 1)  # these two queue together meanwhile
        doomed = [asyncio.ensure_future(batcher.submit(n)) for n in (4, -1)]
        await asyncio.sleep(0)
        handler.gate.set()
        assert await first == 4
        for call in doomed:
            with pytest.raises(ConnectionError):
                await call
        assert await batcher.submit(6) == 12  # the worker carries on
    finally:
        await batcher.close()


async def test_a_caller_that_gives_up_is_left_out_of_the_next_batch() -> None:
    handler = Handler()
    batcher: Batcher[int, int] = Batcher(handler, name="double", workers=1, max_batch=8)
    try:
        handler.gate.clear()
        first = asyncio.ensure_future(batcher.submit(2))
        await running(handler, 1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(batcher.submit(8), timeout=0.01)
        kept = asyncio.ensure_future(batcher.submit(10))
        await asyncio.sleep(0)
        handler.gate.set()
        assert await first == 4
        assert await kept == 20
        assert handler.batches == [[2], [10]]
    finally:
        await batcher.close()


async def test_close_stops_the_workers_and_cancels_what_waits() -> None:
    handler = Handler()
    batcher: Batcher[int, int] = Batcher(handler, name="double", workers=2, max_batch=8)
    assert await batcher.submit(4) == 8
    handler.gate.clear()
    waiting = asyncio.ensure_future(batcher.submit(6))
    await running(handler, 2)
    await batcher.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(ValueError, match="at least one worker"):
        Batcher(handler, name="none", workers=0)


async def test_with_shards_a_waiting_batch_holds_up_only_its_own_shard() -> None:
    """Shard by parity: the even shard's first batch waits (as on a lock); odd calls are
    still answered meanwhile, and the even calls that queued go together in one batch."""
    batches: list[list[int]] = []
    gate = asyncio.Event()
    blocked = asyncio.Event()

    async def handle(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(items))
        if items[0] == 0:
            blocked.set()
            await gate.wait()
        return [n * 2 for n in items]

    batcher: Batcher[int, int] = Batcher(
        handle, name="sharded", workers=2, max_batch=8, shard=lambda n: n % 2
    )
    try:
        first_even = asyncio.ensure_future(batcher.submit(0))
        async with asyncio.timeout(5):
            await blocked.wait()
        later_evens = [asyncio.ensure_future(batcher.submit(n)) for n in (2, 4, 6)]
        async with asyncio.timeout(5):
            assert await batcher.submit(1) == 2  # answered while the even shard waits
        assert not first_even.done()
        gate.set()
        assert await first_even == 0
        assert [await call for call in later_evens] == [4, 8, 12]
        assert batches == [[0], [1], [2, 4, 6]]
    finally:
        await batcher.close()
