"""The probe service the runtime tests serve through the real server bootstrap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.rpc import error_details_pb2

from continuum_runtime.auth import current_principal
from continuum_runtime.client import create_channel
from continuum_runtime.config import ServiceSettings
from continuum_runtime.deadlines import time_remaining
from continuum_runtime.errors import FailedPrecondition, NotFound
from continuum_runtime.server import ServerSpec, ServiceServer
from probe.v1 import probe_service_pb2 as pb
from probe.v1 import probe_service_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ProbeService"].full_name


class ProbeServicer(pb_grpc.ProbeServiceServicer):
    def __init__(self, token: str = "") -> None:
        self.token = token
        self.started = asyncio.Event()
        self.slept_through = 0  # Echo calls whose sleep ran to its end

    async def Echo(self, request: pb.EchoRequest, context: Any) -> pb.EchoResponse:
        self.started.set()
        if request.sleep_ms:
            await asyncio.sleep(request.sleep_ms / 1000)
            self.slept_through += 1
        remaining = time_remaining()
        return pb.EchoResponse(
            text=request.text,
            deadline_remaining_ms=(remaining or 0.0) * 1000,
            principal=current_principal().subject,
        )

    async def Relay(self, request: pb.RelayRequest, context: Any) -> pb.RelayResponse:
        own = (time_remaining() or 0.0) * 1000
        async with create_channel(request.target, token=lambda: self.token) as channel:
            stub = pb_grpc.ProbeServiceStub(channel)
            answer = await stub.Echo(pb.EchoRequest(text="downstream"))  # no timeout given
        return pb.RelayResponse(
            downstream_remaining_ms=answer.deadline_remaining_ms, own_remaining_ms=own
        )

    async def Fail(self, request: pb.FailRequest, context: Any) -> pb.FailResponse:
        if request.kind == "not_found":
            raise NotFound("no such note", reason="NOTE_NOT_FOUND", metadata={"note_id": "n1"})
        if request.kind == "precondition":
            raise FailedPrecondition(
                "not enough stock",
                reason="INSUFFICIENT_STOCK",
                details=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type="STOCK", subject="sku:SHOE-42@store-1", description="2 short"
                    )
                ],
            )
        if request.kind == "db_down":
            raise ConnectionRefusedError("connect to 10.1.2.3:5432 refused")
        raise RuntimeError("secret internals: password=hunter2 at /srv/app.py")

    async def Count(
        self, request_iterator: AsyncIterator[pb.CountRequest], context: Any
    ) -> pb.CountResponse:
        count = 0
        async for _ in request_iterator:
            count += 1
        return pb.CountResponse(count=count)

    async def Ticks(
        self, request: pb.TicksRequest, context: Any
    ) -> AsyncIterator[pb.TicksResponse]:
        for n in range(request.count):
            if request.interval_ms:
                await asyncio.sleep(request.interval_ms / 1000)
            yield pb.TicksResponse(n=n)


def probe_server(
    settings: ServiceSettings, servicer: ProbeServicer, **spec_kwargs: Any
) -> ServiceServer:
    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_ProbeServiceServicer_to_server(servicer, server)

    return ServiceServer(
        settings, ServerSpec(service_names=[SERVICE_NAME], register=register, **spec_kwargs)
    )
