"""Carts across channels: lines priced from the item master, limits, etags, idempotency."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from continuum.cart.v1 import cart_events_pb2 as ev
from continuum.cart.v1 import cart_resources_pb2 as res
from continuum.cart.v1 import cart_service_pb2 as pb
from continuum_runtime.client import error_detail, error_reason
from tests.cart.conftest import APP, STORE, WEB, Suite, customer, device, rid


async def add(
    suite: Suite, owner: res.Owner, sku: str, quantity: int = 1, **kw: object
) -> pb.AddItemResponse:
    return await suite.cart.AddItem(
        pb.AddItemRequest(
            request_id=str(kw.pop("request_id", rid())),
            owner=owner,
            sku=sku,
            quantity=quantity,
            channel=kw.pop("channel", WEB),  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        ),
        metadata=suite.metadata,
    )


async def test_one_cart_across_channels_priced_from_the_item_master(suite: Suite) -> None:
    shopper = customer("c-1")
    empty = await suite.cart.GetCart(pb.GetCartRequest(owner=shopper), metadata=suite.metadata)
    assert empty.cart.cart_id == ""
    assert not empty.cart.lines

    first = await add(suite, shopper, "SHOE-38", 1, channel=WEB)
    await add(suite, shopper, "BAG-1", 1, channel=APP)
    third = await add(suite, shopper, "SHOE-38", 2, channel=STORE, store_id="store-1")
    assert third.line_id == first.line_id  # same SKU, same line

    cart = (
        await suite.cart.GetCart(pb.GetCartRequest(owner=shopper), metadata=suite.metadata)
    ).cart
    assert cart.cart_id == first.cart.cart_id
    assert [(line.sku, line.quantity) for line in cart.lines] == [("SHOE-38", 3), ("BAG-1", 1)]
    shoe = cart.lines[0]
    assert shoe.unit_price.amount_minor == 8900
    assert shoe.unit_price.currency_code == "EUR"
    assert shoe.line_total.amount_minor == 3 * 8900
    assert (shoe.product.name, shoe.product.colour, shoe.product.size) == (
        "Runner shoe",
        "navy",
        "38",
    )
    assert (shoe.channel, shoe.store_id) == (STORE, "store-1")
    assert cart.subtotal.amount_minor == 3 * 8900 + 12900
    assert cart.item_count == 4
    assert cart.currency_code == "EUR"
    assert (cart.last_channel, cart.last_store_id) == (STORE, "store-1")
    by_id = await suite.cart.GetCart(
        pb.GetCartRequest(cart_id=cart.cart_id), metadata=suite.metadata
    )
    assert by_id.cart == cart

    updates = await suite.events("cart.cart_updated")
    assert len(updates) == 3
    last = ev.CartUpdatedEvent()
    updates[-1].payload.Unpack(last)
    assert last.change_type == ev.CART_CHANGE_TYPE_ITEM_ADDED
    assert last.changes[0].previous_quantity == 1
    assert last.changes[0].line.quantity == 3
    assert last.cart.etag == cart.etag
    assert updates[-1].customer_id == "c-1"
    assert updates[-1].subject == cart.cart_id


async def test_update_remove_and_clear(suite: Suite) -> None:
    shopper = device("dev-1")
    shoe = await add(suite, shopper, "SHOE-38")
    bag = await add(suite, shopper, "BAG-1")
    updated = await suite.cart.UpdateItem(
        pb.UpdateItemRequest(
            request_id=rid(), owner=shopper, line_id=shoe.line_id, quantity=5, channel=WEB
        ),
        metadata=suite.metadata,
    )
    assert updated.cart.lines[0].quantity == 5
    assert updated.cart.lines[0].line_total.amount_minor == 5 * 8900
    removed = await suite.cart.RemoveItem(
        pb.RemoveItemRequest(request_id=rid(), owner=shopper, line_id=bag.line_id, channel=WEB),
        metadata=suite.metadata,
    )
    assert [line.sku for line in removed.cart.lines] == ["SHOE-38"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await suite.cart.RemoveItem(
            pb.RemoveItemRequest(request_id=rid(), owner=shopper, line_id=bag.line_id, channel=WEB),
            metadata=suite.metadata,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    cleared = await suite.cart.ClearCart(
        pb.ClearCartRequest(request_id=rid(), owner=shopper, channel=WEB), metadata=suite.metadata
    )
    assert not cleared.cart.lines
    assert cleared.cart.subtotal.amount_minor == 0
    assert cleared.cart.item_count == 0


async def test_a_stale_etag_is_aborted_and_changes_nothing(suite: Suite) -> None:
    shopper = customer("c-etag")
    first = await add(suite, shopper, "SHOE-38")
    await add(suite, shopper, "BAG-1", etag=first.cart.etag)  # current etag: accepted
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await add(suite, shopper, "SHOE-39", etag=first.cart.etag)  # stale now
    assert err.value.code() == grpc.StatusCode.ABORTED
    info = error_detail(err.value, error_details_pb2.ErrorInfo)
    assert info is not None
    assert info.reason == "ETAG_MISMATCH"
    cart = (
        await suite.cart.GetCart(pb.GetCartRequest(owner=shopper), metadata=suite.metadata)
    ).cart
    assert info.metadata["current_etag"] == cart.etag
    assert [line.sku for line in cart.lines] == ["SHOE-38", "BAG-1"]


async def test_a_replayed_request_returns_the_first_answer_and_adds_nothing(suite: Suite) -> None:
    shopper = customer("c-replay")
    request_id = rid()
    first = await add(suite, shopper, "SHOE-38", 2, request_id=request_id)
    again = await add(suite, shopper, "SHOE-38", 2, request_id=request_id)
    assert again == first
    cart = (
        await suite.cart.GetCart(pb.GetCartRequest(owner=shopper), metadata=suite.metadata)
    ).cart
    assert cart.lines[0].quantity == 2
    assert len(await suite.events("cart.cart_updated")) == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await add(suite, shopper, "BAG-1", 1, request_id=request_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "REQUEST_ID_REUSED"


@pytest.mark.parametrize(
    ("sku", "quantity", "code", "reason"),
    [
        ("NOPE-1", 1, grpc.StatusCode.NOT_FOUND, "ITEM_NOT_FOUND"),
        ("OLD-1", 1, grpc.StatusCode.FAILED_PRECONDITION, "ITEM_NOT_SELLABLE"),
        ("SHOE-38", 0, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ("SHOE-38", -2, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ("SHOE-38", 100, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ],
)
async def test_bad_items_and_quantities(
    suite: Suite, sku: str, quantity: int, code: grpc.StatusCode, reason: str
) -> None:
    shopper = customer("c-bad")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await add(suite, shopper, sku, quantity)
    assert err.value.code() == code
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        bad = error_detail(err.value, error_details_pb2.BadRequest)
        assert bad is not None
        assert [v.field for v in bad.field_violations] == ["quantity"]
    else:
        assert error_reason(err.value) == reason
    cart = (
        await suite.cart.GetCart(pb.GetCartRequest(owner=shopper), metadata=suite.metadata)
    ).cart
    assert not cart.lines


async def test_limits_and_currency(suite: Suite) -> None:
    shopper = customer("c-limits")
    await add(suite, shopper, "SHOE-38", 98)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await add(suite, shopper, "SHOE-38", 2)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "LINE_QUANTITY_LIMIT"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await add(suite, shopper, "SCARF-GBP", 1)
    assert error_reason(err.value) == "CURRENCY_MISMATCH"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await add(suite, customer("c-other"), "SHOE-38", 1, currency_code="GBP")
    assert error_reason(err.value) == "CURRENCY_MISMATCH"
    cart = (
        await suite.cart.GetCart(pb.GetCartRequest(owner=shopper), metadata=suite.metadata)
    ).cart
    assert [(line.sku, line.quantity) for line in cart.lines] == [("SHOE-38", 98)]


async def test_a_store_change_needs_the_store(suite: Suite) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await add(suite, customer("c-store"), "SHOE-38", 1, channel=STORE)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = error_detail(err.value, error_details_pb2.BadRequest)
    assert bad is not None
    assert [v.description for v in bad.field_violations] == [
        "store_id is required for CHANNEL_STORE"
    ]


async def test_inventory_down_is_unavailable_and_changes_nothing(suite: Suite) -> None:
    shopper = customer("c-outage")
    await add(suite, shopper, "SHOE-38")
    await suite.inventory_server.drain(grace_s=0.1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await add(suite, shopper, "BAG-1")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    cart = (
        await suite.cart.GetCart(pb.GetCartRequest(owner=shopper), metadata=suite.metadata)
    ).cart
    assert [line.sku for line in cart.lines] == ["SHOE-38"]
