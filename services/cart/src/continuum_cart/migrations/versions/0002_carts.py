"""Carts, wishlists and orders, and the request log.

Each cart and wishlist is one row: the resource as the API returns it (``body``, a
serialized continuum.cart.v1.Cart or Wishlist), next to the columns that queries filter
on. A read is one indexed fetch with nothing to assemble; a mutation locks the row,
changes the resource and writes it back.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from continuum_runtime.idempotency import create_request_log_table, drop_request_log_table

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DDL = """
CREATE TABLE carts (
    cart_id uuid PRIMARY KEY,
    owner_kind smallint NOT NULL,
    owner_id text NOT NULL,
    state smallint NOT NULL,
    line_count integer NOT NULL DEFAULT 0,
    last_activity_at timestamptz NOT NULL,
    last_channel smallint NOT NULL DEFAULT 0,
    last_store_id text NOT NULL DEFAULT '',
    abandoned_at timestamptz,
    body bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- One open (ACTIVE or ABANDONED) cart per owner.
CREATE UNIQUE INDEX carts_open_owner ON carts (owner_kind, owner_id) WHERE state IN (1, 2);
CREATE INDEX carts_owner ON carts (owner_kind, owner_id);
-- The abandonment detector's scan: active carts with lines, oldest activity first.
CREATE INDEX carts_idle ON carts (last_activity_at) WHERE state = 1 AND line_count > 0;
CREATE INDEX carts_abandoned ON carts (abandoned_at DESC, cart_id DESC) WHERE state = 2;

CREATE TABLE wishlists (
    wishlist_id uuid PRIMARY KEY,
    owner_kind smallint NOT NULL,
    owner_id text NOT NULL,
    state smallint NOT NULL,
    body bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX wishlists_open_owner ON wishlists (owner_kind, owner_id) WHERE state = 1;
CREATE INDEX wishlists_owner ON wishlists (owner_kind, owner_id);

CREATE TABLE orders (
    order_id uuid PRIMARY KEY,
    cart_id uuid NOT NULL,
    owner_kind smallint NOT NULL,
    owner_id text NOT NULL,
    placed_at timestamptz NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX orders_owner ON orders (owner_kind, owner_id, placed_at DESC, order_id DESC);
"""


def upgrade() -> None:
    for statement in DDL.split(";"):
        if statement.strip():
            op.execute(statement)
    create_request_log_table(op)


def downgrade() -> None:
    drop_request_log_table(op)
    op.execute("DROP TABLE orders")
    op.execute("DROP TABLE wishlists")
    op.execute("DROP TABLE carts")
