"""The gRPC servicer of continuum.profile.v1.ProfileService: requests in, answers out.

Protovalidate has already checked each request's shape (the runtime interceptor), except
the events of a batch, which :mod:`continuum_profile.validation` checks one by one so that
a bad event is rejected on its own. This layer maps messages to the ingestion pipeline,
the store and the trait functions, and their results back to messages. Raw contact data
is read and written here but never logged or put on a span.
"""

from __future__ import annotations

import time
import zoneinfo
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import field_mask_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.common.v1 import channel_pb2
from continuum.profile.v1 import profile_events_pb2 as ev
from continuum.profile.v1 import profile_resources_pb2 as res
from continuum.profile.v1 import profile_service_pb2 as pb
from continuum.profile.v1 import profile_service_pb2_grpc
from continuum_profile import store, traits
from continuum_profile.deriver import load_state
from continuum_profile.forget import erase
from continuum_profile.handlers import CacheBus
from continuum_profile.ingest import Ingestor, counts
from continuum_runtime import idempotency
from continuum_runtime.db import Database
from continuum_runtime.errors import Aborted, FieldViolation, InvalidArgument, NotFound
from continuum_runtime.events import add_event

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ProfileService"].full_name
DEFAULT_PAGE_SIZE = 50
MAX_STREAM_REJECTIONS = 1000
PROFILE_FIELDS = {f.name for f in res.Profile.DESCRIPTOR.fields}
WRITABLE_ROOTS = ("contact", "loyalty_tier", "contact_preferences", "time_zone")


def _writable(path: str) -> bool:
    root, _, rest = path.partition(".")
    if root not in WRITABLE_ROOTS:
        return False
    if not rest:
        return True
    if root == "contact":
        return rest.split(".")[0] in res.ContactDetails.DESCRIPTOR.fields_by_name
    if root == "contact_preferences":
        return rest.split(".")[0] in res.ContactPreferences.DESCRIPTOR.fields_by_name
    return False


def _ts(dt: datetime) -> Any:
    return traits.ts(dt.timestamp())


def build_profile(row: Any, consents: Sequence[bytes], now: float) -> res.Profile:
    profile = res.Profile(
        customer_id=row.customer_id,
        loyalty_tier=row.loyalty_tier,
        time_zone=row.time_zone,
        revision=row.revision,
        create_time=_ts(row.create_time),
        update_time=_ts(row.update_time),
        consents=[res.Consent.FromString(c) for c in consents],
    )
    if row.contact:
        profile.contact.ParseFromString(row.contact)
    if row.contact_preferences:
        profile.contact_preferences.ParseFromString(row.contact_preferences)
    if row.state:
        state = load_state(row.state)
        profile.traits.CopyFrom(traits.traits_of(state, now))
        profile.intent_signals.CopyFrom(traits.intent_of(state, now))
        profile.purchases.CopyFrom(traits.purchases_of(state, now))
        profile.channel_activity.extend(traits.activity_of(state))
        profile.store_affinities.extend(traits.stores_of(state, now))
    return profile


def _consent_granted(consent: res.Consent | None, now: float) -> bool:
    if consent is None or consent.status != res.CONSENT_STATUS_GRANTED:
        return False
    if consent.HasField("expire_time"):
        return consent.expire_time.seconds + consent.expire_time.nanos / 1e9 > now
    return True


