"""The inventory tables: item master, locations, stock levels with their ledger,
reservations, low-stock thresholds, daily demand, and the request log.

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
CREATE TABLE items (
    sku text PRIMARY KEY,
    product_id text NOT NULL,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    brand text NOT NULL DEFAULT '',
    category text NOT NULL DEFAULT '',
    colour text NOT NULL DEFAULT '',
    size text NOT NULL DEFAULT '',
    currency text NOT NULL,
    price_minor bigint NOT NULL CHECK (price_minor >= 0),
    attributes jsonb NOT NULL DEFAULT '{}'::jsonb,
    image_url text NOT NULL DEFAULT '',
    state smallint NOT NULL DEFAULT 1,
    gtin text NOT NULL DEFAULT '',
    etag text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX items_product ON items (product_id, sku);
CREATE INDEX items_update_time ON items (update_time);

CREATE TABLE locations (
    location_id text PRIMARY KEY,
    name text NOT NULL,
    type smallint NOT NULL,
    latitude double precision NOT NULL,
    longitude double precision NOT NULL,
    time_zone text NOT NULL,
    address bytea,
    pickup_capable boolean NOT NULL DEFAULT false,
    ship_from_capable boolean NOT NULL DEFAULT false,
    pickup_buffer integer,
    state smallint NOT NULL DEFAULT 1,
    etag text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);

-- One row per SKU and location. The CHECKs are the last line of defence: no quantity can
-- be stored below zero, whatever a statement tries. No foreign keys: the service checks
-- SKUs and locations itself, and bulk loads of millions of levels stay fast.
CREATE TABLE stock_levels (
    sku text NOT NULL,
    location_id text NOT NULL,
    on_hand integer NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    safety_stock integer NOT NULL DEFAULT 0 CHECK (safety_stock >= 0),
    incoming integer NOT NULL DEFAULT 0 CHECK (incoming >= 0),
    revision bigint NOT NULL DEFAULT 0,
    next_incoming_time timestamptz,
    low_stock boolean NOT NULL DEFAULT false,
    out_of_stock_since timestamptz,
    low_fired_at timestamptz,
    back_fired_at timestamptz,
    signal_recheck_at timestamptz,
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sku, location_id)
) WITH (fillfactor = 90);
CREATE INDEX stock_levels_location ON stock_levels (location_id, sku);
CREATE INDEX stock_levels_recheck ON stock_levels (signal_recheck_at)
    WHERE signal_recheck_at IS NOT NULL;

CREATE TABLE stock_ledger (
    entry_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku text NOT NULL,
    location_id text NOT NULL,
    sequence bigint NOT NULL,
    type smallint NOT NULL,
    d_on_hand integer NOT NULL,
    d_reserved integer NOT NULL,
    d_safety_stock integer NOT NULL,
    d_incoming integer NOT NULL,
    on_hand integer NOT NULL,
    reserved integer NOT NULL,
    safety_stock integer NOT NULL,
    incoming integer NOT NULL,
    reason text NOT NULL DEFAULT '',
    note text NOT NULL DEFAULT '',
    request_id text NOT NULL DEFAULT '',
    reservation_id text NOT NULL DEFAULT '',
    reference text NOT NULL DEFAULT '',
    actor text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    UNIQUE (sku, location_id, sequence)
);
CREATE INDEX stock_ledger_reservation ON stock_ledger (reservation_id)
    WHERE reservation_id <> '';

CREATE TABLE reservations (
    reservation_id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    kind smallint NOT NULL,
    state smallint NOT NULL DEFAULT 1,
    skus text[] NOT NULL,
    location_ids text[] NOT NULL,
    quantities integer[] NOT NULL,
    reference text NOT NULL DEFAULT '',
    customer_id text NOT NULL DEFAULT '',
    request_id text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    commit_time timestamptz,
    release_time timestamptz,
    release_reason text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX reservations_seq ON reservations (seq);
CREATE INDEX reservations_expiry ON reservations (expire_time) WHERE state = 1;
CREATE INDEX reservations_reference ON reservations (reference) WHERE reference <> '';
CREATE INDEX reservations_skus ON reservations USING gin (skus);
CREATE INDEX reservations_locations ON reservations USING gin (location_ids);

-- Empty sku / location_id means "every": ('', '') is the default rule.
CREATE TABLE low_stock_thresholds (
    sku text NOT NULL,
    location_id text NOT NULL,
    low_threshold integer NOT NULL,
    recover_threshold integer NOT NULL,
    back_in_stock_quantity integer NOT NULL,
    cooldown_s double precision NOT NULL DEFAULT 0,
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sku, location_id),
    CHECK (recover_threshold > low_threshold)
);

-- Units demanded per SKU, location and local day (placed orders and till sales).
CREATE TABLE demand_daily (
    sku text NOT NULL,
    location_id text NOT NULL,
    day date NOT NULL,
    units integer NOT NULL,
    PRIMARY KEY (sku, location_id, day)
)
"""

TABLES = (
    "demand_daily",
    "low_stock_thresholds",
    "reservations",
    "stock_ledger",
    "stock_levels",
    "locations",
    "items",
)


def upgrade() -> None:
    for statement in DDL.split(";\n"):
        if statement.strip():
            op.execute(statement)
    create_request_log_table(op)


def downgrade() -> None:
    drop_request_log_table(op)
    for table in TABLES:
        op.execute(f"DROP TABLE {table}")
