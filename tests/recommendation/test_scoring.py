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


def _plain_complements(
    model: LiveModel, seeds: dict[int, float], keep: int
) -> list[tuple[int, float, int, int]]:
    """What complements computes, written as plain loops: (item, share of the top, reason,
    seed giving the most)."""
    scores: dict[int, float] = {}
    best: dict[int, tuple[float, int, int]] = {}
    for seed, weight in seeds.items():
        for j, s, kind in model.neighbours(seed):
            scores[j] = scores.get(j, 0.0) + s * weight
            if j not in best or s * weight > best[j][0]:
                best[j] = (s * weight, seed, kind)
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
    top = ranked[0][1]
    return [(j, round(v / top, 12), scoring.CO_REASON[best[j][2]], best[j][1]) for j, v in ranked]


def test_complements_sum_every_seeds_neighbours_whether_learned_since_or_not() -> None:
    rows: list[Interaction] = []
    for n in range(40):
        basket = [f"I{(n * 7 + k * 3) % 23}" for k in range(4)]
        rows += purchases(f"c:{n % 9}", [(n % 30 + 1, basket)], len(rows))
    model = served(rows)
    seeds = {model.index["I1"]: 1.0, model.index["I4"]: 0.5, model.index["I10"]: 0.8}

    def computed() -> list[tuple[int, float, int, int]]:
        out: dict[int, scoring.Candidate] = {}
        scoring.complements(model, seeds, out, 1.0, keep=8)
        ranked = sorted(out.values(), key=lambda c: (-c.score, c.item))
        return [(c.item, round(c.score, 12), c.reason, c.related) for c in ranked]

    assert computed() == _plain_complements(model, seeds, 8)
    # behaviour learned after the version: pairs the version's arrays do not hold
    learned = purchases("c:new", [(0.1, ["I1", "I22", "I4"])], len(rows) + 1)
    for row in learned:
        model.apply(row, learn=True)
    assert model.co_delta
    assert computed() == _plain_complements(model, seeds, 8)
