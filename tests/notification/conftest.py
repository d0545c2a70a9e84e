"""The notification service in-process on loopback next to real identity, profile, cart and
inventory services (each on a fresh database of its own, one shared Redis namespace), with
a small catalogue and two stores. Recommendation is not running: its target is a port with
nothing listening, so briefings must report complements and next best actions missing.

One suite per test module (starting five services per test would cost most of the time
budget); tests keep apart by using customers and identifiers of their own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
import pytest_asyncio
import redis.asyncio as aioredis
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.type import latlng_pb2
from sqlalchemy import text

from continuum.cart.v1 import cart_resources_pb2 as cart_res
from continuum.cart.v1 import cart_service_pb2 as cart_pb
from continuum.cart.v1 import cart_service_pb2_grpc as cart_grpc
from continuum.common.v1 import channel_pb2, event_pb2, identifier_pb2, money_pb2
from continuum.identity.v1 import identity_service_pb2 as id_pb
from continuum.identity.v1 import identity_service_pb2_grpc as id_grpc
from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from continuum.notification.v1 import notification_resources_pb2 as res
from continuum.notification.v1 import notification_service_pb2 as pb
from continuum.notification.v1 import notification_service_pb2_grpc as pb_grpc
from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum.profile.v1 import profile_service_pb2 as prof_pb
from continuum.profile.v1 import profile_service_pb2_grpc as prof_grpc
from continuum_notification.__main__ import MIGRATIONS as NOTIFICATION_MIGRATIONS
from continuum_notification.__main__ import make_server as make_notification
from continuum_runtime.auth import PrincipalKind, issue_token
from continuum_runtime.config import AuthSettings
from continuum_runtime.events import stream_key
from continuum_runtime.testing import TestStores, eventually, fresh_database
from tests.inprocess import Running, start, start_core

WEB = channel_pb2.CHANNEL_WEB
STORE_1, STORE_2 = "store-1", "store-2"

# sku: (product, name, colour, size, price in minor units)
CATALOGUE: dict[str, tuple[str, str, str, str, int]] = {
    "SHOE-38": ("shoe", "Aria runner", "black", "38", 8900),
    "SHOE-39": ("shoe", "Aria runner", "black", "39", 8900),
    "SHOE-40": ("shoe", "Aria runner", "black", "40", 8900),
    "BAG-1": ("bag", "Leather tote", "black", "", 12900),
    "SCARF-1": ("scarf", "Wool scarf", "grey", "", 3500),
    "BELT-1": ("belt", "Leather belt", "brown", "", 4500),
}
# (sku, location, units): the 39 is sold out in store-1 but available in store-2; the bag
# is low in store-1 (the default rule: under 5), the belt is not.
STOCK = [
    ("SHOE-38", STORE_1, 3),
    ("SHOE-40", STORE_1, 1),
    ("SHOE-39", STORE_2, 4),
    ("BAG-1", STORE_1, 2),
    ("BAG-1", STORE_2, 6),
    ("BELT-1", STORE_1, 12),
    ("BELT-1", STORE_2, 7),
    ("SHOE-38", "wh-1", 20),
    ("SHOE-39", "wh-1", 20),
    ("SCARF-1", "wh-1", 5),
]


def rid() -> str:
    return str(uuid.uuid4())


def email(address: str) -> identifier_pb2.Identifier:
    return identifier_pb2.Identifier(type=identifier_pb2.IDENTIFIER_TYPE_EMAIL, value=address)


def loyalty(value: str) -> identifier_pb2.Identifier:
    return identifier_pb2.Identifier(type=identifier_pb2.IDENTIFIER_TYPE_LOYALTY_ID, value=value)


def now_ts() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


Service = Running  # a service started in-process (server, context, database URL)


@dataclass
class Suite:
    notification: pb_grpc.NotificationServiceAsyncStub
    identity: id_grpc.IdentityServiceAsyncStub
    profile: prof_grpc.ProfileServiceAsyncStub
    cart: cart_grpc.CartServiceAsyncStub
    inventory: inv_grpc.InventoryServiceAsyncStub
    services: dict[str, Service]
    auth: AuthSettings
    namespace: str
    stores: TestStores
    outbox_file: Path
    metadata: tuple[tuple[str, str], ...]
    start_replica: Callable[..., Awaitable[Service]] = field(repr=False)
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def token(
        self,
        subject: str = "tests",
        kind: PrincipalKind = PrincipalKind.SERVICE,
        stores: tuple[str, ...] = (),
        scopes: tuple[str, ...] = (),
    ) -> tuple[tuple[str, str], ...]:
        minted = issue_token(self.auth, subject=subject, kind=kind, stores=stores, scopes=scopes)
        return (("authorization", f"Bearer {minted}"),)

    def associate(self, subject: str, *stores: str) -> tuple[tuple[str, str], ...]:
        return self.token(subject, PrincipalKind.ASSOCIATE, stores)

    def stub(self, service: Service) -> pb_grpc.NotificationServiceAsyncStub:
        channel = grpc.aio.insecure_channel(service.target)
        self.channels.append(channel)
        stub: pb_grpc.NotificationServiceAsyncStub = cast(
            Any, pb_grpc.NotificationServiceStub(channel)
        )
        return stub

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        async with self.services["notification"].ctx.db.sessions() as session:
            return list((await session.execute(text(sql), params)).all())

    async def events(self, event_type: str) -> list[event_pb2.EventEnvelope]:
        found = await self.rows(
            "SELECT envelope FROM outbox WHERE event_type = :t ORDER BY seq", t=event_type
        )
        return [event_pb2.EventEnvelope.FromString(bytes(r[0])) for r in found]

    async def publish(self, producer: str, envelope: event_pb2.EventEnvelope) -> None:
        """Put an event on a producer's stream, as its relay does, and wait until the
        notification service has handled (acknowledged) it."""
        redis = self.services["notification"].ctx.redis
        stream = stream_key(self.namespace, producer)
        message_id = await redis.xadd(
            stream,
            {"id": envelope.id, "type": envelope.type, "envelope": envelope.SerializeToString()},
        )

        async def handled() -> bool:
            groups = await redis.xinfo_groups(stream)
            mine = next((g for g in groups if g["name"] in (b"notification", "notification")), None)
            if mine is None:
                return False
            return bool(
                tuple(map(int, _id(mine["last-delivered-id"]).split("-")))
                >= tuple(map(int, _id(message_id).split("-")))
                and mine["pending"] == 0
            )

        await eventually(handled)

    async def new_customer(
        self,
        tag: str,
        *,
        recognised: bool = True,
        cart: tuple[tuple[str, int], ...] = (),
        wishlist: tuple[str, ...] = (),
        consents: tuple[tuple[int, int], ...] = (),
        time_zone: str = "UTC",
    ) -> str:
        """A known customer with a profile (name, loyalty tier, recognition consent as
        given), a cart and a wishlist; returns the customer id."""
        md = self.metadata
        resolved = await self.identity.ResolveIdentity(
            id_pb.ResolveIdentityRequest(
                request_id=rid(),
                identifiers=[email(f"{tag}@example.com"), loyalty(f"L-{tag}")],
                channel=WEB,
            ),
            metadata=md,
        )
        cid = resolved.resolution.customer_id
        await self.profile.UpdateProfile(
            prof_pb.UpdateProfileRequest(
                request_id=rid(),
                profile=prof.Profile(
                    customer_id=cid,
                    contact=prof.ContactDetails(
                        given_name="Sam", family_name="Kowalski", email=f"{tag}@example.com"
                    ),
                    loyalty_tier="gold",
                    time_zone=time_zone,
                ),
                update_mask=field_mask_pb2.FieldMask(
                    paths=["contact", "loyalty_tier", "time_zone"]
                ),
            ),
            metadata=md,
        )
        given = [
            prof.Consent(
                channel=channel_pb2.CHANNEL_STORE,
                purpose=prof.CONSENT_PURPOSE_STORE_RECOGNITION,
                status=prof.CONSENT_STATUS_GRANTED if recognised else prof.CONSENT_STATUS_DENIED,
                source="app_settings",
                consent_time=now_ts(),
            )
        ] + [
            prof.Consent(
                channel=ch,  # type: ignore[arg-type]
                purpose=purpose,  # type: ignore[arg-type]
                status=prof.CONSENT_STATUS_GRANTED,
                source="checkout",
                consent_time=now_ts(),
            )
            for ch, purpose in consents
        ]
        await self.profile.UpdateConsent(
            prof_pb.UpdateConsentRequest(request_id=rid(), customer_id=cid, consents=given),
            metadata=md,
        )
        owner = cart_res.Owner(customer_id=cid)
        for sku, qty in cart:
            await self.cart.AddItem(
                cart_pb.AddItemRequest(
                    request_id=rid(), owner=owner, sku=sku, quantity=qty, channel=WEB
                ),
                metadata=md,
            )
        for sku in wishlist:
            await self.cart.AddWishlistItem(
                cart_pb.AddWishlistItemRequest(
                    request_id=rid(), owner=owner, sku=sku, quantity=1, channel=WEB
                ),
                metadata=md,
            )
        return cid

    async def check_in(
        self,
        tag: str,
        store_id: str = STORE_1,
        request_id: str = "",
        stub: pb_grpc.NotificationServiceAsyncStub | None = None,
    ) -> pb.CheckInResponse:
        answer: pb.CheckInResponse = await (stub or self.notification).CheckIn(
            pb.CheckInRequest(
                request_id=request_id or rid(),
                identifiers=[loyalty(f"L-{tag}")],
                store_id=store_id,
                source=res.CHECK_IN_SOURCE_APP_GEOFENCE,
            ),
            metadata=self.metadata,
        )
        return answer

    async def briefing(
        self,
        briefing_id: str,
        stub: pb_grpc.NotificationServiceAsyncStub | None = None,
        metadata: Any = None,
    ) -> res.Briefing:
        """A stored briefing of store 1, read through ``stub`` (default: the suite's)."""
        answer: pb.GetBriefingResponse = await (stub or self.notification).GetBriefing(
            pb.GetBriefingRequest(store_id=STORE_1, briefing_id=briefing_id),
            metadata=metadata or self.metadata,
        )
        return answer.briefing


def _id(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _seed(stub: Any, md: Any) -> None:
    for sku, (product, name, colour, size, price) in CATALOGUE.items():
        await stub.CreateItem(
            inv_pb.CreateItemRequest(
                request_id=rid(),
                item=inv.Item(
                    sku=sku,
                    product_id=product,
                    name=name,
                    brand="Continuum",
                    category="Women > Shoes" if product == "shoe" else "Women > Accessories",
                    colour=colour,
                    size=size,
                    price=money_pb2.Money(currency_code="EUR", amount_minor=price),
                    state=inv.ITEM_STATE_ACTIVE,
                ),
            ),
            metadata=md,
        )
    for loc, kind, lat in (
        ("wh-1", inv.LOCATION_TYPE_WAREHOUSE, 48.80),
        (STORE_1, inv.LOCATION_TYPE_STORE, 48.85),
        (STORE_2, inv.LOCATION_TYPE_STORE, 48.86),
    ):
        await stub.CreateLocation(
            inv_pb.CreateLocationRequest(
                request_id=rid(),
                location=inv.Location(
                    location_id=loc,
                    name=loc,
                    type=kind,
                    coordinates=latlng_pb2.LatLng(latitude=lat, longitude=2.35),
                    time_zone="Europe/Paris",
                    pickup_capable=kind == inv.LOCATION_TYPE_STORE,
                    ship_from_capable=kind == inv.LOCATION_TYPE_WAREHOUSE,
                    pickup_buffer=0,
                ),
            ),
            metadata=md,
        )
    for sku, loc, units in STOCK:
        await stub.AdjustStock(
            inv_pb.AdjustStockRequest(
                request_id=rid(),
                sku=sku,
                location_id=loc,
                type=inv.STOCK_CHANGE_TYPE_RECEIPT,
                delta=units,
                reason="initial receipt",
            ),
            metadata=md,
        )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def suite(
    test_stores: TestStores, auth_settings: AuthSettings, tmp_path_factory: Any
) -> AsyncIterator[Suite]:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    outbox_file = Path(tmp_path_factory.mktemp("notification")) / "messages.jsonl"
    md = (
        (
            "authorization",
            "Bearer " + issue_token(auth_settings, subject="tests", kind=PrincipalKind.SERVICE),
        ),
    )
    try:
        # Closed in reverse: channels, replicas, notification, the four, then the databases.
        async with AsyncExitStack() as stack:
            core = await start_core(
                stack, test_stores, auth_settings, namespace=namespace, prefix="n"
            )
            notification_url = await stack.enter_async_context(fresh_database(test_stores, "nnot"))

            async def start_notification(**targets: str) -> Service:
                """A notification service (another replica after the first) on the same
                database and Redis namespace; ``profile=`` / ``cart=`` /
                ``recommendation=`` override those targets."""
                settings = core.notification_settings(notification_url, outbox_file, **targets)
                return await start(stack, settings, NOTIFICATION_MIGRATIONS, make_notification)

            services = {
                "identity": core.identity,
                "inventory": core.inventory,
                "profile": core.profile,
                "cart": core.cart,
                "notification": await start_notification(),
            }
            channels = {
                name: grpc.aio.insecure_channel(svc.target) for name, svc in services.items()
            }
            await _seed(inv_grpc.InventoryServiceStub(channels["inventory"]), md)
            # The tests assert what a briefing holds, not how fast a loaded machine fills
            # it: a generous budget keeps a slow CI run from dropping parts. (Down services
            # still fail at once: their targets refuse connections.)
            notification = pb_grpc.NotificationServiceStub(channels["notification"])
            await notification.UpdateNotificationSettings(
                pb.UpdateNotificationSettingsRequest(
                    request_id=rid(),
                    settings=res.NotificationSettings(
                        briefing_budget=duration_pb2.Duration(seconds=10)
                    ),
                    update_mask=field_mask_pb2.FieldMask(paths=["briefing_budget"]),
                    actor="tests",
                ),
                metadata=md,
            )
            suite = Suite(
                notification=cast(Any, notification),
                identity=cast(Any, id_grpc.IdentityServiceStub(channels["identity"])),
                profile=cast(Any, prof_grpc.ProfileServiceStub(channels["profile"])),
                cart=cast(Any, cart_grpc.CartServiceStub(channels["cart"])),
                inventory=cast(Any, inv_grpc.InventoryServiceStub(channels["inventory"])),
                services=services,
                auth=auth_settings,
                namespace=namespace,
                stores=test_stores,
                outbox_file=outbox_file,
                metadata=md,
                start_replica=start_notification,
                channels=list(channels.values()),
            )
            try:
                yield suite
            finally:
                for channel in suite.channels:
                    await channel.close(None)
    finally:
        client = aioredis.from_url(test_stores.redis_url)
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
