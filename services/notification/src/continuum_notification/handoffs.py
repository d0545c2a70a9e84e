"""Chatbot-to-human handoffs: routed to a store's associate feed or a service queue,
claimed by one associate or agent, closed with a resolution, or cancelled by the bot, or
expired when nobody claims them in time.

The customer context (who, from identity and profile; the items discussed with their
availability at the store) is fetched in parallel under one budget before the handoff is
stored; a part that cannot be filled is listed in ``missing_parts``. The customer started
the conversation, so no recognition consent is needed for the context; it reaches only the
store's associates or the queue's agents.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.common.v1 import partial_pb2
from continuum.identity.v1 import identity_service_pb2 as id_pb
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.notification.v1 import notification_events_pb2 as ev
from continuum.notification.v1 import notification_resources_pb2 as res
from continuum.notification.v1 import notification_service_pb2 as pb
from continuum.profile.v1 import profile_service_pb2 as prof_pb
from continuum_notification import store
from continuum_notification.briefing import Availability, customer_summary
from continuum_notification.checkins import (
    PRODUCER,
    check_associate,
    require_known_store,
    stamp,
    time_range,
    utcnow,
)
from continuum_notification.dependencies import (
    IDENTITY,
    INVENTORY,
    PROFILE,
    Dependencies,
    PartFailed,
    part,
)
from continuum_notification.feed import FeedPublisher, enqueue
from continuum_notification.policy import seconds
from continuum_notification.settings_cache import PolicyCache
from continuum_runtime import idempotency
from continuum_runtime.auth import PrincipalKind, current_principal, require_store_access
from continuum_runtime.db import Database
from continuum_runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from continuum_runtime.events import add_event
from continuum_runtime.tasks import raise_if_cancelling

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "customer_service"
CONTEXT_BUDGET_S = 1.0
MANAGER_SCOPE = "store.manager"
OPEN = (res.HANDOFF_STATUS_QUEUED, res.HANDOFF_STATUS_ACCEPTED)


class Handoffs:
    def __init__(
        self, db: Database, deps: Dependencies, policy: PolicyCache, publisher: FeedPublisher
    ) -> None:
        self.db = db
        self.deps = deps
        self.policy = policy
        self.publisher = publisher

    # --- context --------------------------------------------------------------------------

    async def _customer(
        self, request: pb.HandoffConversationRequest, budget: float
    ) -> tuple[str, res.CustomerSummary | None]:
        answer = await part(
            "customer",
            IDENTITY,
            self.deps.identity.ResolveIdentity(
                id_pb.ResolveIdentityRequest(
                    request_id=f"notification-handoff:{request.request_id}",
                    identifiers=request.identifiers,
                    channel=request.channel,
                    lookup_only=True,
                    actor="notification",
                ),
                timeout=budget,
            ),
            budget,
        )
        resolution = answer.resolution
        if resolution.anonymous or not resolution.customer_id:
            return "", None
        summary = await part(
            "customer",
            PROFILE,
            self.deps.profile.GetProfileSummary(
                prof_pb.GetProfileSummaryRequest(
                    customer_id=resolution.customer_id, store_id=request.preferred_store_id
                ),
                timeout=budget,
            ),
            budget,
        )
        return resolution.customer_id, customer_summary(summary.summary)

    async def _items(
        self, request: pb.HandoffConversationRequest, store_id: str, budget: float
    ) -> list[res.ItemSummary]:
        skus = list(dict.fromkeys(i.sku for i in request.items))
        answer = await part(
            "items",
            INVENTORY,
            self.deps.inventory.BatchGetItems(
                inv_pb.BatchGetItemsRequest(skus=skus, allow_missing=True), timeout=budget
            ),
            budget,
        )
        if answer.missing_skus:
            missing = set(answer.missing_skus)
            raise InvalidArgument(
                "unknown items",
                reason="UNKNOWN_ITEM",
                violations=[
                    FieldViolation(f"items[{n}].sku", "no such item", "UNKNOWN_ITEM")
                    for n, i in enumerate(request.items)
                    if i.sku in missing
                ],
            )
        by_sku = {i.sku: i for i in answer.items}
        items: list[res.ItemSummary] = []
        for ref in request.items:
            it = by_sku[ref.sku]
            summary = res.ItemSummary(
                sku=it.sku,
                product_id=it.product_id,
                name=it.name,
                brand=it.brand,
                category=it.category,
                size=it.size,
                colour=it.colour,
                image_url=it.image_url,
                quantity=ref.quantity,
            )
            if it.HasField("price"):
                summary.unit_price.CopyFrom(it.price)
            items.append(summary)
        if store_id and items:
            await Availability(self.deps, store_id, time.monotonic() + budget).fill(items)
        return items

    # --- RPCs -----------------------------------------------------------------------------

    async def handoff(
        self, request: pb.HandoffConversationRequest
    ) -> pb.HandoffConversationResponse:
        route = request.route or (
            res.HANDOFF_ROUTE_STORE
            if request.preferred_store_id
            else res.HANDOFF_ROUTE_SERVICE_QUEUE
        )
        store_id = request.preferred_store_id if route == res.HANDOFF_ROUTE_STORE else ""
        if request.preferred_store_id:
            await require_known_store(self.deps, request.preferred_store_id, "preferred_store_id")
        settings = await self.policy.get()
        missing: list[partial_pb2.MissingPart] = []
        customer_t = asyncio.ensure_future(self._customer(request, CONTEXT_BUDGET_S))
        items_t = (
            asyncio.ensure_future(self._items(request, store_id, CONTEXT_BUDGET_S))
            if request.items
            else None
        )
        customer_id, customer = "", None
        items: list[res.ItemSummary] = []
        try:
            try:
                customer_id, customer = await customer_t
            except PartFailed as failed:
                missing.append(failed.missing)
            if items_t is not None:
                try:
                    items = await items_t
                except PartFailed as failed:
                    missing.append(failed.missing)
                    items = [res.ItemSummary(sku=i.sku, quantity=i.quantity) for i in request.items]
        finally:
            for t in (customer_t, items_t):
                if t is not None and not t.done():
                    t.cancel()
            await asyncio.gather(
                *(t for t in (customer_t, items_t) if t is not None), return_exceptions=True
            )
        now = utcnow()
        handoff = res.Handoff(
            handoff_id=str(uuid.uuid4()),
            conversation_id=request.conversation_id,
            channel=request.channel,
            status=res.HANDOFF_STATUS_QUEUED,
            route=route,
            store_id=store_id,
            queue_id=(request.queue_id or DEFAULT_QUEUE)
            if route == res.HANDOFF_ROUTE_SERVICE_QUEUE
            else "",
            customer_id=customer_id,
            intent=request.intent,
            summary=request.summary,
            transcript=request.transcript,
            contact_mode=request.contact_mode,
            language_code=request.language_code,
            cart_id=request.cart_id,
            items=items,
            missing_parts=missing,
            create_time=stamp(now),
            update_time=stamp(now),
            expire_time=stamp(now + timedelta(seconds=seconds(settings.handoff_ttl) or 1800)),
        )
        if customer is not None:
            handoff.customer.CopyFrom(customer)
        seqs: list[int] = []

        async def work(session: AsyncSession) -> pb.HandoffConversationResponse:
            existing = await store.open_handoff_id(session, request.conversation_id)
            if existing is not None:
                raise _handoff_open(existing)
            await store.insert_handoff(session, handoff)
            await add_event(
                session,
                producer=PRODUCER,
                event_type="notification.handoff_requested",
                subject=customer_id or f"conversation:{request.conversation_id}",
                customer_id=customer_id,
                payload=ev.HandoffRequestedEvent(
                    handoff_id=handoff.handoff_id,
                    conversation_id=handoff.conversation_id,
                    customer_id=customer_id,
                    channel=handoff.channel,
                    route=handoff.route,
                    store_id=handoff.store_id,
                    queue_id=handoff.queue_id,
                    intent=handoff.intent,
                    contact_mode=handoff.contact_mode,
                    skus=[i.sku for i in handoff.items],
                    cart_id=handoff.cart_id,
                    create_time=handoff.create_time,
                ),
            )
            if handoff.route == res.HANDOFF_ROUTE_STORE:
                seqs.append(
                    await enqueue(
                        session,
                        res.FeedItem(
                            store_id=store_id, kind=res.FEED_ITEM_KIND_HANDOFF, handoff=handoff
                        ),
                    )
                )
            return pb.HandoffConversationResponse(handoff=handoff)

        try:
            answer = await idempotency.run_once(
                self.db, "HandoffConversation", request, pb.HandoffConversationResponse, work
            )
        except IntegrityError as exc:  # a concurrent handoff of the same conversation won
            async with self.db.reader() as conn:
                existing = await store.open_handoff_id(conn, request.conversation_id)
            raise _handoff_open(existing or "") from exc
        await self.publisher.publish_now(seqs)
        return answer

    def _visible(self, handoff: res.Handoff | None, handoff_id: str) -> res.Handoff:
        """The handoff if the caller may see it; NOT_FOUND otherwise (the same answer
        whether or not it exists in a store the caller may not read)."""
        principal = current_principal()
        if handoff is not None and (
            (handoff.route == res.HANDOFF_ROUTE_STORE and principal.may_see_store(handoff.store_id))
            or (
                handoff.route == res.HANDOFF_ROUTE_SERVICE_QUEUE
                and principal.kind is not PrincipalKind.ASSOCIATE
            )
        ):
            return handoff
        raise NotFound("no such handoff", metadata={"handoff_id": handoff_id})

    async def get(self, request: pb.GetHandoffRequest) -> pb.GetHandoffResponse:
        async with self.db.reader() as conn:
            handoff = await store.get_handoff(conn, request.handoff_id)
        return pb.GetHandoffResponse(handoff=self._visible(handoff, request.handoff_id))

    async def list(self, request: pb.ListHandoffsRequest) -> pb.ListHandoffsResponse:
        if request.WhichOneof("scope") == "store_id":
            require_store_access(request.store_id)
        elif current_principal().kind is PrincipalKind.ASSOCIATE:
            raise PermissionDenied(
                "associates see their stores' handoffs only", reason="QUEUE_NOT_PERMITTED"
            )
        start, end = time_range(request, "time_range")
        async with self.db.reader() as conn:
            found, nxt = await store.list_handoffs(
                conn,
                store_id=request.store_id,
                queue_id=request.queue_id,
                statuses=request.statuses,
                assignee_id=request.assignee_id,
                start=start,
                end=end,
                page=store.parse_page(request.page_token),
                limit=store.page_size(request.page_size),
            )
        return pb.ListHandoffsResponse(handoffs=found, next_page_token=nxt.token())

    async def _change(
        self,
        method: str,
        request: Any,
        response_type: Any,
        change: Any,
    ) -> Any:
        seqs: list[int] = []

        async def work(session: AsyncSession) -> Any:
            handoff = self._visible(
                await store.get_handoff(session, request.handoff_id, lock=True), request.handoff_id
            )
            closed_before = handoff.status not in OPEN
            await change(handoff)
            handoff.update_time.GetCurrentTime()
            await store.update_handoff(session, handoff)
            if not closed_before and handoff.status not in OPEN:
                await self._closed_event(session, handoff)
            if handoff.route == res.HANDOFF_ROUTE_STORE:
                seqs.append(
                    await enqueue(
                        session,
                        res.FeedItem(
                            store_id=handoff.store_id,
                            kind=res.FEED_ITEM_KIND_HANDOFF_UPDATED,
                            handoff=handoff,
                        ),
                    )
                )
            return response_type(handoff=handoff)

        answer = await idempotency.run_once(self.db, method, request, response_type, work)
        await self.publisher.publish_now(seqs)
        return answer

    async def accept(self, request: pb.AcceptHandoffRequest) -> pb.AcceptHandoffResponse:
        check_associate(request.assignee_id, "assignee_id")

        async def change(handoff: res.Handoff) -> None:
            if handoff.status == res.HANDOFF_STATUS_ACCEPTED:
                raise FailedPrecondition(
                    "someone else accepted the handoff first",
                    reason="HANDOFF_ALREADY_ACCEPTED",
                    metadata={"assignee_id": handoff.assignee_id},
                )
            if handoff.status != res.HANDOFF_STATUS_QUEUED:
                raise _closed(handoff)
            handoff.status = res.HANDOFF_STATUS_ACCEPTED
            handoff.assignee_id = request.assignee_id
            handoff.accept_time.GetCurrentTime()

        result: pb.AcceptHandoffResponse = await self._change(
            "AcceptHandoff", request, pb.AcceptHandoffResponse, change
        )
        return result

    async def complete(self, request: pb.CompleteHandoffRequest) -> pb.CompleteHandoffResponse:
        principal = current_principal()

        async def change(handoff: res.Handoff) -> None:
            if handoff.status == res.HANDOFF_STATUS_QUEUED:
                raise FailedPrecondition(
                    "the handoff has not been accepted", reason="HANDOFF_NOT_ACCEPTED"
                )
            if handoff.status != res.HANDOFF_STATUS_ACCEPTED:
                raise _closed(handoff)
            if (
                principal.kind is PrincipalKind.ASSOCIATE
                and principal.subject != handoff.assignee_id
                and MANAGER_SCOPE not in principal.scopes
            ):
                raise PermissionDenied(
                    "only the assignee or the store's manager may complete it",
                    reason="NOT_ASSIGNEE",
                )
            handoff.status = res.HANDOFF_STATUS_COMPLETED
            handoff.resolution = request.resolution
            handoff.resolution_note = request.note
            handoff.order_id = request.order_id
            handoff.close_time.GetCurrentTime()

        result: pb.CompleteHandoffResponse = await self._change(
            "CompleteHandoff", request, pb.CompleteHandoffResponse, change
        )
        return result

    async def cancel(self, request: pb.CancelHandoffRequest) -> pb.CancelHandoffResponse:
        async def change(handoff: res.Handoff) -> None:
            if handoff.status not in OPEN:
                raise _closed(handoff)
            handoff.status = res.HANDOFF_STATUS_CANCELLED
            handoff.resolution_note = request.reason
            handoff.close_time.GetCurrentTime()

        result: pb.CancelHandoffResponse = await self._change(
            "CancelHandoff", request, pb.CancelHandoffResponse, change
        )
        return result

    async def expire_due(self, now: datetime | None = None) -> int:
        """Expire QUEUED handoffs past their expiry; how many."""
        seqs: list[int] = []
        async with self.db.transaction() as session:
            due = await store.expiring_handoffs(session, now or utcnow())
            for handoff in due:
                handoff.status = res.HANDOFF_STATUS_EXPIRED
                handoff.close_time.GetCurrentTime()
                handoff.update_time.GetCurrentTime()
                await store.update_handoff(session, handoff)
                await self._closed_event(session, handoff)
                if handoff.route == res.HANDOFF_ROUTE_STORE:
                    seqs.append(
                        await enqueue(
                            session,
                            res.FeedItem(
                                store_id=handoff.store_id,
                                kind=res.FEED_ITEM_KIND_HANDOFF_UPDATED,
                                handoff=handoff,
                            ),
                        )
                    )
        await self.publisher.publish_now(seqs)
        return len(due)

    async def _closed_event(self, session: AsyncSession, handoff: res.Handoff) -> None:
        event = ev.HandoffClosedEvent(
            handoff_id=handoff.handoff_id,
            conversation_id=handoff.conversation_id,
            customer_id=handoff.customer_id,
            status=handoff.status,
            resolution=handoff.resolution,
            route=handoff.route,
            store_id=handoff.store_id,
            queue_id=handoff.queue_id,
            assignee_id=handoff.assignee_id,
            order_id=handoff.order_id,
            close_time=handoff.close_time,
        )
        if handoff.HasField("accept_time"):
            event.wait_duration.FromTimedelta(
                handoff.accept_time.ToDatetime() - handoff.create_time.ToDatetime()
            )
        await add_event(
            session,
            producer=PRODUCER,
            event_type="notification.handoff_closed",
            subject=handoff.customer_id or f"conversation:{handoff.conversation_id}",
            customer_id=handoff.customer_id,
            payload=event,
        )


def _handoff_open(handoff_id: str) -> AlreadyExists:
    return AlreadyExists(
        "the conversation already has an open handoff",
        reason="HANDOFF_OPEN",
        metadata={"handoff_id": handoff_id},
    )


def _closed(handoff: res.Handoff) -> FailedPrecondition:
    return FailedPrecondition(
        "the handoff is no longer open",
        reason="HANDOFF_CLOSED",
        metadata={"status": res.HandoffStatus.Name(handoff.status)},
    )


async def maintenance_loop(handoffs: Handoffs, publisher: FeedPublisher, interval_s: float) -> None:
    """Expire unclaimed handoffs and re-publish feed items a crash or outage left queued."""
    while True:
        try:
            await handoffs.expire_due()
            await publisher.republish_stale()
        except Exception:
            raise_if_cancelling()
            log.exception("notification maintenance pass failed")
        await asyncio.sleep(interval_s)
