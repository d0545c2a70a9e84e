"""What commands against a running suite need: where it is, and a token it accepts.

``continuum run`` (and so ``continuum up``) writes ``<data dir>/suite.json`` with its pid and
the services' targets while the suite runs, and removes it when it stops. Tokens are signed
with the data directory's ``dev-token-key`` (or ``CONTINUUM_AUTH__TOKEN_KEY``), as the
services started by ``run`` verify them; ``CONTINUUM_TOKEN`` overrides them all.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from continuum_runtime.auth import PrincipalKind, issue_token
from continuum_runtime.config import AuthSettings, project_data_dir
from continuum_sdk import AsyncContinuum, ClientConfig
from continuum_sdk.config import LOCAL_PORTS, SERVICES

STATE_FILE = "suite.json"
# Each call's deadline: generous, because a laptop running all six services and the stores
# can be slow to answer the first calls.
CALL_DEADLINE_S = 20.0


class NoSuite(RuntimeError):
    """Nothing says where a suite is, or how to sign tokens for it."""


@dataclass(frozen=True)
class SuiteState:
    pid: int
    targets: dict[str, str]
    started: str
    log_dir: str

    def alive(self) -> bool:
        return pid_alive(self.pid)


def default_data_dir() -> Path:
    configured = os.environ.get("CONTINUUM_DATA_DIR")
    return Path(configured) if configured else project_data_dir()


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs (and, where /proc tells, is a continuum command)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        with contextlib.suppress(OSError):
            return b"continuum" in cmdline.read_bytes()
    return True


def write_state(data_dir: Path, state: SuiteState) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)


def read_state(data_dir: Path) -> SuiteState | None:
    path = data_dir / STATE_FILE
    try:
        raw = json.loads(path.read_text())
        return SuiteState(
            pid=int(raw["pid"]),
            targets={str(k): str(v) for k, v in raw["targets"].items()},
            started=str(raw.get("started", "")),
            log_dir=str(raw.get("log_dir", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_state(data_dir: Path, pid: int | None = None) -> None:
    """Remove the state file (only if it is ``pid``'s, when given)."""
    state = read_state(data_dir)
    if pid is not None and state is not None and state.pid != pid:
        return
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()


def targets(data_dir: Path) -> dict[str, str]:
    """The running suite's targets (state file), else ``CONTINUUM_<SERVICE>_TARGET``, else
    the local ports of ``make run``."""
    state = read_state(data_dir)
    found = dict(state.targets) if state is not None else {}
    for name in SERVICES:
        env = os.environ.get(f"CONTINUUM_{name.upper()}_TARGET")
        if env and name not in found:
            found[name] = env
        found.setdefault(name, f"127.0.0.1:{LOCAL_PORTS[name]}")
    return found


def token_key(data_dir: Path) -> str:
    key = os.environ.get("CONTINUUM_AUTH__TOKEN_KEY")
    if key:
        return key
    path = data_dir / "dev-token-key"
    if not path.exists():
        raise NoSuite(
            f"no token key: {path} does not exist (start the suite with `continuum up` or "
            "`continuum run`, pass --data-dir, or set CONTINUUM_TOKEN)"
        )
    return path.read_text().strip()


def token(
    data_dir: Path,
    *,
    kind: PrincipalKind = PrincipalKind.SERVICE,
    stores: tuple[str, ...] = (),
    subject: str = "continuum-cli",
    ttl_s: float = 3600.0,
) -> str:
    """``CONTINUUM_TOKEN`` when set; otherwise a token signed with the data dir's key."""
    given = os.environ.get("CONTINUUM_TOKEN")
    if given:
        return given
    settings = AuthSettings(token_key=token_key(data_dir))  # type: ignore[arg-type]
    return issue_token(settings, subject=subject, kind=kind, ttl_s=ttl_s, stores=stores)


def client(
    data_dir: Path,
    *,
    kind: PrincipalKind = PrincipalKind.SERVICE,
    stores: tuple[str, ...] = (),
    subject: str = "continuum-cli",
) -> AsyncContinuum:
    return AsyncContinuum(
        ClientConfig(
            targets=targets(data_dir),
            token=token(data_dir, kind=kind, stores=stores, subject=subject),
            deadline_s=CALL_DEADLINE_S,
        )
    )
