"""The gRPC servicer of continuum.recommendation.v1.RecommendationService.

Until the service's behaviour lands (issue #7) every RPC answers UNIMPLEMENTED from
the generated base class; the server, health, reflection, auth, migrations and the outbox
relay already run.
"""

from continuum.recommendation.v1 import recommendation_service_pb2, recommendation_service_pb2_grpc

SERVICE_NAME = recommendation_service_pb2.DESCRIPTOR.services_by_name[
    "RecommendationService"
].full_name


class RecommendationServicer(recommendation_service_pb2_grpc.RecommendationServiceServicer):
    """RecommendationService on top of the runtime."""
