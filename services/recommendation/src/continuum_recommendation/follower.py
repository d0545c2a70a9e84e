"""Keeps one replica's in-memory model current: loads the ACTIVE version when it changes
and applies behaviour, item attributes and traits stored since the last look.

Rows of ``interactions`` are applied in ``seq`` order. A transaction may commit a smaller
``seq`` after a larger one was read, so skipped seqs are remembered as holes and looked up
again for ``HOLE_WAIT_S`` (a hole can also be a rolled-back or conflicting insert, which
never fills).
"""

from __future__ import annotations

import asyncio
import logging
import time

from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum_recommendation import store
from continuum_recommendation.domain import Interaction, Params
from continuum_recommendation.live import LiveModel
from continuum_recommendation.model import Artifacts
from continuum_runtime.db import Database
from continuum_runtime.heap import freeze_long_lived
from continuum_runtime.tasks import raise_if_cancelling

log = logging.getLogger(__name__)

BATCH = 50_000
HOLE_WAIT_S = 30.0
MAX_HOLES = 1_000
# Applying this many interactions in one look freezes the heap (see continuum_runtime.heap).
FREEZE_AFTER = 10_000


class Follower:
    def __init__(
        self, db: Database, model: LiveModel, interval_s: float, *, freeze_heap: bool = False
    ) -> None:
        self.db = db
        self.freeze_heap = freeze_heap
        self.model = model
        self.interval_s = interval_s
        self.applied_seq = 0
        self._holes: dict[int, float] = {}
        self._item_seq = 0
        self._traits_seq = 0
        self._forgotten_seq = 0
        self.stored_seq = 0

    async def step(self) -> int:
        """One look; returns how many interactions were applied."""
        model = self.model
        loaded = False
        async with self.db.reader() as conn:
            active = await store.active_version_id(conn)
            if active and active != model.version_id:
                blob = await store.get_artifacts(conn, active)
                version = await store.get_version(conn, active)
                if blob is not None and version is not None:
                    artifacts = await asyncio.to_thread(Artifacts.loads, blob)
                    params = Params().with_overrides(dict(version.parameters))
                    model.load(active, artifacts, params)
                    loaded = True
            while True:
                items = await store.items_after(conn, self._item_seq, BATCH)
                for seq, info in items:
                    model.put_item(info)
                    self._item_seq = seq
                if len(items) < BATCH:
                    break
            for seq, customer, body in await store.traits_after(conn, self._traits_seq):
                model.traits[customer] = prof.Traits.FromString(body)
                history = model.histories.get(f"c:{customer}")
                if history is not None:
                    history.generation += 1
                self._traits_seq = seq
            for seq, subject in await store.forgotten_after(conn, self._forgotten_seq):
                model.histories.pop(subject, None)
                if subject.startswith("c:"):
                    model.traits.pop(subject[2:], None)
                self._forgotten_seq = seq
            applied = 0
            while True:
                rows = await store.interactions_after(conn, self.applied_seq, BATCH)
                applied += self._apply(rows)
                if len(rows) < BATCH:
                    break
            if self._holes:
                now = time.monotonic()
                self._holes = {s: t for s, t in self._holes.items() if t > now}
                late = await store.interactions_with(conn, sorted(self._holes))
                applied += self._apply(late)
            self.stored_seq = await store.max_interaction_seq(conn)
        if self.freeze_heap and (applied >= FREEZE_AFTER or loaded):
            # What was just loaded lives as long as the version: out of the collector's
            # full scans (no collection first: on this heap it would be the pause itself).
            freeze_long_lived(collect=False)
        return applied

    def _apply(self, rows: list[Interaction]) -> int:
        """Apply rows not applied yet; remember skipped seqs (holes) for a while: a
        transaction may still commit them."""
        model = self.model
        applied = 0
        expires = time.monotonic() + HOLE_WAIT_S
        for row in rows:
            if row.seq in self._holes:
                del self._holes[row.seq]
            elif row.seq <= self.applied_seq:
                continue
            elif row.seq > self.applied_seq + 1 and row.seq - self.applied_seq < MAX_HOLES:
                for missing in range(self.applied_seq + 1, row.seq):
                    self._holes[missing] = expires
            model.apply(row, learn=row.at > model.built_at or not model.version_id)
            self.applied_seq = max(self.applied_seq, row.seq)
            applied += 1
        return applied

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self.step()
                backoff = 0.1
                await asyncio.sleep(self.interval_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                log.warning("model follower failed, retrying: %s", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
