"""The notification service's tables and every query on them (nothing else runs SQL)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from continuum.notification.v1 import notification_resources_pb2 as res
from continuum_runtime.db import Executor
from continuum_runtime.paging import bad_page_token, decode_page_token, encode_page_token
from continuum_runtime.telemetry import current_traceparent

Conn = AsyncSession | AsyncConnection


def ts_dt(ts: Any) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# --- paging -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """Keyset position: the (created_at, id) of the last row of the previous page."""

    created: datetime | None = None
    key: str = ""

    def token(self) -> str:
        if self.created is None:
            return ""
        return encode_page_token([int(self.created.timestamp() * 1_000_000), self.key])


def parse_page(token: str) -> Page:
    values = decode_page_token(token, 2)
    if values is None:
        return Page()
    try:
        created = datetime.fromtimestamp(int(values[0]) / 1_000_000, tz=UTC)
        return Page(created, str(uuid.UUID(str(values[1]))))
    except (ValueError, TypeError, OverflowError):
        raise bad_page_token() from None


def page_size(requested: int, default: int = 50) -> int:
    return requested if requested > 0 else default


def _page_clause(page: Page, params: dict[str, Any], created: str, key: str) -> str:
    if page.created is None:
        return ""
    params["pc"] = page.created
    params["pk"] = uuid.UUID(page.key)
    return f" AND ({created}, {key}) < (:pc, :pk)"


# --- check-ins ----------------------------------------------------------------------------


async def lock_customer_store(session: AsyncSession, customer_id: str, store_id: str) -> None:
    """Serialise check-ins of one customer at one store (deduplication)."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 11))"),
        {"k": f"{customer_id}/{store_id}"},
    )


async def check_in_by_request(session: AsyncSession, request_id: str) -> res.CheckIn | None:
    row = (
        await session.execute(
            text("SELECT body FROM check_ins WHERE request_id = :r"), {"r": request_id}
        )
    ).one_or_none()
    return res.CheckIn.FromString(bytes(row.body)) if row else None


async def recent_check_in(
    session: AsyncSession, customer_id: str, store_id: str, since: datetime
) -> res.CheckIn | None:
    """The latest non-duplicate check-in of the customer at the store since ``since``."""
    row = (
        await session.execute(
            text(
                "SELECT body FROM check_ins WHERE customer_id = :c AND store_id = :s"
                " AND check_in_at >= :since AND status <> :dup"
                " ORDER BY check_in_at DESC LIMIT 1"
            ),
            {
                "c": customer_id,
                "s": store_id,
                "since": since,
                "dup": res.CHECK_IN_STATUS_DEDUPLICATED,
            },
        )
    ).one_or_none()
    return res.CheckIn.FromString(bytes(row.body)) if row else None


async def put_check_in(session: AsyncSession, check_in: res.CheckIn, request_id: str) -> None:
    await session.execute(
        text(
            "INSERT INTO check_ins (check_in_id, request_id, customer_id, store_id, status,"
            " check_in_at, briefing_id, body) VALUES (:id, :r, :c, :s, :st, :at, :b, :body)"
            " ON CONFLICT (check_in_id) DO UPDATE SET status = EXCLUDED.status,"
            " briefing_id = EXCLUDED.briefing_id, body = EXCLUDED.body"
        ),
        {
            "id": uuid.UUID(check_in.check_in_id),
            "r": request_id or None,
            "c": check_in.customer_id,
            "s": check_in.store_id,
            "st": int(check_in.status),
            "at": ts_dt(check_in.check_in_time),
            "b": as_uuid(check_in.briefing_id),
            "body": check_in.SerializeToString(),
        },
    )


async def delete_check_in(session: AsyncSession, check_in_id: str) -> None:
    await session.execute(
        text("DELETE FROM check_ins WHERE check_in_id = :id"), {"id": uuid.UUID(check_in_id)}
    )


