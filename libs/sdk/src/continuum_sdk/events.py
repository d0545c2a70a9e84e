"""Builders for the behavioural events channels send to the profile service.

An :class:`EventBuilder` holds what every event of a visit shares (who, which channel,
the session, the sending app) and makes complete ``BehaviouralEvent`` messages with a
fresh ``event_id`` (a UUID, the deduplication key) and ``occur_time`` (now, unless given)::

    events = EventBuilder([device("app-42")], channel=CHANNEL_APP, session_id="s-1")
    view = events.product_viewed("SHOE-39", size="39", colour="black", referrer="search")
    add = events.cart_item_added("SHOE-39", quantity=1, cart_id=cart.cart_id)

Send them with a tracker (:mod:`continuum_sdk.tracking`). The profile derives sizes,
colours, categories and brands from the product attributes given, so send what you have.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

from google.protobuf import duration_pb2, timestamp_pb2

from continuum.common.v1 import channel_pb2, money_pb2
from continuum.common.v1.identifier_pb2 import Identifier
from continuum.profile.v1 import profile_resources_pb2 as res
from continuum.profile.v1.profile_resources_pb2 import BehaviouralEvent, ProductRef

__all__ = ["BehaviouralEvent", "EventBuilder", "ProductRef", "money", "product"]

Channel: TypeAlias = channel_pb2.Channel.ValueType


def money(amount_minor: int, currency_code: str) -> money_pb2.Money:
    """An amount in minor units (cents), e.g. ``money(8900, "EUR")`` for EUR 89.00."""
    return money_pb2.Money(currency_code=currency_code, amount_minor=amount_minor)


def product(
    sku: str,
    *,
    product_id: str = "",
    name: str = "",
    category: str = "",
    brand: str = "",
    size: str = "",
    colour: str = "",
    unit_price: money_pb2.Money | None = None,
) -> ProductRef:
    """A product as the shopper saw it: the SKU (required) and its attributes."""
    if not sku:
        raise ValueError("a product needs its sku")
    return ProductRef(
        sku=sku,
        product_id=product_id,
        name=name,
        category=category,
        brand=brand,
        size=size,
        colour=colour,
        unit_price=unit_price,
    )


def _timestamp(when: datetime | None) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if when is None:
        ts.GetCurrentTime()
    else:
        if when.tzinfo is None:
            raise ValueError("occur_time must be timezone-aware")
        ts.FromDatetime(when.astimezone(UTC))
    return ts


def _duration(seconds: float | timedelta | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    out = duration_pb2.Duration()
    out.FromTimedelta(seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds))
    return out


def _product(ref: ProductRef | str, size: str, colour: str) -> ProductRef:
    out = ProductRef()
    if isinstance(ref, str):
        out.sku = ref
    else:
        out.CopyFrom(ref)
    if size:
        out.size = size
    if colour:
        out.colour = colour
    return out


@dataclass
class EventBuilder:
    """Makes events for one shopper (or device) in one channel.

    ``identifiers`` are every identifier the events were seen with (at least one; a device
    id for an anonymous shopper). ``store_id`` is set on every event when given (in-store
    channels); ``session_id`` groups a visit; ``source`` names the sending app, e.g.
    ``"web/4.2.1"``.
    """

    identifiers: Iterable[Identifier]
    channel: Channel = channel_pb2.CHANNEL_WEB
    session_id: str = ""
    source: str = ""
    store_id: str = ""
    _ids: list[Identifier] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._ids = list(self.identifiers)
        if not self._ids:
            raise ValueError("events need at least one identifier")

    def event(
        self,
        *,
        occur_time: datetime | None = None,
        event_id: str | None = None,
        store_id: str | None = None,
    ) -> BehaviouralEvent:
        """An event with the shared fields set and no payload yet (set one of its payload
        fields, e.g. ``event.order_placed.CopyFrom(...)``, for kinds without a builder)."""
        return BehaviouralEvent(
            event_id=event_id or str(uuid.uuid4()),
            channel=self.channel,
            occur_time=_timestamp(occur_time),
            identifiers=self._ids,
            store_id=self.store_id if store_id is None else store_id,
            session_id=self.session_id,
            source=self.source,
        )

    def product_viewed(
        self,
        item: ProductRef | str,
        *,
        size: str = "",
        colour: str = "",
        referrer: str = "",
        dwell_s: float | timedelta | None = None,
        occur_time: datetime | None = None,
        event_id: str | None = None,
    ) -> BehaviouralEvent:
        """A product page view; ``size`` and ``colour`` are the variant looked at."""
        out = self.event(occur_time=occur_time, event_id=event_id)
        out.product_viewed.CopyFrom(
            res.ProductViewed(
                product=_product(item, size, colour),
                dwell_duration=_duration(dwell_s),
                referrer=referrer,
            )
        )
        return out

    def search_performed(
        self,
        query: str,
        *,
        category: str = "",
        result_count: int = 0,
        result_skus: Iterable[str] = (),
        occur_time: datetime | None = None,
        event_id: str | None = None,
    ) -> BehaviouralEvent:
        """A search, with the first results shown (at most 50 SKUs)."""
        out = self.event(occur_time=occur_time, event_id=event_id)
        out.search_performed.CopyFrom(
            res.SearchPerformed(
                query=query,
                category=category,
                result_count=result_count,
                result_skus=list(result_skus),
            )
        )
        return out

    def recommendation_clicked(
        self,
        item: ProductRef | str,
        *,
        recommendation_id: str = "",
        placement: str = "",
        position: int = 0,
        occur_time: datetime | None = None,
        event_id: str | None = None,
    ) -> BehaviouralEvent:
        """A click on a recommended product (the recommendation answer's id, where it was
        shown and its zero-based position)."""
        out = self.event(occur_time=occur_time, event_id=event_id)
        out.recommendation_clicked.CopyFrom(
            res.RecommendationClicked(
                product=_product(item, "", ""),
                recommendation_id=recommendation_id,
                placement=placement,
                position=position,
            )
        )
        return out

    def cart_item_added(
        self,
        item: ProductRef | str,
        *,
        quantity: int = 1,
        cart_id: str = "",
        size: str = "",
        colour: str = "",
        occur_time: datetime | None = None,
        event_id: str | None = None,
    ) -> BehaviouralEvent:
        """Units of a product put into a cart."""
        out = self.event(occur_time=occur_time, event_id=event_id)
        out.cart_item_added.CopyFrom(
            res.CartItemAdded(
                cart_id=cart_id, product=_product(item, size, colour), quantity=quantity
            )
        )
        return out

    def cart_item_removed(
        self,
        item: ProductRef | str,
        *,
        quantity: int = 1,
        cart_id: str = "",
        occur_time: datetime | None = None,
        event_id: str | None = None,
    ) -> BehaviouralEvent:
        """Units of a product taken out of a cart."""
        out = self.event(occur_time=occur_time, event_id=event_id)
        out.cart_item_removed.CopyFrom(
            res.CartItemRemoved(cart_id=cart_id, product=_product(item, "", ""), quantity=quantity)
        )
        return out

    def wishlist_item_added(
        self,
        item: ProductRef | str,
        *,
        wishlist_id: str = "",
        size: str = "",
        colour: str = "",
        occur_time: datetime | None = None,
        event_id: str | None = None,
    ) -> BehaviouralEvent:
        """A product saved to a wishlist."""
        out = self.event(occur_time=occur_time, event_id=event_id)
        out.wishlist_item_added.CopyFrom(
            res.WishlistItemAdded(wishlist_id=wishlist_id, product=_product(item, size, colour))
        )
        return out

    def store_visited(
        self,
        store_id: str,
        *,
        source: res.VisitSource.ValueType = res.VISIT_SOURCE_UNSPECIFIED,
        duration_s: float | timedelta | None = None,
        occur_time: datetime | None = None,
        event_id: str | None = None,
    ) -> BehaviouralEvent:
        """A visit to a physical store (how it was detected, and how long, if known)."""
        if not store_id:
            raise ValueError("a store visit needs its store_id")
        out = self.event(occur_time=occur_time, event_id=event_id, store_id=store_id)
        out.store_visited.CopyFrom(res.StoreVisited(source=source, duration=_duration(duration_s)))
        return out

    def email_opened(
        self,
        message_id: str,
        *,
        campaign_id: str = "",
        occur_time: datetime | None = None,
        event_id: str | None = None,
    ) -> BehaviouralEvent:
        """An email opened (its message id and campaign)."""
        out = self.event(occur_time=occur_time, event_id=event_id)
        out.email_opened.CopyFrom(res.EmailOpened(campaign_id=campaign_id, message_id=message_id))
        return out
