"""Chatbot-to-human handoffs: routed to a store's feed or a service queue with the
customer's context, claimed once, closed by the assignee, cancelled by the bot."""

from __future__ import annotations

import grpc
import pytest

from continuum.common.v1 import channel_pb2
from continuum.identity.v1 import identity_service_pb2 as id_pb
from continuum.notification.v1 import notification_events_pb2 as ev
from continuum.notification.v1 import notification_resources_pb2 as res
from continuum.notification.v1 import notification_service_pb2 as pb
from continuum_runtime.client import error_detail, error_reason
from continuum_runtime.events import unpack_payload
from continuum_runtime.testing import eventually
from tests.notification.conftest import STORE_1, STORE_2, Suite, loyalty, rid
from tests.notification.test_checkin import subscribed, violations

pytestmark = pytest.mark.asyncio(loop_scope="session")


def handoff_request(tag: str, conversation: str, **kw: object) -> pb.HandoffConversationRequest:
    return pb.HandoffConversationRequest(
        request_id=rid(),
        conversation_id=conversation,
        identifiers=[loyalty(f"L-{tag}")],
        channel=channel_pb2.CHANNEL_CHAT,
        transcript=[
            res.TranscriptEntry(sender=res.TRANSCRIPT_SENDER_CUSTOMER, text="Do you have the 38?")
        ],
        intent="find_size",
        summary="Wants the Aria runner in 38, black",
        **kw,  # type: ignore[arg-type]
    )


