"""Shared by every test folder: the runtime's fixtures and the test-only generated code."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "tests" / "_generated"))

pytest_plugins = ["continuum_runtime.testing"]
