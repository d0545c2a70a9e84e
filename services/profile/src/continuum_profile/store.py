"""Every query of the profile service (PostgreSQL, asyncpg under SQLAlchemy).

Hot paths (ingestion, the deriver, the summary read) run on the pooled connection's asyncpg
driver directly, each statement inside a span of its own; the rest use SQLAlchemy
``text()`` in the caller's session.

Lock order, the same for every writer so that none can deadlock: ``dirty_customers`` rows
first, in customer id order (ingestion upserts the rows of the customers a batch touches
before it inserts their events; identity's event handlers do the same); then events,
profiles, consents and aliases. The deriver leases due rows in one statement with
``SKIP LOCKED`` (it never waits, and holds no lock while it computes), writes profiles in
a transaction that locks no queue row, and releases its queue rows after that commit, in
a statement of their own. Because an ingest locks its customers' dirty rows before it
inserts their events and until it commits, one customer's ingests commit one after the
other in ``seq`` order and none is in flight when the customer is leased, so the
deriver's per-customer watermark (``profiles.last_seq``) never skips an event; its write
checks the watermark it started from, so two passes on one customer cannot both apply.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry import trace
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from continuum_runtime.db import Database
from continuum_runtime.paging import bad_page_token, decode_page_token, encode_page_token
from continuum_runtime.telemetry import db_span

_tracer = trace.get_tracer("continuum_profile.store")


def _span(name: str) -> Any:
    return db_span(_tracer, name)


# --- ingestion -----------------------------------------------------------------------------


@dataclass
class EventRow:
    event_id: str
    fingerprint: bytes
    customer_id: str | None
    anonymous: bool
    device_id: str | None
    device_only: bool
    event_type: int
    channel: int
    occur_time: datetime
    payload: bytes


_MARK_DIRTY = """
INSERT INTO dirty_customers (customer_id, since, due_at, rebuild)
SELECT c, now(), now() + make_interval(secs => $2), $3
FROM (SELECT DISTINCT COALESCE(a.survivor, u.c) AS c
      FROM unnest($1::text[]) AS u(c) LEFT JOIN customer_aliases a ON a.alias = u.c) AS d
ORDER BY c
ON CONFLICT (customer_id) DO UPDATE
SET rebuild = dirty_customers.rebuild OR excluded.rebuild, gen = dirty_customers.gen + 1,
    due_at = LEAST(dirty_customers.due_at, excluded.due_at)
"""

_INSERT_EVENTS = """
INSERT INTO events (event_id, fingerprint, customer_id, origin_customer_id, anonymous,
                    device_id, device_only, event_type, channel, occur_time, receive_time,
                    payload)
SELECT u.event_id, u.fp, COALESCE(a.survivor, u.cid), u.cid, u.anon, u.dev, u.dev_only,
       u.etype, u.ch, u.occur, $11, u.payload
FROM unnest($1::text[], $2::bytea[], $3::text[], $4::bool[], $5::text[], $6::bool[],
            $7::int2[], $8::int2[], $9::timestamptz[], $10::bytea[])
     AS u(event_id, fp, cid, anon, dev, dev_only, etype, ch, occur, payload)
