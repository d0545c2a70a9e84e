"""Every query of the identity service (PostgreSQL through SQLAlchemy on asyncpg).

Functions take the caller's session, so that one resolve, merge or unmerge is one
transaction. Locks, in the one order every writer takes them (so writers cannot
deadlock): transaction-scoped advisory locks on the identifier values of the request, in
key order; then customer rows FOR UPDATE, in id order; then identifier and link rows.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from continuum.identity.v1 import identity_resources_pb2 as res
from continuum_identity.identifiers import NormalizedIdentifier
from continuum_identity.matching import Traits
from continuum_runtime.db import Database, Executor

ACTIVE, MERGED, FORGOTTEN = 1, 2, 3


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def lock_key(id_type: int, value_hash: bytes) -> int:
    digest = hashlib.blake2b(bytes([id_type]) + value_hash, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass
class IdentifierRow:
    id: int
    type: int
    value_hash: bytes
    masked: str
    device_id: str | None
    customer_id: str
    origin_customer_id: str
    first_seen_channel: int
    first_seen_at: datetime
    last_seen_at: datetime

    @property
    def key(self) -> tuple[int, bytes]:
        return (self.type, self.value_hash)

    def ref(self) -> res.IdentifierRef:
        return res.IdentifierRef(
            type=self.type,  # type: ignore[arg-type]
            value_hash=self.value_hash.hex(),
            masked_value=self.masked,
        )


@dataclass
class CustomerRow:
    id: str
    state: int
    anonymous: bool
    merged_into: str | None
    first_seen_channel: int
    created_at: datetime
    updated_at: datetime
    last_seen_at: datetime


@dataclass
class LinkRow:
    id: str
    customer_id: str
    a_id: int
    b_id: int
    method: int
    rule_id: str
    channel: int
    actor: str
    evidence: list[dict[str, Any]]
    score: float
    created_at: datetime
    removed_at: datetime | None
    removed_by_entry: str | None


@dataclass
class NewLink:
    a_id: int
    b_id: int
    method: int
    rule_id: str
    channel: int
    actor: str
    score: float = 1.0
    evidence: Sequence[dict[str, Any]] = ()


_IDENT_COLS = (
    "id, type, value_hash, masked, device_id, customer_id, origin_customer_id, "
    "first_seen_channel, first_seen_at, last_seen_at"
)
_CUST_COLS = (
    "id, state, anonymous, merged_into, first_seen_channel, created_at, updated_at, last_seen_at"
)
_LINK_COLS = (
    "id, customer_id, a_id, b_id, method, rule_id, channel, actor, evidence, score, "
    "created_at, removed_at, removed_by_entry"
)


def _ident(row: Any) -> IdentifierRow:
    return IdentifierRow(*row)


def _cust(row: Any) -> CustomerRow:
    return CustomerRow(*row)


def _link(row: Any) -> LinkRow:
    return LinkRow(*row)


def refs_json(refs: Iterable[res.IdentifierRef]) -> str:
    return json.dumps(
        [{"type": r.type, "hash": r.value_hash, "masked": r.masked_value} for r in refs]
    )


def refs_from_json(data: Sequence[dict[str, Any]]) -> list[res.IdentifierRef]:
    return [
        res.IdentifierRef(type=d["type"], value_hash=d["hash"], masked_value=d["masked"])
        for d in data
    ]


# --- identifiers -------------------------------------------------------------------------


async def lock_values(
    session: Executor, keys: Iterable[tuple[int, bytes]], extra: Iterable[int] = ()
) -> None:
    """Advisory locks on identifier values (and trait blocks), in one global key order."""
    ordered = sorted({lock_key(t, h) for t, h in keys} | set(extra))
    if ordered:
        await session.execute(
            text(
                "SELECT pg_advisory_xact_lock(k) FROM "
                "(SELECT unnest(CAST(:keys AS bigint[])) AS k ORDER BY 1) AS s"
            ),
            {"keys": ordered},
        )


async def find_identifiers(
    session: Executor, keys: Sequence[tuple[int, bytes]]
) -> dict[tuple[int, bytes], IdentifierRow]:
    if not keys:
        return {}
    rows = await session.execute(
        text(
            f"SELECT {_IDENT_COLS} FROM identifiers WHERE (type, value_hash) IN "
            "(SELECT * FROM unnest(CAST(:types AS smallint[]), CAST(:hashes AS bytea[])))"
        ),
        {"types": [k[0] for k in keys], "hashes": [k[1] for k in keys]},
    )
    found = [_ident(r) for r in rows]
    return {r.key: r for r in found}


@dataclass
class QuickRow:
    key: tuple[int, bytes]
    customer_id: str | None
    active: bool
    anonymous: bool
    blocked: bool


_QUICK_SQL = (
    "SELECT q.type, q.hash, i.customer_id, c.state, c.anonymous, "
    "EXISTS (SELECT 1 FROM blocked_values b WHERE b.type = q.type AND b.value_hash = q.hash), "
    "l.fingerprint, l.response "
    "FROM unnest($1::smallint[], $2::bytea[]) AS q(type, hash) "
    "LEFT JOIN identifiers i ON i.type = q.type AND i.value_hash = q.hash "
    "LEFT JOIN customers c ON c.id = i.customer_id "
    "LEFT JOIN request_log l ON l.method = $3 AND l.request_id = $4"
)


async def quick_lookup(
    db: Database,
    keys: Sequence[tuple[int, bytes]],
    method: str,
    request_id: str,
) -> tuple[list[QuickRow], tuple[bytes, bytes] | None]:
    """Everything the read-only resolve needs, in one round trip: each value's customer,
    whether it is blocked, and the request log's entry for this request id.

    The hottest statement of the service runs on the driver-level read pool (a third of
    SQLAlchemy's cost), inside a span of its own.
    """
    rows = await db.fetch(
        "SELECT identity.quick_lookup",
        _QUICK_SQL,
        [k[0] for k in keys],
        [k[1] for k in keys],
        method,
        request_id,
    )
    earlier = (bytes(rows[0][6]), bytes(rows[0][7])) if rows and rows[0][6] is not None else None
    out = [
        QuickRow(
            key=(r[0], bytes(r[1])),
            customer_id=r[2],
            active=r[3] == ACTIVE,
            anonymous=bool(r[4]),
            blocked=bool(r[5]),
        )
        for r in rows
    ]
    return out, earlier


async def find_with_blocked(
    session: Executor, keys: Sequence[tuple[int, bytes]]
) -> tuple[dict[tuple[int, bytes], IdentifierRow], set[tuple[int, bytes]]]:
    """The stored rows of these values and which of them are blocked, in one round trip."""
    if not keys:
        return {}, set()
    cols = ", ".join(f"i.{c.strip()}" for c in _IDENT_COLS.split(","))
    rows = await session.execute(
        text(
            f"SELECT {cols}, q.type, q.hash, EXISTS (SELECT 1 FROM blocked_values b "
            "WHERE b.type = q.type AND b.value_hash = q.hash) "
            "FROM unnest(CAST(:types AS smallint[]), CAST(:hashes AS bytea[])) AS q(type, hash) "
            "LEFT JOIN identifiers i ON i.type = q.type AND i.value_hash = q.hash"
        ),
        {"types": [k[0] for k in keys], "hashes": [k[1] for k in keys]},
    )
    found: dict[tuple[int, bytes], IdentifierRow] = {}
    blocked: set[tuple[int, bytes]] = set()
    for r in rows:
        if r[0] is not None:
            row = _ident(r[:10])
            found[row.key] = row
        if r[12]:
            blocked.add((r[10], bytes(r[11])))
    return found, blocked


async def identifiers_of(
    session: Executor,
    customer_ids: Sequence[str],
    *,
    types: Sequence[int] = (),
    after_id: int = 0,
    limit: int | None = None,
) -> list[IdentifierRow]:
    sql = f"SELECT {_IDENT_COLS} FROM identifiers WHERE customer_id = ANY(:ids) AND id > :after"
    params: dict[str, Any] = {"ids": list(customer_ids), "after": after_id}
    if types:
        sql += " AND type = ANY(CAST(:types AS smallint[]))"
        params["types"] = list(types)
    sql += " ORDER BY id"
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    return [_ident(r) for r in await session.execute(text(sql), params)]


async def insert_identifier(
    session: Executor,
    item: NormalizedIdentifier,
    customer_id: str,
    channel: int,
    at: datetime,
) -> IdentifierRow:
    return (await insert_identifiers(session, [item], customer_id, channel, at))[0]


async def insert_identifiers(
    session: Executor,
    items: Sequence[NormalizedIdentifier],
    customer_id: str,
    channel: int,
    at: datetime,
) -> list[IdentifierRow]:
    """Identifiers of one customer in one statement; their rows in the order given."""
    rows = await session.execute(
        text(
            "INSERT INTO identifiers (type, value_hash, masked, device_id, customer_id,"
            " origin_customer_id, first_seen_channel, first_seen_at, last_seen_at)"
            " SELECT i.type, i.hash, i.masked, i.device, :cid, :cid, :channel, :at, :at"
            " FROM unnest(CAST(:types AS int[]), CAST(:hashes AS bytea[]),"
            " CAST(:masked AS text[]), CAST(:devices AS text[])) AS i(type, hash, masked, device)"
            f" RETURNING {_IDENT_COLS}"
        ),
        {
            "cid": customer_id,
            "channel": channel,
            "at": at,
            "types": [int(i.type) for i in items],
            "hashes": [i.value_hash for i in items],
            "masked": [i.masked for i in items],
            "devices": [i.raw_device_id for i in items],
        },
    )
    by_key = {r.key: r for r in map(_ident, rows)}
    return [by_key[i.key] for i in items]


async def repoint_identifiers(
    session: Executor, identifier_ids: Sequence[int], customer_id: str
) -> None:
    if identifier_ids:
        await session.execute(
            text("UPDATE identifiers SET customer_id = :cid WHERE id = ANY(:ids)"),
            {"cid": customer_id, "ids": list(identifier_ids)},
        )


async def move_all_identifiers(session: Executor, from_ids: Sequence[str], to_id: str) -> None:
    await session.execute(
        text("UPDATE identifiers SET customer_id = :to WHERE customer_id = ANY(:from)"),
        {"to": to_id, "from": list(from_ids)},
    )


async def touch(session: Executor, ids: Sequence[int], customer_id: str, at: datetime) -> None:
    """Last seen, in one statement: the identifiers ``ids`` and their customer."""
    await session.execute(
        text(
            "WITH seen AS (UPDATE identifiers SET last_seen_at = GREATEST(last_seen_at, :at) "
            "WHERE id = ANY(:ids)) "
            "UPDATE customers SET last_seen_at = GREATEST(last_seen_at, :at) WHERE id = :id"
        ),
        {"ids": list(ids), "id": customer_id, "at": at},
    )


async def type_counts(
    session: Executor, customer_ids: Sequence[str], since: datetime | None = None
) -> dict[tuple[str, int], int]:
    sql = "SELECT customer_id, type, count(*) FROM identifiers WHERE customer_id = ANY(:ids)"
    params: dict[str, Any] = {"ids": list(customer_ids)}
    if since is not None:
        sql += " AND first_seen_at >= :since"
        params["since"] = since
    sql += " GROUP BY customer_id, type"
    return {(r[0], r[1]): r[2] for r in await session.execute(text(sql), params)}


async def values_of_types(
    session: Executor, customer_ids: Sequence[str], types: Sequence[int]
) -> dict[str, set[tuple[int, bytes]]]:
    out: dict[str, set[tuple[int, bytes]]] = {cid: set() for cid in customer_ids}
    if not types:
        return out
    rows = await session.execute(
        text(
            "SELECT customer_id, type, value_hash FROM identifiers "
            "WHERE customer_id = ANY(:ids) AND type = ANY(CAST(:types AS smallint[]))"
        ),
        {"ids": list(customer_ids), "types": list(types)},
    )
    for cid, t, h in rows:
        out.setdefault(cid, set()).add((t, bytes(h)))
    return out


async def type_facts(
    session: Executor, customer_ids: Sequence[str], unique_types: Sequence[int]
) -> tuple[dict[tuple[str, int], int], dict[str, set[tuple[int, bytes]]]]:
    """:func:`type_counts` and :func:`values_of_types` of the same customers, in one
    statement."""
    counts: dict[tuple[str, int], int] = {}
    values: dict[str, set[tuple[int, bytes]]] = {cid: set() for cid in customer_ids}
    rows = await session.execute(
        text(
            "SELECT true AS counted, customer_id, type, count(*) AS n, NULL::bytea AS value_hash "
            "FROM identifiers WHERE customer_id = ANY(:ids) GROUP BY customer_id, type "
            "UNION ALL SELECT false, customer_id, type, 0, value_hash FROM identifiers "
            "WHERE customer_id = ANY(:ids) AND type = ANY(CAST(:types AS smallint[]))"
        ),
        {"ids": list(customer_ids), "types": list(unique_types)},
    )
    for counted, cid, t, n, h in rows:
        if counted:
            counts[(cid, t)] = n
        else:
            values.setdefault(cid, set()).add((t, bytes(h)))
    return counts, values


async def delete_identifiers_of(session: Executor, customer_ids: Sequence[str]) -> None:
    await session.execute(
        text("DELETE FROM identifiers WHERE customer_id = ANY(:ids)"), {"ids": list(customer_ids)}
    )


# --- customers ---------------------------------------------------------------------------


async def create_customer(
    session: Executor, customer_id: str, *, anonymous: bool, channel: int, at: datetime
) -> None:
    await session.execute(
        text(
            "INSERT INTO customers (id, anonymous, first_seen_channel, created_at, updated_at, "
            "last_seen_at) VALUES (:id, :anon, :channel, :at, :at, :at)"
        ),
        {"id": customer_id, "anon": anonymous, "channel": channel, "at": at},
    )


async def lock_customers(session: Executor, ids: Iterable[str]) -> dict[str, CustomerRow]:
    """Lock the ACTIVE customers among ``ids`` (in id order); merged ones are left out.

    Merged-away and forgotten rows are never locked by resolves: a caller that finds one of
    its customers missing read a stale graph and starts again.
    """
    ordered = sorted(set(ids))
    if not ordered:
        return {}
    rows = await session.execute(
        text(
            f"SELECT {_CUST_COLS} FROM customers WHERE id = ANY(:ids) AND state = 1 "
            "ORDER BY id FOR UPDATE"
        ),
        {"ids": ordered},
    )
    return {c.id: c for c in map(_cust, rows)}


async def get_customer(session: Executor, customer_id: str) -> CustomerRow | None:
    row = (
        await session.execute(
            text(f"SELECT {_CUST_COLS} FROM customers WHERE id = :id"), {"id": customer_id}
        )
    ).one_or_none()
    return _cust(row) if row is not None else None


async def aliases_of(session: Executor, customer_id: str) -> list[str]:
    """Every id that resolves to ``customer_id``: merged into it, directly or through others."""
    rows = await session.execute(
        text(
            "WITH RECURSIVE a(id, created_at) AS ("
            " SELECT id, created_at FROM customers WHERE merged_into = :id"
            " UNION SELECT c.id, c.created_at FROM customers c JOIN a ON c.merged_into = a.id)"
            " SELECT id FROM a ORDER BY created_at, id"
        ),
        {"id": customer_id},
    )
    return [r[0] for r in rows]


async def direct_aliases(session: Executor, customer_id: str) -> list[str]:
    rows = await session.execute(
        text("SELECT id FROM customers WHERE merged_into = :id ORDER BY created_at, id"),
        {"id": customer_id},
    )
    return [r[0] for r in rows]


async def count_identifiers(session: Executor, customer_id: str) -> int:
    return int(
        (
            await session.execute(
                text("SELECT count(*) FROM identifiers WHERE customer_id = :id"),
                {"id": customer_id},
            )
        ).scalar_one()
    )


async def mark_merged(
    session: Executor, losers: Sequence[str], survivor: str, at: datetime
) -> None:
    """Losers (locked by the caller) now resolve to ``survivor``; their aliases follow."""
    await session.execute(
        text(
            "UPDATE customers SET state = 2, merged_into = :s, updated_at = :at "
            "WHERE id = ANY(:losers)"
        ),
        {"s": survivor, "losers": list(losers), "at": at},
    )


async def set_customer(
    session: Executor,
    customer_id: str,
    *,
    state: int,
    anonymous: bool,
    merged_into: str | None,
    at: datetime,
) -> None:
    await session.execute(
        text(
            "UPDATE customers SET state = :state, anonymous = :anon, merged_into = :m, "
            "updated_at = :at WHERE id = :id"
        ),
        {"id": customer_id, "state": state, "anon": anonymous, "m": merged_into, "at": at},
    )


async def set_anonymous(session: Executor, customer_id: str, anonymous: bool) -> None:
    await session.execute(
        text("UPDATE customers SET anonymous = :a, updated_at = now() WHERE id = :id"),
        {"a": anonymous, "id": customer_id},
    )


async def repoint_aliases(
    session: Executor, aliases: Sequence[str], customer_id: str, at: datetime
) -> None:
    if aliases:
        await session.execute(
            text(
                "UPDATE customers SET merged_into = :cid, state = 2, updated_at = :at "
                "WHERE id = ANY(:ids)"
            ),
            {"cid": customer_id, "ids": list(aliases), "at": at},
        )


async def forget_customers(session: Executor, ids: Sequence[str], at: datetime) -> None:
    await session.execute(
        text(
            "UPDATE customers SET state = 3, merged_into = NULL, updated_at = :at "
            "WHERE id = ANY(:ids)"
        ),
        {"ids": list(ids), "at": at},
    )


# --- links -------------------------------------------------------------------------------


async def insert_links(
    session: Executor, customer_id: str, links: Sequence[NewLink], at: datetime
) -> list[str]:
    """The links, in one statement; their ids in the order given."""
    if not links:
        return []
    ids = [new_id("lnk") for _ in links]
    await session.execute(
        text(
            "INSERT INTO links (id, customer_id, a_id, b_id, method, rule_id, channel, actor,"
            " evidence, score, created_at) SELECT l.id, :cid, l.a, l.b, l.method, l.rule,"
            " l.channel, l.actor, l.evidence, l.score, :at FROM unnest(CAST(:ids AS text[]),"
            " CAST(:a AS bigint[]), CAST(:b AS bigint[]), CAST(:method AS int[]),"
            " CAST(:rule AS text[]), CAST(:channel AS int[]), CAST(:actor AS text[]),"
            " CAST(:evidence AS jsonb[]), CAST(:score AS float8[]))"
            " AS l(id, a, b, method, rule, channel, actor, evidence, score)"
        ),
        {
            "cid": customer_id,
            "at": at,
            "ids": ids,
            "a": [link.a_id for link in links],
            "b": [link.b_id for link in links],
            "method": [int(link.method) for link in links],
            "rule": [link.rule_id for link in links],
            "channel": [int(link.channel) for link in links],
            "actor": [link.actor for link in links],
            "evidence": [json.dumps(list(link.evidence)) for link in links],
            "score": [float(link.score) for link in links],
        },
    )
    return ids


async def active_links_among(session: Executor, identifier_ids: Sequence[int]) -> list[LinkRow]:
    rows = await session.execute(
        text(
            f"SELECT {_LINK_COLS} FROM links WHERE removed_at IS NULL "
            "AND (a_id = ANY(:ids) OR b_id = ANY(:ids)) ORDER BY created_at, id"
        ),
        {"ids": list(identifier_ids)},
    )
    return [_link(r) for r in rows]


async def links_by_id(session: Executor, link_ids: Sequence[str]) -> list[LinkRow]:
    rows = await session.execute(
        text(f"SELECT {_LINK_COLS} FROM links WHERE id = ANY(:ids)"), {"ids": list(link_ids)}
    )
    return [_link(r) for r in rows]


async def links_of(
    session: Executor,
    identifier_ids: Sequence[int],
    *,
    include_removed: bool,
    after: str = "",
    limit: int = 100,
) -> list[LinkRow]:
    sql = f"SELECT {_LINK_COLS} FROM links WHERE (a_id = ANY(:ids) OR b_id = ANY(:ids))"
    if not include_removed:
        sql += " AND removed_at IS NULL"
    sql += " AND id > :after ORDER BY id LIMIT :limit"
    rows = await session.execute(
        text(sql), {"ids": list(identifier_ids), "after": after, "limit": limit}
    )
    return [_link(r) for r in rows]


async def remove_links(
    session: Executor, link_ids: Sequence[str], entry_id: str, at: datetime
) -> None:
    if link_ids:
        await session.execute(
            text(
                "UPDATE links SET removed_at = :at, removed_by_entry = :entry "
                "WHERE id = ANY(:ids) AND removed_at IS NULL"
            ),
            {"ids": list(link_ids), "entry": entry_id, "at": at},
        )


async def device_links(session: Executor, device_identifier_id: int) -> list[LinkRow]:
    return await active_links_among(session, [device_identifier_id])


# --- merge log ---------------------------------------------------------------------------


@dataclass
class LogEntry:
    action: int
    customer_id: str
    merged_customer_ids: Sequence[str] = ()
    resulting_customer_ids: Sequence[str] = ()
    link_ids: Sequence[str] = ()
    identifiers: Sequence[res.IdentifierRef] = ()
    rule_id: str = ""
    method: int = 0
    score: float = 1.0
    channel: int = 0
    actor: str = ""
    reason: str = ""


_LOG_COLS = (
    "id, action, customer_id, merged_customer_ids, resulting_customer_ids, link_ids, "
    "identifiers, rule_id, method, score, channel, actor, reason, created_at, undone_by, seq"
)


@dataclass
class LogRow:
    id: str
    action: int
    customer_id: str
    merged_customer_ids: list[str]
    resulting_customer_ids: list[str]
    link_ids: list[str]
    identifiers: list[dict[str, Any]]
    rule_id: str
    method: int
    score: float
    channel: int
    actor: str
    reason: str
    created_at: datetime
    undone_by: str | None
    seq: int


async def add_log(
    session: Executor, entry: LogEntry, at: datetime, entry_id: str | None = None
) -> str:
    entry_id = entry_id or new_id("mle")
    subjects = sorted(
        {entry.customer_id, *entry.merged_customer_ids, *entry.resulting_customer_ids}
    )
    await session.execute(
        text(
            "INSERT INTO merge_log (id, action, customer_id, subjects, merged_customer_ids, "
            "resulting_customer_ids, link_ids, identifiers, rule_id, method, score, channel, "
            "actor, reason, created_at) VALUES (:id, :action, :cid, :subjects, :merged, "
            ":resulting, :links, CAST(:idents AS jsonb), :rule, :method, :score, :channel, "
            ":actor, :reason, :at)"
        ),
        {
            "id": entry_id,
            "action": entry.action,
            "cid": entry.customer_id,
            "subjects": subjects,
            "merged": list(entry.merged_customer_ids),
            "resulting": list(entry.resulting_customer_ids),
            "links": list(entry.link_ids),
            "idents": refs_json(entry.identifiers),
            "rule": entry.rule_id,
            "method": entry.method,
            "score": entry.score,
            "channel": entry.channel,
            "actor": entry.actor,
            "reason": entry.reason,
            "at": at,
        },
    )
    return entry_id


async def get_log(session: Executor, entry_id: str, *, lock: bool = False) -> LogRow | None:
    sql = f"SELECT {_LOG_COLS} FROM merge_log WHERE id = :id"
    if lock:
        sql += " FOR UPDATE"
    row = (await session.execute(text(sql), {"id": entry_id})).one_or_none()
    return LogRow(*row) if row is not None else None


async def mark_undone(session: Executor, entry_id: str, by: str) -> None:
    await session.execute(
        text("UPDATE merge_log SET undone_by = :by WHERE id = :id"), {"id": entry_id, "by": by}
    )


async def history(
    session: Executor,
    customer_ids: Sequence[str],
    *,
    start: datetime | None,
    end: datetime | None,
    before_seq: int | None,
    limit: int,
) -> list[LogRow]:
    sql = f"SELECT {_LOG_COLS} FROM merge_log WHERE subjects && CAST(:ids AS text[])"
    params: dict[str, Any] = {"ids": list(customer_ids), "limit": limit}
    if start is not None:
        sql += " AND created_at >= :start"
        params["start"] = start
    if end is not None:
        sql += " AND created_at < :end"
        params["end"] = end
    if before_seq is not None:
        sql += " AND seq < :before"
        params["before"] = before_seq
    sql += " ORDER BY seq DESC LIMIT :limit"
    return [LogRow(*r) for r in await session.execute(text(sql), params)]


async def erase_log_identifiers(session: Executor, customer_ids: Sequence[str]) -> None:
    """Forget: the masked values and hashes in the merge log, refusals and evidence go too."""
    ids = {"ids": list(customer_ids)}
    await session.execute(
        text("UPDATE merge_log SET identifiers = '[]' WHERE subjects && CAST(:ids AS text[])"), ids
    )
    await session.execute(
        text(
            "UPDATE refusals SET identifiers = '[]' "
            "WHERE customer_a = ANY(:ids) OR customer_b = ANY(:ids)"
        ),
        ids,
    )
    await session.execute(
        text(
            "UPDATE probable_matches SET evidence = '[]' "
            "WHERE customer_id = ANY(:ids) OR candidate_customer_id = ANY(:ids)"
        ),
        ids,
    )


# --- blocked values, co-occurrences, refusals --------------------------------------------


async def blocked_keys(
    session: Executor, keys: Sequence[tuple[int, bytes]]
) -> set[tuple[int, bytes]]:
    if not keys:
        return set()
    rows = await session.execute(
        text(
            "SELECT type, value_hash FROM blocked_values WHERE (type, value_hash) IN "
            "(SELECT * FROM unnest(CAST(:types AS smallint[]), CAST(:hashes AS bytea[])))"
        ),
        {"types": [k[0] for k in keys], "hashes": [k[1] for k in keys]},
    )
    return {(r[0], bytes(r[1])) for r in rows}


_BLOCK_COLS = "id, type, value_hash, masked, source, reason, actor, created_at"


async def add_blocked(
    session: Executor,
    *,
    id_type: int,
    value_hash: bytes,
    masked: str,
    source: int,
    reason: str,
    actor: str,
) -> tuple[Any, ...]:
    row = (
        await session.execute(
            text(
                "INSERT INTO blocked_values (id, type, value_hash, masked, source, reason, actor) "
                "VALUES (:id, :type, :hash, :masked, :source, :reason, :actor) "
                "ON CONFLICT (type, value_hash) DO UPDATE SET type = EXCLUDED.type "
                f"RETURNING {_BLOCK_COLS}"
            ),
            {
                "id": new_id("blk"),
                "type": id_type,
                "hash": value_hash,
                "masked": masked,
                "source": source,
                "reason": reason,
                "actor": actor,
            },
        )
    ).one()
    return tuple(row)


async def list_blocked(
    session: Executor, *, source: int, id_type: int, after: str, limit: int
) -> list[tuple[Any, ...]]:
    sql = f"SELECT {_BLOCK_COLS} FROM blocked_values WHERE id > :after"
    params: dict[str, Any] = {"after": after, "limit": limit}
    if source:
        sql += " AND source = :source"
        params["source"] = source
    if id_type:
        sql += " AND type = :type"
        params["type"] = id_type
    sql += " ORDER BY id LIMIT :limit"
    return [tuple(r) for r in await session.execute(text(sql), params)]


async def delete_blocked(session: Executor, blocked_id: str) -> bool:
    result = await session.execute(
        text("DELETE FROM blocked_values WHERE id = :id RETURNING id"), {"id": blocked_id}
    )
    return result.one_or_none() is not None


async def cooccurrence_counts(
    session: Executor, identifier_ids: Sequence[int], since: datetime | None
) -> dict[tuple[int, int], set[int]]:
    """For each identifier, the other identifiers (by type) it was seen with."""
    if not identifier_ids:
        return {}
    sql = (
        "SELECT identifier_id, other_type, other_id FROM cooccurrences "
        "WHERE identifier_id = ANY(:ids)"
    )
    params: dict[str, Any] = {"ids": list(identifier_ids)}
    if since is not None:
        sql += " AND seen_at >= :since"
        params["since"] = since
    out: dict[tuple[int, int], set[int]] = {}
    for ident, other_type, other in await session.execute(text(sql), params):
        out.setdefault((ident, other_type), set()).add(other)
    return out


async def record_cooccurrences(
    session: Executor, pairs: Sequence[tuple[int, int, int]], at: datetime
) -> None:
    if pairs:
        await session.execute(
            text(
                "INSERT INTO cooccurrences (identifier_id, other_id, other_type, seen_at) "
                "SELECT * , CAST(:at AS timestamptz) FROM unnest(CAST(:a AS bigint[]), "
                "CAST(:b AS bigint[]), CAST(:t AS smallint[])) "
                "ON CONFLICT (identifier_id, other_id) DO UPDATE SET seen_at = EXCLUDED.seen_at"
            ),
            {
                "a": [p[0] for p in pairs],
                "b": [p[1] for p in pairs],
                "t": [p[2] for p in pairs],
                "at": at,
            },
        )


async def add_refusal(
    session: Executor, a: str, b: str, reason: int, refs: Sequence[res.IdentifierRef]
) -> None:
    await session.execute(
        text(
            "INSERT INTO refusals (customer_a, customer_b, reason, identifiers) "
            "VALUES (:a, :b, :reason, CAST(:idents AS jsonb))"
        ),
        {"a": a, "b": b, "reason": reason, "idents": refs_json(refs)},
    )


async def refusals_between(
    session: Executor, a_ids: Sequence[str], b_ids: Sequence[str]
) -> list[int]:
    rows = await session.execute(
        text(
            "SELECT DISTINCT reason FROM refusals WHERE "
            "(customer_a = ANY(:a) AND customer_b = ANY(:b)) OR "
            "(customer_a = ANY(:b) AND customer_b = ANY(:a))"
        ),
        {"a": list(a_ids), "b": list(b_ids)},
    )
    return sorted(r[0] for r in rows)


# --- merge rules -------------------------------------------------------------------------


async def load_rules(session: Executor) -> res.MergeRules | None:
    row = (
        await session.execute(
            text("SELECT rules, revision, updated_by, updated_at FROM merge_rules WHERE id = 1")
        )
    ).one_or_none()
    if row is None:
        return None
    rules = res.MergeRules()
    rules.ParseFromString(row[0])
    rules.revision = row[1]
    rules.updated_by = row[2]
    rules.update_time.FromDatetime(row[3])
    return rules


async def save_rules(session: Executor, rules: res.MergeRules, revision: int, actor: str) -> None:
    await session.execute(
        text(
            "INSERT INTO merge_rules (id, rules, revision, updated_by, updated_at) "
            "VALUES (1, :rules, :rev, :actor, now()) ON CONFLICT (id) DO UPDATE SET "
            "rules = EXCLUDED.rules, revision = EXCLUDED.revision, "
            "updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at"
        ),
        {"rules": rules.SerializeToString(), "rev": revision, "actor": actor},
    )


async def lock_rules(session: Executor) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(424242)"))


# --- traits and probabilistic matching ---------------------------------------------------


@dataclass
class TraitCandidate:
    record_id: int
    identifier_id: int
    customer_id: str
    traits: Traits


async def trait_candidates(
    session: Executor, keys: Sequence[int], limit: int = 500
) -> list[TraitCandidate]:
    """Stored trait records sharing a block with ``keys``, with their current customer."""
    if not keys:
        return []
    rows = await session.execute(
        text(
            "SELECT r.id, r.identifier_id, i.customer_id, r.given_name, r.family_name, "
            "r.birth_date, r.street, r.locality, r.postal_code FROM trait_records r "
            "JOIN identifiers i ON i.id = r.identifier_id WHERE r.id IN "
            "(SELECT DISTINCT record_id FROM trait_blocks WHERE key = ANY(:keys) LIMIT :limit)"
        ),
        {"keys": list(keys), "limit": limit},
    )
    return [TraitCandidate(r[0], r[1], r[2], Traits(*r[3:])) for r in rows]


def _trait_params(traits: Traits) -> dict[str, str]:
    return {
        "g": traits.given_name,
        "f": traits.family_name,
        "b": traits.birth_date,
        "s": traits.street,
        "l": traits.locality,
        "p": traits.postal_code,
    }


async def add_traits(
    session: Executor, identifier_id: int, traits: Traits, unless_customer_has: str = ""
) -> None:
    """Keep a trait record (and its blocking keys) under the identifier it came with;
    with ``unless_customer_has``, only if that customer holds no record of the very same
    traits yet (one statement either way)."""
    await session.execute(
        text(
            "WITH r AS (INSERT INTO trait_records (identifier_id, given_name, family_name, "
            "birth_date, street, locality, postal_code) SELECT :iid, :g, :f, :b, :s, :l, :p "
            "WHERE :cid = '' OR NOT EXISTS (SELECT 1 FROM trait_records t "
            "JOIN identifiers i ON i.id = t.identifier_id WHERE i.customer_id = :cid "
            "AND t.given_name = :g AND t.family_name = :f AND t.birth_date = :b "
            "AND t.street = :s AND t.locality = :l AND t.postal_code = :p) "
            "RETURNING id) INSERT INTO trait_blocks (key, record_id) "
            "SELECT k, r.id FROM r, unnest(CAST(:keys AS bigint[])) AS k ON CONFLICT DO NOTHING"
        ),
        {
            "iid": identifier_id,
            "cid": unless_customer_has,
            "keys": traits.blocking_keys(),
            **_trait_params(traits),
        },
    )


async def all_trait_records(session: Executor) -> list[TraitCandidate]:
    rows = await session.execute(
        text(
            "SELECT r.id, r.identifier_id, i.customer_id, r.given_name, r.family_name, "
            "r.birth_date, r.street, r.locality, r.postal_code FROM trait_records r "
            "JOIN identifiers i ON i.id = r.identifier_id ORDER BY r.id"
        )
    )
    return [TraitCandidate(r[0], r[1], r[2], Traits(*r[3:])) for r in rows]


async def block_members(session: Executor, max_block: int) -> list[list[int]]:
    """Record ids per block (blocks larger than ``max_block`` are sampled down)."""
    rows = await session.execute(
        text(
            "SELECT key, (array_agg(record_id ORDER BY record_id))[1:CAST(:cap AS int)] "
            "FROM trait_blocks GROUP BY key HAVING count(*) > 1"
        ),
        {"cap": max_block},
    )
    return [list(r[1]) for r in rows]


async def load_model(session: Executor) -> dict[str, Any] | None:
    row = (await session.execute(text("SELECT model FROM match_model WHERE id = 1"))).first()
    return dict(row[0]) if row is not None else None


async def save_model(session: Executor, model: dict[str, Any]) -> None:
    await session.execute(
        text(
            "INSERT INTO match_model (id, model, fitted_at) VALUES (1, CAST(:m AS jsonb), now()) "
            "ON CONFLICT (id) DO UPDATE SET model = EXCLUDED.model, fitted_at = now()"
        ),
        {"m": json.dumps(model)},
    )


_MATCH_COLS = (
    "id, customer_id, candidate_customer_id, score, evidence, state, created_at, decided_at, "
    "decided_by, decision_reason, seq"
)


@dataclass
class MatchRow:
    id: str
    customer_id: str
    candidate_customer_id: str
    score: float
    evidence: list[dict[str, Any]]
    state: int
    created_at: datetime
    decided_at: datetime | None
    decided_by: str
    decision_reason: str
    seq: int


async def add_probable_match(
    session: Executor,
    customer_id: str,
    candidate: str,
    score: float,
    evidence: Sequence[dict[str, Any]],
) -> str:
    match_id = new_id("pm")
    await session.execute(
        text(
            "INSERT INTO probable_matches (id, customer_id, candidate_customer_id, score, "
            "evidence) VALUES (:id, :c, :k, :s, CAST(:e AS jsonb))"
        ),
        {
            "id": match_id,
            "c": customer_id,
            "k": candidate,
            "s": score,
            "e": json.dumps(list(evidence)),
        },
    )
    return match_id


async def get_probable_match(
    session: Executor, match_id: str, *, lock: bool = False
) -> MatchRow | None:
    sql = f"SELECT {_MATCH_COLS} FROM probable_matches WHERE id = :id"
    if lock:
        sql += " FOR UPDATE"
    row = (await session.execute(text(sql), {"id": match_id})).one_or_none()
    return MatchRow(*row) if row is not None else None


async def list_probable_matches(
    session: Executor,
    *,
    state: int,
    customer_ids: Sequence[str],
    min_score: float,
    after_seq: int,
    limit: int,
) -> list[MatchRow]:
    sql = f"SELECT {_MATCH_COLS} FROM probable_matches WHERE seq > :after AND score >= :min"
    params: dict[str, Any] = {"after": after_seq, "min": min_score, "limit": limit}
    if state:
        sql += " AND state = :state"
        params["state"] = state
    if customer_ids:
        sql += " AND (customer_id = ANY(:ids) OR candidate_customer_id = ANY(:ids))"
        params["ids"] = list(customer_ids)
    sql += " ORDER BY seq LIMIT :limit"
    return [MatchRow(*r) for r in await session.execute(text(sql), params)]


async def decide_probable_match(
    session: Executor, match_id: str, state: int, actor: str, reason: str
) -> None:
    await session.execute(
        text(
            "UPDATE probable_matches SET state = :state, decided_at = now(), decided_by = :a, "
            "decision_reason = :r WHERE id = :id"
        ),
        {"id": match_id, "state": state, "a": actor, "r": reason},
    )
