"""The server interceptor every Continuum service runs.

For each RPC, in this order:

1. authentication: a bearer JWT is required on every method except health and
   reflection; the verified :class:`~continuum_runtime.auth.Principal` is available to
   the handler through :func:`~continuum_runtime.auth.current_principal`;
2. undecodable request bytes give INVALID_ARGUMENT (gRPC would answer UNKNOWN);
3. request validation with protovalidate: INVALID_ARGUMENT with a
   ``google.rpc.BadRequest`` naming every violated field;
4. a deadline: the caller's, or a default one when the caller set none, recorded so that
   outbound calls get the remaining time less a margin;
5. error mapping: :class:`~continuum_runtime.errors.DomainError` to its code with
   ``google.rpc.ErrorInfo``; a database or Redis outage to UNAVAILABLE; anything else to
   INTERNAL with a generic message and a log line, never the exception text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import grpc
import protovalidate
from google.protobuf.message import Message

from continuum_runtime.auth import Principal, TokenVerifier, set_principal
from continuum_runtime.deadlines import reset_deadline, set_deadline
from continuum_runtime.errors import (
    DomainError,
    FieldViolation,
    InvalidArgument,
    Unauthenticated,
    build_status,
    is_dependency_outage,
    is_statement_timeout,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    _InterceptorBase = grpc.aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _InterceptorBase = grpc.aio.ServerInterceptor
    Handler = grpc.RpcMethodHandler

PUBLIC_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
STATUS_DETAILS_KEY = "grpc-status-details-bin"


class _Undecodable:
    """Stands in for a request whose bytes did not parse."""


UNDECODABLE = _Undecodable()

_validator = protovalidate.Validator()


def field_violations(message: Message) -> list[FieldViolation]:
    """protovalidate's findings on ``message`` as field violations (empty when valid)."""
    found: list[FieldViolation] = []
    for violation in _validator.collect_violations(message):
        proto: Any = violation.proto
        path = []
        # A rule on a whole message (a CEL expression across fields) has no field path of
        # its own at the top level; the description says which fields it concerns.
        elements = proto.field.elements if proto.field is not None else ()
        for element in elements:
            name = element.field_name
            subscript = element.subscript  # a oneof: index, bool/int/uint/string key
            if subscript is not None:
                value = subscript.value
                name += f'["{value}"]' if isinstance(value, str) else f"[{value}]"
            path.append(name)
        found.append(
            FieldViolation(field=".".join(path), description=proto.message, reason=proto.rule_id)
        )
    return found


def validate_request(message: Message) -> None:
    violations = field_violations(message)
    if violations:
        raise InvalidArgument(
            "request has invalid fields: " + ", ".join(v.field or "(message)" for v in violations),
            reason="INVALID_REQUEST",
            violations=violations,
        )


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: DomainError) -> None:
    status = error.to_status()
    await context.abort(
        error.code,
        error.message,
        trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
    )


# Codes of a failed call to another service that mean "not now" rather than "wrong".
DOWNSTREAM_OUTAGE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)


def _as_domain_error(exc: BaseException, method: str) -> DomainError:
    """Map an exception escaping a handler to the error the caller sees."""
    from continuum_runtime.errors import DeadlineExceeded, Unavailable

    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, TimeoutError) or is_statement_timeout(exc):
        return DeadlineExceeded("the request ran out of time", reason="DEADLINE_EXCEEDED")
    if is_dependency_outage(exc):
        log.warning("dependency unavailable in %s: %s", method, type(exc).__name__)
        return Unavailable("a dependency is unavailable; retry later")
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in DOWNSTREAM_OUTAGE_CODES:
        # Another service did not answer in time or at all: the caller may retry.
        log.warning("downstream %s in %s: %s", exc.code().name, method, exc.details())
        return Unavailable(
            "a service this call depends on is unavailable; retry later",
            reason="DEPENDENCY_UNAVAILABLE",
        )
    log.error("unhandled error in %s", method, exc_info=exc)
    internal = DomainError("internal error", reason="INTERNAL")
    internal.code = grpc.StatusCode.INTERNAL
    return internal