async def visits(
    conn: Executor, customer_id: str, store_id: str, before: datetime, exclude: str
) -> res.VisitSummary:
    """The customer's store visits in the 12 months before ``before`` (briefed or not,
    duplicates not counted), excluding the check-in ``exclude``."""
    rows = (
        await conn.execute(
            text(
                "SELECT store_id, check_in_at FROM check_ins WHERE customer_id = :c"
                " AND check_in_at < :before AND check_in_at >= :before - interval '365 days'"
                " AND status <> :dup AND check_in_id <> :x ORDER BY check_in_at DESC LIMIT 500"
            ),
            {
                "c": customer_id,
                "before": before,
                "dup": res.CHECK_IN_STATUS_DEDUPLICATED,
                "x": uuid.UUID(exclude),
            },
        )
    ).all()
    out = res.VisitSummary(
        visit_count=len(rows),
        visit_count_this_store=sum(1 for r in rows if r.store_id == store_id),
    )
    out.first_visit_to_this_store = out.visit_count_this_store == 0
    if rows:
        out.last_visit_time.FromDatetime(rows[0].check_in_at)
        out.last_visit_store_id = rows[0].store_id
    here = next((r for r in rows if r.store_id == store_id), None)
    if here is not None:
        out.last_visit_this_store_time.FromDatetime(here.check_in_at)
    return out


async def record_briefing(
    conn: Executor,
    *,
    check_in: res.CheckIn,
    request_id: str,
    briefing: res.Briefing,
    consent: bool | None,
    events: Sequence[dict[str, Any]],
    feed_item: res.FeedItem,
    request_log: tuple[str, str, bytes, bytes],
) -> int:
    """The check-in, its briefing, the consent profile gave, the events, the queued feed
    item and the answer for replays, in ONE statement (data-modifying CTEs: atomic and a
    single round trip on the check-in hot path). Returns the feed item's queue seq."""
    params: dict[str, Any] = {
        "ci": uuid.UUID(check_in.check_in_id),
        "rid": request_id or None,
        "cust": check_in.customer_id,
        "store": check_in.store_id,
        "status": int(check_in.status),
        "at": ts_dt(check_in.check_in_time),
        "bid": uuid.UUID(briefing.briefing_id),
        "ci_body": check_in.SerializeToString(),
        "rev": briefing.revision,
        "created": ts_dt(briefing.create_time),
        "exp": ts_dt(briefing.expire_time),
        "b_body": briefing.SerializeToString(),
        "lm": request_log[0],
        "lr": request_log[1],
        "lf": request_log[2],
        "la": request_log[3],
        "f_body": feed_item.SerializeToString(),
    }
    parts = [
        "ci AS (INSERT INTO check_ins (check_in_id, request_id, customer_id, store_id, status,"
        " check_in_at, briefing_id, body) VALUES (:ci, :rid, :cust, :store, :status, :at, :bid,"
        " :ci_body))",
        "b AS (INSERT INTO briefings (briefing_id, check_in_id, store_id, customer_id, revision,"
        " created_at, expire_at, body) VALUES (:bid, :ci, :store, :cust, :rev, :created, :exp,"
        " :b_body))",
        "r AS (INSERT INTO request_log (method, request_id, fingerprint, response)"
        " VALUES (:lm, :lr, :lf, :la) ON CONFLICT DO NOTHING)",
    ]
    if consent is not None:
        params["allowed"] = consent
        parts.append(
            "c AS (INSERT INTO consent_cache (customer_id, allowed, checked_at)"
            " VALUES (:cust, :allowed, now()) ON CONFLICT (customer_id) DO UPDATE SET"
            " allowed = EXCLUDED.allowed, checked_at = EXCLUDED.checked_at)"
        )
    if events:
        values = []
        for n, event in enumerate(events):
            for key in ("event_id", "producer", "event_type", "subject", "envelope"):
                params[f"e{n}_{key}"] = event[key]
            values.append(
                f"(:e{n}_event_id, :e{n}_producer, :e{n}_event_type, :e{n}_subject, :e{n}_envelope)"
            )
        parts.append(
            "o AS (INSERT INTO outbox (event_id, producer, event_type, subject, envelope)"
            " VALUES " + ", ".join(values) + ")"
        )
    sql = (
        "WITH "
        + ", ".join(parts)
        + " INSERT INTO feed_pending (store_id, body) VALUES (:store, :f_body) RETURNING seq"
    )
    seq = (await conn.execute(text(sql), params)).scalar_one()
    return int(seq)


