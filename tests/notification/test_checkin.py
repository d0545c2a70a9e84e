"""Check-in to briefing to the associate feed: what the associate sees, deduplication,
consent, unknown customers, bad input and store-scoped authorisation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2

from continuum.notification.v1 import notification_events_pb2 as ev
from continuum.notification.v1 import notification_resources_pb2 as res
from continuum.notification.v1 import notification_service_pb2 as pb
from continuum_runtime.client import error_detail, error_reason
from continuum_runtime.events import unpack_payload
from tests.notification.conftest import STORE_1, STORE_2, Suite, loyalty, rid

pytestmark = pytest.mark.asyncio(loop_scope="session")


class FeedReader:
    """A subscription read in the background into a queue."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.items: asyncio.Queue[res.FeedItem] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for answer in self.call:
                await self.items.put(answer.item)

    async def next(self, *kinds: int) -> res.FeedItem:
        """The next item of one of ``kinds`` (heartbeats skipped)."""
        while True:
            item = await asyncio.wait_for(self.items.get(), timeout=10)
            if not kinds or item.kind in kinds:
                return item

    async def close(self) -> None:
        self.call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def subscribed(
    stub: Any, md: Any, store_id: str = STORE_1, **kw: Any
) -> AsyncIterator[FeedReader]:
    reader = FeedReader(
        stub.SubscribeFeed(pb.SubscribeFeedRequest(store_id=store_id, **kw), metadata=md)
    )
    try:
        if not kw.get("resume_after"):
            await reader.next(res.FEED_ITEM_KIND_CAUGHT_UP)
        yield reader
    finally:
        await reader.close()


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    bad = error_detail(err, error_details_pb2.BadRequest)
    return {v.field: v.reason for v in bad.field_violations} if bad else {}


async def test_associates_are_briefed_on_the_stream_with_cart_stock_and_what_is_missing(
    suite: Suite,
) -> None:
    cid = await suite.new_customer(
        "brief", cart=(("SHOE-39", 1), ("BAG-1", 1), ("BELT-1", 1)), wishlist=("SHOE-38",)
    )
    associate = suite.associate("assoc-1", STORE_1)
    async with subscribed(suite.notification, associate) as feed:
        answer = await suite.check_in("brief")
        item = await feed.next(res.FEED_ITEM_KIND_BRIEFING)

    check_in = answer.check_in
    assert check_in.status == res.CHECK_IN_STATUS_BRIEFED
    assert check_in.customer_id == cid
    briefing = item.briefing
    assert briefing.briefing_id == check_in.briefing_id
    assert item.cursor
    assert item.sequence > 0
    # Who this is.
    assert briefing.customer.display_name.startswith("Sam")
    assert briefing.customer.loyalty_tier == "gold"
    assert briefing.customer.visits.first_visit_to_this_store
    # The cart, with stock here: the 39 is not here but two stores away, the 38 and 40
    # of the same shoe are; the bag is here.
    by_sku = {i.sku: i for i in briefing.cart.items}
    shoe = by_sku["SHOE-39"].availability
    assert shoe.status in (
        res.AVAILABILITY_STATUS_NOT_STOCKED,
        res.AVAILABILITY_STATUS_OUT_OF_STOCK,
    )
    assert [(s.size, s.available_count) for s in shoe.sizes_available] == [("38", 3), ("40", 1)]
    assert [(n.store_id, n.available_count) for n in shoe.nearby] == [(STORE_2, 4)]
    assert by_sku["BAG-1"].availability.available_count == 2
    # Nearby stores are named for what is low or out here, not for what is plentiful.
    assert [(n.store_id, n.available_count) for n in by_sku["BAG-1"].availability.nearby] == [
        (STORE_2, 6)
    ]
    belt = by_sku["BELT-1"].availability
    assert (belt.status, belt.available_count) == (res.AVAILABILITY_STATUS_IN_STOCK, 12)
    assert list(belt.nearby) == []
    assert [i.sku for i in briefing.wishlist_items] == ["SHOE-38"]
    assert briefing.wishlist_items[0].availability.available_count == 3
    # Recommendation is down: the briefing says so instead of failing.
    missing = {m.part: m for m in briefing.missing_parts}
    assert set(missing) == {"complements", "next_best_actions"}
    assert missing["next_best_actions"].code == "UNAVAILABLE"
    assert missing["next_best_actions"].reason == "unavailable"
    assert "Sam" in briefing.headline
    assert "in cart" in briefing.headline

    assert await suite.briefing(briefing.briefing_id, metadata=associate) == briefing
    ready = [
        unpack_payload(e, ev.BriefingReadyEvent)
        for e in await suite.events("notification.briefing_ready")
    ]
    mine = next(r for r in ready if r.briefing_id == briefing.briefing_id)
    assert sorted(mine.cart_skus) == ["BAG-1", "BELT-1", "SHOE-39"]
    assert sorted(mine.missing_parts) == ["complements", "next_best_actions"]


