"""Identity and profile in-process on loopback, each on a fresh database of its own, sharing
one Redis namespace (profile consumes identity's events) and talking over real gRPC."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest_asyncio
from pydantic import SecretStr

from continuum.identity.v1 import identity_service_pb2_grpc as ipb_grpc
from continuum.profile.v1 import profile_service_pb2_grpc as pb_grpc
from continuum_identity.__main__ import MIGRATIONS as IDENTITY_MIGRATIONS
from continuum_identity.__main__ import make_server as make_identity
from continuum_identity.settings import IdentitySettings
from continuum_profile.__main__ import MIGRATIONS as PROFILE_MIGRATIONS
from continuum_profile.__main__ import make_server as make_profile
from continuum_profile.settings import DeriveSettings, IngestSettings, ProfileSettings
from continuum_runtime.app import ServiceContext, open_context
from continuum_runtime.config import AuthSettings, EventSettings
from continuum_runtime.embedded import drop_database, ensure_database, with_database
from continuum_runtime.server import ServiceServer
from continuum_runtime.testing import TestStores, TokenFactory

FAST_EVENTS = EventSettings(consumer_block_ms=50, relay_poll_interval_s=0.02)


@dataclass
class Identity:
    server: ServiceServer
    ctx: ServiceContext
    stub: ipb_grpc.IdentityServiceAsyncStub


@dataclass
class Stack:
    profile: pb_grpc.ProfileServiceAsyncStub
    profile_ctx: ServiceContext
    profile_server: ServiceServer
    identity: Identity | None
    metadata: tuple[tuple[str, str], ...]
    start_identity: Callable[[], Awaitable[Identity]]


async def _identity(
    database_url: str,
    stores: TestStores,
    namespace: str,
    auth: AuthSettings,
    port: int,
) -> Identity:
    settings = IdentitySettings(
        database_url=SecretStr(database_url),
        redis_url=SecretStr(stores.redis_url),
        redis_namespace=namespace,
        auth=auth,
        identifier_key=SecretStr("profile-test-identity-key"),
        environment="test",
        port=port,
        events=FAST_EVENTS,
    )
    ctx = await open_context(settings, IDENTITY_MIGRATIONS)
    server = make_identity(ctx)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return Identity(server=server, ctx=ctx, stub=cast(Any, ipb_grpc.IdentityServiceStub(channel)))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _stack(
    database_url: str,
    stores: TestStores,
    namespace: str,
    auth: AuthSettings,
    make_token: TokenFactory,
    identity_up: bool,
) -> AsyncIterator[Stack]:
    identity_url = with_database(stores.postgres_url, f"t_{uuid.uuid4().hex[:16]}")
    await ensure_database(identity_url)
    identity_port = _free_port()
    started: list[Identity] = []

    async def start_identity() -> Identity:
        found = await _identity(identity_url, stores, namespace, auth, identity_port)
        started.append(found)
        return found

    identity = await start_identity() if identity_up else None
    settings = ProfileSettings(
        database_url=SecretStr(database_url),
        redis_url=SecretStr(stores.redis_url),
        redis_namespace=namespace,
        auth=auth,
        environment="test",
        port=0,
        identity_target=f"127.0.0.1:{identity_port}",
        events=FAST_EVENTS,
        ingest=IngestSettings(resolve_timeout_s=1.0, retry_interval_s=0.2),
        derive=DeriveSettings(delay_s=0.0, poll_interval_s=0.02, publish_interval_s=0.0),
    )
    ctx = await open_context(settings, PROFILE_MIGRATIONS)
    server = make_profile(ctx)
    await server.start()
    token = make_token(subject="tests")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield Stack(
            profile=cast(Any, pb_grpc.ProfileServiceStub(channel)),
            profile_ctx=ctx,
            profile_server=server,
            identity=identity,
            metadata=(("authorization", f"Bearer {token}"),),
            start_identity=start_identity,
        )
    await server.drain(grace_s=0.5)
    for found in started:
        await found.server.drain(grace_s=0.5)
    await drop_database(identity_url)


@pytest_asyncio.fixture
async def stack(
    database_url: str,
    test_stores: TestStores,
    redis_namespace: str,
    redis_client: object,
    auth_settings: AuthSettings,
    make_token: TokenFactory,
) -> AsyncIterator[Stack]:
    async for found in _stack(
        database_url, test_stores, redis_namespace, auth_settings, make_token, True
    ):
        yield found


@pytest_asyncio.fixture
async def stack_without_identity(
    database_url: str,
    test_stores: TestStores,
    redis_namespace: str,
    redis_client: object,
    auth_settings: AuthSettings,
    make_token: TokenFactory,
) -> AsyncIterator[Stack]:
    async for found in _stack(
        database_url, test_stores, redis_namespace, auth_settings, make_token, False
    ):
        yield found
