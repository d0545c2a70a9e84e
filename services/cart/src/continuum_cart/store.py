"""The cart service's tables and every query on them.

A cart (and a wishlist) is one row holding the serialized resource next to the columns
queries filter on; see migration 0002. Mutations lock the owner's open row
(``FOR UPDATE``) for the length of their transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from continuum.cart.v1 import cart_resources_pb2 as res
from continuum_cart.domain import OwnerKey
from continuum_runtime.db import Database
from continuum_runtime.paging import bad_page_token, decode_page_token, encode_page_token
from continuum_runtime.telemetry import current_traceparent

OPEN_CART_STATES = (res.CART_STATE_ACTIVE, res.CART_STATE_ABANDONED)


def _dt(stamp: Any) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]


def _cart(body: bytes) -> res.Cart:
    return res.Cart.FromString(bytes(body))


def _wishlist(body: bytes) -> res.Wishlist:
    return res.Wishlist.FromString(bytes(body))


# --------------------------------------------------------------------------------------
# Carts
# --------------------------------------------------------------------------------------

_OPEN_CART_SQL = (
    "SELECT body FROM carts WHERE owner_kind = $1 AND owner_id = $2 AND state IN (1, 2)"
)


async def open_cart(db: Database, owner: OwnerKey) -> res.Cart | None:
    """The owner's ACTIVE or ABANDONED cart (one indexed read on the driver)."""
    rows = await db.fetch("SELECT cart.open_cart", _OPEN_CART_SQL, owner.kind, owner.id)
    return _cart(rows[0][0]) if rows else None


_OPEN_BASKET_SQL = (
    "SELECT (SELECT body FROM carts WHERE owner_kind = $1 AND owner_id = $2 "
    "AND state IN (1, 2)), (SELECT body FROM wishlists WHERE owner_kind = $1 "
    "AND owner_id = $2 AND state = 1)"
)


async def open_cart_and_wishlist(
    db: Database, owner: OwnerKey
) -> tuple[res.Cart | None, res.Wishlist | None]:
    """The owner's open cart and open wishlist, in one statement."""
    rows = await db.fetch("SELECT cart.open_basket", _OPEN_BASKET_SQL, owner.kind, owner.id)
    cart, wishlist = rows[0]
    return (
        _cart(cart) if cart is not None else None,
        _wishlist(wishlist) if wishlist is not None else None,
    )


async def cart_by_id(db: Database, cart_id: str) -> res.Cart | None:
    rows = await db.fetch(
        "SELECT cart.cart_by_id", "SELECT body FROM carts WHERE cart_id = $1", cart_id
    )
    return _cart(rows[0][0]) if rows else None


async def lock_open_cart(session: AsyncSession, owner: OwnerKey) -> res.Cart | None:
    row = (
        await session.execute(
            text(
                "SELECT body FROM carts WHERE owner_kind = :kind AND owner_id = :id "
                "AND state IN (1, 2) FOR UPDATE"
            ),
            {"kind": owner.kind, "id": owner.id},
        )
    ).one_or_none()
    return _cart(row[0]) if row else None


def _cart_columns(cart: res.Cart) -> dict[str, Any]:
    return {
        "cart_id": cart.cart_id,
        "state": cart.state,
        "line_count": len(cart.lines),
        "last_activity_at": _dt(cart.last_activity_time),
        "last_channel": cart.last_channel,
        "last_store_id": cart.last_store_id,
        "abandoned_at": _dt(cart.abandon_time) if cart.HasField("abandon_time") else None,
        "body": cart.SerializeToString(),
        # The change's trace, for the abandonment detector's span link.
        "traceparent": current_traceparent(),
    }


async def insert_cart(session: AsyncSession, cart: res.Cart) -> bool:
    """Store a new open cart; False when the owner got one concurrently."""
    owner = OwnerKey.of(cart.owner)
    result = await session.execute(
        text(
            "INSERT INTO carts (cart_id, owner_kind, owner_id, state, line_count, "
            "last_activity_at, last_channel, last_store_id, abandoned_at, body, traceparent) "
            "VALUES (CAST(:cart_id AS uuid), :kind, :id, :state, :line_count, "
            ":last_activity_at, :last_channel, :last_store_id, :abandoned_at, :body, "
            ":traceparent) "
            "ON CONFLICT (owner_kind, owner_id) WHERE state IN (1, 2) DO NOTHING "
            "RETURNING cart_id"
        ),
        {**_cart_columns(cart), "kind": owner.kind, "id": owner.id},
    )
    return result.one_or_none() is not None


