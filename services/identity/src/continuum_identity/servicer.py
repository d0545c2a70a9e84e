"""The gRPC servicer of continuum.identity.v1.IdentityService: requests in, answers out.

Protovalidate has already checked every request's shape (the runtime interceptor); this
layer normalises identifiers (INVALID_ARGUMENT naming each bad one), calls the resolver,
the repairs and the queries, and maps their results to messages."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from continuum.identity.v1 import identity_resources_pb2 as res
from continuum.identity.v1 import identity_service_pb2 as pb
from continuum.identity.v1 import identity_service_pb2_grpc
from continuum_identity import queries, repair, store
from continuum_identity.identifiers import IdentifierHasher
from continuum_identity.matching import Traits
from continuum_identity.repair import accept_match, reject_match, root_of
from continuum_identity.resolver import Idem, ResolveInput, Resolver, now
from continuum_identity.rules import check_rules, default_rules
from continuum_runtime import idempotency
from continuum_runtime.db import Database
from continuum_runtime.errors import (
    Aborted,
    DomainError,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from continuum_runtime.paging import bad_page_token

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IdentityService"].full_name
RULE_PATHS = {"type_rules", "shared_value_detection", "match_thresholds"}


class IdentityServicer(identity_service_pb2_grpc.IdentityServiceServicer):
    """IdentityService on top of the runtime."""

    def __init__(self, db: Database, hasher: IdentifierHasher) -> None:
        self.db = db
        self.hasher = hasher
        self.resolver = Resolver(db)

    def _region(self, traits: res.MatchTraits) -> str | None:
        return traits.region_code or None

    def _input(self, item: Any, field: str, actor: str) -> ResolveInput:
        identifiers = self.hasher.normalize_all(
            item.identifiers, field, default_region=self._region(item.traits)
        )
        at = (
            item.observe_time.ToDatetime(tzinfo=now().tzinfo)
            if item.HasField("observe_time")
            else now()
        )
        return ResolveInput(
            identifiers=identifiers,
            channel=item.channel,
            at=min(at, now()),
            lookup_only=item.lookup_only,
            actor=actor,
            traits=traits_of(item.traits) if item.HasField("traits") else None,
        )

    async def ResolveIdentity(
        self, request: pb.ResolveIdentityRequest, context: Any
    ) -> pb.ResolveIdentityResponse:
        resolved = await self.resolver.resolve(
            self._input(request, "identifiers", request.actor),
            Idem("ResolveIdentity", request),
        )
        return pb.ResolveIdentityResponse(resolution=resolved)

    async def BatchResolveIdentity(
        self, request: pb.BatchResolveIdentityRequest, context: Any
    ) -> pb.BatchResolveIdentityResponse:
        results: list[pb.ResolveItemResult] = []
        for index, item in enumerate(request.items):
            try:
                resolved = await self.resolver.resolve(
                    self._input(item, f"items[{index}].identifiers", request.actor),
                    Idem("BatchResolveIdentity", item, f"{request.request_id}#{index}"),
                )
                results.append(pb.ResolveItemResult(index=index, resolution=resolved))
            except DomainError as error:
                results.append(pb.ResolveItemResult(index=index, error=error.to_status()))
        return pb.BatchResolveIdentityResponse(results=results)

    async def LinkIdentifiers(
        self, request: pb.LinkIdentifiersRequest, context: Any
    ) -> pb.LinkIdentifiersResponse:
        identifiers = self.hasher.normalize_all(request.identifiers)
        async with self.db.transaction() as session:
            target = (await root_of(session, request.customer_id)).id
        resolved = await self.resolver.resolve(
            ResolveInput(
                identifiers=identifiers,
                channel=request.channel,
                at=now(),
                actor=request.actor,
                target_customer_id=target,
                allow_merge=request.allow_merge,
                reason=request.reason,
            ),
            Idem("LinkIdentifiers", request),
        )
        return pb.LinkIdentifiersResponse(resolution=resolved)

    async def GetCustomer(
        self, request: pb.GetCustomerRequest, context: Any
    ) -> pb.GetCustomerResponse:
        async with self.db.transaction() as session:
            return pb.GetCustomerResponse(
                customer=await queries.get_customer(session, request.customer_id)
            )

    async def ListIdentifiers(
        self, request: pb.ListIdentifiersRequest, context: Any
    ) -> pb.ListIdentifiersResponse:
        async with self.db.transaction() as session:
            records, token = await queries.list_identifiers(
                session,
                request.customer_id,
                list(request.types),
                request.page_size,
                request.page_token,
            )
        return pb.ListIdentifiersResponse(identifiers=records, next_page_token=token)

    async def ListLinks(self, request: pb.ListLinksRequest, context: Any) -> pb.ListLinksResponse:
        async with self.db.transaction() as session:
            links, token = await queries.list_links(
                session,
                request.customer_id,
                request.include_removed,
                request.page_size,
                request.page_token,
            )
        return pb.ListLinksResponse(links=links, next_page_token=token)

    async def GetHistory(
        self, request: pb.GetHistoryRequest, context: Any
    ) -> pb.GetHistoryResponse:
        tz = now().tzinfo
        start = (
            request.time_range.start_time.ToDatetime(tzinfo=tz)
            if request.time_range.HasField("start_time")
            else None
        )
        end = (
            request.time_range.end_time.ToDatetime(tzinfo=tz)
            if request.time_range.HasField("end_time")
            else None
        )
        async with self.db.transaction() as session:
            entries, token = await queries.history(
                session, request.customer_id, start, end, request.page_size, request.page_token
            )
        return pb.GetHistoryResponse(entries=entries, next_page_token=token)

    async def Explain(self, request: pb.ExplainRequest, context: Any) -> pb.ExplainResponse:
        identifier = None
        if request.WhichOneof("other") == "identifier":
            (identifier,) = self.hasher.normalize_all([request.identifier], "identifier")
        async with self.db.transaction() as session:
            explanation = await queries.explain(
                session,
                request.customer_id,
                request.other_customer_id or None,
                identifier,
            )
        return pb.ExplainResponse(explanation=explanation)

    async def UnmergeCustomer(
        self, request: pb.UnmergeCustomerRequest, context: Any
    ) -> pb.UnmergeCustomerResponse:
        async def work(session: AsyncSession) -> pb.UnmergeCustomerResponse:
            customers, entry = await repair.unmerge(
                session, request.customer_id, request.merge_entry_id, request.actor, request.reason
            )
            return pb.UnmergeCustomerResponse(customers=customers, entry=queries.log_message(entry))

        return await idempotency.run_once(
            self.db, "UnmergeCustomer", request, pb.UnmergeCustomerResponse, work
        )

    async def SplitCustomer(
        self, request: pb.SplitCustomerRequest, context: Any
    ) -> pb.SplitCustomerResponse:
        async def work(session: AsyncSession) -> pb.SplitCustomerResponse:
            customers, entry = await repair.split(
                session, request.customer_id, list(request.link_ids), request.actor, request.reason
            )
            return pb.SplitCustomerResponse(customers=customers, entry=queries.log_message(entry))

        return await idempotency.run_once(
            self.db, "SplitCustomer", request, pb.SplitCustomerResponse, work
        )

    async def ForgetCustomer(
        self, request: pb.ForgetCustomerRequest, context: Any
    ) -> pb.ForgetCustomerResponse:
        async def work(session: AsyncSession) -> pb.ForgetCustomerResponse:
            forgotten = await repair.forget(
                session, request.customer_id, request.actor, request.reason
            )
            answer = pb.ForgetCustomerResponse(
                customer_id=forgotten.customer_id,
                alias_customer_ids=forgotten.aliases,
                removed_identifier_count=forgotten.identifiers,
                removed_link_count=forgotten.links,
            )
            answer.forget_time.FromDatetime(forgotten.at)
            return answer

        return await idempotency.run_once(
            self.db, "ForgetCustomer", request, pb.ForgetCustomerResponse, work
        )

    # --- merge rules and blocked values ---------------------------------------------------

    async def GetMergeRules(
        self, request: pb.GetMergeRulesRequest, context: Any
    ) -> pb.GetMergeRulesResponse:
        async with self.db.transaction() as session:
            rules = await store.load_rules(session) or default_rules()
        return pb.GetMergeRulesResponse(merge_rules=rules)

    async def UpdateMergeRules(
        self, request: pb.UpdateMergeRulesRequest, context: Any
    ) -> pb.UpdateMergeRulesResponse:
        bad = [p for p in request.update_mask.paths if p not in RULE_PATHS]
        if bad or not request.update_mask.paths:
            raise InvalidArgument(
                "update_mask may name type_rules, shared_value_detection, match_thresholds",
                violations=[FieldViolation("update_mask.paths", f"unknown path {p!r}") for p in bad]
                or [FieldViolation("update_mask.paths", "must name at least one path")],
            )

        async def work(session: AsyncSession) -> pb.UpdateMergeRulesResponse:
            await store.lock_rules(session)
            current = await store.load_rules(session) or default_rules()
            if request.expected_revision and request.expected_revision != current.revision:
                raise Aborted(
                    "merge rules changed since they were read",
                    reason="REVISION_MISMATCH",
                    metadata={"revision": str(current.revision)},
                )
            updated = res.MergeRules()
            updated.CopyFrom(current)
            given = request.merge_rules
            for path in request.update_mask.paths:
                if path == "type_rules":
                    del updated.type_rules[:]
                    updated.type_rules.extend(given.type_rules)
                elif path == "shared_value_detection":
                    updated.shared_value_detection.CopyFrom(given.shared_value_detection)
                else:
                    updated.match_thresholds.CopyFrom(given.match_thresholds)
            check_rules(updated)
            revision = current.revision + 1
            updated.ClearField("update_time")
            updated.ClearField("updated_by")
            updated.revision = revision
            await store.save_rules(session, updated, revision, request.actor)
            saved = await store.load_rules(session)
            assert saved is not None
            self.resolver.forget_cached_rules()
            return pb.UpdateMergeRulesResponse(merge_rules=saved)

        return await idempotency.run_once(
            self.db, "UpdateMergeRules", request, pb.UpdateMergeRulesResponse, work
        )

    async def ListBlockedValues(
        self, request: pb.ListBlockedValuesRequest, context: Any
    ) -> pb.ListBlockedValuesResponse:
        size = queries.page_size(request.page_size)
        if request.page_token and not request.page_token.startswith("blk_"):
            raise bad_page_token()
        async with self.db.transaction() as session:
            rows = await store.list_blocked(
                session,
                source=request.source,
                id_type=request.type,
                after=request.page_token,
                limit=size + 1,
            )
        token = rows[size - 1][0] if len(rows) > size else ""
        return pb.ListBlockedValuesResponse(
            blocked_values=[queries.blocked_message(r) for r in rows[:size]],
            next_page_token=token,
        )

    async def CreateBlockedValue(
        self, request: pb.CreateBlockedValueRequest, context: Any
    ) -> pb.CreateBlockedValueResponse:
        (ident,) = self.hasher.normalize_all([request.identifier], "identifier")

        async def work(session: AsyncSession) -> pb.CreateBlockedValueResponse:
            row = await store.add_blocked(
                session,
                id_type=ident.type,
                value_hash=ident.value_hash,
                masked=ident.masked,
                source=res.BlockSource.BLOCK_SOURCE_STATIC,
                reason=request.reason,
                actor=request.actor,
            )
            return pb.CreateBlockedValueResponse(blocked_value=queries.blocked_message(row))

        return await idempotency.run_once(
            self.db, "CreateBlockedValue", request, pb.CreateBlockedValueResponse, work
        )

    async def DeleteBlockedValue(
        self, request: pb.DeleteBlockedValueRequest, context: Any
    ) -> pb.DeleteBlockedValueResponse:
        async def work(session: AsyncSession) -> pb.DeleteBlockedValueResponse:
            if not await store.delete_blocked(session, request.blocked_value_id):
                raise NotFound("no such blocked value", reason="BLOCKED_VALUE_NOT_FOUND")
            return pb.DeleteBlockedValueResponse()

        return await idempotency.run_once(
            self.db, "DeleteBlockedValue", request, pb.DeleteBlockedValueResponse, work
        )

    # --- probable matches ------------------------------------------------------------

    async def ListProbableMatches(
        self, request: pb.ListProbableMatchesRequest, context: Any
    ) -> pb.ListProbableMatchesResponse:
        async with self.db.transaction() as session:
            found, token = await queries.probable_matches(
                session,
                request.state,
                request.customer_id,
                request.min_score,
                request.page_size,
                request.page_token,
            )
        return pb.ListProbableMatchesResponse(probable_matches=found, next_page_token=token)

    async def AcceptProbableMatch(
        self, request: pb.AcceptProbableMatchRequest, context: Any
    ) -> pb.AcceptProbableMatchResponse:
        async def work(session: AsyncSession) -> pb.AcceptProbableMatchResponse:
            match, customer = await accept_match(
                session, request.match_id, request.actor, request.reason
            )
            return pb.AcceptProbableMatchResponse(
                probable_match=queries.match_message(match), customer=customer
            )

        return await idempotency.run_once(
            self.db, "AcceptProbableMatch", request, pb.AcceptProbableMatchResponse, work
        )

    async def RejectProbableMatch(
        self, request: pb.RejectProbableMatchRequest, context: Any
    ) -> pb.RejectProbableMatchResponse:
        async def work(session: AsyncSession) -> pb.RejectProbableMatchResponse:
            match = await reject_match(session, request.match_id, request.actor, request.reason)
            return pb.RejectProbableMatchResponse(probable_match=queries.match_message(match))

        return await idempotency.run_once(
            self.db, "RejectProbableMatch", request, pb.RejectProbableMatchResponse, work
        )


def traits_of(message: res.MatchTraits) -> Traits:
    date = message.birth_date
    birth = f"{date.year:04d}{date.month:02d}{date.day:02d}" if date.year and date.month else ""
    return Traits.normalised(
        given_name=message.given_name,
        family_name=message.family_name,
        birth_date=birth,
        street=message.street_address,
        locality=message.locality,
        postal_code=message.postal_code,
    )
