"""Identity resolution over gRPC against a real PostgreSQL: create, link, merge, rules."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import text

from continuum.common.v1 import channel_pb2, event_pb2
from continuum.common.v1 import identifier_pb2 as idpb
from continuum.identity.v1 import identity_events_pb2 as ev
from continuum.identity.v1 import identity_resources_pb2 as res
from continuum.identity.v1 import identity_service_pb2 as pb
from tests.identity.conftest import Identity

T = idpb.IdentifierType
O = pb.ResolveOutcome  # noqa: E741
R = pb.IdentifierRejectionReason
WEB = channel_pb2.Channel.CHANNEL_WEB
STORE = channel_pb2.Channel.CHANNEL_STORE
_ids = itertools.count()


def email(value: str) -> idpb.Identifier:
    return idpb.Identifier(type=T.IDENTIFIER_TYPE_EMAIL, value=value)


def phone(value: str) -> idpb.Identifier:
    return idpb.Identifier(type=T.IDENTIFIER_TYPE_PHONE, value=value)


def device(value: str) -> idpb.Identifier:
    return idpb.Identifier(type=T.IDENTIFIER_TYPE_DEVICE_ID, value=value)


def account(value: str) -> idpb.Identifier:
    return idpb.Identifier(type=T.IDENTIFIER_TYPE_ACCOUNT_ID, value=value)


async def resolve(
    identity: Identity,
    *identifiers: idpb.Identifier,
    channel: int = WEB,
    request_id: str | None = None,
    **kwargs: Any,
) -> pb.Resolution:
    answer = await identity.stub.ResolveIdentity(
        pb.ResolveIdentityRequest(
            request_id=request_id or f"r-{next(_ids)}-{uuid.uuid4().hex[:8]}",
            identifiers=list(identifiers),
            channel=channel,  # type: ignore[arg-type]
            **kwargs,
        ),
        metadata=identity.metadata,
    )
    return answer.resolution


async def get_customer(identity: Identity, customer_id: str) -> res.Customer:
    answer = await identity.stub.GetCustomer(
        pb.GetCustomerRequest(customer_id=customer_id), metadata=identity.metadata
    )
    return answer.customer


async def rows(identity: Identity, sql: str) -> list[Any]:
    async with identity.ctx.db.transaction() as session:
        return list(await session.execute(text(sql)))


async def events(identity: Identity, event_type: str) -> list[event_pb2.EventEnvelope]:
    out = []
    for (blob,) in await rows(
        identity, f"SELECT envelope FROM outbox WHERE event_type = '{event_type}' ORDER BY seq"
    ):
        envelope = event_pb2.EventEnvelope()
        envelope.ParseFromString(blob)
        out.append(envelope)
    return out


async def test_new_identifiers_create_a_customer_that_the_same_identifiers_find_again(
    identity: Identity,
) -> None:
    first = await resolve(identity, email(" Jane.Doe@Example.COM "), phone("(202) 555-0143"))
    assert first.outcome == O.RESOLVE_OUTCOME_CREATED
    assert first.customer_id
    assert not first.anonymous
    again = await resolve(identity, email("jane.doe@example.com"), phone("+1 202 555 0143"))
    assert again.outcome == O.RESOLVE_OUTCOME_MATCHED
    assert again.customer_id == first.customer_id
    (created,) = await events(identity, "identity.customer_created")
    payload = ev.CustomerCreatedEvent()
    assert created.payload.Unpack(payload)
    assert payload.customer_id == first.customer_id
    assert created.customer_id == first.customer_id


async def test_the_database_and_events_hold_no_raw_email_or_phone(identity: Identity) -> None:
    await resolve(identity, email("secret.person@example.org"), phone("+44 20 7946 0958"))
    await resolve(identity, email("secret.person@example.org"), email("other.secret@example.org"))
    stored = [
        value
        for table in ("identifiers", "merge_log", "links")
        for row in await rows(identity, f"SELECT * FROM {table}")
        for value in row
    ]
    # What could hold contact data: text, JSON and bytes. (Not timestamps or ids: a
    # microsecond count may contain "7946" by chance.)
    text_dump = " ".join(
        json.dumps(v) if isinstance(v, dict | list) else v
        for v in stored
        if isinstance(v, str | dict | list)
    ).lower()
    blobs = b"".join(bytes(v) for v in stored if isinstance(v, bytes | bytearray | memoryview))
    numbers = {str(v) for v in stored if isinstance(v, int)}
    outbox = b"".join(r[0] for r in await rows(identity, "SELECT envelope FROM outbox"))
    for raw in ("secret.person@example.org", "other.secret", "+442079460958", "7946"):
        assert raw not in text_dump
        assert raw.encode() not in blobs
        assert raw.encode() not in outbox
    assert "442079460958" not in numbers


async def test_a_new_identifier_seen_with_a_known_one_is_linked(identity: Identity) -> None:
    first = await resolve(identity, email("a@example.com"))
    linked = await resolve(identity, email("a@example.com"), phone("+12025550100"))
    assert linked.outcome == O.RESOLVE_OUTCOME_LINKED
    assert linked.customer_id == first.customer_id
    listed = await identity.stub.ListIdentifiers(
        pb.ListIdentifiersRequest(customer_id=first.customer_id), metadata=identity.metadata
    )
    kinds = sorted(r.identifier.type for r in listed.identifiers)
    assert kinds == [T.IDENTIFIER_TYPE_EMAIL, T.IDENTIFIER_TYPE_PHONE]
    assert {r.identifier.masked_value for r in listed.identifiers} == {
        "a***@example.com",
        "+12******100",
    }


async def test_identifiers_of_two_customers_seen_together_merge_and_the_old_id_is_an_alias(
    identity: Identity,
) -> None:
    one = await resolve(identity, email("one@example.com"))
    two = await resolve(identity, phone("+12025550111"))
    merged = await resolve(identity, email("one@example.com"), phone("+12025550111"))
    assert merged.outcome == O.RESOLVE_OUTCOME_MERGED
    assert merged.customer_id == one.customer_id  # the older customer survives
    assert list(merged.merged_customer_ids) == [two.customer_id]
    alias = await get_customer(identity, two.customer_id)
    assert alias.customer_id == one.customer_id
    assert two.customer_id in alias.alias_customer_ids
    assert alias.identifier_count == 2
    (envelope,) = await events(identity, "identity.customer_merged")
    payload = ev.CustomerMergedEvent()
    assert envelope.payload.Unpack(payload)
    assert payload.surviving_customer_id == one.customer_id
    assert list(payload.merged_customer_ids) == [two.customer_id]


async def test_unmerge_restores_both_customers_and_the_merge_does_not_happen_again(
    identity: Identity,
) -> None:
    one = await resolve(identity, email("u1@example.com"))
    two = await resolve(identity, phone("+12025550122"), device("dev-u2"))
    await resolve(identity, email("u1@example.com"), phone("+12025550122"))
    history = await identity.stub.GetHistory(
        pb.GetHistoryRequest(customer_id=one.customer_id), metadata=identity.metadata
    )
    (merge,) = [e for e in history.entries if e.action == res.MERGE_LOG_ACTION_MERGED]
    undone = await identity.stub.UnmergeCustomer(
        pb.UnmergeCustomerRequest(
            request_id="unmerge-1",
            customer_id=two.customer_id,  # an alias works too
            merge_entry_id=merge.entry_id,
            actor="ops@example.com",
            reason="different people sharing a phone",
        ),
        metadata=identity.metadata,
    )
    assert sorted(c.customer_id for c in undone.customers) == sorted(
        [one.customer_id, two.customer_id]
    )
    assert (await resolve(identity, phone("+12025550122"))).customer_id == two.customer_id
    assert (await resolve(identity, device("dev-u2"))).customer_id == two.customer_id
    assert (await get_customer(identity, two.customer_id)).customer_id == two.customer_id
    again = await resolve(identity, email("u1@example.com"), phone("+12025550122"))
    assert again.outcome != O.RESOLVE_OUTCOME_MERGED
    assert [r.reason for r in again.rejected_identifiers] == [
        R.IDENTIFIER_REJECTION_REASON_BELONGS_TO_OTHER_CUSTOMER
    ]
    why = await identity.stub.Explain(
        pb.ExplainRequest(customer_id=one.customer_id, other_customer_id=two.customer_id),
        metadata=identity.metadata,
    )
    assert not why.explanation.same_customer
    assert res.NON_MERGE_REASON_UNMERGED in why.explanation.non_merge_reasons
    (envelope,) = await events(identity, "identity.customer_unmerged")
    payload = ev.CustomerUnmergedEvent()
    assert envelope.payload.Unpack(payload)
    parts = {p.customer_id: p for p in payload.parts}
    assert list(parts[two.customer_id].device_ids) == ["dev-u2"]


async def test_two_account_ids_never_end_up_on_one_customer(identity: Identity) -> None:
    one = await resolve(identity, account("acct-1"), email("x1@example.com"))
    two = await resolve(identity, account("acct-2"), email("x2@example.com"))
    both = await resolve(identity, email("x1@example.com"), email("x2@example.com"))
    assert both.customer_id == one.customer_id
    assert both.outcome != O.RESOLVE_OUTCOME_MERGED
    assert [r.reason for r in both.rejected_identifiers] == [
        R.IDENTIFIER_REJECTION_REASON_UNIQUE_TYPE_CONFLICT
    ]
    assert (await get_customer(identity, two.customer_id)).customer_id == two.customer_id
    second_account = await resolve(identity, email("x1@example.com"), account("acct-3"))
    assert [r.reason for r in second_account.rejected_identifiers] == [
        R.IDENTIFIER_REJECTION_REASON_UNIQUE_TYPE_CONFLICT
    ]
    why = await identity.stub.Explain(
        pb.ExplainRequest(customer_id=one.customer_id, other_customer_id=two.customer_id),
        metadata=identity.metadata,
    )
    assert res.NON_MERGE_REASON_UNIQUE_TYPE_CONFLICT in why.explanation.non_merge_reasons


async def test_a_shared_device_never_merges_two_known_customers(identity: Identity) -> None:
    guest = await resolve(identity, device("tablet-1"), channel=STORE)
    assert guest.outcome == O.RESOLVE_OUTCOME_CREATED
    assert guest.anonymous
    alice = await resolve(identity, email("alice@example.com"), device("tablet-1"))
    # The guest signs in: the anonymous customer becomes Alice, history and all.
    assert alice.customer_id == guest.customer_id
    assert not alice.anonymous
    bob = await resolve(identity, email("bob@example.com"), device("tablet-1"))
    assert bob.customer_id != alice.customer_id
    assert bob.outcome == O.RESOLVE_OUTCOME_CREATED
    # Anonymous activity on the device goes to the last signed-in customer.
    assert (await resolve(identity, device("tablet-1"))).customer_id == bob.customer_id
    assert (await resolve(identity, email("alice@example.com"))).customer_id == alice.customer_id
    moved = [e for e in await events(identity, "identity.device_linked")]
    payload = ev.DeviceLinkedEvent()
    assert moved[-1].payload.Unpack(payload)
    assert payload.customer_id == bob.customer_id
    assert payload.previous_customer_id == alice.customer_id
    why = await identity.stub.Explain(
        pb.ExplainRequest(customer_id=alice.customer_id, other_customer_id=bob.customer_id),
        metadata=identity.metadata,
    )
    assert res.NON_MERGE_REASON_SHARED_DEVICE in why.explanation.non_merge_reasons


async def test_an_anonymous_device_merges_into_the_customer_who_signs_in_on_it(
    identity: Identity,
) -> None:
    known = await resolve(identity, email("carol@example.com"))
    guest = await resolve(identity, device("phone-c"))
    signed_in = await resolve(identity, email("carol@example.com"), device("phone-c"))
    assert signed_in.customer_id == known.customer_id
    assert list(signed_in.merged_customer_ids) == [guest.customer_id]
    assert (await get_customer(identity, guest.customer_id)).customer_id == known.customer_id


async def test_a_blocked_value_links_no_one(identity: Identity) -> None:
    blocked = await identity.stub.CreateBlockedValue(
        pb.CreateBlockedValueRequest(
            request_id="block-1",
            identifier=phone("+1 202 555 0199"),
            reason="store's front-desk phone",
            actor="ops",
        ),
        metadata=identity.metadata,
    )
    assert blocked.blocked_value.identifier.masked_value == "+12******199"
    one = await resolve(identity, email("b1@example.com"), phone("+12025550199"))
    two = await resolve(identity, email("b2@example.com"), phone("+12025550199"))
    assert one.customer_id != two.customer_id
    assert [r.reason for r in two.rejected_identifiers] == [
        R.IDENTIFIER_REJECTION_REASON_BLOCKED_VALUE
    ]


async def test_a_value_seen_with_too_many_others_is_detected_and_blocked(
    identity: Identity,
) -> None:
    rules = pb.UpdateMergeRulesRequest(
        request_id="rules-1",
        merge_rules=res.MergeRules(
            shared_value_detection=res.SharedValueDetection(enabled=True, max_distinct_customers=3)
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["shared_value_detection"]),
        actor="ops",
    )
    await identity.stub.UpdateMergeRules(rules, metadata=identity.metadata)
    shop_phone = phone("+12025550177")
    owners = [
        (await resolve(identity, email(f"shopper{i}@example.com"), shop_phone)).customer_id
        for i in range(5)
    ]
    assert len(set(owners[:3])) == 1  # within the threshold the value still links
    assert owners[3] != owners[0]
    assert owners[4] != owners[0]
    listed = await identity.stub.ListBlockedValues(
        pb.ListBlockedValuesRequest(source=res.BLOCK_SOURCE_DETECTED), metadata=identity.metadata
    )
    assert [b.identifier.masked_value for b in listed.blocked_values] == ["+12******177"]


async def test_a_type_limit_stops_further_identifiers_of_that_type(identity: Identity) -> None:
    await identity.stub.UpdateMergeRules(
        pb.UpdateMergeRulesRequest(
            request_id="rules-2",
            merge_rules=res.MergeRules(
                type_rules=[
                    res.IdentifierTypeRule(
                        type=T.IDENTIFIER_TYPE_EMAIL,
                        priority=90,
                        max_per_customer=2,
                        merges_known_customers=True,
                        limit_window=duration_pb2.Duration(seconds=86400),
                    )
                ]
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["type_rules"]),
            actor="ops",
        ),
        metadata=identity.metadata,
    )
    first = await resolve(identity, account("limit-acct"), email("l1@example.com"))
    await resolve(identity, account("limit-acct"), email("l2@example.com"))
    third = await resolve(identity, account("limit-acct"), email("l3@example.com"))
    assert third.customer_id == first.customer_id
    assert [r.reason for r in third.rejected_identifiers] == [
        R.IDENTIFIER_REJECTION_REASON_TYPE_LIMIT
    ]


async def test_a_replayed_request_id_returns_the_first_answer(identity: Identity) -> None:
    first = await resolve(identity, email("idem@example.com"), request_id="same-id")
    await resolve(identity, phone("+12025550133"))
    replay = await resolve(identity, email("idem@example.com"), request_id="same-id")
    assert replay == first
    assert len(await rows(identity, "SELECT id FROM customers")) == 2


async def test_a_request_sent_again_while_the_first_is_in_flight_is_answered_once(
    identity: Identity,
) -> None:
    # Retries that overlap the first attempt (a client timing out and trying again): one
    # customer, one creation event, the same answer to every attempt.
    attempts = await asyncio.gather(
        *(
            resolve(identity, email("overlap@example.com"), phone("+12025550144"), request_id="ov")
            for _ in range(8)
        )
    )
    assert len({a.customer_id for a in attempts}) == 1
    assert all(a == attempts[0] for a in attempts)
    assert len(await rows(identity, "SELECT id FROM customers")) == 1
    assert len(await rows(identity, "SELECT method FROM request_log WHERE request_id = 'ov'")) == 1
    created = await rows(
        identity, "SELECT seq FROM outbox WHERE event_type = 'identity.customer_created'"
    )
    assert len(created) == 1


async def test_bad_identifiers_are_invalid_argument_naming_each_and_nothing_is_written(
    identity: Identity,
) -> None:
    call = identity.stub.ResolveIdentity(
        pb.ResolveIdentityRequest(
            request_id="bad-1",
            identifiers=[email("ok@example.com"), email("not-an-email"), phone("12")],
            channel=WEB,
        ),
        metadata=identity.metadata,
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    fields = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields = [v.field for v in bad.field_violations]
    assert fields == ["identifiers[1].value", "identifiers[2].value"]
    for request in (
        pb.ResolveIdentityRequest(request_id="bad-2", identifiers=[], channel=WEB),
        pb.ResolveIdentityRequest(
            request_id="bad-3", identifiers=[idpb.Identifier(value="x")], channel=WEB
        ),
        pb.ResolveIdentityRequest(
            request_id="bad-4", identifiers=[email("a@b.co")] * 51, channel=WEB
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await identity.stub.ResolveIdentity(request, metadata=identity.metadata)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    card = await _code(
        identity, idpb.Identifier(type=T.IDENTIFIER_TYPE_PAYMENT_TOKEN, value="4111111111111111")
    )
    assert card == grpc.StatusCode.INVALID_ARGUMENT
    assert await rows(identity, "SELECT id FROM customers") == []
    assert await rows(identity, "SELECT seq FROM outbox") == []


async def _code(identity: Identity, ident: idpb.Identifier) -> grpc.StatusCode:
    try:
        await resolve(identity, ident)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_an_unknown_customer_is_not_found(identity: Identity) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get_customer(identity, "cus_nope")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
