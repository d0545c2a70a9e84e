"""The gRPC servicer of continuum.inventory.v1.InventoryService: requests in, answers out.

Protovalidate has already checked every request's shape (the runtime interceptor). Every
mutation runs once per request_id (``idempotency.run_once``: a replay returns the first
answer; ReserveStock calls that arrive together share one transaction, see
``operations.reserve_many``); reads use an autocommit connection (one statement, no
transaction round trips) where one statement answers them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.inventory.v1 import inventory_service_pb2 as pb
from continuum.inventory.v1 import inventory_service_pb2_grpc
from continuum_inventory import catalog, mapping, operations, queries, store
from continuum_inventory.domain import Threshold
from continuum_inventory.settings import InventorySettings
from continuum_inventory.store import Defaults
from continuum_runtime import idempotency
from continuum_runtime.batching import Batcher
from continuum_runtime.db import Database
from continuum_runtime.errors import DomainError, NotFound

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InventoryService"].full_name
M = TypeVar("M", bound=Message)


def defaults_of(settings: InventorySettings) -> Defaults:
    return Defaults(
        pickup_buffer=settings.default_pickup_buffer,
        threshold=Threshold(
            sku="",
            location_id="",
            low=settings.default_low_threshold,
            recover=settings.default_recover_threshold,
            back_in_stock=settings.default_back_in_stock_quantity,
            cooldown_s=0.0,
        ),
    )


def _time(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    value: datetime = getattr(message, field).ToDatetime(tzinfo=UTC)
    return value


class InventoryServicer(inventory_service_pb2_grpc.InventoryServiceServicer):
    """InventoryService on top of the runtime."""

    def __init__(self, db: Database, settings: InventorySettings) -> None:
        self.db = db
        self.settings = settings
        self.defaults = defaults_of(settings)
        # Concurrent ReserveStock calls share transactions (see operations.reserve_many),
        # one worker per shard of SKUs: the calls for a hot SKU go to one worker and share
        # its batches; a batch waiting on a lock holds up only its own shard.
        self.reservations: Batcher[operations.ReserveCall, pb.ReserveStockResponse] = Batcher(
            self._reserve_batch,
            name="ReserveStock",
            workers=settings.reserve_workers,
            max_batch=settings.reserve_batch,
            shard=lambda call: min(line.sku for line in call.request.lines),
        )

    async def _once(
        self,
        method: str,
        request: Message,
        response_type: type[M],
        work: Callable[[AsyncSession], Awaitable[M]],
    ) -> M:
        return await idempotency.run_once(self.db, method, request, response_type, work)

    # --- item master ---------------------------------------------------------------------

    async def CreateItem(
        self, request: pb.CreateItemRequest, context: Any
    ) -> pb.CreateItemResponse:
        async def work(session: AsyncSession) -> pb.CreateItemResponse:
            return pb.CreateItemResponse(item=await catalog.create_item(session, request.item))

        return await self._once("CreateItem", request, pb.CreateItemResponse, work)

    async def UpdateItem(
        self, request: pb.UpdateItemRequest, context: Any
    ) -> pb.UpdateItemResponse:
        async def work(session: AsyncSession) -> pb.UpdateItemResponse:
            item = await catalog.update_item(
                session, request.item, list(request.update_mask.paths), request.allow_missing
            )
            return pb.UpdateItemResponse(item=item)

        return await self._once("UpdateItem", request, pb.UpdateItemResponse, work)

    async def GetItem(self, request: pb.GetItemRequest, context: Any) -> pb.GetItemResponse:
        async with self.db.reader() as conn:
            found = await queries.require_items(conn, [request.sku])
        return pb.GetItemResponse(item=mapping.item_message(found[request.sku]))

    async def ListItems(self, request: pb.ListItemsRequest, context: Any) -> pb.ListItemsResponse:
        after = str(mapping.decode_token(request.page_token, ""))
        size = mapping.page_size(request.page_size)
        async with self.db.transaction() as session:
            rows = await store.list_items(
                session,
                product_id=request.product_id,
                category=request.category,
                brand=request.brand,
                states=list(request.states),
                updated_from=_time(request.update_time_range, "start_time"),
                updated_to=_time(request.update_time_range, "end_time"),
                after=after,
                limit=size + 1,
            )
        token = mapping.encode_token(rows[size - 1].sku) if len(rows) > size else ""
        return pb.ListItemsResponse(
            items=[mapping.item_message(r) for r in rows[:size]], next_page_token=token
        )

    async def BatchGetItems(
        self, request: pb.BatchGetItemsRequest, context: Any
    ) -> pb.BatchGetItemsResponse:
        skus = list(request.skus)
        async with self.db.reader() as conn:
            if not request.allow_missing:
                found = await queries.require_items(conn, skus)
            else:
                found = await store.items_by_sku(conn, skus)
        return pb.BatchGetItemsResponse(
            items=[mapping.item_message(found[s]) for s in skus if s in found],
            missing_skus=[s for s in skus if s not in found],
        )

    # --- locations -----------------------------------------------------------------------

    async def CreateLocation(
        self, request: pb.CreateLocationRequest, context: Any
    ) -> pb.CreateLocationResponse:
        async def work(session: AsyncSession) -> pb.CreateLocationResponse:
            return pb.CreateLocationResponse(
                location=await catalog.create_location(session, request.location)
            )

        return await self._once("CreateLocation", request, pb.CreateLocationResponse, work)

    async def UpdateLocation(
        self, request: pb.UpdateLocationRequest, context: Any
    ) -> pb.UpdateLocationResponse:
        async def work(session: AsyncSession) -> pb.UpdateLocationResponse:
            location = await catalog.update_location(
                session, request.location, list(request.update_mask.paths)
            )
            return pb.UpdateLocationResponse(location=location)

        return await self._once("UpdateLocation", request, pb.UpdateLocationResponse, work)

    async def GetLocation(
        self, request: pb.GetLocationRequest, context: Any
    ) -> pb.GetLocationResponse:
        async with self.db.reader() as conn:
            row = await queries.require_location(conn, request.location_id)
        return pb.GetLocationResponse(location=mapping.location_message(row))

    async def ListLocations(
        self, request: pb.ListLocationsRequest, context: Any
    ) -> pb.ListLocationsResponse:
        after = str(mapping.decode_token(request.page_token, ""))
        size = mapping.page_size(request.page_size)
        async with self.db.transaction() as session:
            rows = await store.list_locations(
                session,
                types=list(request.types),
                states=list(request.states),
                pickup_only=request.pickup_capable_only,
                ship_from_only=request.ship_from_capable_only,
                after=after,
                limit=size + 1,
            )
        token = mapping.encode_token(rows[size - 1].location_id) if len(rows) > size else ""
        return pb.ListLocationsResponse(
            locations=[mapping.location_message(r) for r in rows[:size]], next_page_token=token
        )

    # --- stock levels and the ledger -----------------------------------------------------

    async def GetStockLevel(
        self, request: pb.GetStockLevelRequest, context: Any
    ) -> pb.GetStockLevelResponse:
        async with self.db.reader() as conn:
            (level,) = await queries.stock_levels(
                conn, [(request.sku, request.location_id)], self.defaults
            )
        return pb.GetStockLevelResponse(stock_level=level)

    async def BatchGetStockLevels(
        self, request: pb.BatchGetStockLevelsRequest, context: Any
    ) -> pb.BatchGetStockLevelsResponse:
        keys = [(k.sku, k.location_id) for k in request.keys]
        async with self.db.transaction() as session:
            levels = await queries.stock_levels(session, keys, self.defaults)
        return pb.BatchGetStockLevelsResponse(stock_levels=levels)

    async def ListStockLevels(
        self, request: pb.ListStockLevelsRequest, context: Any
    ) -> pb.ListStockLevelsResponse:
        async with self.db.transaction() as session:
            return await queries.list_levels(session, request, self.defaults)

    async def AdjustStock(
        self, request: pb.AdjustStockRequest, context: Any
    ) -> pb.AdjustStockResponse:
        async def work(session: AsyncSession) -> pb.AdjustStockResponse:
            return await operations.adjust(session, request, self.defaults)

        return await self._once("AdjustStock", request, pb.AdjustStockResponse, work)

    async def ListLedgerEntries(
        self, request: pb.ListLedgerEntriesRequest, context: Any
    ) -> pb.ListLedgerEntriesResponse:
        after = int(mapping.decode_token(request.page_token, 0))
        size = mapping.page_size(request.page_size)
        async with self.db.transaction() as session:
            rows = await store.list_ledger(
                session,
                sku=request.sku,
                location_id=request.location_id,
                types=list(request.types),
                reservation_id=request.reservation_id,
                start=_time(request.time_range, "start_time"),
                end=_time(request.time_range, "end_time"),
                after=after,
                limit=size + 1,
            )
        token = mapping.encode_token(int(rows[size - 1].entry_id)) if len(rows) > size else ""
        return pb.ListLedgerEntriesResponse(
            ledger_entries=[mapping.ledger_message(r) for r in rows[:size]],
            next_page_token=token,
        )

    async def ReconcileStock(
        self, request: pb.ReconcileStockRequest, context: Any
    ) -> pb.ReconcileStockResponse:
        async with self.db.transaction() as session:
            checked, count, rows, at = await store.reconcile(
                session, list(request.skus), list(request.location_ids)
            )
        return pb.ReconcileStockResponse(
            checked_level_count=checked,
            discrepancy_count=count,
            discrepancies=[_discrepancy(r) for r in rows],
            check_time=mapping.ts(at),
        )

    # --- reservations --------------------------------------------------------------------

    def _ttl_s(self, request: pb.ReserveStockRequest) -> float:
        if request.HasField("ttl"):
            return request.ttl.ToNanoseconds() / 1e9
        if request.kind == operations.CLICK_AND_COLLECT:
            return self.settings.click_and_collect_ttl_s
        return self.settings.checkout_ttl_s

    async def ReserveStock(
        self, request: pb.ReserveStockRequest, context: Any
    ) -> pb.ReserveStockResponse:
        return await self.reservations.submit(operations.ReserveCall(request, self._ttl_s(request)))

    async def _reserve_batch(
        self, calls: Sequence[operations.ReserveCall]
    ) -> list[pb.ReserveStockResponse | DomainError]:
        async with self.db.driven_transaction() as tx:
            return await operations.reserve_many(tx, calls, self.defaults)

    async def CommitReservation(
        self, request: pb.CommitReservationRequest, context: Any
    ) -> pb.CommitReservationResponse:
        async def work(session: AsyncSession) -> pb.CommitReservationResponse:
            return pb.CommitReservationResponse(
                reservation=await operations.commit(session, request, self.defaults)
            )

        return await self._once("CommitReservation", request, pb.CommitReservationResponse, work)

    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: Any
    ) -> pb.ReleaseReservationResponse:
        async def work(session: AsyncSession) -> pb.ReleaseReservationResponse:
            return pb.ReleaseReservationResponse(
                reservation=await operations.release(session, request, self.defaults)
            )

        return await self._once("ReleaseReservation", request, pb.ReleaseReservationResponse, work)

    async def GetReservation(
        self, request: pb.GetReservationRequest, context: Any
    ) -> pb.GetReservationResponse:
        async with self.db.transaction() as session:
            row = await store.get_reservation(session, request.reservation_id)
        if row is None:
            raise NotFound(
                f"unknown reservation: {request.reservation_id}",
                reason="RESERVATION_NOT_FOUND",
                metadata={"reservation_id": request.reservation_id},
            )
        return pb.GetReservationResponse(reservation=mapping.reservation_message(row))

    async def ListReservations(
        self, request: pb.ListReservationsRequest, context: Any
    ) -> pb.ListReservationsResponse:
        before = int(mapping.decode_token(request.page_token, 2**62))
        size = mapping.page_size(request.page_size)
        async with self.db.transaction() as session:
            rows = await store.list_reservations(
                session,
                location_id=request.location_id,
                sku=request.sku,
                reference=request.reference,
                kind=request.kind,
                states=list(request.states),
                before=before,
                limit=size + 1,
            )
        token = mapping.encode_token(int(rows[size - 1].seq)) if len(rows) > size else ""
        return pb.ListReservationsResponse(
            reservations=[mapping.reservation_message(r) for r in rows[:size]],
            next_page_token=token,
        )

    # --- availability --------------------------------------------------------------------

    async def CheckAvailability(
        self, request: pb.CheckAvailabilityRequest, context: Any
    ) -> pb.CheckAvailabilityResponse:
        return await queries.check_availability(
            self.db, request, self.defaults, self.settings.default_nearby_km
        )

    async def FindNearbyStock(
        self, request: pb.FindNearbyStockRequest, context: Any
    ) -> pb.FindNearbyStockResponse:
        return await queries.find_nearby(
            self.db, request, self.defaults, self.settings.default_nearby_km
        )

    async def GetShipToHomeAvailability(
        self, request: pb.GetShipToHomeAvailabilityRequest, context: Any
    ) -> pb.GetShipToHomeAvailabilityResponse:
        async with self.db.reader() as conn:
            return await queries.ship_to_home(conn, request, self.defaults)

    # --- low-stock rules -----------------------------------------------------------------

    async def SetLowStockThreshold(
        self, request: pb.SetLowStockThresholdRequest, context: Any
    ) -> pb.SetLowStockThresholdResponse:
        async def work(session: AsyncSession) -> pb.SetLowStockThresholdResponse:
            return pb.SetLowStockThresholdResponse(
                threshold=await catalog.set_threshold(session, request.threshold)
            )

        return await self._once(
            "SetLowStockThreshold", request, pb.SetLowStockThresholdResponse, work
        )

    async def GetLowStockThreshold(
        self, request: pb.GetLowStockThresholdRequest, context: Any
    ) -> pb.GetLowStockThresholdResponse:
        async with self.db.transaction() as session:
            rule = await catalog.threshold_in_force(
                session, request.sku, request.location_id, self.defaults
            )
        return pb.GetLowStockThresholdResponse(threshold=rule)

    async def ListLowStockThresholds(
        self, request: pb.ListLowStockThresholdsRequest, context: Any
    ) -> pb.ListLowStockThresholdsResponse:
        async with self.db.transaction() as session:
            rules, token = await catalog.list_thresholds(
                session, request.sku, request.location_id, request.page_size, request.page_token
            )
        return pb.ListLowStockThresholdsResponse(thresholds=rules, next_page_token=token)

    async def DeleteLowStockThreshold(
        self, request: pb.DeleteLowStockThresholdRequest, context: Any
    ) -> pb.DeleteLowStockThresholdResponse:
        async def work(session: AsyncSession) -> pb.DeleteLowStockThresholdResponse:
            await catalog.delete_threshold(session, request.sku, request.location_id)
            return pb.DeleteLowStockThresholdResponse()

        return await self._once(
            "DeleteLowStockThreshold", request, pb.DeleteLowStockThresholdResponse, work
        )

    # --- forecast ------------------------------------------------------------------------

    async def GetDemandForecast(
        self, request: pb.GetDemandForecastRequest, context: Any
    ) -> pb.GetDemandForecastResponse:
        async with self.db.reader() as conn:
            result = await queries.demand_forecast(conn, request)
        return pb.GetDemandForecastResponse(forecast=result)


def _discrepancy(row: Any) -> Any:
    from continuum.inventory.v1 import inventory_resources_pb2 as res

    mismatched = [
        name
        for name, stored, summed in (
            ("on_hand", row.on_hand, row.l_on_hand),
            ("reserved", row.reserved, row.l_reserved),
            ("safety_stock", row.safety_stock, row.l_safety),
            ("incoming", row.incoming, row.l_incoming),
        )
        if stored != summed
    ]
    if row.reserved != row.active_reserved:
        mismatched.append("active_reservations")
    if row.revision != row.l_entries:
        mismatched.append("revision")
    if min(row.on_hand, row.reserved, row.safety_stock, row.incoming) < 0:
        mismatched.append("negative")
    return res.StockDiscrepancy(
        sku=row.sku,
        location_id=row.location_id,
        level=res.StockCounts(
            on_hand=row.on_hand,
            reserved=row.reserved,
            safety_stock=row.safety_stock,
            incoming=row.incoming,
        ),
        ledger_sum=res.StockCounts(
            on_hand=int(row.l_on_hand),
            reserved=int(row.l_reserved),
            safety_stock=int(row.l_safety),
            incoming=int(row.l_incoming),
        ),
        active_reserved=int(row.active_reserved),
        level_revision=row.revision,
        ledger_entry_count=int(row.l_entries),
        mismatched_fields=mismatched,
    )
