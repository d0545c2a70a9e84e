"""The entry objects: :class:`AsyncContinuum` (asyncio) and :class:`Continuum` (blocking).

Both expose the six services as typed stubs (``identity``, ``profile``, ``cart``,
``inventory``, ``recommendation``, ``notification``) whose calls carry the configured token,
the default deadline, retries of UNAVAILABLE under a budget, keepalive and TLS, and raise
typed :mod:`continuum_sdk.errors` exceptions. One channel per distinct target is opened
lazily and shared; close the client (or use it as a context manager) when done.
"""

from __future__ import annotations

from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import grpc

from continuum.cart.v1 import cart_service_pb2, cart_service_pb2_grpc
from continuum.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from continuum.inventory.v1 import inventory_service_pb2, inventory_service_pb2_grpc
from continuum.notification.v1 import notification_service_pb2, notification_service_pb2_grpc
from continuum.profile.v1 import profile_service_pb2, profile_service_pb2_grpc
from continuum.recommendation.v1 import (
    recommendation_service_pb2,
    recommendation_service_pb2_grpc,
)
from continuum_sdk._stubs import StubWrapper
from continuum_sdk.config import SERVICE_NAMES, ClientConfig, TLSConfig

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
