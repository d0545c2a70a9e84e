"""The recommendation service's tables and every query on them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from continuum.recommendation.v1 import recommendation_resources_pb2 as res
from continuum_recommendation.domain import Interaction
from continuum_recommendation.live import ItemInfo

Conn = AsyncSession | AsyncConnection


def _ts(at: float) -> datetime:
    return datetime.fromtimestamp(at, tz=UTC)


async def add_interactions(session: AsyncSession, rows: Sequence[Interaction]) -> None:
    if not rows:
        return
    await session.execute(
        text(
            "INSERT INTO interactions (subject, sku, kind, quantity, basket, channel, store_id,"
            " occurred_at) VALUES (:subject, :sku, :kind, :quantity, :basket, :channel,"
            " :store_id, :at) ON CONFLICT DO NOTHING"
        ),
        [
            {
                "subject": r.subject,
                "sku": r.sku,
                "kind": r.kind,
                "quantity": r.quantity,
                "basket": r.basket,
                "channel": r.channel,
                "store_id": r.store_id,
                "at": _ts(r.at),
            }
            for r in rows
        ],
    )


async def upsert_items(session: AsyncSession, items: Sequence[ItemInfo]) -> None:
    """Remember item attributes seen in events (only non-empty values overwrite)."""
    unique = {i.sku: i for i in items if i.sku}
    if not unique:
        return
    await session.execute(
        text(
            "INSERT INTO items (sku, product_id, name, category, brand, size, colour,"
            " price_minor, currency, image_url) VALUES (:sku, :product_id, :name, :category,"
            " :brand, :size, :colour, :price_minor, :currency, :image_url)"
            " ON CONFLICT (sku) DO UPDATE SET"
            " product_id = COALESCE(NULLIF(EXCLUDED.product_id, ''), items.product_id),"
            " name = COALESCE(NULLIF(EXCLUDED.name, ''), items.name),"
            " category = COALESCE(NULLIF(EXCLUDED.category, ''), items.category),"
            " brand = COALESCE(NULLIF(EXCLUDED.brand, ''), items.brand),"
            " size = COALESCE(NULLIF(EXCLUDED.size, ''), items.size),"
            " colour = COALESCE(NULLIF(EXCLUDED.colour, ''), items.colour),"
            " price_minor = CASE WHEN EXCLUDED.currency <> '' THEN EXCLUDED.price_minor"
            "   ELSE items.price_minor END,"
            " currency = COALESCE(NULLIF(EXCLUDED.currency, ''), items.currency),"
            " image_url = COALESCE(NULLIF(EXCLUDED.image_url, ''), items.image_url),"
            " seq = nextval('items_seq_seq'), updated_at = now()"
            " WHERE (items.product_id, items.name, items.category, items.brand, items.size,"
            "  items.colour, items.currency, items.image_url) IS DISTINCT FROM"
            " (COALESCE(NULLIF(EXCLUDED.product_id, ''), items.product_id),"
            "  COALESCE(NULLIF(EXCLUDED.name, ''), items.name),"
            "  COALESCE(NULLIF(EXCLUDED.category, ''), items.category),"
            "  COALESCE(NULLIF(EXCLUDED.brand, ''), items.brand),"
            "  COALESCE(NULLIF(EXCLUDED.size, ''), items.size),"
            "  COALESCE(NULLIF(EXCLUDED.colour, ''), items.colour),"
            "  COALESCE(NULLIF(EXCLUDED.currency, ''), items.currency),"
            "  COALESCE(NULLIF(EXCLUDED.image_url, ''), items.image_url))"
        ),
        [vars(i) for i in sorted(unique.values(), key=lambda i: i.sku)],
    )


async def put_traits(session: AsyncSession, customer_id: str, body: bytes, revision: int) -> None:
    await session.execute(
        text(
            "INSERT INTO traits (customer_id, body, revision) VALUES (:c, :b, :r)"
            " ON CONFLICT (customer_id) DO UPDATE SET body = EXCLUDED.body,"
            " revision = EXCLUDED.revision, seq = nextval('traits_seq_seq'), updated_at = now()"
            " WHERE traits.revision <= EXCLUDED.revision"
        ),
        {"c": customer_id, "b": body, "r": revision},
    )


async def forget_subjects(session: AsyncSession, subjects: Sequence[str], customer_id: str) -> None:
    await session.execute(
        text("DELETE FROM interactions WHERE subject = ANY(:s)"), {"s": list(subjects)}
    )
    await session.execute(text("DELETE FROM traits WHERE customer_id = :c"), {"c": customer_id})
    await session.execute(
        text(
            "INSERT INTO forgotten (subject) SELECT unnest(CAST(:s AS text[]))"
            " ON CONFLICT DO NOTHING"
        ),
        {"s": list(subjects)},
    )


def _interaction(row: Any) -> Interaction:
    return Interaction(
        seq=int(row[0]),
        subject=row[1],
        sku=row[2],
        kind=int(row[3]),
        quantity=int(row[4]),
        basket=row[5],
        channel=int(row[6]),
        store_id=row[7],
        at=row[8].timestamp(),
    )


INTERACTION_COLUMNS = "seq, subject, sku, kind, quantity, basket, channel, store_id, occurred_at"


async def interactions_after(conn: Conn, after: int, limit: int) -> list[Interaction]:
    rows = await conn.execute(
        text(
            f"SELECT {INTERACTION_COLUMNS} FROM interactions WHERE seq > :a ORDER BY seq LIMIT :l"
        ),
        {"a": after, "l": limit},
    )
    return [_interaction(r) for r in rows]


async def interactions_with(conn: Conn, seqs: Sequence[int]) -> list[Interaction]:
    rows = await conn.execute(
        text(f"SELECT {INTERACTION_COLUMNS} FROM interactions WHERE seq = ANY(:s) ORDER BY seq"),
        {"s": list(seqs)},
    )
    return [_interaction(r) for r in rows]


async def interactions_in(
    conn: Conn, start: datetime | None, end: datetime | None, after: int, limit: int
) -> list[Interaction]:
    rows = await conn.execute(
        text(
            f"SELECT {INTERACTION_COLUMNS} FROM interactions WHERE seq > :a"
            " AND (CAST(:s AS timestamptz) IS NULL OR occurred_at >= :s)"
            " AND (CAST(:e AS timestamptz) IS NULL OR occurred_at < :e)"
            " ORDER BY seq LIMIT :l"
        ),
        {"a": after, "s": start, "e": end, "l": limit},
    )
    return [_interaction(r) for r in rows]


async def forgotten_after(conn: Conn, after: int) -> list[tuple[int, str]]:
    rows = await conn.execute(
        text("SELECT seq, subject FROM forgotten WHERE seq > :a ORDER BY seq"), {"a": after}
    )
    return [(int(r[0]), r[1]) for r in rows]


async def max_interaction_seq(conn: Conn) -> int:
    return int(
        (await conn.execute(text("SELECT COALESCE(max(seq), 0) FROM interactions"))).scalar_one()
    )


async def items_after(conn: Conn, after: int, limit: int) -> list[tuple[int, ItemInfo]]:
    rows = await conn.execute(
        text(
            "SELECT seq, sku, product_id, name, category, brand, size, colour, price_minor,"
            " currency, image_url FROM items WHERE seq > :a ORDER BY seq LIMIT :l"
        ),
        {"a": after, "l": limit},
    )
    return [
        (
            int(r[0]),
            ItemInfo(
                sku=r[1],
                product_id=r[2],
                name=r[3],
                category=r[4],
                brand=r[5],
                size=r[6],
                colour=r[7],
                price_minor=int(r[8]),
                currency=r[9],
                image_url=r[10],
            ),
        )
        for r in rows
    ]


async def all_item_skus(conn: Conn) -> list[str]:
    return [r[0] for r in await conn.execute(text("SELECT sku FROM items ORDER BY sku"))]


async def traits_after(conn: Conn, after: int) -> list[tuple[int, str, bytes]]:
    rows = await conn.execute(
        text("SELECT seq, customer_id, body FROM traits WHERE seq > :a ORDER BY seq LIMIT 10000"),
        {"a": after},
    )
    return [(int(r[0]), r[1], bytes(r[2])) for r in rows]


# --- model versions ----------------------------------------------------------------------


async def insert_version(session: AsyncSession, version: res.ModelVersion) -> None:
    await session.execute(
        text("INSERT INTO model_versions (version_id, state, body) VALUES (:v, :s, :b)"),
        {"v": version.version_id, "s": version.state, "b": version.SerializeToString()},
    )


async def save_version(session: AsyncSession, version: res.ModelVersion) -> None:
    await session.execute(
        text("UPDATE model_versions SET state = :s, body = :b WHERE version_id = :v"),
        {"v": version.version_id, "s": version.state, "b": version.SerializeToString()},
    )


async def get_version(
    conn: Conn, version_id: str, *, lock: bool = False
) -> res.ModelVersion | None:
    row = (
        await conn.execute(
            text(
                "SELECT body FROM model_versions WHERE version_id = :v"
                + (" FOR UPDATE" if lock else "")
            ),
            {"v": version_id},
        )
    ).first()
    return res.ModelVersion.FromString(bytes(row[0])) if row else None


async def versions_in_states(conn: Conn, states: Sequence[int]) -> list[res.ModelVersion]:
    rows = await conn.execute(
        text("SELECT body FROM model_versions WHERE state = ANY(:s) ORDER BY seq DESC"),
        {"s": list(states)},
    )
    return [res.ModelVersion.FromString(bytes(r[0])) for r in rows]


async def list_versions(
    conn: Conn,
    states: Sequence[int],
    start: datetime | None,
    end: datetime | None,
    before_seq: int,
    limit: int,
) -> list[tuple[int, res.ModelVersion]]:
    rows = await conn.execute(
        text(
            "SELECT seq, body FROM model_versions WHERE seq < :b"
            " AND (cardinality(CAST(:s AS smallint[])) = 0 OR state = ANY(:s))"
            " AND (CAST(:st AS timestamptz) IS NULL OR created_at >= :st)"
            " AND (CAST(:en AS timestamptz) IS NULL OR created_at < :en)"
            " ORDER BY seq DESC LIMIT :l"
        ),
        {"b": before_seq, "s": list(states), "st": start, "en": end, "l": limit},
    )
    return [(int(r[0]), res.ModelVersion.FromString(bytes(r[1]))) for r in rows]


async def active_version_id(conn: Conn) -> str:
    row = (
        await conn.execute(text("SELECT version_id FROM model_versions WHERE state = 5"))
    ).first()
    return str(row[0]) if row else ""


async def put_artifacts(session: AsyncSession, version_id: str, blob: bytes) -> None:
    await session.execute(
        text("INSERT INTO model_artifacts (version_id, blob) VALUES (:v, :b)"),
        {"v": version_id, "b": blob},
    )


async def get_artifacts(conn: Conn, version_id: str) -> bytes | None:
    row = (
        await conn.execute(
            text("SELECT blob FROM model_artifacts WHERE version_id = :v"), {"v": version_id}
        )
    ).first()
    return bytes(row[0]) if row else None


# --- feedback ----------------------------------------------------------------------------


async def add_feedback(
    session: AsyncSession, rows: Sequence[tuple[str, int, str, bool, datetime, bytes]]
) -> None:
    await session.execute(
        text(
            "INSERT INTO feedback (recommendation_id, kind, sku, attributed, occurred_at, body)"
            " VALUES (:r, :k, :s, :a, :t, :b)"
        ),
        [{"r": r, "k": k, "s": s, "a": a, "t": t, "b": b} for r, k, s, a, t, b in rows],
    )


async def feedback_counts(conn: Conn, since: datetime) -> dict[int, int]:
    rows = await conn.execute(
        text("SELECT kind, count(*) FROM feedback WHERE occurred_at >= :s GROUP BY kind"),
        {"s": since},
    )
    return {int(r[0]): int(r[1]) for r in rows}


async def advisory_lock(session: AsyncSession, key: int) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
