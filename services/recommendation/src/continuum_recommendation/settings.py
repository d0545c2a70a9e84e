"""Configuration of the recommendation service (environment variables ``CONTINUUM_*``)."""

from continuum_runtime.config import ServiceSettings


class RecommendationSettings(ServiceSettings):
    service_name: str = "recommendation"
    port: int = 50055
