"""A store's associate feed that survives disconnects.

``cx.subscribe_feed(store_id)`` returns a :class:`FeedSubscription`: iterate it to receive
the feed's items (briefings, briefing updates, action updates, handoffs) for as long as you
want them. When the stream breaks with UNAVAILABLE (the notification service restarted,
a replica went away, the network dropped) or ends, the subscription reconnects with
exponential backoff and jitter and resumes after the last cursor it saw, so no item is
missed; items delivered twice across a reconnect (delivery is at least once) are dropped
by their ``sequence``. ``cursor`` is the position to persist if the process itself may
restart: pass it back as ``resume_after``.

Heartbeats and the CAUGHT_UP marker move the cursor but are not yielded unless
``include_markers=True``. Errors other than UNAVAILABLE are raised: PERMISSION_DENIED for
a store the caller may not read, INVALID_ARGUMENT for an unknown store or a bad cursor,
FAILED_PRECONDITION ``FEED_CURSOR_EXPIRED`` for a cursor older than the feed's retention
(subscribe again without one and fill the gap with ListBriefings).
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from google.protobuf import duration_pb2

from continuum.notification.v1 import notification_resources_pb2 as res
from continuum.notification.v1 import notification_service_pb2 as pb
from continuum.notification.v1.notification_resources_pb2 import FeedItem
from continuum_sdk.errors import ContinuumError

if TYPE_CHECKING:
    from continuum_sdk.client import AsyncContinuum, Continuum

__all__ = ["FeedItem", "FeedSubscription", "SyncFeedSubscription"]

FeedItemKind: TypeAlias = res.FeedItemKind.ValueType
_MARKERS = (res.FEED_ITEM_KIND_HEARTBEAT, res.FEED_ITEM_KIND_CAUGHT_UP)
# Codes after which the subscription reconnects.
RECONNECT_ON = frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass
class _FeedState:
    """Where a subscription stands, and what a reconnect asks for."""

    store_id: str
    cursor: str
    replay_active: bool
    kinds: tuple[FeedItemKind, ...]
    heartbeat_interval_s: float | None
    include_markers: bool
    initial_backoff_s: float
    max_backoff_s: float
    max_consecutive_failures: int | None
    sequence: int = 0
    reconnects: int = 0
    failures: int = 0
    replaying: bool = False
    last_error: ContinuumError | None = field(default=None, repr=False)

    def request(self) -> pb.SubscribeFeedRequest:
        """The request for the next connection: after the cursor when there is one."""
        self.replaying = self.replay_active and not self.cursor
        request = pb.SubscribeFeedRequest(
            store_id=self.store_id,
            resume_after=self.cursor,
            replay_active=self.replaying,
            kinds=list(self.kinds),
        )
        if self.heartbeat_interval_s is not None:
            request.heartbeat_interval.CopyFrom(
                duration_pb2.Duration(
                    seconds=int(self.heartbeat_interval_s),
                    nanos=int((self.heartbeat_interval_s % 1) * 1e9),
                )
            )
        return request

    def accept(self, item: FeedItem) -> bool:
        """Record the item's position; whether to hand it to the caller."""
        self.failures = 0
        marker = item.kind in _MARKERS
        if item.kind == res.FEED_ITEM_KIND_CAUGHT_UP:
            self.replaying = False
        if not marker and not self.replaying and self.sequence and item.sequence <= self.sequence:
            return False  # delivered before the reconnect
        if item.cursor:
            self.cursor = item.cursor
        self.sequence = max(self.sequence, item.sequence)
        return self.include_markers or not marker

    def should_reconnect(self, err: ContinuumError | None) -> float | None:
        """The delay before reconnecting after ``err`` (None: the stream ended without
        one), or None when the error must be raised."""
        if err is not None and err.code not in RECONNECT_ON:
            return None
        self.last_error = err
        self.failures += 1
        if (
            self.max_consecutive_failures is not None
            and self.failures > self.max_consecutive_failures
        ):
            return None
        self.reconnects += 1
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (self.failures - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security


def _state(
    store_id: str,
    resume_after: str,
    replay_active: bool,
    kinds: Iterable[FeedItemKind],
    heartbeat_interval_s: float | None,
    include_markers: bool,
    initial_backoff_s: float,
    max_backoff_s: float,
    max_consecutive_failures: int | None,
) -> _FeedState:
    if not store_id:
        raise ValueError("store_id must not be empty")
    return _FeedState(
        store_id=store_id,
        cursor=resume_after,
        replay_active=replay_active,
        kinds=tuple(kinds),
        heartbeat_interval_s=heartbeat_interval_s,
        include_markers=include_markers,
        initial_backoff_s=initial_backoff_s,
        max_backoff_s=max_backoff_s,
        max_consecutive_failures=max_consecutive_failures,
    )


class FeedSubscription:
    """A resumable subscription to a store's feed (see the module doc)::

        feed = cx.subscribe_feed("store-1", replay_active=True)
        async for item in feed:
            if item.HasField("briefing"):
                show(item.briefing)
        # elsewhere: feed.close()

    ``max_consecutive_failures`` bounds the reconnect attempts without an item in between
    (None: keep trying until closed); the last error is then raised.
    """

    def __init__(
        self,
        client: AsyncContinuum,
        store_id: str,
        *,
        resume_after: str = "",
        replay_active: bool = False,
        kinds: Iterable[FeedItemKind] = (),
        heartbeat_interval_s: float | None = None,
        include_markers: bool = False,
        initial_backoff_s: float = 0.2,
        max_backoff_s: float = 10.0,
        max_consecutive_failures: int | None = None,
    ) -> None:
        self._client = client
        self._state = _state(
            store_id,
            resume_after,
            replay_active,
            kinds,
            heartbeat_interval_s,
            include_markers,
            initial_backoff_s,
            max_backoff_s,
            max_consecutive_failures,
        )
        self._call: Any = None
        self._closed = False

    def _is_closed(self) -> bool:
        return self._closed

    @property
    def cursor(self) -> str:
        """The cursor of the last item (or marker) received: where a resume starts."""
        return self._state.cursor

    @property
    def sequence(self) -> int:
        return self._state.sequence

    @property
    def reconnects(self) -> int:
        """How many times the subscription has reconnected."""
        return self._state.reconnects

    def __aiter__(self) -> AsyncIterator[FeedItem]:
        return self._items()

    async def _items(self) -> AsyncIterator[FeedItem]:
        state = self._state
        while not self._is_closed():
            error: ContinuumError | None = None
            self._call = self._client.notification.SubscribeFeed(state.request())
            try:
                async for response in self._call:
                    if state.accept(response.item):
                        yield response.item
            except ContinuumError as err:
                error = err
            except asyncio.CancelledError:
                if not self._is_closed():
                    raise  # the task itself was cancelled
                return
            finally:
                self._call = None
            if self._is_closed():
                return
            delay = state.should_reconnect(error)
            if delay is None:
                raise error if error is not None else RuntimeError("feed ended")
            await asyncio.sleep(delay)

    def close(self) -> None:
        """Stop: the iteration ends (at once if it is waiting for an item)."""
        self._closed = True
        call = self._call
        if call is not None:
            call.cancel()


class SyncFeedSubscription:
    """The blocking twin of :class:`FeedSubscription`; ``close()`` may be called from
    another thread."""

    def __init__(
        self,
        client: Continuum,
        store_id: str,
        *,
        resume_after: str = "",
        replay_active: bool = False,
        kinds: Iterable[FeedItemKind] = (),
        heartbeat_interval_s: float | None = None,
        include_markers: bool = False,
        initial_backoff_s: float = 0.2,
        max_backoff_s: float = 10.0,
        max_consecutive_failures: int | None = None,
    ) -> None:
        self._client = client
        self._state = _state(
            store_id,
            resume_after,
            replay_active,
            kinds,
            heartbeat_interval_s,
            include_markers,
            initial_backoff_s,
            max_backoff_s,
            max_consecutive_failures,
        )
        self._call: Any = None
        self._closed = threading.Event()

    @property
    def cursor(self) -> str:
        return self._state.cursor

    @property
    def sequence(self) -> int:
        return self._state.sequence

    @property
    def reconnects(self) -> int:
        return self._state.reconnects

    def __iter__(self) -> Iterator[FeedItem]:
        state = self._state
        while not self._closed.is_set():
            error: ContinuumError | None = None
            self._call = self._client.notification.SubscribeFeed(state.request())
            try:
                for response in self._call:
                    if state.accept(response.item):
                        yield response.item
            except ContinuumError as err:
                error = err
            finally:
                self._call = None
            if self._closed.is_set():
                return
            delay = state.should_reconnect(error)
            if delay is None:
                raise error if error is not None else RuntimeError("feed ended")
            if self._closed.wait(delay):
                return

    def close(self) -> None:
        self._closed.set()
        call = self._call
        if call is not None:
            call.cancel()
