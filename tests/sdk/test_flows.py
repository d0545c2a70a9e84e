"""Resolve, cart operations and check-in through the asyncio client's helpers."""

from __future__ import annotations

import uuid

import pytest

from continuum.cart.v1 import cart_resources_pb2 as cart_res
from continuum.identity.v1 import identity_service_pb2 as id_pb
from continuum.notification.v1 import notification_resources_pb2 as notif_res
from continuum_sdk import AsyncContinuum, customer, guest, pickup
from continuum_sdk import errors as e
from continuum_sdk.identifiers import account, device, email, loyalty, phone

from .conftest import STORE_1, Suite


async def test_resolve_creates_then_finds_the_same_customer(suite: Suite) -> None:
    tag = uuid.uuid4().hex[:8]
    async with AsyncContinuum(suite.config()) as cx:
        created = await cx.resolve(email(f"{tag}@example.com"), device(f"dev-{tag}"))
        assert created.outcome == id_pb.RESOLVE_OUTCOME_CREATED
        assert created.customer_id
        # Signing in later with the account id and the same email links the account.
        linked = await cx.resolve(email(f"{tag}@example.com"), account(f"acc-{tag}"))
        assert linked.customer_id == created.customer_id
        assert linked.outcome == id_pb.RESOLVE_OUTCOME_LINKED
        assert await cx.customer_id(account(f"acc-{tag}")) == created.customer_id
        assert await cx.customer_id(email(f"nobody-{tag}@example.com")) is None
        assert await cx.customer_id(phone("+14155550123"), loyalty(f"none-{tag}")) is None


async def test_resolve_with_the_same_request_id_is_a_replay(suite: Suite) -> None:
    tag = uuid.uuid4().hex[:8]
    rid = f"resolve-{tag}"
    async with AsyncContinuum(suite.config()) as cx:
        first = await cx.resolve(email(f"{tag}@example.com"), request_id=rid)
        again = await cx.resolve(email(f"{tag}@example.com"), request_id=rid)
    assert again == first


async def test_cart_add_update_remove_and_checkout(suite: Suite) -> None:
    owner = customer(f"c-cart-{uuid.uuid4().hex[:8]}")
    async with AsyncContinuum(suite.config()) as cx:
        shoe = await cx.carts.add(owner, "SHOE-38")
        bag = await cx.carts.add(owner, "BAG-1", etag=shoe.cart.etag)
        cart = await cx.carts.update(owner, shoe.line_id, 2, etag=bag.cart.etag)
        assert {ln.sku: ln.quantity for ln in cart.lines} == {"SHOE-38": 2, "BAG-1": 1}
        cart = await cx.carts.remove(owner, bag.line_id, etag=cart.etag)
        assert [ln.sku for ln in cart.lines] == ["SHOE-38"]
        assert (await cx.carts.get(owner)).etag == cart.etag

        placed = await cx.carts.checkout(
            owner, fulfilment=pickup(STORE_1), etag=cart.etag, expected_total=cart.subtotal
        )
        assert placed.order.total.amount_minor == 2 * 8900
        assert not placed.cart.lines


async def test_request_ids_are_generated_and_a_given_one_makes_a_replay(suite: Suite) -> None:
    owner = guest(f"dev-{uuid.uuid4().hex[:8]}")
    async with AsyncContinuum(suite.config()) as cx:
        await cx.carts.add(owner, "SHOE-39")
        await cx.carts.add(owner, "SHOE-39")  # a new request: one more unit
        rid = f"add-{uuid.uuid4().hex}"
        once = await cx.carts.add(owner, "SHOE-39", request_id=rid)
        twice = await cx.carts.add(owner, "SHOE-39", request_id=rid)  # a replay
    assert once.cart.lines[0].quantity == 3
    assert twice.cart.etag == once.cart.etag


async def test_checkout_without_stock_fails_with_the_lines_named(suite: Suite) -> None:
    owner = customer(f"c-stock-{uuid.uuid4().hex[:8]}")
    async with AsyncContinuum(suite.config()) as cx:
        await cx.carts.add(owner, "SHOE-39", quantity=9)  # store-1 has 2
        with pytest.raises(e.FailedPrecondition) as caught:
            await cx.carts.checkout(owner, fulfilment=pickup(STORE_1))
        failure = caught.value.detail(cart_res.CheckoutFailure)
        assert failure is not None
        assert [line.sku for line in failure.lines] == ["SHOE-39"]
        assert len((await cx.carts.get(owner)).lines) == 1  # unchanged


async def test_check_in_briefs_a_known_customer_and_not_an_unknown_one(suite: Suite) -> None:
    tag = uuid.uuid4().hex[:8]
    cid = await suite.new_customer(tag)
    async with AsyncContinuum(suite.config()) as cx:
        known = await cx.check_in(STORE_1, loyalty(f"L-{tag}"))
        assert known.status == notif_res.CHECK_IN_STATUS_BRIEFED
        assert known.customer_id == cid
        assert known.briefing_id
        again = await cx.check_in(STORE_1, loyalty(f"L-{tag}"))
        assert again.status == notif_res.CHECK_IN_STATUS_DEDUPLICATED

        stranger = await cx.check_in(
            STORE_1,
            loyalty(f"nobody-{tag}"),
            source=notif_res.CHECK_IN_SOURCE_ASSOCIATE,
            associate_id="associate-1",
        )
        assert stranger.status == notif_res.CHECK_IN_STATUS_UNKNOWN_CUSTOMER

        with pytest.raises(e.InvalidArgument) as caught:
            await cx.check_in("no-such-store", loyalty(f"L-{tag}"))
        assert caught.value.reason == "UNKNOWN_STORE"
        assert [v.field for v in caught.value.field_violations] == ["store_id"]
