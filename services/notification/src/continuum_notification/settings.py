"""Configuration of the notification service (environment variables ``CONTINUUM_*``)."""

from continuum_runtime.config import ServiceSettings


class NotificationSettings(ServiceSettings):
    service_name: str = "notification"
    port: int = 50056
