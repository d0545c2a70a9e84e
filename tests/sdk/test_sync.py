"""The blocking client and its helpers. The services run on the test's event loop, so
each blocking body runs in a worker thread."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from continuum.notification.v1 import notification_resources_pb2 as notif_res
from continuum_runtime.auth import PrincipalKind
from continuum_sdk import Continuum, EventBuilder, TrackResult, customer
from continuum_sdk import errors as e
from continuum_sdk.identifiers import device, email, loyalty

from .conftest import STORE_1, Suite


async def test_sync_resolve_cart_and_errors(suite: Suite) -> None:
    tag = uuid.uuid4().hex[:8]
    config = suite.config()

    def body() -> None:
        with Continuum(config) as cx:
            resolved = cx.resolve(email(f"{tag}@example.com"), device(f"dev-{tag}"))
            assert cx.customer_id(email(f"{tag}@example.com")) == resolved.customer_id
            owner = customer(resolved.customer_id)
            added = cx.carts.add(owner, "SHOE-38")
            cart = cx.carts.update(owner, added.line_id, 3, etag=added.cart.etag)
            assert cart.lines[0].quantity == 3
            with pytest.raises(e.Aborted):
                cx.carts.update(owner, added.line_id, 1, etag=added.cart.etag)
            # retried once against the current etag
            cart = cx.carts.update(
                owner, added.line_id, 1, etag=added.cart.etag, retry_on_conflict=True
            )
            assert cart.lines[0].quantity == 1
            cart = cx.carts.remove(owner, added.line_id)
            assert not cart.lines
            with pytest.raises(e.NotFound) as caught:
                cx.carts.add(owner, "NOPE")
            assert caught.value.reason == "ITEM_NOT_FOUND"
            with pytest.raises(e.FailedPrecondition) as empty:
                cx.carts.checkout(owner)
            assert empty.value.reason == "EMPTY_CART"

    await asyncio.to_thread(body)


async def test_sync_tracker_and_check_in(suite: Suite) -> None:
    tag = uuid.uuid4().hex[:8]
    await suite.new_customer(tag)
    config = suite.config()
    results: list[TrackResult] = []

    def body() -> None:
        events = EventBuilder([email(f"{tag}@example.com")])
        with Continuum(config) as cx:
            with cx.tracker(max_batch=2, flush_interval_s=0.05, on_result=results.append) as t:
                t.track(events.product_viewed("SHOE-38", size="38", colour="black"))
                t.track(events.cart_item_added("SHOE-38", quantity=0))  # fills the batch
                t.track(events.wishlist_item_added("BAG-1"))  # left for the timer or close
            assert t.total.accepted == 2
            assert [r.reason for r in t.rejections] == ["INVALID_FIELD"]
            check_in = cx.check_in(STORE_1, loyalty(f"L-{tag}"))
            assert check_in.status == notif_res.CHECK_IN_STATUS_BRIEFED

    await asyncio.to_thread(body)
    assert sum(r.sent for r in results) == 3


async def test_sync_feed_resumes_from_a_cursor(suite: Suite) -> None:
    token = suite.token("associate-9", PrincipalKind.ASSOCIATE, (STORE_1,))
    config = suite.config(token)
    tag = uuid.uuid4().hex[:8]
    cid = await suite.new_customer(tag)
    subscribed = threading.Event()
    got: list[str] = []

    def listen() -> None:
        with Continuum(config) as cx:
            feed = cx.subscribe_feed(STORE_1, include_markers=True)
            for item in feed:
                if item.kind == notif_res.FEED_ITEM_KIND_CAUGHT_UP:
                    subscribed.set()
                if item.briefing.customer_id == cid:
                    got.append(item.cursor)
                    feed.close()

    listener = asyncio.create_task(asyncio.to_thread(listen))
    assert await asyncio.to_thread(subscribed.wait, 30)
    with Continuum(suite.config()) as cx:
        await asyncio.to_thread(cx.check_in, STORE_1, loyalty(f"L-{tag}"))
    await listener
    assert len(got) == 1
    assert got[0]