class ProfileServicer(profile_service_pb2_grpc.ProfileServiceServicer):
    """ProfileService on top of the runtime."""

    def __init__(self, db: Database, ingestor: Ingestor, bus: CacheBus) -> None:
        self.db = db
        self.ingestor = ingestor
        self.bus = bus

    # --- ingestion ---------------------------------------------------------------------

    async def IngestEvents(
        self, request: pb.IngestEventsRequest, context: Any
    ) -> pb.IngestEventsResponse:
        results = await self.ingestor.ingest(request.events)
        accepted, duplicate, rejected = counts(results)
        return pb.IngestEventsResponse(
            results=results,
            accepted_count=accepted,
            duplicate_count=duplicate,
            rejected_count=rejected,
        )

    async def StreamEvents(
        self, request_iterator: AsyncIterator[pb.StreamEventsRequest], context: Any
    ) -> pb.StreamEventsResponse:
        response = pb.StreamEventsResponse()
        index = 0
        async for message in request_iterator:
            results = await self.ingestor.ingest(message.events)
            accepted, duplicate, rejected = counts(results)
            response.accepted_count += accepted
            response.duplicate_count += duplicate
            response.rejected_count += rejected
            for result in results:
                if (
                    result.status == pb.EVENT_RESULT_STATUS_REJECTED
                    and len(response.rejections) < MAX_STREAM_REJECTIONS
                ):
                    response.rejections.append(
                        pb.StreamEventRejection(message_index=index, result=result)
                    )
            index += 1
        return response

    # --- reads -------------------------------------------------------------------------

    async def GetProfile(
        self, request: pb.GetProfileRequest, context: Any
    ) -> pb.GetProfileResponse:
        paths = list(request.read_mask.paths)
        bad = [
            FieldViolation(f"read_mask.paths[{i}]", f"{p!r} is not a field of Profile")
            for i, p in enumerate(paths)
            if p.split(".")[0] not in PROFILE_FIELDS
        ]
        if bad:
            raise InvalidArgument("read_mask names unknown fields", violations=bad)
        async with self.db.transaction() as session:
            cid = await store.survivor_of(session, request.customer_id)
            row = await store.profile_row(session, cid)
            if row is None:
                raise NotFound("no profile for this customer", metadata={"customer_id": cid})
            consents = await store.consents(session, cid)
        profile = build_profile(row, consents, time.time())
        if paths:
            masked = res.Profile(customer_id=profile.customer_id)
            field_mask_pb2.FieldMask(paths=paths).MergeMessage(profile, masked)
            profile = masked
        return pb.GetProfileResponse(profile=profile)

    async def GetProfileSummary(
        self, request: pb.GetProfileSummaryRequest, context: Any
    ) -> pb.GetProfileSummaryResponse:
        row = await store.summary_row(self.db, request.customer_id)
        if row is None:
            raise NotFound("no profile for this customer")
        summary = res.ProfileSummary.FromString(row[1]) if row[1] else res.ProfileSummary()
        summary.customer_id = row[0]
        summary.display_name = row[2]
        summary.loyalty_tier = row[3]
        summary.time_zone = row[4]
        summary.store_recognition_allowed = bool(row[5])
        summary.highlights.extend(traits.highlights(summary, time.time(), request.store_id))
        return pb.GetProfileSummaryResponse(summary=summary)

    async def ListEvents(
        self, request: pb.ListEventsRequest, context: Any
    ) -> pb.ListEventsResponse:
        tz = UTC
        start = (
            request.time_range.start_time.ToDatetime(tzinfo=tz)
            if request.time_range.HasField("start_time")
            else None
        )
        end = (
            request.time_range.end_time.ToDatetime(tzinfo=tz)
            if request.time_range.HasField("end_time")
            else None
        )
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        async with self.db.transaction() as session:
            customer_id = device_id = None
            if request.WhichOneof("subject") == "customer_id":
                customer_id = await store.survivor_of(session, request.customer_id)
            else:
                device_id = request.device_id
            filters = repr(
                (
                    request.customer_id,
                    request.device_id,
                    sorted(request.channels),
                    sorted(request.event_types),
                    start.isoformat() if start else "",
                    end.isoformat() if end else "",
                )
            )
            after = None
            if request.page_token:
                cursor = store.Cursor.decode(request.page_token, filters)
                after = (datetime.fromtimestamp(cursor.occur_us / 1e6, UTC), cursor.seq)
            rows = await store.list_events(
                session,
                customer_id=customer_id,
                device_id=device_id,
                channels=list(request.channels),
                event_types=list(request.event_types),
                start=start,
                end=end,
                after=after,
                limit=page_size + 1,
            )
        events = []
        for row in rows[:page_size]:
            event = res.BehaviouralEvent.FromString(row.payload)
            event.customer_id = "" if row.anonymous or row.customer_id is None else row.customer_id
            event.device_id = row.device_id or ""
            event.event_type = row.event_type
            event.receive_time.CopyFrom(_ts(row.receive_time))
            events.append(event)
        token = ""
        if len(rows) > page_size:
            last = rows[page_size - 1]
            occur_us = int(last.occur_time.timestamp() * 1_000_000)
            token = store.Cursor(occur_us, last.seq, filters).encode()
        return pb.ListEventsResponse(events=events, next_page_token=token)

    # --- profile updates -----------------------------------------------------------------

    async def UpdateProfile(
        self, request: pb.UpdateProfileRequest, context: Any
    ) -> pb.UpdateProfileResponse:
        paths = list(request.update_mask.paths)
        bad = [
            FieldViolation(f"update_mask.paths[{i}]", f"{p!r} is not a writable field")
            for i, p in enumerate(paths)
            if not _writable(p)
        ]
        if not paths:
            bad.append(FieldViolation("update_mask.paths", "name at least one field to update"))
        if bad:
            raise InvalidArgument("update_mask names fields that cannot be written", violations=bad)
        if "time_zone" in paths and request.profile.time_zone:
            try:
                zoneinfo.ZoneInfo(request.profile.time_zone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise InvalidArgument(
                    "unknown time zone",
                    violations=[FieldViolation("profile.time_zone", "not an IANA time zone name")],
                ) from None

        async def work(session: AsyncSession) -> pb.UpdateProfileResponse:
            cid = await store.survivor_of(session, request.profile.customer_id)
            await store.ensure_profile(session, cid)
            row = await store.profile_row(session, cid, lock=True)
            assert row is not None
            if request.expected_revision and request.expected_revision != row.revision:
                raise Aborted(
                    "the profile changed since the revision given",
                    metadata={"revision": str(row.revision)},
                )
            current = res.Profile(loyalty_tier=row.loyalty_tier, time_zone=row.time_zone)
            if row.contact:
                current.contact.ParseFromString(row.contact)
            if row.contact_preferences:
                current.contact_preferences.ParseFromString(row.contact_preferences)
            field_mask_pb2.FieldMask(paths=paths).MergeMessage(
                request.profile, current, replace_message_field=True, replace_repeated_field=True
            )
            revision = await store.update_profile_fields(
                session,
                cid,
                current.contact.SerializeToString() if current.HasField("contact") else None,
                traits.display_name(current.contact),
                current.loyalty_tier,
                current.contact_preferences.SerializeToString()
                if current.HasField("contact_preferences")
                else None,
                current.time_zone,
            )
            changed = sorted({p.split(".")[0] for p in paths})
            updated = ev.ProfileUpdatedEvent(
                customer_id=cid, changed_fields=changed, revision=revision
            )
            updated.update_time.GetCurrentTime()
            await add_event(
                session,
                producer="profile",
                event_type="profile.profile_updated",
                subject=cid,
                payload=updated,
                customer_id=cid,
            )
            fresh = await store.profile_row(session, cid)
            consents = await store.consents(session, cid)
            return pb.UpdateProfileResponse(profile=build_profile(fresh, consents, time.time()))

        return await idempotency.run_once(
            self.db, "UpdateProfile", request, pb.UpdateProfileResponse, work
        )

    # --- consent -----------------------------------------------------------------------

    async def GetConsents(
        self, request: pb.GetConsentsRequest, context: Any
    ) -> pb.GetConsentsResponse:
        async with self.db.transaction() as session:
            cid = await store.survivor_of(session, request.customer_id)
            stored = await store.consents(session, cid)
        return pb.GetConsentsResponse(consents=[res.Consent.FromString(c) for c in stored])

    async def CheckConsent(
        self, request: pb.CheckConsentRequest, context: Any
    ) -> pb.CheckConsentResponse:
        async with self.db.transaction() as session:
            cid = await store.survivor_of(session, request.customer_id)
            raw = await store.consent(session, cid, request.channel, request.purpose)
            row = await store.profile_row(session, cid)
        consent = res.Consent.FromString(raw) if raw else None
        answer = pb.CheckConsentResponse(granted=_consent_granted(consent, time.time()))
        if consent is not None:
            answer.consent.CopyFrom(consent)
        if row is not None:
            answer.time_zone = row.time_zone
            if row.contact_preferences:
                prefs = res.ContactPreferences.FromString(row.contact_preferences)
                if prefs.HasField("quiet_hours"):
                    answer.quiet_hours.CopyFrom(prefs.quiet_hours)
        return answer

    async def UpdateConsent(
        self, request: pb.UpdateConsentRequest, context: Any
    ) -> pb.UpdateConsentResponse:
        async def work(session: AsyncSession) -> pb.UpdateConsentResponse:
            cid = await store.survivor_of(session, request.customer_id)
            await store.ensure_profile(session, cid)
            await store.profile_row(session, cid, lock=True)  # one writer per customer
            changes: list[ev.ConsentChange] = []
            for consent in request.consents:
                raw = await store.consent(session, cid, consent.channel, consent.purpose)
                before = res.Consent.FromString(raw) if raw else None
                if before is not None and (
                    before.consent_time.ToNanoseconds() > consent.consent_time.ToNanoseconds()
                ):
                    continue  # an older answer than the one recorded
                await store.put_consent(
                    session,
                    cid,
                    consent.channel,
                    consent.purpose,
                    consent.SerializeToString(),
                    consent.consent_time.ToDatetime(tzinfo=UTC),
                )
                previous = before.status if before is not None else res.CONSENT_STATUS_UNSPECIFIED
                if before is None or before != consent:
                    changes.append(ev.ConsentChange(consent=consent, previous_status=previous))
                if (
                    consent.channel == channel_pb2.CHANNEL_STORE
                    and consent.purpose == res.CONSENT_PURPOSE_STORE_RECOGNITION
                ):
                    await store.set_recognition(
                        session,
                        cid,
                        consent.status == res.CONSENT_STATUS_GRANTED,
                        consent.expire_time.ToDatetime(tzinfo=UTC)
                        if consent.HasField("expire_time")
                        else None,
                    )
            if changes:
                await add_event(
                    session,
                    producer="profile",
                    event_type="profile.consent_changed",
                    subject=cid,
                    payload=ev.ConsentChangedEvent(customer_id=cid, changes=changes),
                    customer_id=cid,
                )
            stored = await store.consents(session, cid)
            return pb.UpdateConsentResponse(consents=[res.Consent.FromString(c) for c in stored])

        return await idempotency.run_once(
            self.db, "UpdateConsent", request, pb.UpdateConsentResponse, work
        )

    # --- forget ------------------------------------------------------------------------

    async def ForgetCustomer(
        self, request: pb.ForgetCustomerRequest, context: Any
    ) -> pb.ForgetCustomerResponse:
        forgotten: list[str] = []

        async def work(session: AsyncSession) -> pb.ForgetCustomerResponse:
            cid = await store.survivor_of(session, request.customer_id)
            ids = [cid, *await store.aliases_of(session, cid)]
            devices = await store.devices_of(session, ids)
            erased, at = await erase(session, cid, ids, devices, triggered_by_identity=False)
            forgotten.extend(ids)
            return pb.ForgetCustomerResponse(
                customer_id=cid, erased_event_count=erased, forget_time=_ts(at)
            )

        answer = await idempotency.run_once(
            self.db, "ForgetCustomer", request, pb.ForgetCustomerResponse, work
        )
        if forgotten:
            await self.bus.invalidate(forgotten)
        return answer
