"""Entry point: ``continuum-notification [serve|migrate]`` or ``python -m continuum_notification``."""

from pathlib import Path

import grpc

from continuum.notification.v1 import notification_service_pb2_grpc
from continuum_notification.servicer import SERVICE_NAME, NotificationServicer
from continuum_notification.settings import NotificationSettings
from continuum_runtime.app import ServiceContext, build_server, main
from continuum_runtime.server import ServiceServer

MIGRATIONS = Path(__file__).parent / "migrations"


def make_server(ctx: ServiceContext) -> ServiceServer:
    def register(server: grpc.aio.Server) -> None:
        notification_service_pb2_grpc.add_NotificationServiceServicer_to_server(
            NotificationServicer(), server
        )

    return build_server(ctx, service_names=[SERVICE_NAME], register=register)


def run() -> None:
    main(NotificationSettings(), MIGRATIONS, make_server)


if __name__ == "__main__":
    run()
