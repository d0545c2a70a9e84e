"""Client configuration: where the services are, how to authenticate, and call defaults."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

SERVICES: tuple[str, ...] = (
    "identity",
    "profile",
    "cart",
    "inventory",
    "recommendation",
    "notification",
)
# Fully-qualified gRPC service names, as in the contracts.
SERVICE_NAMES: dict[str, str] = {
    name: f"continuum.{name}.v1.{name.capitalize()}Service" for name in SERVICES
}
# The ports `make run` / `continuum up` use on loopback.
LOCAL_PORTS: dict[str, int] = {name: 50051 + i for i, name in enumerate(SERVICES)}


@dataclass(frozen=True)
class RetryConfig:
    """Retries of UNAVAILABLE only (the call did not reach a handler, or the server is
    restarting), with exponential backoff, under a retry budget: each failure spends a
    token, each success returns ``budget_token_ratio`` of one, and retries stop while
    fewer than half of ``budget_max_tokens`` are left (gRPC's retry throttling)."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0
    budget_max_tokens: int = 20
    budget_token_ratio: float = 0.1

    def service_config(self) -> str:
        """The gRPC service config (JSON) that applies this policy to every method."""
        config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
        if self.max_attempts > 1:
            config["methodConfig"] = [
                {
                    "name": [{}],
                    "retryPolicy": {
                        "maxAttempts": min(self.max_attempts, 5),
                        "initialBackoff": f"{self.initial_backoff_s:.3f}s",
                        "maxBackoff": f"{self.max_backoff_s:.3f}s",
                        "backoffMultiplier": self.backoff_multiplier,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
            config["retryThrottling"] = {
                "maxTokens": self.budget_max_tokens,
                "tokenRatio": self.budget_token_ratio,
            }
        return json.dumps(config)


@dataclass(frozen=True)
class TLSConfig:
    """TLS to the services: ``ca_file`` to verify them (system roots when None), and a
    client certificate and key for mutual TLS."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name_override: str = ""


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs. ``targets`` maps each service (``identity``, ``cart``,
    ...) to ``host:port``; services left out use the local ports of ``make run``.

    The bearer token comes from ``token`` or, when set, ``token_provider`` (called per call,
    so it can refresh). ``deadline_s`` bounds every unary call that passes no timeout of its
    own; streams run until cancelled unless given a timeout.
    """

    targets: Mapping[str, str] = field(default_factory=dict)
    token: str | None = None
    token_provider: Callable[[], str] | None = None
    tls: TLSConfig | None = None
    deadline_s: float = 5.0
    retry: RetryConfig = field(default_factory=RetryConfig)
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    user_agent: str = "continuum-sdk/0.1"

    def __post_init__(self) -> None:
        unknown = set(self.targets) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services in targets: {sorted(unknown)}")
        if self.deadline_s <= 0:
            raise ValueError("deadline_s must be positive")

    def target(self, service: str) -> str:
        return self.targets.get(service) or f"127.0.0.1:{LOCAL_PORTS[service]}"

    def bearer(self) -> str | None:
        if self.token_provider is not None:
            return self.token_provider()
        return self.token

    def with_token(self, token: str) -> ClientConfig:
        return replace(self, token=token, token_provider=None)

    @classmethod
    def local(cls, token: str | None = None, host: str = "127.0.0.1") -> ClientConfig:
        """The suite as ``make run`` starts it: ports 50051-50056 on ``host``."""
        return cls(
            targets={name: f"{host}:{port}" for name, port in LOCAL_PORTS.items()},
            token=token,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientConfig:
        """``CONTINUUM_<SERVICE>_TARGET`` per service, ``CONTINUUM_TOKEN``,
        ``CONTINUUM_DEADLINE_S`` and ``CONTINUUM_TLS_CA_FILE`` (TLS on when set)."""
        env = os.environ if environ is None else environ
        targets = {
            name: env[f"CONTINUUM_{name.upper()}_TARGET"]
            for name in SERVICES
            if env.get(f"CONTINUUM_{name.upper()}_TARGET")
        }
        ca = env.get("CONTINUUM_TLS_CA_FILE")
        return cls(
            targets=targets,
            token=env.get("CONTINUUM_TOKEN") or None,
            tls=TLSConfig(ca_file=Path(ca)) if ca else None,
            deadline_s=float(env.get("CONTINUUM_DEADLINE_S", "5")),
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.service_config", self.retry.service_config()),
            ("grpc.enable_retries", 1 if self.retry.max_attempts > 1 else 0),
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.primary_user_agent", self.user_agent),
        ]
        if self.tls is not None and self.tls.server_name_override:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name_override))
        return options
