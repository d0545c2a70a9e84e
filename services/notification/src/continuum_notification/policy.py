"""Messaging policy as plain functions: defaults, quiet hours, frequency caps, backoff.

No database and no network here: the sender worker feeds these with what it read.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf import duration_pb2

from continuum.common.v1 import channel_pb2
from continuum.notification.v1 import notification_resources_pb2 as res

EMAIL = channel_pb2.CHANNEL_EMAIL
SMS = channel_pb2.CHANNEL_SMS
PUSH = channel_pb2.CHANNEL_PUSH
REMINDER = res.MESSAGE_KIND_ABANDONED_CART_REMINDER
BACK_IN_STOCK = res.MESSAGE_KIND_BACK_IN_STOCK_ALERT


def _dur(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(timedelta(seconds=seconds))
    return d


def seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def default_settings() -> res.NotificationSettings:
    """The settings a deployment starts with (revision 0 until first changed)."""
    return res.NotificationSettings(
        frequency_caps=[
            res.FrequencyCap(channel=EMAIL, max_messages=2, period=_dur(7 * 86400)),
            res.FrequencyCap(max_messages=3, period=_dur(7 * 86400)),
            res.FrequencyCap(max_messages=1, period=_dur(86400)),
        ],
        default_quiet_hours=res.QuietHours(start_time="21:00", end_time="08:00"),
        default_time_zone="UTC",
        message_kinds=[
            res.MessageKindPolicy(
                kind=REMINDER,
                enabled=True,
                channels=[EMAIL, PUSH],
                delay=_dur(3600),
                expire_after=_dur(3 * 86400),
                template_id="abandoned_cart_reminder_v1",
            ),
            res.MessageKindPolicy(
                kind=BACK_IN_STOCK,
                enabled=True,
                channels=[EMAIL, PUSH],
                delay=_dur(0),
                expire_after=_dur(2 * 86400),
                template_id="back_in_stock_v1",
            ),
        ],
        retry_policy=res.RetryPolicy(
            max_attempts=5,
            initial_backoff=_dur(30),
            max_backoff=_dur(3600),
            backoff_multiplier=2.0,
        ),
        check_in_dedup_window=_dur(30 * 60),
        briefing_ttl=_dur(2 * 3600),
        briefing_budget=_dur(0.25),
        feed_retention=_dur(7 * 86400),
        handoff_ttl=_dur(30 * 60),
    )


def kind_policy(settings: res.NotificationSettings, kind: int) -> res.MessageKindPolicy | None:
    for policy in settings.message_kinds:
        if policy.kind == kind:
            return policy
    return None


def zone(name: str, fallback: str) -> ZoneInfo:
    for candidate in (name, fallback, "UTC"):
        if not candidate:
            continue
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def _hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def quiet_until(now: datetime, quiet: res.QuietHours | None, tz: ZoneInfo) -> datetime | None:
    """When quiet hours that cover ``now`` end (``now`` in UTC), or None outside them."""
    if quiet is None or not quiet.start_time or not quiet.end_time:
        return None
    start, end = _hhmm(quiet.start_time), _hhmm(quiet.end_time)
    if start == end:
        return None
    local = now.astimezone(tz)
    t = local.time()
    if start < end:
        inside = start <= t < end
        end_day = local.date()
    else:  # spans midnight
        inside = t >= start or t < end
        end_day = local.date() + timedelta(days=1) if t >= start else local.date()
    if not inside:
        return None
    local_end = datetime.combine(end_day, end, tzinfo=tz)
    return local_end.astimezone(now.tzinfo)


@dataclass(frozen=True)
class CapCheck:
    """A cap that blocks a send now, and when it frees up."""

    cap: res.FrequencyCap
    free_at: datetime


def blocking_cap(
    now: datetime,
    caps: Sequence[res.FrequencyCap],
    kind: int,
    channel: int,
    sent: Sequence[tuple[datetime, int, int]],
) -> CapCheck | None:
    """The cap (of ``caps``) a send of ``kind`` on ``channel`` would exceed, if any.

    ``sent`` is the customer's sent messages as (send time, kind, channel). The cap
    frees up when enough of the counted messages leave its sliding window.
    """
    worst: CapCheck | None = None
    for cap in caps:
        if cap.channel and cap.channel != channel:
            continue
        if cap.kind and cap.kind != kind:
            continue
        period = timedelta(seconds=seconds(cap.period))
        counted = sorted(
            at
            for at, k, c in sent
            if at > now - period
            and (not cap.channel or c == cap.channel)
            and (not cap.kind or k == cap.kind)
        )
        if len(counted) < cap.max_messages:
            continue
        # The send is allowed once all but max_messages - 1 of them have left the window.
        free_at = counted[len(counted) - cap.max_messages] + period
        if worst is None or free_at > worst.free_at:
            worst = CapCheck(cap, free_at)
    return worst


def describe_cap(cap: res.FrequencyCap) -> str:
    scope = channel_pb2.Channel.Name(cap.channel) if cap.channel else "all channels"
    return f"cap {cap.max_messages} per {int(seconds(cap.period))}s on {scope}"


def backoff(retry: res.RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``attempt`` (1-based): exponential, capped, with
    full jitter on the upper half so that retries of many messages spread out."""
    initial = seconds(retry.initial_backoff) or 30.0
    ceiling = seconds(retry.max_backoff) or 3600.0
    base = min(ceiling, initial * (retry.backoff_multiplier or 2.0) ** max(0, attempt - 1))
    r = (rng or random).random()
    return base / 2 + base / 2 * r


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    if not domain:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_phone(number: str) -> str:
    if len(number) < 6:
        return "***"
    return number[:3] + "*" * (len(number) - 6) + number[-3:]
