"""The `continuum` command (typer): run the suite, seed it, play the handoff story, follow a
store's associate feed and look a customer up. See docs/cli.md."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table
from rich.text import Text

from continuum.cart.v1 import cart_resources_pb2 as cart_res
from continuum.cart.v1 import cart_service_pb2 as cart_pb
from continuum.common.v1 import channel_pb2, identifier_pb2
from continuum.identity.v1 import identity_service_pb2 as id_pb
from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.notification.v1 import notification_resources_pb2 as note
from continuum.notification.v1 import notification_service_pb2 as note_pb
from continuum.profile.v1 import profile_service_pb2 as prof_pb
from continuum_cli import render, state
from continuum_cli.seed import DEMO_STORE, LOCATIONS, SeedReport, describe, seed
from continuum_cli.story import StoryResult, play
from continuum_cli.suite import RunningSuite, SuiteError, start_suite
from continuum_runtime.auth import PrincipalKind
from continuum_sdk import AsyncContinuum
from continuum_sdk.config import LOCAL_PORTS, SERVICES
from continuum_sdk.errors import ContinuumError, NotFound

T = TypeVar("T")

app = typer.Typer(
    help="Continuum: run the suite, seed it, play the handoff story, inspect it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where the embedded stores, logs, token key and suite.json live "
        "(default: CONTINUUM_DATA_DIR or ./.data).",
        show_default=False,
    ),
]

# The demo's cart is abandoned after a few seconds of idle time instead of an hour
# (unless the environment says otherwise).
DEMO_SERVICE_ENV: dict[str, dict[str, str]] = {
    "cart": {"CONTINUUM_ABANDON_AFTER_S": "5", "CONTINUUM_ABANDON_CHECK_INTERVAL_S": "1"},
}
STORE_NAMES = {place.location_id: place.name for place in LOCATIONS}


def _data_dir(given: Path | None) -> Path:
    return (given or state.default_data_dir()).resolve()


def demo_service_env() -> dict[str, dict[str, str]]:
    return {
        name: {k: v for k, v in values.items() if k not in os.environ}
        for name, values in DEMO_SERVICE_ENV.items()
    }


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _run_async(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except state.NoSuite as err:
        raise _fail(str(err)) from None
    except ContinuumError as err:
        raise _fail(f"{err} (is the suite running? `continuum status`)") from None


# ---------------------------------------------------------------------------------------
# Seeding and the story, with progress
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _steps(title: str) -> Iterator[Callable[[str], None]]:
    """A spinner showing the current step; finished steps stay printed above it."""
    with console.status(f"[bold]{title}[/]") as status:

        def step(message: str) -> None:
            console.print(f"  {message}")
            status.update(f"[bold]{title}[/]: {message.strip()}")

        yield step


async def seed_with_progress(cx: AsyncContinuum) -> SeedReport:
    started = time.monotonic()
    with _steps("Seeding") as step:
        report = await seed(cx, step)
    table = Table(title="Demo data", title_justify="left")
    table.add_column("")
    table.add_column("new", justify="right")
    table.add_column("already there", justify="right")
    for kind, new, existing in describe(report):
        table.add_row(kind, str(new), str(existing))
    console.print(table)
    console.print(f"[green]seeded[/] in {time.monotonic() - started:.1f} s")
    return report


async def story_with_progress(
    cx: AsyncContinuum, associate: AsyncContinuum, store_id: str, report: SeedReport
) -> StoryResult:
    console.rule("[bold]The handoff story")
    with _steps("Playing the story") as step:
        result = await play(cx, associate, store_id=store_id, progress=step, seeded=report)
    for line in result.notes:
        console.print(f"[yellow]note:[/] {line}")
    console.print(render.briefing_panel(result.briefing, STORE_NAMES))
    return result


# ---------------------------------------------------------------------------------------
# run / up / down
# ---------------------------------------------------------------------------------------


def _targets_table(targets: dict[str, str], statuses: dict[str, str] | None = None) -> Table:
    table = Table(title="Continuum", title_justify="left")
    table.add_column("service")
    table.add_column("target")
    table.add_column("health")
    for name in SERVICES:
        status = (statuses or {}).get(name, "SERVING")
        style = "green" if status == "SERVING" else "red"
        table.add_row(name, targets.get(name, ""), Text(status, style=style))
    return table


def busy_ports() -> list[int]:
    """The suite's local ports that something already listens on (gRPC servers bind with
    SO_REUSEPORT, so a second suite would otherwise share the ports with the first)."""
    busy = []
    for port in LOCAL_PORTS.values():
        with socket.socket() as sock:
            # Like a server: connections closing (TIME_WAIT) do not count, listeners do.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


async def _run(data_dir: Path, demo: bool, store_id: str) -> int:
    existing = state.read_state(data_dir)
    if existing is not None and existing.alive() and existing.pid != os.getpid():
        console.print(
            f"[bold red]error:[/] a suite already runs from {data_dir} (pid {existing.pid}); "
            "`continuum down` stops it"
        )
        return 1
    busy = busy_ports()
    if busy:
        console.print(
            f"[bold red]error:[/] port {', '.join(map(str, busy))} already in use on 127.0.0.1 "
            "(another suite? `continuum status` shows what answers there)"
        )
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    holder: list[RunningSuite] = []

    async def work() -> int:
        started = time.monotonic()
        with console.status(
            "[bold]Starting PostgreSQL, Redis and the six services[/] (migrations run on start)"
        ):
            suite = await start_suite(data_dir, service_env=demo_service_env())
        holder.append(suite)
        state.write_state(
            data_dir,
            state.SuiteState(
                pid=os.getpid(),
                targets=suite.targets,
                started=datetime.now(UTC).isoformat(timespec="seconds"),
                log_dir=str(suite.log_dir),
            ),
        )
        console.print(_targets_table(suite.targets))
        console.print(
            f"[green]started[/] in {time.monotonic() - started:.1f} s; logs in {suite.log_dir}"
        )
        if demo:
            cx = suite.client(
                token=suite.token("continuum-demo", PrincipalKind.SERVICE),
                deadline_s=state.CALL_DEADLINE_S,
            )
            associate = suite.client(
                token=suite.token("associate-demo", PrincipalKind.ASSOCIATE, stores=(store_id,)),
                deadline_s=state.CALL_DEADLINE_S,
            )
            try:
                report = await seed_with_progress(cx)
                await story_with_progress(cx, associate, store_id, report)
            except (ContinuumError, RuntimeError, TimeoutError) as err:
                console.print(f"[bold red]the demo did not finish:[/] {err}")
                console.print(f"service logs: {suite.log_dir}")
            finally:
                await cx.close()
                await associate.close()
        token = suite.token()
        console.print(
            "\n[bold]Continuum is running.[/] A 12-hour channel-app token for local calls:\n"
        )
        console.print(f"  authorization: Bearer {token}\n", soft_wrap=True)
        console.print(
            "Try [bold]continuum status[/], [bold]continuum customer sam.keller@example.com[/], "
            f"[bold]continuum feed {store_id}[/] and, in another terminal, "
            "[bold]continuum demo[/].\nPress Ctrl-C to stop."
        )
        name = await suite.wait_exited()
        console.print(f"[bold red]{name} exited[/]; last lines of its log:")
        console.print(suite.log_tail(name), markup=False)
        return 1

    task = asyncio.ensure_future(work())
    stopper = asyncio.ensure_future(stop.wait())
    code = 0
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            try:
                code = task.result()
            except SuiteError as err:
                console.print("[bold red]the suite did not start:[/]")
                console.print(str(err), markup=False)
                code = 1
        else:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        stopper.cancel()
        if holder:
            with console.status("[bold]Stopping the services (draining) and the stores[/]"):
                await holder[0].stop()
            console.print("stopped.")
        state.clear_state(data_dir, os.getpid())
    return code


@app.command()
def run(
    data_dir: DataDir = None,
    no_demo: Annotated[
        bool, typer.Option("--no-demo", help="Only start the suite: no seed, no story.")
    ] = False,
    store: Annotated[str, typer.Option(help="The store the shopper walks into.")] = DEMO_STORE,
) -> None:
    """Start the suite in the foreground, seed it, play the handoff story and print the
    associate's briefing; then keep running until Ctrl-C."""
    code = asyncio.run(_run(_data_dir(data_dir), not no_demo, store))
    raise typer.Exit(code)


