"""Value rules shared by the token service's configuration models.

RFC 6749 §3.3 (scope tokens), RFC 8414 §2 / RFC 9700 §2.1 (https endpoints; plain http
only on a loopback host, for development).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["LOOPBACK_HOSTS", "check_scopes", "check_url"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_URL_RULE = "must be an absolute https or http://127.0.0.1/localhost URL"


def check_url(value: str) -> str:
    """An absolute https URL, or http on a loopback host; no fragment, no credentials."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise ValueError(_URL_RULE) from None
    if not host or parts.fragment or parts.username is not None or parts.password is not None:
        raise ValueError(_URL_RULE)
    if parts.scheme == "https":
        return value
    if parts.scheme == "http" and host in LOOPBACK_HOSTS:
        return value
    raise ValueError(_URL_RULE)


def check_scopes(values: Iterable[str]) -> tuple[str, ...]:
    """Valid RFC 6749 §3.3 scope tokens, duplicates dropped, order kept."""
    out: list[str] = []
    for scope in values:
        # RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        if not scope or any(c in ' "\\' or not 0x21 <= ord(c) <= 0x7E for c in scope):
            raise ValueError(f"invalid scope token {scope!r} (RFC 6749 §3.3)")
        if scope not in out:
            out.append(scope)
    return tuple(out)
