"""Background loops that must stop when cancelled, whatever the driver turns the cancel into."""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Re-raise a pending cancellation that a library swallowed.

    Cancelling a task in the middle of a database call can surface as the driver's own
    error (asyncpg's InterfaceError, for one) instead of CancelledError. A retry loop that
    catches Exception must call this first, or the task would never stop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
