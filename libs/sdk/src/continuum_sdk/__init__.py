"""Continuum's client SDK: ``AsyncContinuum`` / ``Continuum`` reach all six services.

from continuum_sdk import AsyncContinuum, ClientConfig

async with AsyncContinuum(ClientConfig.local(token)) as cx:
    cart = (await cx.cart.GetCart(request)).cart

Helpers for the common flows sit on the same objects: ``cx.resolve(...)``,
``cx.customer_id(...)``, ``cx.carts``, ``cx.check_in(...)``, ``cx.tracker()``,
``cx.event_stream()`` and ``cx.subscribe_feed(...)``; identifiers are built with
:mod:`continuum_sdk.identifiers`, behavioural events with :class:`EventBuilder`.
"""

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
