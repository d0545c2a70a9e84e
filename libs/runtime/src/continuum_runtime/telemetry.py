"""OpenTelemetry, set up once per process.

Spans go to an OTLP collector when an endpoint is configured, to an in-memory exporter in
tests, and nowhere otherwise (then they are not even recorded: see _RecordWhileExported).
gRPC server and client spans come from interceptors that the server bootstrap and
:func:`continuum_runtime.client.create_channel` add; database spans from the SQLAlchemy
instrumentation of each engine; Redis spans from the redis-py instrumentation. Health
checks make no spans, nor do background loops while idle (:func:`quiet`): what they do
is traced when it is work (an event handled, a batch published, a cart abandoned).

While nothing receives spans, none of that instrumentation runs (building spans that are
never recorded cost about a third of a cached read's CPU): gRPC calls then only carry the
caller's W3C trace context through, so a trace still continues across this service.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.instrumentation.utils import (
    is_instrumentation_enabled,
    suppress_instrumentation,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)

_lock = threading.Lock()
_provider: TracerProvider | None = None
_redis_instrumented = False


class _RecordWhileExported(Sampler):
    """Spans are recorded (parent-based, always on at the root) once something receives
    them: an OTLP collector or a test's exporter. Until then spans are not recorded, which
    costs a fraction of building spans nobody reads; trace context still propagates."""

    def __init__(self) -> None:
        self.exported = False
        self._sampler = ParentBased(ALWAYS_ON)

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: Any = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if not self.exported:
            return SamplingResult(Decision.DROP)
        return self._sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return "RecordWhileExported"


_sampler = _RecordWhileExported()


def setup_telemetry(
    service_name: str,
    *,
    otlp_endpoint: str = "",
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """Install the process's tracer provider (first call wins); once spans are exported,
    instrument Redis and the database engines."""
    global _provider
    with _lock:
        if _provider is not None:
            if exporter is not None:
                _provider.add_span_processor(SimpleSpanProcessor(exporter))
                _sampler.exported = True
        else:
            provider = TracerProvider(
                resource=Resource.create({"service.name": service_name}), sampler=_sampler
            )
            if exporter is not None:
                provider.add_span_processor(SimpleSpanProcessor(exporter))
                _sampler.exported = True
            elif otlp_endpoint:
                _sampler.exported = True
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter,
                )

                provider.add_span_processor(
                    BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint))
                )
            trace.set_tracer_provider(provider)
            _provider = provider
        if _sampler.exported:
            _instrument_stores()
        return _provider


# Engines whose statements will be traced once spans are exported (until then the
# instrumentation would only build spans nobody records, on every statement).
_untraced_engines: weakref.WeakSet[Any] = weakref.WeakSet()


def _instrument_stores() -> None:
    global _redis_instrumented
    if not _redis_instrumented:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument(tracer_provider=_provider)
        _redis_instrumented = True
    for engine in list(_untraced_engines):
        _trace_engine(engine)
        _untraced_engines.discard(engine)


def shutdown_telemetry() -> None:
    """Export what is still queued and stop the exporter (a service's last step, so the
    spans of its final seconds, drain included, are not lost)."""
    with _lock:
        if _provider is not None:
            _provider.shutdown()


def in_memory_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def instrument_engine(engine: Any) -> None:
    """Database spans for one SQLAlchemy async engine (one span per statement), from when
    spans are exported.

    The engine tracer is attached directly, so every engine of a process is traced
    (the instrumentor's own guard would stop at the first); asyncpg is not instrumented
    as well, which would give two spans per statement.
    """
    with _lock:
        if _sampler.exported:
            _trace_engine(engine)
        else:
            _untraced_engines.add(engine)


def _trace_engine(engine: Any) -> None:
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter

    meter = get_meter("continuum_runtime.db")
    usage = meter.create_up_down_counter(
        name="db.client.connections.usage", unit="connections", description="connections in use"
    )
    EngineTracer(trace.get_tracer("continuum_runtime.db"), engine.sync_engine, usage)  # type: ignore[no-untyped-call]


_HEALTH = "/grpc.health.v1.Health/"


def _not_health(details: Any) -> bool:
    """Trace every call but health checks (one prefix test per call: the instrumentation's
    composed filters parse the method name on every call)."""
    method = details.method
    if isinstance(method, bytes):
        return not method.startswith(_HEALTH.encode())
    return not str(method).startswith(_HEALTH)


def spans_exported() -> bool:
    """Whether spans are recorded and exported (an OTLP endpoint or a test's exporter)."""
    return _sampler.exported


_W3C_KEYS = frozenset({"traceparent", "tracestate", "baggage"})


def _carried(metadata: Any) -> dict[str, str]:
    return {key: value for key, value in metadata or () if key in _W3C_KEYS}


if TYPE_CHECKING:
    _ServerBase = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerBase = grpc.aio.ServerInterceptor


class _ServerTracing(_ServerBase):
    """Server spans from the gRPC instrumentation while spans are exported. Otherwise the
    call only continues the caller's trace context, if it sent one, so what the handler
    calls and publishes stays in the caller's trace; a call without one costs nothing
    (the instrumentation's per-call wrapping of a span nobody records cost about 200 µs of
    CPU a call, the most expensive part of a cached read)."""

    def __init__(self) -> None:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        self._spans: Any = aio_server_interceptor(filter_=_not_health)  # type: ignore[no-untyped-call]

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        if _sampler.exported:
            return await self._spans.intercept_service(continuation, handler_call_details)
        carrier = _carried(handler_call_details.invocation_metadata)
        if carrier:
            # Each RPC runs in a task of its own, which runs the handler after the
            # interceptors: the context holds for this call and ends with it.
            attach(propagate.extract(carrier))
        return await continuation(handler_call_details)


def grpc_server_interceptor() -> Any:
    return _ServerTracing()


def grpc_client_spans() -> dict[str, Any]:
    """The gRPC instrumentation's client interceptors by call kind ("unary_unary",
    "unary_stream", "stream_unary", "stream_stream"). The runtime's own client interceptors
    hand a call to them only while spans are exported (:func:`spans_exported`); otherwise
    :func:`carry_context` puts the current context on the call, one interceptor layer
    fewer per call."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    kinds = {
        grpc.aio.UnaryUnaryClientInterceptor: "unary_unary",
        grpc.aio.UnaryStreamClientInterceptor: "unary_stream",
        grpc.aio.StreamUnaryClientInterceptor: "stream_unary",
        grpc.aio.StreamStreamClientInterceptor: "stream_stream",
    }
    spans: dict[str, Any] = {}
    for interceptor in aio_client_interceptors(filter_=_not_health):  # type: ignore[no-untyped-call]
        for base, kind in kinds.items():
            if isinstance(interceptor, base):
                spans[kind] = interceptor
    return spans


def carry_context(metadata: Any) -> None:
    """Put the current trace context (W3C headers) into an outbound call's metadata when
    the gRPC instrumentation does not (spans not exported), so a trace that passes through
    this service continues in the next."""
    if not _sampler.exported:
        propagate.inject(metadata)


def inject_context() -> dict[str, str]:
    """The current trace context as W3C headers (traceparent, tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract_context(carrier: dict[str, str]) -> Any:
    """The context in ``carrier`` on a fresh base: work an event causes is traced even when
    the loop that picked it up runs quiet (see :func:`quiet`)."""
    return propagate.extract(carrier, context=Context())


@contextmanager
def fresh_context(base: Context | None = None) -> Iterator[None]:
    """Run the block in ``base`` (an empty context by default) instead of the caller's:
    spans started inside begin a new trace (or continue ``base``'s, e.g. an event's), and a
    :func:`quiet` around the caller does not apply."""
    token = attach(base if base is not None else Context())
    try:
        yield
    finally:
        detach(token)


def db_span(tracer: trace.Tracer, name: str) -> AbstractContextManager[Any]:
    """A client span for a statement sent on the asyncpg driver directly (SQLAlchemy's
    statements get theirs from the instrumentation), or nothing inside :func:`quiet` or
    while spans are not exported."""
    if not _sampler.exported or not is_instrumentation_enabled():
        return nullcontext()
    return tracer.start_as_current_span(
        name, kind=trace.SpanKind.CLIENT, attributes={"db.system": "postgresql"}
    )


def quiet() -> AbstractContextManager[None]:
    """No spans for what runs inside (nor for tasks it creates): for background loops
    whose idle polls and health pings would otherwise be a stream of one-span traces. Work
    that matters starts its own trace (a fresh context) or continues an event's."""
    return suppress_instrumentation()


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
