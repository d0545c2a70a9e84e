"""The ingestion path: check each event, resolve the batch, store it in one transaction.

Only bulk work happens here, so that a batch of 1,000 events costs a handful of round
trips: one ``BatchResolveIdentity`` for the identifier sets the cache does not hold, then
one transaction with three statements (mark the customers dirty for the deriver, insert
the events with ``ON CONFLICT DO NOTHING``, insert the outbox rows). Traits are derived
later, in batches, by :mod:`continuum_profile.deriver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2

from continuum.common.v1 import event_pb2, identifier_pb2
from continuum.profile.v1 import profile_events_pb2 as ev
from continuum.profile.v1 import profile_resources_pb2 as res
from continuum.profile.v1 import profile_service_pb2 as pb
from continuum_profile import store
from continuum_profile.resolution import Request, Resolved, ResolveFailure, Resolver
from continuum_profile.settings import DeriveSettings, IngestSettings
from continuum_profile.validation import (
    IdentifierKey,
    Limits,
    Rejection,
    check_event,
    clean,
    device_of,
    event_type_of,
    fingerprint,
    identifier_key,
)
from continuum_runtime.db import Database
from continuum_runtime.errors import FieldViolation
from continuum_runtime.telemetry import inject_context

Status = pb.EventResultStatus
Reason = pb.EventRejectionReason
PRODUCER = "profile"
EVENT_INGESTED = "profile.event_ingested"


@dataclass
class _Candidate:
    index: int
    event: res.BehaviouralEvent
    key: IdentifierKey
    payload: bytes
    fingerprint: bytes


def _reject(result: pb.EventResult, rejection: Rejection) -> None:
    result.status = Status.EVENT_RESULT_STATUS_REJECTED
    result.rejection_reason = rejection.reason  # type: ignore[assignment]
    for v in rejection.violations:
        result.field_violations.append(
            error_details_pb2.BadRequest.FieldViolation(
                field=v.field, description=v.description, reason=v.reason
            )
        )


def fill_published(
    out: res.BehaviouralEvent,
    event: res.BehaviouralEvent,
    customer_id: str,
    device_id: str | None,
    receive: Timestamp,
) -> None:
    """``out`` (empty) becomes the event as published: output fields set, only device
    identifiers kept (raw contact details never leave the service)."""
    out.CopyFrom(event)
    identifiers = out.identifiers
    if any(i.type != identifier_pb2.IDENTIFIER_TYPE_DEVICE_ID for i in identifiers):
        devices = [i for i in identifiers if i.type == identifier_pb2.IDENTIFIER_TYPE_DEVICE_ID]
        del identifiers[:]
        identifiers.extend(devices)
    out.customer_id = customer_id
    out.device_id = device_id or ""
    out.event_type = event_type_of(event)  # type: ignore[assignment]
    out.receive_time.CopyFrom(receive)


EVENTS_INGESTED = "profile.events_ingested"
# Kinds published one by one (profile.event_ingested) in the "split" mode: rare, and what
# other services react to at once. The browsing kinds go out per batch.
ONE_BY_ONE = frozenset(
    {
        "order_placed",
        "order_returned",
        "checkout_started",
        "store_visited",
        "service_contacted",
        "chat_message_sent",
    }
)


@dataclass(frozen=True)
class EnvelopeContext:
    """What the envelopes of one batch share: the time and the trace context."""

    time: Timestamp
    trace_context: dict[str, str]

    @staticmethod
    def now() -> EnvelopeContext:
        at = Timestamp()
        at.GetCurrentTime()
        return EnvelopeContext(at, inject_context())


@dataclass(frozen=True)
class Ingested:
    """One stored event to publish."""

    event: res.BehaviouralEvent
    customer_id: str
    anonymous: bool
    device_id: str | None
    receive_time: Timestamp


def _envelope(
    event_type: str, subject: str, customer_id: str, payload: Message, shared: EnvelopeContext
) -> store.OutboxRow:
    """An envelope as ``continuum_runtime.events.new_envelope`` builds it, with the batch's
    time and trace context computed once."""
    envelope = event_pb2.EventEnvelope(
        id=str(uuid.uuid4()),
        type=event_type,
        producer=PRODUCER,
        subject=subject,
        customer_id=customer_id,
        schema_version=1,
        time=shared.time,
        trace_context=shared.trace_context,
    )
    envelope.payload.Pack(payload)
    return store.OutboxRow(envelope.id, event_type, subject, envelope.SerializeToString())


def fill_ingested(out: ev.EventIngestedEvent, item: Ingested) -> None:
    """``out`` (empty) becomes the announcement of one stored event, built in place: the
    event is copied once (a batch announces hundreds)."""
    shown = "" if item.anonymous else item.customer_id
    out.customer_id = shown
    out.device_id = item.device_id or ""
    fill_published(out.event, item.event, shown, item.device_id, item.receive_time)


def outbox_rows(items: Sequence[Ingested], mode: str) -> list[store.OutboxRow]:
    """The outbox rows announcing stored events: per event, or (mode "split") the browsing
    kinds in one profile.events_ingested envelope and the rest per event."""
    if mode == "off" or not items:
        return []
    shared = EnvelopeContext.now()
    rows: list[store.OutboxRow] = []
    batched = ev.EventsIngestedEvent()
    for item in items:
        if mode == "split" and item.event.WhichOneof("payload") not in ONE_BY_ONE:
            fill_ingested(batched.events.add(), item)
            continue
        payload = ev.EventIngestedEvent()
        fill_ingested(payload, item)
        subject = payload.customer_id or (
            f"device:{item.device_id}" if item.device_id else item.customer_id
        )
        rows.append(_envelope(EVENT_INGESTED, subject, payload.customer_id, payload, shared))
    if batched.events:
        rows.append(_envelope(EVENTS_INGESTED, f"batch:{uuid.uuid4().hex}", "", batched, shared))
    return rows


class Ingestor:
    """Checks, resolves and stores batches of events."""

    def __init__(
        self,
        db: Database,
        resolver: Resolver,
        settings: IngestSettings,
        derive: DeriveSettings,
        wake_relay: Callable[[], None] = lambda: None,
        derive_caught_up: asyncio.Event | None = None,
    ) -> None:
        self.db = db
        self.resolver = resolver
        self.settings = settings
        self.derive = derive
        self.limits = Limits(settings.max_future_skew_s, settings.retention_days * 86_400.0)
        self._wake_relay = wake_relay
        self._derive_caught_up = derive_caught_up

    async def ingest(self, events: Sequence[res.BehaviouralEvent]) -> list[pb.EventResult]:
        now = time.time()
        results = [pb.EventResult(index=i, event_id=e.event_id) for i, e in enumerate(events)]
        candidates: list[_Candidate] = []
        in_batch: dict[str, bytes] = {}
        for index, event in enumerate(events):
            rejection = check_event(event, now, self.limits)
            if rejection is not None:
                _reject(results[index], rejection)
                continue
            clean(event)
            payload = event.SerializeToString(deterministic=True)
            fp = fingerprint(payload)
            earlier = in_batch.get(event.event_id)
            if earlier is not None:
                self._duplicate(results[index], earlier == fp)
                continue
            in_batch[event.event_id] = fp
            candidates.append(_Candidate(index, event, identifier_key(event), payload, fp))
        if candidates:
            await self._admit()
            await self._store(candidates, results, time.time())
        return results

    async def _admit(self) -> None:
        """Backpressure: while the deriver is behind, wait (up to ``max_hold_s``) before
        storing, so that what is accepted is derived within about a second."""
        gate = self._derive_caught_up
        if gate is None or gate.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gate.wait(), self.settings.max_hold_s)

    def _duplicate(self, result: pb.EventResult, same: bool) -> None:
        if same:
            result.status = Status.EVENT_RESULT_STATUS_DUPLICATE
        else:
            _reject(
                result,
                Rejection(
                    Reason.EVENT_REJECTION_REASON_EVENT_ID_CONFLICT,
                    (FieldViolation("event_id", "already used for an event with other content"),),
                ),
            )

    async def _store(
        self, candidates: list[_Candidate], results: list[pb.EventResult], now: float
    ) -> None:
        requests = []
        for c in candidates:
            observed = Timestamp()
            if c.event.occur_time.seconds > now:
                observed.FromNanoseconds(int(now * 1e9))
            else:
                observed.CopyFrom(c.event.occur_time)
            requests.append(Request(c.key, c.event.channel, observed))
        resolved = await self.resolver.resolve(requests)
        rows: list[store.EventRow] = []
        kept: list[_Candidate] = []
        for c in candidates:
            found = resolved.get(c.key) if resolved is not None else None
            if isinstance(found, ResolveFailure):
                violations = tuple(
                    FieldViolation(path, description) for path, description in found.violations
                ) or (FieldViolation("identifiers", found.message),)
                _reject(
                    results[c.index],
                    Rejection(Reason.EVENT_REJECTION_REASON_INVALID_FIELD, violations),
                )
                continue
            device_id, device_only = device_of(c.key)
            rows.append(
                store.EventRow(
                    event_id=c.event.event_id,
                    fingerprint=c.fingerprint,
                    customer_id=found.customer_id if isinstance(found, Resolved) else None,
                    anonymous=found.anonymous if isinstance(found, Resolved) else False,
                    device_id=device_id,
                    device_only=device_only,
                    event_type=event_type_of(c.event),
                    channel=c.event.channel,
                    occur_time=c.event.occur_time.ToDatetime(tzinfo=UTC),
                    payload=c.payload,
                )
            )
            kept.append(c)
        if not rows:
            return
        receive = datetime.now(UTC)
        receive_ts = Timestamp()
        receive_ts.FromDatetime(receive)
        customers = sorted({r.customer_id for r in rows if r.customer_id})
        # Announcements are built before the transaction, as if every event were new (a
        # resend is rare; then they are built again for what was stored).
        outbox = outbox_rows(
            [
                Ingested(c.event, row.customer_id, row.anonymous, row.device_id, receive_ts)
                for row, c in zip(rows, kept, strict=True)
                if row.customer_id
            ],
            self.settings.publish_ingested,
        )
        async with self.db.reader() as conn:
            driver = await store.raw_driver(conn)
            async with driver.transaction():
                # The deriver's queue first (the lock order in store's docstring): it keeps
                # one customer's ingests committing in seq order.
                await store.mark_dirty(driver, customers, self.derive.delay_s, False)
                inserted = await store.insert_events(driver, rows, receive)
                duplicates = [r.event_id for r in rows if r.event_id not in inserted]
                stored_fps = await store.fingerprints(driver, duplicates) if duplicates else {}
                if duplicates or any(
                    inserted[r.event_id] != r.customer_id for r in rows if r.customer_id
                ):
                    outbox = outbox_rows(
                        [
                            Ingested(c.event, customer, row.anonymous, row.device_id, receive_ts)
                            for row, c in zip(rows, kept, strict=True)
                            if (customer := inserted.get(row.event_id))
                        ],
                        self.settings.publish_ingested,
                    )
                await store.insert_outbox(driver, outbox)
        if outbox:
            self._wake_relay()
        for row, c in zip(rows, kept, strict=True):
            result = results[c.index]
            if row.event_id in inserted:
                result.status = Status.EVENT_RESULT_STATUS_ACCEPTED
                customer = inserted[row.event_id]
                result.customer_id = "" if (row.anonymous or customer is None) else customer
            else:
                self._duplicate(result, stored_fps.get(row.event_id) == row.fingerprint)


def new_request_id() -> str:
    return uuid.uuid4().hex


def counts(results: Sequence[pb.EventResult]) -> tuple[int, int, int]:
    accepted = sum(r.status == Status.EVENT_RESULT_STATUS_ACCEPTED for r in results)
    duplicate = sum(r.status == Status.EVENT_RESULT_STATUS_DUPLICATE for r in results)
    return accepted, duplicate, len(results) - accepted - duplicate
