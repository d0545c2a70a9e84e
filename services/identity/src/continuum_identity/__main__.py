"""Entry point: ``continuum-identity [serve|migrate]`` or ``python -m continuum_identity``."""

from pathlib import Path

import grpc

from continuum.identity.v1 import identity_service_pb2_grpc
from continuum_identity.identifiers import IdentifierHasher
from continuum_identity.servicer import SERVICE_NAME, IdentityServicer
from continuum_identity.settings import IdentitySettings
from continuum_runtime.app import ServiceContext, build_server, main
from continuum_runtime.server import ServiceServer

MIGRATIONS = Path(__file__).parent / "migrations"


def make_server(ctx: ServiceContext) -> ServiceServer:
    def register(server: grpc.aio.Server) -> None:
        settings = ctx.settings
        assert isinstance(settings, IdentitySettings)
        hasher = IdentifierHasher(settings.hashing_key(), settings.default_phone_region)
        identity_service_pb2_grpc.add_IdentityServiceServicer_to_server(
            IdentityServicer(ctx.db, hasher), server
        )

    return build_server(ctx, service_names=[SERVICE_NAME], register=register)


def run() -> None:
    main(IdentitySettings(), MIGRATIONS, make_server)


if __name__ == "__main__":
    run()
