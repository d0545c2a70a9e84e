"""The identity service in-process on loopback, on a fresh database of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest_asyncio
from pydantic import SecretStr

from continuum.identity.v1 import identity_service_pb2_grpc as pb_grpc
from continuum_identity.__main__ import MIGRATIONS, make_server
from continuum_identity.settings import IdentitySettings
from continuum_runtime.app import ServiceContext, open_context
from continuum_runtime.config import AuthSettings
from continuum_runtime.server import ServiceServer
from continuum_runtime.testing import TestStores, TokenFactory


@dataclass
class Identity:
    server: ServiceServer
    ctx: ServiceContext
    stub: pb_grpc.IdentityServiceStub
    metadata: tuple[tuple[str, str], ...]


@pytest_asyncio.fixture
async def identity(
    database_url: str,
    test_stores: TestStores,
    redis_namespace: str,
    auth_settings: AuthSettings,
    make_token: TokenFactory,
) -> AsyncIterator[Identity]:
    settings = IdentitySettings(
        database_url=SecretStr(database_url),
        redis_url=SecretStr(test_stores.redis_url),
        redis_namespace=redis_namespace,
        auth=auth_settings,
        identifier_key=SecretStr("identity-test-key"),
        environment="test",
        port=0,
    )
    ctx = await open_context(settings, MIGRATIONS)
    server = make_server(ctx)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        token = make_token(subject="tests")
        yield Identity(
            server=server,
            ctx=ctx,
            stub=pb_grpc.IdentityServiceStub(channel),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    await server.drain(grace_s=0.5)
