"""Sending behavioural events: a batching tracker and a streaming sender.

:class:`AsyncTracker` (and the blocking :class:`Tracker`) buffer events and send them with
profile's ``IngestEvents`` in batches: when ``max_batch`` events are waiting, every
``flush_interval_s`` in the background, on :meth:`~AsyncTracker.flush` and on close. Each
flush returns a :class:`TrackResult` with the counts and one :class:`EventRejection` per
rejected event (the event itself, the reason and the offending fields); the tracker also
keeps every rejection it has seen, and calls ``on_result`` after each batch.

A batch that fails whole for a transient reason (UNAVAILABLE after the client's retries,
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, CANCELLED) is put back at the front of the
buffer and the error is raised (background flushes pass it to ``on_error``): the next
flush sends it again. Resending is safe: the profile deduplicates by ``event_id``, so an
event that was stored before the failure comes back as a duplicate.

:class:`AsyncEventStream` sends over the client-streaming ``StreamEvents`` instead (for
high-volume senders): ``send()`` as events come, ``close()`` for the totals and the
rejections, mapped back to the events sent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

import grpc

from continuum.profile.v1 import profile_service_pb2 as pb
from continuum.profile.v1.profile_resources_pb2 import BehaviouralEvent
from continuum_sdk.errors import ContinuumError, FieldViolation

if TYPE_CHECKING:
    from continuum_sdk.client import AsyncContinuum, Continuum

__all__ = [
    "AsyncEventStream",
    "AsyncTracker",
    "EventRejection",
    "EventsRejected",
    "TrackResult",
    "Tracker",
]

log = logging.getLogger(__name__)

# The contract's limit per IngestEvents call and per StreamEvents message.
MAX_BATCH = 1000
# Whole-batch failures after which the batch is kept and sent again.
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)

_REASON_PREFIX = "EVENT_REJECTION_REASON_"


@dataclass(frozen=True)
class EventRejection:
    """One event the profile refused, and why.

    ``reason`` is the short name of the rejection reason (``INVALID_FIELD``,
    ``MISSING_IDENTIFIERS``, ``TIME_IN_FUTURE``, ``TIME_TOO_OLD``, ``UNKNOWN_EVENT_TYPE``,
    ``EVENT_ID_CONFLICT``); ``field_violations`` name the offending fields relative to the
    event, e.g. ``cart_item_added.quantity``.
    """

    event: BehaviouralEvent
    reason: str
    field_violations: tuple[FieldViolation, ...] = ()

    @property
    def event_id(self) -> str:
        return self.event.event_id

    def __str__(self) -> str:
        fields = "; ".join(f"{v.field}: {v.description}" for v in self.field_violations)
        return f"event {self.event_id} rejected ({self.reason}){': ' + fields if fields else ''}"


@dataclass(frozen=True)
class TrackResult:
    """What became of the events sent: counts, the rejections, and the customer each
    accepted event was resolved to (when resolution finished before the answer)."""

    accepted: int = 0
    duplicates: int = 0
    rejected: tuple[EventRejection, ...] = ()
    customer_ids: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no event was rejected."""
        return not self.rejected

    @property
    def sent(self) -> int:
        return self.accepted + self.duplicates + len(self.rejected)

    def __add__(self, other: TrackResult) -> TrackResult:
        return TrackResult(
            accepted=self.accepted + other.accepted,
            duplicates=self.duplicates + other.duplicates,
            rejected=self.rejected + other.rejected,
            customer_ids={**self.customer_ids, **other.customer_ids},
        )

    def raise_for_rejections(self) -> TrackResult:
        """Raise :class:`EventsRejected` if any event was rejected; else return self."""
        if self.rejected:
            raise EventsRejected(self)
        return self


class EventsRejected(Exception):
    """Some events were rejected; ``result.rejected`` says which and why."""

    def __init__(self, result: TrackResult) -> None:
        first = result.rejected[0]
        more = f" (+{len(result.rejected) - 1} more)" if len(result.rejected) > 1 else ""
        super().__init__(f"{len(result.rejected)} event(s) rejected: {first}{more}")
        self.result = result

    @property
    def rejections(self) -> tuple[EventRejection, ...]:
        return self.result.rejected