# --- consent cache ------------------------------------------------------------------------


async def remember_consent(session: AsyncSession, customer_id: str, allowed: bool) -> None:
    await session.execute(
        text(
            "INSERT INTO consent_cache (customer_id, allowed, checked_at) VALUES (:c, :a, now())"
            " ON CONFLICT (customer_id) DO UPDATE SET allowed = EXCLUDED.allowed,"
            " checked_at = EXCLUDED.checked_at"
        ),
        {"c": customer_id, "a": allowed},
    )


async def update_cached_consent(session: AsyncSession, customer_id: str, allowed: bool) -> None:
    """Refresh the cached answer of a customer notification has checked before."""
    await session.execute(
        text("UPDATE consent_cache SET allowed = :a, checked_at = now() WHERE customer_id = :c"),
        {"c": customer_id, "a": allowed},
    )


async def cached_consent(conn: Conn, customer_id: str, max_age_s: float) -> bool | None:
    row = (
        await conn.execute(
            text(
                "SELECT allowed FROM consent_cache WHERE customer_id = :c"
                " AND checked_at > now() - make_interval(secs => :age)"
            ),
            {"c": customer_id, "age": max_age_s},
        )
    ).one_or_none()
    return bool(row.allowed) if row else None


# --- briefings ----------------------------------------------------------------------------


async def put_briefing(session: AsyncSession, briefing: res.Briefing) -> None:
    await session.execute(
        text(
            "INSERT INTO briefings (briefing_id, check_in_id, store_id, customer_id, revision,"
            " created_at, expire_at, body) VALUES (:id, :ci, :s, :c, :rev, :at, :exp, :body)"
            " ON CONFLICT (briefing_id) DO UPDATE SET revision = EXCLUDED.revision,"
            " body = EXCLUDED.body"
        ),
        {
            "id": uuid.UUID(briefing.briefing_id),
            "ci": uuid.UUID(briefing.check_in_id),
            "s": briefing.store_id,
            "c": briefing.customer_id,
            "rev": briefing.revision,
            "at": ts_dt(briefing.create_time),
            "exp": ts_dt(briefing.expire_time),
            "body": briefing.SerializeToString(),
        },
    )


async def get_briefing(conn: Conn, briefing_id: str, *, lock: bool = False) -> res.Briefing | None:
    key = as_uuid(briefing_id)
    if key is None:
        return None
    row = (
        await conn.execute(
            text(
                "SELECT body FROM briefings WHERE briefing_id = :id"
                + (" FOR UPDATE" if lock else "")
            ),
            {"id": key},
        )
    ).one_or_none()
    return res.Briefing.FromString(bytes(row.body)) if row else None