async def lock_or_create_cart(session: AsyncSession, owner: OwnerKey, fresh: res.Cart) -> res.Cart:
    """The owner's open cart, locked; ``fresh`` is stored (and returned) if there is none."""
    for _ in range(3):
        cart = await lock_open_cart(session, owner)
        if cart is not None:
            return cart
        if await insert_cart(session, fresh):
            return fresh
    raise RuntimeError("could not create or lock the owner's cart")  # pragma: no cover


async def save_cart(session: AsyncSession, cart: res.Cart) -> None:
    await session.execute(
        text(
            "UPDATE carts SET state = :state, line_count = :line_count, "
            "last_activity_at = :last_activity_at, last_channel = :last_channel, "
            "last_store_id = :last_store_id, abandoned_at = :abandoned_at, body = :body, "
            "traceparent = :traceparent, updated_at = now() WHERE cart_id = CAST(:cart_id AS uuid)"
        ),
        _cart_columns(cart),
    )


async def claim_idle_carts(
    session: AsyncSession, cutoff: datetime, limit: int
) -> list[tuple[res.Cart, str]]:
    """Active carts with lines and no activity since ``cutoff``, oldest first, locked
    (rows another replica is claiming are skipped), each with the ``traceparent`` of its
    last change."""
    rows = await session.execute(
        text(
            "SELECT body, traceparent FROM carts WHERE state = 1 AND line_count > 0 "
            "AND last_activity_at < :cutoff ORDER BY last_activity_at LIMIT :limit "
            "FOR UPDATE SKIP LOCKED"
        ),
        {"cutoff": cutoff, "limit": limit},
    )
    return [(_cart(row[0]), str(row[1])) for row in rows]


@dataclass(frozen=True)
class AbandonedFilter:
    after: datetime | None
    before: datetime | None
    last_channel: int
    last_store_id: str
    customers_only: bool


def _encode_token(stamp: datetime, key: str) -> str:
    return encode_page_token([stamp.isoformat(), key])


def _decode_token(token: str) -> tuple[datetime, str] | None:
    values = decode_page_token(token, 2)
    if values is None:
        return None
    try:
        return datetime.fromisoformat(str(values[0])), str(uuid.UUID(str(values[1])))
    except ValueError:
        raise bad_page_token() from None


async def list_abandoned(
    conn: AsyncConnection, where: AbandonedFilter, page_size: int, page_token: str
) -> tuple[list[res.Cart], str]:
    after = _decode_token(page_token)
    clauses = ["state = 2"]
    params: dict[str, Any] = {"limit": page_size + 1}
    if where.after is not None:
        clauses.append("abandoned_at >= :after")
        params["after"] = where.after
    if where.before is not None:
        clauses.append("abandoned_at < :before")
        params["before"] = where.before
    if where.last_channel:
        clauses.append("last_channel = :channel")
        params["channel"] = where.last_channel
    if where.last_store_id:
        clauses.append("last_store_id = :store")
        params["store"] = where.last_store_id
    if where.customers_only:
        clauses.append("owner_kind = 1")
    if after is not None:
        clauses.append("(abandoned_at, cart_id) < (:t_at, CAST(:t_id AS uuid))")
        params["t_at"], params["t_id"] = after
    rows = (
        await conn.execute(
            text(
                f"SELECT body, abandoned_at, cart_id FROM carts WHERE {' AND '.join(clauses)} "
                "ORDER BY abandoned_at DESC, cart_id DESC LIMIT :limit"
            ),
            params,
        )
    ).all()
    token = ""
    if len(rows) > page_size:
        rows = rows[:page_size]
        token = _encode_token(rows[-1][1], str(rows[-1][2]))
    return [_cart(row[0]) for row in rows], token


# --------------------------------------------------------------------------------------
# Wishlists
# --------------------------------------------------------------------------------------


async def open_wishlist(db: Database, owner: OwnerKey) -> res.Wishlist | None:
    rows = await db.fetch(
        "SELECT cart.open_wishlist",
        "SELECT body FROM wishlists WHERE owner_kind = $1 AND owner_id = $2 AND state = 1",
        owner.kind,
        owner.id,
    )
    return _wishlist(rows[0][0]) if rows else None


async def lock_open_wishlist(session: AsyncSession, owner: OwnerKey) -> res.Wishlist | None:
    row = (
        await session.execute(
            text(
                "SELECT body FROM wishlists WHERE owner_kind = :kind AND owner_id = :id "
                "AND state = 1 FOR UPDATE"
            ),
            {"kind": owner.kind, "id": owner.id},
        )
    ).one_or_none()
    return _wishlist(row[0]) if row else None


