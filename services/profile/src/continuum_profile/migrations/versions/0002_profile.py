"""The event log, profiles, consents, aliases, the deriver's queue and the request log.

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
CREATE TABLE events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id text NOT NULL,
    fingerprint bytea NOT NULL,
    customer_id text,
    origin_customer_id text,
    anonymous boolean NOT NULL DEFAULT false,
    device_id text,
    device_only boolean NOT NULL,
    event_type smallint NOT NULL,
    channel smallint NOT NULL,
    occur_time timestamptz NOT NULL,
    receive_time timestamptz NOT NULL,
    payload bytea NOT NULL,
    CONSTRAINT events_event_id UNIQUE (event_id)
);
CREATE INDEX events_customer ON events (customer_id, occur_time DESC, seq DESC);
CREATE INDEX events_device ON events (device_id, occur_time DESC, seq DESC)
    WHERE device_id IS NOT NULL;
CREATE INDEX events_unresolved ON events (seq) WHERE customer_id IS NULL;

CREATE TABLE profiles (
    customer_id text PRIMARY KEY,
    contact bytea,
    display_name text NOT NULL DEFAULT '',
    loyalty_tier text NOT NULL DEFAULT '',
    contact_preferences bytea,
    time_zone text NOT NULL DEFAULT '',
    recognition_granted boolean NOT NULL DEFAULT false,
    recognition_expire timestamptz,
    state bytea,
    summary bytea,
    last_seq bigint NOT NULL DEFAULT 0,
    revision bigint NOT NULL DEFAULT 0,
    published_at timestamptz,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);

-- State and summary are rewritten on every derivation: stored without compression (pglz
-- costs more CPU than the few kilobytes save), still out of line when large.
ALTER TABLE profiles ALTER COLUMN state SET STORAGE EXTERNAL;
ALTER TABLE profiles ALTER COLUMN summary SET STORAGE EXTERNAL;

CREATE TABLE consents (
    customer_id text NOT NULL,
    channel smallint NOT NULL,
    purpose smallint NOT NULL,
    consent bytea NOT NULL,
    consent_time timestamptz NOT NULL,
    PRIMARY KEY (customer_id, channel, purpose)
);

CREATE TABLE customer_aliases (
    alias text PRIMARY KEY,
    survivor text NOT NULL
);
CREATE INDEX customer_aliases_survivor ON customer_aliases (survivor);

CREATE TABLE dirty_customers (
    customer_id text PRIMARY KEY,
    since timestamptz NOT NULL,
    due_at timestamptz NOT NULL,
    rebuild boolean NOT NULL DEFAULT false,
    gen bigint NOT NULL DEFAULT 0
);
CREATE INDEX dirty_customers_due ON dirty_customers (due_at);
"""


def upgrade() -> None:
    for statement in DDL.split(";"):
        if statement.strip():
            op.execute(statement)
    create_request_log_table(op)


def downgrade() -> None:
    drop_request_log_table(op)
    for table in ("dirty_customers", "customer_aliases", "consents", "profiles", "events"):
        op.execute(f"DROP TABLE {table}")
