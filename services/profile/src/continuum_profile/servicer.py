"""The gRPC servicer of continuum.profile.v1.ProfileService.

Until the service's behaviour lands (issue #4) every RPC answers UNIMPLEMENTED from
the generated base class; the server, health, reflection, auth, migrations and the outbox
relay already run.
"""

from continuum.profile.v1 import profile_service_pb2, profile_service_pb2_grpc

SERVICE_NAME = profile_service_pb2.DESCRIPTOR.services_by_name["ProfileService"].full_name


class ProfileServicer(profile_service_pb2_grpc.ProfileServiceServicer):
    """ProfileService on top of the runtime."""
