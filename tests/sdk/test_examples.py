"""Every example in examples/sdk runs, as a separate process, against the suite: the
documented examples are proven to work. Each reads its targets and token from the
environment (``ClientConfig.from_env()``).

``CONTINUUM_SDK_EXAMPLE_PYTHON`` runs them with another interpreter, e.g. one of a virtual
environment with the SDK installed at its dependency floors (see docs/sdk.md)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, STORE_1, Suite

PYTHON = os.environ.get("CONTINUUM_SDK_EXAMPLE_PYTHON") or sys.executable
EXAMPLES = sorted((ROOT / "examples" / "sdk").glob("*.py"))
# What each example prints when it worked.
EXPECTED = {
    "resolve_and_track.py": ["batch: 4 accepted", "INVALID_FIELD", "the device now resolves"],
    "cart_checkout.py": ["conflict: ETAG_MISMATCH", "order "],
    "store_feed.py": ["BRIEFED", "briefing: ", "resume cursor: "],
    "sync_quickstart.py": ["events: 2 accepted", "not found: ITEM_NOT_FOUND"],
}


def test_every_example_is_checked() -> None:
    assert sorted(p.name for p in EXAMPLES) == sorted(EXPECTED)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
async def test_example_runs(suite: Suite, example: Path) -> None:
    env = suite.env()
    env.update(
        CONTINUUM_EXAMPLE_SKU="SHOE-38",
        CONTINUUM_EXAMPLE_BAG_SKU="BAG-1",
        CONTINUUM_EXAMPLE_STORE=STORE_1,
    )
    process = await asyncio.create_subprocess_exec(
        PYTHON,
        str(example),
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    text = output.decode()
    assert process.returncode == 0, text
    for expected in EXPECTED[example.name]:
        assert expected in text, text
