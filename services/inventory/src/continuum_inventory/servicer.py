"""The gRPC servicer of continuum.inventory.v1.InventoryService.

Until the service's behaviour lands (issue #5) every RPC answers UNIMPLEMENTED from
the generated base class; the server, health, reflection, auth, migrations and the outbox
relay already run.
"""

from continuum.inventory.v1 import inventory_service_pb2, inventory_service_pb2_grpc

SERVICE_NAME = inventory_service_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name


class InventoryServicer(inventory_service_pb2_grpc.InventoryServiceServicer):
    """InventoryService on top of the runtime."""
