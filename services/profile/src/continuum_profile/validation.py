"""Checks on one ingested event, and the keys an event is stored and resolved under.

Pure functions: no I/O. A batch's events are checked one by one, so that a bad event is
rejected on its own with its reason and field violations (paths relative to the event)
while the good ones are kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from continuum.common.v1 import channel_pb2, identifier_pb2, money_pb2
from continuum.profile.v1 import profile_resources_pb2 as res
from continuum.profile.v1 import profile_service_pb2 as pb
from continuum_runtime.errors import FieldViolation
from continuum_runtime.interceptors import field_violations

DEVICE = identifier_pb2.IDENTIFIER_TYPE_DEVICE_ID
Reason = pb.EventRejectionReason
IdentifierKey = tuple[tuple[int, str], ...]

# The payload case of each event kind.
EVENT_TYPES: dict[str, int] = {
    "product_viewed": res.BEHAVIOURAL_EVENT_TYPE_PRODUCT_VIEWED,
    "search_performed": res.BEHAVIOURAL_EVENT_TYPE_SEARCH_PERFORMED,
    "recommendation_clicked": res.BEHAVIOURAL_EVENT_TYPE_RECOMMENDATION_CLICKED,
    "cart_item_added": res.BEHAVIOURAL_EVENT_TYPE_CART_ITEM_ADDED,
    "cart_item_removed": res.BEHAVIOURAL_EVENT_TYPE_CART_ITEM_REMOVED,
    "wishlist_item_added": res.BEHAVIOURAL_EVENT_TYPE_WISHLIST_ITEM_ADDED,
    "checkout_started": res.BEHAVIOURAL_EVENT_TYPE_CHECKOUT_STARTED,
    "order_placed": res.BEHAVIOURAL_EVENT_TYPE_ORDER_PLACED,
    "order_returned": res.BEHAVIOURAL_EVENT_TYPE_ORDER_RETURNED,
    "store_visited": res.BEHAVIOURAL_EVENT_TYPE_STORE_VISITED,
    "service_contacted": res.BEHAVIOURAL_EVENT_TYPE_SERVICE_CONTACTED,
    "chat_message_sent": res.BEHAVIOURAL_EVENT_TYPE_CHAT_MESSAGE_SENT,
    "email_opened": res.BEHAVIOURAL_EVENT_TYPE_EMAIL_OPENED,
    "email_clicked": res.BEHAVIOURAL_EVENT_TYPE_EMAIL_CLICKED,
}


@dataclass(frozen=True)
class Rejection:
    reason: int
    violations: tuple[FieldViolation, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Limits:
    max_future_skew_s: float
    retention_s: float


def _seconds(event: res.BehaviouralEvent) -> float:
    return event.occur_time.seconds + event.occur_time.nanos / 1e9


_TYPES = frozenset(identifier_pb2.IdentifierType.values()) - {0}
_CHANNELS = frozenset(channel_pb2.Channel.values()) - {0}


def usable_identifiers(event: res.BehaviouralEvent) -> list[identifier_pb2.Identifier]:
    return [i for i in event.identifiers if i.type in _TYPES and i.value.strip()]


def _money_ok(money: money_pb2.Money) -> bool:
    code = money.currency_code
    return len(code) == 3 and code.isascii() and code.isupper() and code.isalpha()


def _product_ok(p: res.ProductRef) -> bool:
    return (
        0 < len(p.sku) <= 128
        and len(p.product_id) <= 128
        and len(p.name) <= 500
        and len(p.category) <= 500
        and len(p.brand) <= 200
        and len(p.size) <= 64
        and len(p.colour) <= 64
        and (not p.HasField("unit_price") or _money_ok(p.unit_price))
    )


def fast_valid(event: res.BehaviouralEvent, kind: str) -> bool:
    """True when ``event`` certainly meets the contract's rules: the same rules as the
    .proto, hand-checked for the high-volume kinds (a protovalidate pass costs ~50 us an
    event). False means "not known to be valid": protovalidate then decides and names the
    violations. Kept honest by a test that compares it with protovalidate."""
    if not (
        0 < len(event.event_id) <= 128
        and event.channel in _CHANNELS
        and event.HasField("occur_time")
        and 0 < len(event.identifiers) <= 20
        and len(event.store_id) <= 128
        and len(event.session_id) <= 128
        and len(event.source) <= 128
    ):
        return False
    for ident in event.identifiers:
        if ident.type not in _TYPES or not 0 < len(ident.value) <= 320:
            return False
    if kind == "product_viewed":
        viewed = event.product_viewed
        return (
            viewed.HasField("product")
            and _product_ok(viewed.product)
            and len(viewed.referrer) <= 200
        )
    if kind == "cart_item_added" or kind == "cart_item_removed":
        item = event.cart_item_added if kind == "cart_item_added" else event.cart_item_removed
        return (
            item.HasField("product")
            and _product_ok(item.product)
            and len(item.cart_id) <= 128
            and 0 < item.quantity <= 10_000
        )
    if kind == "wishlist_item_added":
        wish = event.wishlist_item_added
        return (
            wish.HasField("product") and _product_ok(wish.product) and len(wish.wishlist_id) <= 128
        )
    if kind == "recommendation_clicked":
        click = event.recommendation_clicked
        return (
            click.HasField("product")
            and _product_ok(click.product)
            and len(click.recommendation_id) <= 128
            and len(click.placement) <= 128
            and 0 <= click.position <= 1000
        )
    return False


def check_event(event: res.BehaviouralEvent, now_s: float, limits: Limits) -> Rejection | None:
    """Why ``event`` cannot be stored, or None. Checked in order: kind, identifiers, the
    contract's field rules, then the time window."""
    kind = event.WhichOneof("payload")
    if kind is None:
        return Rejection(
            Reason.EVENT_REJECTION_REASON_UNKNOWN_EVENT_TYPE,
            (FieldViolation("payload", "no event kind set, or a kind this server does not know"),),
        )
    if not usable_identifiers(event):
        return Rejection(
            Reason.EVENT_REJECTION_REASON_MISSING_IDENTIFIERS,
            (FieldViolation("identifiers", "at least one usable identifier is required"),),
        )
    violations = [] if fast_valid(event, kind) else field_violations(event)
    if violations:
        return Rejection(Reason.EVENT_REJECTION_REASON_INVALID_FIELD, tuple(violations))
    at = _seconds(event)
    if at > now_s + limits.max_future_skew_s:
        return Rejection(
            Reason.EVENT_REJECTION_REASON_TIME_IN_FUTURE,
            (
                FieldViolation(
                    "occur_time",
                    f"more than {int(limits.max_future_skew_s)} s in the future",
                    "occur_time.future",
                ),
            ),
        )
    if at < now_s - limits.retention_s:
        return Rejection(
            Reason.EVENT_REJECTION_REASON_TIME_TOO_OLD,
            (
                FieldViolation(
                    "occur_time",
                    f"older than the retention period ({int(limits.retention_s // 86400)} days)",
                    "occur_time.retention",
                ),
            ),
        )
    return None


