"""The server bootstrap: graceful drain on SIGTERM, health that follows dependencies."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from continuum_runtime.config import AuthSettings, ServiceSettings
from continuum_runtime.testing import eventually
from probe.v1 import probe_service_pb2 as pb
from probe.v1 import probe_service_pb2_grpc as pb_grpc
from tests.runtime.probe import ProbeServicer, probe_server

ROOT = Path(__file__).resolve().parents[2]


async def test_sigterm_lets_in_flight_call_finish_and_refuses_new_ones(
    auth_settings: AuthSettings, make_token
) -> None:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "CONTINUUM_AUTH__TOKEN_KEY": auth_settings.token_key.get_secret_value(),
        "CONTINUUM_DRAIN_GRACE_S": "10",
        "CONTINUUM_LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "tests" / "runtime" / "probe_server.py"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
        assert line.startswith("PORT "), line
        target = f"127.0.0.1:{int(line.split()[1])}"
        metadata = (("authorization", f"Bearer {make_token()}"),)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.ProbeServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            assert (await health.Check(health_pb2.HealthCheckRequest())).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
            in_flight = asyncio.ensure_future(
                stub.Echo(pb.EchoRequest(text="slow", sleep_ms=1500), metadata=metadata)
            )
            await asyncio.sleep(0.3)  # the slow call is now running in the server
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)

            # A new call on a fresh connection is refused while the old one drains.
            async with grpc.aio.insecure_channel(target) as fresh:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await pb_grpc.ProbeServiceStub(fresh).Echo(
                        pb.EchoRequest(text="new"), metadata=metadata, timeout=2
                    )
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE

            reply = await in_flight
            assert reply.text == "slow"
        assert await asyncio.wait_for(proc.wait(), timeout=15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_health_follows_dependencies_and_turns_not_serving_on_drain(
    auth_settings: AuthSettings,
) -> None:
    database_up = True

    async def check_database() -> None:
        if not database_up:
            raise ConnectionRefusedError("database down")

    settings = ServiceSettings(service_name="probe", auth=auth_settings, health_interval_s=0.05)
    server = probe_server(settings, ProbeServicer(), health_checks={"postgres": check_database})
    await server.start()
    name = "probe.v1.ProbeService"

    async def status() -> int:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=name)
            )
            return int(reply.status)

    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    try:
        assert await status() == serving
        database_up = False
        await eventually(lambda: _is(status, not_serving), timeout_s=5)
        database_up = True
        await eventually(lambda: _is(status, serving), timeout_s=5)
        # A load balancer watching health sees NOT_SERVING as soon as draining starts.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=name)
            )
            assert (await watch.read()).status == serving
            drain = asyncio.create_task(server.drain(grace_s=1.0))
            assert (await asyncio.wait_for(watch.read(), timeout=5)).status == not_serving
            await drain
    finally:
        await server.drain(grace_s=0.1)


async def _is(status, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return await status() == expected


async def test_port_already_in_use_fails_loudly(auth_settings: AuthSettings) -> None:
    first = probe_server(ServiceSettings(service_name="probe", auth=auth_settings), ProbeServicer())
    await first.start()
    try:
        second = probe_server(
            ServiceSettings(service_name="probe", auth=auth_settings, port=first.port),
            ProbeServicer(),
        )
        with pytest.raises(Exception):  # noqa: B017,PT011  grpc raises RuntimeError or OSError
            await second.start()
    finally:
        await first.drain(grace_s=0.1)


async def test_calls_beyond_the_concurrency_cap_are_refused_not_queued(
    auth_settings: AuthSettings, make_token
) -> None:  # type: ignore[no-untyped-def]
    settings = ServiceSettings(service_name="probe", auth=auth_settings, max_concurrent_rpcs=2)
    server = probe_server(settings, ProbeServicer())
    await server.start()
    auth = (("authorization", f"Bearer {make_token()}"),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ProbeServiceStub(channel)
            slow = [
                stub.Echo(pb.EchoRequest(text="slow", sleep_ms=1500), metadata=auth)
                for _ in range(2)
            ]
            await asyncio.sleep(0.5)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Echo(pb.EchoRequest(text="third"), metadata=auth, timeout=5)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # The calls in flight are unaffected, and capacity comes back when they finish.
            assert [r.text for r in await asyncio.gather(*slow)] == ["slow", "slow"]
            again = await stub.Echo(pb.EchoRequest(text="fourth"), metadata=auth, timeout=5)
            assert again.text == "fourth"
    finally:
        await server.drain(grace_s=0.5)


async def test_a_background_task_that_ignores_cancellation_does_not_block_shutdown(
    auth_settings: AuthSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import continuum_runtime.server as server_module

    monkeypatch.setattr(server_module, "STOP_TIMEOUT_S", 0.3)
    stopped_hook = asyncio.Event()
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue  # a library that swallows the cancel

    async def hook() -> None:
        stopped_hook.set()

    settings = ServiceSettings(service_name="probe", auth=auth_settings, port=0)
    server = probe_server(settings, ProbeServicer(), background=[stubborn], on_stop=[hook])
    await server.start()
    try:
        await asyncio.wait_for(server.drain(grace_s=0.1), timeout=5)
        assert stopped_hook.is_set()  # the shutdown hooks still ran
    finally:
        released.set()  # let the stubborn task end, so that the test's loop can close