def _reason_name(value: int) -> str:
    name = pb.EventRejectionReason.Name(value)  # type: ignore[arg-type]
    return name.removeprefix(_REASON_PREFIX)


def rejection_from(event: BehaviouralEvent, result: pb.EventResult) -> EventRejection:
    """An :class:`EventRejection` from the service's result for ``event``."""
    return EventRejection(
        event=event,
        reason=_reason_name(result.rejection_reason),
        field_violations=tuple(
            FieldViolation(field=v.field, description=v.description, reason=v.reason)
            for v in result.field_violations
        ),
    )


def result_of_batch(
    batch: Sequence[BehaviouralEvent], response: pb.IngestEventsResponse
) -> TrackResult:
    """The :class:`TrackResult` of one IngestEvents call."""
    rejected: list[EventRejection] = []
    customers: dict[str, str] = {}
    for item in response.results:
        if item.status == pb.EVENT_RESULT_STATUS_REJECTED and 0 <= item.index < len(batch):
            rejected.append(rejection_from(batch[item.index], item))
        elif item.status == pb.EVENT_RESULT_STATUS_ACCEPTED and item.customer_id:
            customers[item.event_id] = item.customer_id
    return TrackResult(
        accepted=response.accepted_count,
        duplicates=response.duplicate_count,
        rejected=tuple(rejected),
        customer_ids=customers,
    )


def _check_batch_size(max_batch: int) -> int:
    if not 1 <= max_batch <= MAX_BATCH:
        raise ValueError(f"max_batch must be 1 to {MAX_BATCH}")
    return max_batch


class _Buffer:
    """The state both trackers share: the waiting events and every rejection seen."""

    def __init__(
        self,
        max_batch: int,
        max_buffer: int,
        on_result: Callable[[TrackResult], None] | None,
    ) -> None:
        self.max_batch = _check_batch_size(max_batch)
        self.max_buffer = max(max_buffer, max_batch)
        self.on_result = on_result
        self.events: list[BehaviouralEvent] = []
        self.rejections: list[EventRejection] = []
        self.total = TrackResult()

    def take(self) -> list[BehaviouralEvent]:
        batch, self.events = self.events[: self.max_batch], self.events[self.max_batch :]
        return batch

    def put_back(self, batch: list[BehaviouralEvent]) -> None:
        self.events[:0] = batch

    def record(self, result: TrackResult) -> None:
        self.rejections.extend(result.rejected)
        self.total = self.total + TrackResult(
            accepted=result.accepted, duplicates=result.duplicates, rejected=result.rejected
        )
        if self.on_result is not None:
            self.on_result(result)


