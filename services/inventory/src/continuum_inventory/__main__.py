"""Entry point: ``continuum-inventory [serve|migrate]`` or ``python -m continuum_inventory``."""

from pathlib import Path

import grpc

from continuum.inventory.v1 import inventory_service_pb2_grpc
from continuum_inventory.handlers import Sweeper, order_consumer
from continuum_inventory.servicer import SERVICE_NAME, InventoryServicer, defaults_of
from continuum_inventory.settings import InventorySettings
from continuum_runtime.app import ServiceContext, build_server, main
from continuum_runtime.server import ServiceServer

MIGRATIONS = Path(__file__).parent / "migrations"


def make_server(ctx: ServiceContext) -> ServiceServer:
    settings = ctx.settings
    assert isinstance(settings, InventorySettings)
    sweeper = Sweeper(ctx.db, defaults_of(settings), settings)
    background = [sweeper.run]
    if settings.consume_orders:
        background.append(order_consumer(ctx.db, ctx.redis, settings).run)

    servicer = InventoryServicer(ctx.db, settings)

    def register(server: grpc.aio.Server) -> None:
        inventory_service_pb2_grpc.add_InventoryServiceServicer_to_server(servicer, server)

    return build_server(
        ctx,
        service_names=[SERVICE_NAME],
        register=register,
        background=background,
        on_stop=[servicer.reservations.close],
    )


def run() -> None:
    main(InventorySettings(), MIGRATIONS, make_server)


if __name__ == "__main__":
    run()
