"""The gRPC servicer of continuum.cart.v1.CartService.

Until the service's behaviour lands (issue #6) every RPC answers UNIMPLEMENTED from
the generated base class; the server, health, reflection, auth, migrations and the outbox
relay already run.
"""

from continuum.cart.v1 import cart_service_pb2, cart_service_pb2_grpc

SERVICE_NAME = cart_service_pb2.DESCRIPTOR.services_by_name["CartService"].full_name


class CartServicer(cart_service_pb2_grpc.CartServiceServicer):
    """CartService on top of the runtime."""
