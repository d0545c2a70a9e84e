"""Run the `continuum` command as a subprocess, the way a developer runs it."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path


async def cli(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `continuum ARGS --data-dir DATA_DIR`; (exit status, output)."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CONTINUUM_TOKEN", "CONTINUUM_AUTH__TOKEN_KEY") and not k.endswith("_TARGET")
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "continuum_cli",
        *args,
        "--data-dir",
        str(data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", **(env or {})},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return int(proc.returncode or 0), out.decode()