async def test_a_store_handoff_reaches_the_feed_is_claimed_once_and_closed(
    suite: Suite,
) -> None:
    cid = await suite.new_customer("chat")
    bot = suite.metadata
    first, second = suite.associate("assoc-h1", STORE_1), suite.associate("assoc-h2", STORE_1)
    async with subscribed(suite.notification, first) as feed:
        created = (
            await suite.notification.HandoffConversation(
                handoff_request(
                    "chat",
                    "conv-1",
                    preferred_store_id=STORE_1,
                    items=[pb.HandoffItemRef(sku="SHOE-38", quantity=1)],
                    contact_mode=res.CONTACT_MODE_VISIT_STORE,
                ),
                metadata=bot,
            )
        ).handoff
        item = await feed.next(res.FEED_ITEM_KIND_HANDOFF)
    assert created.status == res.HANDOFF_STATUS_QUEUED
    assert created.route == res.HANDOFF_ROUTE_STORE
    assert created.store_id == STORE_1
    assert created.customer_id == cid
    assert created.customer.display_name.startswith("Sam")
    assert created.items[0].availability.available_count == 3
    assert item.handoff.handoff_id == created.handoff_id

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.notification.HandoffConversation(
            handoff_request("chat", "conv-1", preferred_store_id=STORE_1), metadata=bot
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(caught.value) == "HANDOFF_OPEN"

    accepted = await suite.notification.AcceptHandoff(
        pb.AcceptHandoffRequest(
            request_id=rid(), handoff_id=created.handoff_id, assignee_id="assoc-h1"
        ),
        metadata=first,
    )
    assert accepted.handoff.status == res.HANDOFF_STATUS_ACCEPTED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.notification.AcceptHandoff(
            pb.AcceptHandoffRequest(
                request_id=rid(), handoff_id=created.handoff_id, assignee_id="assoc-h2"
            ),
            metadata=second,
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "HANDOFF_ALREADY_ACCEPTED"

    complete = pb.CompleteHandoffRequest(
        request_id=rid(),
        handoff_id=created.handoff_id,
        resolution=res.HANDOFF_RESOLUTION_VISIT_ARRANGED,
        note="holding a 38 at the till",
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.notification.CompleteHandoff(complete, metadata=second)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    done = await suite.notification.CompleteHandoff(complete, metadata=first)
    assert done.handoff.status == res.HANDOFF_STATUS_COMPLETED

    # The bot sees the status; another store's associate does not see the handoff at all.
    polled = await suite.notification.GetHandoff(
        pb.GetHandoffRequest(handoff_id=created.handoff_id), metadata=bot
    )
    assert polled.handoff.status == res.HANDOFF_STATUS_COMPLETED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.notification.GetHandoff(
            pb.GetHandoffRequest(handoff_id=created.handoff_id),
            metadata=suite.associate("assoc-x", STORE_2),
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    closed = [
        unpack_payload(e, ev.HandoffClosedEvent)
        for e in await suite.events("notification.handoff_closed")
    ]
    mine = next(c for c in closed if c.handoff_id == created.handoff_id)
    assert mine.status == res.HANDOFF_STATUS_COMPLETED
    assert mine.assignee_id == "assoc-h1"
    assert mine.HasField("wait_duration")
    listed = await suite.notification.ListHandoffs(
        pb.ListHandoffsRequest(store_id=STORE_1, statuses=[res.HANDOFF_STATUS_COMPLETED]),
        metadata=first,
    )
    assert created.handoff_id in [h.handoff_id for h in listed.handoffs]


async def test_a_queue_handoff_can_be_cancelled_once(suite: Suite) -> None:
    await suite.new_customer("queue")
    created = (
        await suite.notification.HandoffConversation(
            handoff_request("queue", "conv-2"), metadata=suite.metadata
        )
    ).handoff
    assert created.route == res.HANDOFF_ROUTE_SERVICE_QUEUE
    assert created.queue_id == "customer_service"
    cancel = pb.CancelHandoffRequest(
        request_id=rid(), handoff_id=created.handoff_id, reason="resolved_by_bot"
    )
    cancelled = await suite.notification.CancelHandoff(cancel, metadata=suite.metadata)
    assert cancelled.handoff.status == res.HANDOFF_STATUS_CANCELLED
    replay = await suite.notification.CancelHandoff(cancel, metadata=suite.metadata)
    assert replay == cancelled
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.notification.CancelHandoff(
            pb.CancelHandoffRequest(request_id=rid(), handoff_id=created.handoff_id),
            metadata=suite.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "HANDOFF_CLOSED"
    # A new handoff for the conversation is possible once the first is closed.
    again = await suite.notification.HandoffConversation(
        handoff_request("queue", "conv-2"), metadata=suite.metadata
    )
    assert again.handoff.status == res.HANDOFF_STATUS_QUEUED


async def test_bad_handoffs_name_the_field(suite: Suite) -> None:
    cases = [
        (
            handoff_request("x", "conv-3", items=[pb.HandoffItemRef(sku="NOPE", quantity=1)]),
            "items[0].sku",
            "UNKNOWN_ITEM",
        ),
        (
            handoff_request("x", "conv-4", preferred_store_id="nowhere"),
            "preferred_store_id",
            "UNKNOWN_STORE",
        ),
    ]
    for request, field, why in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await suite.notification.HandoffConversation(request, metadata=suite.metadata)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(caught.value).get(field) == why
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.notification.HandoffConversation(
            handoff_request("x", "conv-5", route=res.HANDOFF_ROUTE_STORE), metadata=suite.metadata
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_detail is not None


async def test_a_forgotten_customer_is_erased_from_briefings_handoffs_and_the_feeds(
    suite: Suite,
) -> None:
    gone = await suite.new_customer("erase", cart=(("BAG-1", 1),), wishlist=("SHOE-38",))
    kept = await suite.new_customer("keep", cart=(("BAG-1", 1),))
    associate = suite.associate("assoc-erase", STORE_2)
    async with subscribed(suite.notification, associate, STORE_2) as feed:
        await suite.check_in("erase", store_id=STORE_2)
        erased_item = await feed.next(res.FEED_ITEM_KIND_BRIEFING)
        await suite.check_in("keep", store_id=STORE_2)
        kept_item = await feed.next(res.FEED_ITEM_KIND_BRIEFING)
        handoff = (
            await suite.notification.HandoffConversation(
                handoff_request("erase", "conv-erase", preferred_store_id=STORE_2),
                metadata=suite.metadata,
            )
        ).handoff
        await feed.next(res.FEED_ITEM_KIND_HANDOFF)
    assert erased_item.briefing.customer_id == gone
    assert kept_item.briefing.customer_id == kept
    assert handoff.customer_id == gone

    await suite.identity.ForgetCustomer(
        id_pb.ForgetCustomerRequest(request_id=rid(), customer_id=gone, actor="dpo"),
        metadata=suite.metadata,
    )

    async def erased() -> bool:
        left = await suite.rows(
            "SELECT (SELECT count(*) FROM briefings WHERE customer_id = :c)"
            " + (SELECT count(*) FROM check_ins WHERE customer_id = :c)"
            " + (SELECT count(*) FROM handoffs WHERE customer_id = :c)"
            " + (SELECT count(*) FROM wishlist_watch WHERE customer_id = :c)",
            c=gone,
        )
        return bool(left[0][0] == 0)

    await eventually(erased)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.notification.GetBriefing(
            pb.GetBriefingRequest(store_id=STORE_2, briefing_id=erased_item.briefing.briefing_id),
            metadata=associate,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # A device reconnecting from just before those items replays the other customer's only.
    ms, n = (int(part) for part in erased_item.cursor.split("-"))
    before = f"{ms}-{n - 1}" if n else f"{ms - 1}-{2**63 - 1}"
    replayed: list[res.FeedItem] = []
    async with subscribed(suite.notification, associate, STORE_2, resume_after=before) as feed:
        while (item := await feed.next()).kind != res.FEED_ITEM_KIND_CAUGHT_UP:
            replayed.append(item)
    assert [i.briefing.briefing_id for i in replayed if i.HasField("briefing")] == [
        kept_item.briefing.briefing_id
    ]
    assert all(not i.HasField("handoff") for i in replayed)
