"""`make run`: the six services as separate processes on the embedded PostgreSQL and Redis.

Starts the embedded stack once (or uses CONTINUUM_DATABASE_URL_<SERVICE> /
CONTINUUM_REDIS_URL when set), migrates and starts every service on loopback, waits until
all report SERVING on the standard health service, prints where they are, and keeps them
running until Ctrl-C, when each is drained with SIGTERM and the stack is stopped.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from continuum_runtime.auth import PrincipalKind, issue_token
from continuum_runtime.config import AuthSettings
from continuum_runtime.embedded import embedded_stack, service_database_name

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {
    "identity": 50051,
    "profile": 50052,
    "cart": 50053,
    "inventory": 50054,
    "recommendation": 50055,
    "notification": 50056,
}


def dev_token_key(data_dir: Path) -> str:
    """A signing key for local runs, kept in .data so tokens survive restarts."""
    path = data_dir / "dev-token-key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


async def wait_healthy(port: int, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
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


async def main() -> int:
    data_dir = Path(os.environ.get("CONTINUUM_DATA_DIR", ROOT / ".data"))
    redis_url = os.environ.get("CONTINUUM_REDIS_URL", "")
    stack = None
    if not redis_url or not all(
        os.environ.get(f"CONTINUUM_DATABASE_URL_{name.upper()}") for name in SERVICES
    ):
        print(f"starting embedded PostgreSQL and Redis in {data_dir} ...", flush=True)
        stack = await asyncio.to_thread(embedded_stack, data_dir)
        redis_url = redis_url or stack.redis_url()
    key = os.environ.get("CONTINUUM_AUTH__TOKEN_KEY") or dev_token_key(data_dir)
    processes: dict[str, asyncio.subprocess.Process] = {}
    try:
        for name, port in SERVICES.items():
            database_url = os.environ.get(f"CONTINUUM_DATABASE_URL_{name.upper()}", "")
            if not database_url:
                assert stack is not None
                database_url = stack.postgres_url(service_database_name(name))
            env = {
                **os.environ,
                "CONTINUUM_PORT": str(port),
                "CONTINUUM_DATABASE_URL": database_url,
                "CONTINUUM_REDIS_URL": redis_url,
                "CONTINUUM_AUTH__TOKEN_KEY": key,
                "CONTINUUM_DATA_DIR": str(data_dir),
                "CONTINUUM_LOG_JSON": os.environ.get("CONTINUUM_LOG_JSON", "false"),
            }
            processes[name] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", f"continuum_{name}", "serve", env=env
            )
        results = await asyncio.gather(*(wait_healthy(port) for port in SERVICES.values()))
        for (name, port), ok in zip(SERVICES.items(), results, strict=True):
            print(f"  {name:<15} 127.0.0.1:{port}  {'SERVING' if ok else 'NOT READY'}")
        if not all(results):
            print("some services did not become healthy; stopping", file=sys.stderr)
            return 1
        token = issue_token(
            AuthSettings(token_key=key),  # type: ignore[arg-type]
            subject="local-developer",
            kind=PrincipalKind.CHANNEL_APP,
            ttl_s=12 * 3600,
        )
        print("\nContinuum is running. A 12-hour token for local calls:\n")
        print(f"  authorization: Bearer {token}\n")
        print("Press Ctrl-C to stop.", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        exited = [asyncio.ensure_future(p.wait()) for p in processes.values()]
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([stopper, *exited], return_when=asyncio.FIRST_COMPLETED)
        return 0
    finally:
        print("\nstopping services ...", flush=True)
        for proc in processes.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in processes.values():
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                proc.kill()
        if stack is not None:
            await asyncio.to_thread(stack.stop)
        print("stopped.")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