LEFT JOIN customer_aliases a ON a.alias = u.cid
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id, customer_id
"""

_INSERT_OUTBOX = """
INSERT INTO outbox (event_id, producer, event_type, subject, envelope)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[])
"""


async def mark_dirty(
    driver: Any, customer_ids: Sequence[str], delay_s: float, rebuild: bool
) -> None:
    if customer_ids:
        with _span("INSERT profile.mark_dirty"):
            await driver.execute(_MARK_DIRTY, list(customer_ids), delay_s, rebuild)


async def insert_events(
    driver: Any, rows: Sequence[EventRow], receive_time: datetime
) -> dict[str, str | None]:
    """Insert the events not stored yet; their event id -> stored customer id."""
    with _span("INSERT profile.events"):
        inserted = await driver.fetch(
            _INSERT_EVENTS,
            [r.event_id for r in rows],
            [r.fingerprint for r in rows],
            [r.customer_id for r in rows],
            [r.anonymous for r in rows],
            [r.device_id for r in rows],
            [r.device_only for r in rows],
            [r.event_type for r in rows],
            [r.channel for r in rows],
            [r.occur_time for r in rows],
            [r.payload for r in rows],
            receive_time,
        )
    return {r[0]: r[1] for r in inserted}


async def fingerprints(driver: Any, event_ids: Sequence[str]) -> dict[str, bytes]:
    with _span("SELECT profile.fingerprints"):
        rows = await driver.fetch(
            "SELECT event_id, fingerprint FROM events WHERE event_id = ANY($1::text[])",
            list(event_ids),
        )
    return {r[0]: bytes(r[1]) for r in rows}


@dataclass
class OutboxRow:
    event_id: str  # uuid
    event_type: str
    subject: str
    envelope: bytes


async def insert_outbox(driver: Any, rows: Sequence[OutboxRow]) -> None:
    if not rows:
        return
    with _span("INSERT profile.outbox"):
        await driver.execute(
            _INSERT_OUTBOX,
            [uuid.UUID(r.event_id) for r in rows],
            ["profile"] * len(rows),
            [r.event_type for r in rows],
            [r.subject for r in rows],
            [r.envelope for r in rows],
        )


# --- unresolved events ---------------------------------------------------------------------


async def claim_unresolved(driver: Any, limit: int) -> list[Any]:
    with _span("SELECT profile.unresolved"):
        rows: list[Any] = await driver.fetch(
            "SELECT seq, event_id, channel, occur_time, payload, receive_time FROM events "
            "WHERE customer_id IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
            limit,
        )
    return rows


async def set_resolved(
    driver: Any, seqs: Sequence[int], customers: Sequence[str], anonymous: Sequence[bool]
) -> None:
    with _span("UPDATE profile.resolved"):
        await driver.execute(
            "UPDATE events e SET customer_id = COALESCE(a.survivor, u.cid), "
            "origin_customer_id = u.cid, anonymous = u.anon "
            "FROM unnest($1::bigint[], $2::text[], $3::bool[]) AS u(seq, cid, anon) "
            "LEFT JOIN customer_aliases a ON a.alias = u.cid WHERE e.seq = u.seq",
            list(seqs),
            list(customers),
            list(anonymous),
        )


# --- the deriver ---------------------------------------------------------------------------


@dataclass
class Claimed:
    customer_id: str
    since: datetime
    rebuild: bool
    gen: int
    # When it came due (before this lease).
    due_at: datetime


async def claim_dirty(driver: Any, limit: int, lease_s: float) -> list[Claimed]:
    """Lease due customers for ``lease_s`` (one statement, locks released at once). A row
    changed since (``gen``) stays queued when the pass finishes; a crashed pass's lease
    runs out and another pass takes the customer."""
    with _span("UPDATE profile.claim_dirty"):
        rows = await driver.fetch(
            "UPDATE dirty_customers d SET due_at = now() + make_interval(secs => $2) "
            "FROM (SELECT customer_id, due_at FROM dirty_customers WHERE due_at <= now() "
            " ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED) AS c "
            "WHERE d.customer_id = c.customer_id "
            "RETURNING d.customer_id, d.since, d.rebuild, d.gen, c.due_at",
            limit,
            lease_s,
        )
    return [Claimed(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def unlease(driver: Any, customer_ids: Sequence[str]) -> None:
    """A failed pass gives its customers back at once (rather than when the lease ends)."""
    with _span("UPDATE profile.unlease_dirty"):
        await driver.execute(
            "UPDATE dirty_customers SET due_at = now() "
            "WHERE customer_id = ANY($1::text[]) AND due_at > now()",
            list(customer_ids),
        )


async def release(driver: Any, claimed: Sequence[Claimed]) -> None:
    """Drop the queue entries of a finished pass, unless they changed since the claim."""
    with _span("DELETE profile.release_dirty"):
        await driver.execute(
            "WITH l AS (SELECT d.customer_id FROM dirty_customers d "
            " JOIN unnest($1::text[], $2::bigint[]) AS u(c, g) "
            " ON d.customer_id = u.c AND d.gen = u.g "
            " ORDER BY d.customer_id FOR UPDATE OF d) "
            "DELETE FROM dirty_customers d USING l WHERE d.customer_id = l.customer_id",
            [c.customer_id for c in claimed],
            [c.gen for c in claimed],
        )


@dataclass
class ProfileState:
    customer_id: str
    state: bytes | None
    last_seq: int
    revision: int
    published_at: datetime | None


async def load_states(driver: Any, customer_ids: Sequence[str]) -> dict[str, ProfileState]:
    with _span("SELECT profile.states"):
        rows = await driver.fetch(
            "SELECT customer_id, state, last_seq, revision, published_at FROM profiles "
            "WHERE customer_id = ANY($1::text[])",
            list(customer_ids),
        )
    return {
        r[0]: ProfileState(r[0], bytes(r[1]) if r[1] is not None else None, r[2], r[3], r[4])
        for r in rows
    }


async def new_events(driver: Any, customer_ids: Sequence[str], after: Sequence[int]) -> list[Any]:
    """(customer_id, seq, payload) of each customer's events after its watermark."""
    with _span("SELECT profile.new_events"):
        async with driver.transaction():
            # One index range per customer: OFFSET 0 keeps the LATERAL subquery from being
            # flattened into a hash join over the whole event log, and JIT (which the
            # planner's row estimate would trigger) costs more than the query.
            await driver.execute("SET LOCAL jit = off")
            rows: list[Any] = await driver.fetch(
                "SELECT e.customer_id, e.seq, e.payload "
                "FROM unnest($1::text[], $2::bigint[]) AS w(cid, after) "
                "CROSS JOIN LATERAL (SELECT x.customer_id, x.seq, x.payload FROM events x "
                "WHERE x.customer_id = w.cid AND x.seq > w.after OFFSET 0) AS e "
                "ORDER BY e.seq",
                list(customer_ids),
                list(after),
            )
    return rows


