"""The unified profile: traits, intent, summary, timeline, contact, consent, forget."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from continuum.common.v1 import channel_pb2, money_pb2
from continuum.profile.v1 import profile_resources_pb2 as res
from continuum.profile.v1 import profile_service_pb2 as pb
from tests.profile.conftest import Stack
from tests.profile.factory import (
    APP,
    STORE,
    at,
    carted,
    derived,
    email,
    event,
    ingest,
    product,
    profile,
    summary,
    timeline,
    viewed,
)


def coat(size: str, colour: str, sku: str = "") -> res.ProductRef:
    return product(
        sku or f"ARIA-{size}-{colour}",
        category="Women > Coats",
        size=size,
        colour=colour,
        brand="Aria",
        price=18_900,
        name="Aria trench coat",
        product_id="ARIA",
    )


def shoe(size: str, colour: str, pid: str) -> res.ProductRef:
    return product(
        f"{pid}-{size}-{colour}",
        category="Women > Shoes",
        size=size,
        colour=colour,
        brand="Stride",
        price=8_900,
        name=pid.title(),
        product_id=pid,
    )


async def test_traits_and_intent_after_a_realistic_session(stack: Stack) -> None:
    ids = [email("ivy@example.com")]
    events = [
        viewed(ids, coat("S", "navy")),
        viewed(ids, coat("M", "navy")),
        viewed(ids, coat("M", "navy")),
        viewed(ids, coat("M", "camel")),
        viewed(ids, shoe("38", "black", "runner")),
        viewed(ids, shoe("38", "black", "trail")),
        viewed(ids, shoe("38", "black", "runner")),
        viewed(ids, shoe("38", "black", "trail")),
        carted(ids, coat("M", "navy")),
        event(ids, wishlist_item_added=res.WishlistItemAdded(product=shoe("38", "black", "trail"))),
        event(
            ids,
            channel=STORE,
            store_id="store-7",
            order_placed=res.OrderPlaced(
                order_id="o-1",
                lines=[res.OrderLine(product=shoe("38", "black", "runner"), quantity=1)],
                total=money_pb2.Money(currency_code="GBP", amount_minor=8_900),
            ),
        ),
    ]
    answer = await ingest(stack, events)
    customer = answer.results[0].customer_id
    p = await derived(stack, customer, len(events))

    sizes = {s.category: s.size.value for s in p.traits.sizes}
    assert sizes == {"Women > Coats": "M", "Women > Shoes": "38"}
    assert [c.value for c in p.traits.colours][:2] == ["black", "navy"]
    assert p.traits.brands[0].value in {"Aria", "Stride"}
    assert p.traits.price_band.tier == res.PRICE_TIER_MID
    assert [s.product.sku for s in p.intent_signals.left_in_cart] == ["ARIA-M-navy"]
    assert [s.product.sku for s in p.intent_signals.wishlisted] == ["trail-38-black"]
    viewed_skus = {s.product.sku for s in p.intent_signals.viewed_repeatedly}
    assert "ARIA-M-navy" in viewed_skus
    compared = {c.category: {x.product_id for x in c.products} for c in p.intent_signals.compared}
    assert compared.get("Women > Shoes") == {"runner", "trail"}
    assert p.purchases.order_count == 1
    assert p.purchases.lifetime_value.amount_minor == 8_900
    assert p.purchases.recent_lines[0].store_id == "store-7"
    assert p.store_affinities[0].store_id == "store-7"
    assert {a.channel for a in p.channel_activity} == {
        channel_pb2.CHANNEL_WEB,
        channel_pb2.CHANNEL_STORE,
    }

    s = await summary(stack, customer, store_id="store-7")
    assert s.customer_id == customer
    assert [x.product.sku for x in s.left_in_cart] == ["ARIA-M-navy"]
    assert s.highlights
    assert "Aria trench coat (M, navy)" in s.highlights[0]
    assert s.order_count == 1
    assert s.preferred_store_id == "store-7"
    assert not s.store_recognition_allowed  # never asked
    # the views went out in one batch envelope, the order on its own
    await _published_types(
        stack, {"profile.events_ingested", "profile.event_ingested", "profile.profile_updated"}
    )


async def test_contact_consent_and_the_summary_greeting(stack: Stack) -> None:
    answer = await ingest(stack, [viewed([email("jo@example.com")], coat("M", "navy"))])
    customer = answer.results[0].customer_id
    await derived(stack, customer, 1)
    update = pb.UpdateProfileRequest(
        request_id="u1",
        profile=res.Profile(
            customer_id=customer,
            contact=res.ContactDetails(
                given_name="Joanna", family_name="Kay", preferred_name="Jo", phone="+447700900123"
            ),
            loyalty_tier="gold",
            time_zone="Europe/London",
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["contact", "loyalty_tier", "time_zone"]),
    )
    updated = (await stack.profile.UpdateProfile(update, metadata=stack.metadata)).profile
    assert updated.contact.preferred_name == "Jo"
    assert updated.loyalty_tier == "gold"
    replay = (await stack.profile.UpdateProfile(update, metadata=stack.metadata)).profile
    assert replay.revision == updated.revision

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.profile.UpdateProfile(
            pb.UpdateProfileRequest(
                request_id="u2",
                profile=res.Profile(customer_id=customer),
                update_mask=field_mask_pb2.FieldMask(paths=["traits"]),
                expected_revision=0,
            ),
            metadata=stack.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.profile.UpdateProfile(
            pb.UpdateProfileRequest(
                request_id="u3",
                profile=res.Profile(customer_id=customer, loyalty_tier="silver"),
                update_mask=field_mask_pb2.FieldMask(paths=["loyalty_tier"]),
                expected_revision=1,
            ),
            metadata=stack.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED

    when = at(60)
    consent = res.Consent(
        channel=channel_pb2.CHANNEL_STORE,
        purpose=res.CONSENT_PURPOSE_STORE_RECOGNITION,
        status=res.CONSENT_STATUS_GRANTED,
        source_channel=APP,
        source="app_privacy_centre",
        consent_time=when,
    )
    email_marketing = res.Consent(
        channel=channel_pb2.CHANNEL_EMAIL,
        purpose=res.CONSENT_PURPOSE_MARKETING,
        status=res.CONSENT_STATUS_DENIED,
        source_channel=channel_pb2.CHANNEL_WEB,
        source="email_unsubscribe",
        consent_time=when,
    )
    stored = await stack.profile.UpdateConsent(
        pb.UpdateConsentRequest(
            request_id="c1", customer_id=customer, consents=[consent, email_marketing]
        ),
        metadata=stack.metadata,
    )
    assert len(stored.consents) == 2
    older = res.Consent()
    older.CopyFrom(consent)
    older.status = res.CONSENT_STATUS_DENIED
    older.consent_time.CopyFrom(at(3600))
    await stack.profile.UpdateConsent(
        pb.UpdateConsentRequest(request_id="c2", customer_id=customer, consents=[older]),
        metadata=stack.metadata,
    )
    check = await stack.profile.CheckConsent(
        pb.CheckConsentRequest(
            customer_id=customer,
            channel=channel_pb2.CHANNEL_STORE,
            purpose=res.CONSENT_PURPOSE_STORE_RECOGNITION,
        ),
        metadata=stack.metadata,
    )
    assert check.granted
    assert check.consent.source == "app_privacy_centre"
    assert check.time_zone == "Europe/London"
    marketing = await stack.profile.CheckConsent(
        pb.CheckConsentRequest(
            customer_id=customer,
            channel=channel_pb2.CHANNEL_EMAIL,
            purpose=res.CONSENT_PURPOSE_MARKETING,
        ),
        metadata=stack.metadata,
    )
    assert not marketing.granted

    s = await summary(stack, customer)
    assert s.display_name == "Jo K."
    assert s.loyalty_tier == "gold"
    assert s.store_recognition_allowed
    assert "+447700900123" not in str(s)

    # the consent changes and the profile update were published (no raw contact data)
    await _published_types(stack, {"profile.consent_changed", "profile.profile_updated"})


async def _published_types(stack: Stack, wanted: set[str]) -> None:
    from continuum.common.v1 import event_pb2
    from continuum_runtime.testing import eventually

    redis = stack.profile_ctx.redis
    key = f"{stack.profile_ctx.settings.redis_namespace}:events:profile"
    seen: set[str] = set()

    async def check() -> bool:
        entries: Any = await redis.xrange(key)
        for _, fields in entries:
            envelope = event_pb2.EventEnvelope.FromString(fields[b"envelope"])
            assert b"+447700900123" not in fields[b"envelope"]
            seen.add(envelope.type)
        return wanted <= seen

    await eventually(check, timeout_s=10)


async def test_timeline_pages_and_filters(stack: Stack) -> None:
    ids = [email("kim@example.com")]
    events = [viewed(ids, coat("M", "navy", sku=f"V{i}"), when=at(100 - i)) for i in range(7)]
    events += [
        carted(ids, coat("M", "navy"), channel=APP, when=at(50)),
        event(ids, channel=STORE, store_id="s1", when=at(40), store_visited=res.StoreVisited()),
    ]
    customer = (await ingest(stack, events)).results[0].customer_id
    seen: list[str] = []
    token = ""
    while True:
        page = await stack.profile.ListEvents(
            pb.ListEventsRequest(customer_id=customer, page_size=4, page_token=token),
            metadata=stack.metadata,
        )
        seen += [e.event_id for e in page.events]
        token = page.next_page_token
        if not token:
            break
    newest_first = [
        e.event_id for e in sorted(events, key=lambda e: e.occur_time.ToNanoseconds(), reverse=True)
    ]
    assert seen == newest_first
    only_app = await timeline(stack, customer_id=customer, channels=[APP])
    assert [e.event_type for e in only_app] == [res.BEHAVIOURAL_EVENT_TYPE_CART_ITEM_ADDED]
    visits = await timeline(
        stack, customer_id=customer, event_types=[res.BEHAVIOURAL_EVENT_TYPE_STORE_VISITED]
    )
    assert [e.store_id for e in visits] == ["s1"]
    assert visits[0].customer_id == customer
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await timeline(stack, customer_id=customer, page_token="garbage!")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_forget_erases_events_profile_and_traits(stack: Stack) -> None:
    ids = [email("lou@example.com")]
    customer = (await ingest(stack, [viewed(ids, coat("M", "navy"))] * 1)).results[0].customer_id
    await derived(stack, customer, 1)
    answer = await stack.profile.ForgetCustomer(
        pb.ForgetCustomerRequest(request_id="f1", customer_id=customer, actor="dpo"),
        metadata=stack.metadata,
    )
    assert answer.erased_event_count == 1
    assert await timeline(stack, customer_id=customer) == []
    for call in (profile(stack, customer), summary(stack, customer)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    await _published_types(stack, {"profile.customer_forgotten", "profile.events_ingested"})


async def test_bad_requests_get_field_violations(stack: Stack) -> None:
    cases: list[Any] = [
        stack.profile.GetProfileSummary(pb.GetProfileSummaryRequest(), metadata=stack.metadata),
        stack.profile.ListEvents(
            pb.ListEventsRequest(page_size=5000, customer_id="c"), metadata=stack.metadata
        ),
        stack.profile.GetProfile(
            pb.GetProfileRequest(
                customer_id="c", read_mask=field_mask_pb2.FieldMask(paths=["nope"])
            ),
            metadata=stack.metadata,
        ),
        stack.profile.UpdateConsent(
            pb.UpdateConsentRequest(request_id="x", customer_id="c", consents=[res.Consent()]),
            metadata=stack.metadata,
        ),
    ]
    for call in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        trailing: Any = caught.value.trailing_metadata() or ()
        assert "grpc-status-details-bin" in dict(trailing)
