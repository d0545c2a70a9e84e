"""Bearer-token authentication and the principal every handler can authorise against.

Tokens are JWTs signed with the configured key (HS256 by default, or RS256/ES256 with a
public key). Claims: ``sub`` (who), ``kind`` (``service``, ``channel_app`` or
``associate``), ``stores`` (store ids an associate may see), ``scope`` (space separated),
plus the standard ``iss``, ``aud``, ``exp`` and ``iat``.
"""

from __future__ import annotations

import contextvars
import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt

from continuum_runtime.config import AuthSettings
from continuum_runtime.errors import PermissionDenied, Unauthenticated


class PrincipalKind(enum.StrEnum):
    SERVICE = "service"
    CHANNEL_APP = "channel_app"
    ASSOCIATE = "associate"


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the verified token says."""

    subject: str
    kind: PrincipalKind
    stores: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)

    def may_see_store(self, store_id: str) -> bool:
        """Services and channel apps see every store; associates only theirs."""
        if self.kind is PrincipalKind.ASSOCIATE:
            return store_id in self.stores or "*" in self.stores
        return True


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "continuum_principal", default=None
)


def current_principal() -> Principal:
    """The principal of the RPC being handled (UNAUTHENTICATED outside one)."""
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("no authenticated caller", reason="NO_PRINCIPAL")
    return principal


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(principal)


def require_store_access(store_id: str) -> Principal:
    """PERMISSION_DENIED unless the caller may see ``store_id``.

    The answer is the same whether or not anything exists in that store, so a caller
    learns nothing about other stores from it.
    """
    principal = current_principal()
    if not principal.may_see_store(store_id):
        raise PermissionDenied(
            "caller may not access this store",
            reason="STORE_NOT_PERMITTED",
            metadata={"store_id": store_id},
        )
    return principal


class TokenVerifier:
    """Verifies bearer tokens against the configured key."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._cache: dict[str, tuple[Principal, float]] = {}
        if settings.public_key:
            self._key: Any = settings.public_key
            self._algorithms = [a for a in settings.algorithms if not a.startswith("HS")] or [
                "RS256",
                "ES256",
            ]
        else:
            secret = settings.token_key.get_secret_value()
            if not secret:
                raise ValueError("CONTINUUM_AUTH__TOKEN_KEY must be set to verify tokens")
            self._key = secret
            self._algorithms = [a for a in settings.algorithms if a.startswith("HS")] or ["HS256"]

    CACHE_SIZE = 4096

    def verify(self, token: str) -> Principal:
        """The token's principal; UNAUTHENTICATED if it is forged, malformed or expired.

        A verified token is remembered until its expiry (plus leeway), so a caller that
        sends the same token on every call pays for the signature check once.
        """
        cached = self._cache.get(token)
        if cached is not None:
            principal, expires = cached
            if time.time() < expires:
                return principal
            del self._cache[token]
        principal, expires = self._verify(token)
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_s,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired", reason="TOKEN_EXPIRED") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("invalid token", reason="TOKEN_INVALID") from exc
        try:
            kind = PrincipalKind(claims.get("kind", ""))
        except ValueError as exc:
            raise Unauthenticated("token has no valid kind", reason="TOKEN_INVALID") from exc
        stores = claims.get("stores", [])
        scope = claims.get("scope", "")
        if not isinstance(stores, list) or not isinstance(scope, str):
            raise Unauthenticated("token claims malformed", reason="TOKEN_INVALID")
        principal = Principal(
            subject=str(claims["sub"]),
            kind=kind,
            stores=frozenset(str(s) for s in stores),
            scopes=frozenset(scope.split()),
        )
        return principal, float(claims["exp"]) + self._settings.leeway_s


def issue_token(
    settings: AuthSettings,
    *,
    subject: str,
    kind: PrincipalKind,
    stores: Iterable[str] = (),
    scopes: Iterable[str] = (),
    ttl_s: float = 3600.0,
    key: str | None = None,
    algorithm: str = "HS256",
) -> str:
    """Mint a token (services' own credentials, local development and tests)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "kind": kind.value,
        "iss": settings.issuer,
        "aud": settings.audience,
        "iat": now,
        "exp": now + int(ttl_s),
    }
    if stores:
        claims["stores"] = list(stores)
    if scopes:
        claims["scope"] = " ".join(scopes)
    signing_key = key if key is not None else settings.token_key.get_secret_value()
    if not signing_key:
        raise ValueError("no signing key configured (CONTINUUM_AUTH__TOKEN_KEY)")
    return jwt.encode(claims, signing_key, algorithm=algorithm)


def service_token(settings: AuthSettings, service_name: str) -> str:
    """The bearer token a service presents on its outbound calls."""
    configured = settings.service_token.get_secret_value()
    if configured:
        return configured
    return issue_token(
        settings, subject=service_name, kind=PrincipalKind.SERVICE, ttl_s=24 * 3600.0
    )
