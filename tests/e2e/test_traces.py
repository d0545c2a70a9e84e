"""Traces across the six services, as processes, exported over OTLP to a collector here.

A tiny OTLP/gRPC trace collector (``TraceService.Export`` on 127.0.0.1) runs in the test;
the suite starts with ``CONTINUUM_OTLP_ENDPOINT`` pointing at it and a short batch delay.

* One store check-in is ONE trace: notification's CheckIn server span is its root, and it
  holds the server spans of identity, profile, cart, inventory and recommendation, the
  database spans of each service the check-in touched, and notification's Redis spans
  (the deduplication claim, the feed XADD).
* A service flushes its queued spans when it stops (SIGTERM): one with a batch delay of
  ten minutes still delivers the span of its last call.
* Cart add item -> abandonment -> notification's abandoned-cart reminder: the detector
  runs later, in a background task, so it starts a trace of its own (``cart.abandon``)
  with a span LINK to the trace of the cart's last update (AddItem); notification's
  consumer span, which creates the reminder, is a child of the abandonment span (the
  trace context travels in the event envelope).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.type import latlng_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from continuum.cart.v1 import cart_resources_pb2 as cart_res
from continuum.cart.v1 import cart_service_pb2 as cart_pb
from continuum.common.v1 import channel_pb2, identifier_pb2, money_pb2
from continuum.identity.v1 import identity_service_pb2 as id_pb
from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from continuum.notification.v1 import notification_resources_pb2 as note
from continuum.notification.v1 import notification_service_pb2 as note_pb
from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum.profile.v1 import profile_service_pb2 as prof_pb
from continuum_cli.suite import RunningSuite, wait_serving
from continuum_runtime.auth import PrincipalKind
from continuum_runtime.config import AuthSettings
from continuum_runtime.testing import TestStores, TokenFactory, eventually, fresh_database
from continuum_sdk import AsyncContinuum
from tests.e2e.conftest import free_port, six_services

SERVICES = ("notification", "identity", "profile", "cart", "inventory", "recommendation")
SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CONSUMER = trace_pb2.Span.SPAN_KIND_CONSUMER
WEB = channel_pb2.CHANNEL_WEB
STORE_ID = "trace-store-1"


@dataclass(frozen=True)
class Received:
    """One span as the collector got it, with the service.name of its resource."""

    service: str
    span: trace_pb2.Span

    @property
    def trace_id(self) -> bytes:
        return self.span.trace_id

    def attribute(self, key: str) -> str:
        for kv in self.span.attributes:
            if kv.key == key:
                return kv.value.string_value
        return ""


@dataclass
class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Stores every span exported to it."""

    spans: list[Received] = field(default_factory=list)

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = next(
                (
                    kv.value.string_value
                    for kv in resource_spans.resource.attributes
                    if kv.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(Received(service, span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: bytes) -> list[Received]:
        return [s for s in self.spans if s.trace_id == trace_id]

    def named(self, service: str, name: str) -> list[Received]:
        return [s for s in self.spans if s.service == service and s.span.name == name]


def servers(spans: Iterable[Received]) -> set[str]:
    return {s.service for s in spans if s.span.kind == SERVER}


def with_system(spans: Iterable[Received], system: str) -> set[str]:
    return {s.service for s in spans if s.attribute("db.system") == system}


def describe(spans: Iterable[Received]) -> str:
    """The spans of a trace, for assertion messages."""
    return "\n".join(
        f"  {s.service:15} {trace_pb2.Span.SpanKind.Name(s.span.kind):18} {s.span.name}"
        f" db={s.attribute('db.system')}"
        for s in sorted(spans, key=lambda s: s.span.start_time_unix_nano)
    )


@contextlib.asynccontextmanager
async def collecting() -> AsyncIterator[tuple[Collector, str]]:
    """A collector on 127.0.0.1 and the OTLP endpoint to give the services."""
    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield collector, f"http://127.0.0.1:{port}"
    finally:
        await server.stop(None)


def otlp_env(endpoint: str, *, delay_ms: int) -> dict[str, str]:
    # http:// makes the OTLP gRPC exporter insecure; say so explicitly in case the
    # environment running the tests sets OTEL_EXPORTER_OTLP_INSECURE otherwise.
    return {
        "CONTINUUM_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": str(delay_ms),
    }


@dataclass
class Traced:
    collector: Collector
    suite: RunningSuite
    client: AsyncContinuum


@pytest_asyncio.fixture(scope="module")
async def traced(
    test_stores: TestStores, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Traced]:
    data_dir: Path = tmp_path_factory.mktemp("traces")
    async with (
        collecting() as (collector, endpoint),
        six_services(
            test_stores,
            data_dir,
            env=otlp_env(endpoint, delay_ms=200),
            service_env={
                "cart": {
                    "CONTINUUM_ABANDON_AFTER_S": "2",
                    "CONTINUUM_ABANDON_CHECK_INTERVAL_S": "0.5",
                },
            },
        ) as suite,
    ):
        client = suite.client(token=suite.token("trace-test", kind=PrincipalKind.SERVICE))
        try:
            await seed_store(client)
            # A slow machine must not drop parts of the check-in (and so spans of a
            # service): the budget is not what this test is about.
            # And reminders are due as soon as the cart is abandoned, so that the test
            # sees the sender handle one.
            current = (
                await client.notification.GetNotificationSettings(
                    note_pb.GetNotificationSettingsRequest()
                )
            ).settings
            kinds = list(current.message_kinds)
            for kind in kinds:
                if kind.kind == note.MESSAGE_KIND_ABANDONED_CART_REMINDER:
                    kind.delay.CopyFrom(duration_pb2.Duration(seconds=0))
            await client.notification.UpdateNotificationSettings(
                note_pb.UpdateNotificationSettingsRequest(
                    request_id=rid(),
                    settings=note.NotificationSettings(
                        briefing_budget=duration_pb2.Duration(seconds=10), message_kinds=kinds
                    ),
                    update_mask=field_mask_pb2.FieldMask(
                        paths=["briefing_budget", "message_kinds"]
                    ),
                    actor="trace-test",
                )
            )
            yield Traced(collector, suite, client)
        finally:
            await client.close()


def rid() -> str:
    return str(uuid.uuid4())


def loyalty(value: str) -> identifier_pb2.Identifier:
    return identifier_pb2.Identifier(type=identifier_pb2.IDENTIFIER_TYPE_LOYALTY_ID, value=value)


ITEMS = {
    "TR-SHOE-38": ("tr-shoe", "Trace runner", "38", 8900),
    "TR-SHOE-39": ("tr-shoe", "Trace runner", "39", 8900),
    "TR-BAG": ("tr-bag", "Trace tote", "", 12900),
}


async def seed_store(client: AsyncContinuum) -> None:
    """A store with stock of a small catalogue."""
    for sku, (product, name, size, price) in ITEMS.items():
        await client.inventory.CreateItem(
            inv_pb.CreateItemRequest(
                request_id=rid(),
                item=inv.Item(
                    sku=sku,
                    product_id=product,
                    name=name,
                    brand="Continuum",
                    category="Women > Shoes" if size else "Women > Bags",
                    colour="black",
                    size=size,
                    price=money_pb2.Money(currency_code="EUR", amount_minor=price),
                    state=inv.ITEM_STATE_ACTIVE,
                ),
            )
        )
    await client.inventory.CreateLocation(
        inv_pb.CreateLocationRequest(
            request_id=rid(),
            location=inv.Location(
                location_id=STORE_ID,
                name="Trace store",
                type=inv.LOCATION_TYPE_STORE,
                coordinates=latlng_pb2.LatLng(latitude=48.85, longitude=2.35),
                time_zone="Europe/Paris",
                pickup_capable=True,
            ),
        )
    )
    for sku in ITEMS:
        await client.inventory.AdjustStock(
            inv_pb.AdjustStockRequest(
                request_id=rid(),
                sku=sku,
                location_id=STORE_ID,
                type=inv.STOCK_CHANGE_TYPE_RECEIPT,
                delta=5,
                reason="trace test",
            )
        )


async def new_customer(client: AsyncContinuum, card: str) -> str:
    """A customer with a name, store-recognition consent and a loyalty card."""
    resolved = await client.identity.ResolveIdentity(
        id_pb.ResolveIdentityRequest(request_id=rid(), identifiers=[loyalty(card)], channel=WEB)
    )
    customer_id = str(resolved.resolution.customer_id)
    await client.profile.UpdateProfile(
        prof_pb.UpdateProfileRequest(
            request_id=rid(),
            profile=prof.Profile(
                customer_id=customer_id,
                contact=prof.ContactDetails(given_name="Trace", family_name="Shopper"),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["contact"]),
        )
    )
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    await client.profile.UpdateConsent(
        prof_pb.UpdateConsentRequest(
            request_id=rid(),
            customer_id=customer_id,
            consents=[
                prof.Consent(
                    channel=channel_pb2.CHANNEL_STORE,
                    purpose=prof.CONSENT_PURPOSE_STORE_RECOGNITION,
                    status=prof.CONSENT_STATUS_GRANTED,
                    source="trace test",
                    consent_time=now,
                )
            ],
        )
    )
    return customer_id


async def add_item(client: AsyncContinuum, customer_id: str, sku: str) -> None:
    await client.cart.AddItem(
        cart_pb.AddItemRequest(
            request_id=rid(),
            owner=cart_res.Owner(customer_id=customer_id),
            sku=sku,
            quantity=1,
            channel=WEB,
        )
    )


async def test_a_check_in_is_one_trace_across_the_six_services(traced: Traced) -> None:
    client, collector = traced.client, traced.collector
    customer_id = await new_customer(client, "TRACE-CHECKIN-1")
    await add_item(client, customer_id, "TR-SHOE-38")
    await add_item(client, customer_id, "TR-BAG")

    answer = await client.notification.CheckIn(
        note_pb.CheckInRequest(
            request_id=rid(),
            identifiers=[loyalty("TRACE-CHECKIN-1")],
            store_id=STORE_ID,
            source=note.CHECK_IN_SOURCE_APP_GEOFENCE,
        ),
        timeout=30,
    )
    assert answer.check_in.status == note.CHECK_IN_STATUS_BRIEFED
    check_in_id = answer.check_in.check_in_id

    def check_in_roots() -> list[Received]:
        return [
            s
            for s in collector.named(
                "notification", "/continuum.notification.v1.NotificationService/CheckIn"
            )
            if s.span.kind == SERVER
        ]

    async def complete() -> bool:
        roots = check_in_roots()
        if not roots:
            return False
        spans = collector.trace(roots[-1].trace_id)
        return (
            servers(spans) >= set(SERVICES)
            and with_system(spans, "postgresql")
            >= {"notification", "identity", "profile", "cart", "inventory"}
            and "notification" in with_system(spans, "redis")
        )

    try:
        await eventually(complete, timeout_s=30, interval_s=0.2)
    finally:
        roots = check_in_roots()
        spans = collector.trace(roots[-1].trace_id) if roots else []
        print(f"check-in {check_in_id} trace:\n{describe(spans)}")

    # One check-in, one trace: one CheckIn server span, and it is the root.
    (root,) = check_in_roots()
    assert not root.span.parent_span_id
    spans = collector.trace(root.trace_id)
    assert servers(spans) == set(SERVICES)
    # Every span of the trace hangs off another span of it (nothing orphaned).
    ids = {s.span.span_id for s in spans}
    assert all(s.span.parent_span_id in ids for s in spans if s is not root), describe(spans)
    # Database spans of each service that reads its database on the way.
    databases = with_system(spans, "postgresql")
    assert databases >= {"notification", "identity", "profile", "cart", "inventory"}, describe(
        spans
    )
    # Redis: notification's deduplication claim and the feed XADD.
    redis_spans = [s for s in spans if s.attribute("db.system") == "redis"]
    assert {s.span.name for s in redis_spans if s.service == "notification"} >= {"SET", "XADD"}


async def test_cart_abandonment_reminder_links_back_to_the_cart_activity(
    traced: Traced,
) -> None:
    client, collector = traced.client, traced.collector
    customer_id = await new_customer(client, "TRACE-ABANDON-1")

    def add_items() -> list[Received]:
        spans = collector.named("cart", "/continuum.cart.v1.CartService/AddItem")
        return sorted(
            (s for s in spans if s.span.kind == SERVER),
            key=lambda s: s.span.start_time_unix_nano,
        )

    before = len(add_items())
    await add_item(client, customer_id, "TR-SHOE-39")
    owner = cart_res.Owner(customer_id=customer_id)
    cart = (await client.cart.GetCart(cart_pb.GetCartRequest(owner=owner))).cart

    async def added() -> bool:
        return len(add_items()) > before

    await eventually(added, timeout_s=30, interval_s=0.2)
    add = add_items()[-1]  # calls are sequential: the newest AddItem is this one

    async def reminded() -> bool:
        listed = await client.notification.ListMessages(
            note_pb.ListMessagesRequest(customer_id=customer_id)
        )
        return any(
            m.kind == note.MESSAGE_KIND_ABANDONED_CART_REMINDER and m.cart_id == cart.cart_id
            for m in listed.messages
        )

    await eventually(reminded, timeout_s=30, interval_s=0.2)

    def abandons() -> list[Received]:
        spans = collector.named("cart", "cart.abandon")
        return [s for s in spans if s.attribute("continuum.cart.id") == cart.cart_id]

    def consumers(trace_id: bytes) -> list[Received]:
        return [
            s
            for s in collector.trace(trace_id)
            if s.service == "notification"
            and s.span.kind == CONSUMER
            and s.span.name == "cart.cart_abandoned process"
        ]

    async def arrived() -> bool:
        found = abandons()
        return bool(found and consumers(found[0].trace_id))

    try:
        await eventually(arrived, timeout_s=30, interval_s=0.2)
    finally:
        found = abandons()
        spans = collector.trace(found[0].trace_id) if found else []
        print(f"abandonment trace:\n{describe(spans)}")
    (abandon,) = abandons()
    # The detector's pass runs an idle period after the last activity, in a background
    # task: it is a trace of its own ...
    assert abandon.trace_id != add.trace_id
    assert not abandon.span.parent_span_id
    # ... linked to the trace of the cart's last update (the AddItem call).
    links = [(link.trace_id, link.span_id) for link in abandon.span.links]
    assert links == [(add.trace_id, add.span.span_id)]
    # The event carries the abandonment span's context: notification's handler, which
    # schedules the reminder, is its child in the same trace, with its database work.
    (consumer,) = consumers(abandon.trace_id)
    assert consumer.span.parent_span_id == abandon.span.span_id
    trace = collector.trace(abandon.trace_id)
    under = [s for s in trace if s.span.parent_span_id == consumer.span.span_id]
    assert any(s.attribute("db.system") == "postgresql" for s in under), describe(trace)

    # The sender handles the due reminder later, in a trace of its own linked to the
    # handler that created it (whatever it decides: send, suppress or reschedule).
    listed = await client.notification.ListMessages(
        note_pb.ListMessagesRequest(customer_id=customer_id)
    )
    (reminder,) = [m for m in listed.messages if m.cart_id == cart.cart_id]

    def sends() -> list[Received]:
        spans = collector.named("notification", "notification.send_message")
        return [s for s in spans if s.attribute("continuum.message.id") == reminder.message_id]

    async def handled() -> bool:
        return bool(sends())

    await eventually(handled, timeout_s=30, interval_s=0.2)
    send = sends()[0]
    assert send.trace_id != abandon.trace_id
    assert [(link.trace_id, link.span_id) for link in send.span.links] == [
        (abandon.trace_id, consumer.span.span_id)
    ]
    # Its decision reads and writes the database inside that trace.
    send_trace = collector.trace(send.trace_id)
    assert any(s.attribute("db.system") == "postgresql" for s in send_trace), describe(send_trace)


async def test_a_stopping_service_flushes_its_spans(
    test_stores: TestStores, make_token: TokenFactory, auth_settings: AuthSettings
) -> None:
    """Spans queued for the next batch are exported when the service stops, not lost: the
    batch delay here is ten minutes and the batch size beyond anything queued, so only
    the shutdown can deliver them."""
    port = free_port()
    async with collecting() as (collector, endpoint), fresh_database(test_stores, "otel") as url:
        env = {
            **os.environ,
            **otlp_env(endpoint, delay_ms=600_000),
            "OTEL_BSP_MAX_QUEUE_SIZE": "100000",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100000",
            "CONTINUUM_PORT": str(port),
            "CONTINUUM_DATABASE_URL": url,
            "CONTINUUM_REDIS_URL": test_stores.redis_url,
            "CONTINUUM_REDIS_NAMESPACE": f"otel{uuid.uuid4().hex[:8]}",
            "CONTINUUM_AUTH__TOKEN_KEY": auth_settings.token_key.get_secret_value(),
            "CONTINUUM_ENVIRONMENT": "test",
            "CONTINUUM_LOG_JSON": "false",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "continuum_inventory", "serve", env=env
        )
        try:
            assert await wait_serving(f"127.0.0.1:{port}", timeout_s=60)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await inv_grpc.InventoryServiceStub(channel).ListItems(
                    inv_pb.ListItemsRequest(),
                    metadata=(("authorization", f"Bearer {make_token()}"),),
                    timeout=10,
                )
            assert collector.spans == []  # nothing exported yet: the batch waits
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=60) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        listed = collector.named("inventory", "/continuum.inventory.v1.InventoryService/ListItems")
        assert [s.span.kind for s in listed] == [SERVER]
