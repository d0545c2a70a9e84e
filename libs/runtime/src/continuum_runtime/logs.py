"""Structured logs that carry the trace id and never a raw email, phone number or token."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

from opentelemetry import trace

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w])\+?\d[\d\s().-]{7,}\d(?![\w])")
_BEARER = re.compile(r"(?i)\bbearer\s+[\w.~+/=-]+")
_JWT = re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*")


def redact(text: str) -> str:
    """Mask emails, phone numbers, bearer tokens and JWTs in ``text``."""
    text = _BEARER.sub("Bearer [REDACTED]", text)
    text = _JWT.sub("[REDACTED-TOKEN]", text)
    text = _EMAIL.sub("[REDACTED-EMAIL]", text)
    return _PHONE.sub("[REDACTED-PHONE]", text)


_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace and span ids, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = redact(str(value)) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class RedactingFormatter(logging.Formatter):
    """Human-readable lines for local runs, redacted the same way, with the trace id."""

    def format(self, record: logging.LogRecord) -> str:
        span = trace.get_current_span().get_span_context()
        fields = dict(record.__dict__)
        fields["trace"] = format(span.trace_id, "032x")[:12] if span.is_valid else "-"
        # Redact what the code logged, not the line's own timestamp (which looks like a
        # phone number to the redactor).
        fields["msg"], fields["args"] = redact(record.getMessage()), None
        return super().format(logging.makeLogRecord(fields))

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))


def configure_logging(service: str, level: str = "INFO", json_lines: bool = True) -> None:
    """Install the root handler once per process."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            RedactingFormatter(
                f"%(asctime)s %(levelname)s {service} [%(trace)s] %(name)s: %(message)s"
            )
        )
    for existing in list(root.handlers):
        if getattr(existing, "_continuum", False):
            root.removeHandler(existing)
    handler._continuum = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
