"""Stub wrappers: the generated stubs with the client's defaults applied to every call.

Each wrapper looks up its service's methods in the contracts' descriptors, and per call
adds the bearer token to the metadata, gives unary calls the default deadline unless the
caller passed ``timeout=``, and turns a failed call into a typed :class:`ContinuumError`.
Streams (a store's feed, event ingestion) keep no default deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from continuum_sdk.config import ClientConfig
from continuum_sdk.errors import from_rpc_error


def _metadata(config: ClientConfig, given: Any) -> list[tuple[str, str]]:
    metadata = [(str(k), v) for k, v in (given or ())]
    token = config.bearer()
    if token and not any(k == "authorization" for k, _ in metadata):
        metadata.append(("authorization", f"Bearer {token}"))
    return metadata


class AsyncFeed:
    """A server stream: iterate with ``async for``; ``cancel()`` (or leaving the loop and
    calling ``cancel()``) ends it. Errors arrive as typed exceptions."""

    def __init__(self, call: Any, method: str) -> None:
        self._call = call
        self._method = method

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            async for item in self._call:
                yield item
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, self._method) from err

    def cancel(self) -> bool:
        return bool(self._call.cancel())

    async def initial_metadata(self) -> Any:
        return await self._call.initial_metadata()


class _AsyncMethod:
    def __init__(self, config: ClientConfig, callable_: Any, name: str, kind: str) -> None:
        self._config = config
        self._callable = callable_
        self._name = name
        self._kind = kind

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        kwargs["metadata"] = _metadata(self._config, kwargs.get("metadata"))
        if self._kind == "unary_unary" and kwargs.get("timeout") is None:
            kwargs["timeout"] = self._config.deadline_s
        if self._kind == "unary_stream":
            return AsyncFeed(self._callable(request, **kwargs), self._name)
        return self._await(self._callable(request, **kwargs))

    async def _await(self, call: Any) -> Any:
        try:
            return await call
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, self._name) from err


class SyncFeed:
    """A server stream for the sync client: iterate with ``for``; ``cancel()`` ends it."""

    def __init__(self, call: Any, method: str) -> None:
        self._call = call
        self._method = method

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._call
        except grpc.RpcError as err:
            raise from_rpc_error(err, self._method) from err

    def cancel(self) -> bool:
        return bool(self._call.cancel())


class _SyncMethod:
    def __init__(self, config: ClientConfig, callable_: Any, name: str, kind: str) -> None:
        self._config = config
        self._callable = callable_
        self._name = name
        self._kind = kind

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        kwargs["metadata"] = _metadata(self._config, kwargs.get("metadata"))
        if self._kind == "unary_unary" and kwargs.get("timeout") is None:
            kwargs["timeout"] = self._config.deadline_s
        if self._kind == "unary_stream":
            return SyncFeed(self._callable(request, **kwargs), self._name)
        try:
            return self._callable(request, **kwargs)
        except grpc.RpcError as err:
            raise from_rpc_error(err, self._name) from err


def _kind(method: Any) -> str:
    return (
        f"{'stream' if method.client_streaming else 'unary'}_"
        f"{'stream' if method.server_streaming else 'unary'}"
    )


class StubWrapper:
    """The generated stub of one service, every method wrapped (see the module doc)."""

    def __init__(
        self, config: ClientConfig, stub: Any, descriptor: ServiceDescriptor, *, sync: bool
    ) -> None:
        method_type = _SyncMethod if sync else _AsyncMethod
        for method in descriptor.methods:
            setattr(
                self,
                method.name,
                method_type(config, getattr(stub, method.name), method.full_name, _kind(method)),
            )
