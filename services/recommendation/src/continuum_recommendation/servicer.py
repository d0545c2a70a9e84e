"""The gRPC servicer of continuum.recommendation.v1.RecommendationService: validation,
mapping to the recommender and the model versions, and answers; no SQL here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from continuum.recommendation.v1 import recommendation_resources_pb2 as res
from continuum.recommendation.v1 import recommendation_service_pb2 as pb
from continuum.recommendation.v1 import recommendation_service_pb2_grpc as pb_grpc
from continuum_recommendation import builds, scoring, store
from continuum_recommendation.domain import subject_of
from continuum_recommendation.follower import Follower
from continuum_recommendation.inventory import InventoryDown
from continuum_recommendation.recommender import (
    DEFAULT_LIMIT,
    Context,
    Ranked,
    Recommender,
    new_recommendation_id,
    recommendation_time,
    timestamp,
)
from continuum_recommendation.scoring import Candidate
from continuum_runtime.db import Database
from continuum_runtime.errors import NotFound
from continuum_runtime.idempotency import run_once
from continuum_runtime.paging import bad_page_token, decode_page_token, encode_page_token

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RecommendationService"].full_name

ACTION_BASE: dict[int, float] = {
    res.ACTION_KIND_REMIND_CART_ITEM: 0.9,
    res.ACTION_KIND_REPLENISH: 0.8,
    res.ACTION_KIND_REMIND_WISHLIST_ITEM: 0.7,
    res.ACTION_KIND_OFFER_COMPLEMENT: 0.6,
}


def _limit(value: int, default: int = DEFAULT_LIMIT) -> int:
    return value or default


def _read_token(token: str) -> int:
    values = decode_page_token(token, 1)
    if values is None:
        return 2**62
    if not isinstance(values[0], int):
        raise bad_page_token()
    return values[0]


def _kind_name(kind: int) -> str:
    return res.ActionKind.Name(kind).removeprefix("ACTION_KIND_").lower()  # type: ignore[arg-type]


class RecommendationServicer(pb_grpc.RecommendationServiceServicer):
    """RecommendationService on top of the runtime."""

    def __init__(
        self,
        db: Database,
        recommender: Recommender,
        follower: Follower,
        attribution_window_s: float,
    ) -> None:
        self.db = db
        self.rec = recommender
        self.model = recommender.model
        self.follower = follower
        self.attribution_window_s = attribution_window_s
        self._builds: dict[str, asyncio.Task[Any]] = {}

    # --- answers -----------------------------------------------------------------------

    async def GetRecommendations(
        self, request: pb.GetRecommendationsRequest, context: Any
    ) -> pb.GetRecommendationsResponse:
        ctx = Context.of(request.context if request.HasField("context") else None)
        limit = _limit(request.limit)
        customer_id = request.customer_id
        subject = subject_of(customer_id, request.device_id)
        history = self.rec.history(subject)
        generation = history.generation if history is not None else 0
        if customer_id:
            key: tuple[Any, ...] = ("rec", subject, ctx.key(), tuple(request.seed_skus), limit)
        else:  # cold start depends on the channel's popularity
            key = ("rec", subject, ctx.key(), ctx.channel, tuple(request.seed_skus), limit)
        cached = self.rec.cached(key, generation)
        if cached is None:
            seeds = await self.rec.require_items(request.seed_skus, "seed_skus")
            if ctx.store_id:
                await self.rec.require_store(ctx.store_id, "context.store_id")
            candidates, strategy = self.rec.for_subject(
                subject, customer_id, ctx, seeds, time.time()
            )
            cart = set(history.in_cart) if history is not None else set()
            ranked = await self.rec.finish(
                candidates, ctx, limit, exclude=seeds, exclude_products=True, cart=cart | set(seeds)
            )
            answer = pb.GetRecommendationsResponse(
                items=ranked.items,
                strategy=strategy,  # type: ignore[arg-type]
                model_version=self.model.version_id,
                customer_id=customer_id,
                missing_parts=ranked.missing,
            )
            if not ranked.missing:
                # kept as it is: a later answer copies it and sets its own id and time
                self.rec.remember(key, generation, answer)
        else:
            answer = pb.GetRecommendationsResponse()
            answer.CopyFrom(cached)
        answer.recommendation_id = new_recommendation_id()
        answer.serve_time.FromNanoseconds(time.time_ns())
        return answer

    async def GetComplements(
        self, request: pb.GetComplementsRequest, context: Any
    ) -> pb.GetComplementsResponse:
        ctx = Context.of(request.context if request.HasField("context") else None)
        seeds = await self.rec.require_items(request.skus, "skus")
        if ctx.store_id:
            await self.rec.require_store(ctx.store_id, "context.store_id")
        customer_id = request.customer_id
        ranked, strategy = await self._complements(seeds, customer_id, ctx, _limit(request.limit))
        return pb.GetComplementsResponse(
            recommendation_id=new_recommendation_id(),
            items=ranked.items,
            strategy=strategy,
            model_version=self.model.version_id,
            customer_id=customer_id,
            missing_parts=ranked.missing,
            serve_time=timestamp(time.time()),
        )

    async def _complements(
        self, seeds: list[int], customer_id: str, ctx: Context, limit: int
    ) -> tuple[Ranked, res.Strategy.ValueType]:
        """What goes with ``seeds`` (items bought or carted with them), boosted by the
        customer's traits, ranked and filtered for ``ctx``; and the strategy that says so."""
        out: dict[int, Candidate] = {}
        scoring.complements(self.model, dict.fromkeys(seeds, 1.0), out, 1.0)
        traits = self.model.traits.get(customer_id) if customer_id else None
        scoring.traits_boost(self.model, traits, out, self.model.params.w_traits)
        strategy = res.STRATEGY_PERSONALISED if traits is not None else res.STRATEGY_ITEM_BASED
        ranked = await self.rec.finish(
            out, ctx, limit, exclude=seeds, exclude_products=True, cart=set(seeds)
        )
        return ranked, strategy

    async def GetSimilar(
        self, request: pb.GetSimilarRequest, context: Any
    ) -> pb.GetSimilarResponse:
        ctx = Context.of(request.context if request.HasField("context") else None)
        (item,) = await self.rec.require_items([request.sku], "sku", single=True)
        if ctx.store_id:
            await self.rec.require_store(ctx.store_id, "context.store_id")
        info = self.model.catalogue.get(request.sku)
        if info is not None and info.category:
            try:
                for peer in await self.rec.inventory.category_items(info.category):
                    if peer.sku not in self.model.catalogue:
                        self.model.put_item(peer)
            except InventoryDown:
                pass  # co-viewed items and known peers still answer
        out = scoring.similar(self.model, item)
        customer_id = request.customer_id
        traits = self.model.traits.get(customer_id) if customer_id else None
        scoring.traits_boost(self.model, traits, out, self.model.params.w_traits)
        ranked = await self.rec.finish(
            out, ctx, _limit(request.limit), exclude=[item], exclude_products=True
        )
        return pb.GetSimilarResponse(
            recommendation_id=new_recommendation_id(),
            items=ranked.items,
            strategy=res.STRATEGY_PERSONALISED if traits is not None else res.STRATEGY_ITEM_BASED,
            model_version=self.model.version_id,
            customer_id=customer_id,
            missing_parts=ranked.missing,
            serve_time=timestamp(time.time()),
        )

    async def GetNextBestAction(
        self, request: pb.GetNextBestActionRequest, context: Any
    ) -> pb.GetNextBestActionResponse:
        await self.rec.require_store(request.store_id, "store_id")
        cart_hint = await self.rec.require_items(request.cart_skus, "cart_skus")
        wish_hint = await self.rec.require_items(request.wishlist_skus, "wishlist_skus")
        model = self.model
        history = self.rec.history(f"c:{request.customer_id}")
        now = time.time()
        cart = list(dict.fromkeys(cart_hint or (list(history.in_cart) if history else [])))
        wishlist = list(dict.fromkeys(wish_hint or (list(history.wishlist) if history else [])))
        ctx = Context(
            store_id=request.store_id,
            channel=request.channel,
            filter=res.AVAILABILITY_FILTER_IN_STORE,
        )
        per_action = _limit(request.max_items_per_action, 3)
        groups: list[tuple[int, dict[int, Candidate], str, str]] = []
        if cart:
            groups.append(
                (
                    res.ACTION_KIND_REMIND_CART_ITEM,
                    {
                        i: Candidate(i, 1.0 - n * 0.01, res.REASON_KIND_IN_YOUR_CART)
                        for n, i in enumerate(cart)
                    },
                    "Left in the cart: {names}",
                    "Items the customer left in the cart are available here.",
                )
            )
        if wishlist:
            groups.append(
                (
                    res.ACTION_KIND_REMIND_WISHLIST_ITEM,
                    {
                        i: Candidate(i, 1.0 - n * 0.01, res.REASON_KIND_ON_YOUR_WISHLIST)
                        for n, i in enumerate(wishlist)
                    },
                    "On the wishlist: {names}",
                    "Wishlisted items are in stock in this store.",
                )
            )
        if history is not None and history.baskets:
            # items bought on a cycle, ranked by how regular and due they are
            bought: dict[int, Candidate] = {}
            scoring.repeat_purchase(model, history, now, bought)
            due = {i: c for i, c in bought.items() if c.value}
            if due:
                groups.append(
                    (
                        res.ACTION_KIND_REPLENISH,
                        due,
                        "Due to buy again: {names}",
                        "The customer buys these regularly and is due to again.",
                    )
                )
        anchors = cart + [i for b in (history.baskets[-2:] if history else []) for i in b.items]
        if anchors:
            out: dict[int, Candidate] = {}
            scoring.complements(model, dict.fromkeys(anchors, 1.0), out, 1.0)
            scoring.traits_boost(
                model, model.traits.get(request.customer_id), out, model.params.w_traits
            )
            if out:
                groups.append(
                    (
                        res.ACTION_KIND_OFFER_COMPLEMENT,
                        out,
                        "Goes with their items: {names}",
                        "Often bought with what the customer has or wants; available here.",
                    )
                )
        actions: list[res.NextBestAction] = []
        missing = []
        for kind, candidates, title, explanation in groups:
            ranked = await self.rec.finish(
                candidates,
                ctx,
                per_action,
                exclude=anchors if kind == res.ACTION_KIND_OFFER_COMPLEMENT else [],
                exclude_products=kind == res.ACTION_KIND_OFFER_COMPLEMENT,
                cart=set(cart),
            )
            missing += ranked.missing
            if not ranked.items:
                continue
            score = ACTION_BASE[kind]
            names = ", ".join(i.name or i.sku for i in ranked.items)
            actions.append(
                res.NextBestAction(
                    action_id=f"{_kind_name(kind)}-{ranked.items[0].sku}",
                    kind=kind,  # type: ignore[arg-type]
                    title=title.format(names=names)[:200],
                    explanation=explanation,
                    items=ranked.items,
                    score=score,
                    priority=res.ACTION_PRIORITY_HIGH
                    if score >= 0.8
                    else res.ACTION_PRIORITY_MEDIUM
                    if score >= 0.65
                    else res.ACTION_PRIORITY_LOW,
                    reasons=[ranked.items[0].reason],
                )
            )
        actions.sort(key=lambda a: (-a.score, a.action_id))
        complements: Sequence[res.RecommendedItem] = ()
        seeds = list(dict.fromkeys(cart_hint + wish_hint))
        if request.complements_limit and seeds:
            # As GetComplements for the given cart and wishlist, in this store.
            ranked_complements, _ = await self._complements(
                seeds,
                request.customer_id,
                replace(
                    ctx,
                    placement="next_best_action",
                    exclude=frozenset(model.skus[i] for i in seeds),
                ),
                request.complements_limit,
            )
            complements = ranked_complements.items
            missing += ranked_complements.missing
        return pb.GetNextBestActionResponse(
            recommendation_id=new_recommendation_id(),
            actions=actions[: _limit(request.max_actions, 3)],
            strategy=res.STRATEGY_PERSONALISED if history is not None else res.STRATEGY_COLD_START,
            model_version=model.version_id,
            customer_id=request.customer_id,
            missing_parts=missing[:1],
            serve_time=timestamp(now),
            complements=complements,
        )

    # --- feedback ----------------------------------------------------------------------

    async def RecordFeedback(
        self, request: pb.RecordFeedbackRequest, context: Any
    ) -> pb.RecordFeedbackResponse:
        async def work(session: AsyncSession) -> pb.RecordFeedbackResponse:
            now = time.time()
            rows = []
            attributed = 0
            for item in request.feedback:
                served = recommendation_time(item.recommendation_id)
                ok = served is not None and 0 <= now - served <= self.attribution_window_s + 60
                attributed += ok
                rows.append(
                    (
                        item.recommendation_id,
                        int(item.kind),
                        item.sku,
                        ok,
                        item.occur_time.ToDatetime(tzinfo=UTC),
                        item.SerializeToString(),
                    )
                )
            await store.add_feedback(session, rows)
            return pb.RecordFeedbackResponse(
                attributed_count=attributed, unattributed_count=len(rows) - attributed
            )

        return await run_once(self.db, "RecordFeedback", request, pb.RecordFeedbackResponse, work)

    # --- models ------------------------------------------------------------------------

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: Any
    ) -> pb.GetModelInfoResponse:
        since = datetime.now(UTC) - timedelta(days=1)
        async with self.db.reader() as conn:
            active_id = await store.active_version_id(conn)
            active = await store.get_version(conn, active_id) if active_id else None
            building = await store.versions_in_states(conn, builds.IN_PROGRESS)
            counts = await store.feedback_counts(conn, since)
        answer = pb.GetModelInfoResponse(
            pending_event_count=max(0, self.follower.stored_seq - self.follower.applied_seq)
        )
        if active is not None:
            if active.version_id == self.model.version_id:
                active.incremental_update_count = self.model.incremental_updates
                if self.model.last_event_at:
                    active.last_update_time.CopyFrom(timestamp(self.model.last_event_at))
            answer.active_version.CopyFrom(active)
        if building:
            answer.building_version.CopyFrom(building[0])
        if self.model.last_event_at:
            answer.last_event_time.CopyFrom(timestamp(self.model.last_event_at))
        metrics = answer.recent_metrics
        metrics.window.start_time.FromDatetime(since)
        metrics.window.end_time.FromDatetime(datetime.now(UTC))
        metrics.impression_count = counts.get(res.FEEDBACK_KIND_IMPRESSION, 0)
        metrics.click_count = counts.get(res.FEEDBACK_KIND_CLICK, 0)
        metrics.add_to_cart_count = counts.get(res.FEEDBACK_KIND_ADD_TO_CART, 0)
        metrics.purchase_count = counts.get(res.FEEDBACK_KIND_PURCHASE, 0)
        if metrics.impression_count:
            metrics.click_through_rate = metrics.click_count / metrics.impression_count
            metrics.conversion_rate = metrics.purchase_count / metrics.impression_count
        return answer

    async def ListModelVersions(
        self, request: pb.ListModelVersionsRequest, context: Any
    ) -> pb.ListModelVersionsResponse:
        size = request.page_size or 50
        before = _read_token(request.page_token)
        window = request.create_time_range
        start = window.start_time.ToDatetime(tzinfo=UTC) if window.HasField("start_time") else None
        end = window.end_time.ToDatetime(tzinfo=UTC) if window.HasField("end_time") else None
        async with self.db.reader() as conn:
            rows = await store.list_versions(
                conn, [int(s) for s in request.states], start, end, before, size + 1
            )
        token = encode_page_token([rows[size - 1][0]]) if len(rows) > size else ""
        return pb.ListModelVersionsResponse(
            model_versions=[v for _, v in rows[:size]], next_page_token=token
        )

    async def GetModelVersion(
        self, request: pb.GetModelVersionRequest, context: Any
    ) -> pb.GetModelVersionResponse:
        async with self.db.reader() as conn:
            version = await store.get_version(conn, request.version_id)
        if version is None:
            raise NotFound(
                f"no model version {request.version_id}",
                reason="MODEL_VERSION_NOT_FOUND",
                metadata={"version_id": request.version_id},
            )
        return pb.GetModelVersionResponse(model_version=version)

    async def ActivateModelVersion(
        self, request: pb.ActivateModelVersionRequest, context: Any
    ) -> pb.ActivateModelVersionResponse:
        async def work(session: AsyncSession) -> pb.ActivateModelVersionResponse:
            version, previous = await builds.activate(
                session, request.version_id, request.expected_active_version_id, request.actor
            )
            return pb.ActivateModelVersionResponse(
                model_version=version, previous_version_id=previous
            )

        answer = await run_once(
            self.db, "ActivateModelVersion", request, pb.ActivateModelVersionResponse, work
        )
        await self.follower.step()  # this replica serves the new version before answering
        return answer

    async def RebuildModel(
        self, request: pb.RebuildModelRequest, context: Any
    ) -> pb.RebuildModelResponse:
        async def work(session: AsyncSession) -> pb.RebuildModelResponse:
            version = await builds.queue_version(
                session,
                parameters=dict(request.parameters),
                window=request.training_window if request.HasField("training_window") else None,
                description=request.description,
                actor=request.actor,
                activate_when_ready=request.activate_when_ready,
            )
            return pb.RebuildModelResponse(model_version=version)

        answer = await run_once(self.db, "RebuildModel", request, pb.RebuildModelResponse, work)
        version_id = answer.model_version.version_id
        async with self.db.reader() as conn:
            current = await store.get_version(conn, version_id)
        if (
            current is not None
            and current.state == res.MODEL_VERSION_STATE_QUEUED
            and version_id not in self._builds
        ):
            task = asyncio.create_task(self._build(version_id))
            self._builds[version_id] = task
        return answer

    async def _build(self, version_id: str) -> None:
        try:
            version = await builds.run_build(self.db, version_id)
            if version.state == res.MODEL_VERSION_STATE_ACTIVE:
                await self.follower.step()
        finally:
            self._builds.pop(version_id, None)
