"""Every query of the inventory service (PostgreSQL through SQLAlchemy on asyncpg).

Functions take the caller's session, so that one mutation is one transaction. Lock order,
the same for every writer so that writers cannot deadlock: a reservation row (FOR UPDATE)
first, then stock levels in (sku, location_id) order (code point order: Python's sort and
PostgreSQL's COLLATE "C"). A stock level changes through :func:`change_level`: one
statement that updates the level under a condition, appends the ledger entry with the
level's new revision as its sequence, and returns the level with what its signals need.
Reservations are decided in batches instead: :func:`lock_levels` locks every level of a
batch in that order, and :func:`apply_reservations` writes the batch's levels, ledger
entries and reservation rows in one statement.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry import trace
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from continuum_inventory.domain import SignalState, Threshold
from continuum_runtime import idempotency
from continuum_runtime.db import Database, Executor, Record, positional
from continuum_runtime.telemetry import db_span

_tracer = trace.get_tracer(__name__)

ITEM_COLS = (
    "sku, product_id, name, description, brand, category, colour, size, currency, "
    "price_minor, attributes, image_url, state, gtin, etag, create_time, update_time"
)
LOCATION_COLS = (
    "location_id, name, type, latitude, longitude, time_zone, address, pickup_capable, "
    "ship_from_capable, pickup_buffer, state, etag, create_time, update_time"
)
LEVEL_COLS = (
    "sku, location_id, on_hand, reserved, safety_stock, incoming, revision, "
    "next_incoming_time, low_stock, out_of_stock_since, low_fired_at, back_fired_at, "
    "signal_recheck_at, update_time"
)
RESERVATION_COLS = (
    "reservation_id, seq, kind, state, skus, location_ids, quantities, reference, "
    "customer_id, request_id, create_time, expire_time, commit_time, release_time, "
    "release_reason"
)
LEDGER_COLS = (
    "entry_id, sequence, sku, location_id, type, d_on_hand, d_reserved, d_safety_stock, "
    "d_incoming, on_hand, reserved, safety_stock, incoming, reason, note, request_id, "
    "reservation_id, reference, actor, create_time"
)
# The rule in force for (:sku, :loc): the most specific stored one (NULLs: the default
# from the configuration applies).
_THRESHOLD_LATERAL = (
    "LEFT JOIN LATERAL (SELECT t.sku AS t_sku, t.location_id AS t_loc, t.low_threshold, "
    "t.recover_threshold, t.back_in_stock_quantity, t.cooldown_s, t.update_time AS t_time "
    "FROM low_stock_thresholds t WHERE (t.sku, t.location_id) IN "
    "(({sku}, {loc}), ({sku}, ''), ('', {loc}), ('', '')) "
    "ORDER BY t.sku = '', t.location_id = '' LIMIT 1) th ON true"
)


async def driver_of(session: AsyncSession) -> Any:
    """The asyncpg connection under the session's transaction (hot paths: a third of
    SQLAlchemy's per-statement cost)."""
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    return raw.driver_connection


async def fetch_all(
    session: AsyncSession, sql: str, values: dict[str, Any], span: str = "inventory.write"
) -> list[Record]:
    query, names = positional(sql)
    driver = await driver_of(session)
    with db_span(_tracer, span):
        rows = await driver.fetch(query, *(values[n] for n in names))
    return [Record(row) for row in rows]


async def fetch_one(session: AsyncSession, sql: str, values: dict[str, Any]) -> Record | None:
    rows = await fetch_all(session, sql, values)
    return rows[0] if rows else None


def new_etag() -> str:
    return uuid.uuid4().hex[:16]


