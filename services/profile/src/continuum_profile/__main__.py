"""Entry point: ``continuum-profile [serve|migrate]`` or ``python -m continuum_profile``."""

from pathlib import Path

import grpc

from continuum.profile.v1 import profile_service_pb2_grpc
from continuum_profile.servicer import SERVICE_NAME, ProfileServicer
from continuum_profile.settings import ProfileSettings
from continuum_runtime.app import ServiceContext, build_server, main
from continuum_runtime.server import ServiceServer

MIGRATIONS = Path(__file__).parent / "migrations"


def make_server(ctx: ServiceContext) -> ServiceServer:
    def register(server: grpc.aio.Server) -> None:
        profile_service_pb2_grpc.add_ProfileServiceServicer_to_server(ProfileServicer(), server)

    return build_server(ctx, service_names=[SERVICE_NAME], register=register)


def run() -> None:
    main(ProfileSettings(), MIGRATIONS, make_server)


if __name__ == "__main__":
    run()
