"""Domain events: a transactional outbox, a relay to Redis Streams, and consumer groups.

Producer: :func:`~continuum_runtime.events.outbox.add_event` writes the event into the
``outbox`` table in the same transaction as the change. :class:`OutboxRelay` publishes
committed events to the producer's stream (``<namespace>:events:<producer>``) and marks
them published. Consumer: :class:`EventConsumer` reads through a consumer group, runs the
handler and records the event as processed in one database transaction, then acknowledges;
a message a crashed consumer did not acknowledge is claimed by another after a while, and
one that keeps failing goes to ``<stream>:dead``. Delivery is at least once; handling is
idempotent because the processed record and the effect commit together.
"""

from continuum_runtime.events.consumer import EventConsumer, Handler, HandlerSpec
from continuum_runtime.events.outbox import add_event, new_envelope, unpack_payload
from continuum_runtime.events.relay import OutboxRelay, stream_key
from continuum_runtime.events.schema import (
    create_event_tables,
    drop_event_tables,
    outbox_table,
    processed_events_table,
)

__all__ = [
    "EventConsumer",
    "Handler",
    "HandlerSpec",
    "OutboxRelay",
    "add_event",
    "create_event_tables",
    "drop_event_tables",
    "new_envelope",
    "outbox_table",
    "processed_events_table",
    "stream_key",
    "unpack_payload",
]
