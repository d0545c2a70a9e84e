"""The associate feed across reconnects and replicas, its replay and cursors; briefings
with recommendations and the associates' feedback on next best actions; what a profile
outage does to check-ins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from continuum.common.v1 import money_pb2
from continuum.notification.v1 import notification_events_pb2 as ev
from continuum.notification.v1 import notification_resources_pb2 as res
from continuum.notification.v1 import notification_service_pb2 as pb
from continuum.recommendation.v1 import recommendation_resources_pb2 as rec
from continuum.recommendation.v1 import recommendation_service_pb2 as rec_pb
from continuum.recommendation.v1 import recommendation_service_pb2_grpc as rec_grpc
from continuum_runtime.client import error_reason
from continuum_runtime.events import unpack_payload
from tests.inprocess import down_target
from tests.notification.conftest import STORE_1, Suite, rid
from tests.notification.test_checkin import subscribed

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_no_briefing_is_missed_across_a_reconnect_and_between_replicas(
    suite: Suite,
) -> None:
    for tag in ("feed-a", "feed-b", "feed-c", "feed-d"):
        await suite.new_customer(tag, cart=(("BAG-1", 1),))
    replica = await suite.start_replica()
    other = suite.stub(replica)
    associate = suite.associate("assoc-feed", STORE_1)

    async with subscribed(suite.notification, associate) as feed:
        first = (await suite.check_in("feed-a")).check_in
        seen = await feed.next(res.FEED_ITEM_KIND_BRIEFING)
    assert seen.briefing.briefing_id == first.briefing_id
    # While the device is away, two shoppers check in through the other replica.
    missed = [(await suite.check_in(t, stub=other)).check_in for t in ("feed-b", "feed-c")]

    async with subscribed(other, associate, resume_after=seen.cursor) as feed:
        replayed = [await feed.next(res.FEED_ITEM_KIND_BRIEFING) for _ in missed]
        await feed.next(res.FEED_ITEM_KIND_CAUGHT_UP)
        # Live: a check-in handled by the first replica reaches a device on the second.
        live = (await suite.check_in("feed-d")).check_in
        arrived = await feed.next(res.FEED_ITEM_KIND_BRIEFING)
    assert [i.briefing.briefing_id for i in replayed] == [c.briefing_id for c in missed]
    assert arrived.briefing.briefing_id == live.briefing_id
    sequences = [seen.sequence, *(i.sequence for i in replayed), arrived.sequence]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == 4


async def test_replay_sends_the_active_briefings_then_caught_up(suite: Suite) -> None:
    await suite.new_customer("replay", cart=(("BAG-1", 1),))
    briefing_id = (await suite.check_in("replay")).check_in.briefing_id
    call = suite.notification.SubscribeFeed(
        pb.SubscribeFeedRequest(store_id=STORE_1, replay_active=True), metadata=suite.metadata
    )
    replayed: list[str] = []
    async for answer in call:
        if answer.item.kind == res.FEED_ITEM_KIND_CAUGHT_UP:
            break
        replayed.append(answer.item.briefing.briefing_id)
    call.cancel()
    assert briefing_id in replayed


async def test_bad_and_expired_cursors(suite: Suite) -> None:
    for cursor, code, why in (
        ("not-a-cursor", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CURSOR"),
        ("1000-0", grpc.StatusCode.FAILED_PRECONDITION, "FEED_CURSOR_EXPIRED"),
    ):
        call = suite.notification.SubscribeFeed(
            pb.SubscribeFeedRequest(store_id=STORE_1, resume_after=cursor),
            metadata=suite.metadata,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
        assert caught.value.code() == code
        assert error_reason(caught.value) == why


class Recommendations(rec_grpc.RecommendationServiceServicer):
    """A recommendation service with fixed answers (so that the briefing's contents are
    known): the bag goes with the shoes, and one next best action. Anything else is
    UNIMPLEMENTED, which a briefing would list as missing."""

    async def GetNextBestAction(
        self, request: Any, context: Any
    ) -> rec_pb.GetNextBestActionResponse:
        bag = rec.RecommendedItem(
            sku="BAG-1",
            name="Leather tote",
            unit_price=money_pb2.Money(currency_code="EUR", amount_minor=12900),
            reason=rec.Reason(kind=rec.REASON_KIND_BOUGHT_WITH, text="Goes with the runners"),
            availability=rec.ItemAvailability(
                store_id=STORE_1,
                status=rec.AVAILABILITY_STATUS_IN_STOCK,
                available_quantity=2,
            ),
        )
        return rec_pb.GetNextBestActionResponse(
            recommendation_id="rec-n1",
            actions=[
                rec.NextBestAction(
                    action_id="a1",
                    kind=rec.ACTION_KIND_OFFER_COMPLEMENT,
                    title="Offer the tote",
                    score=0.9,
                    priority=rec.ACTION_PRIORITY_HIGH,
                    items=[rec.RecommendedItem(sku="BAG-1", name="Leather tote")],
                )
            ],
            complements=[bag] if request.complements_limit else [],
        )


@pytest_asyncio.fixture(loop_scope="session")
async def recommendations() -> AsyncIterator[str]:
    server = grpc.aio.server()
    rec_grpc.add_RecommendationServiceServicer_to_server(Recommendations(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def test_feedback_on_a_next_best_action_updates_the_feed_and_is_published(
    suite: Suite, recommendations: str
) -> None:
    await suite.new_customer("nba", cart=(("SHOE-38", 1),))
    replica = suite.stub(await suite.start_replica(recommendation=recommendations))
    associate = suite.associate("assoc-nba", STORE_1)
    briefing_id = (await suite.check_in("nba", stub=replica)).check_in.briefing_id
    briefing = await suite.briefing(briefing_id, stub=replica, metadata=associate)
    assert list(briefing.missing_parts) == []
    assert [c.sku for c in briefing.complements] == ["BAG-1"]
    assert briefing.complements[0].reason.code == "bought_with"
    assert [a.action_id for a in briefing.next_best_actions] == ["a1"]
    assert briefing.next_best_actions[0].state == res.ACTION_STATE_PROPOSED
    assert list(briefing.recommendation_ids) == ["rec-n1"]

    def feedback(outcome: int, who: str = "assoc-nba") -> pb.RecordActionFeedbackRequest:
        return pb.RecordActionFeedbackRequest(
            request_id=rid(),
            store_id=STORE_1,
            briefing_id=briefing_id,
            action_id="a1",
            outcome=outcome,  # type: ignore[arg-type]
            associate_id=who,
            note="customer liked it",
        )

    async with subscribed(replica, associate) as feed:
        accepted = await replica.RecordActionFeedback(
            feedback(res.ACTION_OUTCOME_ACCEPTED), metadata=associate
        )
        update = await feed.next(res.FEED_ITEM_KIND_ACTION_UPDATED)
    assert accepted.action.state == res.ACTION_STATE_ACCEPTED
    assert accepted.briefing_revision == 2
    assert update.action_update.action.state == res.ACTION_STATE_ACCEPTED
    await replica.RecordActionFeedback(feedback(res.ACTION_OUTCOME_COMPLETED), metadata=associate)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await replica.RecordActionFeedback(
            feedback(res.ACTION_OUTCOME_DISMISSED), metadata=associate
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(caught.value) == "ACTION_ALREADY_CLOSED"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await replica.RecordActionFeedback(
            feedback(res.ACTION_OUTCOME_ACCEPTED, who="someone-else"), metadata=associate
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    published = [
        unpack_payload(e, ev.ActionFeedbackRecordedEvent)
        for e in await suite.events("notification.action_feedback_recorded")
    ]
    mine = [p for p in published if p.briefing_id == briefing_id]
    assert [p.outcome for p in mine] == [res.ACTION_OUTCOME_ACCEPTED, res.ACTION_OUTCOME_COMPLETED]
    assert all("note" not in str(p) or p.ListFields() for p in mine)
    assert mine[0].recommendation_ids


async def test_profile_outage_uses_a_recent_consent_or_fails_closed(suite: Suite) -> None:
    await suite.new_customer("known-consent", cart=(("BAG-1", 1),))
    await suite.new_customer("never-checked", cart=(("BAG-1", 1),))
    await suite.check_in("known-consent", store_id="store-2")  # consent now remembered
    no_profile = suite.stub(await suite.start_replica(profile=down_target()))

    briefed = (await suite.check_in("known-consent", stub=no_profile)).check_in
    assert briefed.status == res.CHECK_IN_STATUS_BRIEFED
    briefing = await suite.briefing(briefed.briefing_id, stub=no_profile)
    assert "customer" in [m.part for m in briefing.missing_parts]
    assert not briefing.HasField("customer")
    assert briefing.cart.items
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.check_in("never-checked", stub=no_profile)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(caught.value) == "CONSENT_UNVERIFIED"


async def test_a_cart_outage_leaves_the_briefing_without_cart_and_wishlist(suite: Suite) -> None:
    """Cart and wishlist come in one call: when cart is down, the briefing names both as
    missing and keeps the customer."""
    await suite.new_customer("cart-down", cart=(("BAG-1", 1),))
    no_cart = suite.stub(await suite.start_replica(cart=down_target()))
    briefed = (await suite.check_in("cart-down", stub=no_cart)).check_in
    assert briefed.status == res.CHECK_IN_STATUS_BRIEFED
    briefing = await suite.briefing(briefed.briefing_id, stub=no_cart)
    missing = {m.part: m for m in briefing.missing_parts}
    assert {"cart", "wishlist"} <= set(missing)
    assert missing["cart"].service == missing["wishlist"].service == "continuum.cart.v1.CartService"
    assert missing["wishlist"].code == "UNAVAILABLE"
    assert briefing.HasField("customer")
    assert not briefing.cart.items
