"""Entry point: ``continuum-recommendation [serve|migrate]`` or ``python -m continuum_recommendation``."""

from pathlib import Path

import grpc

from continuum.recommendation.v1 import recommendation_service_pb2_grpc
from continuum_recommendation.servicer import SERVICE_NAME, RecommendationServicer
from continuum_recommendation.settings import RecommendationSettings
from continuum_runtime.app import ServiceContext, build_server, main
from continuum_runtime.server import ServiceServer

MIGRATIONS = Path(__file__).parent / "migrations"


def make_server(ctx: ServiceContext) -> ServiceServer:
    def register(server: grpc.aio.Server) -> None:
        recommendation_service_pb2_grpc.add_RecommendationServiceServicer_to_server(
            RecommendationServicer(), server
        )

    return build_server(ctx, service_names=[SERVICE_NAME], register=register)


def run() -> None:
    main(RecommendationSettings(), MIGRATIONS, make_server)


if __name__ == "__main__":
    run()
