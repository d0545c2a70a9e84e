"""Background work: the deriver (events to traits, intent and summary) and the retry of
events stored unresolved while identity was unreachable.

The deriver's queue is the ``dirty_customers`` table: ingestion upserts a row per customer
it stored events for (due ``derive.delay_s`` later, so a burst is folded in one pass); a
pass leases due rows with ``FOR UPDATE SKIP LOCKED`` (so any number of replicas share the
work without waiting on each other), folds each customer's events after its watermark
into the stored state (or all of them, for a rebuild after a merge, unmerge or late
resolution), writes state, summary and watermark where the watermark is still the one it
read, releases the rows that did not change meanwhile, and publishes
``profile.profile_updated`` at most once per ``publish_interval_s`` per customer (a change
inside the interval re-queues the customer for when it ends). A crashed pass leaves its
rows leased; they come due again when the lease ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from typing import Any

from pydantic_core import from_json, to_json

from continuum.profile.v1 import profile_events_pb2 as ev
from continuum.profile.v1 import profile_resources_pb2 as res
from continuum_profile import store, traits
from continuum_profile.ingest import PRODUCER, Ingested, outbox_rows
from continuum_profile.resolution import Request, Resolved, Resolver
from continuum_profile.settings import DeriveSettings, IngestSettings
from continuum_profile.validation import device_of, identifier_key
from continuum_runtime.db import Database
from continuum_runtime.events import new_envelope
from continuum_runtime.tasks import raise_if_cancelling

log = logging.getLogger(__name__)
PROFILE_UPDATED = "profile.profile_updated"


def load_state(raw: bytes | None) -> traits.DeriveState:
    return traits.DeriveState(from_json(raw) if raw else None)


class Deriver:
    """Folds newly stored events into profiles, in batches of customers."""

    def __init__(self, db: Database, settings: DeriveSettings, wake_relay: Any = None) -> None:
        self.db = db
        self.settings = settings
        self._wake_relay = wake_relay
        # (customer, seconds from the first pending event's arrival to the profile write)
        self.lags: deque[float] = deque(maxlen=100_000)
        self._reported = time.monotonic()
        # Set while the queue keeps up; cleared while a pass finds customers that waited
        # longer than lag_limit_s past due (ingestion holds its batches meanwhile).
        self.caught_up = asyncio.Event()
        self.caught_up.set()

    def _report(self) -> None:
        """An INFO line every ten seconds: customers derived and their queue time."""
        now = time.monotonic()
        if now - self._reported < 10.0 or not self.lags:
            return
        ordered = sorted(self.lags)
        log.info(
            "deriver: %d customers in %.0f s, queue time p50 %.0f ms p99 %.0f ms",
            len(ordered),
            now - self._reported,
            ordered[len(ordered) // 2] * 1000,
            ordered[int(len(ordered) * 0.99)] * 1000,
        )
        self.lags.clear()
        self._reported = now

    async def run(self) -> None:
        backoff = self.settings.poll_interval_s
        while True:
            self._report()
            try:
                done = await self.pass_once()
                backoff = self.settings.poll_interval_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                self.caught_up.set()  # a failing deriver holds nobody up
                log.warning("deriver pass failed, retrying: %s", type(exc).__name__)
                done = 0
                backoff = min(backoff * 2, 5.0)
            if done < self.settings.batch_customers:
                await asyncio.sleep(backoff)

    async def pass_once(self) -> int:
        """One pass over due customers; returns how many were claimed.

        Lease (one statement), read and fold without holding locks, then one short
        transaction writes the profiles and the events and releases the queue entries."""
        async with self.db.reader() as conn:
            driver = await store.raw_driver(conn)
            claimed = await store.claim_dirty(
                driver, self.settings.batch_customers, self.settings.lease_s
            )
            now = time.time()
            behind = max((now - c.due_at.timestamp() for c in claimed), default=0.0)
            limit = self.settings.lag_limit_s
            if limit > 0 and behind > limit:
                self.caught_up.clear()
            else:
                self.caught_up.set()
            if not claimed:
                return 0
            ids = [c.customer_id for c in claimed]
            rebuild = {c.customer_id for c in claimed if c.rebuild}
            states = await store.load_states(driver, ids)
            after = [
                0 if cid in rebuild or cid not in states else states[cid].last_seq for cid in ids
            ]
            try:
                pending: dict[str, list[Any]] = defaultdict(list)
                for row in await store.new_events(driver, ids, after):
                    pending[row[0]].append(row)
                async with driver.transaction():
                    later_ids, later_s = await self._derive(
                        driver, claimed, rebuild, states, pending
                    )
                # The queue after the commit, one statement each (the lock order): a pass
                # that stops before this leaves its customers leased, and the next pass
                # finds nothing new past their watermark.
                await store.release(driver, claimed)
                await store.requeue(driver, later_ids, later_s)
            except Exception:
                raise_if_cancelling()
                await store.unlease(driver, ids)
                raise
        if self._wake_relay is not None:
            self._wake_relay()
        return len(claimed)

    async def _derive(
        self,
        driver: Any,
        claimed: list[store.Claimed],
        rebuild: set[str],
        states: dict[str, store.ProfileState],
        pending: dict[str, list[Any]],
    ) -> tuple[list[str], list[float]]:
        """Fold and write, in the caller's transaction; returns the customers to come back
        to (and in how many seconds), which the caller queues after the commit, when it
        releases the pass's queue rows: the transaction itself locks no queue row."""
        ids = [c.customer_id for c in claimed]
        now = time.time()
        rows: list[store.DerivedRow] = []
        publish: dict[str, traits.DeriveState] = {}
        later_ids: list[str] = []
        later_s: list[float] = []
        for cid in ids:
            prior = states.get(cid)
            events = pending.get(cid, [])
            if prior is None and not events:
                continue  # nothing stored for this customer (forgotten, moved away)
            fresh = cid in rebuild or prior is None
            state = traits.DeriveState() if fresh else load_state(prior.state if prior else None)
            for row in events:
                traits.fold(state, res.BehaviouralEvent.FromString(row[2]))
            last_seq = events[-1][1] if events else (0 if fresh else prior.last_seq if prior else 0)
            published_at = prior.published_at.timestamp() if prior and prior.published_at else None
            due = published_at is None or now - published_at >= self.settings.publish_interval_s
            if due:
                publish[cid] = state
            else:
                assert published_at is not None
                later_ids.append(cid)
                later_s.append(published_at + self.settings.publish_interval_s - now)
            if events or fresh:
                rows.append(
                    store.DerivedRow(
                        cid,
                        to_json(state.to_dict()),
                        traits.summary_of(state, now).SerializeToString(),
                        last_seq,
                        due,
                        prior.last_seq if prior is not None else -1,
                    )
                )
            elif due:
                # Only the publication that was held back: state and summary stay as they
                # are (a quarter of the passes under a steady load).
                assert prior is not None
                rows.append(store.DerivedRow(cid, None, None, last_seq, True, prior.last_seq))
        revisions = await store.save_derived(driver, rows) if rows else {}
        # Another pass wrote first: do these again from what it wrote.
        stale = [r.customer_id for r in rows if r.customer_id not in revisions]
        later_ids += stale
        later_s += [0.0] * len(stale)
        outbox = []
        for cid, state in publish.items():
            if cid not in revisions:
                continue
            payload = ev.ProfileUpdatedEvent(
                customer_id=cid,
                changed_fields=["traits", "intent_signals", "purchases"],
                traits=traits.traits_of(state, now),
                intent_signals=traits.intent_of(state, now),
                revision=revisions[cid],
                update_time=traits.ts(now),
            )
            envelope = new_envelope(
                producer=PRODUCER,
                event_type=PROFILE_UPDATED,
                subject=cid,
                payload=payload,
                customer_id=cid,
            )
            outbox.append(
                store.OutboxRow(envelope.id, PROFILE_UPDATED, cid, envelope.SerializeToString())
            )
        await store.insert_outbox(driver, outbox)
        for c in claimed:
            if pending.get(c.customer_id):
                self.lags.append(now - c.since.timestamp())
        return later_ids, later_s


