"""The event tables every service's database holds (created by its first migration)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import UUID

metadata = MetaData()

outbox_table = Table(
    "outbox",
    metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("producer", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("envelope", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Index("outbox_unpublished", "seq", postgresql_where="published_at IS NULL"),
)

processed_events_table = Table(
    "processed_events",
    metadata,
    Column("consumer_group", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer_group", "event_id"),
)


def create_event_tables(op: Any) -> None:
    """Call from a service's first Alembic migration: ``create_event_tables(op)``."""
    metadata.create_all(bind=op.get_bind(), tables=[outbox_table, processed_events_table])


def drop_event_tables(op: Any) -> None:
    metadata.drop_all(bind=op.get_bind(), tables=[outbox_table, processed_events_table])
