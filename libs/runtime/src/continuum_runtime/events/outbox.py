"""Writing events into the outbox, in the caller's transaction."""

from __future__ import annotations

import uuid
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import text

from continuum.common.v1 import event_pb2
from continuum_runtime.db import Executor
from continuum_runtime.telemetry import inject_context

M = TypeVar("M", bound=Message)


def new_envelope(
    *,
    producer: str,
    event_type: str,
    subject: str,
    payload: Message,
    customer_id: str = "",
    schema_version: int = 1,
) -> event_pb2.EventEnvelope:
    """An envelope for ``payload`` carrying the current trace context."""
    envelope = event_pb2.EventEnvelope(
        id=str(uuid.uuid4()),
        type=event_type,
        producer=producer,
        subject=subject,
        customer_id=customer_id,
        schema_version=schema_version,
    )
    envelope.time.GetCurrentTime()
    envelope.payload.Pack(payload)
    envelope.trace_context.update(inject_context())
    return envelope


async def add_event(
    session: Executor,
    *,
    producer: str,
    event_type: str,
    subject: str,
    payload: Message,
    customer_id: str = "",
    schema_version: int = 1,
) -> event_pb2.EventEnvelope:
    """Record an event in the outbox as part of the session's open transaction.

    It is published only if, and once, that transaction commits.
    """
    envelope = new_envelope(
        producer=producer,
        event_type=event_type,
        subject=subject,
        payload=payload,
        customer_id=customer_id,
        schema_version=schema_version,
    )
    await session.execute(
        text(
            "INSERT INTO outbox (event_id, producer, event_type, subject, envelope) "
            "VALUES (:event_id, :producer, :event_type, :subject, :envelope)"
        ),
        {
            "event_id": uuid.UUID(envelope.id),
            "producer": producer,
            "event_type": event_type,
            "subject": subject,
            "envelope": envelope.SerializeToString(),
        },
    )
    return envelope


def unpack_payload(envelope: event_pb2.EventEnvelope, message_type: type[M]) -> M:
    """The envelope's payload as ``message_type`` (ValueError if it is another type)."""
    message = message_type()
    if not envelope.payload.Unpack(message):
        raise ValueError(
            f"event {envelope.id} of type {envelope.type} carries "
            f"{envelope.payload.type_url}, not {message_type.DESCRIPTOR.full_name}"
        )
    return message
