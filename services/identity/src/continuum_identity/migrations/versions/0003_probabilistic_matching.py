"""Probabilistic matching: trait records with their blocking keys, the fitted model, and
probable matches waiting for review.

Trait records hang off the identifier they were seen with, so they follow it through
merges, unmerges and splits, and disappear with it when a customer is forgotten.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DDL = """
CREATE TABLE trait_records (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    identifier_id bigint NOT NULL REFERENCES identifiers (id) ON DELETE CASCADE,
    given_name text NOT NULL DEFAULT '',
    family_name text NOT NULL DEFAULT '',
    birth_date text NOT NULL DEFAULT '',
    street text NOT NULL DEFAULT '',
    locality text NOT NULL DEFAULT '',
    postal_code text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trait_records_identifier ON trait_records (identifier_id);

CREATE TABLE trait_blocks (
    key bigint NOT NULL,
    record_id bigint NOT NULL REFERENCES trait_records (id) ON DELETE CASCADE,
    PRIMARY KEY (key, record_id)
);
CREATE INDEX trait_blocks_record ON trait_blocks (record_id);

CREATE TABLE match_model (
    id smallint PRIMARY KEY CHECK (id = 1),
    model jsonb NOT NULL,
    fitted_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE probable_matches (
    id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    customer_id text NOT NULL,
    candidate_customer_id text NOT NULL,
    score double precision NOT NULL,
    evidence jsonb NOT NULL DEFAULT '[]',
    state smallint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    decided_at timestamptz,
    decided_by text NOT NULL DEFAULT '',
    decision_reason text NOT NULL DEFAULT ''
);
CREATE INDEX probable_matches_state ON probable_matches (state, seq);
CREATE INDEX probable_matches_customer ON probable_matches (customer_id);
CREATE INDEX probable_matches_candidate ON probable_matches (candidate_customer_id);
"""


def upgrade() -> None:
    for statement in DDL.split(";"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in ("probable_matches", "match_model", "trait_blocks", "trait_records"):
        op.execute(f"DROP TABLE {table}")