class UnresolvedRetrier:
    """Resolves events that were stored while identity was unreachable."""

    def __init__(
        self,
        db: Database,
        resolver: Resolver,
        settings: IngestSettings,
        derive: DeriveSettings,
        wake_relay: Any = None,
    ) -> None:
        self.db = db
        self.resolver = resolver
        self.settings = settings
        self.derive = derive
        self._wake_relay = wake_relay

    async def run(self) -> None:
        while True:
            try:
                while await self.retry_once() >= self.settings.retry_batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                log.warning("unresolved retry failed: %s", type(exc).__name__)
            await asyncio.sleep(self.settings.retry_interval_s)

    async def retry_once(self) -> int:
        """Resolve one batch of unresolved events; returns how many were resolved."""
        async with self.db.reader() as conn:
            driver = await store.raw_driver(conn)
            async with driver.transaction():
                rows = await store.claim_unresolved(driver, self.settings.retry_batch)
                if not rows:
                    return 0
                events = [res.BehaviouralEvent.FromString(bytes(r[4])) for r in rows]
                keys = [identifier_key(e) for e in events]
                answer = await self.resolver.resolve(
                    [Request(k, e.channel, e.occur_time) for k, e in zip(keys, events, strict=True)]
                )
                if answer is None:
                    return 0  # identity still unreachable
                seqs, customers, anonymous = [], [], []
                stored: list[Ingested] = []
                for row, event, key in zip(rows, events, keys, strict=True):
                    found = answer.get(key)
                    if found is None:
                        continue  # not answered this time (its chunk failed): next round
                    resolved = found if isinstance(found, Resolved) else Resolved("", False)
                    if not resolved.customer_id:
                        log.warning("an unresolved event's identifiers were refused by identity")
                    seqs.append(row[0])
                    customers.append(resolved.customer_id)
                    anonymous.append(resolved.anonymous)
                    if resolved.customer_id:
                        device_id, _ = device_of(key)
                        receive = traits.ts(row[5].timestamp())
                        stored.append(
                            Ingested(
                                event, resolved.customer_id, resolved.anonymous, device_id, receive
                            )
                        )
                outbox = outbox_rows(stored, self.settings.publish_ingested)
                await store.mark_dirty(
                    driver, sorted({c for c in customers if c}), self.derive.delay_s, True
                )
                await store.set_resolved(driver, seqs, customers, anonymous)
                await store.insert_outbox(driver, outbox)
        if self._wake_relay is not None:
            self._wake_relay()
        return len(seqs)
