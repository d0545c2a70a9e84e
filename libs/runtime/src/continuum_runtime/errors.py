"""Domain errors and their mapping to gRPC status codes with rich details.

Domain logic raises these plain exceptions; the server interceptor turns them into a gRPC
status with a ``google.rpc.ErrorInfo`` (reason, domain, metadata) and, for bad input, a
``google.rpc.BadRequest`` listing every field violation. Anything else becomes INTERNAL
with a generic message: the exception text never reaches the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "continuum.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path (``lines[2].quantity``) and what is wrong with it."""

    field: str
    description: str
    reason: str = ""


class DomainError(Exception):
    """Base of errors a service means to report to its caller."""

    code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION
    default_reason: str = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
        details: Sequence[Message] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)
        # Service-specific detail messages (e.g. which lines lack stock), packed as Any.
        self.details = tuple(details)

    def to_status(self, domain: str = ERROR_DOMAIN) -> status_pb2.Status:
        return build_status(
            self.code,
            self.message,
            reason=self.reason,
            domain=domain,
            metadata=self.metadata,
            violations=self.violations,
            details=self.details,
        )


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    """A concurrency conflict: the caller should re-read and retry."""

    code = grpc.StatusCode.ABORTED
    default_reason = "CONFLICT"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):
    """A dependency (database, Redis, another service) is down: retry later."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "DEPENDENCY_UNAVAILABLE"


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


def build_status(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str = "",
    domain: str = ERROR_DOMAIN,
    metadata: Mapping[str, str] | None = None,
    violations: Sequence[FieldViolation] = (),
    details: Sequence[Message] = (),
) -> status_pb2.Status:
    """A ``google.rpc.Status`` carrying ErrorInfo, BadRequest and any further details."""
    packed_details: list[any_pb2.Any] = []
    if reason:
        info = error_details_pb2.ErrorInfo(reason=reason, domain=domain)
        info.metadata.update(dict(metadata or {}))
        packed = any_pb2.Any()
        packed.Pack(info)
        packed_details.append(packed)
    if violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description, reason=v.reason
                )
                for v in violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        packed_details.append(packed)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        packed_details.append(packed)
    numeric = getattr(code_pb2, code.name)
    return status_pb2.Status(code=numeric, message=message, details=packed_details)


def is_dependency_outage(exc: BaseException) -> bool:
    """True for errors that mean a database or Redis cannot be reached right now."""
    import asyncpg
    import redis.exceptions as redis_errors
    import sqlalchemy.exc as sa_errors

    if isinstance(exc, sa_errors.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_errors.TimeoutError):  # pool exhausted
        return True
    if isinstance(exc, sa_errors.InterfaceError | sa_errors.OperationalError):
        return True
    original = getattr(exc, "orig", None) or exc.__cause__
    candidates = [exc] if original is None else [exc, original]
    for err in candidates:
        if isinstance(
            err,
            ConnectionError
            | asyncpg.exceptions.CannotConnectNowError
            | asyncpg.exceptions.ConnectionDoesNotExistError
            | asyncpg.exceptions.InterfaceError
            | asyncpg.exceptions.TooManyConnectionsError
            # The server ended the session (restart, failover, pg_terminate_backend), or
            # the driver found a pooled connection broken mid-protocol by that.
            | asyncpg.exceptions.AdminShutdownError
            | asyncpg.exceptions.InternalClientError
            | redis_errors.ConnectionError
            | redis_errors.TimeoutError
            | redis_errors.BusyLoadingError,
        ):
            return True
        if isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
            return True
    return False


def is_statement_timeout(exc: BaseException) -> bool:
    import asyncpg

    original = getattr(exc, "orig", None)
    cause = getattr(original, "__cause__", None) if original is not None else None
    return any(isinstance(e, asyncpg.exceptions.QueryCanceledError) for e in (exc, original, cause))