@dataclass
class DerivedRow:
    customer_id: str
    # None: unchanged (a pass that only publishes).
    state: bytes | None
    summary: bytes | None
    last_seq: int
    published: bool
    # The watermark the pass started from; -1 when the customer had no profile row.
    expected_seq: int


_SAVE_DERIVED = """
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bigint[], $5::bool[],
                         $6::bigint[]) AS u(cid, state, summary, last_seq, pub, expected)
    ORDER BY cid
), locked AS (
    SELECT p.customer_id FROM profiles p JOIN u ON p.customer_id = u.cid
    ORDER BY p.customer_id FOR UPDATE OF p
), updated AS (
    UPDATE profiles p SET state = COALESCE(u.state, p.state),
        summary = COALESCE(u.summary, p.summary), last_seq = u.last_seq,
        revision = p.revision + 1, update_time = now(),
        published_at = CASE WHEN u.pub THEN now() ELSE p.published_at END
    FROM u JOIN locked l ON l.customer_id = u.cid
    WHERE p.customer_id = u.cid AND u.expected >= 0 AND p.last_seq = u.expected
    RETURNING p.customer_id, p.revision
), inserted AS (
    INSERT INTO profiles (customer_id, state, summary, last_seq, revision, published_at)
    SELECT u.cid, u.state, u.summary, u.last_seq, 1, CASE WHEN u.pub THEN now() END
    FROM u WHERE u.expected < 0
    ON CONFLICT (customer_id) DO NOTHING
    RETURNING customer_id, revision
)
SELECT * FROM updated UNION ALL SELECT * FROM inserted
"""


async def save_derived(driver: Any, rows: Sequence[DerivedRow]) -> dict[str, int]:
    """Write derived state and summary where the watermark is still the one the pass read
    (another pass may have written meanwhile); each written customer's new revision."""
    with _span("UPSERT profile.derived"):
        result = await driver.fetch(
            _SAVE_DERIVED,
            [r.customer_id for r in rows],
            [r.state for r in rows],
            [r.summary for r in rows],
            [r.last_seq for r in rows],
            [r.published for r in rows],
            [r.expected_seq for r in rows],
        )
    return {r[0]: r[1] for r in result}


async def requeue(driver: Any, customer_ids: Sequence[str], due_in_s: Sequence[float]) -> None:
    """Come back to these customers later (a debounced profile_updated to publish)."""
    due = dict(zip(customer_ids, due_in_s, strict=True))  # one row per customer
    customer_ids, due_in_s = list(due), list(due.values())
    if not customer_ids:
        return
    with _span("INSERT profile.requeue"):
        await driver.execute(
            "INSERT INTO dirty_customers (customer_id, since, due_at, rebuild) "
            "SELECT u.cid, now(), now() + make_interval(secs => u.s), false "
            "FROM unnest($1::text[], $2::float8[]) AS u(cid, s) ORDER BY u.cid "
            "ON CONFLICT (customer_id) DO UPDATE SET due_at = LEAST(dirty_customers.due_at, "
            "excluded.due_at), gen = dirty_customers.gen + 1",
            list(customer_ids),
            list(due_in_s),
        )


# --- reads ---------------------------------------------------------------------------------

_SUMMARY_SQL = """
SELECT p.customer_id, p.summary, p.display_name, p.loyalty_tier, p.time_zone,
       p.recognition_granted AND (p.recognition_expire IS NULL OR p.recognition_expire > now())
FROM profiles p
WHERE p.customer_id = COALESCE((SELECT survivor FROM customer_aliases WHERE alias = $1), $1)
"""


