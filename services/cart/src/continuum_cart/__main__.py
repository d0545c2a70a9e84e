"""Entry point: ``continuum-cart [serve|migrate]`` or ``python -m continuum_cart``."""

from pathlib import Path

import grpc

from continuum.cart.v1 import cart_service_pb2_grpc
from continuum_cart.abandonment import AbandonmentDetector
from continuum_cart.handlers import identity_consumer
from continuum_cart.inventory import Inventory
from continuum_cart.servicer import SERVICE_NAME, CartServicer
from continuum_cart.settings import CartSettings
from continuum_runtime.app import ServiceContext, build_server, main
from continuum_runtime.client import service_channel
from continuum_runtime.server import ServiceServer

MIGRATIONS = Path(__file__).parent / "migrations"


def make_server(ctx: ServiceContext) -> ServiceServer:
    settings = ctx.settings
    assert isinstance(settings, CartSettings)
    inventory = Inventory(
        service_channel(settings, settings.inventory_target), settings.item_cache_ttl_s
    )
    detector = AbandonmentDetector(
        ctx.db,
        idle_s=settings.abandon_after_s,
        interval_s=settings.abandon_check_interval_s,
        batch_size=settings.abandon_batch_size,
    )
    background = [detector.run]
    if settings.consume_identity_events:
        consumer = identity_consumer(ctx.db, ctx.redis, settings.redis_namespace, settings.events)
        background.append(consumer.run)

    def register(server: grpc.aio.Server) -> None:
        cart_service_pb2_grpc.add_CartServiceServicer_to_server(
            CartServicer(ctx.db, inventory, settings.checkout_reservation_ttl_s), server
        )

    return build_server(ctx, service_names=[SERVICE_NAME], register=register, background=background)


def run() -> None:
    main(CartSettings(), MIGRATIONS, make_server)


if __name__ == "__main__":
    run()
