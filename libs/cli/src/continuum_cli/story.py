"""The handoff story, played against a running suite through the services' APIs.

1. **Browsing, anonymous**: a phone (a device id, no account) looks at the Aria runner in
   sizes 38, 39 and 40, coming back to black (one look at white), and searches for it.
2. **Sign-in**: the shopper signs in with her e-mail on that phone; identity links the
   device to Sam Keller, and her anonymous browsing becomes part of her profile.
3. **Cart**: she puts the black runner in size 39 in the cart.
4. **The bag**: she looks at the Mara tote that goes with it, and leaves.
5. **Abandonment**: the cart service declares the cart abandoned (idle time: the cart's
   ``CONTINUUM_ABANDON_AFTER_S``; ``continuum run`` sets a few seconds for the demo).
6. **Check-in**: an associate's device subscribes to the Marais store's feed; her app's
   geofence fires at the Marais store; notification briefs the store and the briefing
   arrives on the associate's stream.

Ids are fixed (request ids, event ids, the device id), so playing the story again repeats
nothing but the check-in: the cart keeps one pair of shoes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from continuum.cart.v1 import cart_resources_pb2 as cart_res
from continuum.cart.v1 import cart_service_pb2 as cart_pb
from continuum.common.v1 import identifier_pb2
from continuum.identity.v1 import identity_service_pb2 as id_pb
from continuum.notification.v1 import notification_resources_pb2 as note
from continuum.notification.v1 import notification_service_pb2 as note_pb
from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum.profile.v1 import profile_service_pb2 as prof_pb
from continuum_cli.seed import (
    BAG_SKU,
    BY_SKU,
    CART_SKU,
    DEMO_SHOPPER,
    DEMO_STORE,
    DEVICE,
    EMAIL,
    LOCATIONS,
    SHOE_CATEGORY,
    VIEWED_SKUS,
    WEB,
    SeedReport,
    ingest,
    shoe_sku,
    timestamp,
    wait_until,
)
from continuum_sdk import AsyncContinuum

T = TypeVar("T")
Progress = Callable[[str], None]

DEMO_DEVICE = "app-install-7f3a9c-sam-phone"
SESSION = "web-session-sam-1"


class StoryError(RuntimeError):
    """The story could not be played to the end (the message says where)."""


@dataclass
class StoryResult:
    customer_id: str
    store_id: str
    check_in: note.CheckIn
    briefing: note.Briefing
    # True when the check-in fell in the deduplication window of an earlier one and the
    # briefing shown is that earlier check-in's (read with GetBriefing).
    deduplicated: bool = False
    abandoned: bool = False
    notes: list[str] = field(default_factory=list)


def _device() -> identifier_pb2.Identifier:
    return identifier_pb2.Identifier(type=DEVICE, value=DEMO_DEVICE)


def _email() -> identifier_pb2.Identifier:
    return identifier_pb2.Identifier(type=EMAIL, value=DEMO_SHOPPER.email)


def browsing_events(now: datetime) -> list[prof.BehaviouralEvent]:
    """Anonymous browsing: views of three sizes, mostly black, and a search."""
    views = (
        VIEWED_SKUS[0],
        VIEWED_SKUS[1],
        shoe_sku("white", "39"),
        VIEWED_SKUS[2],
        VIEWED_SKUS[1],
        VIEWED_SKUS[0],
        VIEWED_SKUS[1],
    )
    start = now - timedelta(minutes=12)
    events = [
        prof.BehaviouralEvent(
            event_id="story-search-1",
            channel=WEB,
            occur_time=timestamp(start),
            identifiers=[_device()],
            session_id=SESSION,
            source="web/continuum-demo",
            search_performed=prof.SearchPerformed(
                query="black running shoes",
                category=SHOE_CATEGORY,
                result_count=2,
                result_skus=[VIEWED_SKUS[1], "PONT-SNEAKER-WHT-39"],
            ),
        )
    ]
    for n, sku in enumerate(views):
        events.append(
            prof.BehaviouralEvent(
                event_id=f"story-view-{n + 1}",
                channel=WEB,
                occur_time=timestamp(start + timedelta(seconds=40 * (n + 1))),
                identifiers=[_device()],
                session_id=SESSION,
                source="web/continuum-demo",
                product_viewed=prof.ProductViewed(
                    product=BY_SKU[sku].ref(), referrer="search" if n == 0 else "pdp_size"
                ),
            )
        )
    return events


async def play(
    cx: AsyncContinuum,
    associate: AsyncContinuum,
    *,
    store_id: str = DEMO_STORE,
    progress: Progress | None = None,
    seeded: SeedReport | None = None,
    abandon_timeout_s: float = 60.0,
    briefing_timeout_s: float = 30.0,
) -> StoryResult:
    """Play the story; ``cx`` acts as the channel apps (a service or channel-app token),
    ``associate`` is the associate's device (an associate token for ``store_id``).

    Returns the briefing as the associate's stream delivered it. Raises StoryError when a
    step cannot complete (the shopper unknown, no consent, no briefing on the stream).
    """
    say = progress or (lambda _: None)
    report = seeded or SeedReport()
    now = datetime.now(UTC).replace(microsecond=0)

    say("1. An anonymous phone browses the Aria runner: sizes 38, 39, 40, mostly black")
    await ingest(cx, browsing_events(now), report, "story events")

    say(f"2. She signs in as {DEMO_SHOPPER.email}: identity links the phone to her")
    signed_in = await cx.identity.ResolveIdentity(
        id_pb.ResolveIdentityRequest(
            request_id="story-sign-in",
            identifiers=[_device(), _email()],
            channel=WEB,
            actor="web/continuum-demo",
        )
    )
    customer_id = signed_in.resolution.customer_id
    if not customer_id or signed_in.resolution.anonymous:
        raise StoryError("sign-in did not resolve to a known customer")
    outcome = id_pb.ResolveOutcome.Name(signed_in.resolution.outcome)
    say(f"   customer {customer_id} ({outcome.removeprefix('RESOLVE_OUTCOME_').lower()})")

    say(f"3. She adds the {BY_SKU[CART_SKU].name} (black, 39) to the cart")
    owner = cart_res.Owner(customer_id=customer_id)
    added = await cx.cart.AddItem(
        cart_pb.AddItemRequest(
            request_id="story-cart-add",
            owner=owner,
            sku=CART_SKU,
            quantity=1,
            channel=WEB,
        )
    )
    signed = [_device(), _email()]
    after = now + timedelta(seconds=10)
    await ingest(
        cx,
        [
            prof.BehaviouralEvent(
                event_id="story-cart-add",
                channel=WEB,
                occur_time=timestamp(after),
                identifiers=signed,
                session_id=SESSION,
                source="web/continuum-demo",
                cart_item_added=prof.CartItemAdded(
                    cart_id=added.cart.cart_id, product=BY_SKU[CART_SKU].ref(), quantity=1
                ),
            ),
            prof.BehaviouralEvent(
                event_id="story-view-bag",
                channel=WEB,
                occur_time=timestamp(after + timedelta(seconds=30)),
                identifiers=signed,
                session_id=SESSION,
                source="web/continuum-demo",
                product_viewed=prof.ProductViewed(
                    product=BY_SKU[BAG_SKU].ref(), referrer="pdp_complements"
                ),
            ),
        ],
        report,
        "story events",
    )
    say(f"4. She looks at the {BY_SKU[BAG_SKU].name} that goes with them, and leaves")

    async def profile_caught_up() -> bool:
        summary = (
            await cx.profile.GetProfileSummary(
                prof_pb.GetProfileSummaryRequest(customer_id=customer_id)
            )
        ).summary
        sizes = {
            v.value
            for pref in summary.sizes
            if pref.category == SHOE_CATEGORY
            for v in (pref.size, *pref.alternatives)
        }
        in_cart = {s.product.sku for s in summary.left_in_cart}
        return CART_SKU in in_cart and {BY_SKU[s].size for s in VIEWED_SKUS} <= sizes

    await wait_until(profile_caught_up, "profile to hold her browsing and cart", 60.0)

    result_notes: list[str] = []
    say("5. Her cart sits idle until the cart service declares it abandoned")

    async def abandoned() -> bool:
        cart = (await cx.cart.GetCart(cart_pb.GetCartRequest(owner=owner))).cart
        return cart.state == cart_res.CART_STATE_ABANDONED

    is_abandoned = True
    try:
        await wait_until(abandoned, "the cart to be abandoned", abandon_timeout_s)
    except TimeoutError:
        is_abandoned = False
        result_notes.append(
            f"the cart was not declared abandoned within {abandon_timeout_s:.0f} s "
            "(the cart service's CONTINUUM_ABANDON_AFTER_S is longer); checking in anyway"
        )
    else:
        say("   cart abandoned (cart.cart_abandoned published)")

    where = next((p.name for p in LOCATIONS if p.location_id == store_id), store_id)
    say(f"6. An associate's device at {where} follows the store's feed; she walks in")
    check_in, briefing, deduplicated = await _check_in_and_receive(
        cx, associate, store_id, briefing_timeout_s
    )
    if deduplicated:
        result_notes.append(
            "she checked in here within the deduplication window: this is the briefing of "
            "her earlier check-in"
        )
    return StoryResult(
        customer_id=customer_id,
        store_id=store_id,
        check_in=check_in,
        briefing=briefing,
        deduplicated=deduplicated,
        abandoned=is_abandoned,
        notes=result_notes,
    )


async def _check_in_and_receive(
    cx: AsyncContinuum, associate: AsyncContinuum, store_id: str, timeout_s: float
) -> tuple[note.CheckIn, note.Briefing, bool]:
    items: asyncio.Queue[note.FeedItem] = asyncio.Queue()
    caught_up = asyncio.Event()
    stream = associate.notification.SubscribeFeed(note_pb.SubscribeFeedRequest(store_id=store_id))

    async def follow() -> None:
        async for answer in stream:
            if answer.item.kind == note.FEED_ITEM_KIND_CAUGHT_UP:
                caught_up.set()
            else:
                items.put_nowait(answer.item)

    reader = asyncio.ensure_future(follow())
    try:
        await _first(reader, caught_up.wait(), timeout_s, "the associate's feed to catch up")
        answer = await cx.notification.CheckIn(
            note_pb.CheckInRequest(
                request_id=f"story-check-in-{uuid.uuid4()}",
                identifiers=[_device()],
                store_id=store_id,
                source=note.CHECK_IN_SOURCE_APP_GEOFENCE,
                source_reference="geofence-marais-entrance",
            )
        )
        check_in = answer.check_in
        if check_in.status == note.CHECK_IN_STATUS_DEDUPLICATED and check_in.briefing_id:
            earlier = await associate.notification.GetBriefing(
                note_pb.GetBriefingRequest(store_id=store_id, briefing_id=check_in.briefing_id)
            )
            return check_in, earlier.briefing, True
        if check_in.status != note.CHECK_IN_STATUS_BRIEFED:
            status = note.CheckInStatus.Name(check_in.status)
            raise StoryError(f"the check-in was not briefed: {status}")

        async def briefing() -> note.Briefing:
            while True:
                item = await items.get()
                if (
                    item.kind == note.FEED_ITEM_KIND_BRIEFING
                    and item.briefing.briefing_id == check_in.briefing_id
                ):
                    return item.briefing

        found = await _first(reader, briefing(), timeout_s, "the briefing on the feed")
        return check_in, found, False
    finally:
        stream.cancel()
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader


async def _first(
    reader: asyncio.Future[None], wanted: Coroutine[Any, Any, T], timeout_s: float, what: str
) -> T:
    """Await ``wanted`` for up to ``timeout_s``, unless the feed reader ends first (the
    stream failed or closed)."""
    task: asyncio.Future[Any] = asyncio.ensure_future(wanted)
    try:
        done, _ = await asyncio.wait(
            {task, reader}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            result: T = task.result()
            return result
        if reader in done:
            error = reader.exception()
            raise StoryError(f"the associate's feed ended while waiting for {what}: {error}")
        raise StoryError(f"timed out after {timeout_s:.0f} s waiting for {what}")
    finally:
        task.cancel()
