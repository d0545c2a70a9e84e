"""The deadline of the RPC being handled, for propagation to outbound calls."""

from __future__ import annotations

import contextvars
import time

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "continuum_deadline", default=None
)


def set_deadline(timeout_s: float) -> contextvars.Token[float | None]:
    """Record that the current work must finish within ``timeout_s`` seconds."""
    return _deadline.set(time.monotonic() + timeout_s)


def reset_deadline(token: contextvars.Token[float | None]) -> None:
    _deadline.reset(token)


def time_remaining() -> float | None:
    """Seconds left before the current RPC's deadline, or None outside an RPC."""
    deadline = _deadline.get()
    if deadline is None:
        return None
    return deadline - time.monotonic()


def outbound_timeout(
    requested: float | None, *, default_s: float, margin_s: float, floor_s: float = 0.001
) -> float:
    """The timeout an outbound call gets.

    The remaining time of the RPC being handled less a margin (so the caller still has
    time to answer), never more than what the outbound call itself asked for; a call made
    outside any RPC with no timeout of its own gets ``default_s``.
    """
    remaining = time_remaining()
    candidates = [t for t in (requested,) if t is not None]
    if remaining is not None:
        candidates.append(remaining - margin_s)
    if not candidates:
        return default_s
    return max(min(candidates), floor_s)
