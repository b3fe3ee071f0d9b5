"""One home for each URL rule of the specifications we speak.

- RFC 8414 §3.1: where an authorization server publishes its metadata.
- OpenID Connect Discovery 1.0 §4: the OpenID configuration fallback.
- RFC 9728 §3.1: where a protected resource publishes its metadata.
- RFC 9728 §3.3 with RFC 3986 §6.2.2-§6.2.3: whether metadata names the same resource.
- RFC 6454 §4-§5: whether two URLs share an origin (where a token may be sent).
- RFC 8414 §3.3 / RFC 7519 §4.1.1: issuers compare exactly (with a hint when only a
  trailing ``/`` differs), and which issuer an RFC 9728 ``authorization_servers`` entry names.

Before writing a URL helper elsewhere, look here.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "AUTHORIZATION_SERVER_WELL_KNOWN",
    "OPENID_CONFIGURATION_WELL_KNOWN",
    "PROTECTED_RESOURCE_WELL_KNOWN",
    "Origin",
    "authorization_server_metadata_url",
    "discovery_urls",
    "identifier_mismatch",
    "names_same_server",
    "openid_configuration_url",
    "origin",
    "protected_resource_metadata_url",
    "redirect_uri_registered",
    "resource_metadata_url_under",
    "same_origin",
    "same_resource",
]

AUTHORIZATION_SERVER_WELL_KNOWN = "/.well-known/oauth-authorization-server"
OPENID_CONFIGURATION_WELL_KNOWN = "/.well-known/openid-configuration"
PROTECTED_RESOURCE_WELL_KNOWN = "/.well-known/oauth-protected-resource"

#: RFC 6454 §4 step 5 / RFC 3986 §6.2.3: the port a scheme implies when none is written.
_DEFAULT_PORTS = {"http": 80, "https": 443}

#: An origin (RFC 6454 §4): scheme and host in lower case, and the port (default applied).
Origin = tuple[str, str, int]


def authorization_server_metadata_url(issuer: str) -> str:
    """RFC 8414 §3.1: ``/.well-known/oauth-authorization-server`` between host and path.

    A terminating ``/`` of the issuer's path is removed before inserting:
    ``https://as.example/tenant/`` → ``https://as.example/.well-known/oauth-authorization-server/tenant``.
    An issuer has no query or fragment (RFC 8414 §2); any is dropped.
    """
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, AUTHORIZATION_SERVER_WELL_KNOWN + path, "", ""))


def openid_configuration_url(issuer: str) -> str:
    """OpenID Connect Discovery 1.0 §4: ``/.well-known/openid-configuration`` appended to
    the issuer, after removing a terminating ``/``."""
    return issuer.rstrip("/") + OPENID_CONFIGURATION_WELL_KNOWN


def protected_resource_metadata_url(resource: str) -> str:
    """RFC 9728 §3.1: ``/.well-known/oauth-protected-resource`` between host and path.

    The path and query of the resource identifier follow the well-known segment; the
    slash that only terminates the host (``https://rs.example/``) is removed:
    ``https://rs.example/mcp`` → ``https://rs.example/.well-known/oauth-protected-resource/mcp``.
    """
    parts = urlsplit(resource)
    path = "" if parts.path == "/" else parts.path
    return urlunsplit(
        (parts.scheme, parts.netloc, PROTECTED_RESOURCE_WELL_KNOWN + path, parts.query, "")
    )


def resource_metadata_url_under(resource: str) -> str:
    """Where agents served by this library publish their RFC 9728 metadata: under their
    own URL, since a mounted agent app can only answer below its mount path.

    For an agent without a path this is also the RFC 9728 §3.1 location; clients try it
    first, then :func:`protected_resource_metadata_url`.
    """
    return resource.rstrip("/") + PROTECTED_RESOURCE_WELL_KNOWN


def origin(url: str) -> Origin | None:
    """The origin of ``url`` (RFC 6454 §4), or ``None`` when it has none.

    Scheme and host are compared in lower case, an omitted port is the scheme's default
    (80 for http, 443 for https), and user information is not part of an origin. A URL
    without scheme or host, or with an invalid port, has no origin that could equal
    another one.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    if not scheme or not host or port is None:
        return None
    return scheme, host, port


def same_origin(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` have the same origin (RFC 6454 §5): scheme, host and port,
    with default ports applied (``https://h`` and ``https://H:443/x`` are one origin)."""
    first = origin(a)
    return first is not None and first == origin(b)


def _resource_key(url: str) -> tuple[str, str, str, str, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
        netloc = parts.netloc
    else:
        host = (parts.hostname or "").lower()
        if ":" in host:
            host = f"[{host}]"
        netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
        if parts.username is not None or parts.password is not None:
            netloc = parts.netloc.rpartition("@")[0] + "@" + netloc
    return scheme, netloc, parts.path or "/", parts.query, parts.fragment


def same_resource(a: str, b: str) -> bool:
    """Whether two resource identifiers are the same (RFC 9728 §3.3: "identical").

    Compared as URIs after the normalizations of RFC 3986 that never change what a URI
    identifies: scheme and host in lower case (§6.2.2.1), the scheme's default port
    omitted and an empty path equal to ``/`` (§6.2.3). Nothing else is forgiven:
    ``https://rs.example/mcp`` and ``https://rs.example/mcp/`` are different resources.
    """
    return _resource_key(a) == _resource_key(b)


def discovery_urls(issuer: str, metadata_url: str | None = None) -> tuple[str, ...]:
    """The metadata documents to try, in order: ``metadata_url`` alone when configured,
    else RFC 8414 first and OpenID Connect Discovery when that answers 404."""
    if metadata_url:
        return (metadata_url,)
    return (authorization_server_metadata_url(issuer), openid_configuration_url(issuer))


def identifier_mismatch(stated: object, configured: str, *, what: str = "issuer") -> str:
    """Why ``stated`` is not ``configured``, with a hint when only a trailing ``/`` differs.

    Identifiers are compared exactly (RFC 8414 §3.3, RFC 7519 §4.1.1, RFC 9728 §3.3): the
    hint tells which form to configure instead of guessing it.
    """
    shown = repr(stated) if len(repr(stated)) <= 120 else repr(stated)[:117] + "..."
    message = f"{what} {shown} is not the configured {configured!r}"
    if isinstance(stated, str) and stated.rstrip("/") == configured.rstrip("/"):
        message += (
            f" (they differ only by a trailing '/'; identifiers are compared exactly, so "
            f"configure {stated!r})"
        )
    return message


_LOOPBACK_IPS = frozenset({"127.0.0.1", "::1"})


def redirect_uri_registered(uri: str, registered: Sequence[str]) -> bool:
    """Whether ``uri`` is one of the ``registered`` redirect URIs (RFC 6749 §3.1.2.3:
    exact string match), except that for a loopback IP redirect URI of a native app any
    port is allowed (RFC 8252 §7.3): ``http://127.0.0.1:53117/callback`` matches a
    registered ``http://127.0.0.1/callback``. Scheme, host, path and query still match
    exactly; ``localhost`` gets no such allowance (RFC 8252 §8.3)."""
    if uri in registered:
        return True
    asked = urlsplit(uri)
    try:
        asked.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    if asked.scheme != "http" or asked.fragment or asked.hostname not in _LOOPBACK_IPS:
        return False
    for candidate in registered:
        known = urlsplit(candidate)
        if (
            known.scheme == "http"
            and known.hostname == asked.hostname
            and (known.path, known.query) == (asked.path, asked.query)
            and not known.fragment
            and known.username is None
            and asked.username is None
        ):
            return True
    return False


def names_same_server(named: str, issuer: str) -> bool:
    """Whether an RFC 9728 ``authorization_servers`` entry names ``issuer``.

    Exact string equality, plus RFC 3986 §6.2.3 scheme-based normalization for an empty
    path: ``https://host`` and ``https://host/`` are the same URI (URL libraries, such as
    pydantic's, add the ``/``). A non-empty path must match exactly: ``https://host/a``
    and ``https://host/a/`` are different issuers.
    """
    if named == issuer:
        return True
    a, b = urlsplit(named), urlsplit(issuer)
    if a.query or b.query or a.fragment or b.fragment:
        return False
    if a.path not in ("", "/") or b.path not in ("", "/"):
        return False
    return (a.scheme.lower(), a.netloc.lower()) == (b.scheme.lower(), b.netloc.lower())
