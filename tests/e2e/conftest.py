"""The six services as separate processes over gRPC on loopback, on the test stores.

``six_services(...)`` starts a suite of its own (own databases, own Redis namespace, own
ports and token key) with the launcher that ``make run`` uses, and drops its databases
afterwards. Test modules start one per module: a start costs ~20 s.
"""

from __future__ import annotations

import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from continuum_cli.suite import RunningSuite, start_suite
from continuum_runtime.embedded import drop_database, service_database_name, with_database
from continuum_runtime.testing import TestStores
from continuum_sdk.config import SERVICES


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def six_services(
    test_stores: TestStores,
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    service_env: Mapping[str, Mapping[str, str]] | None = None,
) -> AsyncIterator[RunningSuite]:
    prefix = f"e{uuid.uuid4().hex[:10]}"
    urls = {
        name: with_database(test_stores.postgres_url, f"{prefix}_{service_database_name(name)}")
        for name in SERVICES
    }
    suite = await start_suite(
        data_dir,
        ports={name: free_port() for name in SERVICES},
        database_urls=urls,
        redis_url=test_stores.redis_url,
        env={
            "CONTINUUM_REDIS_NAMESPACE": prefix,
            "CONTINUUM_ENVIRONMENT": "test",
            # Outside development identity needs a key for its identifier hashes.
            "CONTINUUM_IDENTIFIER_KEY": secrets.token_hex(16),
            **(env or {}),
        },
        service_env=service_env,
        token_key=secrets.token_hex(32),
    )
    try:
        yield suite
    finally:
        await suite.stop()
        for url in urls.values():
            await drop_database(url)
