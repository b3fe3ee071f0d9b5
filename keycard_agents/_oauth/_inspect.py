"""``keycard-agents token inspect``: decode a JWT, show its claims and chain, verify it.

Decodes the JWS compact serialization (RFC 7515 §7.1) without trusting it, shows the
RFC 9068 access token claims and the RFC 8693 §4.1 ``act`` chain, and, when an issuer
is given, runs the full verification of :func:`~keycard_agents._jose._jwt.verify_jwt`
(keys from the issuer's RFC 8414 metadata, its ``jwks_uri`` or a local JWKS file).
The token is read from standard input or a file, never from the command line (it would
stay in the shell history), and is never printed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

from keycard_agents._errors import InvalidTokenError, KeycardError
from keycard_agents._jose._jwt import ACCESS_TOKEN_TYPE, verify_jwt
from keycard_agents._json import loads_bounded
from keycard_agents._oauth._jwks import JWKSCache, TrustedIssuer

__all__ = ["TokenReport", "decode_unverified", "inspect_token", "looks_like_jwt", "render_report"]

_JWT = re.compile(r"^[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*$")
_MAX_BYTES = 64 * 1024


def looks_like_jwt(text: str) -> bool:
    """Whether ``text`` has the shape of a compact JWS (three base64url segments)."""
    return bool(_JWT.match(text.strip()))


def _b64json(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = loads_bounded(raw)  # never a RecursionError on a hostile token
    except (binascii.Error, ValueError) as exc:
        raise InvalidTokenError(
            f"malformed token: its {what} is not base64url-encoded JSON", check="malformed"
        ) from exc
    if not isinstance(value, dict):
        raise InvalidTokenError(
            f"malformed token: its {what} is not a JSON object", check="malformed"
        )
    return value


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(header, claims)`` of a compact JWS, checking only its shape."""
    token = token.strip()
    if not token:
        raise InvalidTokenError("no token: the input is empty", check="malformed")
    if len(token) > _MAX_BYTES:
        raise InvalidTokenError(
            f"the input is {len(token)} bytes, larger than any token ({_MAX_BYTES})",
            check="size",
        )
    parts = token.split(".")
    if len(parts) == 5:
        raise InvalidTokenError(
            "this is an encrypted token (JWE, five segments): it cannot be inspected without "
            "the recipient's key",
            check="malformed",
        )
    if len(parts) != 3 or not all(re.fullmatch(r"[A-Za-z0-9_-]*", p) for p in parts):
        raise InvalidTokenError(
            "malformed token: expected a JWT, three base64url segments separated by dots",
            check="malformed",
        )
    return _b64json(parts[0], "header"), _b64json(parts[1], "payload")


@dataclass
class TokenReport:
    """What ``token inspect`` found. ``verified`` is ``None`` when no issuer was given."""

    header: dict[str, Any]
    claims: dict[str, Any]
    chain: tuple[str, ...]
    now: float
    verified: bool | None = None
    failure: str | None = None
    failed_check: str | None = None
    checked_audience: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "header": self.header,
            "claims": self.claims,
            "chain": list(self.chain),
            "verified": self.verified,
            "failed_check": self.failed_check,
            "failure": self.failure,
            "checked_audience": self.checked_audience,
            "notes": self.notes,
        }


def _chain(claims: Mapping[str, Any]) -> tuple[str, ...]:
    sub = str(claims.get("sub", "?"))
    act = claims.get("act")
    if not isinstance(act, Mapping):
        return (sub,)
    actors: list[str] = []
    node: Any = act
    while isinstance(node, Mapping) and len(actors) < 64:
        actors.append(str(node.get("sub", "?")))
        node = node.get("act")
    return (sub, *reversed(actors))


