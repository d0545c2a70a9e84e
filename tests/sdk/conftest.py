"""The SDK against real services in-process on loopback: identity, inventory, profile,
cart and notification, each on a fresh database of its own, one Redis namespace, started
once for the whole folder with the runtime's ``fresh_database`` and ``serving`` fixtures.
Recommendation is not started (its target is a port with nothing listening), so briefings
list complements and next best actions as missing parts.

The notification service can be restarted on the same port (``suite.restart_notification``)
to test that a feed subscription resumes. Tests keep apart by using identifiers of their
own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest_asyncio
import redis.asyncio as aioredis
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.type import latlng_pb2

from continuum.common.v1 import channel_pb2
from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.notification.v1 import notification_resources_pb2 as notif_res
from continuum.notification.v1 import notification_service_pb2 as notif_pb
from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum.profile.v1 import profile_service_pb2 as prof_pb
from continuum_notification.__main__ import MIGRATIONS as NOTIFICATION_MIGRATIONS
from continuum_notification.__main__ import make_server as make_notification
from continuum_notification.settings import NotificationSettings
from continuum_runtime.app import ServiceContext
from continuum_runtime.auth import PrincipalKind, issue_token
from continuum_runtime.config import AuthSettings
from continuum_runtime.server import ServiceServer
from continuum_runtime.testing import TestStores, fresh_database, serving
from continuum_sdk import AsyncContinuum, ClientConfig, money
from continuum_sdk.identifiers import email, loyalty
from tests.inprocess import start_core

STORE_1, STORE_2 = "store-1", "store-2"
ROOT = Path(__file__).resolve().parents[2]

# sku: (product, name, colour, size, price in minor units)
CATALOGUE: dict[str, tuple[str, str, str, str, int]] = {
    "SHOE-38": ("shoe", "Aria runner", "black", "38", 8900),
    "SHOE-39": ("shoe", "Aria runner", "black", "39", 8900),
    "BAG-1": ("bag", "Leather tote", "black", "", 12900),
}
STOCK = [("SHOE-38", STORE_1, 50), ("SHOE-39", STORE_1, 2), ("BAG-1", STORE_1, 50)]
STOCK += [("SHOE-38", "wh-1", 50), ("SHOE-39", "wh-1", 50), ("BAG-1", "wh-1", 50)]


def target(server: ServiceServer) -> str:
    return f"127.0.0.1:{server.port}"


@dataclass
class Suite:
    auth: AuthSettings
    targets: dict[str, str]
    notification_settings: NotificationSettings
    notification: ServiceServer
    _notification_cm: AbstractAsyncContextManager[tuple[ServiceServer, ServiceContext]] = field(
        repr=False
    )

    def token(
        self,
        subject: str = "sdk-tests",
        kind: PrincipalKind = PrincipalKind.CHANNEL_APP,
        stores: tuple[str, ...] = (),
    ) -> str:
        return issue_token(self.auth, subject=subject, kind=kind, stores=stores)

    def config(self, token: str | None = "", **overrides: Any) -> ClientConfig:
        """A client config for the suite (a channel-app token unless one is given; None
        for none)."""
        base = ClientConfig(
            targets=dict(self.targets), token=self.token() if token == "" else token
        )
        return replace(base, **overrides) if overrides else base

    def env(self) -> dict[str, str]:
        """The environment an example reads with ``ClientConfig.from_env()``."""
        out = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUUM_")}
        out.update({f"CONTINUUM_{name.upper()}_TARGET": t for name, t in self.targets.items()})
        out["CONTINUUM_TOKEN"] = self.token(kind=PrincipalKind.SERVICE)
        return out

    async def restart_notification(self) -> None:
        """Stop the notification service (draining it, which ends open streams) and start
        it again on the same port and database."""
        await self._notification_cm.__aexit__(None, None, None)
        settings = self.notification_settings.model_copy(update={"port": self.notification.port})
        self._notification_cm = serving(settings, NOTIFICATION_MIGRATIONS, make_notification)
        self.notification, _ = await self._notification_cm.__aenter__()

    async def new_customer(self, tag: str, *, recognised: bool = True) -> str:
        """A known customer (email and loyalty id from ``tag``) with a name and, when
        ``recognised``, consent to be recognised in store; returns the customer id."""
        async with AsyncContinuum(self.config(self.token(kind=PrincipalKind.SERVICE))) as cx:
            cid = (await cx.resolve(email(f"{tag}@example.com"), loyalty(f"L-{tag}"))).customer_id
            await cx.profile.UpdateProfile(
                prof_pb.UpdateProfileRequest(
                    request_id=str(uuid.uuid4()),
                    profile=prof.Profile(
                        customer_id=cid,
                        contact=prof.ContactDetails(given_name="Sam", family_name="Kowalski"),
                        loyalty_tier="gold",
                    ),
                    update_mask=field_mask_pb2.FieldMask(paths=["contact", "loyalty_tier"]),
                )
            )
            now = timestamp_pb2.Timestamp()
            now.GetCurrentTime()
            await cx.profile.UpdateConsent(
                prof_pb.UpdateConsentRequest(
                    request_id=str(uuid.uuid4()),
                    customer_id=cid,
                    consents=[
                        prof.Consent(
                            channel=channel_pb2.CHANNEL_STORE,
                            purpose=prof.CONSENT_PURPOSE_STORE_RECOGNITION,
                            status=prof.CONSENT_STATUS_GRANTED
                            if recognised
                            else prof.CONSENT_STATUS_DENIED,
                            source="app_settings",
                            consent_time=now,
                        )
                    ],
                )
            )
        return cid


async def _seed(cx: AsyncContinuum) -> None:
    for sku, (product, name, colour, size, price) in CATALOGUE.items():
        await cx.inventory.CreateItem(
            inv_pb.CreateItemRequest(
                request_id=str(uuid.uuid4()),
                item=inv.Item(
                    sku=sku,
                    product_id=product,
                    name=name,
                    brand="Continuum",
                    category="Women > Shoes" if product == "shoe" else "Women > Bags",
                    colour=colour,
                    size=size,
                    price=money(price, "EUR"),
                    state=inv.ITEM_STATE_ACTIVE,
                ),
            )
        )
    for loc, kind in (
        ("wh-1", inv.LOCATION_TYPE_WAREHOUSE),
        (STORE_1, inv.LOCATION_TYPE_STORE),
        (STORE_2, inv.LOCATION_TYPE_STORE),
    ):
        await cx.inventory.CreateLocation(
            inv_pb.CreateLocationRequest(
                request_id=str(uuid.uuid4()),
                location=inv.Location(
                    location_id=loc,
                    name=loc,
                    type=kind,
                    coordinates=latlng_pb2.LatLng(latitude=48.85, longitude=2.35),
                    time_zone="Europe/Paris",
                    pickup_capable=kind == inv.LOCATION_TYPE_STORE,
                    ship_from_capable=kind == inv.LOCATION_TYPE_WAREHOUSE,
                    pickup_buffer=0,
                ),
            )
        )
    for sku, loc, units in STOCK:
        await cx.inventory.AdjustStock(
            inv_pb.AdjustStockRequest(
                request_id=str(uuid.uuid4()),
                sku=sku,
                location_id=loc,
                type=inv.STOCK_CHANGE_TYPE_RECEIPT,
                delta=units,
                reason="initial receipt",
            )
        )
    # Briefings are asserted for what they hold, not for how fast a loaded machine fills
    # them: a generous budget (down services still fail at once: connection refused).
    await cx.notification.UpdateNotificationSettings(
        notif_pb.UpdateNotificationSettingsRequest(
            request_id=str(uuid.uuid4()),
            settings=notif_res.NotificationSettings(
                briefing_budget=duration_pb2.Duration(seconds=10)
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["briefing_budget"]),
            actor="sdk-tests",
        )
    )


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def suite(
    test_stores: TestStores, auth_settings: AuthSettings, tmp_path_factory: Any
) -> AsyncIterator[Suite]:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    try:
        async with AsyncExitStack() as stack:
            core = await start_core(
                stack, test_stores, auth_settings, namespace=namespace, prefix="sdk"
            )
            notification_settings = core.notification_settings(
                await stack.enter_async_context(fresh_database(test_stores, "sdknot")),
                Path(tmp_path_factory.mktemp("sdk")) / "messages.jsonl",
            )
            notification_cm = serving(
                notification_settings, NOTIFICATION_MIGRATIONS, make_notification
            )
            notification, _ = await notification_cm.__aenter__()
            suite = Suite(
                auth=auth_settings,
                targets={
                    "identity": core.identity.target,
                    "inventory": core.inventory.target,
                    "profile": core.profile.target,
                    "cart": core.cart.target,
                    "notification": target(notification),
                    "recommendation": notification_settings.recommendation_target,
                },
                notification_settings=notification_settings,
                notification=notification,
                _notification_cm=notification_cm,
            )
            try:
                async with AsyncContinuum(
                    suite.config(suite.token(kind=PrincipalKind.SERVICE))
                ) as cx:
                    await _seed(cx)
                yield suite
            finally:
                await suite._notification_cm.__aexit__(None, None, None)
    finally:
        client = aioredis.from_url(test_stores.redis_url)
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
