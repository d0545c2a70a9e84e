"""Concurrency, split, forget, explain, batch and manual links of the identity graph."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
from google.protobuf import field_mask_pb2

from continuum.common.v1 import identifier_pb2 as idpb
from continuum.identity.v1 import identity_events_pb2 as ev
from continuum.identity.v1 import identity_resources_pb2 as res
from continuum.identity.v1 import identity_service_pb2 as pb
from continuum_identity.graph import components
from tests.identity.conftest import Identity
from tests.identity.test_resolve import (
    WEB,
    account,
    device,
    email,
    events,
    get_customer,
    phone,
    resolve,
    rows,
)

T = idpb.IdentifierType


async def unlimited(identity: Identity) -> None:
    """No per-type limits and no shared-value detection: only the graph decides."""
    await identity.stub.UpdateMergeRules(
        pb.UpdateMergeRulesRequest(
            request_id="unlimited",
            merge_rules=res.MergeRules(
                type_rules=[
                    res.IdentifierTypeRule(type=t, priority=50, merges_known_customers=True)
                    for t in (T.IDENTIFIER_TYPE_EMAIL, T.IDENTIFIER_TYPE_PHONE)
                ],
                shared_value_detection=res.SharedValueDetection(
                    enabled=False, max_distinct_customers=100
                ),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["type_rules", "shared_value_detection"]),
            actor="tests",
        ),
        metadata=identity.metadata,
    )


async def test_parallel_resolves_of_one_chain_converge_on_one_customer_losing_nothing(
    identity: Identity,
) -> None:
    await unlimited(identity)
    n = 16
    emails = [email(f"chain{i}@example.com") for i in range(n + 1)]
    phones = [phone(f"+1202555{1000 + i}") for i in range(n)]
    requests = [(emails[i], phones[i]) for i in range(n)]
    requests += [(phones[i], emails[i + 1]) for i in range(n)]
    requests += [(emails[0], emails[n])] * 4  # the same pair many times at once
    random.Random(7).shuffle(requests)
    answers = await asyncio.gather(*(resolve(identity, *pair) for pair in requests))
    assert all(a.customer_id for a in answers)
    survivors = {(await get_customer(identity, a.customer_id)).customer_id for a in answers}
    assert len(survivors) == 1
    (survivor,) = survivors
    owners = await rows(identity, "SELECT DISTINCT customer_id FROM identifiers")
    assert owners == [(survivor,)]
    assert len(await rows(identity, "SELECT id FROM identifiers")) == 2 * n + 1
    active = await rows(identity, "SELECT id FROM customers WHERE state = 1")
    assert active == [(survivor,)]
    # Every identifier is reachable from every other through active links.
    nodes = [r[0] for r in await rows(identity, "SELECT id FROM identifiers")]
    edges = await rows(identity, "SELECT a_id, b_id FROM links WHERE removed_at IS NULL")
    assert len(components(nodes, [(a, b) for a, b in edges])) == 1
    path_lengths = []
    for target in (emails[0], emails[n], phones[0], phones[n - 1]):
        why = await identity.stub.Explain(
            pb.ExplainRequest(customer_id=survivor, identifier=target),
            metadata=identity.metadata,
        )
        assert why.explanation.same_customer
        path_lengths.append(len(why.explanation.path))
    # The path starts at one of these four, so at least three need links to be explained.
    assert sorted(path_lengths)[1] >= 1


async def test_parallel_first_sightings_of_the_same_identifiers_create_one_customer(
    identity: Identity,
) -> None:
    idents = (email("rush@example.com"), phone("+12025550150"), device("rush-dev"))
    answers = await asyncio.gather(*(resolve(identity, *idents) for _ in range(24)))
    assert len({a.customer_id for a in answers}) == 1
    assert [a.outcome for a in answers].count(pb.RESOLVE_OUTCOME_CREATED) == 1
    assert len(await rows(identity, "SELECT id FROM customers")) == 1
    assert len(await events(identity, "identity.customer_created")) == 1


async def test_split_removes_chosen_links_and_makes_a_new_customer(identity: Identity) -> None:
    first = await resolve(identity, email("s1@example.com"), phone("+12025550160"))
    links = await identity.stub.ListLinks(
        pb.ListLinksRequest(customer_id=first.customer_id), metadata=identity.metadata
    )
    (link,) = links.links
    split = await identity.stub.SplitCustomer(
        pb.SplitCustomerRequest(
            request_id="split-1",
            customer_id=first.customer_id,
            link_ids=[link.link_id],
            actor="ops",
            reason="phone belongs to someone else",
        ),
        metadata=identity.metadata,
    )
    ids = [c.customer_id for c in split.customers]
    assert first.customer_id in ids
    assert len(ids) == 2
    (other,) = [i for i in ids if i != first.customer_id]
    assert (await resolve(identity, phone("+12025550160"))).customer_id == other
    assert (await resolve(identity, email("s1@example.com"))).customer_id == first.customer_id
    removed = await identity.stub.ListLinks(
        pb.ListLinksRequest(customer_id=first.customer_id, include_removed=True),
        metadata=identity.metadata,
    )
    assert [lk.state for lk in removed.links] == [res.LINK_STATE_REMOVED]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await identity.stub.SplitCustomer(
            pb.SplitCustomerRequest(
                request_id="split-2",
                customer_id=first.customer_id,
                link_ids=["lnk_unknown"],
                actor="ops",
                reason="typo",
            ),
            metadata=identity.metadata,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_forget_erases_identifiers_and_tells_every_service(identity: Identity) -> None:
    one = await resolve(identity, email("gone@example.com"), device("gone-dev"))
    two = await resolve(identity, phone("+12025550170"))
    await resolve(identity, email("gone@example.com"), phone("+12025550170"))
    # A refusal that names the customer's identifiers (two account ids never merge).
    await resolve(identity, email("gone@example.com"), account("gone-acct"))
    await resolve(identity, email("stays@example.com"), account("other-acct"))
    await resolve(identity, email("gone@example.com"), email("stays@example.com"))
    forgotten = await identity.stub.ForgetCustomer(
        pb.ForgetCustomerRequest(
            request_id="forget-1", customer_id=two.customer_id, actor="dpo", reason="erasure"
        ),
        metadata=identity.metadata,
    )
    assert forgotten.customer_id == one.customer_id
    assert list(forgotten.alias_customer_ids) == [two.customer_id]
    assert forgotten.removed_identifier_count == 4
    for cid in (one.customer_id, two.customer_id):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await get_customer(identity, cid)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    gone = f"'{one.customer_id}'"
    assert len(await rows(identity, "SELECT id FROM identifiers")) == 2  # the other customer's
    assert await rows(identity, f"SELECT id FROM identifiers WHERE customer_id = {gone}") == []
    masked = await rows(
        identity,
        f"SELECT identifiers::text FROM merge_log WHERE {gone} = ANY(subjects) "
        f"UNION ALL SELECT identifiers::text FROM refusals WHERE {gone} IN (customer_a, customer_b)",
    )
    assert len(masked) >= 4
    assert {r[0] for r in masked} == {"[]"}
    (envelope,) = await events(identity, "identity.customer_forgotten")
    payload = ev.CustomerForgottenEvent()
    assert envelope.payload.Unpack(payload)
    assert list(payload.device_ids) == ["gone-dev"]
    fresh = await resolve(identity, email("gone@example.com"))
    assert fresh.outcome == pb.RESOLVE_OUTCOME_CREATED
    assert fresh.customer_id not in (one.customer_id, two.customer_id)


async def test_batch_resolve_reports_each_bad_item_on_its_own(identity: Identity) -> None:
    answer = await identity.stub.BatchResolveIdentity(
        pb.BatchResolveIdentityRequest(
            request_id="batch-1",
            items=[
                pb.ResolveItem(identifiers=[email("batch1@example.com")], channel=WEB),
                pb.ResolveItem(identifiers=[email("nope")], channel=WEB),
                pb.ResolveItem(
                    identifiers=[email("batch1@example.com"), phone("+12025550180")],
                    channel=WEB,
                ),
            ],
        ),
        metadata=identity.metadata,
    )
    first, bad, third = answer.results
    assert first.resolution.outcome == pb.RESOLVE_OUTCOME_CREATED
    assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert third.resolution.customer_id == first.resolution.customer_id
    assert third.resolution.outcome == pb.RESOLVE_OUTCOME_LINKED


async def test_lookup_only_never_creates(identity: Identity) -> None:
    answer = await resolve(identity, email("ghost@example.com"), lookup_only=True)
    assert answer.outcome == pb.RESOLVE_OUTCOME_NOT_FOUND
    assert await rows(identity, "SELECT id FROM customers") == []


async def test_an_operator_links_identifiers_and_merges_only_when_allowed(
    identity: Identity,
) -> None:
    one = await resolve(identity, account("op-1"))
    two = await resolve(identity, email("op2@example.com"))
    kept = await identity.stub.LinkIdentifiers(
        pb.LinkIdentifiersRequest(
            request_id="link-1",
            customer_id=one.customer_id,
            identifiers=[email("op2@example.com"), phone("+12025550190")],
            allow_merge=False,
            channel=WEB,
            actor="agent-7",
        ),
        metadata=identity.metadata,
    )
    assert kept.resolution.customer_id == one.customer_id
    assert [r.reason for r in kept.resolution.rejected_identifiers] == [
        pb.IDENTIFIER_REJECTION_REASON_BELONGS_TO_OTHER_CUSTOMER
    ]
    assert (await resolve(identity, phone("+12025550190"))).customer_id == one.customer_id
    merged = await identity.stub.LinkIdentifiers(
        pb.LinkIdentifiersRequest(
            request_id="link-2",
            customer_id=one.customer_id,
            identifiers=[email("op2@example.com")],
            allow_merge=True,
            channel=WEB,
            actor="agent-7",
        ),
        metadata=identity.metadata,
    )
    assert list(merged.resolution.merged_customer_ids) == [two.customer_id]
    history = await identity.stub.GetHistory(
        pb.GetHistoryRequest(customer_id=one.customer_id), metadata=identity.metadata
    )
    merge = next(e for e in history.entries if e.action == res.MERGE_LOG_ACTION_MERGED)
    assert merge.method == res.LINK_METHOD_MANUAL
    assert merge.actor == "agent-7"


async def test_stale_merge_rules_revision_is_aborted(identity: Identity) -> None:
    update = pb.UpdateMergeRulesRequest(
        request_id="rv-1",
        merge_rules=res.MergeRules(
            match_thresholds=res.MatchThresholds(auto_link_threshold=0.9, review_threshold=0.5)
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["match_thresholds"]),
        actor="ops",
    )
    first = (await identity.stub.UpdateMergeRules(update, metadata=identity.metadata)).merge_rules
    update.request_id, update.expected_revision = "rv-2", first.revision
    second = (await identity.stub.UpdateMergeRules(update, metadata=identity.metadata)).merge_rules
    assert second.revision == first.revision + 1
    update.request_id = "rv-3"  # still expects the first revision
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await identity.stub.UpdateMergeRules(update, metadata=identity.metadata)
    assert err.value.code() == grpc.StatusCode.ABORTED
    update.request_id, update.expected_revision = "rv-4", 0
    update.merge_rules.match_thresholds.review_threshold = 0.95
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await identity.stub.UpdateMergeRules(update, metadata=identity.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    current = await identity.stub.GetMergeRules(
        pb.GetMergeRulesRequest(), metadata=identity.metadata
    )
    assert current.merge_rules.revision == second.revision
