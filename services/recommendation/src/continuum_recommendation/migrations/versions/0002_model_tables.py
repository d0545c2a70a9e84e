"""The recommendation service's own tables: behaviour, items, traits, model versions.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from continuum_runtime.idempotency import create_request_log_table, drop_request_log_table

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


STATEMENTS = [
    """
    CREATE TABLE interactions (
    seq bigserial PRIMARY KEY,
    subject text NOT NULL,
    sku text NOT NULL,
    kind smallint NOT NULL,
    quantity integer NOT NULL DEFAULT 1,
    basket text NOT NULL DEFAULT '',
    channel smallint NOT NULL DEFAULT 0,
    store_id text NOT NULL DEFAULT '',
    occurred_at timestamptz NOT NULL
    )
    """,
    """
    CREATE UNIQUE INDEX interactions_purchase_once
    ON interactions (subject, basket, sku) WHERE kind = 4 AND basket <> ''
    """,
    """
    CREATE INDEX interactions_subject ON interactions (subject, seq)
    """,
    """
    CREATE INDEX interactions_time ON interactions (occurred_at)
    """,
    """
    CREATE TABLE items (
    sku text PRIMARY KEY,
    product_id text NOT NULL DEFAULT '',
    name text NOT NULL DEFAULT '',
    category text NOT NULL DEFAULT '',
    brand text NOT NULL DEFAULT '',
    size text NOT NULL DEFAULT '',
    colour text NOT NULL DEFAULT '',
    price_minor bigint NOT NULL DEFAULT 0,
    currency text NOT NULL DEFAULT '',
    image_url text NOT NULL DEFAULT '',
    seq bigserial,
    updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE traits (
    customer_id text PRIMARY KEY,
    body bytea NOT NULL,
    revision bigint NOT NULL DEFAULT 0,
    seq bigserial,
    updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE model_versions (
    seq bigserial UNIQUE,
    version_id text PRIMARY KEY,
    state smallint NOT NULL,
    body bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE UNIQUE INDEX model_versions_one_active ON model_versions (state) WHERE state = 5
    """,
    """
    CREATE TABLE model_artifacts (
    version_id text PRIMARY KEY REFERENCES model_versions (version_id),
    blob bytea NOT NULL
    )
    """,
    """
    CREATE INDEX items_seq ON items (seq)
    """,
    """
    CREATE INDEX traits_seq ON traits (seq)
    """,
    """
    CREATE TABLE forgotten (
    seq bigserial PRIMARY KEY,
    subject text NOT NULL UNIQUE
    )
    """,
    """
    CREATE TABLE feedback (
    seq bigserial PRIMARY KEY,
    recommendation_id text NOT NULL,
    kind smallint NOT NULL,
    sku text NOT NULL DEFAULT '',
    attributed boolean NOT NULL,
    occurred_at timestamptz NOT NULL,
    body bytea NOT NULL
    )
    """,
    """
    CREATE INDEX feedback_time ON feedback (occurred_at)
    """,
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)
    create_request_log_table(op)


def downgrade() -> None:
    drop_request_log_table(op)
    op.execute(
        "DROP TABLE forgotten, feedback, model_artifacts, model_versions, traits, items, interactions"
    )