async def summary_row(db: Database, customer_id: str) -> Any | None:
    rows = await db.fetch("SELECT profile.summary", _SUMMARY_SQL, customer_id)
    return rows[0] if rows else None


async def survivor_of(session: AsyncSession, customer_id: str) -> str:
    row = (
        await session.execute(
            text("SELECT survivor FROM customer_aliases WHERE alias = :a"), {"a": customer_id}
        )
    ).first()
    return str(row[0]) if row else customer_id


async def profile_row(session: AsyncSession, customer_id: str, lock: bool = False) -> Any | None:
    sql = (
        "SELECT customer_id, contact, loyalty_tier, contact_preferences, time_zone, state, "
        "revision, create_time, update_time, display_name FROM profiles WHERE customer_id = :c"
    )
    if lock:
        sql += " FOR UPDATE"
    return (await session.execute(text(sql), {"c": customer_id})).first()


async def ensure_profile(session: AsyncSession, customer_id: str) -> None:
    await session.execute(
        text("INSERT INTO profiles (customer_id) VALUES (:c) ON CONFLICT DO NOTHING"),
        {"c": customer_id},
    )


async def update_profile_fields(
    session: AsyncSession,
    customer_id: str,
    contact: bytes | None,
    display_name: str,
    loyalty_tier: str,
    preferences: bytes | None,
    time_zone: str,
) -> int:
    row = (
        await session.execute(
            text(
                "UPDATE profiles SET contact = :contact, display_name = :dn, "
                "loyalty_tier = :tier, contact_preferences = :prefs, time_zone = :tz, "
                "revision = revision + 1, update_time = now() WHERE customer_id = :c "
                "RETURNING revision"
            ),
            {
                "c": customer_id,
                "contact": contact,
                "dn": display_name,
                "tier": loyalty_tier,
                "prefs": preferences,
                "tz": time_zone,
            },
        )
    ).one()
    return int(row[0])


async def has_events(session: AsyncSession, customer_id: str) -> bool:
    row = (
        await session.execute(
            text("SELECT 1 FROM events WHERE customer_id = :c LIMIT 1"), {"c": customer_id}
        )
    ).first()
    return row is not None


# --- consents ------------------------------------------------------------------------------


async def consents(session: AsyncSession, customer_id: str) -> list[bytes]:
    rows = await session.execute(
        text("SELECT consent FROM consents WHERE customer_id = :c ORDER BY channel, purpose"),
        {"c": customer_id},
    )
    return [bytes(r[0]) for r in rows]


async def consent(
    session: AsyncSession, customer_id: str, channel: int, purpose: int
) -> bytes | None:
    row = (
        await session.execute(
            text(
                "SELECT consent FROM consents WHERE customer_id = :c AND channel = :ch "
                "AND purpose = :p"
            ),
            {"c": customer_id, "ch": channel, "p": purpose},
        )
    ).first()
    return bytes(row[0]) if row else None


async def put_consent(
    session: AsyncSession,
    customer_id: str,
    channel: int,
    purpose: int,
    payload: bytes,
    consent_time: datetime,
) -> None:
    await session.execute(
        text(
            "INSERT INTO consents (customer_id, channel, purpose, consent, consent_time) "
            "VALUES (:c, :ch, :p, :payload, :t) ON CONFLICT (customer_id, channel, purpose) "
            "DO UPDATE SET consent = excluded.consent, consent_time = excluded.consent_time"
        ),
        {"c": customer_id, "ch": channel, "p": purpose, "payload": payload, "t": consent_time},
    )


async def set_recognition(
    session: AsyncSession, customer_id: str, granted: bool, expire: datetime | None
) -> None:
    await session.execute(
        text(
            "UPDATE profiles SET recognition_granted = :g, recognition_expire = :e, "
            "revision = revision + 1, update_time = now() WHERE customer_id = :c"
        ),
        {"c": customer_id, "g": granted, "e": expire},
    )


# --- the timeline --------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    occur_us: int
    seq: int
    filters: str

    def encode(self) -> str:
        return encode_page_token([self.occur_us, self.seq, self.filters])

    @staticmethod
    def decode(token: str, filters: str) -> Cursor:
        values = decode_page_token(token, 3) or []
        try:
            cursor = Cursor(int(values[0]), int(values[1]), str(values[2]))
        except (ValueError, TypeError, IndexError):
            raise bad_page_token(description="not a token this service issued") from None
        if cursor.filters != filters:
            raise bad_page_token(description="issued for other filters; start again without it")
        return cursor


