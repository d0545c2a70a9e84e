"""The services notification calls, and how their failures become missing parts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from continuum.cart.v1 import cart_service_pb2_grpc
from continuum.common.v1 import partial_pb2
from continuum.identity.v1 import identity_service_pb2_grpc
from continuum.inventory.v1 import inventory_resources_pb2 as inv_res
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.inventory.v1 import inventory_service_pb2_grpc
from continuum.profile.v1 import profile_service_pb2_grpc
from continuum.recommendation.v1 import recommendation_service_pb2_grpc
from continuum_notification.settings import NotificationSettings
from continuum_runtime.client import service_channel
from continuum_runtime.errors import Unavailable

T = TypeVar("T")

IDENTITY = "continuum.identity.v1.IdentityService"
PROFILE = "continuum.profile.v1.ProfileService"
CART = "continuum.cart.v1.CartService"
INVENTORY = "continuum.inventory.v1.InventoryService"
RECOMMENDATION = "continuum.recommendation.v1.RecommendationService"

_REASONS = {
    "UNAVAILABLE": "unavailable",
    "DEADLINE_EXCEEDED": "timeout",
    "NOT_FOUND": "not found",
    "UNIMPLEMENTED": "not provided by the service",
}


class PartFailed(Exception):
    """A part of a briefing (or handoff) could not be filled."""

    def __init__(self, part: str, service: str, code: str, reason: str) -> None:
        super().__init__(f"{part}: {code}")
        self.missing = partial_pb2.MissingPart(part=part, service=service, code=code, reason=reason)

    def also(self, part: str) -> partial_pb2.MissingPart:
        """The same failure for another part that the same call was to fill."""
        missing = partial_pb2.MissingPart()
        missing.CopyFrom(self.missing)
        missing.part = part
        return missing


async def part(part_name: str, service: str, call: Awaitable[T], timeout_s: float) -> T:
    """Await ``call`` for a named part within ``timeout_s``; PartFailed with the reason
    (unavailable, timeout, not found, ...) when it fails."""
    try:
        return await asyncio.wait_for(call, timeout=max(timeout_s, 0.001))
    except TimeoutError as exc:
        raise PartFailed(part_name, service, "DEADLINE_EXCEEDED", "timeout") from exc
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
        raise PartFailed(part_name, service, code, _REASONS.get(code, "failed")) from exc


@dataclass
class Dependencies:
    """Stubs to the five services notification reads from, over one channel each."""

    identity: identity_service_pb2_grpc.IdentityServiceAsyncStub
    profile: profile_service_pb2_grpc.ProfileServiceAsyncStub
    cart: cart_service_pb2_grpc.CartServiceAsyncStub
    inventory: inventory_service_pb2_grpc.InventoryServiceAsyncStub
    recommendation: recommendation_service_pb2_grpc.RecommendationServiceAsyncStub
    store_cache_ttl_s: float = 300.0
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    _stores: dict[str, tuple[bool, float]] = field(default_factory=dict)
    # A product's active items (its sizes), from inventory's item master: they change
    # rarely, and every briefing with that product asks.
    _products: dict[str, tuple[list[inv_res.Item], float]] = field(default_factory=dict)

    def cached_product(self, product_id: str) -> list[inv_res.Item] | None:
        found = self._products.get(product_id)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def cache_product(self, product_id: str, items: list[inv_res.Item]) -> None:
        if len(self._products) >= 50_000:
            self._products.clear()
        self._products[product_id] = (items, time.monotonic() + self.store_cache_ttl_s)

    @classmethod
    def connect(cls, settings: NotificationSettings) -> Dependencies:
        channels = [
            service_channel(settings, target)
            for target in (
                settings.identity_target,
                settings.profile_target,
                settings.cart_target,
                settings.inventory_target,
                settings.recommendation_target,
            )
        ]
        return cls(
            identity=identity_service_pb2_grpc.IdentityServiceStub(channels[0]),
            profile=profile_service_pb2_grpc.ProfileServiceStub(channels[1]),
            cart=cart_service_pb2_grpc.CartServiceStub(channels[2]),
            inventory=inventory_service_pb2_grpc.InventoryServiceStub(channels[3]),
            recommendation=recommendation_service_pb2_grpc.RecommendationServiceStub(channels[4]),
            store_cache_ttl_s=settings.store_cache_ttl_s,
            channels=channels,
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)

    async def store_exists(self, store_id: str, timeout_s: float = 2.0) -> bool | None:
        """Whether inventory knows the store as a location (cached); None when inventory
        cannot say right now and nothing is cached."""
        cached = self._stores.get(store_id)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            await self.inventory.GetLocation(
                inv_pb.GetLocationRequest(location_id=store_id), timeout=timeout_s
            )
            exists = True
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                exists = False
            else:
                return cached[0] if cached is not None else None
        # Unknown stores are remembered briefly only: a store created a moment later works.
        ttl = self.store_cache_ttl_s if exists else min(5.0, self.store_cache_ttl_s)
        self._stores[store_id] = (exists, now + ttl)
        return exists


def unavailable(service: str, exc: grpc.aio.AioRpcError) -> Unavailable:
    """UNAVAILABLE for a dependency that failed in a way the caller should retry."""
    return Unavailable(
        f"{service} is not available right now",
        reason="DEPENDENCY_UNAVAILABLE",
        metadata={"service": service, "code": exc.code().name},
    )
