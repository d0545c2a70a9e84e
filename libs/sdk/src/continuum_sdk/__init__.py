"""Continuum's client SDK: ``AsyncContinuum`` / ``Continuum`` reach all six services.

from continuum_sdk import AsyncContinuum, ClientConfig

async with AsyncContinuum(ClientConfig.local(token)) as cx:
    cart = (await cx.cart.GetCart(request)).cart

Helpers for the common flows sit on the same objects: ``cx.resolve(...)``,
``cx.customer_id(...)``, ``cx.carts``, ``cx.check_in(...)``, ``cx.tracker()``,
``cx.event_stream()`` and ``cx.subscribe_feed(...)``; identifiers are built with
:mod:`continuum_sdk.identifiers`, behavioural events with :class:`EventBuilder`.
"""

try:  # the contracts' generated code: a clear message when a wheel was built without it
    from continuum.common.v1 import identifier_pb2 as _identifier_pb2  # noqa: F401
except ModuleNotFoundError as missing:  # pragma: no cover - a packaging mistake
    raise ImportError(
        "continuum-contracts is installed without its generated code: run `make proto` in"
        " the repository, then reinstall libs/contracts"
    ) from missing

from continuum_sdk.carts import AsyncCarts, Carts, customer, guest, pickup, ship
from continuum_sdk.client import AsyncContinuum, Continuum
from continuum_sdk.config import ClientConfig, RetryConfig, TLSConfig
from continuum_sdk.errors import ContinuumError, FieldViolation
from continuum_sdk.events import EventBuilder, money, product
from continuum_sdk.feed import FeedSubscription, SyncFeedSubscription
from continuum_sdk.tracking import (
    AsyncEventStream,
    AsyncTracker,
    EventRejection,
    EventsRejected,
    Tracker,
    TrackResult,
)

__all__ = [
    "AsyncCarts",
    "AsyncContinuum",
    "AsyncEventStream",
    "AsyncTracker",
    "Carts",
    "ClientConfig",
    "Continuum",
    "ContinuumError",
    "EventBuilder",
    "EventRejection",
    "EventsRejected",
    "FeedSubscription",
    "FieldViolation",
    "RetryConfig",
    "SyncFeedSubscription",
    "TLSConfig",
    "TrackResult",
    "Tracker",
    "customer",
    "guest",
    "money",
    "pickup",
    "product",
    "ship",
]
