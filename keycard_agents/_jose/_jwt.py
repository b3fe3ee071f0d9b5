"""Verifying JWTs: one call that runs every check, in a fixed order.

Implements RFC 7515 §5.2 (JWS validation), RFC 7519 §7.2 (JWT validation) with the
claims of RFC 9068 §4 (JWT access tokens) and RFC 8693 §4.1 (``act``), the explicit
typing and algorithm allow-lists of RFC 8725 §3.1 and §3.11, and the audience check
of RFC 8707 / RFC 9068 §4 (``aud`` must name this resource).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ec import ECDSA, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jws
from joserfc.errors import (
    InvalidHeaderValueError,
    JoseError,
    MissingCritHeaderError,
    UnsupportedHeaderError,
)
from joserfc.jwk import ECKey, Key

from keycard_agents._errors import InvalidTokenError
from keycard_agents._jose._keys import (
    ALGORITHMS,
    EDDSA_NAMES,
    KeyResolver,
    allowed_algorithms,
    import_jwk,
    jws_registry,
    key_fits_algorithm,
    show_untrusted,
)
from keycard_agents._jose._profiles import TokenProfile, accepted_types, normalize_typ
from keycard_agents._json import JsonLimitError, loads_bounded

if TYPE_CHECKING:
    from joserfc._rfc7515.model import JWSAlgModel

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "CLIENT_ASSERTION_TYPE",
    "DEFAULT_REQUIRED_CLAIMS",
    "check_audience",
    "check_times",
    "registry_for",
    "verify_compact",
    "verify_jwt",
]

#: ``typ`` of user tokens and delegated tokens (RFC 9068 §2.1).
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
#: ``typ`` of RFC 7523 client assertions (draft-ietf-oauth-rfc7523bis).
CLIENT_ASSERTION_TYPE = "client-authentication+jwt"

DEFAULT_REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti")
_COMPACT_JWS = re.compile(rb"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_STRING_CLAIMS = ("iss", "sub", "jti", "scope", "client_id", "txn", "azp")
_TIME_CLAIMS = ("exp", "nbf", "iat")
#: The latest NumericDate accepted: 9999-12-31T23:59:59Z (what a datetime can hold).
MAX_NUMERIC_DATE = 253_402_300_799
#: ``sub_id`` format naming a user by issuer and subject (RFC 9493 §3.2.5).
ISS_SUB_FORMAT = "iss_sub"


def _fail(check: str, message: str) -> InvalidTokenError:
    return InvalidTokenError(message, check=check)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_numeric_date(value: object) -> bool:
    """A finite number of seconds between the epoch and year 9999 (RFC 7519 §2 NumericDate).

    ``NaN``, infinities and huge values would make every comparison with the clock
    false (a token that never expires) or overflow a date conversion.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return 0 <= value <= MAX_NUMERIC_DATE  # an int of any size compares without overflow


def _segment_json(segment: bytes, what: str) -> Any:
    """One base64url JWS segment, decoded and parsed with the bounded JSON parser."""
    try:
        raw = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _fail("malformed", f"token {what} is not base64url") from exc
    try:
        return loads_bounded(raw)
    except JsonLimitError as exc:
        raise _fail("malformed", f"token {what} is not acceptable JSON: {exc}") from None


class _Compact(NamedTuple):
    """A compact JWS split into what verification needs (RFC 7515 §7.1)."""

    signing_input: bytes
    payload: bytes
    signature_segment: bytes


#: Segment limits (bytes of base64url), as joserfc's JWS registry enforced them when it
#: parsed our tokens: the header at most 2 KiB, the payload 128,000, the signature 1 KiB.
_MAX_HEADER_SEGMENT = 2048
_MAX_PAYLOAD_SEGMENT = 128_000
_MAX_SIGNATURE_SEGMENT = 1024


def _b64decode(segment: bytes) -> bytes:
    """base64url without padding; the caller has checked the alphabet."""
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))


