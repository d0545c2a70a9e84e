"""Abandonment (once per idle period, safe with several detectors) and checkout (stock
reserved through inventory, all or nothing)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from continuum.cart.v1 import cart_events_pb2 as ev
from continuum.cart.v1 import cart_resources_pb2 as res
from continuum.cart.v1 import cart_service_pb2 as pb
from continuum.common.v1 import money_pb2
from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum_cart.abandonment import AbandonmentDetector
from continuum_runtime.client import error_detail, error_reason
from tests.cart.conftest import STORE, WEB, Suite, customer, device, rid
from tests.cart.test_cart import add
from tests.cart.test_wishlist_and_merge import get_cart


def detector(suite: Suite) -> AbandonmentDetector:
    return AbandonmentDetector(suite.cart_ctx.db, idle_s=3600, interval_s=60, batch_size=2)


async def test_an_idle_cart_is_abandoned_once_per_idle_period(suite: Suite) -> None:
    shopper = customer("c-idle")
    await add(suite, shopper, "SHOE-38", 1, channel=STORE, store_id="store-1")
    await add(suite, device("dev-idle"), "BAG-1")
    await suite.cart.GetCart(pb.GetCartRequest(owner=customer("c-empty")), metadata=suite.metadata)
    soon, later = datetime.now(UTC) + timedelta(minutes=30), datetime.now(UTC) + timedelta(hours=2)
    assert await detector(suite).run_once(soon) == 0  # not idle long enough
    assert await detector(suite).run_once(later) == 2
    assert await detector(suite).run_once(later) == 0  # once per idle period

    cart = await get_cart(suite, shopper)
    assert cart.state == res.CART_STATE_ABANDONED
    abandoned = await suite.events("cart.cart_abandoned")
    assert len(abandoned) == 2
    payloads = []
    for envelope in abandoned:
        payload = ev.CartAbandonedEvent()
        envelope.payload.Unpack(payload)
        payloads.append(payload)
    mine = next(p for p in payloads if p.cart_id == cart.cart_id)
    assert [line.sku for line in mine.lines] == ["SHOE-38"]
    assert (mine.last_channel, mine.last_store_id) == (STORE, "store-1")
    assert mine.etag == cart.etag

    listed = await suite.cart.ListAbandonedCarts(
        pb.ListAbandonedCartsRequest(customers_only=True), metadata=suite.metadata
    )
    assert [c.cart_id for c in listed.carts] == [cart.cart_id]

    # New activity makes it active again; a later idle period announces it (and only it)
    # again: the guest's cart stays abandoned and is not announced twice.
    await add(suite, shopper, "BAG-1")
    assert (await get_cart(suite, shopper)).state == res.CART_STATE_ACTIVE
    assert await detector(suite).run_once(later + timedelta(hours=2)) == 1
    assert len(await suite.events("cart.cart_abandoned")) == 3


async def test_several_detectors_never_announce_a_cart_twice(suite: Suite) -> None:
    for n in range(7):
        await add(suite, customer(f"c-many-{n}"), "SHOE-38")
    later = datetime.now(UTC) + timedelta(hours=2)
    counts = await asyncio.gather(*(detector(suite).run_once(later) for _ in range(4)))
    assert sum(counts) == 7
    abandoned = await suite.events("cart.cart_abandoned")
    assert len({e.subject for e in abandoned}) == len(abandoned) == 7


async def level(suite: Suite, sku: str, location: str) -> inv.StockLevel:
    answer = await suite.inventory.GetStockLevel(
        inv_pb.GetStockLevelRequest(sku=sku, location_id=location), metadata=suite.metadata
    )
    return answer.stock_level


def ship() -> res.Fulfilment:
    return res.Fulfilment(type=res.FULFILMENT_TYPE_SHIP)


async def test_checkout_reserves_records_publishes_and_clears(suite: Suite) -> None:
    shopper = customer("c-buy")
    await add(suite, shopper, "SHOE-38", 2)
    shown = (await add(suite, shopper, "BAG-1", 1)).cart
    request = pb.CheckoutRequest(
        request_id=rid(),
        owner=shopper,
        etag=shown.etag,
        channel=WEB,
        fulfilment=ship(),
        expected_total=money_pb2.Money(currency_code="EUR", amount_minor=2 * 8900 + 12900 + 500),
        shipping_total=money_pb2.Money(currency_code="EUR", amount_minor=500),
    )
    done = await suite.cart.Checkout(request, metadata=suite.metadata)
    order = done.order
    assert [(ln.sku, ln.quantity, ln.location_id) for ln in order.lines] == [
        ("SHOE-38", 2, "wh-1"),
        ("BAG-1", 1, "wh-1"),
    ]
    assert order.total.amount_minor == 2 * 8900 + 12900 + 500
    assert not done.cart.lines
    assert not (await get_cart(suite, shopper)).lines
    assert (await level(suite, "SHOE-38", "wh-1")).reserved == 2

    again = await suite.cart.Checkout(request, metadata=suite.metadata)
    assert again.order == order  # a replay places nothing new
    assert (await level(suite, "SHOE-38", "wh-1")).reserved == 2
    fetched = await suite.cart.GetOrder(
        pb.GetOrderRequest(order_id=order.order_id), metadata=suite.metadata
    )
    assert fetched.order == order
    listed = await suite.cart.ListOrders(
        pb.ListOrdersRequest(owner=shopper), metadata=suite.metadata
    )
    assert [o.order_id for o in listed.orders] == [order.order_id]
    (placed,) = await suite.events("cart.order_placed")
    payload = ev.OrderPlacedEvent()
    placed.payload.Unpack(payload)
    assert payload.order == order
    assert placed.customer_id == "c-buy"


async def test_checkout_without_stock_names_the_line_and_changes_nothing(suite: Suite) -> None:
    shopper = customer("c-short")
    await add(suite, shopper, "SHOE-38", 1)
    await add(suite, shopper, "SHOE-39", 3)  # two in stock
    before = await get_cart(suite, shopper)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await suite.cart.Checkout(
            pb.CheckoutRequest(request_id=rid(), owner=shopper, channel=WEB, fulfilment=ship()),
            metadata=suite.metadata,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "INSUFFICIENT_STOCK"
    failure = error_detail(err.value, res.CheckoutFailure)
    assert failure is not None
    (issue,) = failure.lines
    assert (issue.sku, issue.line_id) == ("SHOE-39", before.lines[1].line_id)
    assert (issue.requested_quantity, issue.available_quantity) == (3, 2)
    assert await get_cart(suite, shopper) == before
    assert (await level(suite, "SHOE-38", "wh-1")).reserved == 0
    assert not await suite.events("cart.order_placed")


async def test_click_and_collect_reserves_at_the_store(suite: Suite) -> None:
    shopper = customer("c-collect")
    await add(suite, shopper, "BAG-1", 2)  # one in the store
    pickup = res.Fulfilment(type=res.FULFILMENT_TYPE_PICKUP, pickup_location_id="store-1")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await suite.cart.Checkout(
            pb.CheckoutRequest(request_id=rid(), owner=shopper, channel=WEB, fulfilment=pickup),
            metadata=suite.metadata,
        )
    assert error_reason(err.value) == "INSUFFICIENT_STOCK"
    cart = await get_cart(suite, shopper)
    await suite.cart.UpdateItem(
        pb.UpdateItemRequest(
            request_id=rid(), owner=shopper, line_id=cart.lines[0].line_id, quantity=1, channel=WEB
        ),
        metadata=suite.metadata,
    )
    done = await suite.cart.Checkout(
        pb.CheckoutRequest(request_id=rid(), owner=shopper, channel=WEB, fulfilment=pickup),
        metadata=suite.metadata,
    )
    assert [ln.location_id for ln in done.order.lines] == ["store-1"]
    assert (await level(suite, "BAG-1", "store-1")).reserved == 1


async def test_checkout_of_an_empty_cart_or_a_changed_total(suite: Suite) -> None:
    shopper = customer("c-empty-checkout")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await suite.cart.Checkout(
            pb.CheckoutRequest(request_id=rid(), owner=shopper, channel=WEB, fulfilment=ship()),
            metadata=suite.metadata,
        )
    assert error_reason(err.value) == "EMPTY_CART"
    await add(suite, shopper, "SHOE-38", 1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await suite.cart.Checkout(
            pb.CheckoutRequest(
                request_id=rid(),
                owner=shopper,
                channel=WEB,
                fulfilment=ship(),
                expected_total=money_pb2.Money(currency_code="EUR", amount_minor=100),
            ),
            metadata=suite.metadata,
        )
    assert error_reason(err.value) == "PRICE_CHANGED"
    assert (await level(suite, "SHOE-38", "wh-1")).reserved == 0