async def lock_or_create_wishlist(
    session: AsyncSession, owner: OwnerKey, fresh: res.Wishlist
) -> res.Wishlist:
    for _ in range(3):
        wishlist = await lock_open_wishlist(session, owner)
        if wishlist is not None:
            return wishlist
        inserted = await session.execute(
            text(
                "INSERT INTO wishlists (wishlist_id, owner_kind, owner_id, state, body) VALUES "
                "(CAST(:wid AS uuid), :kind, :id, :state, :body) "
                "ON CONFLICT (owner_kind, owner_id) WHERE state = 1 DO NOTHING "
                "RETURNING wishlist_id"
            ),
            {
                "wid": fresh.wishlist_id,
                "kind": owner.kind,
                "id": owner.id,
                "state": fresh.state,
                "body": fresh.SerializeToString(),
            },
        )
        if inserted.one_or_none() is not None:
            return fresh
    raise RuntimeError("could not create or lock the owner's wishlist")  # pragma: no cover


async def save_wishlist(session: AsyncSession, wishlist: res.Wishlist) -> None:
    await session.execute(
        text(
            "UPDATE wishlists SET state = :state, body = :body, updated_at = now() "
            "WHERE wishlist_id = CAST(:wid AS uuid)"
        ),
        {
            "wid": wishlist.wishlist_id,
            "state": wishlist.state,
            "body": wishlist.SerializeToString(),
        },
    )


# --------------------------------------------------------------------------------------
# Orders
# --------------------------------------------------------------------------------------


async def insert_order(session: AsyncSession, order: res.Order) -> None:
    owner = OwnerKey.of(order.owner)
    await session.execute(
        text(
            "INSERT INTO orders (order_id, cart_id, owner_kind, owner_id, placed_at, body) "
            "VALUES (CAST(:oid AS uuid), CAST(:cid AS uuid), :kind, :id, :at, :body)"
        ),
        {
            "oid": order.order_id,
            "cid": order.cart_id,
            "kind": owner.kind,
            "id": owner.id,
            "at": _dt(order.place_time),
            "body": order.SerializeToString(),
        },
    )


async def order_by_id(db: Database, order_id: str) -> res.Order | None:
    rows = await db.fetch(
        "SELECT cart.order_by_id", "SELECT body FROM orders WHERE order_id = $1", order_id
    )
    return res.Order.FromString(bytes(rows[0][0])) if rows else None


async def list_orders(
    conn: AsyncConnection,
    owner: OwnerKey,
    after: datetime | None,
    before: datetime | None,
    page_size: int,
    page_token: str,
) -> tuple[list[res.Order], str]:
    cursor = _decode_token(page_token)
    clauses = ["owner_kind = :kind", "owner_id = :id"]
    params: dict[str, Any] = {"kind": owner.kind, "id": owner.id, "limit": page_size + 1}
    if after is not None:
        clauses.append("placed_at >= :after")
        params["after"] = after
    if before is not None:
        clauses.append("placed_at < :before")
        params["before"] = before
    if cursor is not None:
        clauses.append("(placed_at, order_id) < (:t_at, CAST(:t_id AS uuid))")
        params["t_at"], params["t_id"] = cursor
    rows = (
        await conn.execute(
            text(
                f"SELECT body, placed_at, order_id FROM orders WHERE {' AND '.join(clauses)} "
                "ORDER BY placed_at DESC, order_id DESC LIMIT :limit"
            ),
            params,
        )
    ).all()
    token = ""
    if len(rows) > page_size:
        rows = rows[:page_size]
        token = _encode_token(rows[-1][1], str(rows[-1][2]))
    return [res.Order.FromString(bytes(row[0])) for row in rows], token


# --------------------------------------------------------------------------------------
# Forgetting
# --------------------------------------------------------------------------------------


async def forget_owners(session: AsyncSession, owners: Sequence[OwnerKey]) -> tuple[int, int]:
    """Erase the carts and wishlists of these owners and take the owner off their orders
    (orders are the retailer's records; they stay, anonymous). Returns (carts, orders)."""
    if not owners:
        return 0, 0
    params = {"kinds": [o.kind for o in owners], "ids": [o.id for o in owners]}
    match = (
        "(owner_kind, owner_id) IN (SELECT * FROM unnest(CAST(:kinds AS smallint[]), "
        "CAST(:ids AS text[])))"
    )
    carts = await session.execute(
        text(f"DELETE FROM carts WHERE {match} RETURNING cart_id"), params
    )
    erased = len(carts.all())
    await session.execute(text(f"DELETE FROM wishlists WHERE {match}"), params)
    orders = (
        await session.execute(
            text(f"SELECT order_id, body FROM orders WHERE {match} FOR UPDATE"), params
        )
    ).all()
    for order_id, body in orders:
        order = res.Order.FromString(bytes(body))
        order.ClearField("owner")
        await session.execute(
            text(
                "UPDATE orders SET owner_kind = 0, owner_id = '', body = :body "
                "WHERE order_id = :oid"
            ),
            {"oid": order_id, "body": order.SerializeToString()},
        )
    return erased, len(orders)