async def list_briefings(
    conn: Conn,
    *,
    store_id: str,
    customer_id: str,
    start: datetime | None,
    end: datetime | None,
    active_at: datetime | None,
    page: Page,
    limit: int,
) -> tuple[list[res.Briefing], Page]:
    params: dict[str, Any] = {"s": store_id, "n": limit + 1}
    sql = "SELECT briefing_id, created_at, body FROM briefings WHERE store_id = :s"
    if customer_id:
        sql += " AND customer_id = :c"
        params["c"] = customer_id
    if start is not None:
        sql += " AND created_at >= :start"
        params["start"] = start
    if end is not None:
        sql += " AND created_at < :end"
        params["end"] = end
    if active_at is not None:
        sql += " AND expire_at > :now"
        params["now"] = active_at
    sql += _page_clause(page, params, "created_at", "briefing_id")
    sql += " ORDER BY created_at DESC, briefing_id DESC LIMIT :n"
    rows = (await conn.execute(text(sql), params)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = Page(rows[-1].created_at, str(rows[-1].briefing_id)) if more else Page()
    return [res.Briefing.FromString(bytes(r.body)) for r in rows], nxt


async def active_briefings(conn: Conn, store_id: str, now: datetime) -> list[res.Briefing]:
    rows = (
        await conn.execute(
            text(
                "SELECT body FROM briefings WHERE store_id = :s AND expire_at > :now"
                " ORDER BY created_at, briefing_id LIMIT 500"
            ),
            {"s": store_id, "now": now},
        )
    ).all()
    return [res.Briefing.FromString(bytes(r.body)) for r in rows]


async def put_feedback(session: AsyncSession, feedback: res.ActionFeedback) -> None:
    await session.execute(
        text(
            "INSERT INTO action_feedback (feedback_id, briefing_id, action_id, body)"
            " VALUES (:id, :b, :a, :body)"
        ),
        {
            "id": uuid.UUID(feedback.feedback_id),
            "b": uuid.UUID(feedback.briefing_id),
            "a": feedback.action_id,
            "body": feedback.SerializeToString(),
        },
    )


# --- settings and preferences -------------------------------------------------------------


async def get_settings(conn: Conn, *, lock: bool = False) -> res.NotificationSettings | None:
    row = (
        await conn.execute(
            text(
                "SELECT body FROM notification_settings WHERE id = 1"
                + (" FOR UPDATE" if lock else "")
            )
        )
    ).one_or_none()
    return res.NotificationSettings.FromString(bytes(row.body)) if row else None


async def put_settings(
    session: AsyncSession, settings: res.NotificationSettings, actor: str
) -> None:
    await session.execute(
        text(
            "INSERT INTO notification_settings (id, revision, body, updated_by, updated_at)"
            " VALUES (1, :rev, :body, :by, now()) ON CONFLICT (id) DO UPDATE SET"
            " revision = EXCLUDED.revision, body = EXCLUDED.body,"
            " updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at"
        ),
        {"rev": settings.revision, "body": settings.SerializeToString(), "by": actor},
    )


async def lock_settings_row(session: AsyncSession) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('settings', 11))"))


async def get_preferences(
    conn: Conn, customer_id: str, *, lock: bool = False
) -> res.CustomerPreferences | None:
    row = (
        await conn.execute(
            text(
                "SELECT body FROM customer_preferences WHERE customer_id = :c"
                + (" FOR UPDATE" if lock else "")
            ),
            {"c": customer_id},
        )
    ).one_or_none()
    return res.CustomerPreferences.FromString(bytes(row.body)) if row else None


async def put_preferences(session: AsyncSession, prefs: res.CustomerPreferences) -> None:
    await session.execute(
        text(
            "INSERT INTO customer_preferences (customer_id, revision, body) VALUES (:c, :r, :b)"
            " ON CONFLICT (customer_id) DO UPDATE SET revision = EXCLUDED.revision,"
            " body = EXCLUDED.body"
        ),
        {"c": prefs.customer_id, "r": prefs.revision, "b": prefs.SerializeToString()},
    )


async def lock_preferences(session: AsyncSession, customer_id: str) -> None:
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 12))"), {"k": customer_id}
    )


# --- messages -----------------------------------------------------------------------------


async def insert_message(session: AsyncSession, message: res.CustomerMessage) -> bool:
    """Store a new message; False when one with its dedup key exists (nothing changes)."""
    row = (
        await session.execute(
            text(
                "INSERT INTO messages (message_id, customer_id, kind, channel, status, dedup_key,"
                " cart_id, due_at, created_at, body, traceparent) VALUES (:id, :c, :k, :ch, :st,"
                " :d, :cart, :due, :at, :body, :tp)"
                " ON CONFLICT (dedup_key) DO NOTHING RETURNING message_id"
            ),
            {
                "id": uuid.UUID(message.message_id),
                "c": message.customer_id,
                "k": int(message.kind),
                "ch": int(message.channel),
                "st": int(message.status),
                "d": message.dedup_key,
                "cart": message.cart_id,
                "due": ts_dt(message.scheduled_time),
                "at": ts_dt(message.create_time),
                "body": message.SerializeToString(),
                # The trigger's trace, for the sender's span link (see migration 0003).
                "tp": current_traceparent(),
            },
        )
    ).one_or_none()
    return row is not None


