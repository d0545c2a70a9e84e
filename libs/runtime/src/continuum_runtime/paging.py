"""Page tokens of List RPCs: opaque to callers, a few key values to the service.

A token is the JSON list of the values that locate the next page (the keyset of the last
row, or an offset), URL-safe base64 without padding. A token this service did not issue is
INVALID_ARGUMENT (reason INVALID_PAGE_TOKEN) naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from continuum_runtime.errors import FieldViolation, InvalidArgument


def bad_page_token(
    field: str = "page_token", description: str = "not a token from a previous page"
) -> InvalidArgument:
    return InvalidArgument(
        f"{field} is not a token this service issued",
        reason="INVALID_PAGE_TOKEN",
        violations=[FieldViolation(field, description, "INVALID_PAGE_TOKEN")],
    )


def encode_page_token(values: Sequence[Any]) -> str:
    """A token carrying ``values`` (JSON-serialisable scalars)."""
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


def decode_page_token(token: str, arity: int, field: str = "page_token") -> list[Any] | None:
    """The ``arity`` values of a token from :func:`encode_page_token`; None for no token."""
    if not token:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        raise bad_page_token(field) from None
    if not isinstance(values, list) or len(values) != arity:
        raise bad_page_token(field)
    return values
