"""Cart operations with the cart service's conventions handled.

``cx.carts`` (an :class:`AsyncCarts`, or :class:`Carts` on the blocking client) gets,
adds, updates, removes, clears and checks out, for an owner made with :func:`customer` or
:func:`guest`::

    owner = customer(customer_id)
    added = await cx.carts.add(owner, "SHOE-39", quantity=1)
    cart = await cx.carts.update(owner, added.line_id, 2, etag=added.cart.etag)
    placed = await cx.carts.checkout(owner, etag=cart.etag)

* **request ids**: every mutation gets a fresh ``request_id`` (a UUID) unless one is
  given; pass your own to make a retry of the same user action safe (a replay returns the
  first answer and changes nothing).
* **etags**: pass the etag of the cart the shopper saw to make a change conditional; a
  stale one raises :class:`~continuum_sdk.errors.Aborted` (reason ``ETAG_MISMATCH``).
  ``add`` (by default; ``update`` and ``remove`` when ``retry_on_conflict=True``) then
  takes the cart's current etag (the error's ``current_etag``, else by re-reading the cart)
  and tries once more, with a request id derived from the first (so repeating the whole
  call with the same ``request_id`` stays idempotent). ``clear`` and ``checkout`` are never
  retried: the order must be what the shopper saw.
* **channel / store**: the channel (and store, for ``CHANNEL_STORE``) given to
  ``cx.carts.using(channel, store_id)`` or per call is recorded on the lines changed.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from continuum.cart.v1 import cart_resources_pb2 as res
from continuum.cart.v1 import cart_service_pb2 as pb
from continuum.cart.v1.cart_resources_pb2 import Cart, Fulfilment, Owner
from continuum.common.v1 import channel_pb2, money_pb2
from continuum_sdk.errors import Aborted

if TYPE_CHECKING:
    from continuum_sdk.client import AsyncContinuum, Continuum

__all__ = [
    "AsyncCarts",
    "Cart",
    "Carts",
    "Fulfilment",
    "Owner",
    "customer",
    "guest",
    "pickup",
    "retry_request_id",
    "ship",
]

Channel: TypeAlias = channel_pb2.Channel.ValueType
T = TypeVar("T")

_RETRY_NAMESPACE = uuid.UUID("5f0d3c4e-8d8e-4a53-9a51-6a8f3f0c2b71")


def customer(customer_id: str) -> Owner:
    """The cart owner for a known customer (identity's customer id)."""
    if not customer_id:
        raise ValueError("customer_id must not be empty")
    return Owner(customer_id=customer_id)


def guest(device_id: str) -> Owner:
    """The cart owner for a guest: a device, cookie or app-install id."""
    if not device_id:
        raise ValueError("device_id must not be empty")
    return Owner(device_id=device_id)


def ship() -> Fulfilment:
    """Ship to the shopper (inventory picks the ship-from location)."""
    return Fulfilment(type=res.FULFILMENT_TYPE_SHIP)


def pickup(location_id: str) -> Fulfilment:
    """Click and collect at a store; stock is reserved there."""
    return Fulfilment(type=res.FULFILMENT_TYPE_PICKUP, pickup_location_id=location_id)


def new_request_id() -> str:
    return str(uuid.uuid4())


def retry_request_id(request_id: str) -> str:
    """The request id of the one retry after a conflict: derived from the first, so the
    same call repeated with the same id replays the same retry."""
    return str(uuid.uuid5(_RETRY_NAMESPACE, request_id))


@dataclass(frozen=True)
class _Where:
    channel: Channel
    store_id: str

    def resolve(self, channel: Channel | None, store_id: str | None) -> _Where:
        return _Where(
            channel=self.channel if channel is None else channel,
            store_id=self.store_id if store_id is None else store_id,
        )


def _current_etag(err: Aborted) -> str | None:
    return err.metadata.get("current_etag") or None


class AsyncCarts:
    """Cart operations on the asyncio client (see the module doc)."""

    def __init__(
        self,
        client: AsyncContinuum,
        channel: Channel = channel_pb2.CHANNEL_WEB,
        store_id: str = "",
    ) -> None:
        self._client = client
        self._where = _Where(channel, store_id)

    def using(self, channel: Channel, store_id: str = "") -> AsyncCarts:
        """The same operations recorded as made in ``channel`` (and ``store_id``)."""
        return AsyncCarts(self._client, channel, store_id)

    async def get(self, owner: Owner) -> Cart:
        """The owner's cart (an empty cart, with empty id and etag, if it has none)."""
        response = await self._client.cart.GetCart(pb.GetCartRequest(owner=owner))
        return response.cart

    async def get_by_id(self, cart_id: str) -> Cart:
        """A cart by id, in any state (NotFound for an unknown id)."""
        response = await self._client.cart.GetCart(pb.GetCartRequest(cart_id=cart_id))
        return response.cart

    async def _conflict_retry(
        self,
        owner: Owner,
        request_id: str,
        etag: str,
        retry: bool,
        call: Callable[[str, str], Awaitable[T]],
    ) -> T:
        try:
            return await call(request_id, etag)
        except Aborted as err:
            if not retry or not etag:
                raise
            fresh = _current_etag(err) or (await self.get(owner)).etag
            return await call(retry_request_id(request_id), fresh)

    async def add(
        self,
        owner: Owner,
        sku: str,
        quantity: int = 1,
        *,
        etag: str = "",
        request_id: str | None = None,
        currency_code: str = "",
        retry_on_conflict: bool = True,
        channel: Channel | None = None,
        store_id: str | None = None,
    ) -> pb.AddItemResponse:
        """Add units of a SKU (a new line, or more on its line); the response has the cart
        and the ``line_id``. On a stale ``etag`` retries once against the current cart."""
        where = self._where.resolve(channel, store_id)

        async def call(rid: str, tag: str) -> pb.AddItemResponse:
            response: pb.AddItemResponse = await self._client.cart.AddItem(
                pb.AddItemRequest(
                    request_id=rid,
                    owner=owner,
                    sku=sku,
                    quantity=quantity,
                    channel=where.channel,
                    store_id=where.store_id,
                    etag=tag,
                    currency_code=currency_code,
                )
            )
            return response

        return await self._conflict_retry(
            owner, request_id or new_request_id(), etag, retry_on_conflict, call
        )

    async def update(
        self,
        owner: Owner,
        line_id: str,
        quantity: int,
        *,
        etag: str = "",
        request_id: str | None = None,
        retry_on_conflict: bool = False,
        channel: Channel | None = None,
        store_id: str | None = None,
    ) -> Cart:
        """Set a line's quantity (1 to 99); the cart after."""
        where = self._where.resolve(channel, store_id)

        async def call(rid: str, tag: str) -> Cart:
            response = await self._client.cart.UpdateItem(
                pb.UpdateItemRequest(
                    request_id=rid,
                    owner=owner,
                    line_id=line_id,
                    quantity=quantity,
                    channel=where.channel,
                    store_id=where.store_id,
                    etag=tag,
                )
            )
            return response.cart

        return await self._conflict_retry(
            owner, request_id or new_request_id(), etag, retry_on_conflict, call
        )

    async def remove(
        self,
        owner: Owner,
        line_id: str,
        *,
        etag: str = "",
        request_id: str | None = None,
        retry_on_conflict: bool = False,
        channel: Channel | None = None,
        store_id: str | None = None,
    ) -> Cart:
        """Remove a line; the cart after."""
        where = self._where.resolve(channel, store_id)

        async def call(rid: str, tag: str) -> Cart:
            response = await self._client.cart.RemoveItem(
                pb.RemoveItemRequest(
                    request_id=rid,
                    owner=owner,
                    line_id=line_id,
                    channel=where.channel,
                    store_id=where.store_id,
                    etag=tag,
                )
            )
            return response.cart

        return await self._conflict_retry(
            owner, request_id or new_request_id(), etag, retry_on_conflict, call
        )

    async def clear(
        self,
        owner: Owner,
        *,
        etag: str = "",
        request_id: str | None = None,
        channel: Channel | None = None,
        store_id: str | None = None,
    ) -> Cart:
        """Remove every line (never retried on a conflict); the empty cart."""
        where = self._where.resolve(channel, store_id)
        response = await self._client.cart.ClearCart(
            pb.ClearCartRequest(
                request_id=request_id or new_request_id(),
                owner=owner,
                channel=where.channel,
                store_id=where.store_id,
                etag=etag,
            )
        )
        return response.cart

    async def checkout(
        self,
        owner: Owner,
        *,
        fulfilment: Fulfilment | None = None,
        etag: str = "",
        expected_total: money_pb2.Money | None = None,
        discount_total: money_pb2.Money | None = None,
        tax_total: money_pb2.Money | None = None,
        shipping_total: money_pb2.Money | None = None,
        request_id: str | None = None,
        channel: Channel | None = None,
        store_id: str | None = None,
    ) -> pb.CheckoutResponse:
        """Place the order (``fulfilment`` defaults to :func:`ship`); the response has the
        order and the emptied cart. Stock problems raise
        :class:`~continuum_sdk.errors.FailedPrecondition` with a ``CheckoutFailure``
        detail (``err.detail(cart_resources_pb2.CheckoutFailure)``)."""
        response: pb.CheckoutResponse = await self._client.cart.Checkout(
            _checkout_request(
                owner,
                self._where.resolve(channel, store_id),
                fulfilment,
                etag,
                expected_total,
                discount_total,
                tax_total,
                shipping_total,
                request_id,
            )
        )
        return response


def _checkout_request(
    owner: Owner,
    where: _Where,
    fulfilment: Fulfilment | None,
    etag: str,
    expected_total: money_pb2.Money | None,
    discount_total: money_pb2.Money | None,
    tax_total: money_pb2.Money | None,
    shipping_total: money_pb2.Money | None,
    request_id: str | None,
) -> pb.CheckoutRequest:
    return pb.CheckoutRequest(
        request_id=request_id or new_request_id(),
        owner=owner,
        etag=etag,
        channel=where.channel,
        store_id=where.store_id,
        fulfilment=fulfilment or ship(),
        expected_total=expected_total,
        discount_total=discount_total,
        tax_total=tax_total,
        shipping_total=shipping_total,
    )


class Carts:
    """Cart operations on the blocking client; the same methods as :class:`AsyncCarts`."""

    def __init__(
        self,
        client: Continuum,
        channel: Channel = channel_pb2.CHANNEL_WEB,
        store_id: str = "",
    ) -> None:
        self._client = client
        self._where = _Where(channel, store_id)

    def using(self, channel: Channel, store_id: str = "") -> Carts:
        return Carts(self._client, channel, store_id)

    def get(self, owner: Owner) -> Cart:
        return self._client.cart.GetCart(pb.GetCartRequest(owner=owner)).cart

    def get_by_id(self, cart_id: str) -> Cart:
        return self._client.cart.GetCart(pb.GetCartRequest(cart_id=cart_id)).cart

    def _conflict_retry(
        self,
        owner: Owner,
        request_id: str,
        etag: str,
        retry: bool,
        call: Callable[[str, str], T],
    ) -> T:
        try:
            return call(request_id, etag)
        except Aborted as err:
            if not retry or not etag:
                raise
            fresh = _current_etag(err) or self.get(owner).etag
            return call(retry_request_id(request_id), fresh)

    def add(
        self,
        owner: Owner,
        sku: str,
        quantity: int = 1,
        *,
        etag: str = "",
        request_id: str | None = None,
        currency_code: str = "",
        retry_on_conflict: bool = True,
        channel: Channel | None = None,
        store_id: str | None = None,
    ) -> pb.AddItemResponse:
        where = self._where.resolve(channel, store_id)

        def call(rid: str, tag: str) -> pb.AddItemResponse:
            return self._client.cart.AddItem(
                pb.AddItemRequest(
                    request_id=rid,
                    owner=owner,
                    sku=sku,
                    quantity=quantity,
                    channel=where.channel,
                    store_id=where.store_id,
                    etag=tag,
                    currency_code=currency_code,
                )
            )

        return self._conflict_retry(
            owner, request_id or new_request_id(), etag, retry_on_conflict, call
        )

    def update(
        self,
        owner: Owner,
        line_id: str,
        quantity: int,
        *,
        etag: str = "",
        request_id: str | None = None,
        retry_on_conflict: bool = False,
        channel: Channel | None = None,
        store_id: str | None = None,
    ) -> Cart:
        where = self._where.resolve(channel, store_id)

        def call(rid: str, tag: str) -> Cart:
            return self._client.cart.UpdateItem(
                pb.UpdateItemRequest(
                    request_id=rid,
                    owner=owner,
                    line_id=line_id,
                    quantity=quantity,
                    channel=where.channel,
                    store_id=where.store_id,
                    etag=tag,
                )
            ).cart

        return self._conflict_retry(
            owner, request_id or new_request_id(), etag, retry_on_conflict, call
        )

    def remove(
        self,
        owner: Owner,
        line_id: str,
        *,
        etag: str = "",
        request_id: str | None = None,
        retry_on_conflict: bool = False,
        channel: Channel | None = None,
        store_id: str | None = None,
    ) -> Cart:
        where = self._where.resolve(channel, store_id)

        def call(rid: str, tag: str) -> Cart:
            return self._client.cart.RemoveItem(
                pb.RemoveItemRequest(
                    request_id=rid,
                    owner=owner,
                    line_id=line_id,
                    channel=where.channel,
                    store_id=where.store_id,
                    etag=tag,
                )
            ).cart

        return self._conflict_retry(
            owner, request_id or new_request_id(), etag, retry_on_conflict, call
        )

    def clear(
        self,
        owner: Owner,
        *,
        etag: str = "",
        request_id: str | None = None,
        channel: Channel | None = None,
        store_id: str | None = None,
    ) -> Cart:
        where = self._where.resolve(channel, store_id)
        return self._client.cart.ClearCart(
            pb.ClearCartRequest(
                request_id=request_id or new_request_id(),
                owner=owner,
                channel=where.channel,
                store_id=where.store_id,
                etag=etag,
            )
        ).cart

    def checkout(
        self,
        owner: Owner,
        *,
        fulfilment: Fulfilment | None = None,
        etag: str = "",
        expected_total: money_pb2.Money | None = None,
        discount_total: money_pb2.Money | None = None,
        tax_total: money_pb2.Money | None = None,
        shipping_total: money_pb2.Money | None = None,
        request_id: str | None = None,
        channel: Channel | None = None,
        store_id: str | None = None,
    ) -> pb.CheckoutResponse:
        return self._client.cart.Checkout(
            _checkout_request(
                owner,
                self._where.resolve(channel, store_id),
                fulfilment,
                etag,
                expected_total,
                discount_total,
                tax_total,
                shipping_total,
                request_id,
            )
        )
