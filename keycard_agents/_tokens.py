"""Verifying JWTs: one call that runs every check, in a fixed order.

Implements RFC 7515 §5.2 (JWS validation), RFC 7519 §7.2 (JWT validation) with the
claims of RFC 9068 §4 (JWT access tokens) and RFC 8693 §4.1 (``act``), the explicit
typing and algorithm allow-lists of RFC 8725 §3.1 and §3.11, and the audience check
of RFC 8707 / RFC 9068 §4 (``aud`` must name this resource).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from joserfc import jws
from joserfc.errors import (
    InvalidHeaderValueError,
    JoseError,
    MissingCritHeaderError,
    UnsupportedHeaderError,
)
from joserfc.jwk import Key, KeySet

from ._errors import ConfigurationError, InsufficientScopeError, InvalidTokenError
from ._keys import (
    _EDDSA_NAMES,
    ALGORITHMS,
    VerificationKeys,
    _import_jwk,
    _show,
    allowed_algorithms,
    jws_registry,
    key_fits_algorithm,
)
from ._principal import Principal
from ._profiles import DEFAULT_PROFILE, TokenProfile, accepted_types

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "CLIENT_ASSERTION_TYPE",
    "KeyResolver",
    "StaticKeys",
    "TokenVerifier",
    "TrustedIssuer",
    "verify_jwt",
]

#: ``typ`` of user tokens and delegated tokens (RFC 9068 §2.1).
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
#: ``typ`` of RFC 7523 client assertions (draft-ietf-oauth-rfc7523bis).
CLIENT_ASSERTION_TYPE = "client-authentication+jwt"

_DEFAULT_REQUIRED = ("iss", "sub", "aud", "exp", "iat", "jti")
_COMPACT_JWS = re.compile(rb"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_STRING_CLAIMS = ("iss", "sub", "jti", "scope", "client_id", "txn", "azp")
_TIME_CLAIMS = ("exp", "nbf", "iat")


class KeyResolver(Protocol):
    """Finds the public key that verifies a token of ``issuer``.

    ``resolve`` raises :class:`InvalidTokenError` with ``check="unknown_key"`` when the
    issuer has no such key, or :class:`IssuerUnreachableError` when its keys could
    not be fetched. ``known`` answers, without I/O, whether ``kid`` is still served
    (used to keep cached verifications honest after a key is withdrawn).
    """

    async def resolve(self, *, issuer: str, kid: str | None, alg: str) -> Key: ...

    def known(self, *, issuer: str, kid: str | None) -> bool: ...


class StaticKeys:
    """A :class:`KeyResolver` over fixed keys: ``StaticKeys({issuer: jwks_or_KeySet})``."""

    def __init__(
        self,
        keys: Mapping[str, Mapping[str, Any] | KeySet],
        *,
        algorithms: Collection[str] = ALGORITHMS,
    ) -> None:
        self._keys: dict[str, VerificationKeys] = {}
        for issuer, jwks in keys.items():
            try:
                self._keys[issuer] = VerificationKeys.from_jwks(
                    jwks, algorithms=algorithms, source=f"JWKS of issuer {issuer!r}"
                )
            except ValueError as exc:
                raise ConfigurationError(str(exc), setting="keys") from exc

    @property
    def issuers(self) -> tuple[str, ...]:
        return tuple(self._keys)

    async def resolve(self, *, issuer: str, kid: str | None, alg: str) -> Key:
        keys = self._keys.get(issuer)
        if keys is None:
            raise InvalidTokenError(
                f"issuer {issuer!r} has no configured keys", check="unknown_key"
            )
        return keys.find(issuer=issuer, kid=kid, alg=alg)

    def known(self, *, issuer: str, kid: str | None) -> bool:
        keys = self._keys.get(issuer)
        return keys is not None and kid is not None and kid in keys


@dataclass(frozen=True)
class TrustedIssuer:
    """An issuer whose tokens are accepted, and where its keys come from.

    Keys come from ``jwks`` (inline, no network), else ``jwks_uri``, else the
    ``jwks_uri`` of its metadata at ``metadata_url`` (default: the RFC 8414 well-known
    URL with §3.1 path insertion, then OpenID Connect discovery). ``profile`` says what
    its access tokens look like (default RFC 9068; see :class:`TokenProfile`).
    """

    issuer: str
    jwks_uri: str | None = None
    metadata_url: str | None = None
    jwks: Mapping[str, Any] | None = None
    profile: TokenProfile = DEFAULT_PROFILE


def _fail(check: str, message: str) -> InvalidTokenError:
    return InvalidTokenError(message, check=check)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _normalize_typ(value: str) -> str:
    value = value.lower()
    return value[len("application/") :] if value.startswith("application/") else value


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse(token: object, max_bytes: int) -> tuple[jws.CompactSignature, dict[str, Any]]:
    """Size and structure: three base64url segments, a JSON object header with alg."""
    if not isinstance(token, str) or not token:
        raise _fail("malformed", "no token: expected a compact JWS (three base64url segments)")
    if len(token) > max_bytes:
        raise _fail("size", f"token is {len(token)} bytes, over the limit of {max_bytes} bytes")
    if not token.isascii():
        raise _fail("malformed", "token contains characters outside base64url")
    raw = token.encode("ascii")
    if raw.count(b".") != 2:
        raise _fail(
            "malformed",
            f"token has {raw.count(b'.') + 1} segments; a compact JWS has three "
            "(header.payload.signature)",
        )
    if _COMPACT_JWS.fullmatch(raw) is None:
        raise _fail("malformed", "token contains characters outside base64url")
    header_segment, payload_segment, _ = raw.split(b".")
    if not header_segment or not payload_segment:
        raise _fail("malformed", "token has an empty header or payload segment")
    try:
        obj = jws.extract_compact(raw, registry=_PARSE_REGISTRY)
        header = obj.headers()
    except (JoseError, ValueError, TypeError) as exc:
        raise _fail("malformed", f"token header is not valid base64url JSON ({exc})") from exc
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        raise _fail("malformed", "token header is not a JSON object with a string 'alg'")
    if "crit" in header or "b64" in header:
        raise _fail("malformed", "token header uses JWS extensions (crit/b64) we do not accept")
    if not isinstance(header.get("kid", ""), str):
        raise _fail("malformed", "token header 'kid' is not a string")
    return obj, header


_PARSE_REGISTRY = jws_registry(ALGORITHMS)


def _claims(obj: jws.CompactSignature) -> dict[str, Any]:
    try:
        claims = json.loads(obj.payload)
    except (ValueError, RecursionError) as exc:
        raise _fail("malformed", "token payload is not JSON") from exc
    if not isinstance(claims, dict):
        raise _fail("malformed", "token payload is not a JSON object")
    return claims


def _check_act(act: object, max_depth: int) -> None:
    depth = 0
    node = act
    while node is not None:
        if not isinstance(node, dict) or not isinstance(node.get("sub"), str):
            raise _fail(
                "claims",
                f"token 'act' claim level {depth + 1} is not an object with a string 'sub'",
            )
        for name in ("iss", "client_id"):
            if name in node and not isinstance(node[name], str):
                raise _fail("claims", f"token 'act' level {depth + 1} has a non-string {name!r}")
        depth += 1
        if depth > max_depth:
            raise _fail(
                "depth",
                f"token delegation chain is deeper than the limit of {max_depth} actors",
            )
        node = node.get("act")


def _check_claims(
    claims: dict[str, Any],
    *,
    required: Collection[str],
    audience: str,
    leeway: float,
    now: float,
    max_actor_depth: int,
) -> None:
    missing = [name for name in required if name not in claims]
    if missing:
        raise _fail("claims", f"token lacks required claim(s): {', '.join(missing)}")
    for name in _STRING_CLAIMS:
        if name in claims and not isinstance(claims[name], str):
            raise _fail("claims", f"token claim {name!r} must be a string")
    if "sub" in claims and not claims["sub"]:
        raise _fail("claims", "token claim 'sub' is empty")
    for name in _TIME_CLAIMS:
        if name in claims and not _is_number(claims[name]):
            raise _fail("claims", f"token claim {name!r} must be a number (seconds since epoch)")
    aud = claims.get("aud")
    if aud is not None and not (
        isinstance(aud, str) or (isinstance(aud, list) and all(isinstance(a, str) for a in aud))
    ):
        raise _fail("claims", "token claim 'aud' must be a string or a list of strings")
    _check_audience(aud, audience)
    _check_times(claims, leeway=leeway, now=now)
    if "act" in claims:
        _check_act(claims["act"], max_actor_depth)


def _check_audience(aud: str | list[str] | None, audience: str) -> None:
    if aud == audience or (isinstance(aud, list) and audience in aud):
        return
    shown = _show(aud if isinstance(aud, str) else aud or "")
    hint = ""
    candidates = [aud] if isinstance(aud, str) else aud or []
    if any(a.rstrip("/") == audience.rstrip("/") for a in candidates):
        # RFC 8707 resources compare exactly: say which form the issuer used.
        hint = (
            " (they differ only by a trailing '/': register the resource at the issuer "
            "exactly as the agent's url, or set the url to the registered form)"
        )
    raise _fail("audience", f"token audience {shown} is not this resource {audience!r}{hint}")


def _check_times(claims: Mapping[str, Any], *, leeway: float, now: float) -> None:
    exp = claims.get("exp")
    if exp is not None and now > exp + leeway:
        raise _fail(
            "expired",
            f"token expired at {_when(exp)} ({now - exp:.0f} s ago, leeway {leeway:g} s); "
            "get a new token",
        )
    nbf = claims.get("nbf")
    if nbf is not None and now + leeway < nbf:
        raise _fail(
            "not_yet_valid",
            f"token is not valid before {_when(nbf)} ({nbf - now:.0f} s from now, "
            f"leeway {leeway:g} s); check the clocks of issuer and receiver",
        )
    iat = claims.get("iat")
    if iat is not None and iat > now + leeway:
        raise _fail(
            "issued_in_future",
            f"token was issued in the future ({_when(iat)}, {iat - now:.0f} s from now, "
            f"leeway {leeway:g} s); check the clocks of issuer and receiver",
        )


def _verification_key(key: Key, alg: str) -> Key:
    """``EdDSA`` and ``Ed25519`` name one signature: let either key verify either header."""
    if key.alg and key.alg != alg and alg in _EDDSA_NAMES:
        data = {k: v for k, v in key.as_dict(private=False).items() if k != "alg"}
        return _import_jwk(data)
    return key


async def verify_jwt(
    token: str,
    *,
    keys: KeyResolver,
    issuers: Collection[str],
    audience: str,
    token_types: Collection[str],
    algorithms: Collection[str] = ALGORITHMS,
    leeway: float = 60.0,
    max_bytes: int = 8192,
    max_actor_depth: int = 5,
    clock: Callable[[], float] = time.time,
    required_claims: Collection[str] = _DEFAULT_REQUIRED,
    profiles: Mapping[str, TokenProfile] | None = None,
) -> dict[str, Any]:
    """Verify a signed JWT and validate its claims; return the claims.

    Checks, in order: size, structure, header ``alg`` in ``algorithms``, ``typ`` in
    ``token_types``, ``iss`` trusted, key by ``kid`` (and fitting ``alg``),
    signature, required and well-typed claims, ``aud``, ``exp``/``nbf``/``iat``
    with ``leeway``, ``act`` shape and depth. ``profiles`` relax the ``typ`` and the
    required claims for the issuers they name (see :class:`TokenProfile`). Any failure
    raises :class:`InvalidTokenError` whose ``check`` names the failed check; messages
    never contain the token.
    """
    allowed = allowed_algorithms(algorithms)
    types = {_normalize_typ(t) for t in token_types}
    claims, _ = await _verify(
        token,
        keys=keys,
        issuers=issuers,
        audience=audience,
        types=types,
        allowed=allowed,
        registry=_registry_for(allowed),
        leeway=leeway,
        max_bytes=max_bytes,
        max_actor_depth=max_actor_depth,
        now=clock(),
        required_claims=required_claims,
        profiles=profiles,
    )
    return claims


_REGISTRIES: dict[frozenset[str], jws.JWSRegistry] = {}


def _registry_for(allowed: frozenset[str]) -> jws.JWSRegistry:
    registry = _REGISTRIES.get(allowed)
    if registry is None:
        registry = _REGISTRIES[allowed] = jws_registry(allowed)
    return registry


async def _verify(
    token: str,
    *,
    keys: KeyResolver,
    issuers: Collection[str],
    audience: str,
    types: Collection[str],
    allowed: frozenset[str],
    registry: jws.JWSRegistry,
    leeway: float,
    max_bytes: int,
    max_actor_depth: int,
    now: float,
    required_claims: Collection[str],
    profiles: Mapping[str, TokenProfile] | None = None,
) -> tuple[dict[str, Any], str | None]:
    obj, header = _parse(token, max_bytes)

    alg = header["alg"]
    if alg not in allowed:
        raise _fail(
            "algorithm",
            f"token algorithm {_show(alg)} is not allowed; accepted: {', '.join(sorted(allowed))}",
        )

    typ = header.get("typ")
    allowed_types: Collection[str | None] = types
    if profiles:  # the types any trusted issuer issues; the issuer's own ones are below
        allowed_types = {*types, *accepted_types(profiles.values())}
    if not (typ is None and None in allowed_types) and (
        not isinstance(typ, str) or _normalize_typ(typ) not in allowed_types
    ):
        ordered = sorted(allowed_types, key=lambda t: t or "")
        expected = " or ".join("no 'typ'" if t is None else repr(t) for t in ordered)
        got = "no 'typ' header" if typ is None else f"type {_show(typ)}"
        raise _fail("type", f"token has {got}; expected {expected}")

    claims = _claims(obj)
    iss = claims.get("iss")
    if not isinstance(iss, str):
        raise _fail("claims", "token has no string 'iss' claim")
    if iss not in issuers:
        raise _fail(
            "issuer",
            f"token issuer {_show(iss)} is not trusted here; trusted: "
            f"{', '.join(repr(i) for i in issuers) or 'none'}",
        )
    profile = None if profiles is None else profiles.get(iss)
    if profiles and profile is None and not (isinstance(typ, str) and _normalize_typ(typ) in types):
        expected = " or ".join(repr(t) for t in sorted(types))
        raise _fail("type", f"token has type {_show(typ)}; issuer {iss!r} issues {expected}")
    if profile is not None and not profile.accepts_typ(typ):
        raise _fail(
            "type",
            f"token has type {_show(typ)}; issuer {iss!r} issues {profile.describe_types()}",
        )
    if profile is not None:
        required_claims = profile.required_claims(required_claims)

    kid = header.get("kid")
    key = await keys.resolve(issuer=iss, kid=kid, alg=alg)
    if not key_fits_algorithm(key, alg):
        raise _fail(
            "algorithm",
            f"token algorithm {alg} does not fit its key {_show(kid)} ({key.key_type}"
            f"{'' if not key.alg else ', alg ' + key.alg})",
        )
    try:
        valid = jws.validate_compact(
            obj, _verification_key(key, alg), algorithms=[alg], registry=registry
        )
    except (InvalidHeaderValueError, UnsupportedHeaderError, MissingCritHeaderError) as exc:
        raise _fail("malformed", f"token header is invalid: {exc}") from exc
    except JoseError as exc:
        raise _fail("signature", f"token signature could not be checked: {exc}") from exc
    if not valid:
        raise _fail(
            "signature",
            f"token signature does not verify with key {_show(kid)} of issuer {iss!r}",
        )

    _check_claims(
        claims,
        required=required_claims,
        audience=audience,
        leeway=leeway,
        now=now,
        max_actor_depth=max_actor_depth,
    )
    return claims, kid


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    issuer: str
    kid: str | None


class TokenVerifier:
    """Verifies access tokens (``typ`` ``at+jwt``) for a resource; caches successes.

    ``keys=None`` builds a :class:`~keycard_agents._jwks.JWKSCache` from the
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
        self._registry = _registry_for(self._allowed)
        self._leeway = leeway
        self._max_bytes = max_bytes
        self._max_actor_depth = max_actor_depth
        self._clock = clock
        self._cache: OrderedDict[bytes, _Verified] = OrderedDict()
        self._cache_size = cache_size
        self._owned: Any = None
        if keys is None:
            from ._jwks import JWKSCache

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
        digest = self._digest(token)
        principal = None if digest is None else self._cached(digest, audience)
        if principal is None:
            claims, kid = await _verify(
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
                required_claims=_DEFAULT_REQUIRED,
                profiles=self._profiles,
            )
            principal = Principal.from_claims(claims)
            profile = self._profiles[principal.issuer]
            if profile.client_claim != "client_id":
                principal = replace(principal, client_id=profile.client_of(claims))
            if digest is not None:
                self._remember(digest, principal, kid=kid)
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
            _check_times(principal.claims, leeway=self._leeway, now=self._clock())
        except InvalidTokenError:
            del self._cache[digest]
            raise
        if not self._keys.known(issuer=entry.issuer, kid=entry.kid):
            del self._cache[digest]
            return None
        _check_audience(principal.claims.get("aud"), audience)
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
