"""The hand-written fast path of event validation never accepts what protovalidate refuses."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from continuum.common.v1 import identifier_pb2 as idpb
from continuum.common.v1 import money_pb2
from continuum.profile.v1 import profile_resources_pb2 as res
from continuum_profile.validation import Limits, check_event, fast_valid, field_violations

LONG = "x" * 700


def base(kind: str) -> res.BehaviouralEvent:
    event = res.BehaviouralEvent(
        event_id="e-1",
        channel=1,  # type: ignore[arg-type]
        identifiers=[idpb.Identifier(type=idpb.IDENTIFIER_TYPE_EMAIL, value="a@b.co")],
    )
    event.occur_time.GetCurrentTime()
    product = res.ProductRef(
        sku="S1",
        name="n",
        category="c",
        size="M",
        colour="navy",
        unit_price=money_pb2.Money(currency_code="GBP", amount_minor=100),
    )
    if kind == "recommendation_clicked":
        event.recommendation_clicked.product.CopyFrom(product)
    elif kind in ("cart_item_added", "cart_item_removed"):
        getattr(event, kind).product.CopyFrom(product)
        getattr(event, kind).quantity = 1
    else:
        getattr(event, kind).product.CopyFrom(product)
    return event


def _payload_field(event: Any, kind: str, kinds: tuple[str, ...], name: str, value: object) -> None:
    if kind in kinds:
        setattr(getattr(event, kind), name, value)


MUTATIONS: list[Callable[[Any, str], object]] = [
    lambda e, k: setattr(e, "event_id", ""),
    lambda e, k: setattr(e, "event_id", LONG),
    lambda e, k: setattr(e, "channel", 0),
    lambda e, k: setattr(e, "channel", 99),
    lambda e, k: e.ClearField("occur_time"),
    lambda e, k: e.identifiers.add(type=0, value="x"),
    lambda e, k: e.identifiers.add(type=42, value="x"),
    lambda e, k: e.identifiers.add(type=1, value=LONG),
    lambda e, k: e.identifiers.extend([e.identifiers[0]] * 20),
    lambda e, k: setattr(e, "store_id", LONG),
    lambda e, k: setattr(e, "session_id", LONG),
    lambda e, k: setattr(e, "source", LONG),
    lambda e, k: getattr(e, k).ClearField("product"),
    lambda e, k: setattr(getattr(e, k).product, "sku", ""),
    lambda e, k: setattr(getattr(e, k).product, "sku", LONG),
    lambda e, k: setattr(getattr(e, k).product, "name", LONG),
    lambda e, k: setattr(getattr(e, k).product, "size", LONG),
    lambda e, k: setattr(getattr(e, k).product, "colour", LONG),
    lambda e, k: setattr(getattr(e, k).product, "brand", LONG),
    lambda e, k: setattr(getattr(e, k).product, "category", LONG),
    lambda e, k: setattr(getattr(e, k).product, "product_id", LONG),
    lambda e, k: setattr(getattr(e, k).product.unit_price, "currency_code", "gbp"),
    lambda e, k: setattr(getattr(e, k).product.unit_price, "currency_code", ""),
    lambda e, k: setattr(getattr(e, k).product.unit_price, "currency_code", "ÄBC"),
    lambda e, k: _payload_field(e, k, ("cart_item_added", "cart_item_removed"), "quantity", 0),
    lambda e, k: _payload_field(e, k, ("cart_item_added", "cart_item_removed"), "quantity", 10_001),
    lambda e, k: _payload_field(e, k, ("cart_item_added", "cart_item_removed"), "cart_id", LONG),
    lambda e, k: _payload_field(e, k, ("product_viewed",), "referrer", LONG),
    lambda e, k: _payload_field(e, k, ("wishlist_item_added",), "wishlist_id", LONG),
    lambda e, k: _payload_field(e, k, ("recommendation_clicked",), "position", 1001),
    lambda e, k: _payload_field(e, k, ("recommendation_clicked",), "placement", LONG),
]
KINDS = [
    "product_viewed",
    "cart_item_added",
    "cart_item_removed",
    "wishlist_item_added",
    "recommendation_clicked",
]


def test_fast_path_accepts_valid_events_and_agrees_with_protovalidate() -> None:
    rng = random.Random(1)
    checked = 0
    for kind in KINDS:
        valid = base(kind)
        assert fast_valid(valid, kind)
        assert field_violations(valid) == []
        for _ in range(60):
            event = base(kind)
            for mutate in rng.sample(MUTATIONS, rng.randint(1, 3)):
                mutate(event, kind)
            if fast_valid(event, kind):
                assert field_violations(event) == [], (kind, event)
            checked += 1
        for mutate in MUTATIONS:
            event = base(kind)
            mutate(event, kind)
            if field_violations(event):
                assert not fast_valid(event, kind), (kind, event)
    assert checked == 300


def test_a_store_visit_without_store_is_rejected_by_the_full_rules() -> None:
    event = base("product_viewed")
    event.ClearField("product_viewed")
    event.store_visited.SetInParent()
    rejection = check_event(event, time.time(), Limits(300, 86400 * 30))
    assert rejection is not None
    assert rejection.violations[0].description == "store_id is required for a store visit"
    # A rule across fields (the event's kind and its store) has no one field path.
    assert rejection.violations[0].field == ""
