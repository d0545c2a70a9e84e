"""Configuration from the environment, in one place.

Every setting is read from an environment variable prefixed ``CONTINUUM_`` (nested
sections use ``__``, e.g. ``CONTINUUM_AUTH__TOKEN_KEY``). A service adds its own settings
by subclassing :class:`ServiceSettings`. When ``CONTINUUM_DATABASE_URL`` or
``CONTINUUM_REDIS_URL`` is not set, the service starts on the embedded stack (see
:mod:`continuum_runtime.embedded`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def project_data_dir() -> Path:
    """The project-local folder for embedded data: ``./.data`` under the working tree."""
    return Path.cwd() / ".data"


class AuthSettings(BaseModel):
    """Bearer-token (JWT) authentication."""

    # Symmetric key for HS256 tokens. Required for any server that authenticates.
    token_key: SecretStr = SecretStr("")
    # Optional PEM public key: when set, RS256/ES256 tokens are verified with it instead.
    public_key: str = ""
    algorithms: list[str] = Field(default_factory=lambda: ["HS256"])
    issuer: str = "continuum"
    audience: str = "continuum"
    # Leeway for clock skew when checking exp/nbf, seconds.
    leeway_s: float = 30.0
    # Token a service presents on its own outbound calls (minted from token_key if empty).
    service_token: SecretStr = SecretStr("")


class TLSSettings(BaseModel):
    """TLS for servers and clients; mutual TLS when a CA is given on the server side."""

    enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    # Server: CA that client certificates must chain to (turns on mutual TLS).
    # Client: CA that the server certificate must chain to (system roots if unset).
    ca_file: Path | None = None
    require_client_cert: bool = False
    # Client only: override the expected server name (tests, IP targets).
    server_name_override: str = ""


class DatabaseSettings(BaseModel):
    """PostgreSQL connection pool and safety timeouts."""

    # Connections are opened as needed up to pool_size and then kept. Overflow connections
    # (max_overflow) are closed as soon as they are returned to a full pool, so a burst
    # that needs them pays for new PostgreSQL backends again next time, which prolongs
    # the burst: none by default.
    pool_size: int = 20
    max_overflow: int = 0
    pool_timeout_s: float = 5.0
    statement_timeout_ms: int = 5_000
    idle_in_transaction_timeout_ms: int = 10_000
    connect_timeout_s: float = 5.0
    # Ping each pooled connection before use. Off by default: it costs a round trip per
    # checkout, and a connection that died with the server fails its statement (the call
    # gets UNAVAILABLE) and invalidates the pool, so the next call reconnects.
    pre_ping: bool = False
    # Connections of the driver-level pool that serves the hottest one-statement reads
    # (Database.fetch), next to the SQLAlchemy pool.
    read_pool_size: int = 5


class EventSettings(BaseModel):
    """Outbox relay and stream consumers."""

    relay_batch_size: int = 200
    relay_poll_interval_s: float = 0.05
    consumer_batch_size: int = 64
    consumer_block_ms: int = 500
    # A pending message idle this long is claimed by another consumer (crash recovery).
    claim_idle_ms: int = 15_000
    # After this many deliveries a message goes to the dead-letter stream.
    max_deliveries: int = 10
    # Approximate cap on a stream's length.
    stream_maxlen: int = 1_000_000


class ServiceSettings(BaseSettings):
    """Settings shared by every service. Environment variables: ``CONTINUUM_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="CONTINUUM_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    service_name: str = "continuum"
    environment: str = "development"
    host: str = "127.0.0.1"
    port: int = 0
    # Async SQLAlchemy URL (postgresql+asyncpg://...). Empty: embedded PostgreSQL.
    database_url: SecretStr = SecretStr("")
    # redis:// or unix:// URL. Empty: embedded Redis.
    redis_url: SecretStr = SecretStr("")
    # Prefix of every Redis key and stream this deployment uses.
    redis_namespace: str = "continuum"
    data_dir: Path = Field(default_factory=project_data_dir)
    run_migrations: bool = True

    # Deadline applied to an incoming call whose caller set none, seconds.
    default_deadline_s: float = 10.0
    # Kept back from the remaining time when a deadline is propagated downstream.
    deadline_margin_s: float = 0.05
    # Beyond this many concurrent RPCs new calls get RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 1_000
    # SIGTERM: how long in-flight calls may run before they are cancelled.
    drain_grace_s: float = 20.0
    # SIGTERM: how long health says NOT_SERVING before the server stops taking calls.
    drain_notice_s: float = 0.2
    # Seconds between dependency health checks.
    health_interval_s: float = 2.0

    # The event loop a service runs on: "uvloop" (default), or "asyncio" (the standard
    # library's) should a platform need it.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Once serving, move the heap alive then out of the garbage collector's full scans
    # (see continuum_runtime.heap): a full collection then scans only what came later.
    freeze_heap: bool = True

    otlp_endpoint: str = ""
    log_level: str = "INFO"
    log_json: bool = True

    auth: AuthSettings = Field(default_factory=AuthSettings)
    tls: TLSSettings = Field(default_factory=TLSSettings)
    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    events: EventSettings = Field(default_factory=EventSettings)
