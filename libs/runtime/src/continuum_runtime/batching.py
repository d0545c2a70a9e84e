"""Group commit: concurrent calls coalesced into batches that a few workers handle.

A hot write path whose calls all serialise on one row (many shoppers reserving the last
pairs of one shoe) is bound by how long each transaction holds that row's lock, not by
the work itself. :class:`Batcher` queues the calls; each worker takes whatever has queued
up while the previous batch ran and hands it to ``handle`` as one list, so that one
transaction (one lock, one commit) serves many calls. Under light load a batch is a single
call and nothing waits; under heavy load batches grow by themselves.

``handle`` returns one outcome per item, in order: a result, or the exception that item's
caller gets (one item's bad input does not fail its neighbours). An exception raised by
``handle`` itself (the database is down, the transaction failed) goes to every caller of
that batch. A caller that gives up (its deadline, a cancelled RPC) no longer waits; what
its item did, if already begun, stands, as with any call cancelled after it committed.

With ``shard``, each worker has a queue of its own and a call goes to the worker of its
shard (e.g. its SKU): calls of one hot key still share batches, while a batch that waits
(on a lock, say) holds up only the calls of its own shard.

Workers run in their own tasks, so a batch's spans carry links to the callers' spans
rather than a parent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext

T = TypeVar("T")
R = TypeVar("R")

_tracer = trace.get_tracer(__name__)


@dataclass
class _Call(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    caller: SpanContext


class Batcher(Generic[T, R]):
    """Coalesce concurrent ``submit`` calls into batches of at most ``max_batch`` items,
    handled by up to ``workers`` concurrent ``handle`` calls (one queue shared by the
    workers, or with ``shard`` one queue per worker)."""

    def __init__(
        self,
        handle: Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        name: str,
        workers: int = 2,
        max_batch: int = 128,
        shard: Callable[[T], Hashable] | None = None,
    ) -> None:
        if workers < 1 or max_batch < 1:
            raise ValueError("a batcher needs at least one worker and one item per batch")
        self._handle = handle
        self._name = name
        self._workers = workers
        self._max_batch = max_batch
        self._shard = shard
        queues = workers if shard is not None else 1
        self._queues: list[asyncio.Queue[_Call[T, R]]] = [asyncio.Queue() for _ in range(queues)]
        self._tasks: list[asyncio.Task[None]] = []

    async def submit(self, item: T) -> R:
        """The outcome of ``item``: its result, or its exception raised here."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(
                    self._work(self._queues[n % len(self._queues)]),
                    name=f"{self._name}-batcher-{n}",
                )
                for n in range(self._workers)
            ]
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        caller = trace.get_current_span().get_span_context()
        queue = self._queues[0]
        if self._shard is not None:
            queue = self._queues[hash(self._shard(item)) % len(self._queues)]
        queue.put_nowait(_Call(item, future, caller))
        return await future

    async def close(self) -> None:
        """Stop the workers; calls still queued get CancelledError."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for queue in self._queues:
            while not queue.empty():
                queue.get_nowait().future.cancel()

    def _take(self, queue: asyncio.Queue[_Call[T, R]], first: _Call[T, R]) -> list[_Call[T, R]]:
        batch = [first]
        while len(batch) < self._max_batch and not queue.empty():
            batch.append(queue.get_nowait())
        # Callers that gave up while queued are left out.
        return [call for call in batch if not call.future.done()]

    async def _work(self, queue: asyncio.Queue[_Call[T, R]]) -> None:
        while True:
            batch = self._take(queue, await queue.get())
            if not batch:
                continue
            links = [Link(call.caller) for call in batch if call.caller.is_valid]
            try:
                with _tracer.start_as_current_span(f"{self._name} batch", links=links) as span:
                    span.set_attribute("batch.size", len(batch))
                    outcomes = await self._handle([call.item for call in batch])
            except asyncio.CancelledError:
                for call in batch:
                    call.future.cancel()
                raise
            except Exception as error:  # the whole batch failed: every caller hears why
                for call in batch:
                    if not call.future.done():
                        call.future.set_exception(error)
                continue
            for call, outcome in zip(batch, outcomes, strict=True):
                if call.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    call.future.set_exception(outcome)
                else:
                    call.future.set_result(outcome)
