"""Configuration of the profile service (environment variables ``CONTINUUM_*``)."""

from continuum_runtime.config import ServiceSettings


class ProfileSettings(ServiceSettings):
    service_name: str = "profile"
    port: int = 50052
