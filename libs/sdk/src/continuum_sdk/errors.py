"""Typed exceptions for failed calls, carrying the rich status details.

Every failed call raises a :class:`ContinuumError` subclass chosen by status code
(``NotFound``, ``InvalidArgument``, ``FailedPrecondition``, ``Unavailable``, ...). The
error keeps the service's message and the ``google.rpc`` details the service attached:
``reason`` and ``metadata`` from ErrorInfo, ``field_violations`` from BadRequest,
``retry_after_s`` from RetryInfo, and every other detail (for example inventory's
``ReservationFailure`` or cart's ``CheckoutFailure``) through :meth:`ContinuumError.detail`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

M = TypeVar("M", bound=Message)

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (e.g. ``lines[0].quantity``) and why."""

    field: str
    description: str
    reason: str = ""


class ContinuumError(Exception):
    """A call that failed, with its status code, message and rich details."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        details: list[any_pb2.Any] | None = None,
        method: str = "",
    ) -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message
        self.details: list[any_pb2.Any] = list(details or [])
        self.method = method

    def detail(self, message_type: type[M]) -> M | None:
        """The first detail of type ``message_type``, or None."""
        for packed in self.details:
            found = message_type()
            if packed.Unpack(found):
                return found
        return None

    @property
    def reason(self) -> str:
        """The machine-readable reason (ErrorInfo.reason), e.g. ``ETAG_MISMATCH``."""
        info = self.detail(error_details_pb2.ErrorInfo)
        return info.reason if info is not None else ""

    @property
    def metadata(self) -> dict[str, str]:
        """ErrorInfo.metadata, e.g. the current etag on a conflict."""
        info = self.detail(error_details_pb2.ErrorInfo)
        return dict(info.metadata) if info is not None else {}

    @property
    def field_violations(self) -> list[FieldViolation]:
        """Each bad field of the request (BadRequest), in the order the service gave."""
        bad = self.detail(error_details_pb2.BadRequest)
        if bad is None:
            return []
        return [
            FieldViolation(field=v.field, description=v.description, reason=v.reason)
            for v in bad.field_violations
        ]

    @property
    def retry_after_s(self) -> float | None:
        """How long the service asked the caller to wait (RetryInfo), if it did."""
        info = self.detail(error_details_pb2.RetryInfo)
        if info is None:
            return None
        return float(info.retry_delay.ToTimedelta().total_seconds())


class InvalidArgument(ContinuumError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ContinuumError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ContinuumError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ContinuumError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ContinuumError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(ContinuumError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ContinuumError):
    """A concurrent change won (e.g. a stale cart etag): read again and retry."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(ContinuumError):
    code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhausted(ContinuumError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ContinuumError):
    """The service (or one it depends on) cannot answer now; retried calls ran out."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ContinuumError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(ContinuumError):
    code = grpc.StatusCode.CANCELLED


class Unimplemented(ContinuumError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ContinuumError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[ContinuumError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        Unauthenticated,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Unimplemented,
        Internal,
    )
}


def _status_details(trailing: Any) -> list[any_pb2.Any]:
    for key, value in trailing or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            return list(status_pb2.Status.FromString(value).details)
    return []


def from_rpc_error(err: grpc.RpcError, method: str = "") -> ContinuumError:
    """The typed error for a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``)."""
    call: Any = err
    code: grpc.StatusCode = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    message: str = (call.details() if hasattr(call, "details") else "") or ""
    trailing = call.trailing_metadata() if hasattr(call, "trailing_metadata") else None
    cls = _BY_CODE.get(code, ContinuumError)
    out = cls(code, message, _status_details(trailing), method)
    out.__cause__ = err
    return out
