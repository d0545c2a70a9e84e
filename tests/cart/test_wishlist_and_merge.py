"""Wishlists, saving for later, and merging a guest's cart into the customer's: by call
and by identity's events."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import Message

from continuum.cart.v1 import cart_events_pb2 as ev
from continuum.cart.v1 import cart_resources_pb2 as res
from continuum.cart.v1 import cart_service_pb2 as pb
from continuum.common.v1 import event_pb2
from continuum.identity.v1 import identity_events_pb2 as idev
from continuum_runtime.events import new_envelope, stream_key
from continuum_runtime.testing import eventually
from tests.cart.conftest import WEB, Suite, customer, device, rid
from tests.cart.test_cart import add


async def get_cart(suite: Suite, owner: res.Owner) -> res.Cart:
    return (await suite.cart.GetCart(pb.GetCartRequest(owner=owner), metadata=suite.metadata)).cart


async def get_wishlist(suite: Suite, owner: res.Owner) -> res.Wishlist:
    answer = await suite.cart.GetWishlist(
        pb.GetWishlistRequest(owner=owner), metadata=suite.metadata
    )
    return answer.wishlist


async def test_save_for_later_and_back(suite: Suite) -> None:
    shopper = customer("c-wish")
    line = await add(suite, shopper, "SHOE-38", 2)
    moved = await suite.cart.MoveToWishlist(
        pb.MoveToWishlistRequest(
            request_id=rid(), owner=shopper, line_id=line.line_id, channel=WEB
        ),
        metadata=suite.metadata,
    )
    assert not moved.cart.lines
    assert [(i.sku, i.quantity) for i in moved.wishlist.items] == [("SHOE-38", 2)]
    (added,) = await suite.events("cart.wishlist_item_added")
    payload = ev.WishlistItemAddedEvent()
    added.payload.Unpack(payload)
    assert payload.from_cart
    assert payload.item.sku == "SHOE-38"

    back = await suite.cart.MoveToCart(
        pb.MoveToCartRequest(request_id=rid(), owner=shopper, item_id=moved.item_id, channel=WEB),
        metadata=suite.metadata,
    )
    assert [(ln.sku, ln.quantity) for ln in back.cart.lines] == [("SHOE-38", 2)]
    assert not back.wishlist.items


async def test_wishlist_keeps_a_sku_once_and_removes_by_sku(suite: Suite) -> None:
    shopper = device("dev-wish")
    for quantity in (1, 3, 2):
        await suite.cart.AddWishlistItem(
            pb.AddWishlistItemRequest(
                request_id=rid(), owner=shopper, sku="BAG-1", quantity=quantity, channel=WEB
            ),
            metadata=suite.metadata,
        )
    wishlist = await get_wishlist(suite, shopper)
    assert [(i.sku, i.quantity) for i in wishlist.items] == [("BAG-1", 3)]
    assert len(await suite.events("cart.wishlist_item_added")) == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await suite.cart.AddWishlistItem(
            pb.AddWishlistItemRequest(request_id=rid(), owner=shopper, sku="NOPE", channel=WEB),
            metadata=suite.metadata,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await suite.cart.RemoveWishlistItem(
        pb.RemoveWishlistItemRequest(request_id=rid(), owner=shopper, sku="BAG-1"),
        metadata=suite.metadata,
    )
    assert not (await get_wishlist(suite, shopper)).items


@pytest.mark.parametrize(
    ("rule", "expected"),
    [(res.MERGE_QUANTITY_RULE_MAX, 3), (res.MERGE_QUANTITY_RULE_SUM, 5)],
)
async def test_merge_a_guest_cart_into_the_customers(
    suite: Suite, rule: int, expected: int
) -> None:
    guest, known = device("dev-merge"), customer("c-merge")
    await add(suite, guest, "SHOE-38", 3)
    await add(suite, guest, "BAG-1", 1)
    await add(suite, known, "SHOE-38", 2)
    request = pb.MergeCartsRequest(request_id=rid(), source=guest, target=known, rule=rule)  # type: ignore[arg-type]
    merged = await suite.cart.MergeCarts(request, metadata=suite.metadata)
    assert [(ln.sku, ln.quantity) for ln in merged.cart.lines] == [
        ("SHOE-38", expected),
        ("BAG-1", 1),
    ]
    assert merged.summary.combined_line_count == 1
    assert merged.summary.moved_line_count == 1
    assert (await get_cart(suite, guest)).cart_id == ""  # the guest's cart is closed
    again = await suite.cart.MergeCarts(request, metadata=suite.metadata)
    assert again == merged
    (event,) = await suite.events("cart.carts_merged")
    payload = ev.CartsMergedEvent()
    event.payload.Unpack(payload)
    assert payload.trigger == res.MERGE_TRIGGER_EXPLICIT
    assert payload.target_cart_id == merged.cart.cart_id


async def test_a_merge_that_overflows_the_cart_moves_lines_to_the_wishlist(suite: Suite) -> None:
    guest, known = device("dev-gbp"), customer("c-eur")
    await add(suite, guest, "SCARF-GBP", 1)
    await add(suite, known, "SHOE-38", 1)
    merged = await suite.cart.MergeCarts(
        pb.MergeCartsRequest(request_id=rid(), source=guest, target=known),
        metadata=suite.metadata,
    )
    # The scarf is priced in another currency: it cannot join the cart, and is not lost.
    assert [ln.sku for ln in merged.cart.lines] == ["SHOE-38"]
    assert [i.sku for i in merged.wishlist.items] == ["SCARF-GBP"]
    assert merged.summary.overflow_to_wishlist_count == 1


def identity_event(event_type: str, payload: Message) -> event_pb2.EventEnvelope:
    return new_envelope(producer="identity", event_type=event_type, subject="s", payload=payload)


async def publish(suite: Suite, envelope: event_pb2.EventEnvelope) -> None:
    """Put an identity event on identity's stream, as identity's outbox relay does, and
    wait until the cart service has handled (acknowledged) it."""
    stream = stream_key(suite.cart_ctx.settings.redis_namespace, "identity")
    redis = suite.cart_ctx.redis
    message_id = await redis.xadd(
        stream,
        {"id": envelope.id, "type": envelope.type, "envelope": envelope.SerializeToString()},
    )

    async def handled() -> bool:
        groups = await redis.xinfo_groups(stream)
        cart = next((g for g in groups if g["name"] in (b"cart", "cart")), None)
        if cart is None:
            return False
        return bool(cart["last-delivered-id"] == message_id and cart["pending"] == 0)

    await eventually(handled)


async def test_signing_in_on_a_device_brings_its_cart_along(suite: Suite) -> None:
    guest, known = device("dev-sign-in"), customer("c-sign-in")
    await add(suite, guest, "SHOE-39", 1)
    await add(suite, known, "BAG-1", 1)
    linked = identity_event(
        "identity.device_linked",
        idev.DeviceLinkedEvent(customer_id="c-sign-in", device_id="dev-sign-in", channel=WEB),
    )
    await publish(suite, linked)
    cart = await get_cart(suite, known)
    assert [(ln.sku, ln.quantity) for ln in cart.lines] == [("BAG-1", 1), ("SHOE-39", 1)]
    # A redelivery of the same event changes nothing.
    await publish(suite, linked)
    await add(suite, known, "SHOE-38", 1)
    cart = await get_cart(suite, known)
    assert [(ln.sku, ln.quantity) for ln in cart.lines] == [
        ("BAG-1", 1),
        ("SHOE-39", 1),
        ("SHOE-38", 1),
    ]


async def test_merged_customers_share_one_cart_and_a_forgotten_one_has_none(suite: Suite) -> None:
    await add(suite, customer("c-old"), "SHOE-38", 2)
    await add(suite, customer("c-new"), "SHOE-38", 1)
    await publish(
        suite,
        identity_event(
            "identity.customer_merged",
            idev.CustomerMergedEvent(surviving_customer_id="c-new", merged_customer_ids=["c-old"]),
        ),
    )

    lines = (await get_cart(suite, customer("c-new"))).lines
    assert [(ln.sku, ln.quantity) for ln in lines] == [("SHOE-38", 2)]
    await publish(
        suite,
        identity_event(
            "identity.customer_forgotten",
            idev.CustomerForgottenEvent(customer_id="c-new", alias_customer_ids=["c-old"]),
        ),
    )

    rows = await suite.rows("SELECT count(*) FROM carts WHERE owner_id IN ('c-new', 'c-old')")
    assert rows[0][0] == 0
    assert (await get_cart(suite, customer("c-new"))).cart_id == ""


async def test_cart_and_wishlist_in_one_call(suite: Suite) -> None:
    """GetCart with include_wishlist: what GetCart and GetWishlist answer, in one call,
    by owner and by cart id; an owner with neither gets both empty."""
    shopper = customer("c-both")
    await add(suite, shopper, "SHOE-38", 1)
    await suite.cart.AddWishlistItem(
        pb.AddWishlistItemRequest(
            request_id=rid(), owner=shopper, sku="BAG-1", quantity=2, channel=WEB
        ),
        metadata=suite.metadata,
    )
    both = await suite.cart.GetCart(
        pb.GetCartRequest(owner=shopper, include_wishlist=True), metadata=suite.metadata
    )
    assert both.cart == await get_cart(suite, shopper)
    assert both.wishlist == await get_wishlist(suite, shopper)
    assert [(i.sku, i.quantity) for i in both.wishlist.items] == [("BAG-1", 2)]
    assert [ln.sku for ln in both.cart.lines] == ["SHOE-38"]

    by_id = await suite.cart.GetCart(
        pb.GetCartRequest(cart_id=both.cart.cart_id, include_wishlist=True),
        metadata=suite.metadata,
    )
    assert by_id.wishlist == both.wishlist

    cart_only = await suite.cart.GetCart(pb.GetCartRequest(owner=shopper), metadata=suite.metadata)
    assert not cart_only.HasField("wishlist")

    nobody = customer("c-nothing")
    empty = await suite.cart.GetCart(
        pb.GetCartRequest(owner=nobody, include_wishlist=True), metadata=suite.metadata
    )
    assert not empty.cart.lines
    assert not empty.wishlist.items
    assert empty.wishlist.owner == nobody
