"""The trait maths, without a database."""

from __future__ import annotations

import math

import pytest

from continuum.common.v1 import channel_pb2, money_pb2
from continuum.profile.v1 import profile_resources_pb2 as res
from continuum_profile import traits
from continuum_profile.traits import DAY, DeriveState, fold

NOW = 1_800_000_000.0


def ev(kind: str, at: float, **fields: object) -> res.BehaviouralEvent:
    out = res.BehaviouralEvent(event_id="e", channel=channel_pb2.CHANNEL_WEB)
    out.occur_time.FromNanoseconds(int(at * 1e9))
    getattr(out, kind).CopyFrom(getattr(res, "".join(p.title() for p in kind.split("_")))(**fields))
    return out


def ref(
    sku: str, size: str = "", colour: str = "", pid: str = "", cat: str = "Shoes"
) -> res.ProductRef:
    return res.ProductRef(sku=sku, size=size, colour=colour, product_id=pid, category=cat)


def test_a_score_halves_every_half_life_whatever_the_order_of_evidence() -> None:
    h = 10 * DAY
    early_first = [0.0, 0.0]
    traits.add_score(early_first, 1.0, NOW - h, h)
    traits.add_score(early_first, 1.0, NOW, h)
    late_first = [0.0, 0.0]
    traits.add_score(late_first, 1.0, NOW, h)
    traits.add_score(late_first, 1.0, NOW - h, h)
    for score in (early_first, late_first):
        assert traits.score_at(score, NOW, h) == pytest.approx(1.5)
        assert traits.score_at(score, NOW + h, h) == pytest.approx(0.75)


def test_recent_sizes_outweigh_older_ones() -> None:
    state = DeriveState()
    for i in range(4):  # four views of size 7, a year ago
        fold(state, ev("product_viewed", NOW - 365 * DAY + i, product=ref("a", size="7")))
    for i in range(2):  # two views of size 8, this week
        fold(state, ev("product_viewed", NOW - DAY + i, product=ref("b", size="8")))
    sizes = traits.sizes_of(state, NOW)
    assert sizes[0].category == "Shoes"
    assert sizes[0].size.value == "8"
    assert sizes[0].size.evidence_count == 2
    assert sizes[0].alternatives[0].value == "7"
    assert sizes[0].size.score + sizes[0].alternatives[0].score == pytest.approx(1.0, abs=1e-3)


def test_a_return_for_size_weakens_that_size() -> None:
    state = DeriveState()
    order = res.OrderPlaced(
        order_id="o1",
        lines=[res.OrderLine(product=ref("s9", size="9"), quantity=1)],
        total=money_pb2.Money(currency_code="GBP", amount_minor=5000),
    )
    fold(
        state,
        ev(
            "order_placed",
            NOW - 3 * DAY,
            **{"order_id": "o1", "lines": order.lines, "total": order.total},
        ),
    )
    fold(state, ev("product_viewed", NOW - 2 * DAY, product=ref("s10", size="10")))
    assert traits.sizes_of(state, NOW)[0].size.value == "9"
    fold(
        state,
        ev(
            "order_returned",
            NOW - DAY,
            order_id="o1",
            lines=[res.ReturnLine(product=ref("s9", size="9"), quantity=1, reason="too_small")],
            refund_total=money_pb2.Money(currency_code="GBP", amount_minor=5000),
        ),
    )
    assert traits.sizes_of(state, NOW)[0].size.value == "10"
    purchases = traits.purchases_of(state, NOW)
    assert purchases.lifetime_value.amount_minor == 0
    assert purchases.return_count == 1
    assert purchases.recent_lines[0].returned_quantity == 1


def test_compared_needs_back_and_forth_not_just_two_products() -> None:
    one_way = DeriveState()
    for i, pid in enumerate(["a", "a", "b", "b"]):
        fold(one_way, ev("product_viewed", NOW - 100 + i, product=ref(pid, pid=pid)))
    assert traits.compared_of(one_way, NOW) == []
    alternating = DeriveState()
    for i, pid in enumerate(["a", "b", "a", "b"]):
        fold(alternating, ev("product_viewed", NOW - 100 + i, product=ref(pid, pid=pid)))
    (found,) = traits.compared_of(alternating, NOW)
    assert {p.sku for p in found.products} == {"a", "b"}
    assert found.score > 0.5


def test_cart_items_leave_when_removed_or_bought_and_the_same_order_counts_once() -> None:
    state = DeriveState()
    fold(state, ev("cart_item_added", NOW - 50, cart_id="c", product=ref("x"), quantity=2))
    fold(state, ev("cart_item_added", NOW - 40, cart_id="c", product=ref("y"), quantity=1))
    fold(state, ev("cart_item_removed", NOW - 30, cart_id="c", product=ref("x"), quantity=1))
    assert {(s.product.sku, s.count) for s in traits.intent_of(state, NOW).left_in_cart} == {
        ("x", 1),
        ("y", 1),
    }
    line = res.OrderLine(product=ref("y"), quantity=1)
    total = money_pb2.Money(currency_code="GBP", amount_minor=1000)
    for _ in range(2):
        fold(state, ev("order_placed", NOW - 20, order_id="o", lines=[line], total=total))
    assert [s.product.sku for s in traits.intent_of(state, NOW).left_in_cart] == ["x"]
    assert traits.purchases_of(state, NOW).order_count == 1


def test_state_round_trips_through_json_and_intent_fades() -> None:
    from pydantic_core import from_json, to_json

    state = DeriveState()
    for i in range(3):
        fold(state, ev("product_viewed", NOW - 10 + i, product=ref("p")))
    again = DeriveState(from_json(to_json(state.to_dict())))
    fresh = traits.viewed_repeatedly_of(again, NOW)
    assert fresh[0].count == 3
    assert fresh[0].score == pytest.approx(1 - 2**-3, abs=1e-3)
    assert traits.viewed_repeatedly_of(again, NOW + 30 * DAY) == []  # faded
    assert math.isclose(traits.intent_strength(1.0), 0.5)


def test_highlights_are_short_and_lead_with_the_cart() -> None:
    state = DeriveState()
    coat = res.ProductRef(
        sku="c", name="Aria trench coat", size="M", colour="navy", category="Coats"
    )
    fold(state, ev("cart_item_added", NOW - 2 * DAY, product=coat, quantity=1))
    summary = traits.summary_of(state, NOW)
    words = traits.highlights(summary, NOW)
    assert words[0] == "Left the Aria trench coat (M, navy) in the online cart 2 days ago."
    assert 1 <= len(words) <= 3
