"""Outbound gRPC channels: deadline propagation, the service's bearer token, tracing, TLS."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from continuum_runtime.auth import service_token
from continuum_runtime.config import ServiceSettings, TLSSettings
from continuum_runtime.deadlines import outbound_timeout
from continuum_runtime.telemetry import carry_context, grpc_client_spans, spans_exported

TokenSource = Callable[[], str]
M = TypeVar("M", bound=Message)

if TYPE_CHECKING:
    _UU = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _US = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    _SU = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
    _SS = grpc.aio.StreamStreamClientInterceptor[Any, Any]
else:
    _UU = grpc.aio.UnaryUnaryClientInterceptor
    _US = grpc.aio.UnaryStreamClientInterceptor
    _SU = grpc.aio.StreamUnaryClientInterceptor
    _SS = grpc.aio.StreamStreamClientInterceptor


class CachedToken:
    """Re-mints the token shortly before it expires."""

    def __init__(self, mint: Callable[[], str], ttl_s: float, refresh_before_s: float = 60.0):
        self._mint = mint
        self._ttl = ttl_s
        self._refresh_before = min(refresh_before_s, ttl_s / 2)
        self._token = ""
        self._expires = 0.0

    def __call__(self) -> str:
        now = time.monotonic()
        if now >= self._expires - self._refresh_before:
            self._token = self._mint()
            self._expires = now + self._ttl
        return self._token


def _with_call_settings(
    details: grpc.aio.ClientCallDetails,
    token: TokenSource | None,
    default_deadline_s: float,
    margin_s: float,
) -> grpc.aio.ClientCallDetails:
    timeout = outbound_timeout(details.timeout, default_s=default_deadline_s, margin_s=margin_s)
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    if token is not None and "authorization" not in metadata:
        metadata["authorization"] = f"Bearer {token()}"
    carry_context(metadata)
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=timeout,
        metadata=metadata,
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


class _UnaryUnary(_UU):
    def __init__(self, token: TokenSource | None, default_s: float, margin_s: float, spans: Any):
        self._args = (token, default_s, margin_s)
        self._spans = spans

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        details = _with_call_settings(client_call_details, *self._args)
        if self._spans is not None and spans_exported():
            return await self._spans.intercept_unary_unary(continuation, details, request)
        return await continuation(details, request)


class _UnaryStream(_US):
    def __init__(self, token: TokenSource | None, default_s: float, margin_s: float, spans: Any):
        self._token = token
        self._spans = spans

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        # Streams are not bounded by the default deadline (a feed lasts as long as the
        # caller wants); an explicit timeout or the handled RPC's deadline still applies.
        details = _stream_details(client_call_details, self._token)
        if self._spans is not None and spans_exported():
            return await self._spans.intercept_unary_stream(continuation, details, request)
        return await continuation(details, request)


class _StreamUnary(_SU):
    def __init__(self, token: TokenSource | None, default_s: float, margin_s: float, spans: Any):
        self._args = (token, default_s, margin_s)
        self._spans = spans

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        details = _with_call_settings(client_call_details, *self._args)
        if self._spans is not None and spans_exported():
            return await self._spans.intercept_stream_unary(continuation, details, request_iterator)
        return await continuation(details, request_iterator)


class _StreamStream(_SS):
    def __init__(self, token: TokenSource | None, default_s: float, margin_s: float, spans: Any):
        self._token = token
        self._spans = spans

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        details = _stream_details(client_call_details, self._token)
        if self._spans is not None and spans_exported():
            return await self._spans.intercept_stream_stream(
                continuation, details, request_iterator
            )
        return await continuation(details, request_iterator)


def _stream_details(details: Any, token: TokenSource | None) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    if token is not None and "authorization" not in metadata:
        metadata["authorization"] = f"Bearer {token()}"
    carry_context(metadata)
    from continuum_runtime.deadlines import time_remaining

    remaining = time_remaining()
    timeout = details.timeout
    if remaining is not None and details.timeout is not None:
        timeout = min(details.timeout, remaining)
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=timeout,
        metadata=metadata,
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


# Round robin over every address the target resolves to (a headless Service's pods), so
# that calls spread across replicas instead of sticking to the first one; retry
# UNAVAILABLE only (the call never reached a handler or the server is restarting).
_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    }
)


def create_channel(
    target: str,
    *,
    token: TokenSource | None = None,
    tls: TLSSettings | None = None,
    default_deadline_s: float = 10.0,
    deadline_margin_s: float = 0.05,
    traced: bool = True,
    options: list[tuple[str, Any]] | None = None,
) -> grpc.aio.Channel:
    """A channel to another service.

    Every call gets a deadline: the remaining time of the RPC being handled less a margin,
    or ``default_deadline_s`` outside one. The bearer token from ``token`` is attached;
    UNAVAILABLE is retried with backoff under a retry budget; keepalive is on.
    """
    channel_options: list[tuple[str, Any]] = [
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        *(options or []),
    ]
    spans = grpc_client_spans() if traced else {}
    settings = (token, default_deadline_s, deadline_margin_s)
    interceptors: list[Any] = [
        _UnaryUnary(*settings, spans.get("unary_unary")),
        _UnaryStream(*settings, spans.get("unary_stream")),
        _StreamUnary(*settings, spans.get("stream_unary")),
        _StreamStream(*settings, spans.get("stream_stream")),
    ]
    if tls is not None and tls.enabled:
        credentials = channel_credentials(tls)
        if tls.server_name_override:
            channel_options.append(("grpc.ssl_target_name_override", tls.server_name_override))
        return grpc.aio.secure_channel(
            target, credentials, options=channel_options, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(target, options=channel_options, interceptors=interceptors)


def channel_credentials(tls: TLSSettings) -> grpc.ChannelCredentials:
    """Server verification with ``ca_file`` (or system roots); a client certificate for mTLS."""
    root = tls.ca_file.read_bytes() if tls.ca_file else None
    key = tls.key_file.read_bytes() if tls.key_file else None
    cert = tls.cert_file.read_bytes() if tls.cert_file else None
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=cert
    )


def service_channel(settings: ServiceSettings, target: str) -> grpc.aio.Channel:
    """A channel from this service to another: its own service token (re-minted before it
    expires), its TLS settings and its default deadline and margin."""
    token = CachedToken(
        lambda: service_token(settings.auth, settings.service_name), ttl_s=24 * 3600.0
    )
    return create_channel(
        target,
        token=token,
        tls=settings.tls,
        default_deadline_s=settings.default_deadline_s,
        deadline_margin_s=settings.deadline_margin_s,
    )


def error_detail(err: grpc.aio.AioRpcError, message_type: type[M]) -> M | None:
    """The first detail of type ``message_type`` in a failed call's rich status, if any
    (e.g. inventory's ReservationFailure, or google.rpc.ErrorInfo)."""
    trailing: Any = err.trailing_metadata() or ()
    for key, value in trailing:
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            found = message_type()
            if detail.Unpack(found):
                return found
    return None


def error_reason(err: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call ("" when it carries none)."""
    info = error_detail(err, error_details_pb2.ErrorInfo)
    return info.reason if info is not None else ""
