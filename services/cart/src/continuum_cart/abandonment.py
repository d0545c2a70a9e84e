"""The abandonment detector: carts with lines and no owner activity for the idle time
become ABANDONED and cart.cart_abandoned is published, once per idle period.

The state lives in the carts table, so the detector survives restarts; each pass claims
due carts with ``FOR UPDATE SKIP LOCKED`` in one transaction with their events, so several
replicas share the work and never mark (or announce) one cart twice. Any owner mutation
makes the cart ACTIVE again, and a later idle period announces it again.

Tracing: each cart's abandonment is a trace of its own (span ``cart.abandon``) with a span
link to the trace of the cart's last change (its ``traceparent`` column); the event
carries the abandonment span's context, so what consumers do with it (notification's
reminder) continues that trace.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from opentelemetry import trace

from continuum.cart.v1 import cart_resources_pb2 as res
from continuum_cart import publish, store
from continuum_cart.domain import ts
from continuum_runtime.db import Database
from continuum_runtime.tasks import raise_if_cancelling
from continuum_runtime.telemetry import fresh_context, links_to

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("continuum_cart.abandonment")


class AbandonmentDetector:
    def __init__(self, db: Database, *, idle_s: float, interval_s: float, batch_size: int) -> None:
        self._db = db
        self._idle = timedelta(seconds=idle_s)
        self._interval = interval_s
        self._batch = batch_size

    async def run_once(self, at: datetime | None = None) -> int:
        """Mark every cart that is due now; returns how many."""
        at = at or datetime.now(UTC)
        marked = 0
        while True:
            async with self._db.transaction() as session:
                carts = await store.claim_idle_carts(session, at - self._idle, self._batch)
                for cart, traceparent in carts:
                    with (
                        fresh_context(),
                        _tracer.start_as_current_span(
                            "cart.abandon",
                            links=links_to({"traceparent": traceparent}),
                            attributes={"continuum.cart.id": cart.cart_id},
                        ),
                    ):
                        cart.state = res.CART_STATE_ABANDONED
                        cart.abandon_time.CopyFrom(ts(at))
                        await store.save_cart(session, cart)
                        await publish.cart_abandoned(session, cart)
            marked += len(carts)
            if len(carts) < self._batch:
                return marked

    async def run(self) -> None:
        while True:
            raise_if_cancelling()  # a cancel swallowed below still stops the loop
            try:
                marked = await self.run_once()
                if marked:
                    log.info("carts abandoned", extra={"count": marked})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                log.warning("abandonment pass failed, retrying: %s", type(exc).__name__)
            await asyncio.sleep(self._interval)
