"""A tiny service schema for the runtime tests: notes, plus the event tables.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from continuum_runtime.events import create_event_tables, drop_event_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_event_tables(op)
    op.create_table(
        "notes",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_table(
        "note_counts",
        sa.Column("note_id", sa.Text, primary_key=True),
        sa.Column("seen", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("note_counts")
    op.drop_table("notes")
    drop_event_tables(op)
