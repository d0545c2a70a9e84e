"""Each of the six services installs, starts on its own, migrates and serves health."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import text

from continuum_runtime.auth import PrincipalKind
from continuum_runtime.config import AuthSettings
from continuum_runtime.db import Database
from continuum_runtime.embedded import drop_database, with_database
from continuum_runtime.testing import TestStores

SERVICES = {
    "identity": "continuum.identity.v1.IdentityService",
    "profile": "continuum.profile.v1.ProfileService",
    "cart": "continuum.cart.v1.CartService",
    "inventory": "continuum.inventory.v1.InventoryService",
    "recommendation": "continuum.recommendation.v1.RecommendationService",
    "notification": "continuum.notification.v1.NotificationService",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_serving(
    stub: health_pb2_grpc.HealthStub, service: str, proc: asyncio.subprocess.Process
) -> None:
    for _ in range(300):
        if proc.returncode is not None:
            raise AssertionError(f"{service} exited with {proc.returncode} before serving")
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{service} never became SERVING")


async def list_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for reply in stub.ServerReflectionInfo(requests()):
        return {s.name for s in reply.list_services_response.service}
    return set()


@pytest.mark.parametrize("name", list(SERVICES))
async def test_service_starts_on_its_own_and_drains_on_sigterm(
    name: str, test_stores: TestStores, auth_settings: AuthSettings, make_token, redis_namespace
) -> None:  # type: ignore[no-untyped-def]
    database_url = with_database(test_stores.postgres_url, f"svc_{name}_{redis_namespace}")
    port = free_port()
    env = {
        **os.environ,
        "CONTINUUM_PORT": str(port),
        "CONTINUUM_DATABASE_URL": database_url,
        "CONTINUUM_REDIS_URL": test_stores.redis_url,
        "CONTINUUM_REDIS_NAMESPACE": redis_namespace,
        "CONTINUUM_AUTH__TOKEN_KEY": auth_settings.token_key.get_secret_value(),
        "CONTINUUM_ENVIRONMENT": "test",
        "CONTINUUM_LOG_LEVEL": "WARNING",
        "CONTINUUM_IDENTIFIER_KEY": "suite-test-identifier-key",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"continuum_{name}", "serve", env=env
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(health_pb2_grpc.HealthStub(channel), SERVICES[name], proc)
            assert SERVICES[name] in await list_services(channel)

            # Its database was created and migrated: the event tables exist.
            db = Database(database_url)
            try:
                async with db.sessions() as session:
                    tables = set(
                        (
                            await session.execute(
                                text("SELECT tablename FROM pg_tables WHERE schemaname='public'")
                            )
                        ).scalars()
                    )
            finally:
                await db.dispose()
            assert {"outbox", "processed_events", "alembic_version"} <= tables

            # Service RPCs need a token.
            method = f"/{SERVICES[name]}/"
            descriptor_methods = await _first_method(channel, SERVICES[name])
            raw = channel.unary_unary(method + descriptor_methods)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await raw(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # With a token the call gets past authentication (an empty request may be
            # refused as invalid, or answered, e.g. recommendation's cold start).
            token = make_token(kind=PrincipalKind.SERVICE)
            code = grpc.StatusCode.OK
            try:
                await raw(b"", timeout=5, metadata=(("authorization", f"Bearer {token}"),))
            except grpc.aio.AioRpcError as refused:
                code = refused.code()
            assert code != grpc.StatusCode.UNAUTHENTICATED
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await drop_database(database_url)


async def _first_method(channel: grpc.aio.Channel, service: str) -> str:
    from google.protobuf import descriptor_pool

    import continuum  # noqa: F401  (generated modules register their descriptors on import)

    module = __import__(
        f"continuum.{service.split('.')[1]}.v1.{service.split('.')[1]}_service_pb2",
        fromlist=["DESCRIPTOR"],
    )
    del module
    svc = descriptor_pool.Default().FindServiceByName(service)
    return str(svc.methods[0].name)
