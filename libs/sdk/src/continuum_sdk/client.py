"""The entry objects: :class:`AsyncContinuum` (asyncio) and :class:`Continuum` (blocking).

Both expose the six services as typed stubs (``identity``, ``profile``, ``cart``,
``inventory``, ``recommendation``, ``notification``) whose calls carry the configured token,
the default deadline, retries of UNAVAILABLE under a budget, keepalive and TLS, and raise
typed :mod:`continuum_sdk.errors` exceptions. One channel per distinct target is opened
lazily and shared; close the client (or use it as a context manager) when done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc

from continuum.cart.v1 import cart_service_pb2, cart_service_pb2_grpc
from continuum.common.v1 import channel_pb2
from continuum.common.v1.identifier_pb2 import Identifier
from continuum.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from continuum.identity.v1.identity_service_pb2 import Resolution
from continuum.inventory.v1 import inventory_service_pb2, inventory_service_pb2_grpc
from continuum.notification.v1 import notification_resources_pb2 as notif_res
from continuum.notification.v1 import notification_service_pb2, notification_service_pb2_grpc
from continuum.notification.v1.notification_resources_pb2 import CheckIn
from continuum.profile.v1 import profile_service_pb2, profile_service_pb2_grpc
from continuum.recommendation.v1 import (
    recommendation_service_pb2,
    recommendation_service_pb2_grpc,
)
from continuum_sdk._stubs import StubWrapper
from continuum_sdk.carts import AsyncCarts, Carts
from continuum_sdk.config import SERVICE_NAMES, ClientConfig, TLSConfig
from continuum_sdk.feed import FeedItemKind, FeedSubscription, SyncFeedSubscription
from continuum_sdk.flows import check_in_request, resolve_request
from continuum_sdk.tracking import AsyncEventStream, AsyncTracker, Tracker, TrackResult

if TYPE_CHECKING:
    from continuum.cart.v1.cart_service_pb2_grpc import CartServiceAsyncStub, CartServiceStub
    from continuum.identity.v1.identity_service_pb2_grpc import (
        IdentityServiceAsyncStub,
        IdentityServiceStub,
    )
    from continuum.inventory.v1.inventory_service_pb2_grpc import (
        InventoryServiceAsyncStub,
        InventoryServiceStub,
    )
    from continuum.notification.v1.notification_service_pb2_grpc import (
        NotificationServiceAsyncStub,
        NotificationServiceStub,
    )
    from continuum.profile.v1.profile_service_pb2_grpc import (
        ProfileServiceAsyncStub,
        ProfileServiceStub,
    )
    from continuum.recommendation.v1.recommendation_service_pb2_grpc import (
        RecommendationServiceAsyncStub,
        RecommendationServiceStub,
    )
    from continuum_sdk.errors import ContinuumError

Channel: TypeAlias = channel_pb2.Channel.ValueType
CheckInSource: TypeAlias = notif_res.CheckInSource.ValueType

_MODULES: dict[str, tuple[Any, Any]] = {
    "identity": (identity_service_pb2, identity_service_pb2_grpc),
    "profile": (profile_service_pb2, profile_service_pb2_grpc),
    "cart": (cart_service_pb2, cart_service_pb2_grpc),
    "inventory": (inventory_service_pb2, inventory_service_pb2_grpc),
    "recommendation": (recommendation_service_pb2, recommendation_service_pb2_grpc),
    "notification": (notification_service_pb2, notification_service_pb2_grpc),
}


def _credentials(tls: TLSConfig) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca_file.read_bytes() if tls.ca_file else None,
        private_key=tls.key_file.read_bytes() if tls.key_file else None,
        certificate_chain=tls.cert_file.read_bytes() if tls.cert_file else None,
    )


def _stub(config: ClientConfig, service: str, channel: Any, *, sync: bool) -> Any:
    pb2, pb2_grpc = _MODULES[service]
    short = SERVICE_NAMES[service].rsplit(".", 1)[1]
    stub = getattr(pb2_grpc, f"{short}Stub")(channel)
    return StubWrapper(config, stub, pb2.DESCRIPTOR.services_by_name[short], sync=sync)


class AsyncContinuum:
    """The asyncio client. ``AsyncContinuum(ClientConfig.local(token))`` reaches a suite
    started with ``make run``; ``ClientConfig.from_env()`` reads targets from the environment.
    """

    def __init__(self, config: ClientConfig | None = None, **overrides: Any) -> None:
        base = config or ClientConfig()
        self.config = replace(base, **overrides) if overrides else base
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, Any] = {}

    def channel(self, service: str) -> grpc.aio.Channel:
        """The (shared) channel to ``service``'s target."""
        target = self.config.target(service)
        channel = self._channels.get(target)
        if channel is None:
            options = self.config.channel_options()
            if self.config.tls is not None:
                channel = grpc.aio.secure_channel(
                    target, _credentials(self.config.tls), options=options
                )
            else:
                channel = grpc.aio.insecure_channel(target, options=options)
            self._channels[target] = channel
        return channel

    def _service(self, name: str) -> Any:
        stub = self._stubs.get(name)
        if stub is None:
            stub = self._stubs[name] = _stub(self.config, name, self.channel(name), sync=False)
        return stub

    @property
    def identity(self) -> IdentityServiceAsyncStub:
        return cast("IdentityServiceAsyncStub", self._service("identity"))

    @property
    def profile(self) -> ProfileServiceAsyncStub:
        return cast("ProfileServiceAsyncStub", self._service("profile"))

    @property
    def cart(self) -> CartServiceAsyncStub:
        return cast("CartServiceAsyncStub", self._service("cart"))

    @property
    def inventory(self) -> InventoryServiceAsyncStub:
        return cast("InventoryServiceAsyncStub", self._service("inventory"))

    @property
    def recommendation(self) -> RecommendationServiceAsyncStub:
        return cast("RecommendationServiceAsyncStub", self._service("recommendation"))

    @property
    def notification(self) -> NotificationServiceAsyncStub:
        return cast("NotificationServiceAsyncStub", self._service("notification"))

    # -- the common flows (see continuum_sdk.flows, .carts, .tracking, .feed) ----------

    @property
    def carts(self) -> AsyncCarts:
        """Cart operations with request ids and etag conflicts handled (web channel;
        ``cx.carts.using(channel, store_id)`` for another)."""
        return AsyncCarts(self)

    async def resolve(
        self,
        *identifiers: Identifier,
        channel: Channel = channel_pb2.CHANNEL_WEB,
        lookup_only: bool = False,
        request_id: str | None = None,
        actor: str = "",
        observe_time: datetime | None = None,
    ) -> Resolution:
        """Resolve identifiers seen together to one customer (creating, linking or
        merging under the merge rules unless ``lookup_only``)."""
        response = await self.identity.ResolveIdentity(
            resolve_request(
                identifiers,
                channel=channel,
                lookup_only=lookup_only,
                request_id=request_id,
                actor=actor,
                observe_time=observe_time,
            )
        )
        return response.resolution

    async def customer_id(
        self, *identifiers: Identifier, channel: Channel = channel_pb2.CHANNEL_WEB
    ) -> str | None:
        """The customer these identifiers belong to, without creating or linking
        anything; None when nothing matches."""
        resolution = await self.resolve(*identifiers, channel=channel, lookup_only=True)
        return resolution.customer_id or None

    async def check_in(
        self,
        store_id: str,
        *identifiers: Identifier,
        source: CheckInSource = notif_res.CHECK_IN_SOURCE_APP_GEOFENCE,
        request_id: str | None = None,
        check_in_time: datetime | None = None,
        source_reference: str = "",
        associate_id: str = "",
    ) -> CheckIn:
        """Record a shopper's arrival at a store; the associates there are briefed when
        the customer is known and agreed to be recognised (see ``CheckIn.status``)."""
        response = await self.notification.CheckIn(
            check_in_request(
                store_id,
                identifiers,
                source=source,
                request_id=request_id,
                check_in_time=check_in_time,
                source_reference=source_reference,
                associate_id=associate_id,
            )
        )
        return response.check_in

    def tracker(
        self,
        *,
        max_batch: int = 500,
        flush_interval_s: float | None = 1.0,
        max_buffer: int = 10_000,
        on_result: Callable[[TrackResult], None] | None = None,
        on_error: Callable[[ContinuumError], None] | None = None,
    ) -> AsyncTracker:
        """A batching event tracker (``async with cx.tracker() as t: await t.track(e)``)."""
        return AsyncTracker(
            self,
            max_batch=max_batch,
            flush_interval_s=flush_interval_s,
            max_buffer=max_buffer,
            on_result=on_result,
            on_error=on_error,
        )

    def event_stream(
        self, *, max_message_events: int = 500, timeout_s: float | None = None
    ) -> AsyncEventStream:
        """Events over one client stream (``async with cx.event_stream() as s: ...``)."""
        return AsyncEventStream(self, max_message_events=max_message_events, timeout_s=timeout_s)

    def subscribe_feed(
        self,
        store_id: str,
        *,
        resume_after: str = "",
        replay_active: bool = False,
        kinds: Iterable[FeedItemKind] = (),
        heartbeat_interval_s: float | None = None,
        include_markers: bool = False,
        max_consecutive_failures: int | None = None,
    ) -> FeedSubscription:
        """A store's associate feed that reconnects after UNAVAILABLE and resumes after
        the last cursor seen (``async for item in cx.subscribe_feed("store-1")``)."""
        return FeedSubscription(
            self,
            store_id,
            resume_after=resume_after,
            replay_active=replay_active,
            kinds=kinds,
            heartbeat_interval_s=heartbeat_interval_s,
            include_markers=include_markers,
            max_consecutive_failures=max_consecutive_failures,
        )

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        self._stubs = {}
        for channel in channels:
            await channel.close(None)

    async def __aenter__(self) -> AsyncContinuum:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Continuum:
    """The blocking client, for scripts and threaded apps; the same shape as
    :class:`AsyncContinuum`."""

    def __init__(self, config: ClientConfig | None = None, **overrides: Any) -> None:
        base = config or ClientConfig()
        self.config = replace(base, **overrides) if overrides else base
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, Any] = {}

    def channel(self, service: str) -> grpc.Channel:
        target = self.config.target(service)
        channel = self._channels.get(target)
        if channel is None:
            options = self.config.channel_options()
            if self.config.tls is not None:
                channel = grpc.secure_channel(
                    target, _credentials(self.config.tls), options=options
                )
            else:
                channel = grpc.insecure_channel(target, options=options)
            self._channels[target] = channel
        return channel

    def _service(self, name: str) -> Any:
        stub = self._stubs.get(name)
        if stub is None:
            stub = self._stubs[name] = _stub(self.config, name, self.channel(name), sync=True)
        return stub

    @property
    def identity(self) -> IdentityServiceStub:
        return cast("IdentityServiceStub", self._service("identity"))

    @property
    def profile(self) -> ProfileServiceStub:
        return cast("ProfileServiceStub", self._service("profile"))

    @property
    def cart(self) -> CartServiceStub:
        return cast("CartServiceStub", self._service("cart"))

    @property
    def inventory(self) -> InventoryServiceStub:
        return cast("InventoryServiceStub", self._service("inventory"))

    @property
    def recommendation(self) -> RecommendationServiceStub:
        return cast("RecommendationServiceStub", self._service("recommendation"))

    @property
    def notification(self) -> NotificationServiceStub:
        return cast("NotificationServiceStub", self._service("notification"))

    # -- the common flows (blocking twins of AsyncContinuum's) --------------------------

    @property
    def carts(self) -> Carts:
        """Cart operations with request ids and etag conflicts handled."""
        return Carts(self)

    def resolve(
        self,
        *identifiers: Identifier,
        channel: Channel = channel_pb2.CHANNEL_WEB,
        lookup_only: bool = False,
        request_id: str | None = None,
        actor: str = "",
        observe_time: datetime | None = None,
    ) -> Resolution:
        """Resolve identifiers seen together to one customer."""
        return self.identity.ResolveIdentity(
            resolve_request(
                identifiers,
                channel=channel,
                lookup_only=lookup_only,
                request_id=request_id,
                actor=actor,
                observe_time=observe_time,
            )
        ).resolution

    def customer_id(
        self, *identifiers: Identifier, channel: Channel = channel_pb2.CHANNEL_WEB
    ) -> str | None:
        """The customer these identifiers belong to (look-up only); None if unknown."""
        return self.resolve(*identifiers, channel=channel, lookup_only=True).customer_id or None

    def check_in(
        self,
        store_id: str,
        *identifiers: Identifier,
        source: CheckInSource = notif_res.CHECK_IN_SOURCE_APP_GEOFENCE,
        request_id: str | None = None,
        check_in_time: datetime | None = None,
        source_reference: str = "",
        associate_id: str = "",
    ) -> CheckIn:
        """Record a shopper's arrival at a store."""
        return self.notification.CheckIn(
            check_in_request(
                store_id,
                identifiers,
                source=source,
                request_id=request_id,
                check_in_time=check_in_time,
                source_reference=source_reference,
                associate_id=associate_id,
            )
        ).check_in

    def tracker(
        self,
        *,
        max_batch: int = 500,
        flush_interval_s: float | None = 1.0,
        max_buffer: int = 10_000,
        on_result: Callable[[TrackResult], None] | None = None,
        on_error: Callable[[ContinuumError], None] | None = None,
    ) -> Tracker:
        """A batching event tracker (``with cx.tracker() as t: t.track(e)``)."""
        return Tracker(
            self,
            max_batch=max_batch,
            flush_interval_s=flush_interval_s,
            max_buffer=max_buffer,
            on_result=on_result,
            on_error=on_error,
        )

    def subscribe_feed(
        self,
        store_id: str,
        *,
        resume_after: str = "",
        replay_active: bool = False,
        kinds: Iterable[FeedItemKind] = (),
        heartbeat_interval_s: float | None = None,
        include_markers: bool = False,
        max_consecutive_failures: int | None = None,
    ) -> SyncFeedSubscription:
        """A store's associate feed that reconnects and resumes (``for item in ...``)."""
        return SyncFeedSubscription(
            self,
            store_id,
            resume_after=resume_after,
            replay_active=replay_active,
            kinds=kinds,
            heartbeat_interval_s=heartbeat_interval_s,
            include_markers=include_markers,
            max_consecutive_failures=max_consecutive_failures,
        )

    def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        self._stubs = {}
        for channel in channels:
            channel.close()

    def __enter__(self) -> Continuum:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
