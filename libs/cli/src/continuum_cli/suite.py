"""Start the six services as separate processes on loopback, and stop them cleanly.

The embedded PostgreSQL and Redis are started in this process (or external ones are used:
``CONTINUUM_DATABASE_URL_<SERVICE>`` for each service and ``CONTINUUM_REDIS_URL``); each
service gets its own database, migrates on start, and reports SERVING on the standard
health service before :func:`start_suite` returns. ``stop()`` sends SIGTERM (the services
drain) and stops the embedded stack.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from continuum_runtime.auth import PrincipalKind, issue_token
from continuum_runtime.config import AuthSettings
from continuum_runtime.embedded import EmbeddedStack, embedded_stack, service_database_name
from continuum_sdk import AsyncContinuum, ClientConfig
from continuum_sdk.config import LOCAL_PORTS, SERVICES

# Start order: callees before callers, so that callers find them serving.
START_ORDER = ("identity", "inventory", "profile", "cart", "recommendation", "notification")


class SuiteError(RuntimeError):
    """A service did not start (its log tail is in the message)."""


def dev_token_key(data_dir: Path) -> str:
    """A signing key for local runs, kept in the data directory so tokens survive restarts."""
    path = data_dir / "dev-token-key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


@dataclass
class RunningSuite:
    """Six service processes and (unless external stores were given) the embedded stack."""

    targets: dict[str, str]
    token_key: str
    data_dir: Path
    log_dir: Path
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    stack: EmbeddedStack | None = None
    database_urls: dict[str, str] = field(default_factory=dict)
    redis_url: str = ""
    _logs: list[IO[bytes]] = field(default_factory=list, repr=False)

    def token(
        self,
        subject: str = "local-developer",
        kind: PrincipalKind = PrincipalKind.CHANNEL_APP,
        ttl_s: float = 12 * 3600,
        stores: tuple[str, ...] = (),
    ) -> str:
        """A bearer token the services accept (signed with this run's key); an associate's
        names the ``stores`` they work in."""
        settings = AuthSettings(token_key=self.token_key)  # type: ignore[arg-type]
        return issue_token(settings, subject=subject, kind=kind, ttl_s=ttl_s, stores=stores)

    def client(self, token: str | None = None, **config: Any) -> AsyncContinuum:
        """An SDK client for this suite (a channel-app token unless ``token`` is given)."""
        return AsyncContinuum(
            ClientConfig(targets=self.targets, token=token or self.token(), **config)
        )

    def log_tail(self, service: str, lines: int = 30) -> str:
        path = self.log_dir / f"{service}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    async def wait_exited(self) -> str:
        """Wait until any service exits; its name."""
        waits = {asyncio.ensure_future(proc.wait()): name for name, proc in self.processes.items()}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return waits[next(iter(done))]

    async def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every service (each drains), wait, then stop the embedded stack."""
        for proc in self.processes.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                await asyncio.wait_for(proc.wait(), timeout=timeout_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self.stack is not None:
            await asyncio.to_thread(self.stack.stop)
            self.stack = None


async def wait_serving(target: str, timeout_s: float = 180.0) -> bool:
    """Poll the standard health service until it says SERVING (False on timeout)."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    return False


async def start_suite(
    data_dir: Path,
    *,
    ports: Mapping[str, int] | None = None,
    env: Mapping[str, str] | None = None,
    service_env: Mapping[str, Mapping[str, str]] | None = None,
    log_dir: Path | None = None,
    database_prefix: str = "",
    database_urls: Mapping[str, str] | None = None,
    redis_url: str = "",
    token_key: str | None = None,
) -> RunningSuite:
    """Start the suite; see the module docstring.

    ``ports`` defaults to 50051-50056 (``make run``'s). ``env`` is added to every service's
    environment and ``service_env[name]`` to one's (e.g. a short abandonment time for the
    demo, or an OTLP endpoint). Services log to ``log_dir/<service>.log`` (default
    ``data_dir/logs``). ``database_prefix`` gives each service a database of its own name
    (tests run several suites on one server). ``database_urls`` / ``redis_url`` name
    external stores (otherwise ``CONTINUUM_DATABASE_URL_<SERVICE>`` / ``CONTINUUM_REDIS_URL``,
    and the embedded stack for whatever is still missing).
    """
    ports = dict(ports or LOCAL_PORTS)
    log_dir = log_dir or data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    environ = os.environ
    redis_url = redis_url or environ.get("CONTINUUM_REDIS_URL", "")
    external = {
        name: (database_urls or {}).get(name)
        or environ.get(f"CONTINUUM_DATABASE_URL_{name.upper()}", "")
        for name in SERVICES
    }
    suite = RunningSuite(
        targets={name: f"127.0.0.1:{ports[name]}" for name in SERVICES},
        token_key=token_key or environ.get("CONTINUUM_AUTH__TOKEN_KEY") or dev_token_key(data_dir),
        data_dir=data_dir,
        log_dir=log_dir,
    )
    if not redis_url or not all(external.values()):
        suite.stack = await asyncio.to_thread(embedded_stack, data_dir)
        redis_url = redis_url or suite.stack.redis_url()
    suite.redis_url = redis_url
    try:
        for name in START_ORDER:
            database_url = external[name]
            if not database_url:
                assert suite.stack is not None
                database_url = suite.stack.postgres_url(
                    database_prefix + service_database_name(name)
                )
            suite.database_urls[name] = database_url
            proc_env = {
                **environ,
                "CONTINUUM_PORT": str(ports[name]),
                "CONTINUUM_DATABASE_URL": database_url,
                "CONTINUUM_REDIS_URL": redis_url,
                "CONTINUUM_AUTH__TOKEN_KEY": suite.token_key,
                "CONTINUUM_DATA_DIR": str(data_dir),
                "CONTINUUM_LOG_JSON": environ.get("CONTINUUM_LOG_JSON", "false"),
                **{
                    f"CONTINUUM_{callee.upper()}_TARGET": target
                    for callee, target in suite.targets.items()
                },
                **(env or {}),
                **((service_env or {}).get(name, {})),
            }
            log = (log_dir / f"{name}.log").open("ab")
            suite._logs.append(log)
            suite.processes[name] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"continuum_{name}",
                "serve",
                env=proc_env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        ready = await asyncio.gather(*(wait_serving(suite.targets[n]) for n in START_ORDER))
        failed = [name for name, ok in zip(START_ORDER, ready, strict=True) if not ok]
        if failed:
            tails = "\n".join(f"--- {n} ---\n{suite.log_tail(n)}" for n in failed)
            raise SuiteError(f"not serving: {', '.join(failed)}\n{tails}")
    except BaseException:
        await suite.stop(timeout_s=10)
        raise
    return suite


@asynccontextmanager
async def running_suite(data_dir: Path, **kwargs: Any) -> AsyncIterator[RunningSuite]:
    """:func:`start_suite` as a context manager that always stops what it started."""
    suite = await start_suite(data_dir, **kwargs)
    try:
        yield suite
    finally:
        await suite.stop()
