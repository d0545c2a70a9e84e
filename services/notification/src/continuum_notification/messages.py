"""Customer messages: abandoned-cart reminders and back-in-stock alerts.

Life of a message: a trigger event (cart.cart_abandoned, inventory.back_in_stock) creates
it SCHEDULED under a deduplication key (a unique column: the same message is never
created twice, whatever the redeliveries). The sender loop takes due messages one at a
time (row lock, SKIP LOCKED, an advisory lock per customer so caps hold across replicas)
and checks, at send time, in this order: expiry, policy, the customer's preferences, the
trigger still holds (reminder: no purchase since, items still in the cart and available;
alert: still wishlisted and still in stock), consent per channel and purpose with a
contact address, quiet hours in the customer's time zone, frequency caps per channel and
overall. A failed check suppresses the message with its reason, or reschedules it when
the condition will pass before expiry (quiet hours, caps, snooze, a dependency down). A
message passing every check is marked SENDING in its own commit before the sender is
called, so it is never sent twice: a crash mid-send leaves it SENDING, visible, not
retried. Sender errors retry with exponential backoff and jitter up to the retry policy's
attempts, then FAILED. An order placed suppresses the customer's scheduled reminders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import field_mask_pb2
from opentelemetry import trace
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.cart.v1 import cart_events_pb2 as cart_ev
from continuum.cart.v1 import cart_resources_pb2 as cart_res
from continuum.cart.v1 import cart_service_pb2 as cart_pb
from continuum.common.v1 import channel_pb2, event_pb2
from continuum.inventory.v1 import inventory_events_pb2 as inv_ev
from continuum.inventory.v1 import inventory_resources_pb2 as inv_res
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.notification.v1 import notification_events_pb2 as ev
from continuum.notification.v1 import notification_resources_pb2 as res
from continuum.notification.v1 import notification_service_pb2 as pb
from continuum.profile.v1 import profile_resources_pb2 as prof_res
from continuum.profile.v1 import profile_service_pb2 as prof_pb
from continuum_notification import policy, store
from continuum_notification.checkins import PRODUCER, stamp, time_range, utcnow
from continuum_notification.dependencies import Dependencies
from continuum_notification.senders import Outgoing, Sender
from continuum_notification.settings_cache import PolicyCache
from continuum_runtime import idempotency
from continuum_runtime.auth import Principal, PrincipalKind, current_principal
from continuum_runtime.db import Database
from continuum_runtime.errors import (
    Aborted,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from continuum_runtime.events import add_event
from continuum_runtime.tasks import raise_if_cancelling
from continuum_runtime.telemetry import fresh_context, links_to

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("continuum_notification.messages")

PURPOSE = {
    res.MESSAGE_KIND_ABANDONED_CART_REMINDER: prof_res.CONSENT_PURPOSE_MARKETING,
    res.MESSAGE_KIND_BACK_IN_STOCK_ALERT: prof_res.CONSENT_PURPOSE_PRODUCT_ALERTS,
}
CAMPAIGN = {
    res.MESSAGE_KIND_ABANDONED_CART_REMINDER: "abandoned_cart_reminder",
    res.MESSAGE_KIND_BACK_IN_STOCK_ALERT: "back_in_stock_alert",
}
TRIGGER = {
    res.MESSAGE_KIND_ABANDONED_CART_REMINDER: "cart.cart_abandoned",
    res.MESSAGE_KIND_BACK_IN_STOCK_ALERT: "inventory.back_in_stock",
}
PREFERENCE_PATHS = {"disabled_kinds", "preferred_channels", "frequency_caps", "snooze_until_time"}
SETTINGS_OUTPUT_ONLY = {"revision", "update_time"}
DEPENDENCY_RETRY_S = 60.0
OPERATOR_SCOPE = "notification.admin"


def is_operator(principal: Principal) -> bool:
    return principal.kind is PrincipalKind.SERVICE or OPERATOR_SCOPE in principal.scopes


def require_operator(what: str) -> None:
    if not is_operator(current_principal()):
        raise PermissionDenied(f"{what} is for operators only", reason="OPERATOR_ONLY")


def _dt(ts: Any) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def _message_item(sku: str, snapshot: Any, unit_price: Any, quantity: int) -> res.MessageItem:
    item = res.MessageItem(
        sku=sku,
        product_id=snapshot.product_id,
        name=snapshot.name,
        size=snapshot.size,
        colour=snapshot.colour,
        image_url=snapshot.image_url,
        quantity=quantity,
    )
    if unit_price is not None and unit_price.currency_code:
        item.unit_price.CopyFrom(unit_price)
    return item


@dataclass
class Decision:
    """What to do with a due message."""

    action: str  # "send", "suppress", "reschedule"
    reason: int = 0
    detail: str = ""
    when: datetime | None = None
    channel: int = 0
    recipient: str = ""
    masked: str = ""
    # The customer's time zone and quiet hours, as profile gave them with the consent.
    time_zone: str = ""
    quiet: res.QuietHours | None = None


def suppress(reason: int, detail: str, channel: int = 0) -> Decision:
    return Decision("suppress", reason=reason, detail=detail, channel=channel)


class Messages:
    """Triggers, the sender loop, and the message, preference and settings RPCs."""

    def __init__(
        self,
        db: Database,
        deps: Dependencies,
        policy_cache: PolicyCache,
        sender: Sender,
        *,
        interval_s: float = 1.0,
        batch_size: int = 50,
    ) -> None:
        self.db = db
        self.deps = deps
        self.policy = policy_cache
        self.sender = sender
        self.interval_s = interval_s
        self.batch_size = batch_size

    # --- triggers (event handlers, in the consumer's transaction) ---------------------------

    async def _create(
        self,
        session: AsyncSession,
        message: res.CustomerMessage,
        kind_policy: res.MessageKindPolicy | None,
        trigger_time: datetime,
    ) -> None:
        now = utcnow()
        message.message_id = str(uuid.uuid4())
        message.campaign_id = CAMPAIGN[message.kind]
        message.trigger_event_type = TRIGGER[message.kind]
        message.create_time.CopyFrom(stamp(now))
        message.update_time.CopyFrom(stamp(now))
        if kind_policy is None or not kind_policy.enabled:
            message.status = res.MESSAGE_STATUS_SUPPRESSED
            message.suppression_reason = res.SUPPRESSION_REASON_POLICY_DISABLED
            message.status_detail = "message kind disabled in the notification settings"
            message.scheduled_time.CopyFrom(stamp(now))
            message.close_time.CopyFrom(stamp(now))
            message.expire_time.CopyFrom(stamp(now))
        else:
            due = max(trigger_time + timedelta(seconds=policy.seconds(kind_policy.delay)), now)
            message.template_id = kind_policy.template_id
            message.status = message.status or res.MESSAGE_STATUS_SCHEDULED
            message.scheduled_time.CopyFrom(stamp(due))
            message.expire_time.CopyFrom(
                stamp(trigger_time + timedelta(seconds=policy.seconds(kind_policy.expire_after)))
            )
            if message.status == res.MESSAGE_STATUS_SUPPRESSED:
                message.close_time.CopyFrom(stamp(now))
        created = await store.insert_message(session, message)
        if created and message.status == res.MESSAGE_STATUS_SUPPRESSED:
            await self._suppressed_event(session, message)

    async def on_cart_abandoned(
        self, session: AsyncSession, envelope: event_pb2.EventEnvelope, event: Any
    ) -> None:
        assert isinstance(event, cart_ev.CartAbandonedEvent)
        if not event.owner.customer_id or not event.lines:
            return  # a guest cart: nobody to write to
        settings = await self.policy.get()
        abandon = _dt(event.abandon_time) if event.HasField("abandon_time") else _dt(envelope.time)
        message = res.CustomerMessage(
            customer_id=event.owner.customer_id,
            kind=res.MESSAGE_KIND_ABANDONED_CART_REMINDER,
            cart_id=event.cart_id,
            trigger_event_id=envelope.id,
            dedup_key=f"abandoned_cart:{event.cart_id}:{int(abandon.timestamp())}",
            items=[
                _message_item(line.sku, line.product, line.unit_price, line.quantity)
                for line in event.lines
            ],
        )
        await self._create(session, message, policy.kind_policy(settings, message.kind), abandon)

    async def on_order_placed(
        self, session: AsyncSession, envelope: event_pb2.EventEnvelope, event: Any
    ) -> None:
        assert isinstance(event, cart_ev.OrderPlacedEvent)
        customer_id = event.order.owner.customer_id
        if not customer_id:
            return
        for message in await store.scheduled_reminders(session, customer_id):
            self._close(
                message,
                res.MESSAGE_STATUS_SUPPRESSED,
                res.SUPPRESSION_REASON_PURCHASED,
                f"order {event.order.order_id} placed",
            )
            await store.update_message(session, message)
            await self._suppressed_event(session, message)

    async def on_wishlist_item_added(
        self, session: AsyncSession, envelope: event_pb2.EventEnvelope, event: Any
    ) -> None:
        assert isinstance(event, cart_ev.WishlistItemAddedEvent)
        if event.owner.customer_id and event.item.sku:
            added = _dt(event.item.add_time) if event.item.HasField("add_time") else utcnow()
            await store.watch(session, event.owner.customer_id, event.item.sku, added)

    async def on_back_in_stock(
        self, session: AsyncSession, envelope: event_pb2.EventEnvelope, event: Any
    ) -> None:
        """Alerts for the customers who wishlisted the SKU, earliest first: as many are
        released (SCHEDULED) as units are available; the rest are suppressed
        (UNITS_EXHAUSTED). One alert per customer, SKU and day."""
        assert isinstance(event, inv_ev.BackInStockEvent)
        settings = await self.policy.get()
        kind_policy = policy.kind_policy(settings, res.MESSAGE_KIND_BACK_IN_STOCK_ALERT)
        detected = _dt(event.detect_time) if event.HasField("detect_time") else _dt(envelope.time)
        units = max(0, event.available_to_promise)
        for index, customer_id in enumerate(await store.watchers(session, event.sku)):
            message = res.CustomerMessage(
                customer_id=customer_id,
                kind=res.MESSAGE_KIND_BACK_IN_STOCK_ALERT,
                store_id=event.location_id,
                trigger_event_id=envelope.id,
                dedup_key=f"back_in_stock:{customer_id}:{event.sku}:{detected.date().isoformat()}",
                items=[
                    res.MessageItem(
                        sku=event.sku,
                        product_id=event.product_id,
                        name=event.name,
                        available_count=event.available_to_promise,
                    )
                ],
            )
            if index >= units:
                message.status = res.MESSAGE_STATUS_SUPPRESSED
                message.suppression_reason = res.SUPPRESSION_REASON_UNITS_EXHAUSTED
                message.status_detail = f"{units} units, {index} alerts already released"
            await self._create(session, message, kind_policy, detected)

    # --- the sender loop ------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                handled = await self.send_due()
            except Exception:
                raise_if_cancelling()
                log.exception("message sender pass failed")
                handled = 0
            if handled < self.batch_size:
                await asyncio.sleep(self.interval_s)

    async def send_due(self) -> int:
        """Handle up to ``batch_size`` due messages; how many were handled."""
        handled = 0
        while handled < self.batch_size:
            if not await self._one():
                break
            handled += 1
        return handled

    async def _one(self) -> bool:
        settings = await self.policy.get()
        with contextlib.ExitStack() as traced:
            async with self.db.transaction() as session:
                due = await store.due_messages(session, utcnow(), 1)
                if not due:
                    return False
                message, traceparent = due[0]
                # Handling a due message is a trace of its own (the sender's loop is quiet),
                # linked to the trace of the trigger that created the message.
                traced.enter_context(fresh_context())
                traced.enter_context(
                    _tracer.start_as_current_span(
                        "notification.send_message",
                        links=links_to({"traceparent": traceparent}),
                        attributes={"continuum.message.id": message.message_id},
                    )
                )
                await session.execute(
                    text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 13))"),
                    {"k": message.customer_id},
                )
                decision = await self._decide(session, message, settings)
                now = utcnow()
                message.update_time.CopyFrom(stamp(now))
                if decision.action == "suppress":
                    if decision.channel:
                        message.channel = decision.channel  # type: ignore[assignment]
                    self._close(
                        message, res.MESSAGE_STATUS_SUPPRESSED, decision.reason, decision.detail
                    )
                    await store.update_message(session, message)
                    await self._suppressed_event(session, message)
                    return True
                if decision.action == "reschedule":
                    assert decision.when is not None
                    message.status_detail = decision.detail
                    message.scheduled_time.CopyFrom(stamp(decision.when))
                    message.next_attempt_time.CopyFrom(stamp(decision.when))
                    await store.update_message(session, message)
                    return True
                message.status = res.MESSAGE_STATUS_SENDING
                message.channel = decision.channel  # type: ignore[assignment]
                message.recipient_masked = decision.masked
                message.sender = self.sender.name
                message.attempt_count += 1
                message.send_time.CopyFrom(stamp(now))
                message.subject, body = render(message)
                await store.update_message(session, message)
            # Committed as SENDING: from here on the message is never picked up again.
            try:
                provider_id = await self.sender.send(
                    Outgoing(
                        message_id=message.message_id,
                        channel=message.channel,
                        recipient=decision.recipient,
                        subject=message.subject,
                        body=body,
                        campaign_id=message.campaign_id,
                    )
                )
            except Exception as exc:
                raise_if_cancelling()
                await self._failed_attempt(message, settings, f"{type(exc).__name__}: {exc}"[:500])
                return True
            async with self.db.transaction() as session:
                message.status = res.MESSAGE_STATUS_SENT
                message.provider_message_id = provider_id
                message.update_time.GetCurrentTime()
                message.ClearField("next_attempt_time")
                await store.update_message(session, message)
                await add_event(
                    session,
                    producer=PRODUCER,
                    event_type="notification.message_sent",
                    subject=message.customer_id,
                    customer_id=message.customer_id,
                    payload=ev.MessageSentEvent(
                        message_id=message.message_id,
                        customer_id=message.customer_id,
                        kind=message.kind,
                        channel=message.channel,
                        skus=[i.sku for i in message.items],
                        cart_id=message.cart_id,
                        store_id=message.store_id,
                        campaign_id=message.campaign_id,
                        template_id=message.template_id,
                        sender=message.sender,
                        attempt_count=message.attempt_count,
                        trigger_event_id=message.trigger_event_id,
                        recommendation_id=message.recommendation_id,
                        send_time=message.send_time,
                    ),
                )
            return True

    async def _failed_attempt(
        self, message: res.CustomerMessage, settings: res.NotificationSettings, error: str
    ) -> None:
        # The sender refused: the message was not delivered, so trying again cannot send
        # it twice. SMTP servers that accept and then error are the exception (logged).
        now = utcnow()
        message.last_error = error
        message.update_time.CopyFrom(stamp(now))
        message.ClearField("send_time")
        retry = settings.retry_policy
        expired = now >= _dt(message.expire_time)
        async with self.db.transaction() as session:
            if message.attempt_count >= max(1, retry.max_attempts) or expired:
                message.status = res.MESSAGE_STATUS_FAILED
                message.close_time.CopyFrom(stamp(now))
                message.status_detail = "not sent after all retries"
                await store.update_message(session, message)
                await add_event(
                    session,
                    producer=PRODUCER,
                    event_type="notification.message_failed",
                    subject=message.customer_id,
                    customer_id=message.customer_id,
                    payload=ev.MessageFailedEvent(
                        message_id=message.message_id,
                        customer_id=message.customer_id,
                        kind=message.kind,
                        channel=message.channel,
                        sender=message.sender,
                        attempt_count=message.attempt_count,
                        last_error=error,
                        fail_time=stamp(now),
                    ),
                )
                return
            delay = policy.backoff(retry, message.attempt_count)
            message.status = res.MESSAGE_STATUS_SCHEDULED
            message.next_attempt_time.CopyFrom(stamp(now + timedelta(seconds=delay)))
            message.status_detail = f"retry {message.attempt_count + 1} in {delay:.0f}s"
            await store.update_message(session, message)

    async def _decide(
        self,
        session: AsyncSession,
        message: res.CustomerMessage,
        settings: res.NotificationSettings,
    ) -> Decision:
        now = utcnow()
        expire = _dt(message.expire_time)
        if now >= expire:
            return suppress(res.SUPPRESSION_REASON_EXPIRED, "not sent before its expiry")

        def later(when: datetime, reason: int, detail: str) -> Decision:
            if when < expire:
                return Decision("reschedule", detail=detail, when=when)
            return suppress(reason, detail)

        kind_policy = policy.kind_policy(settings, message.kind)
        if kind_policy is None or not kind_policy.enabled:
            return suppress(res.SUPPRESSION_REASON_POLICY_DISABLED, "kind disabled by policy")
        prefs = await store.get_preferences(session, message.customer_id)
        if prefs is not None and message.kind in prefs.disabled_kinds:
            return suppress(res.SUPPRESSION_REASON_KIND_DISABLED, "turned off by the customer")
        if (
            prefs is not None
            and message.kind == res.MESSAGE_KIND_ABANDONED_CART_REMINDER
            and prefs.HasField("snooze_until_time")
            and _dt(prefs.snooze_until_time) > now
        ):
            return later(
                _dt(prefs.snooze_until_time),
                res.SUPPRESSION_REASON_KIND_DISABLED,
                "marketing snoozed by the customer",
            )
        retry_at = now + timedelta(seconds=DEPENDENCY_RETRY_S)
        try:
            trigger = await self._trigger_holds(message)
        except grpc.aio.AioRpcError as exc:
            return later(retry_at, res.SUPPRESSION_REASON_EXPIRED, f"re-check: {exc.code().name}")
        if trigger is not None:
            return trigger
        try:
            choice = await self._channel(message, kind_policy, prefs)
        except grpc.aio.AioRpcError as exc:
            return later(retry_at, res.SUPPRESSION_REASON_EXPIRED, f"consent: {exc.code().name}")
        if choice.action != "send":
            return choice
        tz = policy.zone(choice.time_zone, settings.default_time_zone)
        quiet_hours = choice.quiet if choice.quiet is not None else settings.default_quiet_hours
        ends = policy.quiet_until(now, quiet_hours, tz)
        if ends is not None:
            detail = f"quiet hours {quiet_hours.start_time}-{quiet_hours.end_time} {tz.key}"
            return later(ends, res.SUPPRESSION_REASON_QUIET_HOURS, detail)
        caps = list(settings.frequency_caps) + (list(prefs.frequency_caps) if prefs else [])
        longest = max((policy.seconds(c.period) for c in caps), default=0.0)
        history = await store.sent_history(
            session, message.customer_id, now - timedelta(seconds=longest)
        )
        blocked = policy.blocking_cap(now, caps, message.kind, choice.channel, history)
        if blocked is not None:
            decision = later(
                blocked.free_at,
                res.SUPPRESSION_REASON_FREQUENCY_CAP,
                policy.describe_cap(blocked.cap),
            )
            decision.channel = choice.channel
            return decision
        return choice

    async def _trigger_holds(self, message: res.CustomerMessage) -> Decision | None:
        """None when the reason for the message still holds, else the suppression."""
        skus = [i.sku for i in message.items]
        if message.kind == res.MESSAGE_KIND_ABANDONED_CART_REMINDER:
            cart = (
                await self.deps.cart.GetCart(
                    cart_pb.GetCartRequest(cart_id=message.cart_id), timeout=3.0
                )
            ).cart
            if cart.state == cart_res.CART_STATE_MERGED or not cart.lines:
                return suppress(
                    res.SUPPRESSION_REASON_PURCHASED, "the cart was checked out or emptied"
                )
            remaining = [line for line in cart.lines if line.sku in skus]
            if not remaining:
                return suppress(res.SUPPRESSION_REASON_ITEM_REMOVED, "the items left the cart")
            answer = await self.deps.inventory.GetShipToHomeAvailability(
                inv_pb.GetShipToHomeAvailabilityRequest(
                    lines=[
                        inv_pb.SkuQuantity(sku=line.sku, quantity=line.quantity)
                        for line in remaining
                    ]
                ),
                timeout=3.0,
            )
            available = {
                a.sku: a.available_to_promise for a in answer.items if a.available_to_promise > 0
            }
            if not available:
                return suppress(res.SUPPRESSION_REASON_OUT_OF_STOCK, "no item available any more")
            del message.items[:]
            message.items.extend(
                _message_item(line.sku, line.product, line.unit_price, line.quantity)
                for line in remaining
                if line.sku in available
            )
            for item in message.items:
                item.available_count = available[item.sku]
            return None
        wishlist = (
            await self.deps.cart.GetWishlist(
                cart_pb.GetWishlistRequest(owner=cart_res.Owner(customer_id=message.customer_id)),
                timeout=3.0,
            )
        ).wishlist
        if not any(i.sku in skus for i in wishlist.items):
            return suppress(res.SUPPRESSION_REASON_ITEM_REMOVED, "no longer on the wishlist")
        if message.store_id:
            here = await self.deps.inventory.CheckAvailability(
                inv_pb.CheckAvailabilityRequest(location_id=message.store_id, skus=skus),
                timeout=3.0,
            )
            if not any(
                a.available_to_promise > 0 and a.status != inv_res.AVAILABILITY_STATUS_NOT_STOCKED
                for a in here.availabilities
            ):
                return suppress(res.SUPPRESSION_REASON_OUT_OF_STOCK, "sold out again")
        return None

    async def _channel(
        self,
        message: res.CustomerMessage,
        kind_policy: res.MessageKindPolicy,
        prefs: res.CustomerPreferences | None,
    ) -> Decision:
        """The first channel with consent for the purpose and an address."""
        channels = list(kind_policy.channels)
        if prefs is not None and prefs.preferred_channels:
            preferred = [c for c in prefs.preferred_channels if c in channels]
            channels = preferred + [c for c in channels if c not in preferred]
        purpose = PURPOSE[message.kind]
        contact: prof_res.ContactDetails | None = None
        consented = False
        for channel in channels:
            answer = await self.deps.profile.CheckConsent(
                prof_pb.CheckConsentRequest(
                    customer_id=message.customer_id, channel=channel, purpose=purpose
                ),
                timeout=3.0,
            )
            if not answer.granted:
                continue
            consented = True
            quiet = (
                answer.quiet_hours
                if answer.HasField("quiet_hours") and answer.quiet_hours.start_time
                else None
            )
            tz, quiet_hours = answer.time_zone, self._profile_quiet(quiet)
            if channel == channel_pb2.CHANNEL_PUSH:
                return Decision(
                    "send",
                    channel=channel,
                    recipient=message.customer_id,
                    masked="app",
                    time_zone=tz,
                    quiet=quiet_hours,
                )
            if contact is None:
                profile = await self.deps.profile.GetProfile(
                    prof_pb.GetProfileRequest(
                        customer_id=message.customer_id,
                        read_mask=field_mask_pb2.FieldMask(paths=["contact"]),
                    ),
                    timeout=3.0,
                )
                contact = profile.profile.contact
            if channel == channel_pb2.CHANNEL_EMAIL and contact.email:
                return Decision(
                    "send",
                    channel=channel,
                    recipient=contact.email,
                    masked=policy.mask_email(contact.email),
                    time_zone=tz,
                    quiet=quiet_hours,
                )
            if channel == channel_pb2.CHANNEL_SMS and contact.phone:
                return Decision(
                    "send",
                    channel=channel,
                    recipient=contact.phone,
                    masked=policy.mask_phone(contact.phone),
                    time_zone=tz,
                    quiet=quiet_hours,
                )
        if consented:
            return suppress(
                res.SUPPRESSION_REASON_NO_CONTACT_ADDRESS, "no address for a consented channel"
            )
        return suppress(
            res.SUPPRESSION_REASON_NO_CONSENT, f"no {prof_res.ConsentPurpose.Name(purpose)} consent"
        )

    @staticmethod
    def _profile_quiet(quiet: prof_res.QuietHours | None) -> res.QuietHours | None:
        if quiet is None:
            return None
        return res.QuietHours(start_time=quiet.start_time, end_time=quiet.end_time)

    @staticmethod
    def _close(message: res.CustomerMessage, status: int, reason: int, detail: str) -> None:
        message.status = status  # type: ignore[assignment]
        message.suppression_reason = reason  # type: ignore[assignment]
        message.status_detail = detail
        message.close_time.GetCurrentTime()
        message.update_time.GetCurrentTime()
        message.ClearField("next_attempt_time")

    async def _suppressed_event(self, session: AsyncSession, message: res.CustomerMessage) -> None:
        await add_event(
            session,
            producer=PRODUCER,
            event_type="notification.message_suppressed",
            subject=message.customer_id,
            customer_id=message.customer_id,
            payload=ev.MessageSuppressedEvent(
                message_id=message.message_id,
                customer_id=message.customer_id,
                kind=message.kind,
                channel=message.channel,
                reason=message.suppression_reason,
                detail=message.status_detail,
                skus=[i.sku for i in message.items],
                cart_id=message.cart_id,
                store_id=message.store_id,
                trigger_event_id=message.trigger_event_id,
                suppress_time=message.close_time,
            ),
        )

    # --- RPCs -----------------------------------------------------------------------------

    async def list_messages(self, request: pb.ListMessagesRequest) -> pb.ListMessagesResponse:
        principal = current_principal()
        if principal.kind is PrincipalKind.ASSOCIATE or (
            not request.customer_id and not is_operator(principal)
        ):
            raise PermissionDenied("listing messages is not permitted", reason="OPERATOR_ONLY")
        start, end = time_range(request, "time_range")
        async with self.db.reader() as conn:
            found, nxt = await store.list_messages(
                conn,
                customer_id=request.customer_id,
                kinds=request.kinds,
                statuses=request.statuses,
                channels=request.channels,
                start=start,
                end=end,
                page=store.parse_page(request.page_token),
                limit=store.page_size(request.page_size),
            )
        return pb.ListMessagesResponse(messages=found, next_page_token=nxt.token())

    async def get_message(self, request: pb.GetMessageRequest) -> pb.GetMessageResponse:
        if current_principal().kind is PrincipalKind.ASSOCIATE:
            raise PermissionDenied("reading messages is not permitted", reason="OPERATOR_ONLY")
        async with self.db.reader() as conn:
            message = await store.get_message(conn, request.message_id)
        if message is None:
            raise NotFound("no such message", metadata={"message_id": request.message_id})
        return pb.GetMessageResponse(message=message)

    async def get_preferences(
        self, request: pb.GetCustomerPreferencesRequest
    ) -> pb.GetCustomerPreferencesResponse:
        async with self.db.reader() as conn:
            prefs = await store.get_preferences(conn, request.customer_id)
        return pb.GetCustomerPreferencesResponse(
            preferences=prefs or res.CustomerPreferences(customer_id=request.customer_id)
        )

    async def update_preferences(
        self, request: pb.UpdateCustomerPreferencesRequest
    ) -> pb.UpdateCustomerPreferencesResponse:
        bad = [p for p in request.update_mask.paths if p not in PREFERENCE_PATHS]
        if bad or not request.update_mask.paths:
            raise InvalidArgument(
                "update_mask names paths that cannot be written",
                violations=[
                    FieldViolation("update_mask.paths", f"unknown or read-only path {p!r}")
                    for p in bad
                ]
                or [FieldViolation("update_mask.paths", "at least one path")],
            )
        customer_id = request.preferences.customer_id

        async def work(session: AsyncSession) -> pb.UpdateCustomerPreferencesResponse:
            await store.lock_preferences(session, customer_id)
            current = await store.get_preferences(session, customer_id, lock=True)
            current = current or res.CustomerPreferences(customer_id=customer_id)
            if request.expected_revision and request.expected_revision != current.revision:
                raise Aborted(
                    "the preferences changed since they were read",
                    reason="REVISION_MISMATCH",
                    metadata={"revision": str(current.revision)},
                )
            for path in request.update_mask.paths:
                current.ClearField(path)  # type: ignore[arg-type]
            field_mask_pb2.FieldMask(paths=list(request.update_mask.paths)).MergeMessage(
                request.preferences, current, replace_repeated_field=True
            )
            current.revision += 1
            current.update_time.GetCurrentTime()
            await store.put_preferences(session, current)
            return pb.UpdateCustomerPreferencesResponse(preferences=current)

        return await idempotency.run_once(
            self.db,
            "UpdateCustomerPreferences",
            request,
            pb.UpdateCustomerPreferencesResponse,
            work,
        )

    async def get_settings(
        self, request: pb.GetNotificationSettingsRequest
    ) -> pb.GetNotificationSettingsResponse:
        async with self.db.reader() as conn:
            stored = await store.get_settings(conn)
        return pb.GetNotificationSettingsResponse(
            settings=stored if stored is not None else policy.default_settings()
        )

    async def update_settings(
        self, request: pb.UpdateNotificationSettingsRequest
    ) -> pb.UpdateNotificationSettingsResponse:
        require_operator("changing the notification settings")
        known = set(res.NotificationSettings.DESCRIPTOR.fields_by_name)
        bad = [
            p
            for p in request.update_mask.paths
            if p not in known or p in SETTINGS_OUTPUT_ONLY or "." in p
        ]
        if bad or not request.update_mask.paths:
            raise InvalidArgument(
                "update_mask names paths that cannot be written",
                violations=[
                    FieldViolation("update_mask.paths", f"unknown or output-only path {p!r}")
                    for p in bad
                ]
                or [FieldViolation("update_mask.paths", "at least one path")],
            )
        kinds = [p.kind for p in request.settings.message_kinds]
        if "message_kinds" in request.update_mask.paths and len(kinds) != len(set(kinds)):
            raise InvalidArgument(
                "one policy per message kind",
                violations=[FieldViolation("settings.message_kinds", "a kind is repeated")],
            )

        async def work(session: AsyncSession) -> pb.UpdateNotificationSettingsResponse:
            await store.lock_settings_row(session)
            current = await store.get_settings(session, lock=True) or policy.default_settings()
            if request.expected_revision and request.expected_revision != current.revision:
                raise Aborted(
                    "the settings changed since they were read",
                    reason="REVISION_MISMATCH",
                    metadata={"revision": str(current.revision)},
                )
            for path in request.update_mask.paths:
                current.ClearField(path)  # type: ignore[arg-type]
            field_mask_pb2.FieldMask(paths=list(request.update_mask.paths)).MergeMessage(
                request.settings, current, replace_message_field=True, replace_repeated_field=True
            )
            current.revision += 1
            current.update_time.GetCurrentTime()
            await store.put_settings(session, current, request.actor)
            return pb.UpdateNotificationSettingsResponse(settings=current)

        answer = await idempotency.run_once(
            self.db,
            "UpdateNotificationSettings",
            request,
            pb.UpdateNotificationSettingsResponse,
            work,
        )
        self.policy.put(answer.settings)
        return answer


def render(message: res.CustomerMessage) -> tuple[str, str]:
    """Subject and plain-text body (the templates are code for now)."""
    names = [i.name or i.sku for i in message.items]
    if message.kind == res.MESSAGE_KIND_ABANDONED_CART_REMINDER:
        subject = "You left something in your cart"
        lines = [
            f"- {i.name or i.sku} {i.size} {i.colour} x{i.quantity}".rstrip() for i in message.items
        ]
        body = "Still thinking it over? These are waiting in your cart:\n" + "\n".join(lines)
    else:
        subject = f"Back in stock: {names[0] if names else 'an item on your wishlist'}"
        body = "Good news: an item on your wishlist is available again:\n" + "\n".join(
            f"- {n}" for n in names
        )
    return subject, body
