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
