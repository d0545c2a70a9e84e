"""Entry point: ``continuum-cart [serve|migrate]`` or ``python -m continuum_cart``."""

from pathlib import Path

import grpc

from continuum.cart.v1 import cart_service_pb2_grpc
from continuum_cart.servicer import SERVICE_NAME, CartServicer
from continuum_cart.settings import CartSettings
from continuum_runtime.app import ServiceContext, build_server, main
from continuum_runtime.server import ServiceServer

MIGRATIONS = Path(__file__).parent / "migrations"


def make_server(ctx: ServiceContext) -> ServiceServer:
    def register(server: grpc.aio.Server) -> None:
        cart_service_pb2_grpc.add_CartServiceServicer_to_server(CartServicer(), server)

    return build_server(ctx, service_names=[SERVICE_NAME], register=register)


def run() -> None:
    main(CartSettings(), MIGRATIONS, make_server)


if __name__ == "__main__":
    run()
