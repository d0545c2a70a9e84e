"""The trace context of the work that created a message (W3C ``traceparent``), so that the
sender, which handles it later in a trace of its own, can link its span back to the trigger
(the cart abandonment or back-in-stock event the message came from).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE messages ADD COLUMN traceparent text NOT NULL DEFAULT ''")


def downgrade() -> None:
    op.execute("ALTER TABLE messages DROP COLUMN traceparent")
