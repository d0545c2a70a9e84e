"""Wiring a service together: config, stores, migrations, events, telemetry, server.

A service's entry point declares what is its own (name, migrations folder, servicers,
event handlers) and hands it to :func:`main`; everything else is the same for all six.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from continuum_runtime.config import ServiceSettings
from continuum_runtime.db import Database
from continuum_runtime.embedded import StoreURLs, resolve_store_urls
from continuum_runtime.events import OutboxRelay
from continuum_runtime.logs import configure_logging
from continuum_runtime.migrations import upgrade
from continuum_runtime.server import ServerSpec, ServiceServer
from continuum_runtime.telemetry import setup_telemetry, shutdown_telemetry

log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    """What a service's servicers, stores and handlers are built from."""

    settings: ServiceSettings
    urls: StoreURLs
    db: Database
    redis: aioredis.Redis
    relay: OutboxRelay

    async def close(self) -> None:
        await self.redis.aclose()
        await self.db.dispose()


async def store_urls(settings: ServiceSettings) -> StoreURLs:
    """The service's database and Redis: configured, or from the embedded stack."""
    return await resolve_store_urls(
        settings.service_name,
        settings.database_url.get_secret_value(),
        settings.redis_url.get_secret_value(),
        settings.data_dir,
    )


async def open_context(settings: ServiceSettings, migrations: Path) -> ServiceContext:
    """Connect to (or start) the stores and bring the database schema up to date."""
    urls = await store_urls(settings)
    db = Database(urls.database_url, settings.db)
    if settings.run_migrations:
        await upgrade(db.engine, migrations)
    redis = aioredis.from_url(urls.redis_url, health_check_interval=30)
    relay = OutboxRelay(db, redis, namespace=settings.redis_namespace, settings=settings.events)
    return ServiceContext(settings=settings, urls=urls, db=db, redis=redis, relay=relay)


async def _ping_redis(redis: aioredis.Redis) -> None:
    await redis.ping()


def build_server(
    ctx: ServiceContext,
    *,
    service_names: Sequence[str],
    register: Callable[..., None],
    background: Sequence[Callable[[], Awaitable[None]]] = (),
    unvalidated_stream_methods: Sequence[str] = (),
    on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
) -> ServiceServer:
    """The service's server with database and Redis health checks and the outbox relay.
    ``on_stop`` hooks run after the last call has finished, before the stores close."""
    spec = ServerSpec(
        service_names=service_names,
        register=register,
        health_checks={"postgres": ctx.db.ping, "redis": lambda: _ping_redis(ctx.redis)},
        background=[ctx.relay.run, *background],
        unvalidated_stream_methods=unvalidated_stream_methods,
        on_stop=[*on_stop, ctx.close],
    )
    return ServiceServer(ctx.settings, spec)


ServerFactory = Callable[[ServiceContext], ServiceServer]


def main(
    settings: ServiceSettings,
    migrations: Path,
    make_server: ServerFactory,
    argv: Sequence[str] | None = None,
) -> None:
    """Command line of every service: ``serve`` (default) or ``migrate``."""
    parser = argparse.ArgumentParser(prog=f"continuum-{settings.service_name}")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    setup_telemetry(settings.service_name, otlp_endpoint=settings.otlp_endpoint)

    async def migrate() -> None:
        forced = settings.model_copy(update={"run_migrations": True})
        ctx = await open_context(forced, migrations)
        await ctx.close()
        log.info("database migrated")

    async def serve() -> None:
        ctx = await open_context(settings, migrations)
        server = make_server(ctx)
        await server.serve(on_ready=lambda port: log.info("ready", extra={"port": port}))

    try:
        run_event_loop(migrate() if args.command == "migrate" else serve(), settings.event_loop)
    finally:
        shutdown_telemetry()


def run_event_loop(main: Coroutine[Any, Any, None], event_loop: str = "uvloop") -> None:
    """Run a service's top coroutine on uvloop (asyncio's own loop if asked for).

    uvloop does the socket work of the database and Redis drivers in C: a cached cart read
    costs the server about 15% less CPU (540 -> 460 µs). gRPC's own I/O does not go through
    the event loop, so a bare gRPC echo gains nothing from it.
    """
    if event_loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)