class ServerInterceptor(_InterceptorBase):
    """Authentication, decoding, validation, deadlines and error mapping for every RPC."""

    def __init__(
        self,
        *,
        verifier: TokenVerifier | None,
        default_deadline_s: float,
        public_prefixes: Iterable[str] = PUBLIC_METHOD_PREFIXES,
        unvalidated_stream_methods: Iterable[str] = (),
    ) -> None:
        self._verifier = verifier
        self._default_deadline_s = default_deadline_s
        self._public = tuple(public_prefixes)
        self._unvalidated_streams = frozenset(unvalidated_stream_methods)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(self._public):
            return handler
        # One wrapped handler per method: the caller is authenticated inside it, from the
        # call's own metadata, so nothing per call is built here.
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap(
            handler,
            method=method,
            authenticate=self._authenticate,
            default_deadline_s=self._default_deadline_s,
            validate_stream=method not in self._unvalidated_streams,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal | None:
        if self._verifier is None:
            return None
        return self._verifier.verify(_bearer(context.invocation_metadata()))


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise Unauthenticated("a bearer token is required", reason="TOKEN_MISSING")


def _safe_deserializer(
    deserializer: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return UNDECODABLE

    return deserialize


def _check_request(request: Any) -> None:
    if request is UNDECODABLE:
        raise InvalidArgument("request bytes could not be decoded", reason="UNDECODABLE_REQUEST")
    if isinstance(request, Message):
        validate_request(request)


def _wrap(
    handler: Handler,
    *,
    method: str,
    authenticate: Callable[[grpc.aio.ServicerContext[Any, Any]], Principal | None],
    default_deadline_s: float,
    validate_stream: bool,
) -> Handler:
    deserializer = _safe_deserializer(handler.request_deserializer)
    serializer = handler.response_serializer

    def deadline_for(context: grpc.aio.ServicerContext[Any, Any]) -> float:
        remaining = context.time_remaining()
        return default_deadline_s if remaining is None else remaining

    async def checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            if request is UNDECODABLE or validate_stream:
                _check_request(request)
            yield request

    if handler.unary_unary is not None:
        unary_unary = cast(Callable[[Any, Any], Awaitable[Any]], handler.unary_unary)

        async def uu(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            remaining: float | None = context.time_remaining()  # None: no deadline
            deadline_token = set_deadline(default_deadline_s if remaining is None else remaining)
            try:
                # Each RPC runs in its own task: the principal needs no reset.
                set_principal(authenticate(context))
                _check_request(request)
                if remaining is not None:
                    # gRPC cancels the handler at the caller's deadline.
                    return await unary_unary(request, context)
                async with asyncio.timeout(default_deadline_s):
                    return await unary_unary(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await abort_with(context, _as_domain_error(exc, method))
            finally:
                reset_deadline(deadline_token)
            return None  # unreachable: abort raises

        return grpc.unary_unary_rpc_method_handler(
            uu, request_deserializer=deserializer, response_serializer=serializer
        )

    if handler.stream_unary is not None:
        stream_unary = cast(Callable[[Any, Any], Awaitable[Any]], handler.stream_unary)

        async def su(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            timeout = deadline_for(context)
            deadline_token = set_deadline(timeout)
            try:
                # Each RPC runs in its own task: the principal needs no reset.
                set_principal(authenticate(context))
                async with asyncio.timeout(timeout):
                    return await stream_unary(checked_stream(requests), context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await abort_with(context, _as_domain_error(exc, method))
            finally:
                reset_deadline(deadline_token)
            return None

        return grpc.stream_unary_rpc_method_handler(
            su, request_deserializer=deserializer, response_serializer=serializer
        )

    if handler.unary_stream is not None:
        unary_stream = cast(Callable[[Any, Any], AsyncIterator[Any]], handler.unary_stream)

        async def us(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            # Streams (feeds, subscriptions) live as long as the caller wants; only the
            # caller's own deadline bounds them, but outbound calls still get one.
            remaining = context.time_remaining()
            deadline_token = set_deadline(default_deadline_s if remaining is None else remaining)
            try:
                # Each RPC runs in its own task: the principal needs no reset.
                set_principal(authenticate(context))
                _check_request(request)
                async for response in unary_stream(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await abort_with(context, _as_domain_error(exc, method))
            finally:
                reset_deadline(deadline_token)

        return grpc.unary_stream_rpc_method_handler(
            us, request_deserializer=deserializer, response_serializer=serializer
        )

    stream_stream = cast(Callable[[Any, Any], AsyncIterator[Any]], handler.stream_stream)

    async def ss(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        remaining = context.time_remaining()
        deadline_token = set_deadline(default_deadline_s if remaining is None else remaining)
        try:
            set_principal(authenticate(context))
            async for response in stream_stream(checked_stream(requests), context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_with(context, _as_domain_error(exc, method))
        finally:
            reset_deadline(deadline_token)

    return grpc.stream_stream_rpc_method_handler(
        ss, request_deserializer=deserializer, response_serializer=serializer
    )


def status_details(status_code: grpc.StatusCode, message: str, **kwargs: Any) -> bytes:
    """Serialized ``google.rpc.Status`` for hand-built trailing metadata."""
    data: bytes = build_status(status_code, message, **kwargs).SerializeToString()
    return data
