"""Configuration of the recommendation service (environment variables ``CONTINUUM_*``)."""

from continuum_runtime.config import ServiceSettings


class RecommendationSettings(ServiceSettings):
    service_name: str = "recommendation"
    port: int = 50055
    # The profile service, host:port (CONTINUUM_PROFILE_TARGET). Traits and behaviour arrive
    # through profile's events; no profile call is on the serving path.
    profile_target: str = "127.0.0.1:50052"
    # The inventory service (item master and availability), host:port
    # (CONTINUUM_INVENTORY_TARGET).
    inventory_target: str = "127.0.0.1:50054"
    # How long an availability answer of inventory for one (store, SKU) is reused, and an
    # answer for one (subject, context) with it.
    availability_ttl_s: float = 10.0
    # How long a store found in inventory is known to exist.
    store_ttl_s: float = 300.0
    # How often each replica applies newly stored behaviour to its in-memory model and
    # checks for a newly activated version.
    follow_interval_s: float = 0.2
    # Answers kept in the per-replica answer cache.
    answer_cache_size: int = 100_000
    # Consume profile's and cart's events (behaviour, traits, orders).
    consume_events: bool = True
    # Attribution window of RecordFeedback: recommendation ids older than this are not
    # attributed.
    attribution_window_s: float = 7 * 24 * 3600.0
