"""Store check-in to briefing to feed, and associates' feedback on next best actions.

Check-in: the identifiers are resolved (identity, look-up only: a check-in never creates a
customer) while the request log is read for replays; the (customer, store) deduplication
window is claimed in Redis (SET NX PX; the database decides when Redis cannot); the
briefing is assembled outside any transaction (see :mod:`briefing`); one statement then
records the check-in, the briefing, the events, the feed item and the answer, and the feed
item goes to the store's stream right after, before the answer.

Consent to be recognised in store is the gate: profile's summary says it. When profile
cannot be reached, a consent it confirmed recently (``consent_cache``) is honoured and the
briefing says the customer part is missing; without one the check-in fails closed with
UNAVAILABLE (nothing is kept; the caller retries with the same request id).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import redis.asyncio as aioredis
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.common.v1 import channel_pb2
from continuum.identity.v1 import identity_service_pb2 as id_pb
from continuum.notification.v1 import notification_events_pb2 as ev
from continuum.notification.v1 import notification_resources_pb2 as res
from continuum.notification.v1 import notification_service_pb2 as pb
from continuum_notification import store
from continuum_notification.briefing import assemble, headline
from continuum_notification.dependencies import IDENTITY, Dependencies, unavailable
from continuum_notification.feed import FeedPublisher, enqueue
from continuum_notification.policy import seconds
from continuum_notification.settings_cache import PolicyCache
from continuum_runtime import idempotency
from continuum_runtime.auth import PrincipalKind, current_principal, require_store_access
from continuum_runtime.db import Database
from continuum_runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from continuum_runtime.events import add_event, new_envelope, outbox_table
from continuum_runtime.tasks import raise_if_cancelling

PRODUCER = "notification"
log = logging.getLogger(__name__)
FUTURE_SKEW_S = 300.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def stamp(at: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


def unknown_store(store_id: str, field: str = "store_id") -> InvalidArgument:
    return InvalidArgument(
        "unknown store",
        reason="UNKNOWN_STORE",
        metadata={"store_id": store_id},
        violations=[FieldViolation(field, "no such store", "UNKNOWN_STORE")],
    )


async def require_known_store(deps: Dependencies, store_id: str, field: str = "store_id") -> None:
    """INVALID_ARGUMENT (UNKNOWN_STORE) for a store inventory does not know. When inventory
    cannot answer and nothing is cached, the store is given the benefit of the doubt."""
    if await deps.store_exists(store_id) is False:
        raise unknown_store(store_id, field)


def check_associate(associate_id: str, field: str) -> None:
    """An associate may act only as themselves."""
    principal = current_principal()
    if principal.kind is PrincipalKind.ASSOCIATE and associate_id != principal.subject:
        raise PermissionDenied(
            f"{field} does not match the caller's credentials",
            reason="ASSOCIATE_MISMATCH",
            metadata={"field": field},
        )


class CheckIns:
    """CheckIn, briefings and action feedback."""

    def __init__(
        self,
        db: Database,
        deps: Dependencies,
        policy: PolicyCache,
        publisher: FeedPublisher,
        consent_cache_ttl_s: float,
        redis: aioredis.Redis,
        namespace: str,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.db = db
        self.deps = deps
        self.policy = policy
        self.publisher = publisher
        self.consent_cache_ttl_s = consent_cache_ttl_s

    async def _resolve(self, request: pb.CheckInRequest, at: datetime) -> id_pb.Resolution:
        try:
            answer = await self.deps.identity.ResolveIdentity(
                id_pb.ResolveIdentityRequest(
                    request_id=f"notification-checkin:{request.request_id}",
                    identifiers=request.identifiers,
                    channel=channel_pb2.CHANNEL_STORE,
                    observe_time=stamp(at),
                    lookup_only=True,
                    actor=request.associate_id or "notification",
                ),
                timeout=2.0,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(
                    "identifiers are not valid",
                    reason="INVALID_IDENTIFIERS",
                    violations=[FieldViolation("identifiers", exc.details() or "invalid")],
                ) from exc
            raise unavailable(IDENTITY, exc) from exc
        return answer.resolution

    def _gate_key(self, customer_id: str, store_id: str) -> str:
        return f"{self.namespace}:notification:checkin:{customer_id}:{store_id}"

    async def _gate(
        self, check_in: res.CheckIn, request_id: str, window: timedelta
    ) -> tuple[str, str, str] | bool | None:
        """Claim the (customer, store) deduplication window in Redis.

        True: claimed (this check-in is the first); (request id, check-in id, briefing id)
        of the check-in that holds it; None when Redis cannot answer (the database decides).
        """
        key = self._gate_key(check_in.customer_id, check_in.store_id)
        value = f"{request_id}|{check_in.check_in_id}|{check_in.briefing_id}"
        ttl_ms = max(1, int(window.total_seconds() * 1000))
        try:
            claimed = await self.redis.set(key, value, nx=True, px=ttl_ms)
            if claimed:
                return True
            holder = await self.redis.get(key)
        except Exception:
            raise_if_cancelling()
            log.warning("check-in gate unavailable", exc_info=True)
            return None
        if holder is None:  # expired in between: try once more
            return await self._gate(check_in, request_id, window)
        held = (holder.decode() if isinstance(holder, bytes) else str(holder)).split("|")
        return (held[0], held[1], held[2]) if len(held) == 3 else ("", "", "")

    async def _regate(self, check_in: res.CheckIn, request_id: str) -> None:
        """Point the held window at this check-in's final ids (e.g. no briefing)."""
        key = self._gate_key(check_in.customer_id, check_in.store_id)
        value = f"{request_id}|{check_in.check_in_id}|{check_in.briefing_id}"
        try:
            await self.redis.set(key, value, xx=True, keepttl=True)
        except Exception:
            raise_if_cancelling()

    async def _release_gate(self, check_in: res.CheckIn) -> None:
        try:
            await self.redis.delete(self._gate_key(check_in.customer_id, check_in.store_id))
        except Exception:
            raise_if_cancelling()

    async def _record(
        self, request: pb.CheckInRequest, check_in: res.CheckIn, events: list[EventSpec]
    ) -> pb.CheckInResponse:
        """Record a check-in that needs no briefing (unknown customer, duplicate, not
        consented), with its events and the answer for replays."""
        answer = pb.CheckInResponse(check_in=check_in)
        async with self.db.transaction() as session:
            earlier = await idempotency.begin(session, "CheckIn", request, pb.CheckInResponse)
            if earlier is not None:
                return earlier
            await store.put_check_in(session, check_in, request.request_id)
            if events:
                await add_events(session, events)
            return await idempotency.remember(session, "CheckIn", request, answer)

    async def _earlier(self, request: pb.CheckInRequest) -> pb.CheckInResponse | None:
        # A read alone: the request log's row is written in the same statement as the
        # briefing, and a racing attempt is held off by the deduplication gate.
        return await idempotency.begin(
            self.db.statements, "CheckIn", request, pb.CheckInResponse, lock=False
        )

    async def check_in(self, request: pb.CheckInRequest) -> pb.CheckInResponse:
        started = time.monotonic()
        now = utcnow()
        settings = await self.policy.get()
        window = timedelta(seconds=seconds(settings.check_in_dedup_window))
        at = ts_or(request, "check_in_time", now)
        if at > now + timedelta(seconds=FUTURE_SKEW_S):
            raise InvalidArgument(
                "check_in_time is in the future",
                violations=[FieldViolation("check_in_time", "more than 5 minutes ahead")],
            )
        if at < now - max(window, timedelta(minutes=5)):
            raise InvalidArgument(
                "check_in_time is older than the deduplication window",
                violations=[FieldViolation("check_in_time", "too old")],
            )
        await require_known_store(self.deps, request.store_id)
        # The replay check and identity's answer are independent: ask both at once.
        earlier_t = asyncio.ensure_future(self._earlier(request))
        try:
            resolution = await self._resolve(request, at)
        finally:
            earlier = await earlier_t
        if earlier is not None:
            return earlier
        customer_id = "" if resolution.anonymous else resolution.customer_id
        check_in = res.CheckIn(
            check_in_id=str(uuid.uuid4()),
            store_id=request.store_id,
            source=request.source,
            customer_id=customer_id,
            source_reference=request.source_reference,
            associate_id=request.associate_id,
            check_in_time=stamp(at),
            create_time=stamp(now),
        )
        if not customer_id:
            check_in.status = res.CHECK_IN_STATUS_UNKNOWN_CUSTOMER
            return await self._record(request, check_in, [checked_in_event(check_in)])
        check_in.briefing_id = str(uuid.uuid4())
        gate = await self._gate(check_in, request.request_id, window)
        if gate is None:
            async with self.db.transaction() as session:
                await store.lock_customer_store(session, customer_id, request.store_id)
                recent = await store.recent_check_in(
                    session, customer_id, request.store_id, at - window
                )
            if recent is not None:
                gate = ("", recent.check_in_id, recent.briefing_id)
        if isinstance(gate, tuple):
            holder_request, holder_check_in, holder_briefing = gate
            if holder_request == request.request_id:
                # The same request is being handled right now: its answer, once there.
                answer = await self._earlier(request)
                if answer is not None:
                    return answer
                check_in.check_in_id = holder_check_in
                check_in.briefing_id = holder_briefing
                check_in.status = res.CHECK_IN_STATUS_BRIEFED
                return pb.CheckInResponse(check_in=check_in)
            check_in.status = res.CHECK_IN_STATUS_DEDUPLICATED
            check_in.duplicate_of_check_in_id = holder_check_in
            check_in.briefing_id = holder_briefing
            return await self._record(request, check_in, [])

        budget = seconds(settings.briefing_budget) or 0.25

        async def visits() -> res.VisitSummary:
            return await store.visits(
                self.db.statements, customer_id, request.store_id, at, check_in.check_in_id
            )

        try:
            out = await assemble(
                self.deps,
                customer_id=customer_id,
                store_id=request.store_id,
                check_in_id=check_in.check_in_id,
                budget_s=budget,
                visits=visits,
            )
            consent = out.consent
            if consent is None:
                async with self.db.reader() as conn:
                    consent = await store.cached_consent(
                        conn, customer_id, self.consent_cache_ttl_s
                    )
                if consent is None:
                    raise Unavailable(
                        "consent to be recognised in store cannot be verified right now",
                        reason="CONSENT_UNVERIFIED",
                        metadata={"service": "continuum.profile.v1.ProfileService"},
                    )
            if not consent:
                check_in.status = res.CHECK_IN_STATUS_NOT_CONSENTED
                check_in.briefing_id = ""
                await self._regate(check_in, request.request_id)
                if out.consent is not None:
                    async with self.db.transaction() as session:
                        await store.remember_consent(session, customer_id, out.consent)
                return await self._record(request, check_in, [checked_in_event(check_in)])
        except BaseException:
            await self._release_gate(check_in)  # nothing was recorded: a retry may brief
            raise
        created = utcnow()
        briefing = res.Briefing(
            briefing_id=check_in.briefing_id,
            check_in_id=check_in.check_in_id,
            store_id=request.store_id,
            check_in_source=request.source,
            check_in_time=check_in.check_in_time,
            customer_id=customer_id,
            wishlist_items=out.wishlist,
            complements=out.complements,
            next_best_actions=out.actions,
            missing_parts=out.missing,
            recommendation_ids=out.recommendation_ids,
            revision=1,
            create_time=stamp(created),
            update_time=stamp(created),
            expire_time=stamp(at + timedelta(seconds=seconds(settings.briefing_ttl))),
        )
        if out.customer is not None:
            briefing.customer.CopyFrom(out.customer)
        if out.cart is not None:
            briefing.cart.CopyFrom(out.cart)
        briefing.assembly_duration.FromTimedelta(timedelta(seconds=time.monotonic() - started))
        briefing.headline = headline(briefing)
        check_in.status = res.CHECK_IN_STATUS_BRIEFED
        answer = pb.CheckInResponse(check_in=check_in)
        item = res.FeedItem(
            store_id=briefing.store_id, kind=res.FEED_ITEM_KIND_BRIEFING, briefing=briefing
        )
        item.publish_time.CopyFrom(briefing.create_time)
        # One statement writes the check-in, the briefing, the consent seen, both events,
        # the feed item and the answer for replays (atomic on its own: no BEGIN/COMMIT).
        seq = await store.record_briefing(
            self.db.statements,
            check_in=check_in,
            request_id=request.request_id,
            briefing=briefing,
            consent=out.consent,
            events=[
                outbox_row(*checked_in_event(check_in)),
                outbox_row("notification.briefing_ready", customer_id, briefing_ready(briefing)),
            ],
            feed_item=item,
            request_log=(
                "CheckIn",
                request.request_id,
                idempotency.fingerprint(request),
                answer.SerializeToString(deterministic=True),
            ),
        )
        await self.publisher.publish_one(seq, briefing.store_id, item)
        return answer

    # --- reads ----------------------------------------------------------------------------

    async def get_briefing(self, request: pb.GetBriefingRequest) -> pb.GetBriefingResponse:
        require_store_access(request.store_id)
        async with self.db.reader() as conn:
            briefing = await store.get_briefing(conn, request.briefing_id)
        if briefing is None or briefing.store_id != request.store_id:
            raise NotFound(
                "no such briefing in this store", metadata={"briefing_id": request.briefing_id}
            )
        return pb.GetBriefingResponse(briefing=briefing)

    async def list_briefings(self, request: pb.ListBriefingsRequest) -> pb.ListBriefingsResponse:
        require_store_access(request.store_id)
        page = store.parse_page(request.page_token)
        start, end = time_range(request, "time_range")
        async with self.db.reader() as conn:
            found, nxt = await store.list_briefings(
                conn,
                store_id=request.store_id,
                customer_id=request.customer_id,
                start=start,
                end=end,
                active_at=utcnow() if request.active_only else None,
                page=page,
                limit=store.page_size(request.page_size),
            )
        return pb.ListBriefingsResponse(briefings=found, next_page_token=nxt.token())

    # --- feedback -------------------------------------------------------------------------

    async def record_feedback(
        self, request: pb.RecordActionFeedbackRequest
    ) -> pb.RecordActionFeedbackResponse:
        require_store_access(request.store_id)
        check_associate(request.associate_id, "associate_id")
        seqs: list[int] = []

        async def work(session: AsyncSession) -> pb.RecordActionFeedbackResponse:
            briefing = await store.get_briefing(session, request.briefing_id, lock=True)
            if briefing is None or briefing.store_id != request.store_id:
                raise NotFound(
                    "no such briefing in this store",
                    metadata={"briefing_id": request.briefing_id},
                )
            action = next(
                (a for a in briefing.next_best_actions if a.action_id == request.action_id), None
            )
            if action is None:
                raise NotFound(
                    "no such action in this briefing", metadata={"action_id": request.action_id}
                )
            allowed = {
                res.ACTION_STATE_PROPOSED: {
                    res.ACTION_OUTCOME_ACCEPTED,
                    res.ACTION_OUTCOME_DISMISSED,
                    res.ACTION_OUTCOME_COMPLETED,
                },
                res.ACTION_STATE_ACCEPTED: {
                    res.ACTION_OUTCOME_DISMISSED,
                    res.ACTION_OUTCOME_COMPLETED,
                },
            }
            if request.outcome not in allowed.get(action.state, set()):
                raise FailedPrecondition(
                    "the action is already closed",
                    reason="ACTION_ALREADY_CLOSED",
                    metadata={"state": res.ActionState.Name(action.state)},
                )
            now = utcnow()
            feedback = res.ActionFeedback(
                feedback_id=str(uuid.uuid4()),
                briefing_id=briefing.briefing_id,
                store_id=briefing.store_id,
                action_id=action.action_id,
                action_kind=action.kind,
                outcome=request.outcome,
                dismiss_reason=request.dismiss_reason,
                associate_id=request.associate_id,
                note=request.note,
                order_id=request.order_id,
                feedback_time=ts_or(request, "feedback_time", now, as_ts=True),
                create_time=stamp(now),
            )
            action.state = {
                res.ACTION_OUTCOME_ACCEPTED: res.ACTION_STATE_ACCEPTED,
                res.ACTION_OUTCOME_DISMISSED: res.ACTION_STATE_DISMISSED,
                res.ACTION_OUTCOME_COMPLETED: res.ACTION_STATE_COMPLETED,
            }[request.outcome]
            action.associate_id = request.associate_id
            action.state_time.CopyFrom(feedback.feedback_time)
            briefing.revision += 1
            briefing.update_time.CopyFrom(stamp(now))
            await store.put_briefing(session, briefing)
            await store.put_feedback(session, feedback)
            await add_event(
                session,
                producer=PRODUCER,
                event_type="notification.action_feedback_recorded",
                subject=briefing.customer_id,
                customer_id=briefing.customer_id,
                payload=ev.ActionFeedbackRecordedEvent(
                    feedback_id=feedback.feedback_id,
                    briefing_id=briefing.briefing_id,
                    customer_id=briefing.customer_id,
                    store_id=briefing.store_id,
                    action_id=action.action_id,
                    action_kind=action.kind,
                    outcome=request.outcome,
                    dismiss_reason=request.dismiss_reason,
                    associate_id=request.associate_id,
                    skus=[i.sku for i in action.items],
                    order_id=request.order_id,
                    recommendation_ids=briefing.recommendation_ids,
                    feedback_time=feedback.feedback_time,
                ),
            )
            update = res.ActionUpdate(
                briefing_id=briefing.briefing_id,
                briefing_revision=briefing.revision,
                action=action,
                feedback=feedback,
            )
            seqs.append(
                await enqueue(
                    session,
                    res.FeedItem(
                        store_id=briefing.store_id,
                        kind=res.FEED_ITEM_KIND_ACTION_UPDATED,
                        action_update=update,
                    ),
                )
            )
            return pb.RecordActionFeedbackResponse(
                feedback=feedback, action=action, briefing_revision=briefing.revision
            )

        answer = await idempotency.run_once(
            self.db, "RecordActionFeedback", request, pb.RecordActionFeedbackResponse, work
        )
        await self.publisher.publish_now(seqs)
        return answer