async def update_message(session: AsyncSession, message: res.CustomerMessage) -> None:
    await session.execute(
        text(
            "UPDATE messages SET status = :st, channel = :ch, due_at = :due, sent_at = :sent,"
            " body = :body WHERE message_id = :id"
        ),
        {
            "id": uuid.UUID(message.message_id),
            "st": int(message.status),
            "ch": int(message.channel),
            "due": ts_dt(message.next_attempt_time)
            if message.HasField("next_attempt_time")
            else ts_dt(message.scheduled_time),
            "sent": ts_dt(message.send_time) if message.HasField("send_time") else None,
            "body": message.SerializeToString(),
        },
    )


async def get_message(
    conn: Conn, message_id: str, *, lock: bool = False
) -> res.CustomerMessage | None:
    key = as_uuid(message_id)
    if key is None:
        return None
    row = (
        await conn.execute(
            text(
                "SELECT body FROM messages WHERE message_id = :id" + (" FOR UPDATE" if lock else "")
            ),
            {"id": key},
        )
    ).one_or_none()
    return res.CustomerMessage.FromString(bytes(row.body)) if row else None


async def due_messages(
    session: AsyncSession, now: datetime, limit: int
) -> list[tuple[res.CustomerMessage, str]]:
    """Due scheduled messages, locked (skipping those another sender holds), each with the
    ``traceparent`` of the work that created it."""
    rows = (
        await session.execute(
            text(
                "SELECT body, traceparent FROM messages WHERE status = :st AND due_at <= :now"
                " ORDER BY due_at LIMIT :n FOR UPDATE SKIP LOCKED"
            ),
            {"st": res.MESSAGE_STATUS_SCHEDULED, "now": now, "n": limit},
        )
    ).all()
    return [(res.CustomerMessage.FromString(bytes(r.body)), str(r.traceparent)) for r in rows]


async def scheduled_reminders(session: AsyncSession, customer_id: str) -> list[res.CustomerMessage]:
    rows = (
        await session.execute(
            text(
                "SELECT body FROM messages WHERE customer_id = :c AND kind = :k AND status = :st"
                " FOR UPDATE"
            ),
            {
                "c": customer_id,
                "k": res.MESSAGE_KIND_ABANDONED_CART_REMINDER,
                "st": res.MESSAGE_STATUS_SCHEDULED,
            },
        )
    ).all()
    return [res.CustomerMessage.FromString(bytes(r.body)) for r in rows]


async def sent_history(
    conn: Conn, customer_id: str, since: datetime
) -> list[tuple[datetime, int, int]]:
    rows = (
        await conn.execute(
            text(
                "SELECT sent_at, kind, channel FROM messages WHERE customer_id = :c"
                " AND status = ANY(:st) AND sent_at >= :since"
            ),
            {
                "c": customer_id,
                "st": [res.MESSAGE_STATUS_SENDING, res.MESSAGE_STATUS_SENT],
                "since": since,
            },
        )
    ).all()
    return [(r.sent_at, int(r.kind), int(r.channel)) for r in rows]


