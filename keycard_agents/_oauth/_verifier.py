"""Verifying access tokens at a resource server: one call, cached successes.

Implements the resource server side of RFC 9068 §4 (validating JWT access tokens:
``typ`` ``at+jwt``, a trusted ``iss``, ``aud`` naming this resource per RFC 8707, the
lifetime claims) on top of :func:`~keycard_agents._jose._jwt.verify_compact`, with keys
from trusted issuers (RFC 8414 discovery through :class:`~._jwks.JWKSCache` unless a
:class:`~keycard_agents._jose._keys.KeyResolver` is given) and scope checks that answer
RFC 6750 §3.1 ``insufficient_scope``.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from keycard_agents._errors import ConfigurationError, InsufficientScopeError, InvalidTokenError
from keycard_agents._jose._jwt import (
    ACCESS_TOKEN_TYPE,
    DEFAULT_REQUIRED_CLAIMS,
    check_audience,
    check_times,
    registry_for,
    verify_compact,
)
from keycard_agents._jose._keys import ALGORITHMS, KeyResolver, allowed_algorithms
from keycard_agents._jose._principal import Principal
from keycard_agents._oauth._jwks import JWKSCache, TrustedIssuer
from keycard_agents._observe._metrics import (
    record_cache_lookup,
    record_verification,
    record_verification_failure,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["TokenVerifier"]


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    issuer: str
    kid: str | None


class TokenVerifier:
    """Verifies access tokens (``typ`` ``at+jwt``) for a resource; caches successes.

    ``keys=None`` builds a :class:`~keycard_agents.auth.JWKSCache` from the
    issuers (``str`` entries are discovered via RFC 8414 metadata). A token seen
    again is served from a bounded LRU cache keyed by its SHA-256, after re-checking
    its lifetime against the clock, the requested audience and that its key is still
    served by the resolver.
    """

    def __init__(
        self,
        *,
        issuers: Sequence[str | TrustedIssuer],
        keys: KeyResolver | None = None,
        leeway: float = 60.0,
        max_bytes: int = 8192,
        max_actor_depth: int = 5,
        algorithms: Sequence[str] = ALGORITHMS,
        clock: Callable[[], float] = time.time,
        http_client: httpx.AsyncClient | None = None,
        cache_size: int = 4096,
    ) -> None:
        trusted = [TrustedIssuer(i) if isinstance(i, str) else i for i in issuers]
        if not trusted:
            raise ConfigurationError("at least one trusted issuer is required", setting="issuers")
        if leeway < 0 or max_bytes <= 0 or max_actor_depth < 0 or cache_size < 0:
            raise ConfigurationError(
                "leeway, max_bytes, max_actor_depth and cache_size must not be negative"
            )
        self._issuers = frozenset(t.issuer for t in trusted)
        self._issuer_list = tuple(t.issuer for t in trusted)
        self._profiles = {t.issuer: t.profile for t in trusted}
        self._allowed = allowed_algorithms(algorithms)
        self._registry = registry_for(self._allowed)
        self._leeway = leeway
        self._max_bytes = max_bytes
        self._max_actor_depth = max_actor_depth
        self._clock = clock
        self._cache: OrderedDict[bytes, _Verified] = OrderedDict()
        self._cache_size = cache_size
        self._owned: Any = None
        if keys is None:
            cache = JWKSCache(issuers=trusted, http_client=http_client, algorithms=self._allowed)
            self._owned = cache
            keys = cache
        self._keys: KeyResolver = keys

    @property
    def keys(self) -> KeyResolver:
        return self._keys

    @property
    def issuers(self) -> tuple[str, ...]:
        return self._issuer_list

    async def verify(
        self, token: str, *, audience: str, required_scopes: Iterable[str] = ()
    ) -> Principal:
        """Verify ``token`` for the resource ``audience``; return its :class:`Principal`.

        Raises :class:`InvalidTokenError` (HTTP 401) or
        :class:`InsufficientScopeError` (HTTP 403) when a required scope is missing.
        """
        started = time.perf_counter()
        try:
            principal = await self._verify(token, audience)
        except InvalidTokenError as exc:
            record_verification_failure(exc.check, "agent")
            record_verification(time.perf_counter() - started, ok=False)
            raise
        record_verification(time.perf_counter() - started, ok=True)
        required = tuple(required_scopes)
        if required:
            missing = tuple(s for s in required if s not in principal.scopes)
            if missing:
                raise InsufficientScopeError(
                    f"token lacks the scope(s) {' '.join(missing)} this operation requires "
                    f"(required: {' '.join(required)}; granted: "
                    f"{' '.join(sorted(principal.scopes)) or 'none'})",
                    required=required,
                    missing=missing,
                )
        return principal

    async def _verify(self, token: str, audience: str) -> Principal:
        digest = self._digest(token)
        principal = None if digest is None else self._cached(digest, audience)
        if digest is not None:
            record_cache_lookup("miss" if principal is None else "hit", cache="verification")
        if principal is None:
            claims, kid = await verify_compact(
                token,
                keys=self._keys,
                issuers=self._issuers,
                audience=audience,
                types=_ACCESS_TYPES,
                allowed=self._allowed,
                registry=self._registry,
                leeway=self._leeway,
                max_bytes=self._max_bytes,
                max_actor_depth=self._max_actor_depth,
                now=self._clock(),
                required_claims=DEFAULT_REQUIRED_CLAIMS,
                profiles=self._profiles,
            )
            principal = Principal.from_claims(claims)
            profile = self._profiles[principal.issuer]
            if profile.client_claim != "client_id":
                principal = replace(principal, client_id=profile.client_of(claims))
            if digest is not None:
                self._remember(digest, principal, kid=kid)
        return principal

    def _digest(self, token: str) -> bytes | None:
        """The cache key of ``token`` (its SHA-256), computed once per request."""
        if not self._cache_size or not isinstance(token, str):
            return None
        return hashlib.sha256(token.encode("utf-8", "replace")).digest()

    def _cached(self, digest: bytes, audience: str) -> Principal | None:
        entry = self._cache.get(digest)
        if entry is None:
            return None
        principal = entry.principal
        try:
            check_times(principal.claims, leeway=self._leeway, now=self._clock())
        except InvalidTokenError:
            del self._cache[digest]
            raise
        if not self._keys.known(issuer=entry.issuer, kid=entry.kid):
            del self._cache[digest]
            return None
        check_audience(principal.claims.get("aud"), audience)
        self._cache.move_to_end(digest)
        return principal

    def _remember(self, digest: bytes, principal: Principal, *, kid: str | None) -> None:
        if kid is None:
            return
        self._cache[digest] = _Verified(principal, principal.issuer, kid)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        """Forget every cached verification."""
        self._cache.clear()

    async def aclose(self) -> None:
        """Close the HTTP client of the key cache this verifier created, if any."""
        if self._owned is not None:
            await self._owned.aclose()

    def __repr__(self) -> str:
        return f"TokenVerifier(issuers={list(self._issuer_list)!r})"


_ACCESS_TYPES = frozenset({ACCESS_TOKEN_TYPE})
