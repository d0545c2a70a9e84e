"""What notification last heard of each customer's cart and wishlist (from cart's events),
so that a check-in can ask for availability, complements and next best actions while the
cart service is still answering; the briefing keeps that work only when the cart and the
wishlist turn out to hold exactly those items.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE basket_hints ("
        " customer_id text PRIMARY KEY,"
        " cart jsonb NOT NULL DEFAULT '[]',"
        " cart_time timestamptz,"
        " wishlist jsonb NOT NULL DEFAULT '[]')"
    )


def downgrade() -> None:
    op.execute("DROP TABLE basket_hints")
