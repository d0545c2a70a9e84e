"""Spans are recorded only once something receives them (the tracer provider is global to
a process, so each case runs in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

CASE = """
from opentelemetry import trace
from continuum_runtime.telemetry import in_memory_exporter, setup_telemetry

setup_telemetry("probe", otlp_endpoint="")
tracer = trace.get_tracer("probe")
with tracer.start_as_current_span("before") as before:
    print("before", before.is_recording(), before.get_span_context().is_valid)
exporter = in_memory_exporter()
setup_telemetry("probe", exporter=exporter)
with tracer.start_as_current_span("after") as after:
    recording = after.is_recording()
    with tracer.start_as_current_span("child"):
        pass
print("after", recording, [s.name for s in exporter.get_finished_spans()])
"""


def test_spans_are_recorded_only_once_an_exporter_receives_them() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CASE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    # No exporter: a span is not recorded, but it still has a valid context to propagate.
    assert out[0] == "before False True"
    # With an exporter: recorded and exported.
    assert out[1] == "after True ['child', 'after']"


RELAY_CASE = """
import asyncio
import grpc
from continuum_runtime.client import create_channel
from continuum_runtime.telemetry import current_traceparent, grpc_server_interceptor, setup_telemetry

setup_telemetry("probe", otlp_endpoint="")


def serve(handler):
    server = grpc.aio.server(interceptors=[grpc_server_interceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "t.T", {"M": grpc.unary_unary_rpc_method_handler(handler)})])
    return server, server.add_insecure_port("127.0.0.1:0")


async def main():
    async def last(request, context):
        return current_traceparent().encode()

    b, b_port = serve(last)
    await b.start()
    onward = create_channel(f"127.0.0.1:{b_port}").unary_unary("/t.T/M")

    async def first(request, context):
        return await onward(request)

    a, a_port = serve(first)
    await a.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{a_port}") as channel:
        call = channel.unary_unary("/t.T/M")
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        print((await call(b"", metadata=(("traceparent", parent),))).decode())
        print(repr((await call(b"")).decode()))
    await a.stop(0)
    await b.stop(0)

asyncio.run(main())
"""


def test_a_trace_passes_through_a_service_that_exports_no_spans() -> None:
    out = subprocess.run(
        [sys.executable, "-c", RELAY_CASE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    # The caller's context reaches the next service unchanged (this one records nothing).
    assert out[0] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    # A call that carries no context gets none, and no trace is invented for it.
    assert out[1] == "''"