def json_value(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        value = json.loads(value)
    return {str(k): str(v) for k, v in (value or {}).items()}


@dataclass(frozen=True)
class Defaults:
    """Configured defaults that queries need."""

    pickup_buffer: int
    threshold: Threshold


def threshold_of(row: Any, defaults: Defaults) -> Threshold:
    if row.low_threshold is None:
        return defaults.threshold
    return Threshold(
        sku=row.t_sku,
        location_id=row.t_loc,
        low=row.low_threshold,
        recover=row.recover_threshold,
        back_in_stock=row.back_in_stock_quantity,
        cooldown_s=row.cooldown_s,
        update_time=row.t_time,
    )


# --- items -------------------------------------------------------------------------------


async def insert_item(session: AsyncSession, values: dict[str, Any]) -> Any | None:
    """The new row, or None if the SKU exists."""
    row = await session.execute(
        text(
            "INSERT INTO items (sku, product_id, name, description, brand, category, colour, "
            "size, currency, price_minor, attributes, image_url, state, gtin, etag) VALUES "
            "(:sku, :product_id, :name, :description, :brand, :category, :colour, :size, "
            ":currency, :price_minor, CAST(:attributes AS jsonb), :image_url, :state, :gtin, "
            f":etag) ON CONFLICT (sku) DO NOTHING RETURNING {ITEM_COLS}"
        ),
        {**values, "attributes": json.dumps(values["attributes"]), "etag": new_etag()},
    )
    return row.first()


async def get_item(session: AsyncSession, sku: str, *, lock: bool = False) -> Any | None:
    sql = f"SELECT {ITEM_COLS} FROM items WHERE sku = :sku"
    if lock:
        sql += " FOR UPDATE"
    return (await session.execute(text(sql), {"sku": sku})).first()


async def update_item(session: AsyncSession, sku: str, values: dict[str, Any]) -> Any:
    sets = ", ".join(
        f"{k} = CAST(:{k} AS jsonb)" if k == "attributes" else f"{k} = :{k}" for k in values
    )
    params = dict(values)
    if "attributes" in params:
        params["attributes"] = json.dumps(params["attributes"])
    row = await session.execute(
        text(
            f"UPDATE items SET {sets}, etag = :etag, update_time = now() WHERE sku = :sku "
            f"RETURNING {ITEM_COLS}"
        ),
        {**params, "sku": sku, "etag": new_etag()},
    )
    return row.one()


async def items_by_sku(
    session: AsyncSession | AsyncConnection, skus: Sequence[str]
) -> dict[str, Any]:
    rows = await session.execute(
        text(f"SELECT {ITEM_COLS} FROM items WHERE sku = ANY(:skus)"), {"skus": list(skus)}
    )
    return {r.sku: r for r in rows}


async def list_items(
    session: AsyncSession,
    *,
    product_id: str,
    category: str,
    brand: str,
    states: Sequence[int],
    updated_from: datetime | None,
    updated_to: datetime | None,
    after: str,
    limit: int,
) -> list[Any]:
    where = ["sku > :after"]
    params: dict[str, Any] = {"after": after, "limit": limit}
    if product_id:
        where.append("product_id = :product_id")
        params["product_id"] = product_id
    if category:
        where.append("(category = :category OR starts_with(category, :category_prefix))")
        params["category"] = category
        params["category_prefix"] = category + " > "
    if brand:
        where.append("brand = :brand")
        params["brand"] = brand
    if states:
        where.append("state = ANY(:states)")
        params["states"] = list(states)
    if updated_from is not None:
        where.append("update_time >= :updated_from")
        params["updated_from"] = updated_from
    if updated_to is not None:
        where.append("update_time < :updated_to")
        params["updated_to"] = updated_to
    rows = await session.execute(
        text(
            f"SELECT {ITEM_COLS} FROM items WHERE {' AND '.join(where)} ORDER BY sku LIMIT :limit"
        ),
        params,
    )
    return list(rows)


# --- locations ---------------------------------------------------------------------------


async def insert_location(session: AsyncSession, values: dict[str, Any]) -> Any | None:
    row = await session.execute(
        text(
            "INSERT INTO locations (location_id, name, type, latitude, longitude, time_zone, "
            "address, pickup_capable, ship_from_capable, pickup_buffer, state, etag) VALUES "
            "(:location_id, :name, :type, :latitude, :longitude, :time_zone, :address, "
            ":pickup_capable, :ship_from_capable, :pickup_buffer, :state, :etag) "
            f"ON CONFLICT (location_id) DO NOTHING RETURNING {LOCATION_COLS}"
        ),
        {**values, "etag": new_etag()},
    )
    return row.first()


async def get_location(
    session: AsyncSession | AsyncConnection, location_id: str, *, lock: bool = False
) -> Any | None:
    sql = f"SELECT {LOCATION_COLS} FROM locations WHERE location_id = :id"
    if lock:
        sql += " FOR UPDATE"
    return (await session.execute(text(sql), {"id": location_id})).first()


async def update_location(session: AsyncSession, location_id: str, values: dict[str, Any]) -> Any:
    sets = ", ".join(f"{k} = :{k}" for k in values)
    row = await session.execute(
        text(
            f"UPDATE locations SET {sets}, etag = :etag, update_time = now() "
            f"WHERE location_id = :location_id RETURNING {LOCATION_COLS}"
        ),
        {**values, "location_id": location_id, "etag": new_etag()},
    )
    return row.one()


async def locations_by_id(
    session: AsyncSession | AsyncConnection, ids: Sequence[str]
) -> dict[str, Any]:
    rows = await session.execute(
        text(f"SELECT {LOCATION_COLS} FROM locations WHERE location_id = ANY(:ids)"),
        {"ids": list(ids)},
    )
    return {r.location_id: r for r in rows}


async def list_locations(
    session: AsyncSession,
    *,
    types: Sequence[int],
    states: Sequence[int],
    pickup_only: bool,
    ship_from_only: bool,
    after: str,
    limit: int,
) -> list[Any]:
    where = ["location_id > :after"]
    params: dict[str, Any] = {"after": after, "limit": limit}
    if types:
        where.append("type = ANY(:types)")
        params["types"] = list(types)
    if states:
        where.append("state = ANY(:states)")
        params["states"] = list(states)
    if pickup_only:
        where.append("pickup_capable")
    if ship_from_only:
        where.append("ship_from_capable")
    rows = await session.execute(
        text(
            f"SELECT {LOCATION_COLS} FROM locations WHERE {' AND '.join(where)} "
            "ORDER BY location_id LIMIT :limit"
        ),
        params,
    )
    return list(rows)


# --- stock levels ------------------------------------------------------------------------


async def levels_with_rules(
    session: AsyncSession | AsyncConnection, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Any]:
    """The stored levels of these pairs with the rule in force for each (pairs without a
    level are absent)."""
    if not pairs:
        return {}
    lateral = _THRESHOLD_LATERAL.format(sku="q.sku", loc="q.loc")
    cols = ", ".join(f"s.{c.strip()}" for c in LEVEL_COLS.split(","))
    rows = await session.execute(
        text(
            f"SELECT {cols}, th.* FROM unnest(CAST(:skus AS text[]), CAST(:locs AS text[])) "
            "AS q(sku, loc) JOIN stock_levels s ON s.sku = q.sku AND s.location_id = q.loc "
            f"{lateral}"
        ),
        {"skus": [p[0] for p in pairs], "locs": [p[1] for p in pairs]},
    )
    return {(r.sku, r.location_id): r for r in rows}


async def rules_for(
    session: AsyncSession | AsyncConnection, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Any]:
    """The stored rule in force for each pair (a row whose fields are NULL: the default)."""
    if not pairs:
        return {}
    lateral = _THRESHOLD_LATERAL.format(sku="q.sku", loc="q.loc")
    rows = await session.execute(
        text(
            "SELECT q.sku, q.loc, th.* FROM unnest(CAST(:skus AS text[]), "
            f"CAST(:locs AS text[])) AS q(sku, loc) {lateral}"
        ),
        {"skus": [p[0] for p in pairs], "locs": [p[1] for p in pairs]},
    )
    return {(r.sku, r.loc): r for r in rows}


async def lock_level(session: AsyncSession, sku: str, location_id: str) -> Any:
    """The level of the pair, created at zero if missing, locked for the transaction."""
    await session.execute(
        text(
            "INSERT INTO stock_levels (sku, location_id) VALUES (:sku, :loc) ON CONFLICT DO NOTHING"
        ),
        {"sku": sku, "loc": location_id},
    )
    row = await session.execute(
        text(
            f"SELECT {LEVEL_COLS} FROM stock_levels WHERE sku = :sku AND location_id = :loc "
            "FOR UPDATE"
        ),
        {"sku": sku, "loc": location_id},
    )
    return row.one()


@dataclass(frozen=True)
class LedgerMeta:
    type: int
    reason: str
    request_id: str
    note: str = ""
    reservation_id: str = ""
    reference: str = ""
    actor: str = ""


_CHANGE_SQL = """
WITH u AS (
  UPDATE stock_levels s SET {sets}, revision = s.revision + 1, update_time = now()
  FROM items i, locations l
  WHERE s.sku = :sku AND s.location_id = :loc AND i.sku = :sku AND l.location_id = :loc
    AND ({condition})
  RETURNING s.sku, s.location_id, s.on_hand, s.reserved, s.safety_stock, s.incoming,
    s.revision, s.next_incoming_time, s.low_stock, s.out_of_stock_since, s.low_fired_at,
    s.back_fired_at, s.signal_recheck_at, s.update_time, i.state AS item_state,
    i.product_id, i.name AS item_name, l.type AS loc_type, l.pickup_capable,
    l.state AS loc_state, COALESCE(l.pickup_buffer, :dbuf) AS pickup_buffer, l.time_zone
), led AS (
  INSERT INTO stock_ledger (sku, location_id, sequence, type, d_on_hand, d_reserved,
    d_safety_stock, d_incoming, on_hand, reserved, safety_stock, incoming, reason, note,
    request_id, reservation_id, reference, actor)
  SELECT u.sku, u.location_id, u.revision, :type, :d_on, :d_res, :d_safe, :d_inc,
    u.on_hand, u.reserved, u.safety_stock,
    u.incoming, :reason, :note, :rid, :resid, :ref, :actor FROM u
  RETURNING entry_id, create_time, d_on_hand, d_reserved, d_safety_stock, d_incoming
)
SELECT u.*, led.entry_id, led.create_time AS entry_time, led.d_on_hand, led.d_reserved,
  led.d_safety_stock, led.d_incoming, th.*
FROM u CROSS JOIN led {lateral}
"""


def _change_sql(sets: str, condition: str) -> str:
    return _CHANGE_SQL.format(
        sets=sets,
        condition=condition,
        lateral=_THRESHOLD_LATERAL.format(sku=":sku", loc=":loc"),
    )


async def change_level(
    session: AsyncSession,
    sku: str,
    location_id: str,
    *,
    on_hand: int = 0,
    reserved: int = 0,
    safety_stock: int = 0,
    incoming: int = 0,
    condition: str = "true",
    extra_sets: str = "",
    params: dict[str, Any] | None = None,
    meta: LedgerMeta,
    default_buffer: int,
) -> Any | None:
    """Apply signed deltas to a level in one statement, if ``condition`` holds (SQL over
    ``s`` the level, ``i`` the item, ``l`` the location); append the ledger entry. Returns
    the new level with item, location, ledger entry and rule columns, or None when the
    condition failed (or the level, item or location does not exist)."""
    sets = (
        "on_hand = s.on_hand + :d_on, reserved = s.reserved + :d_res, "
        "safety_stock = s.safety_stock + :d_safe, incoming = s.incoming + :d_inc"
    )
    if extra_sets:
        sets += ", " + extra_sets
    values = {
        "sku": sku,
        "loc": location_id,
        "dbuf": default_buffer,
        "type": meta.type,
        "d_on": on_hand,
        "d_res": reserved,
        "d_safe": safety_stock,
        "d_inc": incoming,
        "reason": meta.reason,
        "note": meta.note,
        "rid": meta.request_id,
        "resid": meta.reservation_id,
        "ref": meta.reference,
        "actor": meta.actor,
        **(params or {}),
    }
    return await fetch_one(session, _change_sql(sets, condition), values)


async def save_signals(
    session: AsyncSession, sku: str, location_id: str, state: SignalState
) -> None:
    await session.execute(
        text(
            "UPDATE stock_levels SET low_stock = :low, out_of_stock_since = :oos, "
            "low_fired_at = :lf, back_fired_at = :bf, signal_recheck_at = :recheck "
            "WHERE sku = :sku AND location_id = :loc"
        ),
        {
            "sku": sku,
            "loc": location_id,
            "low": state.low_stock,
            "oos": state.out_of_stock_since,
            "lf": state.low_fired_at,
            "bf": state.back_fired_at,
            "recheck": state.recheck_at,
        },
    )


async def recheck_due(session: AsyncSession, limit: int, default_buffer: int) -> list[Any]:
    """Levels whose signal cooldown has ended, locked (SKIP LOCKED), with their context."""
    lateral = _THRESHOLD_LATERAL.format(sku="s.sku", loc="s.location_id")
    cols = ", ".join(f"s.{c.strip()}" for c in LEVEL_COLS.split(","))
    rows = await session.execute(
        text(
            f"SELECT {cols}, i.state AS item_state, i.product_id, i.name AS item_name, "
            "l.type AS loc_type, l.pickup_capable, l.state AS loc_state, "
            "COALESCE(l.pickup_buffer, :dbuf) AS pickup_buffer, l.time_zone, th.* "
            "FROM (SELECT sku, location_id FROM stock_levels WHERE signal_recheck_at <= now() "
            "ORDER BY sku, location_id LIMIT :limit FOR UPDATE SKIP LOCKED) k "
            "JOIN stock_levels s USING (sku, location_id) JOIN items i ON i.sku = s.sku "
            f"JOIN locations l ON l.location_id = s.location_id {lateral}"
        ),
        {"limit": limit, "dbuf": default_buffer},
    )
    return list(rows)


async def list_levels(
    session: AsyncSession,
    *,
    sku: str,
    location_id: str,
    after: tuple[str, str],
    limit: int,
    changed_since: datetime | None = None,
) -> list[Any]:
    where = ["(s.sku, s.location_id) > (:after_sku, :after_loc)"]
    params: dict[str, Any] = {"after_sku": after[0], "after_loc": after[1], "limit": limit}
    if changed_since is not None:
        # filtered below the threshold lookup, which then runs for the changed levels only
        where.append("(s.update_time >= :since OR l.update_time >= :since)")
        params["since"] = changed_since
    if sku:
        where.append("s.sku = :sku")
        params["sku"] = sku
    if location_id:
        where.append("s.location_id = :loc")
        params["loc"] = location_id
    lateral = _THRESHOLD_LATERAL.format(sku="s.sku", loc="s.location_id")
    cols = ", ".join(f"s.{c.strip()}" for c in LEVEL_COLS.split(","))
    rows = await session.execute(
        text(
            f"SELECT {cols}, l.type AS loc_type, l.pickup_capable, l.state AS loc_state, "
            "l.pickup_buffer AS own_buffer, th.* FROM stock_levels s "
            "JOIN locations l ON l.location_id = s.location_id "
            f"{lateral} WHERE {' AND '.join(where)} "
            "ORDER BY s.sku, s.location_id LIMIT :limit"
        ),
        params,
    )
    return list(rows)


async def changes_from(session: AsyncSession) -> datetime:
    """Where a later listing of changes starts: the database's time at the start of this
    transaction, less a minute for changes whose transactions were still open."""
    at = await session.scalar(text("SELECT now() - interval '1 minute'"))
    assert isinstance(at, datetime)
    return at


async def list_ledger(
    session: AsyncSession,
    *,
    sku: str,
    location_id: str,
    types: Sequence[int],
    reservation_id: str,
    start: datetime | None,
    end: datetime | None,
    after: int,
    limit: int,
) -> list[Any]:
    where = ["entry_id > :after"]
    params: dict[str, Any] = {"after": after, "limit": limit}
    if sku:
        where.append("sku = :sku")
        params["sku"] = sku
    if location_id:
        where.append("location_id = :loc")
        params["loc"] = location_id
    if types:
        where.append("type = ANY(:types)")
        params["types"] = list(types)
    if reservation_id:
        where.append("reservation_id = :resid")
        params["resid"] = reservation_id
    if start is not None:
        where.append("create_time >= :start")
        params["start"] = start
    if end is not None:
        where.append("create_time < :end")
        params["end"] = end
    rows = await session.execute(
        text(
            f"SELECT {LEDGER_COLS} FROM stock_ledger WHERE {' AND '.join(where)} "
            "ORDER BY entry_id LIMIT :limit"
        ),
        params,
    )
    return list(rows)


async def reconcile(
    session: AsyncSession, skus: Sequence[str], location_ids: Sequence[str]
) -> tuple[int, int, list[Any], datetime]:
    """Levels in scope vs their ledger sums and their active reservations (one snapshot)."""
    where = ["true"]
    params: dict[str, Any] = {}
    if skus:
        where.append("s.sku = ANY(:skus)")
        params["skus"] = list(skus)
    if location_ids:
        where.append("s.location_id = ANY(:locs)")
        params["locs"] = list(location_ids)
    cond = " AND ".join(where)
    res_where = ["r.state = 1"]
    if skus:
        res_where.append("r.skus && CAST(:skus AS text[])")
    if location_ids:
        res_where.append("r.location_ids && CAST(:locs AS text[])")
    sql = (
        "WITH lv AS (SELECT s.sku, s.location_id, s.on_hand, s.reserved, s.safety_stock, "
        f"s.incoming, s.revision FROM stock_levels s WHERE {cond}), "
        "lg AS (SELECT g.sku, g.location_id, sum(g.d_on_hand) AS on_hand, "
        "sum(g.d_reserved) AS reserved, sum(g.d_safety_stock) AS safety_stock, "
        "sum(g.d_incoming) AS incoming, count(*) AS entries FROM stock_ledger g "
        "JOIN lv ON lv.sku = g.sku AND lv.location_id = g.location_id "
        "GROUP BY g.sku, g.location_id), "
        "ar AS (SELECT x.sku, x.loc, sum(x.q) AS q FROM reservations r, "
        "unnest(r.skus, r.location_ids, r.quantities) AS x(sku, loc, q) "
        f"WHERE {' AND '.join(res_where)} GROUP BY x.sku, x.loc) "
        "SELECT lv.*, COALESCE(lg.on_hand, 0) AS l_on_hand, "
        "COALESCE(lg.reserved, 0) AS l_reserved, COALESCE(lg.safety_stock, 0) AS l_safety, "
        "COALESCE(lg.incoming, 0) AS l_incoming, COALESCE(lg.entries, 0) AS l_entries, "
        "COALESCE(ar.q, 0) AS active_reserved FROM lv "
        "LEFT JOIN lg ON lg.sku = lv.sku AND lg.location_id = lv.location_id "
        "LEFT JOIN ar ON ar.sku = lv.sku AND ar.loc = lv.location_id "
        "WHERE lv.on_hand <> COALESCE(lg.on_hand, 0) OR lv.reserved <> COALESCE(lg.reserved, 0) "
        "OR lv.safety_stock <> COALESCE(lg.safety_stock, 0) "
        "OR lv.incoming <> COALESCE(lg.incoming, 0) OR lv.revision <> COALESCE(lg.entries, 0) "
        "OR lv.reserved <> COALESCE(ar.q, 0) OR lv.on_hand < 0 OR lv.reserved < 0 "
        "OR lv.safety_stock < 0 OR lv.incoming < 0 "
        "ORDER BY lv.sku, lv.location_id"
    )
    await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
    now = (await session.execute(text("SELECT now()"))).scalar_one()
    checked = (
        await session.execute(text(f"SELECT count(*) FROM stock_levels s WHERE {cond}"), params)
    ).scalar_one()
    rows = list(await session.execute(text(sql), params))
    return int(checked), len(rows), rows[:1000], now


# --- reservations ------------------------------------------------------------------------


async def choose_ship_from(session: Executor, sku: str, quantity: int) -> tuple[str | None, int]:
    """The active ship-from location with the most available (ties by id), if it covers
    ``quantity``; and the most any single one has."""
    row = (
        await session.execute(
            text(
                "SELECT s.location_id, greatest(0, s.on_hand - s.reserved - s.safety_stock) "
                "AS atp FROM stock_levels s JOIN locations l ON l.location_id = s.location_id "
                "WHERE s.sku = :sku AND l.ship_from_capable AND l.state = 1 "
                "ORDER BY atp DESC, s.location_id LIMIT 1"
            ),
            {"sku": sku},
        )
    ).first()
    if row is None:
        return None, 0
    return (row.location_id if row.atp >= quantity else None), int(row.atp)


async def diagnose_lines(
    session: Executor, lines: Sequence[tuple[str, str]], default_buffer: int
) -> list[Any]:
    """For each (sku, location): what exists and what is available, in order."""
    rows = await session.execute(
        text(
            "SELECT q.n, q.sku, q.loc, i.sku IS NOT NULL AS item_exists, i.state AS item_state, "
            "l.location_id IS NOT NULL AS loc_exists, l.state AS loc_state, l.type AS loc_type, "
            "l.pickup_capable, COALESCE(l.pickup_buffer, :dbuf) AS pickup_buffer, "
            "s.sku IS NOT NULL AS stocked, s.on_hand, s.reserved, s.safety_stock "
            "FROM unnest(CAST(:skus AS text[]), CAST(:locs AS text[])) WITH ORDINALITY "
            "AS q(sku, loc, n) LEFT JOIN items i ON i.sku = q.sku "
            "LEFT JOIN locations l ON l.location_id = q.loc "
            "LEFT JOIN stock_levels s ON s.sku = q.sku AND s.location_id = q.loc ORDER BY q.n"
        ),
        {"skus": [x[0] for x in lines], "locs": [x[1] for x in lines], "dbuf": default_buffer},
    )
    return list(rows)


_LOCK_LEVELS = """
SELECT {cols}, i.state AS item_state, i.product_id, i.name AS item_name, l.type AS loc_type,
  l.pickup_capable, l.state AS loc_state, COALESCE(l.pickup_buffer, :dbuf) AS pickup_buffer,
  l.time_zone, th.*, now() AS now,
  (SELECT array_agg(nextval(pg_get_serial_sequence('stock_ledger', 'entry_id')))
   FROM generate_series(1, :entry_ids)) AS entry_ids
FROM stock_levels s JOIN items i ON i.sku = s.sku JOIN locations l ON l.location_id = s.location_id
{lateral}
WHERE (s.sku, s.location_id) IN
  (SELECT * FROM unnest(CAST(:skus AS text[]), CAST(:locs AS text[])))
ORDER BY s.sku COLLATE "C", s.location_id COLLATE "C"
FOR UPDATE OF s
"""


@dataclass(frozen=True)
class Locked:
    """Levels locked for a reservation batch."""

    levels: list[dict[str, Any]]  # change_level's columns, before the change
    entry_ids: Iterator[int]  # ledger entry ids set aside for the batch's changes, ascending
    now: datetime  # the transaction's time


async def lock_levels(
    session: Executor, pairs: Sequence[tuple[str, str]], default_buffer: int, entry_ids: int
) -> Locked | None:
    """The existing levels of (sku, location) pairs, locked in the writers' lock order
    (code point order, as Python sorts), each with its item, location and rule columns;
    with ``entry_ids`` ledger entry ids set aside. None when none of the pairs has a
    level."""
    sql = _LOCK_LEVELS.format(
        cols=", ".join(f"s.{c.strip()}" for c in LEVEL_COLS.split(",")),
        lateral=_THRESHOLD_LATERAL.format(sku="s.sku", loc="s.location_id"),
    )
    rows = await session.execute(
        text(sql),
        {
            "skus": [p[0] for p in pairs],
            "locs": [p[1] for p in pairs],
            "dbuf": default_buffer,
            "entry_ids": entry_ids,
        },
    )
    levels = [row._asdict() for row in rows]  # a session Row or a driver Record
    if not levels:
        return None
    first = levels[0]
    return Locked(levels, iter(sorted(first["entry_ids"] or ())), first["now"])


@dataclass(frozen=True)
class NewReservation:
    reservation_id: str
    kind: int
    lines: Sequence[tuple[str, str, int]]  # sku, location_id, quantity
    reference: str
    customer_id: str
    request_id: str
    expire_time: datetime


@dataclass(frozen=True)
class LevelWrite:
    """A level's counts and signal state after a batch (absolute: the row is locked)."""

    sku: str
    location_id: str
    reserved: int
    revision: int
    signals: SignalState


@dataclass(frozen=True)
class ReserveEntry:
    entry_id: int
    sku: str
    location_id: str
    sequence: int
    quantity: int
    on_hand: int
    reserved: int
    safety_stock: int
    incoming: int
    meta: LedgerMeta


_APPLY_RESERVATIONS = """
WITH lv AS (
  UPDATE stock_levels s SET reserved = v.reserved, revision = v.revision, low_stock = v.low,
    out_of_stock_since = v.oos, low_fired_at = v.lf, back_fired_at = v.bf,
    signal_recheck_at = v.recheck, update_time = now()
  FROM unnest(CAST(:l_sku AS text[]), CAST(:l_loc AS text[]), CAST(:l_reserved AS int[]),
    CAST(:l_revision AS bigint[]), CAST(:l_low AS bool[]), CAST(:l_oos AS timestamptz[]),
    CAST(:l_lf AS timestamptz[]), CAST(:l_bf AS timestamptz[]),
    CAST(:l_recheck AS timestamptz[])) AS v(sku, loc, reserved, revision, low, oos, lf, bf, recheck)
  WHERE s.sku = v.sku AND s.location_id = v.loc
), lines AS (
  SELECT owner, array_agg(sku ORDER BY m) AS skus, array_agg(loc ORDER BY m) AS locs,
    array_agg(q ORDER BY m) AS qs
  FROM unnest(CAST(:x_owner AS bigint[]), CAST(:x_sku AS text[]), CAST(:x_loc AS text[]),
    CAST(:x_q AS int[])) WITH ORDINALITY AS x(owner, sku, loc, q, m)
  GROUP BY owner
), rsv AS (
  INSERT INTO reservations (reservation_id, kind, skus, location_ids, quantities, reference,
    customer_id, request_id, expire_time)
  SELECT r.id, r.kind, lines.skus, lines.locs, lines.qs, r.ref, r.cust, r.rid, r.exp
  FROM unnest(CAST(:r_id AS text[]), CAST(:r_kind AS smallint[]), CAST(:r_ref AS text[]),
    CAST(:r_cust AS text[]), CAST(:r_rid AS text[]), CAST(:r_exp AS timestamptz[]))
    WITH ORDINALITY AS r(id, kind, ref, cust, rid, exp, n)
  JOIN lines ON lines.owner = r.n
), ob AS (
  {outbox}
), log AS (
  {remember}
)
INSERT INTO stock_ledger (entry_id, sku, location_id, sequence, type, d_on_hand, d_reserved,
  d_safety_stock, d_incoming, on_hand, reserved, safety_stock, incoming, reason, note,
  request_id, reservation_id, reference, actor) OVERRIDING SYSTEM VALUE
SELECT e.id, e.sku, e.loc, e.seq, e.type, 0, e.q, 0, 0, e.on_hand, e.reserved, e.safety,
  e.incoming, e.reason, '', e.rid, e.resid, e.ref, e.actor
FROM unnest(CAST(:e_id AS bigint[]), CAST(:e_sku AS text[]), CAST(:e_loc AS text[]),
  CAST(:e_seq AS bigint[]),
  CAST(:e_type AS smallint[]), CAST(:e_q AS int[]), CAST(:e_on_hand AS int[]),
  CAST(:e_reserved AS int[]), CAST(:e_safety AS int[]), CAST(:e_incoming AS int[]),
  CAST(:e_reason AS text[]), CAST(:e_rid AS text[]), CAST(:e_resid AS text[]),
  CAST(:e_ref AS text[]), CAST(:e_actor AS text[]))
  AS e(id, sku, loc, seq, type, q, on_hand, reserved, safety, incoming, reason, rid, resid, ref,
    actor)
"""


async def apply_reservations(
    session: Executor,
    levels: Sequence[LevelWrite],
    reservations: Sequence[NewReservation],
    entries: Sequence[ReserveEntry],
    events: Sequence[dict[str, Any]],
    answers: dict[str, Any],
) -> None:
    """A reservation batch's writes in one statement: the levels' new counts and signal
    state, the reservation rows, the ledger entries, the outbox rows and the answers for
    the request log (``idempotency.remember_values``)."""
    lines = [(n, line) for n, r in enumerate(reservations, start=1) for line in r.lines]
    await session.execute(
        text(_APPLY_SQL),
        {
            **answers,
            **_outbox_values(events),
            "l_sku": [w.sku for w in levels],
            "l_loc": [w.location_id for w in levels],
            "l_reserved": [w.reserved for w in levels],
            "l_revision": [w.revision for w in levels],
            "l_low": [w.signals.low_stock for w in levels],
            "l_oos": [w.signals.out_of_stock_since for w in levels],
            "l_lf": [w.signals.low_fired_at for w in levels],
            "l_bf": [w.signals.back_fired_at for w in levels],
            "l_recheck": [w.signals.recheck_at for w in levels],
            "x_owner": [n for n, _ in lines],
            "x_sku": [line[0] for _, line in lines],
            "x_loc": [line[1] for _, line in lines],
            "x_q": [line[2] for _, line in lines],
            "r_id": [r.reservation_id for r in reservations],
            "r_kind": [r.kind for r in reservations],
            "r_ref": [r.reference for r in reservations],
            "r_cust": [r.customer_id for r in reservations],
            "r_rid": [r.request_id for r in reservations],
            "r_exp": [r.expire_time for r in reservations],
            "e_id": [e.entry_id for e in entries],
            "e_sku": [e.sku for e in entries],
            "e_loc": [e.location_id for e in entries],
            "e_seq": [e.sequence for e in entries],
            "e_type": [e.meta.type for e in entries],
            "e_q": [e.quantity for e in entries],
            "e_on_hand": [e.on_hand for e in entries],
            "e_reserved": [e.reserved for e in entries],
            "e_safety": [e.safety_stock for e in entries],
            "e_incoming": [e.incoming for e in entries],
            "e_reason": [e.meta.reason for e in entries],
            "e_rid": [e.meta.request_id for e in entries],
            "e_resid": [e.meta.reservation_id for e in entries],
            "e_ref": [e.meta.reference for e in entries],
            "e_actor": [e.meta.actor for e in entries],
        },
    )


_INSERT_EVENTS = (
    "INSERT INTO outbox (event_id, producer, event_type, subject, envelope) "
    "SELECT * FROM unnest(CAST(:ob_id AS uuid[]), CAST(:ob_producer AS text[]), "
    "CAST(:ob_type AS text[]), CAST(:ob_subject AS text[]), CAST(:ob_envelope AS bytea[]))"
)
_APPLY_SQL = _APPLY_RESERVATIONS.format(
    outbox=_INSERT_EVENTS, remember=idempotency.REMEMBER_MANY_SQL
)


def _outbox_values(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "ob_id": [r["event_id"] for r in rows],
        "ob_producer": [r["producer"] for r in rows],
        "ob_type": [r["event_type"] for r in rows],
        "ob_subject": [r["subject"] for r in rows],
        "ob_envelope": [r["envelope"] for r in rows],
    }


async def insert_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Outbox rows (see continuum_runtime.events.outbox) in one statement."""
    await fetch_all(session, _INSERT_EVENTS, _outbox_values(rows), span="INSERT inventory.outbox")


async def get_reservation(
    session: AsyncSession, reservation_id: str, *, lock: bool = False, skip_locked: bool = False
) -> Any | None:
    sql = f"SELECT {RESERVATION_COLS}, expire_time <= now() AS due FROM reservations WHERE reservation_id = :id"
    if lock:
        sql += " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"
    return (await session.execute(text(sql), {"id": reservation_id})).first()


async def finish_reservation(
    session: AsyncSession, reservation_id: str, state: int, reason: str
) -> Any:
    column = "commit_time" if state == 2 else "release_time"
    row = await session.execute(
        text(
            f"UPDATE reservations SET state = :state, {column} = now(), release_reason = :reason "
            f"WHERE reservation_id = :id RETURNING {RESERVATION_COLS}"
        ),
        {"state": state, "reason": reason, "id": reservation_id},
    )
    return row.one()


async def expired_reservation_ids(session: AsyncSession, limit: int) -> list[str]:
    rows = await session.execute(
        text(
            "SELECT reservation_id FROM reservations WHERE state = 1 AND expire_time <= now() "
            "ORDER BY expire_time LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [r.reservation_id for r in rows]


async def list_reservations(
    session: AsyncSession,
    *,
    location_id: str,
    sku: str,
    reference: str,
    kind: int,
    states: Sequence[int],
    before: int,
    limit: int,
) -> list[Any]:
    where = ["seq < :before"]
    params: dict[str, Any] = {"before": before, "limit": limit}
    if location_id:
        where.append("location_ids @> ARRAY[CAST(:loc AS text)]")
        params["loc"] = location_id
    if sku:
        where.append("skus @> ARRAY[CAST(:sku AS text)]")
        params["sku"] = sku
    if reference:
        where.append("reference = :ref")
        params["ref"] = reference
    if kind:
        where.append("kind = :kind")
        params["kind"] = kind
    if states:
        where.append("state = ANY(:states)")
        params["states"] = list(states)
    rows = await session.execute(
        text(
            f"SELECT {RESERVATION_COLS} FROM reservations WHERE {' AND '.join(where)} "
            "ORDER BY seq DESC LIMIT :limit"
        ),
        params,
    )
    return list(rows)


# --- availability (hot path) -------------------------------------------------------------

# The low-stock rules that can apply (the SKUs' own at the location or anywhere, the
# location's, the global one) are read once into a small set, and each SKU takes the most
# specific: half the buffer reads of a rule lookup per SKU.
_AVAILABILITY_SQL = """
WITH rules AS MATERIALIZED (
    SELECT sku, location_id, low_threshold FROM low_stock_thresholds
    WHERE sku = ANY(array_append($2::text[], '')) AND location_id IN ($1, '')
)
SELECT q.sku, i.sku IS NOT NULL, s.on_hand, s.reserved, s.safety_stock, s.incoming,
       s.next_incoming_time,
       (SELECT r.low_threshold FROM rules r WHERE r.sku IN (q.sku, '')
        ORDER BY r.sku = '', r.location_id = '' LIMIT 1),
       loc.type, loc.state, loc.pickup_capable, COALESCE(loc.pickup_buffer, $3)
FROM (SELECT type, state, pickup_capable, pickup_buffer FROM locations
      WHERE location_id = $1) loc
CROSS JOIN unnest($2::text[]) WITH ORDINALITY AS q(sku, n)
LEFT JOIN items i ON i.sku = q.sku
LEFT JOIN stock_levels s ON s.sku = q.sku AND s.location_id = $1
ORDER BY q.n
"""


async def availability(
    db: Database, location_id: str, skus: Sequence[str], default_buffer: int
) -> list[Any]:
    """Everything CheckAvailability needs in one statement, on the driver-level read pool:
    the location, each SKU's existence, level and rule."""
    return await db.fetch(
        "SELECT inventory.availability", _AVAILABILITY_SQL, location_id, list(skus), default_buffer
    )


# FindNearbyStock in one statement: the SKUs not in the item master, whether the origin
# store exists, the search point, then one row per (store within the radius, SKU), nearest
# store first, with the level and the low-stock threshold in force (a single row of NULL
# store columns when no store is within the radius).
_NEARBY_SQL = (
    "WITH req AS (SELECT r.sku, r.n FROM unnest($1::text[]) WITH ORDINALITY AS r(sku, n)), "
    "origin AS (SELECT latitude, longitude FROM locations WHERE location_id = $2), "
    "pt AS (SELECT coalesce((SELECT latitude FROM origin), $3::float8) AS lat, "
    "coalesce((SELECT longitude FROM origin), $4::float8) AS lon), "
    f"near AS (SELECT {', '.join('l.' + c.strip() for c in LOCATION_COLS.split(','))}, d.km "
    "FROM locations l CROSS JOIN pt, LATERAL (SELECT 2 * 6371.0088 * asin(least(1.0, "
    "sqrt(power(sin(radians(l.latitude - pt.lat) / 2), 2) + cos(radians(pt.lat)) * "
    "cos(radians(l.latitude)) * power(sin(radians(l.longitude - pt.lon) / 2), 2)))) AS km) d "
    "WHERE l.type = 2 AND l.state = 1 AND d.km <= $5::float8) "
    "SELECT (SELECT array_agg(req.sku ORDER BY req.n) FROM req WHERE NOT EXISTS "
    "(SELECT 1 FROM items i WHERE i.sku = req.sku)) AS missing_skus, "
    "EXISTS (SELECT 1 FROM origin) AS origin_found, pt.lat AS origin_lat, "
    "pt.lon AS origin_lon, x.* FROM pt LEFT JOIN (SELECT near.*, req.sku AS q_sku, req.n, "
    "s.on_hand, s.reserved, s.safety_stock, s.incoming, s.next_incoming_time, "
    "th.low_threshold FROM near CROSS JOIN req "
    "LEFT JOIN stock_levels s ON s.sku = req.sku AND s.location_id = near.location_id "
    "LEFT JOIN LATERAL (SELECT t.low_threshold FROM low_stock_thresholds t "
    "WHERE (t.sku, t.location_id) IN ((req.sku, near.location_id), (req.sku, ''), "
    "('', near.location_id), ('', '')) ORDER BY t.sku = '', t.location_id = '' LIMIT 1) th "
    "ON true) x ON true ORDER BY x.km, x.location_id, x.n"
)


async def nearby_levels(
    db: Database, skus: Sequence[str], origin_id: str, lat: float, lon: float, max_km: float
) -> list[Record]:
    """Everything FindNearbyStock needs in one statement on the driver-level read pool
    (see ``_NEARBY_SQL``); ``origin_id`` empty searches from (lat, lon)."""
    rows = await db.fetch(
        "SELECT inventory.nearby", _NEARBY_SQL, list(skus), origin_id, lat, lon, max_km
    )
    return [Record(r) for r in rows]


async def ship_from_levels(session: AsyncConnection, skus: Sequence[str]) -> list[Any]:
    rows = await session.execute(
        text(
            "SELECT s.sku, s.location_id, greatest(0, s.on_hand - s.reserved - s.safety_stock) "
            "AS atp FROM stock_levels s JOIN locations l ON l.location_id = s.location_id "
            "WHERE s.sku = ANY(:skus) AND l.ship_from_capable AND l.state = 1 "
            "ORDER BY s.sku, atp DESC, s.location_id"
        ),
        {"skus": list(skus)},
    )
    return list(rows)


# --- thresholds --------------------------------------------------------------------------


async def upsert_threshold(session: AsyncSession, values: dict[str, Any]) -> Any:
    row = await session.execute(
        text(
            "INSERT INTO low_stock_thresholds (sku, location_id, low_threshold, "
            "recover_threshold, back_in_stock_quantity, cooldown_s) VALUES (:sku, :loc, :low, "
            ":recover, :back, :cooldown) ON CONFLICT (sku, location_id) DO UPDATE SET "
            "low_threshold = EXCLUDED.low_threshold, recover_threshold = "
            "EXCLUDED.recover_threshold, back_in_stock_quantity = "
            "EXCLUDED.back_in_stock_quantity, cooldown_s = EXCLUDED.cooldown_s, "
            "update_time = now() RETURNING sku AS t_sku, location_id AS t_loc, low_threshold, "
            "recover_threshold, back_in_stock_quantity, cooldown_s, update_time AS t_time"
        ),
        values,
    )
    return row.one()


async def delete_threshold(session: AsyncSession, sku: str, location_id: str) -> bool:
    row = await session.execute(
        text(
            "DELETE FROM low_stock_thresholds WHERE sku = :sku AND location_id = :loc RETURNING sku"
        ),
        {"sku": sku, "loc": location_id},
    )
    return row.first() is not None


async def list_thresholds(
    session: AsyncSession, sku: str, location_id: str, offset: int, limit: int
) -> list[Any]:
    where = ["true"]
    params: dict[str, Any] = {"offset": offset, "limit": limit}
    if sku:
        where.append("sku = :sku")
        params["sku"] = sku
    if location_id:
        where.append("location_id = :loc")
        params["loc"] = location_id
    rows = await session.execute(
        text(
            "SELECT sku AS t_sku, location_id AS t_loc, low_threshold, recover_threshold, "
            "back_in_stock_quantity, cooldown_s, update_time AS t_time "
            f"FROM low_stock_thresholds WHERE {' AND '.join(where)} "
            "ORDER BY CASE WHEN sku <> '' AND location_id <> '' THEN 1 WHEN sku <> '' THEN 2 "
            "WHEN location_id <> '' THEN 3 ELSE 4 END, sku, location_id "
            "OFFSET :offset LIMIT :limit"
        ),
        params,
    )
    return list(rows)


# --- demand ------------------------------------------------------------------------------


async def add_demand(
    session: AsyncSession, sku: str, location_id: str, day: Any, units: int
) -> None:
    await session.execute(
        text(
            "INSERT INTO demand_daily (sku, location_id, day, units) VALUES "
            "(:sku, :loc, :day, :units) ON CONFLICT (sku, location_id, day) "
            "DO UPDATE SET units = demand_daily.units + EXCLUDED.units"
        ),
        {"sku": sku, "loc": location_id, "day": day, "units": units},
    )


async def demand_series(
    session: AsyncSession | AsyncConnection, sku: str, location_id: str
) -> list[Any]:
    where = "sku = :sku" + (" AND location_id = :loc" if location_id else "")
    rows = await session.execute(
        text(
            f"SELECT day, sum(units) AS units FROM demand_daily WHERE {where} "
            "GROUP BY day ORDER BY day"
        ),
        {"sku": sku, "loc": location_id},
    )
    return list(rows)


async def total_atp(session: AsyncSession | AsyncConnection, sku: str, location_id: str) -> int:
    where = "sku = :sku" + (" AND location_id = :loc" if location_id else "")
    row = await session.execute(
        text(
            "SELECT COALESCE(sum(greatest(0, on_hand - reserved - safety_stock)), 0) "
            f"FROM stock_levels WHERE {where}"
        ),
        {"sku": sku, "loc": location_id},
    )
    return int(row.scalar_one())
