"""Identity resolution and store check-in, as one call each.

On the entry objects: ``await cx.resolve(email(...), device(...))`` returns identity's
``Resolution`` (the customer id, what the resolve did, identifiers it refused);
``await cx.customer_id(loyalty(...))`` only looks up and returns the id or None;
``await cx.check_in("store-1", loyalty(...))`` records an arrival and returns notification's
``CheckIn`` (status, customer, briefing id). The blocking client has the same methods.
Request ids are generated when not given; pass your own to retry the same action safely.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TypeAlias

from google.protobuf import timestamp_pb2

from continuum.common.v1 import channel_pb2
from continuum.common.v1.identifier_pb2 import Identifier
from continuum.identity.v1 import identity_service_pb2 as id_pb
from continuum.identity.v1.identity_service_pb2 import Resolution
from continuum.notification.v1 import notification_resources_pb2 as notif_res
from continuum.notification.v1 import notification_service_pb2 as notif_pb
from continuum.notification.v1.notification_resources_pb2 import CheckIn

__all__ = ["CheckIn", "Resolution", "check_in_request", "resolve_request"]

Channel: TypeAlias = channel_pb2.Channel.ValueType
CheckInSource: TypeAlias = notif_res.CheckInSource.ValueType


def _timestamp(when: datetime | None) -> timestamp_pb2.Timestamp | None:
    if when is None:
        return None
    if when.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when.astimezone(UTC))
    return ts


def _identifiers(identifiers: Iterable[Identifier]) -> list[Identifier]:
    out = list(identifiers)
    if not out:
        raise ValueError("give at least one identifier")
    return out


def resolve_request(
    identifiers: Iterable[Identifier],
    *,
    channel: Channel = channel_pb2.CHANNEL_WEB,
    lookup_only: bool = False,
    request_id: str | None = None,
    actor: str = "",
    observe_time: datetime | None = None,
) -> id_pb.ResolveIdentityRequest:
    """The ResolveIdentity request for identifiers seen together."""
    return id_pb.ResolveIdentityRequest(
        request_id=request_id or str(uuid.uuid4()),
        identifiers=_identifiers(identifiers),
        channel=channel,
        lookup_only=lookup_only,
        actor=actor,
        observe_time=_timestamp(observe_time),
    )


def check_in_request(
    store_id: str,
    identifiers: Iterable[Identifier],
    *,
    source: CheckInSource = notif_res.CHECK_IN_SOURCE_APP_GEOFENCE,
    request_id: str | None = None,
    check_in_time: datetime | None = None,
    source_reference: str = "",
    associate_id: str = "",
) -> notif_pb.CheckInRequest:
    """The CheckIn request for a shopper seen arriving at ``store_id``."""
    return notif_pb.CheckInRequest(
        request_id=request_id or str(uuid.uuid4()),
        identifiers=_identifiers(identifiers),
        store_id=store_id,
        source=source,
        check_in_time=_timestamp(check_in_time),
        source_reference=source_reference,
        associate_id=associate_id,
    )
