"""The gRPC servicer of continuum.notification.v1.NotificationService: authorisation,
request checks beyond the contract's rules, and delegation to the domain modules
(:mod:`checkins`, :mod:`feed`, :mod:`messages`, :mod:`handoffs`). No SQL here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from continuum.notification.v1 import notification_resources_pb2 as res
from continuum.notification.v1 import notification_service_pb2 as pb
from continuum.notification.v1 import notification_service_pb2_grpc
from continuum_notification import store
from continuum_notification.checkins import CheckIns, require_known_store, utcnow
from continuum_notification.feed import (
    FeedHub,
    check_cursor_age,
    item_from_entry,
    parse_cursor,
    sequence_of,
)
from continuum_notification.handoffs import Handoffs
from continuum_notification.messages import Messages
from continuum_notification.policy import seconds
from continuum_runtime.auth import require_store_access
from continuum_runtime.errors import Unavailable

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["NotificationService"].full_name
SUBSCRIBE_FEED = f"/{SERVICE_NAME}/SubscribeFeed"
DEFAULT_HEARTBEAT_S = 15.0


class NotificationServicer(notification_service_pb2_grpc.NotificationServiceServicer):
    """NotificationService on top of the runtime."""

    def __init__(
        self, checkins: CheckIns, hub: FeedHub, messages: Messages, handoffs: Handoffs
    ) -> None:
        self.checkins = checkins
        self.hub = hub
        self.messages = messages
        self.handoffs = handoffs

    # --- check-in, briefings, feedback ------------------------------------------------------

    async def CheckIn(self, request: pb.CheckInRequest, context: Any) -> pb.CheckInResponse:
        return await self.checkins.check_in(request)

    async def GetBriefing(
        self, request: pb.GetBriefingRequest, context: Any
    ) -> pb.GetBriefingResponse:
        return await self.checkins.get_briefing(request)

    async def ListBriefings(
        self, request: pb.ListBriefingsRequest, context: Any
    ) -> pb.ListBriefingsResponse:
        return await self.checkins.list_briefings(request)

    async def RecordActionFeedback(
        self, request: pb.RecordActionFeedbackRequest, context: Any
    ) -> pb.RecordActionFeedbackResponse:
        return await self.checkins.record_feedback(request)

    # --- the feed -------------------------------------------------------------------------

    async def SubscribeFeed(
        self, request: pb.SubscribeFeedRequest, context: Any
    ) -> AsyncIterator[pb.SubscribeFeedResponse]:
        store_id = request.store_id
        require_store_access(store_id)
        await require_known_store(self.checkins.deps, store_id)
        settings = await self.checkins.policy.get()
        heartbeat = (
            seconds(request.heartbeat_interval)
            if request.HasField("heartbeat_interval")
            else DEFAULT_HEARTBEAT_S
        )
        kinds = set(request.kinds)

        def wanted(item: res.FeedItem) -> bool:
            return not kinds or item.kind in kinds

        def marker(kind: int, cursor: str) -> pb.SubscribeFeedResponse:
            item = res.FeedItem(
                cursor=cursor,
                sequence=sequence_of(cursor),
                store_id=store_id,
                kind=kind,  # type: ignore[arg-type]
            )
            item.publish_time.GetCurrentTime()
            return pb.SubscribeFeedResponse(item=item)

        if request.resume_after:
            parse_cursor(request.resume_after)
            if request.resume_after != "0-0":
                check_cursor_age(request.resume_after, seconds(settings.feed_retention))
        sub = await self.hub.subscribe(store_id)
        try:
            if request.resume_after:
                last = request.resume_after
                while True:
                    entries = await self.hub.backlog(store_id, last)
                    for entry_id, fields in entries:
                        item = item_from_entry(entry_id, fields)
                        last = entry_id
                        if wanted(item):
                            yield pb.SubscribeFeedResponse(item=item)
                    if len(entries) < 500:
                        break
            else:
                last = await self.hub.top_id(store_id)
                if request.replay_active:
                    async with self.checkins.db.reader() as conn:
                        briefings = await store.active_briefings(conn, store_id, utcnow())
                        handoffs = await store.open_store_handoffs(conn, store_id)
                    replay: list[res.FeedItem] = [
                        res.FeedItem(
                            store_id=store_id,
                            kind=res.FEED_ITEM_KIND_BRIEFING,
                            briefing=b,
                            publish_time=b.update_time,
                        )
                        for b in briefings
                    ] + [
                        res.FeedItem(
                            store_id=store_id,
                            kind=res.FEED_ITEM_KIND_HANDOFF,
                            handoff=h,
                            publish_time=h.update_time,
                        )
                        for h in handoffs
                    ]
                    replay.sort(key=lambda i: i.publish_time.ToNanoseconds())
                    for item in replay:
                        item.cursor = last
                        item.sequence = sequence_of(last)
                        if wanted(item):
                            yield pb.SubscribeFeedResponse(item=item)
            yield marker(res.FEED_ITEM_KIND_CAUGHT_UP, last)
            last_key = parse_cursor(last)
            while True:
                if sub.overflowed:
                    raise Unavailable(
                        "the subscriber fell too far behind: resume with the last cursor",
                        reason="FEED_SUBSCRIBER_LAGGING",
                    )
                try:
                    entry_id, fields = await asyncio.wait_for(sub.queue.get(), timeout=heartbeat)
                except TimeoutError:
                    yield marker(res.FEED_ITEM_KIND_HEARTBEAT, last)
                    continue
                key = parse_cursor(entry_id)
                if key <= last_key:
                    continue
                last, last_key = entry_id, key
                item = item_from_entry(entry_id, fields)
                if wanted(item):
                    yield pb.SubscribeFeedResponse(item=item)
        finally:
            await self.hub.unsubscribe(sub)

    # --- messages and preferences -----------------------------------------------------------

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: Any
    ) -> pb.ListMessagesResponse:
        return await self.messages.list_messages(request)

    async def GetMessage(
        self, request: pb.GetMessageRequest, context: Any
    ) -> pb.GetMessageResponse:
        return await self.messages.get_message(request)

    async def GetCustomerPreferences(
        self, request: pb.GetCustomerPreferencesRequest, context: Any
    ) -> pb.GetCustomerPreferencesResponse:
        return await self.messages.get_preferences(request)

    async def UpdateCustomerPreferences(
        self, request: pb.UpdateCustomerPreferencesRequest, context: Any
    ) -> pb.UpdateCustomerPreferencesResponse:
        return await self.messages.update_preferences(request)

    async def GetNotificationSettings(
        self, request: pb.GetNotificationSettingsRequest, context: Any
    ) -> pb.GetNotificationSettingsResponse:
        return await self.messages.get_settings(request)

    async def UpdateNotificationSettings(
        self, request: pb.UpdateNotificationSettingsRequest, context: Any
    ) -> pb.UpdateNotificationSettingsResponse:
        return await self.messages.update_settings(request)

    # --- handoffs -------------------------------------------------------------------------

    async def HandoffConversation(
        self, request: pb.HandoffConversationRequest, context: Any
    ) -> pb.HandoffConversationResponse:
        return await self.handoffs.handoff(request)

    async def GetHandoff(
        self, request: pb.GetHandoffRequest, context: Any
    ) -> pb.GetHandoffResponse:
        return await self.handoffs.get(request)

    async def ListHandoffs(
        self, request: pb.ListHandoffsRequest, context: Any
    ) -> pb.ListHandoffsResponse:
        return await self.handoffs.list(request)

    async def AcceptHandoff(
        self, request: pb.AcceptHandoffRequest, context: Any
    ) -> pb.AcceptHandoffResponse:
        return await self.handoffs.accept(request)

    async def CompleteHandoff(
        self, request: pb.CompleteHandoffRequest, context: Any
    ) -> pb.CompleteHandoffResponse:
        return await self.handoffs.complete(request)

    async def CancelHandoff(
        self, request: pb.CancelHandoffRequest, context: Any
    ) -> pb.CancelHandoffResponse:
        return await self.handoffs.cancel(request)