EventSpec = tuple[str, str, Message]


def checked_in_event(check_in: res.CheckIn) -> EventSpec:
    return (
        "notification.customer_checked_in",
        check_in.customer_id or f"check_in:{check_in.check_in_id}",
        ev.CustomerCheckedInEvent(
            check_in_id=check_in.check_in_id,
            customer_id=check_in.customer_id,
            store_id=check_in.store_id,
            source=check_in.source,
            status=check_in.status,
            briefing_id=check_in.briefing_id,
            check_in_time=check_in.check_in_time,
        ),
    )


def outbox_row(event_type: str, subject: str, payload: Message) -> dict[str, Any]:
    """An outbox row for one of notification's events (the envelope's customer id is the
    subject unless the subject names something else, e.g. "check_in:<id>")."""
    envelope = new_envelope(
        producer=PRODUCER,
        event_type=event_type,
        subject=subject,
        payload=payload,
        customer_id="" if ":" in subject else subject,
    )
    return {
        "event_id": uuid.UUID(envelope.id),
        "producer": PRODUCER,
        "event_type": event_type,
        "subject": subject,
        "envelope": envelope.SerializeToString(),
    }


async def add_events(session: AsyncSession, events: list[EventSpec]) -> None:
    """Several events into the outbox with one statement."""
    await session.execute(insert(outbox_table).values([outbox_row(*e) for e in events]))


