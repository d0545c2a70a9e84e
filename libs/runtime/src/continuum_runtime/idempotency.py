"""request_id idempotency for mutating RPCs, in the caller's database transaction.

A mutation runs inside one transaction that first calls :func:`begin` and, when it has an
answer, :func:`remember`. ``begin`` takes a transaction-scoped advisory lock on
(method, request_id), so two concurrent calls with one id run one after the other, and
returns the stored answer of an earlier call, which the caller returns unchanged. A
request id reused with a different request is a caller bug: FAILED_PRECONDITION
(``REQUEST_ID_REUSED``), nothing changes. The answer is stored in the same transaction as
the change, so a rolled-back change leaves no answer behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy import (
    Column,
    DateTime,
    LargeBinary,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from continuum_runtime.db import Database, Executor
from continuum_runtime.errors import FailedPrecondition
from continuum_runtime.events.schema import metadata

M = TypeVar("M", bound=Message)

request_log_table = Table(
    "request_log",
    metadata,
    Column("method", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("fingerprint", LargeBinary, nullable=False),
    Column("response", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("method", "request_id"),
)


def create_request_log_table(op: Any) -> None:
    """Call from a service migration that introduces idempotent mutations."""
    metadata.create_all(bind=op.get_bind(), tables=[request_log_table])


def drop_request_log_table(op: Any) -> None:
    metadata.drop_all(bind=op.get_bind(), tables=[request_log_table])


def fingerprint(request: Message) -> bytes:
    """A digest of the request without its request_id (deterministic serialisation)."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


async def begin(
    session: Executor,
    method: str,
    request: Message,
    response_type: type[M],
    request_id: str | None = None,
    *,
    lock: bool = True,
) -> M | None:
    """Serialise calls with this request_id; the earlier answer if there was one.

    ``request_id`` defaults to the request's own field (pass it for parts of a batch).
    ``lock=False`` when the caller's transaction already holds a lock that every call
    with this request id takes (then the read alone is enough).
    """
    if request_id is None:
        request_id = str(getattr(request, "request_id"))  # noqa: B009
    if lock:
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 7))"),
            {"key": f"{method}/{request_id}"},
        )
    (earlier,) = await earlier_many(session, method, [request], response_type, [request_id])
    if isinstance(earlier, FailedPrecondition):
        raise earlier
    return earlier


def reused(request_id: str) -> FailedPrecondition:
    """The error of a request id used again for a different request."""
    return FailedPrecondition(
        "request_id was already used for a different request",
        reason="REQUEST_ID_REUSED",
        metadata={"request_id": request_id},
    )


def replay(
    request: Message,
    request_id: str,
    stored_fingerprint: bytes,
    stored_response: bytes,
    response_type: type[M],
) -> M:
    """The stored answer, if it was stored for this same request (else REQUEST_ID_REUSED).

    For callers that read the request log themselves (e.g. in one query with other reads).
    """
    if bytes(stored_fingerprint) != fingerprint(request):
        raise reused(request_id)
    answer = response_type()
    answer.ParseFromString(bytes(stored_response))
    return answer


async def remember(
    session: Executor,
    method: str,
    request: Message,
    response: M,
    request_id: str | None = None,
) -> M:
    """Store the answer to ``request``; returns ``response`` for convenience."""
    ids = None if request_id is None else [request_id]
    await session.execute(
        text(REMEMBER_MANY_SQL), remember_values(method, [(request, response)], ids)
    )
    return response


async def lock_many(session: Executor, method: str, request_ids: Sequence[str]) -> None:
    """:func:`begin`'s advisory locks for the request ids of a batch, in one statement and
    in one order (two batches cannot deadlock on them)."""
    keys = sorted({f"{method}/{i}" for i in request_ids})
    await session.execute(
        text(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT hashtextextended(k, 7) AS h "
            "FROM unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS ordered"
        ),
        {"keys": keys},
    )


async def earlier_many(
    session: Executor,
    method: str,
    requests: Sequence[Message],
    response_type: type[M],
    request_ids: Sequence[str] | None = None,
) -> list[M | FailedPrecondition | None]:
    """:func:`begin`'s read for a batch of requests, in one statement. Per request: its
    earlier answer, the REQUEST_ID_REUSED error (for that caller alone), or None (new).
    What serialises calls with one request id is the caller's to say: :func:`lock_many`,
    or locks that every call with that request id takes before this read.
    ``request_ids`` default to the requests' own fields."""
    ids = list(request_ids) if request_ids is not None else _ids(requests)
    rows = await session.execute(
        text(
            "SELECT request_id, fingerprint, response FROM request_log "
            "WHERE method = :method AND request_id = ANY(CAST(:ids AS text[]))"
        ),
        {"method": method, "ids": sorted(set(ids))},
    )
    stored = {row.request_id: (row.fingerprint, row.response) for row in rows}
    out: list[M | FailedPrecondition | None] = []
    for request, request_id in zip(requests, ids, strict=True):
        if request_id not in stored:
            out.append(None)
            continue
        try:
            out.append(replay(request, request_id, *stored[request_id], response_type))
        except FailedPrecondition as error:
            out.append(error)
    return out


# :func:`remember` for the (request, response) pairs of a batch, as one statement that a
# store can also run as a CTE of its own write; its parameters come from remember_values.
REMEMBER_MANY_SQL = (
    "INSERT INTO request_log (method, request_id, fingerprint, response) "
    "SELECT :log_method, * FROM unnest(CAST(:log_ids AS text[]), CAST(:log_fps AS bytea[]), "
    "CAST(:log_answers AS bytea[])) ON CONFLICT DO NOTHING"
)


def _ids(requests: Sequence[Message]) -> list[str]:
    return [str(getattr(r, "request_id")) for r in requests]  # noqa: B009


def remember_values(
    method: str,
    answered: Sequence[tuple[Message, Message]],
    request_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The parameters of REMEMBER_MANY_SQL (``request_ids`` default to the requests'
    own fields)."""
    ids = list(request_ids) if request_ids is not None else _ids([q for q, _ in answered])
    return {
        "log_method": method,
        "log_ids": ids,
        "log_fps": [fingerprint(q) for q, _ in answered],
        "log_answers": [a.SerializeToString(deterministic=True) for _, a in answered],
    }


async def run_once(
    db: Database,
    method: str,
    request: Message,
    response_type: type[M],
    work: Callable[[AsyncSession], Awaitable[M]],
) -> M:
    """Run ``work`` in one transaction, at most once per request_id: a replay gets the
    stored answer, a concurrent duplicate waits for the first and then gets its answer."""
    async with db.transaction() as session:
        earlier = await begin(session, method, request, response_type)
        if earlier is not None:
            return earlier
        return await remember(session, method, request, await work(session))
