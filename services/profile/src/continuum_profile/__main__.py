"""Entry point: ``continuum-profile [serve|migrate]`` or ``python -m continuum_profile``."""

from pathlib import Path

import grpc

from continuum.profile.v1 import profile_service_pb2_grpc
from continuum_profile.deriver import Deriver, UnresolvedRetrier
from continuum_profile.handlers import CacheBus, IdentityHandlers
from continuum_profile.ingest import Ingestor
from continuum_profile.resolution import ResolutionCache, Resolver
from continuum_profile.servicer import SERVICE_NAME, ProfileServicer
from continuum_profile.settings import ProfileSettings
from continuum_runtime.app import ServiceContext, build_server, main
from continuum_runtime.client import service_channel
from continuum_runtime.events import EventConsumer
from continuum_runtime.server import ServiceServer

MIGRATIONS = Path(__file__).parent / "migrations"


def make_server(ctx: ServiceContext) -> ServiceServer:
    settings = ctx.settings
    assert isinstance(settings, ProfileSettings)
    identity = service_channel(settings, settings.identity_target)
    cache = ResolutionCache(settings.ingest.cache_ttl_s, settings.ingest.cache_max_entries)
    resolver = Resolver(identity, cache, settings.ingest.resolve_timeout_s)
    bus = CacheBus(cache, ctx.redis, settings.redis_namespace)
    # Ingestion and the deriver leave their events to the relay's next poll (every
    # CONTINUUM_EVENTS__RELAY_POLL_INTERVAL_S): waking it after every batch costs more than
    # the events.
    deriver = Deriver(ctx.db, settings.derive) if settings.derive.enabled else None
    ingestor = Ingestor(
        ctx.db,
        resolver,
        settings.ingest,
        settings.derive,
        derive_caught_up=deriver.caught_up if deriver is not None else None,
    )
    consumer = EventConsumer(
        db=ctx.db,
        redis=ctx.redis,
        namespace=settings.redis_namespace,
        group="profile",
        producers=["identity"],
        handlers=IdentityHandlers(bus).specs(),
        settings=settings.events,
    )
    retrier = UnresolvedRetrier(ctx.db, resolver, settings.ingest, settings.derive)
    background = [consumer.run, bus.listen, retrier.run]
    if deriver is not None:
        background.append(deriver.run)

    def register(server: grpc.aio.Server) -> None:
        profile_service_pb2_grpc.add_ProfileServiceServicer_to_server(
            ProfileServicer(ctx.db, ingestor, bus), server
        )

    server = build_server(
        ctx, service_names=[SERVICE_NAME], register=register, background=background
    )

    async def close_identity() -> None:
        await identity.close(None)

    server.spec.on_stop.insert(0, close_identity)
    return server


def run() -> None:
    main(ProfileSettings(), MIGRATIONS, make_server)


if __name__ == "__main__":
    run()
