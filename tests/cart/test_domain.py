"""The cart's merge rule at its limits, without a database: quantities capped at 99 and a
full cart's overflow kept on the wishlist."""

from __future__ import annotations

from datetime import UTC, datetime

from continuum.cart.v1 import cart_resources_pb2 as res
from continuum_cart import domain
from continuum_cart.domain import CUSTOMER, DEVICE, OwnerKey, PricedItem

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def item(n: int, currency: str = "EUR") -> PricedItem:
    return PricedItem(f"SKU-{n}", 1000 + n, currency, True, res.ProductSnapshot(name=f"item {n}"))


def cart_with(owner: OwnerKey, lines: list[tuple[int, int]]) -> res.Cart:
    cart = domain.new_cart(owner, AT)
    for n, quantity in lines:
        domain.add_item(cart, item(n), quantity, 1, "", AT)
    return cart


def test_sum_is_capped_and_counted() -> None:
    target = cart_with(OwnerKey(CUSTOMER, "c"), [(1, 60)])
    source = cart_with(OwnerKey(DEVICE, "d"), [(1, 50)])
    outcome = domain.merge_lines(target, list(source.lines), res.MERGE_QUANTITY_RULE_SUM, AT)
    assert target.lines[0].quantity == 99
    assert target.lines[0].line_total.amount_minor == 99 * 1001
    assert outcome.summary.capped_line_count == 1
    assert outcome.summary.combined_line_count == 1


def test_a_full_cart_sends_new_lines_to_the_overflow_and_loses_none() -> None:
    target = cart_with(OwnerKey(CUSTOMER, "c"), [(n, 1) for n in range(domain.MAX_CART_LINES)])
    source = cart_with(OwnerKey(DEVICE, "d"), [(5, 3), (500, 2), (501, 1)])
    outcome = domain.merge_lines(target, list(source.lines), res.MERGE_QUANTITY_RULE_MAX, AT)
    assert len(target.lines) == domain.MAX_CART_LINES
    assert target.lines[5].quantity == 3  # present in both: combined
    assert [line.sku for line in outcome.overflow] == ["SKU-500", "SKU-501"]
    assert outcome.summary.overflow_to_wishlist_count == 2
    wishlist = domain.new_wishlist(OwnerKey(CUSTOMER, "c"), AT)
    for line in outcome.overflow:
        domain.save_item(
            wishlist, line.sku, line.quantity, line.unit_price, line.product, 1, "", AT
        )
    assert {(i.sku, i.quantity) for i in wishlist.items} == {("SKU-500", 2), ("SKU-501", 1)}


def test_order_ids_are_stable_per_request() -> None:
    owner = OwnerKey(CUSTOMER, "c")
    assert domain.order_id_for(owner, "r1") == domain.order_id_for(owner, "r1")
    assert domain.order_id_for(owner, "r1") != domain.order_id_for(owner, "r2")
    assert domain.order_id_for(owner, "r1") != domain.order_id_for(OwnerKey(DEVICE, "c"), "r1")
