"""Customer messages from cart and inventory events: abandoned-cart reminders and
back-in-stock alerts, with consent, quiet hours, caps, deduplication, cancellation by an
order, preferences and the settings that govern them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from continuum.cart.v1 import cart_events_pb2 as cart_ev
from continuum.cart.v1 import cart_resources_pb2 as cart_res
from continuum.cart.v1 import cart_service_pb2 as cart_pb
from continuum.common.v1 import channel_pb2
from continuum.inventory.v1 import inventory_events_pb2 as inv_ev
from continuum.notification.v1 import notification_resources_pb2 as res
from continuum.notification.v1 import notification_service_pb2 as pb
from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum.profile.v1 import profile_service_pb2 as prof_pb
from continuum_runtime.events import new_envelope
from continuum_runtime.testing import eventually
from tests.notification.conftest import Suite, rid

pytestmark = pytest.mark.asyncio(loop_scope="session")

EMAIL = channel_pb2.CHANNEL_EMAIL
MARKETING = (EMAIL, prof.CONSENT_PURPOSE_MARKETING)
ALERTS = (EMAIL, prof.CONSENT_PURPOSE_PRODUCT_ALERTS)


def ts(at: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(at)
    return out


async def no_default_quiet_hours(suite: Suite) -> None:
    """Tests must not depend on the hour they run at: no quiet hours unless a customer
    sets their own."""
    await suite.notification.UpdateNotificationSettings(
        pb.UpdateNotificationSettingsRequest(
            request_id=rid(),
            settings=res.NotificationSettings(),
            update_mask=field_mask_pb2.FieldMask(paths=["default_quiet_hours"]),
            actor="tests",
        ),
        metadata=suite.metadata,
    )


async def abandon(suite: Suite, cid: str, ago: timedelta) -> cart_ev.CartAbandonedEvent:
    cart = (
        await suite.cart.GetCart(
            cart_pb.GetCartRequest(owner=cart_res.Owner(customer_id=cid)), metadata=suite.metadata
        )
    ).cart
    event = cart_ev.CartAbandonedEvent(
        cart_id=cart.cart_id,
        owner=cart.owner,
        lines=cart.lines,
        abandon_time=ts(datetime.now(UTC) - ago),
    )
    await publish_abandoned(suite, event)
    return event


async def publish_abandoned(suite: Suite, event: cart_ev.CartAbandonedEvent) -> None:
    await suite.publish(
        "cart",
        new_envelope(
            producer="cart",
            event_type="cart.cart_abandoned",
            subject=event.cart_id,
            payload=event,
            customer_id=event.owner.customer_id,
        ),
    )


async def messages(suite: Suite, cid: str) -> list[res.CustomerMessage]:
    answer = await suite.notification.ListMessages(
        pb.ListMessagesRequest(customer_id=cid), metadata=suite.metadata
    )
    return list(answer.messages)


async def settled(suite: Suite, cid: str, count: int = 1) -> list[res.CustomerMessage]:
    """The customer's messages once ``count`` of them are no longer SCHEDULED/SENDING (or
    SCHEDULED with a reason to wait)."""

    async def done() -> bool:
        found = await messages(suite, cid)
        final = [
            m
            for m in found
            if m.status not in (res.MESSAGE_STATUS_SCHEDULED, res.MESSAGE_STATUS_SENDING)
            or m.status_detail
        ]
        return len(final) >= count

    await eventually(done, timeout_s=15)
    return await messages(suite, cid)


def written(suite: Suite) -> list[dict[str, Any]]:
    if not suite.outbox_file.exists():
        return []
    return [json.loads(line) for line in suite.outbox_file.read_text().splitlines()]


async def test_an_abandoned_cart_reminder_is_sent_once_and_caps_hold_the_next(
    suite: Suite,
) -> None:
    await no_default_quiet_hours(suite)
    cid = await suite.new_customer("remind", cart=(("SHOE-38", 1),), consents=(MARKETING,))
    abandoned = await abandon(suite, cid, timedelta(hours=2))
    cart_id = abandoned.cart_id

    [sent] = await settled(suite, cid)
    assert sent.status == res.MESSAGE_STATUS_SENT, sent.status_detail
    assert sent.kind == res.MESSAGE_KIND_ABANDONED_CART_REMINDER
    assert sent.channel == EMAIL
    assert sent.cart_id == cart_id
    assert sent.recipient_masked == "r***@example.com"
    assert sent.sender == "log"
    assert sent.attempt_count == 1
    assert [i.sku for i in sent.items] == ["SHOE-38"]
    assert sent.items[0].available_count > 0
    lines = [w for w in written(suite) if w["message_id"] == sent.message_id]
    assert len(lines) == 1
    assert lines[0]["to"] == "remind@example.com"
    assert [e for e in await suite.events("notification.message_sent") if e.customer_id == cid]

    # The same abandonment delivered again (a new event id) is the same message.
    await publish_abandoned(suite, abandoned)
    assert len(await messages(suite, cid)) == 1
    # A later abandonment is a new message, but the cap (one per day) holds it back.
    await abandon(suite, cid, timedelta(hours=1, minutes=30))
    found = await settled(suite, cid, 2)
    assert len(found) == 2
    held = next(m for m in found if m.message_id != sent.message_id)
    assert held.status == res.MESSAGE_STATUS_SCHEDULED
    assert "cap" in held.status_detail
    assert held.scheduled_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC) + timedelta(hours=12)


async def test_without_consent_the_reminder_is_suppressed_with_its_reason(suite: Suite) -> None:
    await no_default_quiet_hours(suite)
    cid = await suite.new_customer("noconsent", cart=(("SHOE-38", 1),))
    await abandon(suite, cid, timedelta(hours=2))
    [message] = await settled(suite, cid)
    assert message.status == res.MESSAGE_STATUS_SUPPRESSED
    assert message.suppression_reason == res.SUPPRESSION_REASON_NO_CONSENT
    assert message.status_detail
    assert not [w for w in written(suite) if w["message_id"] == message.message_id]


async def test_an_order_placed_cancels_the_pending_reminder(suite: Suite) -> None:
    cid = await suite.new_customer("bought", cart=(("SHOE-38", 1),), consents=(MARKETING,))
    await abandon(suite, cid, timedelta(minutes=1))  # due in about an hour
    [pending] = await messages(suite, cid)
    assert pending.status == res.MESSAGE_STATUS_SCHEDULED
    await suite.publish(
        "cart",
        new_envelope(
            producer="cart",
            event_type="cart.order_placed",
            subject="o-1",
            payload=cart_ev.OrderPlacedEvent(
                order=cart_res.Order(order_id="o-1", owner=cart_res.Owner(customer_id=cid))
            ),
            customer_id=cid,
        ),
    )
    [message] = await messages(suite, cid)
    assert message.status == res.MESSAGE_STATUS_SUPPRESSED
    assert message.suppression_reason == res.SUPPRESSION_REASON_PURCHASED


async def test_quiet_hours_in_the_customers_time_zone_delay_the_send(suite: Suite) -> None:
    await no_default_quiet_hours(suite)
    zone = "Asia/Tokyo"
    cid = await suite.new_customer(
        "quiet", cart=(("SHOE-38", 1),), consents=(MARKETING,), time_zone=zone
    )
    from zoneinfo import ZoneInfo

    local = datetime.now(ZoneInfo(zone))
    start, end = local - timedelta(hours=1), local + timedelta(hours=2)
    await suite.profile.UpdateProfile(
        prof_pb.UpdateProfileRequest(
            request_id=rid(),
            profile=prof.Profile(
                customer_id=cid,
                contact_preferences=prof.ContactPreferences(
                    quiet_hours=prof.QuietHours(
                        start_time=start.strftime("%H:%M"), end_time=end.strftime("%H:%M")
                    )
                ),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["contact_preferences"]),
        ),
        metadata=suite.metadata,
    )
    await abandon(suite, cid, timedelta(hours=2))
    [message] = await settled(suite, cid)
    assert message.status == res.MESSAGE_STATUS_SCHEDULED
    assert "quiet hours" in message.status_detail
    assert zone in message.status_detail
    due = message.scheduled_time.ToDatetime(tzinfo=UTC)
    assert abs((due - end.astimezone(UTC)).total_seconds()) < 61


async def test_back_in_stock_alerts_never_outnumber_the_units(suite: Suite) -> None:
    await no_default_quiet_hours(suite)
    fans = [
        await suite.new_customer(f"fan{n}", wishlist=("SCARF-1",), consents=(ALERTS,))
        for n in range(3)
    ]

    async def watched() -> bool:
        rows = await suite.rows(
            "SELECT count(*) FROM wishlist_watch WHERE sku = 'SCARF-1' AND customer_id = ANY(:c)",
            c=fans,
        )
        return int(rows[0][0]) == 3

    await eventually(watched)
    await suite.publish(
        "inventory",
        new_envelope(
            producer="inventory",
            event_type="inventory.back_in_stock",
            subject="sku:SCARF-1@wh-1",
            payload=inv_ev.BackInStockEvent(
                sku="SCARF-1", location_id="wh-1", available_to_promise=2, name="Wool scarf"
            ),
        ),
    )
    outcome = [(await settled(suite, cid))[0] for cid in fans]
    assert [m.status for m in outcome] == [
        res.MESSAGE_STATUS_SENT,
        res.MESSAGE_STATUS_SENT,
        res.MESSAGE_STATUS_SUPPRESSED,
    ]
    assert outcome[2].suppression_reason == res.SUPPRESSION_REASON_UNITS_EXHAUSTED
    assert outcome[0].subject.startswith("Back in stock")


async def test_preferences_and_settings(suite: Suite) -> None:
    cid = await suite.new_customer("prefs", cart=(("SHOE-38", 1),), consents=(MARKETING,))
    got = await suite.notification.GetCustomerPreferences(
        pb.GetCustomerPreferencesRequest(customer_id=cid), metadata=suite.metadata
    )
    assert got.preferences.revision == 0

    def update(revision: int) -> pb.UpdateCustomerPreferencesRequest:
        return pb.UpdateCustomerPreferencesRequest(
            request_id=rid(),
            preferences=res.CustomerPreferences(
                customer_id=cid, disabled_kinds=[res.MESSAGE_KIND_ABANDONED_CART_REMINDER]
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["disabled_kinds"]),
            expected_revision=revision,
        )

    updated = await suite.notification.UpdateCustomerPreferences(update(0), metadata=suite.metadata)
    assert updated.preferences.revision == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.notification.UpdateCustomerPreferences(update(7), metadata=suite.metadata)
    assert caught.value.code() == grpc.StatusCode.ABORTED

    await no_default_quiet_hours(suite)
    await abandon(suite, cid, timedelta(hours=2))
    [message] = await settled(suite, cid)
    assert message.suppression_reason == res.SUPPRESSION_REASON_KIND_DISABLED

    settings = (
        await suite.notification.GetNotificationSettings(
            pb.GetNotificationSettingsRequest(), metadata=suite.metadata
        )
    ).settings
    assert settings.revision >= 1
    assert settings.message_kinds
    bad_paths = [["revision"], ["no_such_field"]]
    for paths in bad_paths:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await suite.notification.UpdateNotificationSettings(
                pb.UpdateNotificationSettingsRequest(
                    request_id=rid(),
                    settings=settings,
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                    actor="tests",
                ),
                metadata=suite.metadata,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.notification.UpdateNotificationSettings(
            pb.UpdateNotificationSettingsRequest(
                request_id=rid(),
                settings=settings,
                update_mask=field_mask_pb2.FieldMask(paths=["briefing_ttl"]),
                actor="assoc",
            ),
            metadata=suite.associate("assoc", "store-1"),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suite.notification.ListMessages(
            pb.ListMessagesRequest(), metadata=suite.associate("a", "store-1")
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
