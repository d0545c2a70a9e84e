"""Typed errors from the real services; token, deadline and retry behaviour of the client.

Deadlines and retries are tested against a tiny stand-in CartService (one method, GetCart,
answering from a script) so that a test decides exactly what each attempt gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from continuum.cart.v1 import cart_resources_pb2 as cart_res
from continuum.cart.v1 import cart_service_pb2 as cart_pb
from continuum.cart.v1 import cart_service_pb2_grpc as cart_grpc
from continuum.common.v1 import channel_pb2
from continuum_sdk import AsyncContinuum, ClientConfig, RetryConfig, customer
from continuum_sdk import errors as e

from .conftest import Suite


async def test_bad_request_is_invalid_argument_with_field_violations(suite: Suite) -> None:
    async with AsyncContinuum(suite.config()) as cx:
        with pytest.raises(e.InvalidArgument) as caught:
            await cx.cart.AddItem(
                cart_pb.AddItemRequest(
                    request_id="r-1",
                    owner=customer("c-bad-request"),
                    sku="SHOE-38",
                    quantity=0,
                    channel=channel_pb2.CHANNEL_WEB,
                )
            )
    err = caught.value
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.method == "continuum.cart.v1.CartService.AddItem"
    assert "quantity" in [v.field for v in err.field_violations]
    assert all(v.description for v in err.field_violations)


async def test_unknown_sku_is_not_found_with_reason_and_metadata(suite: Suite) -> None:
    async with AsyncContinuum(suite.config()) as cx:
        with pytest.raises(e.NotFound) as caught:
            await cx.carts.add(customer("c-not-found"), "NO-SUCH-SKU")
    assert caught.value.reason == "ITEM_NOT_FOUND"
    assert caught.value.metadata.get("sku") == "NO-SUCH-SKU"
    assert isinstance(caught.value, e.ContinuumError)


async def test_stale_etag_is_aborted_and_add_retries_once_after_rereading(suite: Suite) -> None:
    owner = customer("c-etag")
    async with AsyncContinuum(suite.config()) as cx:
        first = await cx.carts.add(owner, "SHOE-38")
        stale = first.cart.etag
        await cx.carts.add(owner, "BAG-1")  # moves the etag on

        with pytest.raises(e.Aborted) as caught:
            await cx.carts.update(owner, first.line_id, 2, etag=stale)
        assert caught.value.reason == "ETAG_MISMATCH"
        assert caught.value.metadata["current_etag"] != stale

        # add: the conflict is retried once against the cart as it is now.
        again = await cx.carts.add(owner, "SHOE-38", etag=stale)
        lines = {line.sku: line.quantity for line in again.cart.lines}
        assert lines == {"SHOE-38": 2, "BAG-1": 1}

        # Without the retry the conflict is the caller's.
        with pytest.raises(e.Aborted):
            await cx.carts.add(owner, "SHOE-38", etag=stale, retry_on_conflict=False)


async def test_a_call_without_token_is_unauthenticated(suite: Suite) -> None:
    async with AsyncContinuum(suite.config(token=None)) as cx:
        with pytest.raises(e.Unauthenticated):
            await cx.carts.get(customer("c-no-token"))
    # The same call with the token goes through.
    async with AsyncContinuum(suite.config()) as cx:
        assert (await cx.carts.get(customer("c-no-token"))).etag == ""


async def test_token_provider_is_asked_per_call(suite: Suite) -> None:
    calls: list[int] = []

    def provide() -> str:
        calls.append(1)
        return suite.token()

    async with AsyncContinuum(suite.config(token=None, token_provider=provide)) as cx:
        await cx.carts.get(customer("c-provider"))
        await cx.carts.get(customer("c-provider"))
    assert len(calls) == 2


# --- a stand-in CartService for deadlines and retries ---------------------------------


class ScriptedCart(cart_grpc.CartServiceServicer):
    """GetCart answers from ``script`` (one step per attempt; the last one repeats)."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.attempts = 0

    async def GetCart(self, request: Any, context: Any) -> cart_pb.GetCartResponse:
        step = self.script[min(self.attempts, len(self.script) - 1)]
        self.attempts += 1
        if step == "unavailable":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        if step == "aborted":
            await context.abort(grpc.StatusCode.ABORTED, "conflict")
        if step == "slow":
            await asyncio.sleep(1.0)
        return cart_pb.GetCartResponse(cart=cart_res.Cart(cart_id="cart-1"))


