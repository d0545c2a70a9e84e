"""Server bootstrap on grpc.aio, the same for every service.

:class:`ServiceServer` serves a service's servicers behind the runtime interceptors with
the standard health service (whose status follows the service's dependency checks and
turns NOT_SERVING while draining), server reflection, a cap on concurrent RPCs, TLS or
mutual TLS when configured, background tasks (outbox relay, event consumers), and a
graceful drain on SIGTERM: new calls are refused, in-flight calls may finish within the
grace period.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from continuum_runtime.auth import TokenVerifier
from continuum_runtime.config import ServiceSettings, TLSSettings
from continuum_runtime.heap import freeze_long_lived
from continuum_runtime.interceptors import ServerInterceptor
from continuum_runtime.tasks import raise_if_cancelling
from continuum_runtime.telemetry import grpc_server_interceptor, quiet

log = logging.getLogger(__name__)

Register = Callable[[grpc.aio.Server], None]
HealthCheck = Callable[[], Awaitable[None]]
BackgroundTask = Callable[[], Awaitable[None]]


@dataclass
class ServerSpec:
    """What a service serves: its full service names, how to register them, what it needs."""

    service_names: Sequence[str]
    register: Register
    # Named dependency checks (e.g. "postgres", "redis"): each raises when unhealthy.
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)
    # Long-running coroutines started with the server and cancelled at shutdown.
    background: list[BackgroundTask] = field(default_factory=list)
    # Client-streaming methods whose messages the handler validates itself.
    unvalidated_stream_methods: Iterable[str] = ()
    # Called after the server has stopped (close pools, dispose engines).
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def server_credentials(tls: TLSSettings) -> grpc.ServerCredentials:
    if tls.cert_file is None or tls.key_file is None:
        raise ValueError("TLS needs CONTINUUM_TLS__CERT_FILE and CONTINUUM_TLS__KEY_FILE")
    ca = tls.ca_file.read_bytes() if tls.ca_file else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=tls.require_client_cert,
    )


# How long drain waits for each background task to stop, and for each shutdown hook.
STOP_TIMEOUT_S = 5.0


class ServiceServer:
    """One service's gRPC server and its lifecycle."""

    def __init__(self, settings: ServiceSettings, spec: ServerSpec) -> None:
        self.settings = settings
        self.spec = spec
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._draining = False
        self._stopped = asyncio.Event()
        self.dependency_status: dict[str, bool] = {}

    def _interceptors(self) -> list[Any]:
        verifier = None
        auth = self.settings.auth
        if auth.token_key.get_secret_value() or auth.public_key:
            verifier = TokenVerifier(auth)
        elif self.settings.environment != "development":
            raise ValueError("CONTINUUM_AUTH__TOKEN_KEY (or a public key) must be set")
        else:
            log.warning("authentication is OFF: no token key configured (development only)")
        return [
            grpc_server_interceptor(),
            ServerInterceptor(
                verifier=verifier,
                default_deadline_s=self.settings.default_deadline_s,
                unvalidated_stream_methods=self.spec.unvalidated_stream_methods,
            ),
        ]

    async def start(self) -> int:
        """Bind, start serving and start background work. Returns the bound port."""
        server = grpc.aio.server(
            interceptors=self._interceptors(),
            maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs,
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
        )
        self.spec.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [*self.spec.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        address = f"{self.settings.host}:{self.settings.port}"
        if self.settings.tls.enabled:
            self.port = server.add_secure_port(address, server_credentials(self.settings.tls))
        else:
            self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"could not bind {address}")
        await server.start()
        self._server = server
        await self.check_dependencies()
        with quiet():  # the tasks keep this context: their polls make no spans
            self._tasks.append(asyncio.create_task(self._health_loop(), name="health"))
            for job in self.spec.background:
                self._tasks.append(asyncio.create_task(_supervised(job), name=job.__qualname__))
        log.info("serving", extra={"address": f"{self.settings.host}:{self.port}"})
        return self.port

    async def _set_all(self, status: int) -> None:
        for name in ("", *self.spec.service_names):
            await self.health.set(name, status)

    async def check_dependencies(self) -> bool:
        """Run every dependency check; health follows the result."""
        healthy = True
        for name, check in self.spec.health_checks.items():
            try:
                await asyncio.wait_for(check(), timeout=max(self.settings.health_interval_s, 1.0))
                self.dependency_status[name] = True
            except Exception as exc:
                if self.dependency_status.get(name, True):
                    log.warning("dependency %s unhealthy: %s", name, type(exc).__name__)
                self.dependency_status[name] = False
                healthy = False
        if not self._draining:
            await self._set_all(
                health_pb2.HealthCheckResponse.SERVING
                if healthy
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
        return healthy

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            await self.check_dependencies()

    async def drain(self, grace_s: float | None = None) -> None:
        """Stop gracefully: NOT_SERVING, refuse new calls, let in-flight calls finish."""
        if self._server is None or self._draining:
            await self._stopped.wait()
            return
        self._draining = True
        await self.health.enter_graceful_shutdown()
        # Let health watchers (load balancers, kubelet) see NOT_SERVING before the
        # listener closes and new calls are refused.
        await asyncio.sleep(self.settings.drain_notice_s)
        grace = self.settings.drain_grace_s if grace_s is None else grace_s
        log.info("draining", extra={"grace_s": grace})
        await self._server.stop(grace)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # A task that swallows its cancellation must not hold shutdown hostage.
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
            for task in stuck:
                where = io.StringIO()
                task.print_stack(file=where)
                log.error("background task %s did not stop: %s", task.get_name(), where.getvalue())
        for hook in self.spec.on_stop:
            try:
                await asyncio.wait_for(hook(), timeout=STOP_TIMEOUT_S)
            except Exception:
                log.warning("shutdown hook failed", exc_info=True)
        self._stopped.set()
        log.info("stopped")

    async def serve(self, on_ready: Callable[[int], None] | None = None) -> None:
        """Start, then run until SIGTERM or SIGINT, then drain."""
        port = await self.start()
        if self.settings.freeze_heap:
            frozen = freeze_long_lived()
            log.debug("heap frozen", extra={"objects": frozen})
        if on_ready is not None:
            on_ready(port)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.drain()


async def _supervised(job: BackgroundTask) -> None:
    """Run a background job, restarting it if it crashes."""
    while True:
        try:
            await job()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            raise_if_cancelling()
            log.exception("background task %s crashed; restarting", job.__qualname__)
            await asyncio.sleep(1.0)