def _parse(token: object, max_bytes: int) -> tuple[_Compact, dict[str, Any]]:
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
    header_segment, payload_segment, signature_segment = raw.split(b".")
    if not header_segment or not payload_segment:
        raise _fail("malformed", "token has an empty header or payload segment")
    if (
        len(payload_segment) > _MAX_PAYLOAD_SEGMENT
        or len(signature_segment) > _MAX_SIGNATURE_SEGMENT
    ):
        raise _fail("malformed", "token has a payload or signature segment too large")
    header = _HEADERS.get(header_segment)
    if header is None:
        header = _header(header_segment)
        if len(_HEADERS) >= _MAX_HEADERS:
            _HEADERS.clear()
        _HEADERS[header_segment] = header
    try:
        payload = _b64decode(payload_segment)
    except (binascii.Error, ValueError) as exc:
        raise _fail("malformed", f"token payload is not base64url ({exc})") from exc
    signing_input = raw[: len(header_segment) + 1 + len(payload_segment)]
    return _Compact(signing_input, payload, signature_segment), header


#: Headers that passed :func:`_header`, by their segment: a signer's tokens share one
#: (parsed JSON is never changed by its readers). Cleared when full.
_HEADERS: dict[bytes, dict[str, Any]] = {}
_MAX_HEADERS = 256


def _header(segment: bytes) -> dict[str, Any]:
    """A JOSE header: a JSON object with a string ``alg``, a string ``kid`` if any, no
    ``crit`` or ``b64`` (RFC 7515 §4.1.11, RFC 7797)."""
    header = _segment_json(segment, "header")
    if not isinstance(header, dict):
        raise _fail("malformed", "token header is not a JSON object with a string 'alg'")
    if len(segment) > _MAX_HEADER_SEGMENT:
        raise _fail("malformed", "token has a header segment too large")
    if not isinstance(header.get("alg"), str):
        raise _fail("malformed", "token header is not a JSON object with a string 'alg'")
    if "crit" in header or "b64" in header:
        raise _fail("malformed", "token header uses JWS extensions (crit/b64) we do not accept")
    if not isinstance(header.get("kid", ""), str):
        raise _fail("malformed", "token header 'kid' is not a string")
    return header


def _claims(obj: _Compact) -> dict[str, Any]:
    try:
        claims = loads_bounded(obj.payload)
    except JsonLimitError as exc:
        raise _fail("malformed", f"token payload is not acceptable JSON: {exc}") from None
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
        if name in claims and not is_numeric_date(claims[name]):
            raise _fail(
                "claims",
                f"token claim {name!r} must be a NumericDate: a finite number of seconds since "
                f"the epoch, at most {MAX_NUMERIC_DATE} (RFC 7519 §2)",
            )
    if "sub_id" in claims:
        _check_sub_id(claims["sub_id"], claims.get("sub"))
    aud = claims.get("aud")
    if aud is not None and not (
        isinstance(aud, str) or (isinstance(aud, list) and all(isinstance(a, str) for a in aud))
    ):
        raise _fail("claims", "token claim 'aud' must be a string or a list of strings")
    check_audience(aud, audience)
    check_times(claims, leeway=leeway, now=now)
    if "act" in claims:
        _check_act(claims["act"], max_actor_depth)


def _check_sub_id(sub_id: object, sub: object) -> None:
    """``sub_id`` (RFC 9493 §4): an object with a string ``format``; ``iss_sub`` must name
    a non-empty issuer and the token's own ``sub``."""
    if not isinstance(sub_id, dict) or not isinstance(sub_id.get("format"), str):
        raise _fail("claims", "token claim 'sub_id' must be an object with a string 'format'")
    if sub_id["format"] != ISS_SUB_FORMAT:
        return
    iss, named = sub_id.get("iss"), sub_id.get("sub")
    if not isinstance(iss, str) or not iss or not isinstance(named, str):
        raise _fail("claims", "token claim 'sub_id' of format iss_sub needs string 'iss' and 'sub'")
    if named != sub:
        raise _fail(
            "claims",
            "token claim 'sub_id' names another subject than 'sub': the two must identify the "
            "same user (RFC 9493 §4)",
        )


def check_audience(aud: str | list[str] | None, audience: str) -> None:
    if aud == audience or (isinstance(aud, list) and audience in aud):
        return
    shown = show_untrusted(aud or "")
    hint = ""
    candidates = [aud] if isinstance(aud, str) else aud or []
    if any(a.rstrip("/") == audience.rstrip("/") for a in candidates):
        # RFC 8707 resources compare exactly: say which form the issuer used.
        hint = (
            " (they differ only by a trailing '/': register the resource at the issuer "
            "exactly as the agent's url, or set the url to the registered form)"
        )
    raise _fail("audience", f"token audience {shown} is not this resource {audience!r}{hint}")


