"""Configuration of the profile service (environment variables ``CONTINUUM_*``)."""

from typing import Literal

from pydantic import BaseModel, Field

from continuum_runtime.config import ServiceSettings


class IngestSettings(BaseModel):
    """Limits on ingested events (``CONTINUUM_INGEST__<NAME>``)."""

    # An event may occur at most this far in the future (senders' clock skew).
    max_future_skew_s: float = 300.0
    # Events older than this are rejected (TIME_TOO_OLD): the event log's retention.
    retention_days: int = 730
    # Deadline of one BatchResolveIdentity call; past it the batch is stored unresolved.
    resolve_timeout_s: float = 5.0
    # Resolution cache: identifier set -> customer, per process.
    cache_ttl_s: float = 300.0
    cache_max_entries: int = 200_000
    # Unresolved events (identity was down) are retried this often, this many at a time.
    retry_interval_s: float = 2.0
    retry_batch: int = 500
    # How stored events are announced: "split" (default: the browsing kinds in one
    # profile.events_ingested envelope per batch, the rest one profile.event_ingested each),
    # "per_event" (every event its own profile.event_ingested), or "off".
    publish_ingested: Literal["split", "per_event", "off"] = "split"
    # Backpressure: while the deriver is behind (derive.lag_limit_s), a batch waits at most
    # this long before it is stored.
    max_hold_s: float = Field(default=2.0, ge=0.0)


class DeriveSettings(BaseModel):
    """The background deriver (``CONTINUUM_DERIVE__<NAME>``)."""

    enabled: bool = True
    # A customer is derived this long after its first pending event, so that a burst of
    # events is folded in one pass.
    delay_s: float = 0.2
    # Idle poll interval.
    poll_interval_s: float = 0.05
    # Backpressure: while a pass finds customers that waited longer than this past their
    # due time, this replica's ingestion holds its batches (ingest.max_hold_s), so that
    # profiles stay within about a second of what was accepted; 0 turns it off.
    lag_limit_s: float = Field(default=0.15, ge=0.0)
    # Customers claimed per pass.
    batch_customers: int = 200
    # A claimed customer comes due again after this long if its pass never finished.
    lease_s: float = 30.0
    # profile.profile_updated for one customer at most this often; a change inside the
    # interval is published when it ends.
    publish_interval_s: float = 30.0


class ProfileSettings(ServiceSettings):
    service_name: str = "profile"
    port: int = 50052
    # The identity service, host:port (CONTINUUM_IDENTITY_TARGET).
    identity_target: str = "127.0.0.1:50051"
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    derive: DeriveSettings = Field(default_factory=DeriveSettings)
