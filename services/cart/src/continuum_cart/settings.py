"""Configuration of the cart service (environment variables ``CONTINUUM_*``)."""

from continuum_runtime.config import ServiceSettings


class CartSettings(ServiceSettings):
    service_name: str = "cart"
    port: int = 50053
