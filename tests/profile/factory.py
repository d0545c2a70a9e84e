"""Building behavioural events and calling the stack, for the profile tests."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from continuum.common.v1 import channel_pb2, money_pb2
from continuum.common.v1 import identifier_pb2 as idpb
from continuum.profile.v1 import profile_resources_pb2 as res
from continuum.profile.v1 import profile_service_pb2 as pb
from continuum_runtime.testing import eventually
from tests.profile.conftest import Stack

T = idpb.IdentifierType
WEB = channel_pb2.CHANNEL_WEB
APP = channel_pb2.CHANNEL_APP
STORE = channel_pb2.CHANNEL_STORE
_clock = itertools.count()


def email(value: str) -> idpb.Identifier:
    return idpb.Identifier(type=T.IDENTIFIER_TYPE_EMAIL, value=value)


def device(value: str) -> idpb.Identifier:
    return idpb.Identifier(type=T.IDENTIFIER_TYPE_DEVICE_ID, value=value)


def account(value: str) -> idpb.Identifier:
    return idpb.Identifier(type=T.IDENTIFIER_TYPE_ACCOUNT_ID, value=value)


def at(seconds_ago: float = 0.0) -> Timestamp:
    """A distinct time ``seconds_ago`` (events of one test keep their order)."""
    out = Timestamp()
    out.FromNanoseconds(int((time.time() - seconds_ago) * 1e9) + next(_clock) * 1000)
    return out


def product(
    sku: str,
    category: str = "Women > Shoes",
    size: str = "",
    colour: str = "",
    brand: str = "",
    price: int = 0,
    name: str = "",
    product_id: str = "",
) -> res.ProductRef:
    ref = res.ProductRef(
        sku=sku,
        product_id=product_id,
        name=name or sku,
        category=category,
        size=size,
        colour=colour,
        brand=brand,
    )
    if price:
        ref.unit_price.CopyFrom(money_pb2.Money(currency_code="GBP", amount_minor=price))
    return ref


def event(
    identifiers: Sequence[idpb.Identifier],
    *,
    event_id: str | None = None,
    channel: int = WEB,
    when: Timestamp | None = None,
    store_id: str = "",
    **payload: Any,
) -> res.BehaviouralEvent:
    out = res.BehaviouralEvent(
        event_id=event_id or uuid.uuid4().hex,
        channel=channel,  # type: ignore[arg-type]
        identifiers=identifiers,
        store_id=store_id,
    )
    out.occur_time.CopyFrom(when or at())
    for name, value in payload.items():
        getattr(out, name).CopyFrom(value)
    return out


def viewed(ids: Sequence[idpb.Identifier], ref: res.ProductRef, **kw: Any) -> res.BehaviouralEvent:
    return event(ids, product_viewed=res.ProductViewed(product=ref), **kw)


def carted(ids: Sequence[idpb.Identifier], ref: res.ProductRef, **kw: Any) -> res.BehaviouralEvent:
    return event(
        ids, cart_item_added=res.CartItemAdded(cart_id="cart-1", product=ref, quantity=1), **kw
    )


async def ingest(stack: Stack, events: Sequence[res.BehaviouralEvent]) -> pb.IngestEventsResponse:
    answer: pb.IngestEventsResponse = await stack.profile.IngestEvents(
        pb.IngestEventsRequest(events=events), metadata=stack.metadata
    )
    return answer


async def summary(stack: Stack, customer_id: str, store_id: str = "") -> res.ProfileSummary:
    answer = await stack.profile.GetProfileSummary(
        pb.GetProfileSummaryRequest(customer_id=customer_id, store_id=store_id),
        metadata=stack.metadata,
    )
    return answer.summary


async def profile(stack: Stack, customer_id: str) -> res.Profile:
    answer = await stack.profile.GetProfile(
        pb.GetProfileRequest(customer_id=customer_id), metadata=stack.metadata
    )
    return answer.profile


async def timeline(stack: Stack, **kw: Any) -> list[res.BehaviouralEvent]:
    answer = await stack.profile.ListEvents(pb.ListEventsRequest(**kw), metadata=stack.metadata)
    return list(answer.events)


async def derived(stack: Stack, customer_id: str, events: int) -> res.Profile:
    """The profile once the deriver has folded in ``events`` events."""
    found: list[res.Profile] = []

    async def check() -> bool:
        try:
            p = await profile(stack, customer_id)
        except Exception:
            return False
        total = sum(a.event_count for a in p.channel_activity)
        found[:] = [p]
        return total >= events

    await eventually(check, timeout_s=15)
    return found[0]
