"""Identifier sets to customers, through the identity service, batched and cached.

``BatchResolveIdentity`` resolves the batch's distinct identifier sets that the cache does
not hold (in chunks of 50 sent side by side, so that a cold batch fits the deadline; a
warm batch needs one call or none). The cache is per process, keyed by the
identifier set, with a TTL; entries of a customer are dropped when identity reports that
customer merged, unmerged, re-attributed a device or forgot it (the consumer of identity's
events calls :meth:`Resolver.invalidate`, and every replica hears it through Redis
pub/sub). When identity cannot be reached the batch's events are stored unresolved and
resolved later (see ``deriver.retry_unresolved``): ingestion never loses an event to an
identity outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2

from continuum.common.v1 import identifier_pb2
from continuum.identity.v1 import identity_service_pb2 as ipb
from continuum.identity.v1 import identity_service_pb2_grpc as ipb_grpc
from continuum_profile.validation import IdentifierKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resolved:
    customer_id: str
    anonymous: bool


@dataclass(frozen=True)
class ResolveFailure:
    """Identity refused the identifiers (e.g. a malformed email)."""

    message: str
    violations: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Request:
    key: IdentifierKey
    channel: int
    observe_time: Timestamp


class ResolutionCache:
    """identifier set -> customer, with a TTL, a size cap and invalidation per customer."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[IdentifierKey, tuple[Resolved, float]] = OrderedDict()
        self._by_customer: dict[str, set[IdentifierKey]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: IdentifierKey, now: float) -> Resolved | None:
        found = self._entries.get(key)
        if found is None or found[1] < now:
            self.misses += 1
            return None
        self.hits += 1
        return found[0]

    def put(self, key: IdentifierKey, value: Resolved, now: float) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._forget_key(key, old[0].customer_id)
        self._entries[key] = (value, now + self._ttl)
        self._by_customer.setdefault(value.customer_id, set()).add(key)
        while len(self._entries) > self._max:
            oldest, (resolved, _) = self._entries.popitem(last=False)
            self._forget_key(oldest, resolved.customer_id)

    def _forget_key(self, key: IdentifierKey, customer_id: str) -> None:
        keys = self._by_customer.get(customer_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_customer[customer_id]

    def invalidate(self, customer_ids: Iterable[str]) -> int:
        dropped = 0
        for cid in customer_ids:
            for key in self._by_customer.pop(cid, set()):
                if self._entries.pop(key, None) is not None:
                    dropped += 1
        return dropped

    def invalidate_device(self, device_id: str) -> int:
        keys = [
            k for k in self._entries if (identifier_pb2.IDENTIFIER_TYPE_DEVICE_ID, device_id) in k
        ]
        for key in keys:
            resolved, _ = self._entries.pop(key)
            self._forget_key(key, resolved.customer_id)
        return len(keys)

    def clear(self) -> None:
        self._entries.clear()
        self._by_customer.clear()

    def __len__(self) -> int:
        return len(self._entries)


class Resolver:
    """Resolves batches of identifier sets through identity's BatchResolveIdentity."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        cache: ResolutionCache,
        timeout_s: float,
        chunk: int = 50,
    ) -> None:
        self._stub = ipb_grpc.IdentityServiceStub(channel)
        self.cache = cache
        self._timeout = timeout_s
        # Identity resolves a batch's items one after the other: a cold batch goes out in
        # chunks of this many identifier sets, side by side, so each fits the deadline.
        self._chunk = chunk

    async def resolve(
        self, requests: Sequence[Request]
    ) -> dict[IdentifierKey, Resolved | ResolveFailure] | None:
        """Each distinct key's customer (or why identity refused it); a key missing from the
        answer could not be resolved now (its chunk failed); None when identity could not
        be reached at all. Events without an answer are stored unresolved."""
        now = time.monotonic()
        out: dict[IdentifierKey, Resolved | ResolveFailure] = {}
        missing: dict[IdentifierKey, Request] = {}
        for request in requests:
            if request.key in out or request.key in missing:
                continue
            hit = self.cache.get(request.key, now)
            if hit is not None:
                out[request.key] = hit
            else:
                missing[request.key] = request
        if not missing:
            return out
        asked = list(missing.values())
        chunks = [asked[i : i + self._chunk] for i in range(0, len(asked), self._chunk)]
        answers = await asyncio.gather(*(self._resolve_chunk(chunk) for chunk in chunks))
        if all(answer is None for answer in answers):
            return None
        now = time.monotonic()
        for chunk, answer in zip(chunks, answers, strict=True):
            if answer is None:
                continue  # this chunk's events stay unresolved; the retrier takes them
            for result in answer.results:
                request = chunk[result.index]
                if result.HasField("error"):
                    out[request.key] = _failure(result.error)
                    continue
                resolved = Resolved(result.resolution.customer_id, result.resolution.anonymous)
                if resolved.customer_id:
                    self.cache.put(request.key, resolved, now)
                    out[request.key] = resolved
        return out

    async def _resolve_chunk(
        self, chunk: Sequence[Request]
    ) -> ipb.BatchResolveIdentityResponse | None:
        items = [
            ipb.ResolveItem(
                identifiers=[
                    identifier_pb2.Identifier(type=kind, value=value)  # type: ignore[arg-type]
                    for kind, value in request.key
                ],
                channel=request.channel,  # type: ignore[arg-type]
                observe_time=request.observe_time,
            )
            for request in chunk
        ]
        try:
            answer: ipb.BatchResolveIdentityResponse = await self._stub.BatchResolveIdentity(
                ipb.BatchResolveIdentityRequest(
                    request_id=uuid.uuid4().hex, items=items, actor="profile"
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as err:
            log.warning("identity resolve failed (%s); events kept unresolved", err.code().name)
            return None
        return answer


def _failure(status: object) -> ResolveFailure:
    from google.rpc import status_pb2

    assert isinstance(status, status_pb2.Status)
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            for v in bad.field_violations:
                path = v.field.split(".", 1)[1] if v.field.startswith("items[") else v.field
                violations.append((path, v.description))
    return ResolveFailure(status.message, tuple(violations))
