"""The identity graph: customers, hashed identifiers, the append-only link log, the merge
log, blocked values, co-occurrences (shared-value detection), refusals, merge rules and the
request log.

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
CREATE TABLE customers (
    id text PRIMARY KEY,
    state smallint NOT NULL DEFAULT 1,
    anonymous boolean NOT NULL,
    merged_into text REFERENCES customers (id),
    first_seen_channel smallint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_merged_into ON customers (merged_into) WHERE merged_into IS NOT NULL;

CREATE TABLE identifiers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type smallint NOT NULL,
    value_hash bytea NOT NULL,
    masked text NOT NULL,
    device_id text,
    customer_id text NOT NULL REFERENCES customers (id),
    origin_customer_id text NOT NULL,
    first_seen_channel smallint NOT NULL DEFAULT 0,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT identifiers_value UNIQUE (type, value_hash),
    CONSTRAINT identifiers_raw_only_for_devices CHECK (device_id IS NULL OR type = 6)
);
CREATE INDEX identifiers_customer ON identifiers (customer_id);

CREATE TABLE links (
    id text PRIMARY KEY,
    customer_id text NOT NULL,
    a_id bigint NOT NULL REFERENCES identifiers (id) ON DELETE CASCADE,
    b_id bigint NOT NULL REFERENCES identifiers (id) ON DELETE CASCADE,
    method smallint NOT NULL,
    rule_id text NOT NULL,
    channel smallint NOT NULL DEFAULT 0,
    actor text NOT NULL DEFAULT '',
    evidence jsonb NOT NULL DEFAULT '[]',
    score double precision NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    removed_at timestamptz,
    removed_by_entry text
);
CREATE INDEX links_a ON links (a_id) WHERE removed_at IS NULL;
CREATE INDEX links_b ON links (b_id) WHERE removed_at IS NULL;
CREATE INDEX links_customer ON links (customer_id);

CREATE TABLE merge_log (
    id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    action smallint NOT NULL,
    customer_id text NOT NULL,
    subjects text[] NOT NULL,
    merged_customer_ids text[] NOT NULL DEFAULT '{}',
    resulting_customer_ids text[] NOT NULL DEFAULT '{}',
    link_ids text[] NOT NULL DEFAULT '{}',
    identifiers jsonb NOT NULL DEFAULT '[]',
    rule_id text NOT NULL DEFAULT '',
    method smallint NOT NULL DEFAULT 0,
    score double precision NOT NULL DEFAULT 1,
    channel smallint NOT NULL DEFAULT 0,
    actor text NOT NULL DEFAULT '',
    reason text NOT NULL DEFAULT '',
    undone_by text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX merge_log_subjects ON merge_log USING gin (subjects);

CREATE TABLE blocked_values (
    id text PRIMARY KEY,
    type smallint NOT NULL,
    value_hash bytea NOT NULL,
    masked text NOT NULL,
    source smallint NOT NULL,
    reason text NOT NULL,
    actor text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT blocked_values_value UNIQUE (type, value_hash)
);

CREATE TABLE cooccurrences (
    identifier_id bigint NOT NULL REFERENCES identifiers (id) ON DELETE CASCADE,
    other_id bigint NOT NULL REFERENCES identifiers (id) ON DELETE CASCADE,
    other_type smallint NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (identifier_id, other_id)
);

CREATE TABLE refusals (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_a text NOT NULL,
    customer_b text NOT NULL,
    reason smallint NOT NULL,
    identifiers jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refusals_a ON refusals (customer_a);
CREATE INDEX refusals_b ON refusals (customer_b);

CREATE TABLE merge_rules (
    id smallint PRIMARY KEY CHECK (id = 1),
    rules bytea NOT NULL,
    revision bigint NOT NULL,
    updated_by text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


def upgrade() -> None:
    for statement in DDL.split(";"):
        if statement.strip():
            op.execute(statement)
    create_request_log_table(op)


def downgrade() -> None:
    drop_request_log_table(op)
    for table in (
        "merge_rules",
        "refusals",
        "cooccurrences",
        "blocked_values",
        "merge_log",
        "links",
        "identifiers",
        "customers",
    ):
        op.execute(f"DROP TABLE {table}")
