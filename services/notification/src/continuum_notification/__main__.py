"""Entry point: ``continuum-notification [serve|migrate]`` or ``python -m continuum_notification``."""

from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from continuum.notification.v1 import notification_service_pb2_grpc
from continuum_notification.checkins import CheckIns
from continuum_notification.dependencies import Dependencies
from continuum_notification.feed import FeedHub, FeedPublisher
from continuum_notification.handlers import notification_consumer
from continuum_notification.handoffs import Handoffs, maintenance_loop
from continuum_notification.messages import Messages
from continuum_notification.policy import seconds
from continuum_notification.senders import make_sender
from continuum_notification.servicer import SERVICE_NAME, NotificationServicer
from continuum_notification.settings import NotificationSettings
from continuum_notification.settings_cache import PolicyCache
from continuum_runtime.app import ServiceContext, build_server, main
from continuum_runtime.server import ServiceServer

MIGRATIONS = Path(__file__).parent / "migrations"


def make_server(ctx: ServiceContext) -> ServiceServer:
    settings = ctx.settings
    assert isinstance(settings, NotificationSettings)
    deps = Dependencies.connect(settings)
    policy = PolicyCache(ctx.db)

    async def feed_retention() -> float:
        return seconds((await policy.get()).feed_retention)

    publisher = FeedPublisher(ctx.db, ctx.redis, settings.redis_namespace, feed_retention)
    hub = FeedHub(ctx.redis, settings.redis_namespace)
    checkins = CheckIns(
        ctx.db,
        deps,
        policy,
        publisher,
        settings.consent_cache_ttl_s,
        ctx.redis,
        settings.redis_namespace,
    )
    messages = Messages(
        ctx.db,
        deps,
        policy,
        make_sender(settings.sender),
        interval_s=settings.send_interval_s,
        batch_size=settings.send_batch_size,
    )
    handoffs = Handoffs(ctx.db, deps, policy, publisher)

    async def maintenance() -> None:
        await maintenance_loop(handoffs, publisher, settings.maintenance_interval_s)

    background: list[Callable[[], Awaitable[None]]] = [messages.run, maintenance]
    if settings.consume_events:
        consumer = notification_consumer(
            ctx.db, ctx.redis, settings.redis_namespace, settings.events, messages
        )
        background.append(consumer.run)

    def register(server: grpc.aio.Server) -> None:
        notification_service_pb2_grpc.add_NotificationServiceServicer_to_server(
            NotificationServicer(checkins, hub, messages, handoffs), server
        )

    server = build_server(
        ctx, service_names=[SERVICE_NAME], register=register, background=background
    )
    server.spec.on_stop.insert(0, hub.close)
    server.spec.on_stop.insert(0, deps.close)
    return server


def run() -> None:
    main(NotificationSettings(), MIGRATIONS, make_server)


if __name__ == "__main__":
    run()
