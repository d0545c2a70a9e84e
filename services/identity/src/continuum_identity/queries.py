"""Reading the graph: customers, identifiers, links, the merge log, and explanations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from continuum.identity.v1 import identity_resources_pb2 as res
from continuum_identity import graph, store
from continuum_identity.identifiers import NormalizedIdentifier
from continuum_identity.repair import root_of, to_customer
from continuum_identity.resolver import NonMerge
from continuum_runtime.paging import bad_page_token as bad_token

DEFAULT_PAGE, MAX_PAGE = 100, 1000


def page_size(requested: int) -> int:
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


def link_message(link: store.LinkRow, idents: dict[int, store.IdentifierRow]) -> res.Link:
    message = res.Link(
        link_id=link.id,
        identifiers=[idents[i].ref() for i in (link.a_id, link.b_id) if i in idents],
        method=link.method,  # type: ignore[arg-type]
        state=res.LinkState.LINK_STATE_REMOVED
        if link.removed_at
        else res.LinkState.LINK_STATE_ACTIVE,
        rule_id=link.rule_id,
        source_channel=link.channel,  # type: ignore[arg-type]
        actor=link.actor,
        evidence=[
            res.Evidence(field=e["field"], comparison=e["comparison"], weight=e["weight"])
            for e in link.evidence
        ],
        score=link.score,
        customer_id=link.customer_id,
        removed_by_entry_id=link.removed_by_entry or "",
    )
    message.create_time.FromDatetime(link.created_at)
    if link.removed_at:
        message.remove_time.FromDatetime(link.removed_at)
    return message


def log_message(row: store.LogRow) -> res.MergeLogEntry:
    message = res.MergeLogEntry(
        entry_id=row.id,
        action=row.action,  # type: ignore[arg-type]
        customer_id=row.customer_id,
        merged_customer_ids=row.merged_customer_ids,
        resulting_customer_ids=row.resulting_customer_ids,
        link_ids=row.link_ids,
        identifiers=store.refs_from_json(row.identifiers),
        rule_id=row.rule_id,
        method=row.method,  # type: ignore[arg-type]
        score=row.score,
        channel=row.channel,  # type: ignore[arg-type]
        actor=row.actor,
        reason=row.reason,
    )
    message.create_time.FromDatetime(row.created_at)
    return message


async def get_customer(session: AsyncSession, customer_id: str) -> res.Customer:
    return await to_customer(session, await root_of(session, customer_id))


async def list_identifiers(
    session: AsyncSession, customer_id: str, types: list[int], size: int, token: str
) -> tuple[list[res.IdentifierRecord], str]:
    root = await root_of(session, customer_id)
    try:
        after = int(token) if token else 0
    except ValueError:
        raise bad_token() from None
    rows = await store.identifiers_of(
        session, [root.id], types=types, after_id=after, limit=page_size(size) + 1
    )
    more = len(rows) > page_size(size)
    rows = rows[: page_size(size)]
    blocked = await store.blocked_keys(session, [r.key for r in rows])
    out = []
    for r in rows:
        record = res.IdentifierRecord(
            identifier=r.ref(),
            customer_id=r.customer_id,
            blocked=r.key in blocked,
            first_seen_channel=r.first_seen_channel,  # type: ignore[arg-type]
            last_signed_in_on_device=bool(r.device_id),
        )
        record.first_seen_time.FromDatetime(r.first_seen_at)
        record.last_seen_time.FromDatetime(r.last_seen_at)
        out.append(record)
    return out, (str(rows[-1].id) if more and rows else "")


async def list_links(
    session: AsyncSession, customer_id: str, include_removed: bool, size: int, token: str
) -> tuple[list[res.Link], str]:
    root = await root_of(session, customer_id)
    if token and not token.startswith("lnk_"):
        raise bad_token()
    idents = {r.id: r for r in await store.identifiers_of(session, [root.id])}
    links = await store.links_of(
        session,
        list(idents),
        include_removed=include_removed,
        after=token,
        limit=page_size(size) + 1,
    )
    more = len(links) > page_size(size)
    links = links[: page_size(size)]
    return [link_message(link, idents) for link in links], (links[-1].id if more else "")


async def history(
    session: AsyncSession,
    customer_id: str,
    start: datetime | None,
    end: datetime | None,
    size: int,
    token: str,
) -> tuple[list[res.MergeLogEntry], str]:
    root = await root_of(session, customer_id)
    try:
        before = int(token) if token else None
    except ValueError:
        raise bad_token() from None
    ids = [root.id, *await store.aliases_of(session, root.id)]
    if customer_id not in ids:
        ids.append(customer_id)
    rows = await store.history(
        session, ids, start=start, end=end, before_seq=before, limit=page_size(size) + 1
    )
    more = len(rows) > page_size(size)
    rows = rows[: page_size(size)]
    return [log_message(r) for r in rows], (str(rows[-1].seq) if more and rows else "")


async def explain(
    session: AsyncSession,
    customer_id: str,
    other_customer_id: str | None,
    identifier: NormalizedIdentifier | None,
) -> res.Explanation:
    """Why two customers (or a customer and an identifier) are one, or why not."""
    root = await root_of(session, customer_id)
    own_ids = [root.id, *await store.aliases_of(session, root.id)]
    other_root: store.CustomerRow | None = None
    target_row: store.IdentifierRow | None = None
    if other_customer_id:
        other_root = await root_of(session, other_customer_id)
    elif identifier is not None:
        target_row = (await store.find_identifiers(session, [identifier.key])).get(identifier.key)
        if target_row is not None:
            other_root = await root_of(session, target_row.customer_id)
    explanation = res.Explanation(
        customer_id=root.id, other_customer_id=other_root.id if other_root else ""
    )
    if other_root is None:
        blocked = identifier is not None and bool(
            await store.blocked_keys(session, [identifier.key])
        )
        explanation.non_merge_reasons.append(
            NonMerge.NON_MERGE_REASON_BLOCKED_VALUE
            if blocked
            else NonMerge.NON_MERGE_REASON_NO_SHARED_IDENTIFIER
        )
        explanation.summary = (
            "the identifier is blocked, so it links no one"
            if blocked
            else "this identifier has never been seen"
        )
        return explanation
    other_ids = [other_root.id, *await store.aliases_of(session, other_root.id)]
    entries = await store.history(
        session, own_ids, start=None, end=None, before_seq=None, limit=MAX_PAGE
    )
    relevant = [
        e
        for e in entries
        if set(other_ids) & {e.customer_id, *e.merged_customer_ids, *e.resulting_customer_ids}
    ]
    explanation.entries.extend(log_message(e) for e in relevant)
    if other_root.id == root.id:
        explanation.same_customer = True
        idents = {r.id: r for r in await store.identifiers_of(session, [root.id])}
        links = await store.active_links_among(session, list(idents))
        start_node = _first_origin(idents, [customer_id]) or _first_origin(idents, [root.id])
        goal: int | None
        if target_row is not None:
            goal = target_row.id
        else:
            other = other_customer_id or ""
            goal = _first_origin(idents, [other], exclude=start_node) or _first_origin(
                idents, [other_root.id], exclude=start_node
            )
        path_ids: list[str] | None = None
        if start_node is not None and goal is not None:
            path_ids = graph.shortest_path(
                start_node, goal, [(link.a_id, link.b_id, link.id) for link in links]
            )
        by_id = {link.id: link for link in links}
        explanation.path.extend(link_message(by_id[i], idents) for i in path_ids or [])
        explanation.best_score = min((by_id[i].score for i in path_ids or []), default=1.0)
        merges = [e for e in relevant if e.merged_customer_ids]
        explanation.summary = f"one customer: linked through {len(explanation.path)} link(s)" + (
            f"; merged by rule {merges[0].rule_id}" if merges else ""
        )
        return explanation
    reasons = await store.refusals_between(session, own_ids, other_ids)
    found_reasons = reasons or [NonMerge.NON_MERGE_REASON_NO_SHARED_IDENTIFIER]
    for reason in found_reasons:
        explanation.non_merge_reasons.append(reason)  # type: ignore[arg-type]

    names = [NonMerge.Name(r).removeprefix("NON_MERGE_REASON_").lower() for r in reasons]  # type: ignore[arg-type]
    explanation.summary = (
        "two customers: " + ", ".join(names)
        if names
        else "two customers: no identifier was ever seen with both"
    )
    return explanation


def _first_origin(
    idents: dict[int, store.IdentifierRow], customer_ids: list[str], exclude: int | None = None
) -> int | None:
    """An identifier that came from one of ``customer_ids`` (the oldest), else any."""
    ordered = sorted(idents.values(), key=lambda r: r.id)
    for r in ordered:
        if r.origin_customer_id in customer_ids and r.id != exclude:
            return r.id
    return None


def blocked_message(row: tuple[Any, ...]) -> res.BlockedValue:
    bid, t, h, masked, source, reason, actor, created = row
    message = res.BlockedValue(
        blocked_value_id=bid,
        identifier=res.IdentifierRef(type=t, value_hash=bytes(h).hex(), masked_value=masked),
        source=source,
        reason=reason,
        actor=actor,
    )
    message.create_time.FromDatetime(created)
    return message


def match_message(row: store.MatchRow) -> res.ProbableMatch:
    message = res.ProbableMatch(
        match_id=row.id,
        customer_id=row.customer_id,
        candidate_customer_id=row.candidate_customer_id,
        score=row.score,
        evidence=[
            res.Evidence(field=e["field"], comparison=e["comparison"], weight=e["weight"])
            for e in row.evidence
        ],
        state=row.state,  # type: ignore[arg-type]
        decided_by=row.decided_by,
        decision_reason=row.decision_reason,
    )
    message.create_time.FromDatetime(row.created_at)
    if row.decided_at:
        message.decide_time.FromDatetime(row.decided_at)
    return message


async def probable_matches(
    session: AsyncSession, state: int, customer_id: str, min_score: float, size: int, token: str
) -> tuple[list[res.ProbableMatch], str]:
    try:
        after = int(token) if token else 0
    except ValueError:
        raise bad_token() from None
    ids: list[str] = []
    if customer_id:
        root = await root_of(session, customer_id)
        ids = [root.id, *await store.aliases_of(session, root.id)]
    rows = await store.list_probable_matches(
        session,
        state=state,
        customer_ids=ids,
        min_score=min_score,
        after_seq=after,
        limit=page_size(size) + 1,
    )
    more = len(rows) > page_size(size)
    rows = rows[: page_size(size)]
    return [match_message(r) for r in rows], (str(rows[-1].seq) if more and rows else "")