def briefing_ready(briefing: res.Briefing) -> ev.BriefingReadyEvent:
    event = ev.BriefingReadyEvent(
        briefing_id=briefing.briefing_id,
        revision=briefing.revision,
        check_in_id=briefing.check_in_id,
        customer_id=briefing.customer_id,
        store_id=briefing.store_id,
        cart_skus=[i.sku for i in briefing.cart.items],
        wishlist_skus=[i.sku for i in briefing.wishlist_items],
        complement_skus=[i.sku for i in briefing.complements],
        action_ids=[a.action_id for a in briefing.next_best_actions],
        action_kinds=[a.kind for a in briefing.next_best_actions],
        recommendation_ids=briefing.recommendation_ids,
        missing_parts=[m.part for m in briefing.missing_parts],
        create_time=briefing.create_time,
        expire_time=briefing.expire_time,
    )
    event.assembly_duration.CopyFrom(briefing.assembly_duration)
    return event


def ts_or(message: Any, field: str, default: datetime, *, as_ts: bool = False) -> Any:
    """The timestamp field as a datetime (or Timestamp with ``as_ts``), else ``default``."""
    if message.HasField(field):
        value = getattr(message, field)
        return value if as_ts else value.ToDatetime(tzinfo=UTC)
    return stamp(default) if as_ts else default


def time_range(message: Any, field: str) -> tuple[datetime | None, datetime | None]:
    if not message.HasField(field):
        return None, None
    tr = getattr(message, field)
    start = tr.start_time.ToDatetime(tzinfo=UTC) if tr.HasField("start_time") else None
    end = tr.end_time.ToDatetime(tzinfo=UTC) if tr.HasField("end_time") else None
    return start, end


def duration(seconds_: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(timedelta(seconds=seconds_))
    return d
