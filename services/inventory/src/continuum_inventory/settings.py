"""Configuration of the inventory service (environment variables ``CONTINUUM_*``)."""

from continuum_runtime.config import ServiceSettings


class InventorySettings(ServiceSettings):
    service_name: str = "inventory"
    port: int = 50054