@asynccontextmanager
async def scripted(*script: str) -> AsyncIterator[tuple[ScriptedCart, str]]:
    servicer = ScriptedCart(list(script))  # type: ignore[abstract]
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    cart_grpc.add_CartServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def fast_retries(**overrides: Any) -> RetryConfig:
    return RetryConfig(initial_backoff_s=0.01, max_backoff_s=0.05, **overrides)


async def test_default_deadline_applies_to_unary_calls() -> None:
    async with scripted("slow") as (servicer, where):
        config = ClientConfig(targets={"cart": where}, deadline_s=0.2)
        async with AsyncContinuum(config) as cx:
            with pytest.raises(e.DeadlineExceeded):
                await cx.cart.GetCart(cart_pb.GetCartRequest(cart_id="x"))
            # A timeout of the call's own replaces the default.
            answer = await cx.cart.GetCart(cart_pb.GetCartRequest(cart_id="x"), timeout=30)
            assert answer.cart.cart_id == "cart-1"
    assert servicer.attempts == 2


async def test_unavailable_is_retried_until_the_server_answers() -> None:
    async with scripted("unavailable", "unavailable", "ok") as (servicer, where):
        config = ClientConfig(targets={"cart": where}, retry=fast_retries())
        async with AsyncContinuum(config) as cx:
            answer = await cx.cart.GetCart(cart_pb.GetCartRequest(cart_id="x"))
    assert answer.cart.cart_id == "cart-1"
    assert servicer.attempts == 3


async def test_other_errors_are_not_retried() -> None:
    async with scripted("aborted", "ok") as (servicer, where):
        config = ClientConfig(targets={"cart": where}, retry=fast_retries())
        async with AsyncContinuum(config) as cx:
            with pytest.raises(e.Aborted):
                await cx.cart.GetCart(cart_pb.GetCartRequest(cart_id="x"))
    assert servicer.attempts == 1


async def test_attempts_are_bounded_and_unavailable_is_raised_typed() -> None:
    async with scripted("unavailable") as (servicer, where):
        config = ClientConfig(targets={"cart": where}, retry=fast_retries(max_attempts=3))
        async with AsyncContinuum(config) as cx:
            with pytest.raises(e.Unavailable):
                await cx.cart.GetCart(cart_pb.GetCartRequest(cart_id="x"))
    assert servicer.attempts == 3


async def test_retry_budget_stops_retries_when_spent() -> None:
    # 4 tokens: a failure costs one, and retries stop once no more than half are left.
    budget = fast_retries(max_attempts=5, budget_max_tokens=4, budget_token_ratio=0.1)
    async with (
        scripted("unavailable") as (servicer, where),
        AsyncContinuum(ClientConfig(targets={"cart": where}, retry=budget)) as cx,
    ):
        with pytest.raises(e.Unavailable):
            await cx.cart.GetCart(cart_pb.GetCartRequest(cart_id="x"))
        first_call = servicer.attempts
        with pytest.raises(e.Unavailable):
            await cx.cart.GetCart(cart_pb.GetCartRequest(cart_id="x"))
        second_call = servicer.attempts - first_call
    assert 1 < first_call < 5  # retried, but not all five attempts
    assert second_call == 1  # the budget is spent: no retry at all


async def test_retries_can_be_turned_off() -> None:
    async with scripted("unavailable", "ok") as (servicer, where):
        config = ClientConfig(targets={"cart": where}, retry=RetryConfig(max_attempts=1))
        async with AsyncContinuum(config) as cx:
            with pytest.raises(e.Unavailable):
                await cx.cart.GetCart(cart_pb.GetCartRequest(cart_id="x"))
    assert servicer.attempts == 1