async def list_messages(
    conn: Conn,
    *,
    customer_id: str,
    kinds: Sequence[int],
    statuses: Sequence[int],
    channels: Sequence[int],
    start: datetime | None,
    end: datetime | None,
    page: Page,
    limit: int,
) -> tuple[list[res.CustomerMessage], Page]:
    params: dict[str, Any] = {"n": limit + 1}
    sql = "SELECT message_id, created_at, body FROM messages WHERE true"
    if customer_id:
        sql += " AND customer_id = :c"
        params["c"] = customer_id
    for name, values in (("kind", kinds), ("status", statuses), ("channel", channels)):
        if values:
            sql += f" AND {name} = ANY(:{name}s)"
            params[f"{name}s"] = [int(v) for v in values]
    if start is not None:
        sql += " AND created_at >= :start"
        params["start"] = start
    if end is not None:
        sql += " AND created_at < :end"
        params["end"] = end
    sql += _page_clause(page, params, "created_at", "message_id")
    sql += " ORDER BY created_at DESC, message_id DESC LIMIT :n"
    rows = (await conn.execute(text(sql), params)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = Page(rows[-1].created_at, str(rows[-1].message_id)) if more else Page()
    return [res.CustomerMessage.FromString(bytes(r.body)) for r in rows], nxt


# --- wishlist watch -----------------------------------------------------------------------


async def watch(session: AsyncSession, customer_id: str, sku: str, at: datetime) -> None:
    await session.execute(
        text(
            "INSERT INTO wishlist_watch (customer_id, sku, added_at) VALUES (:c, :s, :at)"
            " ON CONFLICT (customer_id, sku) DO NOTHING"
        ),
        {"c": customer_id, "s": sku, "at": at},
    )


async def unwatch(session: AsyncSession, customer_id: str, sku: str) -> None:
    await session.execute(
        text("DELETE FROM wishlist_watch WHERE customer_id = :c AND sku = :s"),
        {"c": customer_id, "s": sku},
    )


async def watchers(session: AsyncSession, sku: str) -> list[str]:
    rows = (
        await session.execute(
            text(
                "SELECT customer_id FROM wishlist_watch WHERE sku = :s ORDER BY added_at, customer_id"
            ),
            {"s": sku},
        )
    ).all()
    return [r.customer_id for r in rows]


async def is_watching(conn: Conn, customer_id: str, sku: str) -> bool:
    row = (
        await conn.execute(
            text("SELECT 1 FROM wishlist_watch WHERE customer_id = :c AND sku = :s"),
            {"c": customer_id, "s": sku},
        )
    ).one_or_none()
    return row is not None


# --- handoffs -----------------------------------------------------------------------------


async def insert_handoff(session: AsyncSession, handoff: res.Handoff) -> None:
    await session.execute(
        text(
            "INSERT INTO handoffs (handoff_id, conversation_id, status, route, store_id, queue_id,"
            " assignee_id, created_at, expire_at, body, customer_id) VALUES (:id, :conv, :st,"
            " :route, :s, :q, :a, :at, :exp, :body, :c)"
        ),
        _handoff_params(handoff),
    )


async def update_handoff(session: AsyncSession, handoff: res.Handoff) -> None:
    await session.execute(
        text(
            "UPDATE handoffs SET status = :st, assignee_id = :a, body = :body, customer_id = :c"
            " WHERE handoff_id = :id"
        ),
        _handoff_params(handoff),
    )


def _handoff_params(h: res.Handoff) -> dict[str, Any]:
    return {
        "id": uuid.UUID(h.handoff_id),
        "conv": h.conversation_id,
        "st": int(h.status),
        "route": int(h.route),
        "s": h.store_id,
        "q": h.queue_id,
        "a": h.assignee_id,
        "at": ts_dt(h.create_time),
        "exp": ts_dt(h.expire_time),
        "body": h.SerializeToString(),
        "c": h.customer_id,
    }


async def get_handoff(conn: Conn, handoff_id: str, *, lock: bool = False) -> res.Handoff | None:
    key = as_uuid(handoff_id)
    if key is None:
        return None
    row = (
        await conn.execute(
            text(
                "SELECT body FROM handoffs WHERE handoff_id = :id" + (" FOR UPDATE" if lock else "")
            ),
            {"id": key},
        )
    ).one_or_none()
    return res.Handoff.FromString(bytes(row.body)) if row else None


async def open_handoff_id(conn: Conn, conversation_id: str) -> str | None:
    row = (
        await conn.execute(
            text("SELECT handoff_id FROM handoffs WHERE conversation_id = :c AND status IN (1, 2)"),
            {"c": conversation_id},
        )
    ).one_or_none()
    return str(row.handoff_id) if row else None


async def list_handoffs(
    conn: Conn,
    *,
    store_id: str,
    queue_id: str,
    statuses: Sequence[int],
    assignee_id: str,
    start: datetime | None,
    end: datetime | None,
    page: Page,
    limit: int,
) -> tuple[list[res.Handoff], Page]:
    params: dict[str, Any] = {"n": limit + 1}
    if store_id:
        sql = "SELECT handoff_id, created_at, body FROM handoffs WHERE store_id = :s AND route = 1"
        params["s"] = store_id
    else:
        sql = "SELECT handoff_id, created_at, body FROM handoffs WHERE queue_id = :q AND route = 2"
        params["q"] = queue_id
    if statuses:
        sql += " AND status = ANY(:sts)"
        params["sts"] = [int(s) for s in statuses]
    if assignee_id:
        sql += " AND assignee_id = :a"
        params["a"] = assignee_id
    if start is not None:
        sql += " AND created_at >= :start"
        params["start"] = start
    if end is not None:
        sql += " AND created_at < :end"
        params["end"] = end
    sql += _page_clause(page, params, "created_at", "handoff_id")
    sql += " ORDER BY created_at DESC, handoff_id DESC LIMIT :n"
    rows = (await conn.execute(text(sql), params)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = Page(rows[-1].created_at, str(rows[-1].handoff_id)) if more else Page()
    return [res.Handoff.FromString(bytes(r.body)) for r in rows], nxt


async def open_store_handoffs(conn: Conn, store_id: str) -> list[res.Handoff]:
    rows = (
        await conn.execute(
            text(
                "SELECT body FROM handoffs WHERE store_id = :s AND route = 1 AND status IN (1, 2)"
                " ORDER BY created_at, handoff_id LIMIT 500"
            ),
            {"s": store_id},
        )
    ).all()
    return [res.Handoff.FromString(bytes(r.body)) for r in rows]


async def expiring_handoffs(
    session: AsyncSession, now: datetime, limit: int = 100
) -> list[res.Handoff]:
    rows = (
        await session.execute(
            text(
                "SELECT body FROM handoffs WHERE status = 1 AND expire_at <= :now"
                " ORDER BY expire_at LIMIT :n FOR UPDATE SKIP LOCKED"
            ),
            {"now": now, "n": limit},
        )
    ).all()
    return [res.Handoff.FromString(bytes(r.body)) for r in rows]


# --- forgetting a customer ----------------------------------------------------------------


async def forget_customers(session: AsyncSession, customer_ids: Sequence[str]) -> list[str]:
    """Erase what notification holds about these customers: check-ins, briefings (and the
    feedback on their actions), handoffs, messages, preferences, the consent cache and
    the wishlist watch. Returns the stores whose feeds carried their briefings or handoffs
    (their stream entries are erased by the caller)."""
    ids = [c for c in dict.fromkeys(customer_ids) if c]
    if not ids:
        return []
    params = {"ids": ids}
    stores: set[str] = set()
    rows = await session.execute(
        text(
            "WITH gone AS (DELETE FROM briefings WHERE customer_id = ANY(:ids)"
            " RETURNING briefing_id, store_id), fb AS (DELETE FROM action_feedback"
            " WHERE briefing_id IN (SELECT briefing_id FROM gone)) SELECT store_id FROM gone"
        ),
        params,
    )
    stores.update(r[0] for r in rows)
    rows = await session.execute(
        text("DELETE FROM handoffs WHERE customer_id = ANY(:ids) RETURNING store_id"), params
    )
    stores.update(r[0] for r in rows if r[0])
    for table in (
        "check_ins",
        "messages",
        "customer_preferences",
        "consent_cache",
        "wishlist_watch",
    ):
        await session.execute(text(f"DELETE FROM {table} WHERE customer_id = ANY(:ids)"), params)
    return sorted(stores)


async def pending_feed(session: AsyncSession, store_ids: Sequence[str]) -> list[tuple[int, bytes]]:
    """Feed items of these stores still queued for their streams: (seq, body)."""
    rows = await session.execute(
        text("SELECT seq, body FROM feed_pending WHERE store_id = ANY(:s) FOR UPDATE"),
        {"s": list(store_ids)},
    )
    return [(int(r[0]), bytes(r[1])) for r in rows]


async def drop_pending_feed(session: AsyncSession, seqs: Sequence[int]) -> None:
    await session.execute(text("DELETE FROM feed_pending WHERE seq = ANY(:s)"), {"s": list(seqs)})
