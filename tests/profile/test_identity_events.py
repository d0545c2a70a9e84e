"""Following identity: anonymous devices, sign-in, merge, unmerge, forget, outage."""

from __future__ import annotations

from continuum.common.v1 import identifier_pb2 as idpb
from continuum.identity.v1 import identity_resources_pb2 as ires
from continuum.identity.v1 import identity_service_pb2 as ipb
from continuum.profile.v1 import profile_service_pb2 as pb
from continuum_runtime.testing import eventually
from tests.profile.conftest import Stack
from tests.profile.factory import (
    WEB,
    account,
    carted,
    derived,
    device,
    email,
    ingest,
    product,
    summary,
    timeline,
    viewed,
)

S = pb.EventResultStatus


def phone(value: str) -> idpb.Identifier:
    return idpb.Identifier(type=idpb.IDENTIFIER_TYPE_PHONE, value=value)


async def resolve(stack: Stack, ids: list[idpb.Identifier]) -> str:
    assert stack.identity is not None
    answer = await stack.identity.stub.ResolveIdentity(
        ipb.ResolveIdentityRequest(
            request_id=f"r-{id(ids)}-{len(ids)}", identifiers=ids, channel=WEB
        ),
        metadata=stack.metadata,
    )
    return str(answer.resolution.customer_id)


async def test_anonymous_device_events_follow_the_device_when_the_shopper_signs_in(
    stack: Stack,
) -> None:
    known = await ingest(
        stack, [viewed([account("acct-eve"), email("eve@example.com")], product("K"))]
    )
    eve = known.results[0].customer_id
    dev = [device("cookie-eve")]
    shoes = product("RUN-9", size="9", colour="black", name="Runner")
    anon = await ingest(stack, [viewed(dev, shoes), viewed(dev, shoes), carted(dev, shoes)])
    assert all(r.status == S.EVENT_RESULT_STATUS_ACCEPTED for r in anon.results)
    assert all(r.customer_id == "" for r in anon.results)  # anonymous
    assert len(await timeline(stack, device_id="cookie-eve")) == 3

    await resolve(stack, [account("acct-eve"), device("cookie-eve")])  # the sign-in

    async def moved() -> bool:
        events = await timeline(stack, customer_id=eve)
        return len(events) == 4

    await eventually(moved, timeout_s=15)
    p = await derived(stack, eve, 4)
    assert [s.product.sku for s in p.intent_signals.left_in_cart] == ["RUN-9"]
    assert [s.product.sku for s in p.intent_signals.viewed_repeatedly] == ["RUN-9"]
    # later device-only events resolve to the signed-in customer
    later = await ingest(stack, [viewed(dev, product("RUN-10"))])
    assert later.results[0].customer_id == eve


async def test_a_merge_rekeys_the_profile_and_an_unmerge_splits_it_back(stack: Stack) -> None:
    assert stack.identity is not None
    a = await ingest(stack, [viewed([email("fay@example.com")], product("A1"))] * 1)
    b = await ingest(
        stack,
        [
            viewed([phone("+442079460000")], product("B1")),
            viewed([phone("+442079460000")], product("B2")),
        ],
    )
    fay, other = a.results[0].customer_id, b.results[0].customer_id
    assert fay != other
    await derived(stack, other, 2)

    merged_into = await resolve(stack, [email("fay@example.com"), phone("+442079460000")])
    loser = other if merged_into == fay else fay

    async def rekeyed() -> bool:
        return len(await timeline(stack, customer_id=merged_into)) == 3

    await eventually(rekeyed, timeout_s=15)
    # the alias answers with the survivor's profile
    assert (await summary(stack, loser)).customer_id == merged_into
    await derived(stack, merged_into, 3)

    history = await stack.identity.stub.GetHistory(
        ipb.GetHistoryRequest(customer_id=merged_into), metadata=stack.metadata
    )
    entry = next(e for e in history.entries if e.action == ires.MERGE_LOG_ACTION_MERGED)
    await stack.identity.stub.UnmergeCustomer(
        ipb.UnmergeCustomerRequest(
            request_id="undo",
            customer_id=merged_into,
            merge_entry_id=entry.entry_id,
            actor="tests",
            reason="wrong merge",
        ),
        metadata=stack.metadata,
    )

    async def split() -> bool:
        mine = await timeline(stack, customer_id=merged_into)
        theirs = await timeline(stack, customer_id=loser)
        return len(mine) + len(theirs) == 3 and len(theirs) > 0 and len(mine) > 0

    await eventually(split, timeout_s=15)
    skus_other = {e.product_viewed.product.sku for e in await timeline(stack, customer_id=other)}
    assert skus_other == {"B1", "B2"}
    p = await derived(stack, other, 2)
    assert sum(x.event_count for x in p.channel_activity) == 2


async def test_identity_forgetting_a_customer_erases_events_and_profile(stack: Stack) -> None:
    assert stack.identity is not None
    answer = await ingest(stack, [viewed([email("gus@example.com")], product("G1"))])
    gus = answer.results[0].customer_id
    await derived(stack, gus, 1)
    await stack.identity.stub.ForgetCustomer(
        ipb.ForgetCustomerRequest(request_id="f", customer_id=gus, actor="dpo"),
        metadata=stack.metadata,
    )

    async def gone() -> bool:
        return not await timeline(stack, customer_id=gus)

    await eventually(gone, timeout_s=15)
    import grpc
    import pytest

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await summary(stack, gus)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_identity_down_events_are_kept_unresolved_and_resolved_when_it_returns(
    stack_without_identity: Stack,
) -> None:
    stack = stack_without_identity
    ids = [email("hal@example.com")]
    first = viewed(ids, product("H1"))
    answer = await ingest(stack, [first, carted(ids, product("H2"))])
    assert [r.status for r in answer.results] == [S.EVENT_RESULT_STATUS_ACCEPTED] * 2
    assert all(r.customer_id == "" for r in answer.results)
    dup = await ingest(stack, [first])  # a resend while identity is down
    assert dup.results[0].status == S.EVENT_RESULT_STATUS_DUPLICATE

    identity = await stack.start_identity()
    stack.identity = identity
    customer = await resolve(stack, ids)

    async def resolved() -> bool:
        return len(await timeline(stack, customer_id=customer)) == 2

    await eventually(resolved, timeout_s=20)
    p = await derived(stack, customer, 2)
    assert [s.product.sku for s in p.intent_signals.left_in_cart] == ["H2"]
