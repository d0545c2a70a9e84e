"""Identity resolution: create, link, merge, attribute devices, unmerge, split, forget.

Each operation is one database transaction that also writes its merge-log entries and
its events (outbox), so a failure leaves nothing half-written. Resolve first tries a
read-only path (every identifier known, one customer: MATCHED) and otherwise takes the
locks described in :mod:`continuum_identity.store` and decides under them, so that
concurrent resolves of the same identifiers converge on one customer.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.message import Message
from sqlalchemy.exc import DBAPIError

from continuum.identity.v1 import identity_events_pb2 as ev
from continuum.identity.v1 import identity_resources_pb2 as res
from continuum.identity.v1 import identity_service_pb2 as svc
from continuum_identity import store
from continuum_identity.identifiers import NormalizedIdentifier
from continuum_identity.matching import Model, Traits, compare, default_model
from continuum_identity.rules import Rules, compile_rules, default_rules
from continuum_runtime import idempotency
from continuum_runtime.db import Database, Executor
from continuum_runtime.errors import Aborted, NotFound
from continuum_runtime.events import add_event

PRODUCER = "identity"
Outcome = svc.ResolveOutcome
Reason = svc.IdentifierRejectionReason
Method = res.LinkMethod
Action = res.MergeLogAction
NonMerge = res.NonMergeReason
RULES_TTL_S = 2.0
MAX_ATTEMPTS = 50


@dataclass
class ResolveInput:
    identifiers: list[NormalizedIdentifier]
    channel: int
    at: datetime
    lookup_only: bool = False
    actor: str = ""
    # LinkIdentifiers: attach to this customer (manual), merging only if allow_merge.
    target_customer_id: str | None = None
    allow_merge: bool = True
    reason: str = ""
    traits: Traits | None = None


PROBABILISTIC_RULE = "probabilistic:fellegi_sunter"
LEVEL_NAMES = {0: "disagree", 1: "similar", 2: "close", 3: "exact"}


@dataclass
class _Candidate:
    customer_id: str
    identifier_id: int
    score: float
    evidence: list[dict[str, object]]


@dataclass
class Idem:
    """The request_id under which a resolve's answer is stored (see runtime idempotency)."""

    method: str
    request: Message
    request_id: str | None = None

    @property
    def key(self) -> str:
        """The request id the answer is stored under."""
        return self.request_id or str(getattr(self.request, "request_id", ""))

    @property
    def lock_key(self) -> int:
        """An advisory lock key for this request id, taken with the identifiers' locks."""
        digest = hashlib.blake2b(f"{self.method}/{self.key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    async def earlier(self, session: Executor) -> svc.Resolution | None:
        """The stored answer; the caller holds :attr:`lock_key` already."""
        return await idempotency.begin(
            session, self.method, self.request, svc.Resolution, self.key, lock=False
        )

    def replay(self, stored_fingerprint: bytes, stored_response: bytes) -> svc.Resolution:
        return idempotency.replay(
            self.request, self.key, stored_fingerprint, stored_response, svc.Resolution
        )

    async def remember(self, session: Executor, answer: svc.Resolution) -> None:
        await idempotency.remember(session, self.method, self.request, answer, self.key)


@dataclass
class _Decision:
    rejections: list[svc.IdentifierRejection] = field(default_factory=list)

    def reject(self, index: int, ident: NormalizedIdentifier, reason: int) -> None:
        self.rejections.append(
            svc.IdentifierRejection(
                index=index,
                identifier=_ref(ident),
                reason=reason,  # type: ignore[arg-type]
            )
        )


def _ref(ident: NormalizedIdentifier) -> res.IdentifierRef:
    return res.IdentifierRef(
        type=ident.type,  # type: ignore[arg-type]
        value_hash=ident.value_hash.hex(),
        masked_value=ident.masked,
    )


def now() -> datetime:
    return datetime.now(UTC)


async def _event(
    session: Executor, event_type: str, subject: str, payload: Message, customer_id: str
) -> None:
    await add_event(
        session,
        producer=PRODUCER,
        event_type=f"identity.{event_type}",
        subject=subject,
        payload=payload,
        customer_id=customer_id,
    )


class Resolver:
    """The identity graph's operations on one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._rules: tuple[float, Rules] | None = None
        self._model: tuple[float, Model] | None = None

    # --- rules ---------------------------------------------------------------------------

    async def rules(self, session: Executor) -> Rules:
        cached = self._rules
        if cached is not None and time.monotonic() - cached[0] < RULES_TTL_S:
            return cached[1]
        message = await store.load_rules(session) or default_rules()
        compiled = compile_rules(message)
        self._rules = (time.monotonic(), compiled)
        return compiled

    async def current_rules(self) -> Rules:
        """The rules in force, read from the database only when the cached copy is stale."""
        cached = self._rules
        if cached is not None and time.monotonic() - cached[0] < RULES_TTL_S:
            return cached[1]
        async with self.db.reader() as conn:
            return await self.rules(conn)

    def forget_cached_rules(self) -> None:
        self._rules = None
        self._model = None

    async def model(self, session: Executor) -> Model:
        cached = self._model
        if cached is not None and time.monotonic() - cached[0] < RULES_TTL_S:
            return cached[1]
        data = await store.load_model(session)
        model = Model.from_json(data) if data else default_model()
        self._model = (time.monotonic(), model)
        return model

    async def _score_candidates(self, session: Executor, traits: Traits) -> list[_Candidate]:
        """Stored customers whose traits may be this record's, best first (one per customer)."""
        model = await self.model(session)
        best: dict[str, _Candidate] = {}
        for record in await store.trait_candidates(session, traits.blocking_keys()):
            score, evidence = model.score(compare(traits, record.traits))
            current = best.get(record.customer_id)
            if current is None or score > current.score:
                best[record.customer_id] = _Candidate(
                    customer_id=record.customer_id,
                    identifier_id=record.identifier_id,
                    score=score,
                    evidence=[
                        {"field": f, "comparison": LEVEL_NAMES[level], "weight": round(w, 4)}
                        for f, level, w in evidence
                    ],
                )
        return sorted(best.values(), key=lambda c: (-c.score, c.customer_id))

    # --- resolve -------------------------------------------------------------------------

    async def resolve(self, request: ResolveInput, idem: Idem | None = None) -> svc.Resolution:
        keys = [i.key for i in request.identifiers]
        if request.target_customer_id is None:
            # The hot path: one read, no transaction. Known identifiers of one customer, a
            # lookup, or a replayed request id answer from here.
            rows, earlier = await store.quick_lookup(
                self.db,
                keys,
                idem.method if idem else "",
                idem.key if idem else "",
            )
            if earlier is not None and idem is not None and not request.lookup_only:
                return idem.replay(*earlier)
            quick = await self._read_only(request, rows)
            if quick is not None:
                return quick
        # A customer this request touches can be merged away between the read and the
        # lock; then the transaction ends and the request starts again on the new graph.
        for attempt in range(MAX_ATTEMPTS):
            try:
                async with self.db.driven_transaction() as session:
                    # One statement takes the locks of the values, the trait blocks and
                    # the request id, in one global order.
                    traits = request.traits
                    await store.lock_values(
                        session,
                        keys,
                        [
                            *(traits.blocking_keys() if traits and not traits.is_empty() else []),
                            *([idem.lock_key] if idem is not None else []),
                        ],
                    )
                    if idem is not None:
                        answer = await idem.earlier(session)
                        if answer is not None:
                            return answer
                    result = await self._resolve_locked(session, request)
                    if result is not None:
                        if idem is not None:
                            await idem.remember(session, result)
                        return result
            except DBAPIError as exc:
                # PostgreSQL broke a lock cycle (it should not happen given the lock
                # order, but a retry is the right answer if it does).
                if "deadlock" not in str(exc.orig).lower():
                    raise
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311 - jitter
        raise Aborted(
            "the identity graph kept changing under this request; retry", reason="CONTENTION"
        )

    async def _read_only(
        self, request: ResolveInput, rows: list[store.QuickRow]
    ) -> svc.Resolution | None:
        by_key = {r.key: r for r in rows}
        decision = _Decision()
        for index, ident in enumerate(request.identifiers):
            if by_key[ident.key].blocked:
                decision.reject(index, ident, Reason.IDENTIFIER_REJECTION_REASON_BLOCKED_VALUE)
        usable = [by_key[i.key] for i in request.identifiers if not by_key[i.key].blocked]
        if request.lookup_only:
            known = [r for r in usable if r.customer_id is not None]
            if not known:
                return svc.Resolution(
                    outcome=Outcome.RESOLVE_OUTCOME_NOT_FOUND,
                    rejected_identifiers=decision.rejections,
                )
            rules = await self.current_rules()
            best = max(known, key=lambda r: (rules.priority(r.key[0]), r.customer_id or ""))
            return svc.Resolution(
                customer_id=best.customer_id or "",
                outcome=Outcome.RESOLVE_OUTCOME_MATCHED,
                anonymous=best.anonymous,
                rejected_identifiers=decision.rejections,
            )
        if not usable or any(r.customer_id is None or not r.active for r in usable):
            return None
        owners = {r.customer_id for r in usable}
        if len(owners) != 1:
            return None
        return svc.Resolution(
            customer_id=usable[0].customer_id or "",
            outcome=Outcome.RESOLVE_OUTCOME_MATCHED,
            anonymous=usable[0].anonymous,
            rejected_identifiers=decision.rejections,
        )

    async def _resolve_locked(
        self, session: Executor, request: ResolveInput
    ) -> svc.Resolution | None:
        """The resolve itself; the caller's transaction holds the locks of the request's
        values and trait blocks (see :meth:`resolve`)."""
        at = request.at
        rules = await self.rules(session)
        items = request.identifiers
        traits = request.traits if request.traits and not request.traits.is_empty() else None
        found, blocked = await store.find_with_blocked(session, [i.key for i in items])
        decision = _Decision()
        index_of = {i.key: n for n, i in enumerate(items)}
        for ident in items:
            if ident.key in blocked:
                decision.reject(
                    index_of[ident.key], ident, Reason.IDENTIFIER_REJECTION_REASON_BLOCKED_VALUE
                )
        usable = [i for i in items if i.key not in blocked]

        # Shared-value detection, before any link is decided on a shared value.
        if rules.shared_detection:
            newly_blocked = await self._detect_shared(session, rules, usable, found, at)
            for ident in newly_blocked:
                decision.reject(
                    index_of[ident.key], ident, Reason.IDENTIFIER_REJECTION_REASON_BLOCKED_VALUE
                )
            usable = [i for i in usable if i.key not in {b.key for b in newly_blocked}]

        strong = [i for i in usable if not i.is_device]
        devices = [i for i in usable if i.is_device]
        target = request.target_customer_id
        involved = {found[i.key].customer_id for i in usable if i.key in found}
        if target is not None:
            involved.add(target)
        probable: list[_Candidate] = []
        if traits and strong and target is None and not any(i.key in found for i in strong):
            probable = await self._score_candidates(session, traits)
        auto = probable[0] if probable and probable[0].score >= rules.auto_link_threshold else None
        if auto is not None:
            involved.add(auto.customer_id)
        customers = await store.lock_customers(session, involved)
        if involved - set(customers):
            if target is not None and target not in customers:
                raise NotFound("no such customer", reason="CUSTOMER_NOT_FOUND")
            return None  # merged or forgotten since it was read: read again

        def priority_of(cid: str) -> tuple[int, int]:
            best = max(
                (
                    rules.priority(i.type)
                    for i in strong
                    if i.key in found and found[i.key].customer_id == cid
                ),
                default=-1,
            )
            return (best, -int(customers[cid].created_at.timestamp() * 1e6))

        known = sorted(
            {found[i.key].customer_id for i in strong if i.key in found},
            key=priority_of,
            reverse=True,
        )
        if target is not None:
            known = [target, *[c for c in known if c != target]]
        if auto is not None:
            # Traits never outvote identifiers: a candidate already holding another value
            # of a unique type (a different account id) is someone else.
            unique_types = [i.type for i in strong if rules.rule(i.type).unique]
            held = (await store.values_of_types(session, [auto.customer_id], unique_types))[
                auto.customer_id
            ]
            if any(i.type == t and i.key != (t, h) for i in strong for t, h in held):
                auto = None
            else:
                known = [auto.customer_id]
        outcome = Outcome.RESOLVE_OUTCOME_MATCHED
        merged_away: list[str] = []
        method = Method.LINK_METHOD_MANUAL if target else Method.LINK_METHOD_DETERMINISTIC
        created = False
        became_known = False

        # 1. The anchor: the customer the request is about.
        anchor: str | None = known[0] if known else None
        anonymous_devices = [
            found[d.key]
            for d in devices
            if d.key in found and customers[found[d.key].customer_id].anonymous
        ]
        if anchor is None and strong and anonymous_devices:
            # A guest signs in for the first time: the device's anonymous customer becomes
            # this customer, so its history is theirs.
            oldest = min(
                {r.customer_id for r in anonymous_devices},
                key=lambda c: (customers[c].created_at, c),
            )
            anchor = oldest
            became_known = True
        if anchor is None and not strong:
            device_owners = [found[d.key].customer_id for d in devices if d.key in found]
            if device_owners:
                # Devices only: the last signed-in customer (or the anonymous one) of the
                # device seen most recently.
                anchor = max(device_owners, key=lambda c: (customers[c].last_seen_at, c))
        if anchor is None:
            anchor = store.new_id("cus")
            await store.create_customer(
                session, anchor, anonymous=not strong, channel=request.channel, at=at
            )
            created = True
            outcome = Outcome.RESOLVE_OUTCOME_CREATED

        # 2. Merges of other known customers into the anchor's group, under the rules.
        group = [anchor]
        if len(known) > 1:
            unique_types = [t for t, r in rules.by_type.items() if r.unique]
            counts, unique_values = await store.type_facts(session, known, unique_types)
            group_unique = dict(unique_values.get(anchor, set()))
            group_counts = _counts_for(counts, anchor)
            for other in known[1:]:
                shared = [i for i in strong if i.key in found and found[i.key].customer_id == other]
                reason = None
                undone = NonMerge.NON_MERGE_REASON_UNMERGED in await store.refusals_between(
                    session, group, [other]
                )
                if target is not None and not request.allow_merge:
                    reason = NonMerge.NON_MERGE_REASON_UNSPECIFIED
                elif undone and target is None:
                    # An operator undid this merge: only an operator merges them again.
                    reason = NonMerge.NON_MERGE_REASON_UNMERGED
                elif not any(rules.rule(i.type).merges_known_customers for i in shared):
                    reason = NonMerge.NON_MERGE_REASON_TYPE_LIMIT
                else:
                    other_unique = dict(unique_values.get(other, set()))
                    if any(
                        t in group_unique and group_unique[t] != v for t, v in other_unique.items()
                    ):
                        reason = NonMerge.NON_MERGE_REASON_UNIQUE_TYPE_CONFLICT
                    else:
                        other_counts = _counts_for(counts, other)
                        for t, n in other_counts.items():
                            limit = rules.rule(t).max_per_customer
                            if limit and group_counts.get(t, 0) + n > limit:
                                reason = NonMerge.NON_MERGE_REASON_TYPE_LIMIT
                                break
                if reason is not None:
                    for ident in shared:
                        decision.reject(
                            index_of[ident.key],
                            ident,
                            Reason.IDENTIFIER_REJECTION_REASON_UNIQUE_TYPE_CONFLICT
                            if reason == NonMerge.NON_MERGE_REASON_UNIQUE_TYPE_CONFLICT
                            else Reason.IDENTIFIER_REJECTION_REASON_BELONGS_TO_OTHER_CUSTOMER,
                        )
                    if reason != NonMerge.NON_MERGE_REASON_UNSPECIFIED:
                        await store.add_refusal(
                            session, anchor, other, reason, [_ref(i) for i in shared]
                        )
                    continue
                group.append(other)
                group_unique.update(unique_values.get(other, set()))
                for t, n in _counts_for(counts, other).items():
                    group_counts[t] = group_counts.get(t, 0) + n
        # Anonymous customers of the request's devices join the group: their history
        # belongs to whoever signed in on the device.
        for row in anonymous_devices:
            if row.customer_id not in group and not (created and not strong):
                group.append(row.customer_id)

        # The oldest known customer keeps its id (other services key data on it); an
        # anonymous one survives only when everyone in the group is anonymous.
        survivor = min(
            group,
            key=lambda c: (
                (customers[c].anonymous, customers[c].created_at, c)
                if c in customers
                else (not strong, at, c)
            ),
        )
        if survivor != anchor and target is not None:
            survivor = target  # a manual link keeps the operator's customer id
        losers = [c for c in group if c != survivor]

        link_ids_all: list[str] = []
        linked_refs: list[res.IdentifierRef] = []

        # 3. Merge: losers' identifiers move to the survivor; merge links record why.
        if losers:
            merge_links: list[store.NewLink] = []
            anchor_ident = _pick_anchor(strong, found, [survivor], rules) or _pick_anchor(
                strong + devices, found, group, rules
            )
            for loser in losers:
                via = _pick_anchor(strong, found, [loser], rules) or _pick_anchor(
                    devices, found, [loser], rules
                )
                if anchor_ident is not None and via is not None:
                    merge_links.append(
                        store.NewLink(
                            a_id=found[anchor_ident.key].id,
                            b_id=found[via.key].id,
                            method=method
                            if not via.is_device
                            else Method.LINK_METHOD_DEVICE_SIGN_IN,
                            rule_id=f"shared_request:{_type_name(via.type)}",
                            channel=request.channel,
                            actor=request.actor,
                        )
                    )
            for row in found.values():
                if row.customer_id in losers:
                    row.customer_id = survivor
            merge_link_ids, _ = await write_merge(
                session,
                survivor,
                losers,
                merge_links,
                method=method,
                score=1.0,
                identifiers=[_ref(i) for i in strong if i.key in found],
                channel=request.channel,
                actor=request.actor,
                reason=request.reason,
                at=at,
            )
            link_ids_all += merge_link_ids
            merged_away = losers
            outcome = Outcome.RESOLVE_OUTCOME_MERGED
        anchor = survivor

        # 4. New strong identifiers join the anchor, within type limits and unique types.
        new_strong = [i for i in strong if i.key not in found]
        accepted: list[NormalizedIdentifier] = []
        if new_strong:
            # A customer made by this request has nothing yet to count.
            windowed: dict[int, int] = {}
            unique_types = [t for t, r in rules.by_type.items() if r.unique]
            counts = {}
            existing_unique: dict[int, bytes] = {}
            if not created:
                counts, held_values = await store.type_facts(session, [anchor], unique_types)
                existing_unique = dict(held_values[anchor])
            for ident in new_strong:
                rule = rules.rule(ident.type)
                if rule.unique and ident.type in existing_unique:
                    decision.reject(
                        index_of[ident.key],
                        ident,
                        Reason.IDENTIFIER_REJECTION_REASON_UNIQUE_TYPE_CONFLICT,
                    )
                    continue
                have = counts.get((anchor, ident.type), 0)
                if rule.limit_window is not None:
                    if ident.type not in windowed:
                        since = at - rule.limit_window
                        windowed[ident.type] = (
                            await store.type_counts(session, [anchor], since)
                        ).get((anchor, ident.type), 0)
                    have = windowed[ident.type]
                if rule.max_per_customer and have >= rule.max_per_customer:
                    decision.reject(
                        index_of[ident.key], ident, Reason.IDENTIFIER_REJECTION_REASON_TYPE_LIMIT
                    )
                    continue
                counts[(anchor, ident.type)] = counts.get((anchor, ident.type), 0) + 1
                if ident.type in windowed:
                    windowed[ident.type] += 1
                if rule.unique:
                    existing_unique[ident.type] = ident.value_hash
                accepted.append(ident)
        if accepted:
            rows = await store.insert_identifiers(session, accepted, anchor, request.channel, at)
            for row in rows:
                found[row.key] = row
            hub = _pick_anchor(strong, found, [anchor], rules, exclude={r.key for r in rows})
            hub_id = found[hub.key].id if hub is not None else rows[0].id
            link_method, link_rule, link_score = method, "seen_together", 1.0
            evidence: list[dict[str, object]] = []
            if created:
                link_rule = "created_together"
            if auto is not None and hub is None:
                # Matched on traits: the new identifiers hang off the matched record's.
                hub_id = auto.identifier_id
                link_method = Method.LINK_METHOD_PROBABILISTIC
                link_rule, link_score, evidence = PROBABILISTIC_RULE, auto.score, auto.evidence
            new_links = [
                store.NewLink(
                    a_id=hub_id,
                    b_id=row.id,
                    method=link_method,
                    rule_id=link_rule,
                    channel=request.channel,
                    actor=request.actor,
                    score=link_score,
                    evidence=evidence,
                )
                for row in rows
                if row.id != hub_id
            ]
            ids_written = await store.insert_links(session, anchor, new_links, at)
            link_ids_all += ids_written
            linked_refs = [r.ref() for r in rows]
            if not created:
                await store.add_log(
                    session,
                    store.LogEntry(
                        action=Action.MERGE_LOG_ACTION_IDENTIFIERS_LINKED,
                        customer_id=anchor,
                        link_ids=ids_written,
                        identifiers=linked_refs,
                        rule_id=link_rule,
                        method=link_method,
                        score=link_score,
                        channel=request.channel,
                        actor=request.actor,
                        reason=request.reason,
                    ),
                    at,
                )
                linked = ev.IdentifiersLinkedEvent(
                    customer_id=anchor,
                    identifiers=linked_refs,
                    link_ids=ids_written,
                    method=link_method,
                    score=link_score,
                    channel=request.channel,  # type: ignore[arg-type]
                    became_known=became_known,
                )
                linked.link_time.FromDatetime(at)
                await _event(session, "identifiers_linked", anchor, linked, anchor)
                if outcome == Outcome.RESOLVE_OUTCOME_MATCHED:
                    outcome = Outcome.RESOLVE_OUTCOME_LINKED
        if became_known:
            await store.set_anonymous(session, anchor, False)

        # 5. Devices: new ones join the anchor; known customers' devices are re-attributed
        # to the anchor (the last signed-in customer), never merged.
        hub = _pick_anchor(strong, found, [anchor], rules)
        for ident in devices:
            drow = found.get(ident.key)
            previous = ""
            if drow is None:
                drow = await store.insert_identifier(session, ident, anchor, request.channel, at)
                found[drow.key] = drow
            elif drow.customer_id != anchor:
                if not strong:
                    continue  # a device never moves on device evidence alone
                previous = drow.customer_id
                old = await store.device_links(session, drow.id)
                removal = await store.add_log(
                    session,
                    store.LogEntry(
                        action=Action.MERGE_LOG_ACTION_DEVICE_LINKED,
                        customer_id=anchor,
                        resulting_customer_ids=[previous],
                        identifiers=[drow.ref()],
                        rule_id="shared_device:last_signed_in",
                        method=Method.LINK_METHOD_DEVICE_SIGN_IN,
                        channel=request.channel,
                        actor=request.actor,
                    ),
                    at,
                )
                await store.remove_links(session, [link.id for link in old], removal, at)
                await store.repoint_identifiers(session, [drow.id], anchor)
                await store.add_refusal(
                    session, anchor, previous, NonMerge.NON_MERGE_REASON_SHARED_DEVICE, [drow.ref()]
                )
                drow.customer_id = anchor
                if outcome == Outcome.RESOLVE_OUTCOME_MATCHED:
                    outcome = Outcome.RESOLVE_OUTCOME_DEVICE_ATTRIBUTED
            elif hub is None or await store.device_links(session, drow.id):
                continue  # already this customer's, and already linked
            if hub is not None and hub.key != ident.key:
                link_ids_all += await store.insert_links(
                    session,
                    anchor,
                    [
                        store.NewLink(
                            a_id=found[hub.key].id,
                            b_id=drow.id,
                            method=Method.LINK_METHOD_DEVICE_SIGN_IN,
                            rule_id="device_sign_in",
                            channel=request.channel,
                            actor=request.actor,
                        )
                    ],
                    at,
                )
            if not created or strong:
                linked_device = ev.DeviceLinkedEvent(
                    customer_id=anchor,
                    device_id=ident.value,
                    device=drow.ref(),
                    previous_customer_id=previous,
                    method=Method.LINK_METHOD_DEVICE_SIGN_IN,
                    channel=request.channel,  # type: ignore[arg-type]
                )
                linked_device.link_time.FromDatetime(at)
                await _event(session, "device_linked", anchor, linked_device, anchor)

        if created:
            all_refs = [found[i.key].ref() for i in usable if i.key in found]
            await store.add_log(
                session,
                store.LogEntry(
                    action=Action.MERGE_LOG_ACTION_CREATED,
                    customer_id=anchor,
                    link_ids=link_ids_all,
                    identifiers=all_refs,
                    rule_id="no_match",
                    method=method,
                    channel=request.channel,
                    actor=request.actor,
                ),
                at,
            )
            created_event = ev.CustomerCreatedEvent(
                customer_id=anchor,
                anonymous=not strong,
                identifiers=all_refs,
                channel=request.channel,  # type: ignore[arg-type]
            )
            created_event.create_time.FromDatetime(at)
            await _event(session, "customer_created", anchor, created_event, anchor)

        # 6. Traits: review suggestions for a new customer; the record kept for matching.
        probable_ids: list[str] = []
        if created and probable:
            for candidate in probable[:3]:
                if candidate.score >= rules.review_threshold:
                    probable_ids.append(
                        await store.add_probable_match(
                            session,
                            anchor,
                            candidate.customer_id,
                            candidate.score,
                            candidate.evidence,
                        )
                    )
        if traits is not None:
            holder = _pick_anchor(strong, found, [anchor], rules)
            if holder is not None:
                await store.add_traits(
                    session, found[holder.key].id, traits, "" if created else anchor
                )

        # 7. Co-occurrences of the request's values (shared-value detection), last seen.
        if rules.shared_detection:
            present = [found[i.key] for i in strong if i.key in found]
            pairs = [(a.id, b.id, b.type) for a in present for b in present if a.type != b.type]
            await store.record_cooccurrences(session, pairs, at)
        if not created:
            await store.touch(
                session,
                [found[i.key].id for i in usable if i.key in found and i not in accepted],
                anchor,
                at,
            )
        if anchor in customers:
            anonymous = customers[anchor].anonymous and not became_known
        else:
            anonymous = not strong
        return svc.Resolution(
            customer_id=anchor,
            outcome=outcome,
            anonymous=anonymous,
            merged_customer_ids=merged_away,
            rejected_identifiers=decision.rejections,
            probable_match_ids=probable_ids,
            match_score=auto.score if auto is not None else 1.0,
        )

    async def _detect_shared(
        self,
        session: Executor,
        rules: Rules,
        usable: Sequence[NormalizedIdentifier],
        found: dict[tuple[int, bytes], store.IdentifierRow],
        at: datetime,
    ) -> list[NormalizedIdentifier]:
        """Values seen with too many distinct others of one type become blocked."""
        strong = [i for i in usable if not i.is_device]
        existing = [found[i.key] for i in strong if i.key in found]
        if len(strong) < 2 or not existing:
            return []
        since = at - rules.shared_window if rules.shared_window else None
        seen = await store.cooccurrence_counts(session, [r.id for r in existing], since)
        out: list[NormalizedIdentifier] = []
        for ident in strong:
            row = found.get(ident.key)
            if row is None:
                continue
            for other_type in {i.type for i in strong if i.type != ident.type}:
                others = set(seen.get((row.id, other_type), set()))
                others |= {
                    found[i.key].id if i.key in found else -n - 1
                    for n, i in enumerate(strong)
                    if i.type == other_type
                }
                if len(others) > rules.shared_max_customers:
                    await store.add_blocked(
                        session,
                        id_type=ident.type,
                        value_hash=ident.value_hash,
                        masked=ident.masked,
                        source=res.BlockSource.BLOCK_SOURCE_DETECTED,
                        reason=(
                            f"seen with {len(others)} distinct {_type_name(other_type)} values"
                        ),
                        actor="shared-value-detection",
                    )
                    out.append(ident)
                    break
        return out


async def write_merge(
    session: Executor,
    survivor: str,
    losers: Sequence[str],
    links: Sequence[store.NewLink],
    *,
    method: int,
    score: float,
    identifiers: Sequence[res.IdentifierRef],
    channel: int,
    actor: str,
    reason: str,
    at: datetime,
) -> tuple[list[str], str]:
    """Merge ``losers`` (locked by the caller) into ``survivor``: identifiers move, the
    losers become aliases, the links say why, the log and an event record it."""
    await store.move_all_identifiers(session, losers, survivor)
    await store.mark_merged(session, losers, survivor, at)
    link_ids = await store.insert_links(session, survivor, links, at)
    rule_id = links[0].rule_id if links else "shared_request"
    entry_id = await store.add_log(
        session,
        store.LogEntry(
            action=Action.MERGE_LOG_ACTION_MERGED,
            customer_id=survivor,
            merged_customer_ids=losers,
            link_ids=link_ids,
            identifiers=identifiers,
            rule_id=rule_id,
            method=method,
            score=score,
            channel=channel,
            actor=actor,
            reason=reason,
        ),
        at,
    )
    merged_event = ev.CustomerMergedEvent(
        surviving_customer_id=survivor,
        merged_customer_ids=losers,
        merge_entry_id=entry_id,
        method=method,  # type: ignore[arg-type]
        rule_id=rule_id,
        score=score,
        channel=channel,  # type: ignore[arg-type]
    )
    merged_event.merge_time.FromDatetime(at)
    await _event(session, "customer_merged", survivor, merged_event, survivor)
    return link_ids, entry_id


def _counts_for(counts: dict[tuple[str, int], int], customer_id: str) -> dict[int, int]:
    return {t: n for (cid, t), n in counts.items() if cid == customer_id}


def _type_name(id_type: int) -> str:
    from continuum.common.v1 import identifier_pb2

    return identifier_pb2.IdentifierType.Name(id_type).removeprefix("IDENTIFIER_TYPE_").lower()  # type: ignore[arg-type]


def _pick_anchor(
    candidates: Sequence[NormalizedIdentifier],
    found: dict[tuple[int, bytes], store.IdentifierRow],
    customer_ids: Sequence[str],
    rules: Rules,
    exclude: set[tuple[int, bytes]] | None = None,
) -> NormalizedIdentifier | None:
    """The request's highest-priority identifier already held by one of ``customer_ids``."""
    pool = [
        i
        for i in candidates
        if i.key in found
        and found[i.key].customer_id in customer_ids
        and (exclude is None or i.key not in exclude)
    ]
    if not pool:
        return None
    return max(pool, key=lambda i: (rules.priority(i.type), -found[i.key].id))
