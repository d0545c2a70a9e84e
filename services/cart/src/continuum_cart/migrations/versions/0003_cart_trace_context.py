"""The trace context of a cart's last change (W3C ``traceparent``), so that the
abandonment detector, which runs an idle period later in a trace of its own, can link its
span to the work that last touched the cart.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE carts ADD COLUMN traceparent text NOT NULL DEFAULT ''")


def downgrade() -> None:
    op.execute("ALTER TABLE carts DROP COLUMN traceparent")