async def _health(targets: dict[str, str], timeout_s: float = 2.0) -> dict[str, str]:
    async def one(target: str) -> str:
        async with grpc.aio.insecure_channel(target) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout_s
                )
            except grpc.aio.AioRpcError as err:
                code = err.code()
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    return "unreachable"
                return str(code.name)
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    results = await asyncio.gather(*(one(targets[name]) for name in SERVICES))
    return dict(zip(SERVICES, results, strict=True))


@app.command()
def up(
    data_dir: DataDir = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the suite.")] = 180.0,
) -> None:
    """Start the suite in the background (`continuum run --no-demo`, detached) and wait
    until every service is healthy."""
    directory = _data_dir(data_dir)
    found = state.read_state(directory)
    if found is not None and found.alive():
        console.print(f"already running (pid {found.pid}); `continuum down` stops it")
        raise typer.Exit(0)
    log_dir = directory / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "continuum-run.log"
    with log_path.open("ab") as log:
        child = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "continuum_cli",
                "run",
                "--no-demo",
                "--data-dir",
                str(directory),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "COLUMNS": "120"},
        )
    deadline = time.monotonic() + timeout
    with console.status("[bold]Starting the suite in the background[/]"):
        while True:
            if child.poll() is not None:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
                console.print(tail, markup=False)
                raise _fail(f"the suite exited with {child.returncode}; log: {log_path}")
            current = state.read_state(directory)
            if current is not None and current.pid == child.pid:
                health = asyncio.run(_health(current.targets))
                if all(v == "SERVING" for v in health.values()):
                    break
            if time.monotonic() > deadline:
                raise _fail(f"the suite is not healthy after {timeout:.0f} s; log: {log_path}")
            time.sleep(0.5)
    console.print(_targets_table(current.targets))
    console.print(
        f"[green]running[/] in the background (pid {child.pid}); log: {log_path}\n"
        "`continuum seed` loads the demo data, `continuum demo` plays the story, "
        "`continuum down` stops it."
    )


