"""Recommendations learned from behaviour on the event streams, served over gRPC."""

from __future__ import annotations

import time

import grpc
import pytest
from google.rpc import error_details_pb2

from continuum.recommendation.v1 import recommendation_resources_pb2 as res
from continuum.recommendation.v1 import recommendation_service_pb2 as pb
from continuum_runtime.client import error_detail
from continuum_runtime.testing import eventually
from tests.recommendation.conftest import APP, DAY, STORE, WEB, Suite, order, viewed

NOW = time.time()


def violations(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    bad = error_detail(err, error_details_pb2.BadRequest)
    assert bad is not None
    return [(v.field, v.reason) for v in bad.field_violations]


async def shoes_and_bags(suite: Suite) -> None:
    """Three shoppers buy the runners with the tote; one buys the runners with socks."""
    for n, sku in enumerate(["SHOE-38", "SHOE-39", "SHOE-38"]):
        await suite.publish(
            "profile", "profile.event_ingested", order(f"c-{n}", [sku, "BAG-1"], NOW - 5 * DAY)
        )
    await suite.publish(
        "profile", "profile.event_ingested", order("c-9", ["SHOE-38", "SOCKS-1"], NOW - 5 * DAY)
    )


async def recommend(suite: Suite, **kw: object) -> pb.GetRecommendationsResponse:
    return await suite.rec.GetRecommendations(
        pb.GetRecommendationsRequest(**kw), metadata=suite.metadata
    )  # type: ignore[arg-type]


async def test_complements_name_the_item_they_go_with(suite: Suite) -> None:
    await shoes_and_bags(suite)

    async def learned() -> bool:
        answer = await suite.rec.GetComplements(
            pb.GetComplementsRequest(skus=["SHOE-38"]), metadata=suite.metadata
        )
        return [i.sku for i in answer.items][:2] == ["BAG-1", "SOCKS-1"]

    await eventually(learned)
    answer = await suite.rec.GetComplements(
        pb.GetComplementsRequest(skus=["SHOE-38"]), metadata=suite.metadata
    )
    bag = answer.items[0]
    assert bag.reason.kind == res.REASON_KIND_BOUGHT_WITH
    assert bag.reason.related_sku == "SHOE-38"
    assert bag.reason.text == "Often bought with the Aria runners in your cart"
    assert bag.name == "Leather tote"
    assert bag.position == 0
    # Never the seed itself or another size of it.
    assert not {"SHOE-38", "SHOE-39"} & {i.sku for i in answer.items}
    assert answer.strategy == res.STRATEGY_ITEM_BASED


async def test_repeat_buyer_is_reminded_and_new_behaviour_counts_within_seconds(
    suite: Suite,
) -> None:
    await shoes_and_bags(suite)
    for week in range(4, 0, -1):
        await suite.publish(
            "profile", "profile.event_ingested", order("c-socks", ["SOCKS-1"], NOW - week * 7 * DAY)
        )

    async def socks_first() -> bool:
        answer = await recommend(suite, customer_id="c-socks")
        return bool(answer.items) and answer.items[0].sku == "SOCKS-1"

    await eventually(socks_first)
    answer = await recommend(suite, customer_id="c-socks")
    assert answer.strategy == res.STRATEGY_PERSONALISED
    assert answer.items[0].reason.kind == res.REASON_KIND_REPEAT_PURCHASE
    assert answer.items[0].reason.text == "You buy this about every 7 days"
    assert all(i.reason.text for i in answer.items)
    # Buying the runners now brings the tote (bought with them) in right behind.
    await suite.publish(
        "profile", "profile.event_ingested", order("c-socks", ["SHOE-38"], NOW - 60)
    )

    async def tote_follows() -> bool:
        items = (await recommend(suite, customer_id="c-socks")).items
        return "BAG-1" in [i.sku for i in items]

    await eventually(tote_follows)


async def test_same_customer_gets_the_same_ranking_on_every_channel(suite: Suite) -> None:
    await shoes_and_bags(suite)
    await suite.publish(
        "profile", "profile.event_ingested", order("c-0", ["HAT-1", "SCARF-1"], NOW - DAY)
    )

    async def ready() -> bool:
        return "HAT-1" in [i.sku for i in (await recommend(suite, customer_id="c-0")).items]

    await eventually(ready)
    rankings = set()
    for channel in (WEB, APP, STORE):
        answer = await recommend(
            suite, customer_id="c-0", context=res.RecommendationContext(channel=channel)
        )
        rankings.add(tuple((i.sku, i.score) for i in answer.items))
    assert len(rankings) == 1


async def test_store_answers_only_hold_items_available_there(suite: Suite) -> None:
    await shoes_and_bags(suite)
    await suite.publish(
        "profile",
        "profile.event_ingested",
        order("c-store", ["BOOT-38", "SCARF-1", "HAT-1"], NOW - DAY),
    )

    async def ready() -> bool:
        return len((await recommend(suite, customer_id="c-store")).items) >= 5

    await eventually(ready)
    everywhere = {i.sku for i in (await recommend(suite, customer_id="c-store")).items}
    assert {"BOOT-38", "SCARF-1"} <= everywhere
    in_store = await recommend(
        suite, customer_id="c-store", context=res.RecommendationContext(store_id="store-1")
    )
    skus = {i.sku for i in in_store.items}
    assert skus
    assert not {"BOOT-38", "SCARF-1"} & skus
    assert all(
        i.availability.status
        in (res.AVAILABILITY_STATUS_IN_STOCK, res.AVAILABILITY_STATUS_LOW_STOCK)
        for i in in_store.items
    )
    assert all(i.availability.store_id == "store-1" for i in in_store.items)
    pickup = await recommend(
        suite,
        customer_id="c-store",
        context=res.RecommendationContext(
            store_id="store-1", availability_filter=res.AVAILABILITY_FILTER_PICKUP
        ),
    )
    assert pickup.items
    assert all(i.availability.pickup_available for i in pickup.items)
    # Unfiltered, the sold-out boots are there and say so.
    shown = await recommend(
        suite,
        customer_id="c-store",
        context=res.RecommendationContext(
            store_id="store-1", availability_filter=res.AVAILABILITY_FILTER_NONE
        ),
    )
    boots = next(i for i in shown.items if i.sku == "BOOT-38")
    assert boots.availability.status == res.AVAILABILITY_STATUS_OUT_OF_STOCK


async def test_anonymous_shopper_gets_session_and_popularity_answers(suite: Suite) -> None:
    await shoes_and_bags(suite)
    await suite.publish(
        "profile", "profile.event_ingested", viewed(NOW - 30, "SHOE-39", device="dev-1")
    )

    async def session_used() -> bool:
        # The tote also leads the popularity answer that comes before the view is
        # followed: only the reason tells the session answer apart.
        answer = await recommend(suite, device_id="dev-1")
        return (
            bool(answer.items)
            and answer.items[0].sku == "BAG-1"
            and answer.items[0].reason.related_sku == "SHOE-39"
        )

    await eventually(session_used)
    answer = await recommend(suite, device_id="dev-1")
    assert answer.strategy == res.STRATEGY_COLD_START
    assert answer.items[0].reason.related_sku == "SHOE-39"
    nobody = await recommend(suite, context=res.RecommendationContext(store_id="store-1"))
    assert nobody.strategy == res.STRATEGY_COLD_START
    # The tote and the size-38 runners were both bought three times: the tie breaks on SKU.
    assert [i.sku for i in nobody.items[:2]] == ["BAG-1", "SHOE-38"]
    assert nobody.items[0].reason.text in ("Popular in this store", "Popular right now")


async def test_similar_items_are_other_products_of_the_category(suite: Suite) -> None:
    await shoes_and_bags(suite)
    answer = await suite.rec.GetSimilar(
        pb.GetSimilarRequest(sku="SHOE-38"), metadata=suite.metadata
    )
    assert [i.sku for i in answer.items] == ["BOOT-38"]
    assert answer.items[0].reason.kind == res.REASON_KIND_SIMILAR
    assert answer.items[0].reason.text == "Similar to the Aria runners"


async def test_next_best_action_reminds_of_cart_items_available_in_the_store(suite: Suite) -> None:
    await shoes_and_bags(suite)

    async def learned() -> bool:
        answer = await suite.rec.GetComplements(
            pb.GetComplementsRequest(skus=["SHOE-39"]), metadata=suite.metadata
        )
        return [i.sku for i in answer.items][:1] == ["BAG-1"]

    await eventually(learned)
    answer = await suite.rec.GetNextBestAction(
        pb.GetNextBestActionRequest(
            customer_id="c-new", store_id="store-1", cart_skus=["SCARF-1", "SHOE-39"]
        ),
        metadata=suite.metadata,
    )
    kinds = [a.kind for a in answer.actions]
    assert kinds == [res.ACTION_KIND_REMIND_CART_ITEM, res.ACTION_KIND_OFFER_COMPLEMENT]
    assert [i.sku for i in answer.actions[0].items] == ["SHOE-39"]  # the scarf is not here
    assert answer.actions[1].items[0].sku == "BAG-1"
    assert answer.actions[1].items[0].availability.store_id == "store-1"
    assert all(a.title and a.explanation and a.action_id for a in answer.actions)


async def test_next_best_action_can_bring_the_complements_of_cart_and_wishlist(
    suite: Suite,
) -> None:
    """complements_limit: the same complements GetComplements gives for the cart and
    wishlist in this store, in the next-best-action answer (one call for a briefing)."""
    await shoes_and_bags(suite)
    request = pb.GetComplementsRequest(
        skus=["SHOE-39", "SCARF-1"],
        customer_id="c-both",
        context=res.RecommendationContext(
            store_id="store-1",
            availability_filter=res.AVAILABILITY_FILTER_IN_STORE,
            exclude_skus=["SHOE-39", "SCARF-1"],
        ),
        limit=4,
    )

    async def learned() -> bool:
        answer = await suite.rec.GetComplements(request, metadata=suite.metadata)
        return [i.sku for i in answer.items][:1] == ["BAG-1"]

    await eventually(learned)
    alone = await suite.rec.GetComplements(request, metadata=suite.metadata)
    together = await suite.rec.GetNextBestAction(
        pb.GetNextBestActionRequest(
            customer_id="c-both",
            store_id="store-1",
            cart_skus=["SHOE-39"],
            wishlist_skus=["SCARF-1"],
            complements_limit=4,
        ),
        metadata=suite.metadata,
    )
    assert [(i.sku, i.reason.text) for i in together.complements] == [
        (i.sku, i.reason.text) for i in alone.items
    ]
    assert together.complements[0].availability.store_id == "store-1"
    assert together.actions  # the actions still come with them
    without = await suite.rec.GetNextBestAction(
        pb.GetNextBestActionRequest(
            customer_id="c-both", store_id="store-1", cart_skus=["SHOE-39"]
        ),
        metadata=suite.metadata,
    )
    assert not without.complements


async def test_next_best_action_offers_what_the_customer_is_due_to_buy_again(
    suite: Suite,
) -> None:
    # socks every week, the last pair a week ago; a hat once
    for days, skus in ((21, ["SOCKS-1", "HAT-1"]), (14, ["SOCKS-1"]), (7, ["SOCKS-1"])):
        await suite.publish(
            "profile", "profile.event_ingested", order("c-weekly", skus, NOW - days * DAY)
        )

    async def learned() -> bool:
        answer = await suite.rec.GetNextBestAction(
            pb.GetNextBestActionRequest(customer_id="c-weekly", store_id="store-1"),
            metadata=suite.metadata,
        )
        return res.ACTION_KIND_REPLENISH in [a.kind for a in answer.actions]

    await eventually(learned)
    answer = await suite.rec.GetNextBestAction(
        pb.GetNextBestActionRequest(customer_id="c-weekly", store_id="store-1"),
        metadata=suite.metadata,
    )
    due = next(a for a in answer.actions if a.kind == res.ACTION_KIND_REPLENISH)
    assert [i.sku for i in due.items] == ["SOCKS-1"]  # the hat, bought once, is not due
    assert due.items[0].reason.text == "You buy this about every 7 days"
    assert due.items[0].availability.status == res.AVAILABILITY_STATUS_IN_STOCK


async def test_bad_input_is_refused_with_the_field(suite: Suite) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown_item:
        await recommend(suite, customer_id="c-1", seed_skus=["SHOE-38", "NOPE"])
    assert unknown_item.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(unknown_item.value) == [("seed_skus[1]", "UNKNOWN_ITEM")]
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await recommend(suite, customer_id="c-1", limit=101)
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as store:
        await recommend(
            suite, customer_id="c-1", context=res.RecommendationContext(store_id="store-404")
        )
    assert store.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(store.value) == [("context.store_id", "UNKNOWN_STORE")]
    with pytest.raises(grpc.aio.AioRpcError) as similar:
        await suite.rec.GetSimilar(pb.GetSimilarRequest(sku="NOPE"), metadata=suite.metadata)
    assert violations(similar.value) == [("sku", "UNKNOWN_ITEM")]


async def test_inventory_outage_never_shows_unchecked_items_for_a_store(suite: Suite) -> None:
    await shoes_and_bags(suite)

    async def ready() -> bool:
        return len((await recommend(suite, customer_id="c-0")).items) >= 2

    await eventually(ready)
    await suite.inventory_server.drain(grace_s=0.1)
    with pytest.raises(grpc.aio.AioRpcError) as down:
        await recommend(
            suite, customer_id="c-0", context=res.RecommendationContext(store_id="store-1")
        )
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    # Without a store the answer does not need inventory.
    assert (await recommend(suite, customer_id="c-0")).items
