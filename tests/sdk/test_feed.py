"""The resumable feed subscription against the real notification service: resume from a
cursor, and a live subscription that survives a restart of the service without losing or
repeating items. (Only this module uses store-2, so its feed holds only these items.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest

from continuum.notification.v1 import notification_resources_pb2 as res
from continuum_runtime.auth import PrincipalKind
from continuum_runtime.testing import eventually
from continuum_sdk import AsyncContinuum, FeedSubscription
from continuum_sdk import errors as e
from continuum_sdk.feed import FeedItem
from continuum_sdk.identifiers import loyalty

from .conftest import STORE_1, STORE_2, Suite


def briefed(items: list[FeedItem]) -> list[str]:
    return [i.briefing.customer_id for i in items if i.kind == res.FEED_ITEM_KIND_BRIEFING]


async def until(check: Callable[[], bool]) -> None:
    async def wrapped() -> bool:
        return check()

    await eventually(wrapped)


async def checked_in(suite: Suite, tag: str) -> str:
    """A new recognisable customer checks in at store-2 and is briefed; their id."""
    cid = await suite.new_customer(tag)
    async with AsyncContinuum(suite.config()) as cx:
        check_in = await cx.check_in(STORE_2, loyalty(f"L-{tag}"))
    assert check_in.status == res.CHECK_IN_STATUS_BRIEFED
    return cid


def associate(suite: Suite) -> str:
    return suite.token("associate-7", PrincipalKind.ASSOCIATE, (STORE_2,))


async def test_resume_after_a_cursor_receives_what_came_in_between(suite: Suite) -> None:
    tag = uuid.uuid4().hex[:8]
    async with AsyncContinuum(suite.config(associate(suite))) as cx:
        items: list[FeedItem] = []
        feed = cx.subscribe_feed(STORE_2, include_markers=True)

        async def consume() -> None:
            async for item in feed:
                items.append(item)

        task = asyncio.create_task(consume())
        await until(lambda: any(i.kind == res.FEED_ITEM_KIND_CAUGHT_UP for i in items))
        first = await checked_in(suite, f"r1-{tag}")
        await until(lambda: first in briefed(items))
        cursor = feed.cursor
        feed.close()
        await task

        # Two check-ins while nobody listens; a new subscription after the cursor gets both.
        missed = [await checked_in(suite, f"r{n}-{tag}") for n in (2, 3)]
        later: list[FeedItem] = []
        resumed = cx.subscribe_feed(STORE_2, resume_after=cursor)
        async for item in resumed:
            later.append(item)
            if len(briefed(later)) == 2:
                resumed.close()
        assert briefed(later) == missed
        assert all(i.sequence > 0 for i in later)


async def test_a_live_subscription_survives_a_restart_of_the_service(suite: Suite) -> None:
    tag = uuid.uuid4().hex[:8]
    async with AsyncContinuum(suite.config(associate(suite))) as cx:
        items: list[FeedItem] = []
        # A slow reconnect, so that the check-in below is usually made while the
        # subscription is still away and comes back from the stream's backlog.
        feed = FeedSubscription(
            cx, STORE_2, include_markers=True, initial_backoff_s=1.0, max_backoff_s=1.0
        )

        async def consume() -> None:
            async for item in feed:
                items.append(item)

        task = asyncio.create_task(consume())
        # Live before the first check-in (a briefing published before the subscription
        # starts is not a live item).
        await until(lambda: any(i.kind == res.FEED_ITEM_KIND_CAUGHT_UP for i in items))
        before = await checked_in(suite, f"b-{tag}")
        await until(lambda: before in briefed(items))

        await suite.restart_notification()
        after = await checked_in(suite, f"a-{tag}")
        await until(lambda: after in briefed(items))
        feed.close()
        await task

    assert feed.reconnects >= 1
    assert briefed(items)[-2:] == [before, after]
    sequences = [i.sequence for i in items if i.kind != res.FEED_ITEM_KIND_CAUGHT_UP]
    assert len(sequences) == len(set(sequences)), "an item was delivered twice"


async def test_errors_other_than_unavailable_are_raised(suite: Suite) -> None:
    elsewhere = suite.token("associate-8", PrincipalKind.ASSOCIATE, (STORE_2,))
    async with AsyncContinuum(suite.config(elsewhere)) as cx:
        with pytest.raises(e.PermissionDenied) as denied:
            async for _ in cx.subscribe_feed(STORE_1):
                pass
        assert denied.value.reason == "STORE_NOT_PERMITTED"
        with pytest.raises(e.InvalidArgument):
            async for _ in cx.subscribe_feed(STORE_2, resume_after="not-a-cursor"):
                pass
