"""The gRPC servicer of continuum.notification.v1.NotificationService.

Until the service's behaviour lands (issue #8) every RPC answers UNIMPLEMENTED from
the generated base class; the server, health, reflection, auth, migrations and the outbox
relay already run.
"""

from continuum.notification.v1 import notification_service_pb2, notification_service_pb2_grpc

SERVICE_NAME = notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name


class NotificationServicer(notification_service_pb2_grpc.NotificationServiceServicer):
    """NotificationService on top of the runtime."""