def clean(event: res.BehaviouralEvent) -> res.BehaviouralEvent:
    """The event as the sender meant it: output-only fields cleared (they are the
    profile's to set)."""
    if event.customer_id:
        event.ClearField("customer_id")
    if event.device_id:
        event.ClearField("device_id")
    if event.event_type:
        event.ClearField("event_type")
    if event.HasField("receive_time"):
        event.ClearField("receive_time")
    return event


def fingerprint(payload: bytes) -> bytes:
    """A digest of an event's content, to tell a resend from a reused event id."""
    return hashlib.blake2b(payload, digest_size=16).digest()


def identifier_key(event: res.BehaviouralEvent) -> IdentifierKey:
    """The event's identifiers as a cache key: sorted, trimmed, emails in lower case."""
    out = set()
    for ident in usable_identifiers(event):
        value = ident.value.strip()
        if ident.type == identifier_pb2.IDENTIFIER_TYPE_EMAIL:
            value = value.lower()
        out.add((int(ident.type), value))
    return tuple(sorted(out))


def device_of(key: IdentifierKey) -> tuple[str | None, bool]:
    """The device the event is kept under (the first device id) and whether it came with
    device ids only (anonymous activity)."""
    devices = [value for kind, value in key if kind == DEVICE]
    return (devices[0] if devices else None), len(devices) == len(key)


def event_type_of(event: res.BehaviouralEvent) -> int:
    kind = event.WhichOneof("payload")
    return EVENT_TYPES.get(kind or "", 0)
