"""Erasing a customer: events, profile, consents, derived traits; and the confirmation."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from continuum.profile.v1 import profile_events_pb2 as ev
from continuum_profile import store
from continuum_runtime.events import add_event


async def erase(
    session: AsyncSession,
    customer_id: str,
    customer_ids: list[str],
    device_ids: list[str],
    *,
    triggered_by_identity: bool,
) -> tuple[int, datetime]:
    """Erase everything held under ``customer_ids`` and the anonymous events of
    ``device_ids``; publishes profile.customer_forgotten. Returns (events erased, when)."""
    erased = await store.forget(session, customer_ids, device_ids)
    at = datetime.now(UTC)
    confirmation = ev.CustomerForgottenEvent(
        customer_id=customer_id,
        erased_event_count=erased,
        triggered_by_identity=triggered_by_identity,
    )
    confirmation.forget_time.FromDatetime(at)
    await add_event(
        session,
        producer="profile",
        event_type="profile.customer_forgotten",
        subject=customer_id,
        payload=confirmation,
        customer_id=customer_id,
    )
    return erased, at
