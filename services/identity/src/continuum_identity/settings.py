"""Configuration of the identity service (environment variables ``CONTINUUM_*``)."""

from continuum_runtime.config import ServiceSettings


class IdentitySettings(ServiceSettings):
    service_name: str = "identity"
    port: int = 50051
