"""The container image definition, and the commands the chart runs in it.

No Docker engine runs here, so the Dockerfile is checked as text (base image, non-root
numeric user, generated code, locked install) and the chart's commands are run as the
chart renders them: the migration Jobs' `migrate` and the Deployments' `serve`, with the
rendered environment resolved against Secrets that point at the test PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import shlex
import signal
import socket
import sys
import tomllib
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from continuum_runtime.db import Database
from continuum_runtime.embedded import drop_database, with_database
from continuum_runtime.testing import TestStores
from scripts.helm_check import (
    ROOT,
    SERVICES,
    Container,
    containers,
    render_variant,
    resolve_env,
    service_deployments,
    variant,
)

DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
BIN = Path(sys.executable).parent


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    parsed = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        parsed.append((keyword.upper(), rest.strip()))
    return parsed


def stages(path: Path) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def build_args(path: Path) -> dict[str, str]:
    args = {}
    for keyword, rest in instructions(path):
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    return args


def test_dockerfile_builds_a_slim_non_root_image_from_the_lock() -> None:
    args = build_args(DOCKERFILE)
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", args["PYTHON_IMAGE"])
    # The same uv as the Makefile pins, so the image resolves uv.lock the same way.
    makefile_uv = re.search(r"uv==([\d.]+)", (ROOT / "Makefile").read_text())
    assert makefile_uv is not None
    assert args["UV_IMAGE"].endswith(f":{makefile_uv.group(1)}")

    *build, runtime = stages(DOCKERFILE)
    assert runtime[0] == ("FROM", "${PYTHON_IMAGE} AS runtime")
    build_runs = " ".join(rest for stage in build for keyword, rest in stage if keyword == "RUN")
    assert "scripts/gen_proto.py" in build_runs  # generated protobuf code is in the image
    assert re.search(r"uv sync --locked --no-dev --no-editable", build_runs)

    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit()
    assert int(uid) > 0
    assert gid.isdigit()
    assert int(gid) > 0
    # The runtime stage gets the installed environment only: no source tree, no tools.
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies == ["--from=build /opt/continuum /opt/continuum"]
    # The image's user is the one the chart runs pods as.
    values = (ROOT / "deploy" / "helm" / "continuum" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values
    cmd = next(rest for keyword, rest in runtime if keyword == "CMD")
    assert shlex.split(cmd.strip("[]").replace(",", " "))[0] == "continuum-identity"


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for plain patterns: the last matching line decides."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or fnmatch.fnmatch(
            path, pattern.replace("**/", "*")
        ):
            ignored = not negate
    return ignored


def test_dockerignore_sends_the_sources_and_nothing_local() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = [
        "pyproject.toml",
        "uv.lock",
        "scripts/gen_proto.py",
        "proto/continuum/identity/v1/identity_service.proto",
        "tests/proto",
        "libs/runtime/src/continuum_runtime/app.py",
        "libs/contracts/pyproject.toml",
        *(f"services/{s}/pyproject.toml" for s in SERVICES),
    ]
    for path in needed:
        assert not _ignored(path, patterns), path
    for path in (
        ".venv/bin/python",
        ".data/pg",
        ".git/HEAD",
        "build/continuum.binpb",
        "libs/contracts/src/continuum/identity/v1/identity_service_pb2.py",
        "services/identity/src/continuum_identity/__pycache__/x.pyc",
        "tests/identity/test_resolve.py",
    ):
        assert _ignored(path, patterns), path


def chart_commands() -> set[str]:
    commands = set()
    for v in ("default", "everything-on"):
        for c in containers(render_variant(variant(v)).manifests):
            if c.owner.obj["metadata"]["labels"]["app.kubernetes.io/component"] in (
                "postgresql",
                "redis",
            ):
                continue
            commands.add(c.spec["command"][0])
    return commands


def test_the_charts_commands_are_the_services_console_scripts() -> None:
    declared = {}
    for name in SERVICES:
        pyproject = tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text())
        declared.update(pyproject["project"]["scripts"])
    assert chart_commands() == set(declared) == {f"continuum-{s}" for s in SERVICES}
    for command in declared:
        assert (BIN / command).is_file(), command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_to_end(container: Container, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    command = [str(BIN / container.spec["command"][0]), *container.spec["args"]]
    proc = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode(errors="replace")


async def wait_serving(port: int, names: list[str], proc: asyncio.subprocess.Process) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(600):
            if proc.returncode is not None:
                raise AssertionError(f"exited with {proc.returncode} before serving")
            try:
                replies = [
                    await stub.Check(health_pb2.HealthCheckRequest(service=n), timeout=1)
                    for n in names
                ]
                if all(r.status == health_pb2.HealthCheckResponse.SERVING for r in replies):
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("never SERVING")


async def test_rendered_jobs_migrate_and_rendered_servers_answer_their_probes(
    test_stores: TestStores, tmp_path: Path
) -> None:
    """The rendered migration Jobs' command and environment migrate the service's database,
    and the rendered Deployment's command and environment serve health under the names its
    probes ask for and drain on SIGTERM. Identity (the most demanding environment: token key
    and identifier key from Secrets) and cart (a caller, with targets) run here; the Jobs and
    Deployments of all six come from the same template, and tests/suite starts every
    service on its own. Each process costs about two seconds of CPU on this machine."""
    v = variant("external-stores")
    # No trace collector runs here (an unreachable one makes every exit wait for the span
    # exporter's retries); no drain notice, so that SIGTERM ends the server at once.
    values = {
        **v.values,
        "otlp": {"endpoint": ""},
        "drain": {"noticeSeconds": 0, "graceSeconds": 5},
    }
    v = type(v)(v.name, v.description, values)
    rendered = render_variant(v)
    tag = uuid.uuid4().hex[:10]
    urls = {s: with_database(test_stores.postgres_url, f"deploy_{s}_{tag}") for s in SERVICES}
    started = ("identity", "cart")
    secrets = {
        **{f"{s}-db": {"url": urls[s]} for s in SERVICES},
        "platform-redis": {"url": test_stores.redis_url},
        "platform-auth": {"hs256": uuid.uuid4().hex * 2},
        "identity-keys": {"hmac": uuid.uuid4().hex},
        "notification-vendor": {"api-key": "unused"},
    }
    base_env = {"PATH": str(BIN), "CONTINUUM_LOG_LEVEL": "WARNING"}
    jobs = {
        c.spec["command"][0].removeprefix("continuum-"): c
        for c in containers(rendered.of_kind("Job"))
    }
    servers = {name: next(containers([d])) for name, d in service_deployments(rendered).items()}
    assert sorted(jobs) == sorted(servers) == sorted(SERVICES)
    try:
        results = await asyncio.gather(
            *(
                run_to_end(jobs[s], {**resolve_env(jobs[s], secrets), **base_env}, tmp_path)
                for s in started
            )
        )
        for name, (code, out) in zip(started, results, strict=True):
            assert code == 0, f"{name} migrate: {out}"
        for name in started:
            db = Database(urls[name])
            try:
                async with db.sessions() as session:
                    tables = set(
                        (
                            await session.execute(
                                text("SELECT tablename FROM pg_tables WHERE schemaname='public'")
                            )
                        ).scalars()
                    )
            finally:
                await db.dispose()
            assert {"alembic_version", "outbox"} <= tables, name

        procs: dict[str, tuple[asyncio.subprocess.Process, int]] = {}
        try:
            for name, server in servers.items():
                if name not in started:
                    continue
                env = {**resolve_env(server, secrets), **base_env}
                # The rendered port is fixed; another suite may hold it on a shared machine.
                port = free_port()
                env["CONTINUUM_PORT"] = str(port)
                assert env["CONTINUUM_HOST"] == "0.0.0.0"
                assert env["CONTINUUM_RUN_MIGRATIONS"] == "false"
                command = [str(BIN / server.spec["command"][0]), *server.spec["args"]]
                proc = await asyncio.create_subprocess_exec(*command, env=env, cwd=tmp_path)
                procs[name] = (proc, port)
            for name, (proc, port) in procs.items():
                probes = servers[name].spec
                names = sorted(
                    {
                        probes[p]["grpc"].get("service", "")
                        for p in ("startupProbe", "readinessProbe", "livenessProbe")
                    }
                )
                await wait_serving(port, names, proc)
            for proc, _ in procs.values():
                proc.send_signal(signal.SIGTERM)
            for name, (proc, _) in procs.items():
                assert await asyncio.wait_for(proc.wait(), timeout=30) == 0, name
        finally:
            for proc, _ in procs.values():
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        # Nothing was written outside /tmp: the working directory stays empty.
        assert not any(await asyncio.to_thread(lambda: list(tmp_path.iterdir())))
    finally:
        for name in started:
            await drop_database(urls[name])
