"""OpenTelemetry, set up once per process.

Spans go to an OTLP collector when an endpoint is configured, to an in-memory exporter in
tests, and nowhere otherwise. gRPC server and client spans come from interceptors that the
server bootstrap and :func:`continuum_runtime.client.create_channel` add; database spans
from the SQLAlchemy instrumentation of each engine; Redis spans from the redis-py
instrumentation. Health checks make no spans.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_lock = threading.Lock()
_provider: TracerProvider | None = None
_redis_instrumented = False


def setup_telemetry(
    service_name: str,
    *,
    otlp_endpoint: str = "",
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """Install the process's tracer provider (first call wins) and instrument Redis."""
    global _provider, _redis_instrumented
    with _lock:
        if _provider is not None:
            if exporter is not None:
                _provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
            if exporter is not None:
                provider.add_span_processor(SimpleSpanProcessor(exporter))
            elif otlp_endpoint:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter,
                )

                provider.add_span_processor(
                    BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint))
                )
            trace.set_tracer_provider(provider)
            _provider = provider
        if not _redis_instrumented:
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            RedisInstrumentor().instrument(tracer_provider=_provider)
            _redis_instrumented = True
        return _provider


def shutdown_telemetry() -> None:
    """Export what is still queued and stop the exporter (a service's last step, so the
    spans of its final seconds, drain included, are not lost)."""
    with _lock:
        if _provider is not None:
            _provider.shutdown()


def in_memory_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def instrument_engine(engine: Any) -> None:
    """Database spans for one SQLAlchemy async engine (one span per statement).

    The engine tracer is attached directly, so every engine of a process is traced
    (the instrumentor's own guard would stop at the first); asyncpg is not instrumented
    as well, which would give two spans per statement.
    """
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    meter = get_meter("continuum_runtime.db")
    usage = meter.create_up_down_counter(
        name="db.client.connections.usage", unit="connections", description="connections in use"
    )
    EngineTracer(trace.get_tracer("continuum_runtime.db"), engine.sync_engine, usage)  # type: ignore[no-untyped-call]


def grpc_server_interceptor() -> Any:
    from opentelemetry.instrumentation.grpc import aio_server_interceptor
    from opentelemetry.instrumentation.grpc.filters import health_check, negate

    return aio_server_interceptor(filter_=negate(health_check()))  # type: ignore[no-untyped-call]


def grpc_client_interceptors() -> list[Any]:
    from opentelemetry.instrumentation.grpc import aio_client_interceptors
    from opentelemetry.instrumentation.grpc.filters import health_check, negate

    return list(aio_client_interceptors(filter_=negate(health_check())))  # type: ignore[no-untyped-call]


def inject_context() -> dict[str, str]:
    """The current trace context as W3C headers (traceparent, tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract_context(carrier: dict[str, str]) -> Any:
    return propagate.extract(carrier)


def current_traceparent() -> str:
    """The current span's W3C ``traceparent`` ('' outside a span), to keep with a record
    whose later processing should link back to the work that last changed it."""
    return inject_context().get("traceparent", "")


def links_to(carrier: Mapping[str, str]) -> list[trace.Link]:
    """A span link to the context in ``carrier`` (W3C headers), or none if it holds none.

    For work that a record's earlier change caused but that runs later in a trace of its
    own (a detector, a scheduled job): a link, not a parent, so no trace spans the wait.
    """
    if not carrier.get("traceparent"):
        return []
    context = trace.get_current_span(propagate.extract(dict(carrier))).get_span_context()
    return [trace.Link(context)] if context.is_valid else []


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
