"""Behavioural events through the batching tracker and the client stream, against the real
profile (and identity) services."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from continuum.profile.v1 import profile_service_pb2 as prof_pb
from continuum_runtime.testing import eventually
from continuum_sdk import AsyncContinuum, EventBuilder, EventsRejected, TrackResult, product
from continuum_sdk import errors as e
from continuum_sdk.identifiers import device, email
from tests.inprocess import down_target

from .conftest import Suite


def builder(tag: str) -> EventBuilder:
    return EventBuilder([device(f"dev-{tag}-{uuid.uuid4().hex[:8]}")], session_id=f"s-{tag}")


async def test_tracker_flushes_a_full_batch_and_reports_each_result(suite: Suite) -> None:
    results: list[TrackResult] = []
    events = builder("batch")
    async with AsyncContinuum(suite.config()) as cx:
        tracker = cx.tracker(max_batch=3, flush_interval_s=None, on_result=results.append)
        await tracker.track(events.product_viewed("SHOE-38", size="38", colour="black"))
        await tracker.track(events.product_viewed("SHOE-39", size="39", colour="black"))
        assert tracker.pending == 2
        assert not results
        await tracker.track(events.cart_item_added("SHOE-39", quantity=1))
        assert tracker.pending == 0
        assert [r.accepted for r in results] == [3]
        await tracker.close()
    assert tracker.total.accepted == 3


async def test_rejected_events_come_back_with_reason_fields_and_the_event(suite: Suite) -> None:
    events = builder("rejects")
    good = events.product_viewed(product("SHOE-38", name="Aria runner"), size="38")
    bad_quantity = events.cart_item_added("SHOE-38", quantity=0)
    future = events.product_viewed("SHOE-39", occur_time=datetime.now(UTC) + timedelta(hours=2))
    async with (
        AsyncContinuum(suite.config()) as cx,
        cx.tracker(flush_interval_s=None) as tracker,
    ):
        await tracker.track(good, bad_quantity, future)
        result = await tracker.flush()
    assert result.accepted == 1
    by_id = {r.event_id: r for r in result.rejected}
    assert set(by_id) == {bad_quantity.event_id, future.event_id}
    assert by_id[bad_quantity.event_id].reason == "INVALID_FIELD"
    assert by_id[bad_quantity.event_id].event is bad_quantity
    assert "cart_item_added.quantity" in [
        v.field for v in by_id[bad_quantity.event_id].field_violations
    ]
    assert by_id[future.event_id].reason == "TIME_IN_FUTURE"
    assert tracker.rejections == list(result.rejected)
    with pytest.raises(EventsRejected) as caught:
        result.raise_for_rejections()
    assert len(caught.value.rejections) == 2
    assert "INVALID_FIELD" in str(caught.value)


async def test_interval_flush_and_duplicates(suite: Suite) -> None:
    events = builder("interval")
    view = events.product_viewed("BAG-1", colour="black")
    results: list[TrackResult] = []
    async with AsyncContinuum(suite.config()) as cx:
        async with cx.tracker(flush_interval_s=0.05, on_result=results.append) as tracker:
            await tracker.track(view)

            async def flushed() -> bool:
                return tracker.pending == 0 and bool(results)

            await eventually(flushed)
            await tracker.track(view)  # the same event_id again
        assert tracker.total.accepted == 1
        assert tracker.total.duplicates == 1


async def test_events_of_a_known_customer_reach_the_timeline(suite: Suite) -> None:
    tag = f"timeline-{uuid.uuid4().hex[:8]}"
    cid = await suite.new_customer(tag)
    events = EventBuilder([email(f"{tag}@example.com")])
    view = events.product_viewed("SHOE-39", size="39", colour="black")
    async with AsyncContinuum(suite.config()) as cx:
        async with cx.tracker() as tracker:
            await tracker.track(view)
        assert tracker.total.accepted == 1

        async def listed() -> bool:
            answer = await cx.profile.ListEvents(prof_pb.ListEventsRequest(customer_id=cid))
            return view.event_id in [ev.event_id for ev in answer.events]

        await eventually(listed)


async def test_a_batch_that_cannot_be_sent_is_kept_for_the_next_flush(suite: Suite) -> None:
    events = builder("down")
    config = suite.config(targets={**suite.targets, "profile": down_target()})
    async with AsyncContinuum(config) as cx:
        tracker = cx.tracker(flush_interval_s=None)
        await tracker.track(events.product_viewed("SHOE-38"), events.product_viewed("SHOE-39"))
        with pytest.raises(e.Unavailable):
            await tracker.flush()
        assert tracker.pending == 2
        assert isinstance(tracker.last_error, e.Unavailable)


async def test_streaming_ingestion_maps_rejections_to_the_events_sent(suite: Suite) -> None:
    events = builder("stream")
    first = [events.product_viewed("SHOE-38", size="38"), events.search_performed("runner")]
    bad = events.wishlist_item_added("")  # no SKU
    second = [events.cart_item_added("SHOE-38", quantity=2), bad]
    async with AsyncContinuum(suite.config()) as cx:
        async with cx.event_stream() as stream:
            await stream.send(*first)
            await stream.send(*second)
        result = stream.result
    assert result is not None
    assert result.accepted == 3
    assert [r.event for r in result.rejected] == [bad]
    assert result.rejected[0].reason == "INVALID_FIELD"
    assert any("sku" in v.field for v in result.rejected[0].field_violations)