async def inspect_token(
    token: str,
    *,
    issuer: str | None = None,
    audience: str | None = None,
    jwks: Mapping[str, Any] | None = None,
    jwks_uri: str | None = None,
    token_types: Sequence[str] = (ACCESS_TOKEN_TYPE,),
    http_client: httpx.AsyncClient | None = None,
    clock: Callable[[], float] = time.time,
    leeway: float = 60.0,
) -> TokenReport:
    """Decode ``token`` and, when ``issuer`` is given, verify it completely.

    Keys come from ``jwks`` (a JWK Set), else ``jwks_uri``, else the issuer's RFC 8414
    metadata. Without ``audience`` the token's own first ``aud`` is checked against
    itself (noted in the report). Raises :class:`InvalidTokenError` only when the token
    cannot even be decoded; a verification failure is reported, not raised.
    """
    header, claims = decode_unverified(token)
    report = TokenReport(header=header, claims=claims, chain=_chain(claims), now=clock())
    if issuer is None:
        return report
    aud = claims.get("aud")
    first = aud if isinstance(aud, str) else (aud[0] if isinstance(aud, list) and aud else None)
    checked = audience or (first if isinstance(first, str) else None)
    if audience is None:
        report.notes.append("audience not checked against a resource: pass --audience URL")
    report.checked_audience = checked
    keys = JWKSCache(
        issuers=[TrustedIssuer(issuer, jwks_uri=jwks_uri, jwks=jwks)],
        http_client=http_client,
        retries=1,
        backoff=0.1,
    )
    try:
        await verify_jwt(
            token.strip(),
            keys=keys,
            issuers=(issuer,),
            audience=checked or "",
            token_types=token_types,
            leeway=leeway,
            max_bytes=_MAX_BYTES,
            max_actor_depth=32,
            clock=clock,
        )
    except InvalidTokenError as exc:
        report.verified, report.failed_check, report.failure = False, exc.check, str(exc)
    except KeycardError as exc:
        report.verified, report.failed_check, report.failure = False, "keys", str(exc)
    else:
        report.verified = True
    finally:
        await keys.aclose()
    return report


def _when(value: Any, now: float) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return repr(value)
    try:
        moment = datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return repr(value)
    delta = value - now
    span = abs(delta)
    if span < 120:
        rel = f"{span:.0f} s"
    elif span < 7200:
        rel = f"{span / 60:.0f} min"
    elif span < 172800:
        rel = f"{span / 3600:.1f} h"
    else:
        rel = f"{span / 86400:.1f} days"
    return f"{moment} ({'in ' + rel if delta >= 0 else rel + ' ago'})"


def _clean(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "".join(c if c.isprintable() else "?" for c in text)


def render_report(report: TokenReport, *, paint: Callable[[str, str], str] | None = None) -> str:
    """The report as terminal text; ``paint(text, style)`` adds colour when given."""

    def p(text: str, style: str) -> str:
        return paint(text, style) if paint is not None else text

    h, c, now = report.header, report.claims, report.now
    rows: list[tuple[str, str]] = [
        ("type", f"{_clean(h.get('typ', '(none)'))}  alg {_clean(h.get('alg', '(none)'))}"),
    ]
    if "kid" in h:
        rows.append(("key id", _clean(h["kid"])))
    labels = [
        ("iss", "issuer"),
        ("sub", "subject"),
        ("aud", "audience"),
        ("client_id", "client"),
        ("scope", "scopes"),
        ("txn", "txn"),
        ("jti", "jti"),
    ]
    for claim, label in labels:
        if claim in c:
            rows.append((label, _clean(c[claim])))
    for claim, label in (("iat", "issued"), ("nbf", "not before"), ("exp", "expires")):
        if claim in c:
            text = _when(c[claim], now)
            expired = claim == "exp" and isinstance(c[claim], (int, float)) and c[claim] < now
            rows.append((label, p(text + "  EXPIRED", "red") if expired else text))
    if isinstance(c.get("act"), Mapping):
        current = report.chain[-1]
        rows.append(("chain", f"{' → '.join(_clean(x) for x in report.chain)}"))
        rows.append(("acting", f"{_clean(current)} (current actor, outermost act)"))
    else:
        rows.append(("chain", f"{_clean(report.chain[0])} (no act claim: nobody acts for them)"))
    may_act = c.get("may_act")
    if isinstance(may_act, Mapping):
        rows.append(("may act", _clean(may_act.get("sub", "?"))))
    width = max(len(label) for label, _ in rows)
    lines = [f"{p(label.ljust(width), 'bold')}  {value}" for label, value in rows]
    lines.append("")
    lines.append(p("claims", "bold"))
    lines.extend("  " + line for line in json.dumps(c, indent=2, sort_keys=True).splitlines())
    lines.append("")
    if report.verified is None:
        lines.append(p("not verified: pass --issuer URL to check signature and claims", "dim"))
    elif report.verified:
        where = f", audience {report.checked_audience}" if report.checked_audience else ""
        lines.append(p(f"✔ valid: signature, issuer, type, lifetime{where}", "green"))
    else:
        lines.append(p(f"✘ NOT valid ({report.failed_check}): {report.failure}", "red"))
    for note in report.notes:
        lines.append(p(f"note: {note}", "dim"))
    return "\n".join(lines) + "\n"