class AsyncTracker:
    """Buffers events and sends them in batches with ``IngestEvents`` (see the module doc).

    ``async with cx.tracker() as tracker: await tracker.track(event)``; leaving the block
    flushes what is left. ``max_batch`` (1 to 1,000) events fill a batch; the background
    flush runs every ``flush_interval_s`` (None: only on size, flush and close);
    when a size-triggered send fails transiently, ``track`` keeps the events and returns,
    until more than ``max_buffer`` are waiting: then it raises the error (any other error
    is raised at once, and that batch is dropped; see ``last_error``).
    """

    def __init__(
        self,
        client: AsyncContinuum,
        *,
        max_batch: int = 500,
        flush_interval_s: float | None = 1.0,
        max_buffer: int = 10_000,
        on_result: Callable[[TrackResult], None] | None = None,
        on_error: Callable[[ContinuumError], None] | None = None,
    ) -> None:
        self._client = client
        self._buffer = _Buffer(max_batch, max_buffer, on_result)
        self._interval = flush_interval_s
        self._on_error = on_error
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._closed = False
        self.last_error: ContinuumError | None = None

    @property
    def pending(self) -> int:
        """Events waiting to be sent."""
        return len(self._buffer.events)

    @property
    def rejections(self) -> list[EventRejection]:
        """Every rejection seen so far, oldest first."""
        return self._buffer.rejections

    @property
    def total(self) -> TrackResult:
        """The counts over every batch sent so far (customer ids are not kept)."""
        return self._buffer.total

    async def track(self, *events: BehaviouralEvent) -> None:
        """Queue events; sends a batch when ``max_batch`` are waiting."""
        if self._closed:
            raise RuntimeError("the tracker is closed")
        self._start_timer()
        self._buffer.events.extend(events)
        if self.pending >= self._buffer.max_batch:
            try:
                await self.flush(full_batches_only=True)
            except ContinuumError as err:
                if err.code not in TRANSIENT or self.pending > self._buffer.max_buffer:
                    raise
                # Kept for the next flush; the timer or the caller will try again.

    async def flush(self, *, full_batches_only: bool = False) -> TrackResult:
        """Send what is waiting, in batches; the result of every batch sent, summed."""
        out = TrackResult()
        async with self._lock:
            while self._buffer.events and (
                not full_batches_only or self.pending >= self._buffer.max_batch
            ):
                batch = self._buffer.take()
                try:
                    response = await self._client.profile.IngestEvents(
                        pb.IngestEventsRequest(events=batch)
                    )
                except ContinuumError as err:
                    if err.code in TRANSIENT:
                        self._buffer.put_back(batch)
                    self.last_error = err
                    raise
                result = result_of_batch(batch, response)
                self._buffer.record(result)
                out = out + result
        return out

    def _start_timer(self) -> None:
        if self._interval is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(
                self._flush_periodically(self._interval), name="continuum-tracker"
            )

    async def _flush_periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self._buffer.events:
                continue
            try:
                await self.flush()
            except ContinuumError as err:
                if self._on_error is not None:
                    self._on_error(err)
                else:
                    log.warning("background flush failed: %s", err)

    async def close(self) -> TrackResult:
        """Stop the background flush and send what is left (raises if that fails; the
        events stay in ``pending``)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            try:
                await self._timer
            except asyncio.CancelledError:
                pass
            self._timer = None
        return await self.flush()

    async def __aenter__(self) -> AsyncTracker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Tracker:
    """The blocking twin of :class:`AsyncTracker`, safe to share between threads; the
    background flush runs in a daemon thread."""

    def __init__(
        self,
        client: Continuum,
        *,
        max_batch: int = 500,
        flush_interval_s: float | None = 1.0,
        max_buffer: int = 10_000,
        on_result: Callable[[TrackResult], None] | None = None,
        on_error: Callable[[ContinuumError], None] | None = None,
    ) -> None:
        self._client = client
        self._buffer = _Buffer(max_batch, max_buffer, on_result)
        self._on_error = on_error
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._closed = False
        self.last_error: ContinuumError | None = None
        self._thread: threading.Thread | None = None
        if flush_interval_s is not None:
            self._thread = threading.Thread(
                target=self._flush_periodically,
                args=(flush_interval_s,),
                name="continuum-tracker",
                daemon=True,
            )
            self._thread.start()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buffer.events)

    @property
    def rejections(self) -> list[EventRejection]:
        with self._lock:
            return list(self._buffer.rejections)

    @property
    def total(self) -> TrackResult:
        with self._lock:
            return self._buffer.total

    def track(self, *events: BehaviouralEvent) -> None:
        """Queue events; sends a batch when ``max_batch`` are waiting."""
        if self._closed:
            raise RuntimeError("the tracker is closed")
        with self._lock:
            self._buffer.events.extend(events)
            if len(self._buffer.events) < self._buffer.max_batch:
                return
            try:
                self.flush(full_batches_only=True)
            except ContinuumError as err:
                if err.code not in TRANSIENT or len(self._buffer.events) > self._buffer.max_buffer:
                    raise

    def flush(self, *, full_batches_only: bool = False) -> TrackResult:
        """Send what is waiting, in batches; the result of every batch sent, summed."""
        out = TrackResult()
        with self._lock:
            while self._buffer.events and (
                not full_batches_only or len(self._buffer.events) >= self._buffer.max_batch
            ):
                batch = self._buffer.take()
                try:
                    response = self._client.profile.IngestEvents(
                        pb.IngestEventsRequest(events=batch)
                    )
                except ContinuumError as err:
                    if err.code in TRANSIENT:
                        self._buffer.put_back(batch)
                    self.last_error = err
                    raise
                result = result_of_batch(batch, response)
                self._buffer.record(result)
                out = out + result
        return out

    def _flush_periodically(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if not self.pending:
                continue
            try:
                self.flush()
            except ContinuumError as err:
                if self._on_error is not None:
                    self._on_error(err)
                else:
                    log.warning("background flush failed: %s", err)
            except Exception:
                log.exception("background flush failed")

    def close(self) -> TrackResult:
        """Stop the background flush and send what is left."""
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self.flush()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncEventStream:
    """Events over one ``StreamEvents`` call (see the module doc)::

        async with cx.event_stream() as stream:
            await stream.send(view, add)
            ...
        print(stream.result)  # the totals and rejections, after the block

    or ``result = await stream.close()``. Each ``send`` is one stream message of at most
    ``max_message_events`` events (larger sends are split). ``timeout_s`` bounds the whole
    stream (none by default). The events sent are kept until the stream closes, to map
    the rejections back to them. If the stream fails, the next ``send`` and ``close``
    raise its error; what was sent may be sent again on a new stream (deduplicated by
    ``event_id``).
    """

    def __init__(
        self,
        client: AsyncContinuum,
        *,
        max_message_events: int = 500,
        timeout_s: float | None = None,
    ) -> None:
        self._client = client
        self._max = _check_batch_size(max_message_events)
        self._timeout = timeout_s
        self._queue: asyncio.Queue[list[BehaviouralEvent] | None] = asyncio.Queue(maxsize=8)
        self._messages: list[list[BehaviouralEvent]] = []
        self._call: asyncio.Task[pb.StreamEventsResponse] | None = None
        self.result: TrackResult | None = None

    async def _requests(self) -> AsyncIterator[pb.StreamEventsRequest]:
        while True:
            batch = await self._queue.get()
            if batch is None:
                return
            yield pb.StreamEventsRequest(events=batch)

    async def _run(self) -> pb.StreamEventsResponse:
        response: pb.StreamEventsResponse = await self._client.profile.StreamEvents(
            self._requests(), timeout=self._timeout
        )
        return response

    def _started(self) -> asyncio.Task[pb.StreamEventsResponse]:
        if self._call is None:
            self._call = asyncio.get_running_loop().create_task(self._run())
        return self._call

    async def send(self, *events: BehaviouralEvent) -> None:
        """Send events as the next message(s) of the stream."""
        if self.result is not None:
            raise RuntimeError("the stream is closed")
        call = self._started()
        pending = list(events)
        while pending:
            batch, pending = pending[: self._max], pending[self._max :]
            if call.done():
                call.result()  # raises the stream's error
                raise RuntimeError("the stream ended early")
            self._messages.append(batch)
            put = asyncio.ensure_future(self._queue.put(batch))
            done, _ = await asyncio.wait({put, call}, return_when=asyncio.FIRST_COMPLETED)
            if put not in done:
                put.cancel()
                call.result()
                raise RuntimeError("the stream ended early")

    async def close(self) -> TrackResult:
        """End the stream; the totals and the rejections (with their events)."""
        if self.result is not None:
            return self.result
        call = self._started()
        if not call.done():
            await self._queue.put(None)
        response = await call
        rejected: list[EventRejection] = []
        for item in response.rejections:
            index = item.result.index
            if 0 <= item.message_index < len(self._messages):
                message = self._messages[item.message_index]
                if 0 <= index < len(message):
                    rejected.append(rejection_from(message[index], item.result))
        self.result = TrackResult(
            accepted=int(response.accepted_count),
            duplicates=int(response.duplicate_count),
            rejected=tuple(rejected),
        )
        self._messages = []
        return self.result

    def cancel(self) -> None:
        """Abandon the stream without waiting for its answer."""
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.cancel()
            return
        await self.close()
