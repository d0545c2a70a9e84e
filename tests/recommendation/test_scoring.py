"""The ranking as plain functions: a version built from behaviour, then scored in memory."""

from __future__ import annotations

from continuum.recommendation.v1 import recommendation_resources_pb2 as res
from continuum_recommendation import scoring
from continuum_recommendation.domain import DAY_S, PURCHASE, Interaction, Params
from continuum_recommendation.live import LiveModel
from continuum_recommendation.model import Artifacts, build

NOW = 1_800_000_000.0


def purchases(
    subject: str, baskets: list[tuple[float, list[str]]], start: int
) -> list[Interaction]:
    rows = []
    for n, (days_ago, skus) in enumerate(baskets):
        for sku in skus:
            rows.append(
                Interaction(
                    start + len(rows),
                    subject,
                    sku,
                    PURCHASE,
                    1,
                    f"o-{subject}-{n}",
                    2,
                    "s1",
                    NOW - days_ago * DAY_S,
                )
            )
    return rows


def served(rows: list[Interaction]) -> LiveModel:
    artifacts = Artifacts.loads(build(rows, Params(), now=NOW).dumps())
    model = LiveModel()
    model.load("v1", artifacts, Params())
    for row in rows:
        model.apply(row, learn=False)
    return model


def test_groceries_come_back_and_shoes_do_not() -> None:
    rows: list[Interaction] = []
    # Many shoppers re-buy milk; nobody re-buys the same shoes.
    for n in range(20):
        rows += purchases(
            f"c:{n}", [(30, ["MILK", f"SHOE-{n}"]), (20, ["MILK"]), (10, ["MILK"])], len(rows)
        )
    rows += purchases("c:me", [(14, ["SHOE-X", "MILK"]), (7, ["MILK"])], len(rows))
    model = served(rows)
    ranked = scoring.personal(model, model.histories["c:me"], NOW)
    milk, shoe = ranked[model.index["MILK"]], ranked[model.index["SHOE-X"]]
    assert milk.score > shoe.score
    assert milk.reason == res.REASON_KIND_REPEAT_PURCHASE
    assert milk.value == "7"  # bought every 7 days


def test_scores_do_not_depend_on_the_order_behaviour_arrived_in() -> None:
    rows: list[Interaction] = []
    for n in range(5):
        rows += purchases(f"c:{n}", [(9, ["A", "B", "C"]), (3, ["A", "D"])], len(rows))
    forward = served(rows)
    backward = served(list(reversed(rows)))
    one = {
        forward.skus[i]: round(c.score, 9)
        for i, c in scoring.personal(forward, forward.histories["c:0"], NOW).items()
    }
    two = {
        backward.skus[i]: round(c.score, 9)
        for i, c in scoring.personal(backward, backward.histories["c:0"], NOW).items()
    }
    assert one == two
