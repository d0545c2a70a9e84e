"""Page tokens: what a service issued comes back; anything else is a precise bad request."""

from __future__ import annotations

import pytest

from continuum_runtime.errors import InvalidArgument
from continuum_runtime.paging import decode_page_token, encode_page_token


def test_a_token_carries_its_values_back() -> None:
    token = encode_page_token(["2026-11-23T12:00:00+00:00", "cart-1", 42])
    assert decode_page_token(token, 3) == ["2026-11-23T12:00:00+00:00", "cart-1", 42]
    assert decode_page_token("", 3) is None


@pytest.mark.parametrize("token", ["not-base64!", "bm90IGpzb24", encode_page_token([1, 2])])
def test_a_token_the_service_did_not_issue_is_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        decode_page_token(token, 3, field="page_token")
    assert err.value.reason == "INVALID_PAGE_TOKEN"
    assert [v.field for v in err.value.violations] == ["page_token"]
