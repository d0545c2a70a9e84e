"""The customer of each handoff as a column, so that forgetting a customer finds the
conversations routed with their context (the rows written before are filled in from their
bodies).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from continuum.notification.v1 import notification_resources_pb2 as res

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE handoffs ADD COLUMN customer_id text NOT NULL DEFAULT ''")
    bind = op.get_bind()
    for handoff_id, body in bind.execute(sa.text("SELECT handoff_id, body FROM handoffs")):
        customer_id = res.Handoff.FromString(bytes(body)).customer_id
        if customer_id:
            bind.execute(
                sa.text("UPDATE handoffs SET customer_id = :c WHERE handoff_id = :h"),
                {"c": customer_id, "h": handoff_id},
            )
    op.execute("CREATE INDEX handoffs_customer ON handoffs (customer_id) WHERE customer_id <> ''")


def downgrade() -> None:
    op.execute("ALTER TABLE handoffs DROP COLUMN customer_id")