def check_times(claims: Mapping[str, Any], *, leeway: float, now: float) -> None:
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
    if key.alg and key.alg != alg and alg in EDDSA_NAMES:
        data = {k: v for k, v in key.as_dict(private=False).items() if k != "alg"}
        return import_jwk(data)
    return key


class _Prepared:
    """What is known of one key object for one ``alg``: whether it fits (see
    :func:`key_fits_algorithm`) and, once joserfc's key checks have passed, its signature
    check with the ``cryptography`` key at hand."""

    __slots__ = ("fits", "key", "verify")

    def __init__(self, key: Key, fits: bool) -> None:
        self.key = key
        self.fits = fits
        self.verify: Callable[[bytes, bytes], bool] | None = None


#: Keyed by ``(id(key), alg)``; an entry holds its key, so the id cannot be reused while
#: the entry lives. Cleared when full (keys come from a few key sets).
_PREPARED: dict[tuple[int, str], _Prepared] = {}
_MAX_PREPARED = 1024


def _prepared(key: Key, alg: str) -> _Prepared:
    entry = _PREPARED.get((id(key), alg))
    if entry is None or entry.key is not key:
        entry = _Prepared(key, key_fits_algorithm(key, alg))
        if len(_PREPARED) >= _MAX_PREPARED:
            _PREPARED.clear()
        _PREPARED[(id(key), alg)] = entry
    return entry


#: The ECDSA schemes of RFC 7518 §3.4 by JWS ``alg``.
_ECDSA = {
    "ES256": ECDSA(hashes.SHA256()),
    "ES384": ECDSA(hashes.SHA384()),
    "ES512": ECDSA(hashes.SHA512()),
}


def _ec_verifier(public: EllipticCurvePublicKey, scheme: ECDSA) -> Callable[[bytes, bytes], bool]:
    """ES256/384/512 (RFC 7518 §3.4): the signature is R || S, each of the curve's size."""
    size = (public.curve.key_size + 7) // 8

    def verify(signing_input: bytes, signature: bytes) -> bool:
        if len(signature) != 2 * size:
            return False
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        try:
            public.verify(encode_dss_signature(r, s), signing_input, scheme)
        except InvalidSignature:
            return False
        return True

    return verify


def _verifier(entry: _Prepared, alg: str, model: JWSAlgModel) -> Callable[[bytes, bytes], bool]:
    """The signature check of ``alg`` with the entry's key. joserfc's key checks (``use``,
    ``key_ops``, key type, curve, the key's own ``alg``) run the first time, raising what
    they raised inside ``jws.validate_compact``; only a key that passed them is kept."""
    if entry.verify is not None:
        return entry.verify
    vkey = _verification_key(entry.key, alg)
    model.check_key(vkey)
    public = vkey.get_op_key("verify")
    verify: Callable[[bytes, bytes], bool]
    if alg in _ECDSA and isinstance(vkey, ECKey) and isinstance(public, EllipticCurvePublicKey):
        verify = _ec_verifier(public, _ECDSA[alg])
    else:  # RSA and EdDSA: joserfc's own call is already the bare cryptography verify

        def verify(signing_input: bytes, signature: bytes) -> bool:
            return bool(model.verify(signing_input, signature, vkey))

    entry.verify = verify
    return verify


def _validate_signature(
    obj: _Compact, header: dict[str, Any], entry: _Prepared, alg: str, registry: jws.JWSRegistry
) -> bool:
    """RFC 7515 §5.2 steps 5-8 as ``jws.validate_compact`` ran them: the registered header
    parameters well-typed, ``alg`` allowed, the key fit for it, then the signature."""
    registry.check_header(header)
    verify = _verifier(entry, alg, registry.get_alg(alg))
    try:
        signature = _b64decode(obj.signature_segment)
    except (binascii.Error, ValueError):
        return False
    return verify(obj.signing_input, signature)


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
    required_claims: Collection[str] = DEFAULT_REQUIRED_CLAIMS,
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
    allowed, types = _options(algorithms, token_types)
    claims, _ = await verify_compact(
        token,
        keys=keys,
        issuers=issuers,
        audience=audience,
        types=types,
        allowed=allowed,
        registry=registry_for(allowed),
        leeway=leeway,
        max_bytes=max_bytes,
        max_actor_depth=max_actor_depth,
        now=clock(),
        required_claims=required_claims,
        profiles=profiles,
    )
    return claims