async def list_events(
    session: AsyncSession,
    *,
    customer_id: str | None,
    device_id: str | None,
    channels: Sequence[int],
    event_types: Sequence[int],
    start: datetime | None,
    end: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[Any]:
    where = ["e.customer_id = :subject" if customer_id is not None else "e.device_id = :subject"]
    params: dict[str, Any] = {"subject": customer_id if customer_id is not None else device_id}
    if channels:
        where.append("e.channel = ANY(CAST(:channels AS int2[]))")
        params["channels"] = list(channels)
    if event_types:
        where.append("e.event_type = ANY(CAST(:types AS int2[]))")
        params["types"] = list(event_types)
    if start is not None:
        where.append("e.occur_time >= :start")
        params["start"] = start
    if end is not None:
        where.append("e.occur_time < :end")
        params["end"] = end
    if after is not None:
        where.append("(e.occur_time, e.seq) < (:after_t, :after_s)")
        params["after_t"], params["after_s"] = after
    sql = (
        "SELECT e.seq, e.customer_id, e.anonymous, e.device_id, e.event_type, e.occur_time, "
        "e.receive_time, e.payload FROM events e WHERE "
        + " AND ".join(where)
        + " ORDER BY e.occur_time DESC, e.seq DESC LIMIT :limit"
    )
    params["limit"] = limit
    return list((await session.execute(text(sql), params)).all())


# --- identity's events ---------------------------------------------------------------------


async def mark_dirty_in(session: AsyncSession, customer_ids: Sequence[str], rebuild: bool) -> None:
    """The session's variant of :func:`mark_dirty` (handlers run in a session)."""
    if customer_ids:
        await session.execute(
            text(
                "INSERT INTO dirty_customers (customer_id, since, due_at, rebuild) "
                "SELECT c, now(), now(), :r FROM unnest(CAST(:ids AS text[])) AS u(c) "
                "ORDER BY c ON CONFLICT (customer_id) DO UPDATE "
                "SET rebuild = dirty_customers.rebuild OR excluded.rebuild, due_at = now(), "
                "gen = dirty_customers.gen + 1"
            ),
            {"ids": sorted(set(customer_ids)), "r": rebuild},
        )


async def rekey_merged(session: AsyncSession, survivor: str, merged: Sequence[str]) -> int:
    result = await session.execute(
        text("UPDATE events SET customer_id = :s WHERE customer_id = ANY(CAST(:m AS text[]))"),
        {"s": survivor, "m": list(merged)},
    )
    await session.execute(
        text("UPDATE customer_aliases SET survivor = :s WHERE survivor = ANY(CAST(:m AS text[]))"),
        {"s": survivor, "m": list(merged)},
    )
    await session.execute(
        text(
            "INSERT INTO customer_aliases (alias, survivor) "
            "SELECT m, :s FROM unnest(CAST(:m AS text[])) AS u(m) "
            "ON CONFLICT (alias) DO UPDATE SET survivor = excluded.survivor"
        ),
        {"s": survivor, "m": list(merged)},
    )
    await session.execute(
        text("DELETE FROM dirty_customers WHERE customer_id = ANY(CAST(:m AS text[]))"),
        {"m": list(merged)},
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def set_known(session: AsyncSession, customer_id: str) -> None:
    await session.execute(
        text("UPDATE events SET anonymous = false WHERE customer_id = :c AND anonymous"),
        {"c": customer_id},
    )


async def any_known(session: AsyncSession, customer_id: str) -> bool:
    row = (
        await session.execute(
            text("SELECT 1 FROM events WHERE customer_id = :c AND NOT anonymous LIMIT 1"),
            {"c": customer_id},
        )
    ).first()
    return row is not None


async def move_part(
    session: AsyncSession,
    from_customer: str,
    part_customer: str,
    origin_ids: Sequence[str],
    device_ids: Sequence[str],
) -> int:
    """Unmerge: events of ``from_customer`` that came from the part go back to it."""
    result = await session.execute(
        text(
            "UPDATE events SET customer_id = :p WHERE customer_id = :f AND "
            "(origin_customer_id = ANY(CAST(:o AS text[])) OR "
            "(device_only AND device_id = ANY(CAST(:d AS text[]))))"
        ),
        {"p": part_customer, "f": from_customer, "o": list(origin_ids), "d": list(device_ids)},
    )
    await session.execute(
        text("DELETE FROM customer_aliases WHERE alias = :p"), {"p": part_customer}
    )
    if origin_ids:
        await session.execute(
            text(
                "INSERT INTO customer_aliases (alias, survivor) "
                "SELECT a, :p FROM unnest(CAST(:a AS text[])) AS u(a) WHERE a <> :p "
                "ON CONFLICT (alias) DO UPDATE SET survivor = excluded.survivor"
            ),
            {"p": part_customer, "a": list(origin_ids)},
        )
    return int(getattr(result, "rowcount", 0) or 0)


async def move_device(
    session: AsyncSession, device_id: str, previous: str, customer_id: str
) -> int:
    result = await session.execute(
        text(
            "UPDATE events SET customer_id = :c, anonymous = false WHERE customer_id = :p "
            "AND device_only AND device_id = :d"
        ),
        {"c": customer_id, "p": previous, "d": device_id},
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def merge_profile_data(session: AsyncSession, survivor: str, merged: Sequence[str]) -> None:
    """Consents of the merged customers join the survivor's (the newer answer per channel
    and purpose wins); the survivor gets a profile row if it had none."""
    await ensure_profile(session, survivor)
    await session.execute(
        text(
            "INSERT INTO consents (customer_id, channel, purpose, consent, consent_time) "
            "SELECT DISTINCT ON (channel, purpose) :s, channel, purpose, consent, consent_time "
            "FROM consents WHERE customer_id = ANY(CAST(:m AS text[])) "
            "ORDER BY channel, purpose, consent_time DESC "
            "ON CONFLICT (customer_id, channel, purpose) DO UPDATE SET "
            "consent = excluded.consent, consent_time = excluded.consent_time "
            "WHERE consents.consent_time < excluded.consent_time"
        ),
        {"s": survivor, "m": list(merged)},
    )


async def profile_contacts(session: AsyncSession, customer_ids: Sequence[str]) -> list[Any]:
    return list(
        (
            await session.execute(
                text(
                    "SELECT customer_id, contact, loyalty_tier, contact_preferences, time_zone "
                    "FROM profiles WHERE customer_id = ANY(CAST(:c AS text[]))"
                ),
                {"c": list(customer_ids)},
            )
        ).all()
    )


async def devices_of(session: AsyncSession, customer_ids: Sequence[str]) -> list[str]:
    rows = await session.execute(
        text(
            "SELECT DISTINCT device_id FROM events WHERE customer_id = ANY(CAST(:c AS text[])) "
            "AND device_id IS NOT NULL"
        ),
        {"c": list(customer_ids)},
    )
    return [str(r[0]) for r in rows]


async def aliases_of(session: AsyncSession, customer_id: str) -> list[str]:
    rows = await session.execute(
        text("SELECT alias FROM customer_aliases WHERE survivor = :c"), {"c": customer_id}
    )
    return [str(r[0]) for r in rows]


async def forget(
    session: AsyncSession, customer_ids: Sequence[str], device_ids: Sequence[str]
) -> int:
    """Erase the customers' events (and anonymous events of their devices), profiles,
    consents, queue entries and aliases. Returns the number of events erased."""
    ids = sorted(set(customer_ids))
    await session.execute(
        text(
            "SELECT customer_id FROM dirty_customers WHERE customer_id = ANY(CAST(:c AS text[])) "
            "ORDER BY customer_id FOR UPDATE"
        ),
        {"c": ids},
    )
    result = await session.execute(
        text(
            "DELETE FROM events WHERE customer_id = ANY(CAST(:c AS text[])) OR "
            "(device_id = ANY(CAST(:d AS text[])) AND customer_id IS NULL)"
        ),
        {"c": ids, "d": list(device_ids)},
    )
    for sql in (
        "DELETE FROM profiles WHERE customer_id = ANY(CAST(:c AS text[]))",
        "DELETE FROM consents WHERE customer_id = ANY(CAST(:c AS text[]))",
        "DELETE FROM dirty_customers WHERE customer_id = ANY(CAST(:c AS text[]))",
        "DELETE FROM customer_aliases WHERE alias = ANY(CAST(:c AS text[])) "
        "OR survivor = ANY(CAST(:c AS text[]))",
    ):
        await session.execute(text(sql), {"c": ids})
    return int(getattr(result, "rowcount", 0) or 0)


async def raw_driver(conn: AsyncConnection) -> Any:
    raw = await conn.get_raw_connection()
    return raw.driver_connection


__all__ = ["Database"]
