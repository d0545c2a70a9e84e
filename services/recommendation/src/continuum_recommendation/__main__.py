"""Entry point: ``continuum-recommendation [serve|migrate]`` or ``python -m continuum_recommendation``."""

from pathlib import Path

import grpc

from continuum.recommendation.v1 import recommendation_service_pb2_grpc
from continuum_recommendation.follower import Follower
from continuum_recommendation.handlers import behaviour_consumer
from continuum_recommendation.inventory import Inventory
from continuum_recommendation.live import LiveModel
from continuum_recommendation.recommender import Recommender
from continuum_recommendation.servicer import SERVICE_NAME, RecommendationServicer
from continuum_recommendation.settings import RecommendationSettings
from continuum_runtime.app import ServiceContext, build_server, main
from continuum_runtime.client import service_channel
from continuum_runtime.server import ServiceServer

MIGRATIONS = Path(__file__).parent / "migrations"


def make_server(ctx: ServiceContext) -> ServiceServer:
    settings = ctx.settings
    assert isinstance(settings, RecommendationSettings)
    model = LiveModel()
    inventory = Inventory(
        service_channel(settings, settings.inventory_target),
        settings.availability_ttl_s,
        settings.store_ttl_s,
    )
    recommender = Recommender(
        model, inventory, settings.availability_ttl_s, settings.answer_cache_size
    )
    follower = Follower(ctx.db, model, settings.follow_interval_s, freeze_heap=settings.freeze_heap)
    background = [follower.run]
    if settings.consume_events:
        consumer = behaviour_consumer(ctx.db, ctx.redis, settings.redis_namespace, settings.events)
        background.append(consumer.run)
    servicer = RecommendationServicer(ctx.db, recommender, follower, settings.attribution_window_s)

    def register(server: grpc.aio.Server) -> None:
        recommendation_service_pb2_grpc.add_RecommendationServiceServicer_to_server(
            servicer, server
        )

    return build_server(ctx, service_names=[SERVICE_NAME], register=register, background=background)


def run() -> None:
    main(RecommendationSettings(), MIGRATIONS, make_server)


if __name__ == "__main__":
    run()
