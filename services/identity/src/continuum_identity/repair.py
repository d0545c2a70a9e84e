"""Undoing the graph: unmerge a wrong merge, split a customer by links, forget a customer.

An unmerge or split removes links from the append-only log (they stay, marked removed by
the entry that removed them), recomputes the customer's connected components, and gives
each component a customer id: the component holding the customer's own identifiers keeps
its id, a component of a merged-away customer gets that id back, anything else gets a new
id. Aliases follow the identifiers they came with.

Every function runs inside the caller's transaction, which also holds the request_id
record (``continuum_runtime.idempotency.run_once``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from continuum.identity.v1 import identity_events_pb2 as ev
from continuum.identity.v1 import identity_resources_pb2 as res
from continuum_identity import graph, store
from continuum_identity.identifiers import ACCOUNT_ID, DEVICE_ID
from continuum_identity.resolver import Action, NonMerge, _event, now, write_merge
from continuum_runtime.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)


async def root_of(session: AsyncSession, customer_id: str) -> store.CustomerRow:
    """The active customer ``customer_id`` resolves to (itself or its survivor)."""
    customer = await store.get_customer(session, customer_id)
    for _ in range(64):
        if customer is None or customer.state == store.FORGOTTEN:
            break
        if customer.state == store.ACTIVE:
            return customer
        if customer.merged_into is None:
            break
        customer = await store.get_customer(session, customer.merged_into)
    raise NotFound(
        "no such customer", reason="CUSTOMER_NOT_FOUND", metadata={"customer_id": customer_id}
    )


async def locked_root(session: AsyncSession, customer_id: str) -> store.CustomerRow:
    for _ in range(8):
        root = await root_of(session, customer_id)
        locked = (await store.lock_customers(session, [root.id])).get(root.id)
        if locked is not None and locked.state == store.ACTIVE:
            return locked
    raise Aborted("customer kept changing; retry", reason="CONTENTION")


@dataclass
class Forgotten:
    customer_id: str
    aliases: list[str]
    identifiers: int
    links: int
    at: datetime


async def unmerge(
    session: AsyncSession, customer_id: str, entry_id: str, actor: str, reason: str
) -> tuple[list[res.Customer], store.LogRow]:
    root = await locked_root(session, customer_id)
    entry = await store.get_log(session, entry_id, lock=True)
    if entry is None:
        raise NotFound("no such merge entry", reason="MERGE_ENTRY_NOT_FOUND")
    if entry.action != Action.MERGE_LOG_ACTION_MERGED:
        raise FailedPrecondition(
            "only a MERGED entry can be undone",
            reason="NOT_A_MERGE",
            violations=[FieldViolation("merge_entry_id", "not a merge")],
        )
    if entry.undone_by:
        raise FailedPrecondition(
            "this merge was already undone",
            reason="ALREADY_UNMERGED",
            metadata={"undone_by": entry.undone_by},
        )
    survivor = await root_of(session, entry.customer_id)
    if survivor.id != root.id:
        raise FailedPrecondition(
            "the merge is not part of this customer", reason="MERGE_NOT_IN_CUSTOMER"
        )
    parts, new_entry = await _recompute(
        session,
        root,
        remove=entry.link_ids,
        candidates=entry.merged_customer_ids,
        action=Action.MERGE_LOG_ACTION_UNMERGED,
        actor=actor,
        reason=reason,
        undone=entry.id,
    )
    await store.mark_undone(session, entry.id, new_entry.id)
    return parts, new_entry


async def split(
    session: AsyncSession,
    customer_id: str,
    link_ids: Sequence[str],
    actor: str,
    reason: str,
) -> tuple[list[res.Customer], store.LogRow]:
    root = await locked_root(session, customer_id)
    links = {link.id: link for link in await store.links_by_id(session, link_ids)}
    members = {r.id for r in await store.identifiers_of(session, [root.id])}
    violations = [
        FieldViolation(f"link_ids[{i}]", "not an active link of this customer")
        for i, link_id in enumerate(link_ids)
        if link_id not in links
        or links[link_id].removed_at is not None
        or links[link_id].a_id not in members
    ]
    if violations:
        raise InvalidArgument(
            "unknown or removed links", reason="UNKNOWN_LINK", violations=violations
        )
    aliases = await store.aliases_of(session, root.id)
    return await _recompute(
        session,
        root,
        remove=list(link_ids),
        candidates=aliases,
        action=Action.MERGE_LOG_ACTION_SPLIT,
        actor=actor,
        reason=reason,
        undone=None,
    )


async def _recompute(
    session: AsyncSession,
    root: store.CustomerRow,
    *,
    remove: Sequence[str],
    candidates: Sequence[str],
    action: int,
    actor: str,
    reason: str,
    undone: str | None,
) -> tuple[list[res.Customer], store.LogRow]:
    at = now()
    idents = await store.identifiers_of(session, [root.id])
    by_id = {r.id: r for r in idents}
    removed = set(remove)
    edges = [
        (link.a_id, link.b_id)
        for link in await store.active_links_among(session, list(by_id))
        if link.id not in removed and link.a_id in by_id and link.b_id in by_id
    ]
    groups = graph.components(by_id, edges)
    aliases = await store.direct_aliases(session, root.id)
    origin = {r.id: r.origin_customer_id for r in idents}
    # Aliases merged into a merged-away customer earlier count as that customer.
    names = graph.assign_components(groups, origin, root.id, candidates)
    entry_id = store.new_id("mle")
    part_ids: list[str] = []
    parts_event: list[ev.UnmergedPart] = []
    for group, name in zip(groups, names, strict=True):
        existing = name is not None
        cid = name if name is not None else store.new_id("cus")
        members = [by_id[i] for i in group]
        anonymous = all(m.type == DEVICE_ID for m in members)
        if not existing:
            first = min(members, key=lambda m: m.first_seen_at)
            await store.create_customer(
                session, cid, anonymous=anonymous, channel=first.first_seen_channel, at=at
            )
        else:
            await store.set_customer(
                session, cid, state=store.ACTIVE, anonymous=anonymous, merged_into=None, at=at
            )
        await store.repoint_identifiers(session, group, cid)
        part_ids.append(cid)
        parts_event.append(
            ev.UnmergedPart(
                customer_id=cid,
                existing_id=existing,
                identifiers=[m.ref() for m in members],
                device_ids=[m.device_id for m in members if m.device_id],
            )
        )
    # Each alias follows the part where most identifiers it brought ended up.
    part_of = {i: cid for group, cid in zip(groups, part_ids, strict=True) for i in group}
    for alias in aliases:
        if alias in part_ids:
            continue
        votes: dict[str, int] = {}
        for r in idents:
            if r.origin_customer_id == alias:
                votes[part_of[r.id]] = votes.get(part_of[r.id], 0) + 1
        target = max(sorted(votes), key=lambda c: votes[c]) if votes else root.id
        if target not in part_ids:
            target = part_ids[0] if part_ids else root.id
        await store.repoint_aliases(session, [alias], target, at)
        for part in parts_event:
            if part.customer_id == target:
                part.alias_customer_ids.append(alias)
    if root.id not in part_ids:
        # Every identifier went elsewhere; the old id becomes an alias of the first part.
        await store.repoint_aliases(session, [root.id], part_ids[0], at)
    await store.remove_links(session, list(removed), entry_id, at)
    await store.add_log(
        session,
        store.LogEntry(
            action=action,
            customer_id=root.id,
            resulting_customer_ids=part_ids,
            link_ids=sorted(removed),
            actor=actor,
            reason=reason,
        ),
        at,
        entry_id=entry_id,
    )
    for i, a in enumerate(part_ids):
        for b in part_ids[i + 1 :]:
            await store.add_refusal(session, a, b, NonMerge.NON_MERGE_REASON_UNMERGED, [])
    event = ev.CustomerUnmergedEvent(
        customer_id=root.id,
        split=action == Action.MERGE_LOG_ACTION_SPLIT,
        parts=parts_event,
        undone_merge_entry_id=undone or "",
        entry_id=entry_id,
        reason=reason,
    )
    event.unmerge_time.FromDatetime(at)
    await _event(session, "customer_unmerged", root.id, event, root.id)
    entry = await store.get_log(session, entry_id)
    assert entry is not None
    customers = [await customer_message(session, cid) for cid in part_ids]
    return customers, entry


async def forget(session: AsyncSession, customer_id: str, actor: str, reason: str) -> Forgotten:
    root = await locked_root(session, customer_id)
    aliases = await store.aliases_of(session, root.id)
    ids = [root.id, *aliases]
    idents = await store.identifiers_of(session, [root.id])
    links = await store.active_links_among(session, [r.id for r in idents])
    devices = [r.device_id for r in idents if r.device_id]
    at = now()
    await store.delete_identifiers_of(session, [root.id])
    await store.forget_customers(session, ids, at)
    await store.erase_log_identifiers(session, ids)
    await store.add_log(
        session,
        store.LogEntry(
            action=Action.MERGE_LOG_ACTION_FORGOTTEN,
            customer_id=root.id,
            merged_customer_ids=aliases,
            actor=actor,
            reason=reason,
        ),
        at,
    )
    event = ev.CustomerForgottenEvent(
        customer_id=root.id, alias_customer_ids=aliases, device_ids=devices
    )
    event.forget_time.FromDatetime(at)
    await _event(session, "customer_forgotten", root.id, event, root.id)
    return Forgotten(root.id, aliases, len(idents), len(links), at)


async def accept_match(
    session: AsyncSession, match_id: str, actor: str, reason: str
) -> tuple[store.MatchRow, res.Customer]:
    """Merge a reviewed probable match (the older customer survives)."""
    match = await store.get_probable_match(session, match_id, lock=True)
    if match is None:
        raise NotFound("no such probable match", reason="PROBABLE_MATCH_NOT_FOUND")
    if match.state != res.ProbableMatchState.PROBABLE_MATCH_STATE_PENDING:
        raise FailedPrecondition("this match was already decided", reason="ALREADY_DECIDED")
    a = await root_of(session, match.customer_id)
    b = await root_of(session, match.candidate_customer_id)
    locked = await store.lock_customers(session, [a.id, b.id])
    if set(locked) != {a.id, b.id}:
        raise Aborted("customers changed; retry", reason="CONTENTION")
    if a.id == b.id:
        state = res.ProbableMatchState.PROBABLE_MATCH_STATE_OBSOLETE
        await store.decide_probable_match(session, match.id, state, actor, "already one customer")
    else:
        survivor, loser = sorted([a, b], key=lambda c: (c.created_at, c.id))
        unique_types = [ACCOUNT_ID]
        values = await store.values_of_types(session, [a.id, b.id], unique_types)
        if values[a.id] and values[b.id] and values[a.id] != values[b.id]:
            raise FailedPrecondition(
                "both customers have an account id", reason="UNIQUE_TYPE_CONFLICT"
            )
        one = (await store.identifiers_of(session, [survivor.id], limit=1))[0]
        two = (await store.identifiers_of(session, [loser.id], limit=1))[0]
        link = store.NewLink(
            a_id=one.id,
            b_id=two.id,
            method=res.LinkMethod.LINK_METHOD_REVIEW_ACCEPTED,
            rule_id="review_accepted",
            channel=0,
            actor=actor,
            score=match.score,
            evidence=match.evidence,
        )
        await write_merge(
            session,
            survivor.id,
            [loser.id],
            [link],
            method=res.LinkMethod.LINK_METHOD_REVIEW_ACCEPTED,
            score=match.score,
            identifiers=[one.ref(), two.ref()],
            channel=0,
            actor=actor,
            reason=reason,
            at=now(),
        )
        state = res.ProbableMatchState.PROBABLE_MATCH_STATE_ACCEPTED
        await store.decide_probable_match(session, match.id, state, actor, reason)
    decided = await store.get_probable_match(session, match.id)
    assert decided is not None
    return decided, await to_customer(session, await root_of(session, a.id))


async def reject_match(
    session: AsyncSession, match_id: str, actor: str, reason: str
) -> store.MatchRow:
    match = await store.get_probable_match(session, match_id, lock=True)
    if match is None:
        raise NotFound("no such probable match", reason="PROBABLE_MATCH_NOT_FOUND")
    if match.state != res.ProbableMatchState.PROBABLE_MATCH_STATE_PENDING:
        raise FailedPrecondition("this match was already decided", reason="ALREADY_DECIDED")
    state = res.ProbableMatchState.PROBABLE_MATCH_STATE_REJECTED
    await store.decide_probable_match(session, match.id, state, actor, reason)
    await store.add_refusal(
        session,
        match.customer_id,
        match.candidate_customer_id,
        NonMerge.NON_MERGE_REASON_REJECTED_IN_REVIEW,
        [],
    )
    decided = await store.get_probable_match(session, match.id)
    assert decided is not None
    return decided


async def customer_message(session: AsyncSession, customer_id: str) -> res.Customer:
    row = await store.get_customer(session, customer_id)
    if row is None:
        raise NotFound("no such customer", reason="CUSTOMER_NOT_FOUND")
    return await to_customer(session, row)


async def to_customer(session: AsyncSession, row: store.CustomerRow) -> res.Customer:
    message = res.Customer(
        customer_id=row.id,
        state=row.state,  # type: ignore[arg-type]
        anonymous=row.anonymous,
        merged_into_customer_id=row.merged_into or "",
        alias_customer_ids=await store.aliases_of(session, row.id),
        identifier_count=await store.count_identifiers(session, row.id),
        first_seen_channel=row.first_seen_channel,  # type: ignore[arg-type]
    )
    message.create_time.FromDatetime(row.created_at)
    message.update_time.FromDatetime(row.updated_at)
    message.last_seen_time.FromDatetime(row.last_seen_at)
    return message