async def test_repeated_check_ins_are_one_and_a_replay_changes_nothing(suite: Suite) -> None:
    await suite.new_customer("dedup", cart=(("BAG-1", 1),))
    request_id = rid()
    first = (await suite.check_in("dedup", request_id=request_id)).check_in
    replay = (await suite.check_in("dedup", request_id=request_id)).check_in
    again = (await suite.check_in("dedup")).check_in

    assert replay == first
    assert again.status == res.CHECK_IN_STATUS_DEDUPLICATED
    assert again.duplicate_of_check_in_id == first.check_in_id
    assert again.briefing_id == first.briefing_id
    listed = await suite.notification.ListBriefings(
        pb.ListBriefingsRequest(store_id=STORE_1, customer_id=first.customer_id),
        metadata=suite.metadata,
    )
    assert [b.briefing_id for b in listed.briefings] == [first.briefing_id]
    # Another store is another visit.
    elsewhere = (await suite.check_in("dedup", store_id=STORE_2)).check_in
    assert elsewhere.status == res.CHECK_IN_STATUS_BRIEFED


async def test_a_customer_who_did_not_agree_to_recognition_is_not_briefed(suite: Suite) -> None:
    cid = await suite.new_customer("private", recognised=False, cart=(("BAG-1", 1),))
    check_in = (await suite.check_in("private")).check_in

    assert check_in.status == res.CHECK_IN_STATUS_NOT_CONSENTED
    assert check_in.briefing_id == ""
    listed = await suite.notification.ListBriefings(
        pb.ListBriefingsRequest(store_id=STORE_1, customer_id=cid), metadata=suite.metadata
    )
    assert list(listed.briefings) == []
    recorded = [
        unpack_payload(e, ev.CustomerCheckedInEvent)
        for e in await suite.events("notification.customer_checked_in")
    ]
    assert any(
        r.customer_id == cid and r.status == res.CHECK_IN_STATUS_NOT_CONSENTED for r in recorded
    )


async def test_unknown_identifiers_are_recorded_without_a_briefing(suite: Suite) -> None:
    answer = await suite.notification.CheckIn(
        pb.CheckInRequest(
            request_id=rid(),
            identifiers=[loyalty("L-never-seen")],
            store_id=STORE_1,
            source=res.CHECK_IN_SOURCE_LOYALTY_SCAN,
        ),
        metadata=suite.metadata,
    )
    assert answer.check_in.status == res.CHECK_IN_STATUS_UNKNOWN_CUSTOMER
    assert answer.check_in.customer_id == ""


async def test_bad_check_ins_are_invalid_argument_with_the_field(suite: Suite) -> None:
    await suite.new_customer("badinput")
    cases: list[tuple[pb.CheckInRequest, str]] = [
        (
            pb.CheckInRequest(
                request_id=rid(),
                identifiers=[loyalty("L-badinput")],
                store_id="nowhere",
                source=res.CHECK_IN_SOURCE_APP_GEOFENCE,
            ),
            "store_id",
        ),
        (
            pb.CheckInRequest(
                request_id=rid(), store_id=STORE_1, source=res.CHECK_IN_SOURCE_APP_GEOFENCE
            ),
            "identifiers",
        ),
        (
            pb.CheckInRequest(
                request_id=rid(),
                identifiers=[loyalty("L-badinput")],
                store_id=STORE_1,
                source=res.CHECK_IN_SOURCE_APP_GEOFENCE,
                check_in_time=timestamp_pb2.Timestamp(seconds=4_000_000_000),
            ),
            "check_in_time",
        ),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await suite.notification.CheckIn(request, metadata=suite.metadata)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in violations(caught.value)
        if field == "store_id":
            assert error_reason(caught.value) == "UNKNOWN_STORE"


async def test_associates_of_another_store_are_denied_whether_or_not_the_item_exists(
    suite: Suite,
) -> None:
    await suite.new_customer("scoped", cart=(("BAG-1", 1),))
    briefing_id = (await suite.check_in("scoped")).check_in.briefing_id
    outsider = suite.associate("assoc-2", STORE_2)
    insider = suite.associate("assoc-1", STORE_1)
    calls: list[Any] = [
        suite.notification.GetBriefing(
            pb.GetBriefingRequest(store_id=STORE_1, briefing_id=briefing_id), metadata=outsider
        ),
        suite.notification.GetBriefing(
            pb.GetBriefingRequest(store_id=STORE_1, briefing_id=rid()), metadata=outsider
        ),
        suite.notification.ListBriefings(
            pb.ListBriefingsRequest(store_id=STORE_1), metadata=outsider
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    stream = suite.notification.SubscribeFeed(
        pb.SubscribeFeedRequest(store_id=STORE_1), metadata=outsider
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The store's own associate reads it, but not through another store's id.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.notification.GetBriefing(
            pb.GetBriefingRequest(store_id=STORE_2, briefing_id=briefing_id),
            metadata=suite.associate("assoc-3", STORE_1, STORE_2),
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    got = await suite.notification.GetBriefing(
        pb.GetBriefingRequest(store_id=STORE_1, briefing_id=briefing_id), metadata=insider
    )
    assert got.briefing.briefing_id == briefing_id
    # An unknown store's feed is bad input, not an empty feed.
    stream = suite.notification.SubscribeFeed(
        pb.SubscribeFeedRequest(store_id="nowhere"), metadata=suite.metadata
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
