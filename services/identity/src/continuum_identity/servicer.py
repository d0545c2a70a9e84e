"""The gRPC servicer of continuum.identity.v1.IdentityService.

Until the service's behaviour lands (issue #3) every RPC answers UNIMPLEMENTED from
the generated base class; the server, health, reflection, auth, migrations and the outbox
relay already run.
"""

from continuum.identity.v1 import identity_service_pb2, identity_service_pb2_grpc

SERVICE_NAME = identity_service_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name


class IdentityServicer(identity_service_pb2_grpc.IdentityServiceServicer):
    """IdentityService on top of the runtime."""
