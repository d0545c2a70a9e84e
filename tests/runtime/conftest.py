from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest_asyncio

from continuum_runtime.config import AuthSettings, ServiceSettings
from continuum_runtime.server import ServiceServer
from probe.v1 import probe_service_pb2_grpc as pb_grpc
from tests.runtime.probe import ProbeServicer, probe_server


@pytest_asyncio.fixture
async def probe(auth_settings: AuthSettings, make_token) -> AsyncIterator[ServiceServer]:  # type: ignore[no-untyped-def]
    settings = ServiceSettings(service_name="probe", auth=auth_settings, default_deadline_s=7.0)
    server = probe_server(settings, ProbeServicer(token=make_token(subject="probe")))
    await server.start()
    yield server
    await server.drain(grace_s=0.5)


@pytest_asyncio.fixture
async def probe_stub(probe: ServiceServer) -> AsyncIterator[pb_grpc.ProbeServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe.port}") as channel:
        yield pb_grpc.ProbeServiceStub(channel)
