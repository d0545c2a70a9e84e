"""The cyclic garbage collector and a service's long-lived heap.

A service process holds a large heap that lives as long as it does: protobuf descriptors,
SQLAlchemy and OpenTelemetry machinery, caches, in-memory models. Python's oldest
generation is scanned whole every so often, and on a started service (about 130,000
objects) one such collection stopped the event loop for 43-103 ms under load, about once a
minute per service in ``make bench-handoff``, and every call in flight waited for it.

:func:`freeze_long_lived` moves every object alive at that moment into the permanent
generation, which collections no longer scan (reference counting still frees those
objects as usual; only garbage cycles among them would stay). Services call it once they
are serving, and a service that loads a large long-lived structure later (recommendation's
model) calls it again after the load.
"""

from __future__ import annotations

import gc


def freeze_long_lived(*, collect: bool = True) -> int:
    """Collect (unless ``collect`` is False) and freeze what is alive; returns the number
    of frozen objects. ``collect=False`` skips the full collection, for a large heap whose
    collection would itself be the pause to avoid (garbage cycles alive at that moment
    then stay)."""
    if collect:
        gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