_OPTIONS: dict[tuple[Collection[str], Collection[str]], tuple[frozenset[str], frozenset[str]]] = {}


def _options(
    algorithms: Collection[str], token_types: Collection[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """The allow-list and the normalized types, remembered for hashable (constant) options."""
    try:
        return _OPTIONS[(algorithms, token_types)]
    except (KeyError, TypeError):
        pass
    options = allowed_algorithms(algorithms), frozenset(normalize_typ(t) for t in token_types)
    try:
        if len(_OPTIONS) < 64:
            _OPTIONS[(algorithms, token_types)] = options
    except TypeError:  # a list or a set: fine, computed each time
        pass
    return options


_REGISTRIES: dict[frozenset[str], jws.JWSRegistry] = {}


def registry_for(allowed: frozenset[str]) -> jws.JWSRegistry:
    registry = _REGISTRIES.get(allowed)
    if registry is None:
        registry = _REGISTRIES[allowed] = jws_registry(allowed)
    return registry


async def verify_compact(
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
            f"token algorithm {show_untrusted(alg)} is not allowed; "
            f"accepted: {', '.join(sorted(allowed))}",
        )

    typ = header.get("typ")
    allowed_types: Collection[str | None] = types
    if profiles:  # the types any trusted issuer issues; the issuer's own ones are below
        allowed_types = {*types, *accepted_types(profiles.values())}
    if not (typ is None and None in allowed_types) and (
        not isinstance(typ, str) or normalize_typ(typ) not in allowed_types
    ):
        ordered = sorted(allowed_types, key=lambda t: t or "")
        expected = " or ".join("no 'typ'" if t is None else repr(t) for t in ordered)
        got = "no 'typ' header" if typ is None else f"type {show_untrusted(typ)}"
        raise _fail("type", f"token has {got}; expected {expected}")

    claims = _claims(obj)
    iss = claims.get("iss")
    if not isinstance(iss, str):
        raise _fail("claims", "token has no string 'iss' claim")
    if iss not in issuers:
        raise _fail(
            "issuer",
            f"token issuer {show_untrusted(iss)} is not trusted here; trusted: "
            f"{', '.join(repr(i) for i in issuers) or 'none'}",
        )
    profile = None if profiles is None else profiles.get(iss)
    if profiles and profile is None and not (isinstance(typ, str) and normalize_typ(typ) in types):
        expected = " or ".join(repr(t) for t in sorted(types))
        raise _fail(
            "type", f"token has type {show_untrusted(typ)}; issuer {iss!r} issues {expected}"
        )
    if profile is not None and not profile.accepts_typ(typ):
        raise _fail(
            "type",
            f"token has type {show_untrusted(typ)}; "
            f"issuer {iss!r} issues {profile.describe_types()}",
        )
    if profile is not None:
        required_claims = profile.required_claims(required_claims)

    kid = header.get("kid")
    key = await keys.resolve(issuer=iss, kid=kid, alg=alg)
    prepared = _prepared(key, alg)
    if not prepared.fits:
        raise _fail(
            "algorithm",
            f"token algorithm {alg} does not fit its key {show_untrusted(kid)} ({key.key_type}"
            f"{'' if not key.alg else ', alg ' + key.alg})",
        )
    try:
        valid = _validate_signature(obj, header, prepared, alg, registry)
    except (InvalidHeaderValueError, UnsupportedHeaderError, MissingCritHeaderError) as exc:
        raise _fail("malformed", f"token header is invalid: {exc}") from exc
    except JoseError as exc:
        raise _fail("signature", f"token signature could not be checked: {exc}") from exc
    if not valid:
        raise _fail(
            "signature",
            f"token signature does not verify with key {show_untrusted(kid)} of issuer {iss!r}",
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