@app.command()
def down(
    data_dir: DataDir = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a clean stop.")] = 90.0,
) -> None:
    """Stop the suite `continuum up` (or `run`) started: the services drain, the stores stop."""
    directory = _data_dir(data_dir)
    found = state.read_state(directory)
    if found is None:
        console.print(f"nothing is running from {directory}")
        return
    if not found.alive():
        state.clear_state(directory)
        console.print(f"pid {found.pid} is gone; removed its stale state file")
        return
    os.kill(found.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with console.status(f"[bold]Stopping the suite (pid {found.pid})[/]"):
        while state.pid_alive(found.pid):
            if time.monotonic() > deadline:
                raise _fail(f"pid {found.pid} still runs after {timeout:.0f} s")
            time.sleep(0.3)
    console.print("stopped.")


@app.command()
def status(data_dir: DataDir = None) -> None:
    """Health of every service (exit status 1 unless all are SERVING)."""
    directory = _data_dir(data_dir)
    found = state.read_state(directory)
    targets = state.targets(directory)
    health = asyncio.run(_health(targets))
    console.print(_targets_table(targets, health))
    if found is not None:
        alive = "running" if found.alive() else "[red]not running[/]"
        console.print(f"suite pid {found.pid} ({alive}), started {found.started}")
    else:
        console.print(f"no suite state in {directory}; checked the local ports")
    if not all(v == "SERVING" for v in health.values()):
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------
# Commands against a running suite
# ---------------------------------------------------------------------------------------


@app.command("seed")
def seed_command(data_dir: DataDir = None) -> None:
    """Load the demo data into the running suite (idempotent)."""
    directory = _data_dir(data_dir)

    async def work() -> None:
        async with state.client(directory) as cx:
            await seed_with_progress(cx)

    _run_async(work())


@app.command()
def demo(
    data_dir: DataDir = None,
    store: Annotated[str, typer.Option(help="The store the shopper walks into.")] = DEMO_STORE,
) -> None:
    """Seed (idempotent) and play the handoff story against the running suite; print the
    briefing as the associate's device receives it."""
    directory = _data_dir(data_dir)

    async def work() -> None:
        async with (
            state.client(directory) as cx,
            state.client(
                directory, kind=PrincipalKind.ASSOCIATE, stores=(store,), subject="associate-demo"
            ) as associate,
        ):
            report = await seed_with_progress(cx)
            await story_with_progress(cx, associate, store, report)

    _run_async(work())


def _feed_line(item: note.FeedItem) -> str:
    kind = note.FeedItemKind.Name(item.kind).removeprefix("FEED_ITEM_KIND_").lower()
    if item.HasField("action_update"):
        update = item.action_update
        return f"{kind}: briefing {update.briefing_id} action {update.action.action_id}"
    if item.HasField("handoff"):
        return f"{kind}: handoff {item.handoff.handoff_id}"
    return kind


@app.command()
def feed(
    store: Annotated[str, typer.Argument(help="The store whose associate feed to follow.")],
    data_dir: DataDir = None,
    replay: Annotated[
        bool, typer.Option(help="First show the store's briefings that are still current.")
    ] = True,
    count: Annotated[
        int, typer.Option(help="Stop after this many briefings (0: follow until Ctrl-C).")
    ] = 0,
) -> None:
    """Follow a store's associate feed, as an associate's device does; briefings are
    printed as they arrive."""
    directory = _data_dir(data_dir)

    async def work() -> None:
        seen = 0
        async with state.client(
            directory, kind=PrincipalKind.ASSOCIATE, stores=(store,), subject="associate-cli"
        ) as associate:
            stream = associate.notification.SubscribeFeed(
                note_pb.SubscribeFeedRequest(store_id=store, replay_active=replay)
            )
            console.print(f"following the feed of {store} (Ctrl-C to stop)")
            async for answer in stream:
                item = answer.item
                if item.kind == note.FEED_ITEM_KIND_HEARTBEAT:
                    continue
                if item.kind == note.FEED_ITEM_KIND_CAUGHT_UP:
                    console.print("[dim]caught up; waiting for check-ins[/]")
                    continue
                if item.HasField("briefing"):
                    console.print(render.briefing_panel(item.briefing, STORE_NAMES))
                    seen += 1
                    if count and seen >= count:
                        stream.cancel()
                        return
                else:
                    console.print(_feed_line(item))

    with contextlib.suppress(KeyboardInterrupt):
        _run_async(work())


_IDENTIFIER_TYPES = {
    "email": identifier_pb2.IDENTIFIER_TYPE_EMAIL,
    "phone": identifier_pb2.IDENTIFIER_TYPE_PHONE,
    "loyalty": identifier_pb2.IDENTIFIER_TYPE_LOYALTY_ID,
    "device": identifier_pb2.IDENTIFIER_TYPE_DEVICE_ID,
    "account": identifier_pb2.IDENTIFIER_TYPE_ACCOUNT_ID,
    "pos": identifier_pb2.IDENTIFIER_TYPE_POS_CUSTOMER_NUMBER,
}


def parse_identifier(text: str) -> identifier_pb2.Identifier | None:
    """``email:…``, ``phone:…``, ``loyalty:…``, ``device:…``, ``account:…``, ``pos:…``, or
    a bare e-mail address; None for anything else (taken as a customer id)."""
    kind, sep, value = text.partition(":")
    if sep and kind.lower() in _IDENTIFIER_TYPES and value:
        return identifier_pb2.Identifier(type=_IDENTIFIER_TYPES[kind.lower()], value=value)
    if "@" in text:
        return identifier_pb2.Identifier(type=identifier_pb2.IDENTIFIER_TYPE_EMAIL, value=text)
    return None


async def _optional(call: Awaitable[T]) -> T | None:
    try:
        return await call
    except NotFound:
        return None


async def _show_customer(cx: AsyncContinuum, identifier: str) -> bool:
    given = parse_identifier(identifier)
    if given is not None:
        resolved = await cx.identity.ResolveIdentity(
            id_pb.ResolveIdentityRequest(
                request_id=f"cli-lookup-{time.time_ns()}",
                identifiers=[given],
                channel=channel_pb2.CHANNEL_WEB,
                lookup_only=True,
                actor="continuum-cli",
            )
        )
        customer_id = resolved.resolution.customer_id
        if not customer_id:
            console.print(f"no customer has {identifier}")
            return False
    else:
        customer_id = identifier
    found = await _optional(
        cx.identity.GetCustomer(id_pb.GetCustomerRequest(customer_id=customer_id))
    )
    if found is None:
        console.print(f"no customer {customer_id}")
        return False
    customer = found.customer
    customer_id = customer.customer_id
    owner = cart_res.Owner(customer_id=customer_id)
    identifiers, summary, cart, wishlist, stores = await asyncio.gather(
        cx.identity.ListIdentifiers(id_pb.ListIdentifiersRequest(customer_id=customer_id)),
        _optional(
            cx.profile.GetProfileSummary(prof_pb.GetProfileSummaryRequest(customer_id=customer_id))
        ),
        _optional(cx.cart.GetCart(cart_pb.GetCartRequest(owner=owner))),
        _optional(cx.cart.GetWishlist(cart_pb.GetWishlistRequest(owner=owner))),
        cx.inventory.ListLocations(
            inv_pb.ListLocationsRequest(types=[inv.LOCATION_TYPE_STORE], page_size=100)
        ),
    )
    briefings = await asyncio.gather(
        *(
            cx.notification.ListBriefings(
                note_pb.ListBriefingsRequest(
                    store_id=loc.location_id, customer_id=customer_id, page_size=3
                )
            )
            for loc in stores.locations
        )
    )
    console.print(
        render.customer_view(
            customer,
            list(identifiers.identifiers),
            summary.summary if summary is not None else None,
            cart.cart if cart is not None else None,
            wishlist.wishlist if wishlist is not None else None,
            [b for answer in briefings for b in answer.briefings],
        )
    )
    return True


@app.command()
def customer(
    identifier: Annotated[
        str,
        typer.Argument(
            help="A customer id, an e-mail address, or type:value with type email, phone, "
            "loyalty, device, account or pos."
        ),
    ],
    data_dir: DataDir = None,
) -> None:
    """What the suite knows about a customer: identity's record and identifiers, the profile
    summary, cart and wishlist, and recent briefings."""
    directory = _data_dir(data_dir)

    async def work() -> bool:
        async with state.client(directory) as cx:
            return await _show_customer(cx, identifier)

    if not _run_async(work()):
        raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo("continuum 0.1.0")
