"""OpenTelemetry, set up once per process.

Spans go to an OTLP collector when an endpoint is configured, to an in-memory exporter in
tests, and nowhere otherwise (then they are not even recorded: see _RecordWhileExported).
gRPC server and client spans come from interceptors that the server bootstrap and
:func:`continuum_runtime.client.create_channel` add; database spans from the SQLAlchemy
instrumentation of each engine; Redis spans from the redis-py instrumentation. Health
checks make no spans, nor do background loops while idle (:func:`quiet`): what they do
is traced when it is work (an event handled, a batch published, a cart abandoned).
"""

from __future__ import annotations

import threading
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
    """Install the process's tracer provider (first call wins) and instrument Redis."""
    global _provider, _redis_instrumented
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
    _UUBase = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _USBase = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    _SUBase = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
    _SSBase = grpc.aio.StreamStreamClientInterceptor[Any, Any]
else:
    _ServerBase = grpc.aio.ServerInterceptor
    _UUBase = grpc.aio.UnaryUnaryClientInterceptor
    _USBase = grpc.aio.UnaryStreamClientInterceptor
    _SUBase = grpc.aio.StreamUnaryClientInterceptor
    _SSBase = grpc.aio.StreamStreamClientInterceptor


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


class _UnaryUnaryTracing(_UUBase):
    def __init__(self, spans: Any) -> None:
        self._spans = spans

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if _sampler.exported:
            return await self._spans.intercept_unary_unary(continuation, details, request)
        return await continuation(details, request)


class _UnaryStreamTracing(_USBase):
    def __init__(self, spans: Any) -> None:
        self._spans = spans

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        if _sampler.exported:
            return await self._spans.intercept_unary_stream(continuation, details, request)
        return await continuation(details, request)


class _StreamUnaryTracing(_SUBase):
    def __init__(self, spans: Any) -> None:
        self._spans = spans

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        if _sampler.exported:
            return await self._spans.intercept_stream_unary(continuation, details, requests)
        return await continuation(details, requests)


class _StreamStreamTracing(_SSBase):
    def __init__(self, spans: Any) -> None:
        self._spans = spans

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        if _sampler.exported:
            return await self._spans.intercept_stream_stream(continuation, details, requests)
        return await continuation(details, requests)


def grpc_client_interceptors() -> list[Any]:
    """Client spans from the gRPC instrumentation while spans are exported; otherwise
    nothing here, and :func:`carry_context` puts the current context on the call."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    wrapped: list[Any] = []
    for spans in aio_client_interceptors(filter_=_not_health):  # type: ignore[no-untyped-call]
        if isinstance(spans, grpc.aio.UnaryUnaryClientInterceptor):
            wrapped.append(_UnaryUnaryTracing(spans))
        elif isinstance(spans, grpc.aio.UnaryStreamClientInterceptor):
            wrapped.append(_UnaryStreamTracing(spans))
        elif isinstance(spans, grpc.aio.StreamUnaryClientInterceptor):
            wrapped.append(_StreamUnaryTracing(spans))
        elif isinstance(spans, grpc.aio.StreamStreamClientInterceptor):
            wrapped.append(_StreamStreamTracing(spans))
    return wrapped


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
