"""Run the probe service as its own process (the SIGTERM drain test). Prints its port."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "_generated")]

from continuum_runtime.config import ServiceSettings  # noqa: E402
from tests.runtime.probe import ProbeServicer, probe_server  # noqa: E402


async def main() -> None:
    settings = ServiceSettings(service_name="probe")
    server = probe_server(settings, ProbeServicer())
    await server.serve(on_ready=lambda port: print(f"PORT {port}", flush=True))
    print("STOPPED", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
