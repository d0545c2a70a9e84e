"""Configuration of the notification service (environment variables ``CONTINUUM_*``).

Deployment-wide *policy* (frequency caps, quiet hours default, message kinds, retry policy,
check-in window, briefing TTL and budget, feed retention, handoff TTL) lives in the
database and is changed with UpdateNotificationSettings; the values here are the process
wiring (where the other services are, where messages go) and the first-run defaults.
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from continuum_runtime.config import ServiceSettings, project_data_dir


class SenderSettings(BaseModel):
    """Where customer messages go (``CONTINUUM_SENDER__<NAME>``)."""

    # "file": one JSON line per message in ``file_path`` (the default; also logs it);
    # "smtp": e-mail through ``smtp_host``; other channels always use the file sender.
    kind: Literal["file", "smtp"] = "file"
    file_path: Path = Field(default_factory=lambda: project_data_dir() / "outbox-messages.jsonl")
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    smtp_timeout_s: float = 10.0
    from_address: str = "Continuum <no-reply@continuum.invalid>"


class NotificationSettings(ServiceSettings):
    service_name: str = "notification"
    port: int = 50056
    # The services a briefing is assembled from, host:port (CONTINUUM_<NAME>_TARGET).
    identity_target: str = "127.0.0.1:50051"
    profile_target: str = "127.0.0.1:50052"
    cart_target: str = "127.0.0.1:50053"
    inventory_target: str = "127.0.0.1:50054"
    recommendation_target: str = "127.0.0.1:50055"
    # How long a store's existence (inventory's location) is remembered.
    store_cache_ttl_s: float = 300.0
    # When profile cannot be reached, a recognition consent it confirmed within this time
    # is still honoured (the profile part of the briefing is then missing); otherwise the
    # check-in fails closed with UNAVAILABLE.
    consent_cache_ttl_s: float = 24 * 3600.0
    # Background work: the message sender, handoff expiry, feed re-publication.
    send_interval_s: float = 1.0
    send_batch_size: int = 50
    maintenance_interval_s: float = 5.0
    # Consume cart, inventory and profile events (abandonment, orders, back in stock,
    # wishlist changes, consent changes, store visits).
    consume_events: bool = True
    sender: SenderSettings = Field(default_factory=SenderSettings)
