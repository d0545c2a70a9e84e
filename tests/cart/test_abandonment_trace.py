"""The abandonment span: a trace of its own, linked to the cart's last change, and the
parent of the cart.cart_abandoned event's context."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text

from continuum_cart.abandonment import AbandonmentDetector
from tests.cart.conftest import Suite, customer
from tests.cart.test_cart import add

ADD_ITEM = "/continuum.cart.v1.CartService/AddItem"


async def test_the_abandonment_span_links_to_the_last_cart_change(
    suite: Suite, spans: InMemorySpanExporter
) -> None:
    shopper = customer("c-traced")
    await add(suite, shopper, "SHOE-38")
    await add(suite, shopper, "BAG-1")
    cart_id = (await add(suite, shopper, "BAG-1", 1)).cart.cart_id
    last_add = [s for s in spans.get_finished_spans() if s.name == ADD_ITEM][-1]

    later = datetime.now(UTC) + timedelta(hours=2)
    detector = AbandonmentDetector(suite.cart_ctx.db, idle_s=3600, interval_s=60, batch_size=10)
    with trace.get_tracer("tests").start_as_current_span("caller"):
        assert await detector.run_once(later) == 1

    (abandon,) = [s for s in spans.get_finished_spans() if s.name == "cart.abandon"]
    assert abandon.attributes is not None
    assert abandon.attributes["continuum.cart.id"] == cart_id
    assert abandon.parent is None  # a trace of its own, even under a caller's span
    assert last_add.context is not None
    linked = [(link.context.trace_id, link.context.span_id) for link in abandon.links]
    assert linked == [(last_add.context.trace_id, last_add.context.span_id)]

    (envelope,) = await suite.events("cart.cart_abandoned")
    assert abandon.context is not None
    traceparent = envelope.trace_context["traceparent"]
    assert traceparent.split("-")[1:3] == [
        f"{abandon.context.trace_id:032x}",
        f"{abandon.context.span_id:016x}",
    ]


async def test_a_cart_changed_outside_any_trace_is_abandoned_without_a_link(
    suite: Suite, spans: InMemorySpanExporter
) -> None:
    shopper = customer("c-untraced")
    await add(suite, shopper, "SHOE-38")
    async with suite.cart_ctx.db.transaction() as session:  # as for rows written before 0003
        await session.execute(text("UPDATE carts SET traceparent = ''"))
    detector = AbandonmentDetector(suite.cart_ctx.db, idle_s=3600, interval_s=60, batch_size=10)
    assert await detector.run_once(datetime.now(UTC) + timedelta(hours=2)) == 1
    (abandon,) = [s for s in spans.get_finished_spans() if s.name == "cart.abandon"]
    assert list(abandon.links) == []
