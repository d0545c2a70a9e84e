"""The `continuum` command where no suite is needed: status and down against nothing or a
stale state file, identifiers, the state file. The commands against a running suite
(status, seed, customer, feed) are tested on the suite of tests/e2e/test_handoff_story.py,
after the story has been played there."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from continuum.common.v1 import identifier_pb2
from continuum_cli import state
from continuum_cli.main import demo_service_env, parse_identifier
from continuum_sdk.config import SERVICES
from tests.cli.runner import cli
from tests.e2e.conftest import free_port


def _gone_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _unreachable() -> dict[str, str]:
    return {name: f"127.0.0.1:{free_port()}" for name in SERVICES}


async def test_status_names_every_unreachable_service_and_exits_1(tmp_path: Path) -> None:
    env = {f"CONTINUUM_{name.upper()}_TARGET": t for name, t in _unreachable().items()}
    code, out = await cli("status", data_dir=tmp_path, env=env)
    assert code == 1
    assert out.count("unreachable") == len(SERVICES)
    assert "no suite state" in out


async def test_status_reads_the_targets_from_the_state_file(tmp_path: Path) -> None:
    targets = _unreachable()
    state.write_state(
        tmp_path, state.SuiteState(pid=_gone_pid(), targets=targets, started="t", log_dir="")
    )
    code, out = await cli("status", data_dir=tmp_path)
    assert code == 1
    for target in targets.values():
        assert target in out
    assert "not running" in out


async def test_down_removes_a_stale_state_file_and_does_nothing_without_one(
    tmp_path: Path,
) -> None:
    pid = _gone_pid()
    state.write_state(
        tmp_path, state.SuiteState(pid=pid, targets=_unreachable(), started="t", log_dir="")
    )
    code, out = await cli("down", data_dir=tmp_path)
    assert code == 0, out
    assert f"pid {pid} is gone" in out
    assert state.read_state(tmp_path) is None
    code, out = await cli("down", data_dir=tmp_path)
    assert code == 0
    assert "nothing is running" in out


async def test_commands_against_a_suite_need_its_token_key(tmp_path: Path) -> None:
    code, out = await cli("customer", "sam@example.com", data_dir=tmp_path)
    assert code == 1
    assert "dev-token-key does not exist" in out


def test_identifiers_are_parsed_by_prefix_or_as_an_email() -> None:
    email = parse_identifier("sam@example.com")
    assert email is not None
    assert email.type == identifier_pb2.IDENTIFIER_TYPE_EMAIL
    loyalty = parse_identifier("loyalty:LOY-1")
    assert loyalty is not None
    assert (loyalty.type, loyalty.value) == (identifier_pb2.IDENTIFIER_TYPE_LOYALTY_ID, "LOY-1")
    assert parse_identifier("cus_123") is None


def test_the_state_file_round_trips_and_only_its_owner_clears_it(tmp_path: Path) -> None:
    written = state.SuiteState(pid=os.getpid(), targets=_unreachable(), started="t", log_dir="l")
    state.write_state(tmp_path, written)
    assert state.read_state(tmp_path) == written
    state.clear_state(tmp_path, pid=os.getpid() + 1)
    assert state.read_state(tmp_path) == written
    state.clear_state(tmp_path, pid=os.getpid())
    assert state.read_state(tmp_path) is None


def test_the_demo_abandonment_time_yields_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert demo_service_env()["cart"]["CONTINUUM_ABANDON_AFTER_S"] == "5"
    monkeypatch.setenv("CONTINUUM_ABANDON_AFTER_S", "60")
    assert "CONTINUUM_ABANDON_AFTER_S" not in demo_service_env()["cart"]
