"""Messaging policy rules, without a database: quiet hours across midnight and time zones,
sliding-window frequency caps, backoff."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from google.protobuf import duration_pb2

from continuum.common.v1 import channel_pb2
from continuum.notification.v1 import notification_resources_pb2 as res
from continuum_notification import policy

EMAIL, SMS = channel_pb2.CHANNEL_EMAIL, channel_pb2.CHANNEL_SMS
REMINDER = res.MESSAGE_KIND_ABANDONED_CART_REMINDER


def test_quiet_hours_span_midnight_in_the_customers_zone() -> None:
    quiet = res.QuietHours(start_time="21:00", end_time="08:00")
    london = ZoneInfo("Europe/London")
    late = datetime(2026, 11, 23, 22, 30, tzinfo=UTC)  # 22:30 in London (winter)
    assert policy.quiet_until(late, quiet, london) == datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    early = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    assert policy.quiet_until(early, quiet, london) == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    noon = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert policy.quiet_until(noon, quiet, london) is None
    # Noon in London is 21:00 in Tokyo: quiet there.
    assert policy.quiet_until(noon, quiet, ZoneInfo("Asia/Tokyo")) is not None
    assert policy.quiet_until(noon, res.QuietHours(), london) is None


def test_caps_count_per_channel_and_overall_in_a_sliding_window() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    week = duration_pb2.Duration(seconds=7 * 86400)
    caps = [
        res.FrequencyCap(channel=EMAIL, max_messages=2, period=week),
        res.FrequencyCap(max_messages=3, period=week),
    ]
    sent = [(now - timedelta(days=6), REMINDER, EMAIL), (now - timedelta(days=1), REMINDER, EMAIL)]
    blocked = policy.blocking_cap(now, caps, REMINDER, EMAIL, sent)
    assert blocked is not None
    assert blocked.cap.channel == EMAIL
    assert blocked.free_at == now + timedelta(days=1)  # when the oldest leaves the window
    assert policy.blocking_cap(now, caps, REMINDER, SMS, sent) is None
    sent.append((now - timedelta(hours=1), REMINDER, SMS))
    overall = policy.blocking_cap(now, caps, REMINDER, SMS, sent)
    assert overall is not None
    assert overall.cap.channel == 0


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling() -> None:
    retry = policy.default_settings().retry_policy
    rng = random.Random(7)
    waits = [policy.backoff(retry, attempt, rng) for attempt in range(1, 9)]
    assert 15 <= waits[0] <= 30
    assert 30 <= waits[1] <= 60
    assert all(w <= 3600 for w in waits)
    assert waits[-1] >= 1800
