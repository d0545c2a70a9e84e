"""Check-ins, briefings, the feed's publication queue, action feedback, customer messages,
preferences, the settings row, the wishlist watch list, handoffs and the request log.

Resources are stored as the API returns them (``body``, a serialized
continuum.notification.v1 message) next to the columns that queries filter on, as in the
cart service: a read is one indexed fetch, a change locks the row and writes it back.

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
CREATE TABLE check_ins (
    check_in_id uuid PRIMARY KEY,
    request_id text UNIQUE,
    customer_id text NOT NULL DEFAULT '',
    store_id text NOT NULL,
    -- CheckInStatus, 0 while the briefing is being assembled.
    status smallint NOT NULL,
    check_in_at timestamptz NOT NULL,
    briefing_id uuid,
    body bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Deduplication: the latest check-in of a customer at a store.
CREATE INDEX check_ins_customer_store ON check_ins (customer_id, store_id, check_in_at DESC)
    WHERE customer_id <> '';

CREATE TABLE briefings (
    briefing_id uuid PRIMARY KEY,
    check_in_id uuid NOT NULL,
    store_id text NOT NULL,
    customer_id text NOT NULL,
    revision integer NOT NULL,
    created_at timestamptz NOT NULL,
    expire_at timestamptz NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX briefings_store ON briefings (store_id, created_at DESC, briefing_id DESC);
CREATE INDEX briefings_store_active ON briefings (store_id, expire_at);

CREATE TABLE action_feedback (
    feedback_id uuid PRIMARY KEY,
    briefing_id uuid NOT NULL,
    action_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    body bytea NOT NULL
);
CREATE INDEX action_feedback_briefing ON action_feedback (briefing_id);

-- Feed items written with the change that caused them and deleted once they are on the
-- store's Redis stream: a crash between the commit and the XADD loses nothing.
CREATE TABLE feed_pending (
    seq bigserial PRIMARY KEY,
    store_id text NOT NULL,
    body bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The last recognition consent profile confirmed, for profile outages.
CREATE TABLE consent_cache (
    customer_id text PRIMARY KEY,
    allowed boolean NOT NULL,
    checked_at timestamptz NOT NULL
);

CREATE TABLE messages (
    message_id uuid PRIMARY KEY,
    customer_id text NOT NULL,
    kind smallint NOT NULL,
    channel smallint NOT NULL DEFAULT 0,
    status smallint NOT NULL,
    dedup_key text NOT NULL UNIQUE,
    cart_id text NOT NULL DEFAULT '',
    due_at timestamptz NOT NULL,
    sent_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    body bytea NOT NULL
);
CREATE INDEX messages_due ON messages (due_at) WHERE status = 1;
CREATE INDEX messages_customer ON messages (customer_id, created_at DESC, message_id DESC);
CREATE INDEX messages_created ON messages (created_at DESC, message_id DESC);
CREATE INDEX messages_sent ON messages (customer_id, sent_at) WHERE status IN (2, 3);

CREATE TABLE customer_preferences (
    customer_id text PRIMARY KEY,
    revision bigint NOT NULL,
    body bytea NOT NULL
);

CREATE TABLE notification_settings (
    id smallint PRIMARY KEY CHECK (id = 1),
    revision bigint NOT NULL,
    body bytea NOT NULL,
    updated_by text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Who wishlisted what (from cart's wishlist events), for back-in-stock alerts.
CREATE TABLE wishlist_watch (
    customer_id text NOT NULL,
    sku text NOT NULL,
    added_at timestamptz NOT NULL,
    PRIMARY KEY (customer_id, sku)
);
CREATE INDEX wishlist_watch_sku ON wishlist_watch (sku, added_at);

CREATE TABLE handoffs (
    handoff_id uuid PRIMARY KEY,
    conversation_id text NOT NULL,
    status smallint NOT NULL,
    route smallint NOT NULL,
    store_id text NOT NULL DEFAULT '',
    queue_id text NOT NULL DEFAULT '',
    assignee_id text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    expire_at timestamptz NOT NULL,
    body bytea NOT NULL
);
-- One open (QUEUED or ACCEPTED) handoff per conversation.
CREATE UNIQUE INDEX handoffs_open_conversation ON handoffs (conversation_id)
    WHERE status IN (1, 2);
CREATE INDEX handoffs_store ON handoffs (store_id, created_at DESC, handoff_id DESC);
CREATE INDEX handoffs_queue ON handoffs (queue_id, created_at DESC, handoff_id DESC);
CREATE INDEX handoffs_expiring ON handoffs (expire_at) WHERE status = 1;
"""

DROP = """
DROP TABLE IF EXISTS handoffs, wishlist_watch, notification_settings, customer_preferences,
    messages, consent_cache, feed_pending, action_feedback, briefings, check_ins;
"""


def upgrade() -> None:
    for statement in DDL.split(";"):
        if statement.strip():
            op.execute(statement)
    create_request_log_table(op)


def downgrade() -> None:
    drop_request_log_table(op)
    op.execute(DROP)
