"""Model versions: full rebuilds from stored behaviour, activation, and their events.

A rebuild reads every stored interaction in the training window (in pages), computes the
artifacts (CPU work in a worker thread), stores them with the version READY and publishes
recommendation.model_build_finished; with ``activate_when_ready`` the version becomes
ACTIVE in the same transaction and recommendation.model_activated follows. One build at a
time: a second request while one is QUEUED or BUILDING is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncSession

from continuum.common.v1 import page_pb2
from continuum.recommendation.v1 import recommendation_events_pb2 as rev
from continuum.recommendation.v1 import recommendation_resources_pb2 as res
from continuum_recommendation import store
from continuum_recommendation.domain import Interaction, Params
from continuum_recommendation.model import Artifacts, build
from continuum_runtime.db import Database
from continuum_runtime.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from continuum_runtime.events import add_event

log = logging.getLogger(__name__)

ALGORITHM = "repeat-purchase+item-cooccurrence/1"
IN_PROGRESS = [
    res.MODEL_VERSION_STATE_QUEUED,
    res.MODEL_VERSION_STATE_BUILDING,
    res.MODEL_VERSION_STATE_EVALUATING,
]
PAGE = 50_000

ProgressBar = Callable[[str, int, int], None]


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _dt(stamp: Timestamp) -> datetime | None:
    if not stamp.seconds and not stamp.nanos:
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def params_of(overrides: dict[str, str]) -> Params:
    try:
        return Params().with_overrides(overrides)
    except KeyError as exc:
        raise InvalidArgument(
            f"unknown parameter {exc.args[0]}; known: {', '.join(Params.names())}",
            reason="UNKNOWN_PARAMETER",
            metadata={"parameter": str(exc.args[0])},
        ) from exc
    except ValueError as exc:
        raise InvalidArgument(f"bad parameter value: {exc}", reason="BAD_PARAMETER") from exc


async def queue_version(
    session: AsyncSession,
    *,
    parameters: dict[str, str],
    window: page_pb2.TimeRange | None,
    description: str,
    actor: str,
    activate_when_ready: bool,
) -> res.ModelVersion:
    """A new QUEUED version; FAILED_PRECONDITION BUILD_IN_PROGRESS while one builds."""
    params = params_of(parameters)
    await store.advisory_lock(session, 7007)
    running = await store.versions_in_states(session, IN_PROGRESS)
    if running:
        raise FailedPrecondition(
            f"model version {running[0].version_id} is being built",
            reason="BUILD_IN_PROGRESS",
            metadata={"version_id": running[0].version_id},
        )
    version = res.ModelVersion(
        version_id=f"mv-{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}",
        state=res.MODEL_VERSION_STATE_QUEUED,
        algorithm=ALGORITHM,
        description=description,
        parameters=params.as_strings(),
        created_by=actor,
        create_time=_now(),
        activate_when_ready=activate_when_ready,
    )
    if window is not None:
        version.training_window.CopyFrom(window)
    await store.insert_version(session, version)
    return version


async def _read_rows(db: Database, window: page_pb2.TimeRange) -> list[Interaction]:
    rows: list[Interaction] = []
    after = 0
    while True:
        async with db.reader() as conn:
            page = await store.interactions_in(
                conn, _dt(window.start_time), _dt(window.end_time), after, PAGE
            )
        rows += page
        if len(page) < PAGE:
            return rows
        after = page[-1].seq


async def run_build(
    db: Database, version_id: str, progress: ProgressBar | None = None
) -> res.ModelVersion:
    """Build a QUEUED version to READY (or ACTIVE) or FAILED; returns it."""
    started = time.monotonic()
    async with db.transaction() as session:
        version = await store.get_version(session, version_id, lock=True)
        if version is None:
            raise NotFound(f"no model version {version_id}", reason="MODEL_VERSION_NOT_FOUND")
        version.state = res.MODEL_VERSION_STATE_BUILDING
        version.progress.stage = "reading"
        await store.save_version(session, version)
    try:
        params = Params().with_overrides(dict(version.parameters))
        rows = await _read_rows(db, version.training_window)
        async with db.reader() as conn:
            extra = await store.all_item_skus(conn)
        report = progress or (lambda stage, done, total: None)
        artifacts = await asyncio.to_thread(
            build, rows, params, now=time.time(), extra_skus=extra, progress=report
        )
        blob = await asyncio.to_thread(artifacts.dumps)
    except Exception as exc:  # the build fails, the service does not
        log.exception("model build failed")
        async with db.transaction() as session:
            version.state = res.MODEL_VERSION_STATE_FAILED
            version.error_message = f"{type(exc).__name__}: {exc}"[:1000]
            await store.save_version(session, version)
            await _finished(session, version, started, None)
        return version
    async with db.transaction() as session:
        version.state = res.MODEL_VERSION_STATE_READY
        version.interaction_count = artifacts.interaction_count
        version.customer_count = artifacts.customer_count
        version.item_count = len(artifacts.skus)
        version.ready_time.CopyFrom(_now())
        version.progress.Clear()
        version.progress.stage = "done"
        version.progress.fraction_complete = 1.0
        await store.put_artifacts(session, version.version_id, blob)
        await store.save_version(session, version)
        await _finished(session, version, started, artifacts)
        if version.activate_when_ready:
            version, _ = await activate(session, version.version_id, "", "auto")
    return version


async def _finished(
    session: AsyncSession, version: res.ModelVersion, started: float, artifacts: Artifacts | None
) -> None:
    elapsed = time.monotonic() - started
    await add_event(
        session,
        producer="recommendation",
        event_type="recommendation.model_build_finished",
        subject="model",
        payload=rev.ModelBuildFinishedEvent(
            version_id=version.version_id,
            state=version.state,
            error_message=version.error_message,
            interaction_count=version.interaction_count,
            item_count=version.item_count,
            build_duration=Duration(seconds=int(elapsed), nanos=int((elapsed % 1) * 1e9)),
            finish_time=_now(),
            activate_when_ready=version.activate_when_ready
            and version.state == res.MODEL_VERSION_STATE_READY,
        ),
    )


async def activate(
    session: AsyncSession, version_id: str, expected_active: str, actor: str
) -> tuple[res.ModelVersion, str]:
    """Make a READY or RETIRED version ACTIVE; the previous one becomes RETIRED."""
    await store.advisory_lock(session, 7008)
    version = await store.get_version(session, version_id, lock=True)
    if version is None:
        raise NotFound(
            f"no model version {version_id}",
            reason="MODEL_VERSION_NOT_FOUND",
            metadata={"version_id": version_id},
        )
    previous = await store.active_version_id(session)
    if expected_active and previous != expected_active:
        raise Aborted(
            f"the active version is {previous or 'none'}, not {expected_active}",
            reason="ACTIVE_VERSION_CHANGED",
            metadata={"active_version_id": previous},
        )
    if version.state == res.MODEL_VERSION_STATE_ACTIVE:
        return version, ""
    if version.state not in (res.MODEL_VERSION_STATE_READY, res.MODEL_VERSION_STATE_RETIRED):
        raise FailedPrecondition(
            f"model version {version_id} is {res.ModelVersionState.Name(version.state)}",
            reason="MODEL_VERSION_NOT_READY",
            metadata={"version_id": version_id},
        )
    now = _now()
    if previous:
        old = await store.get_version(session, previous, lock=True)
        if old is not None:
            old.state = res.MODEL_VERSION_STATE_RETIRED
            old.retire_time.CopyFrom(now)
            await store.save_version(session, old)
    version.state = res.MODEL_VERSION_STATE_ACTIVE
    version.activate_time.CopyFrom(now)
    await store.save_version(session, version)
    await add_event(
        session,
        producer="recommendation",
        event_type="recommendation.model_activated",
        subject="model",
        payload=rev.ModelActivatedEvent(
            version_id=version_id,
            previous_version_id=previous,
            actor=actor,
            activate_time=now,
        ),
    )
    return version, previous
