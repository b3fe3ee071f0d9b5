"""Where an authorization server publishes its metadata, and how its issuer is compared.

RFC 8414 §3.1 (``/.well-known/oauth-authorization-server`` inserted between the host and
the issuer's path, any terminating ``/`` of the path removed first), OpenID Connect
Discovery 1.0 §4.1 (``/.well-known/openid-configuration`` appended to the issuer, without
its terminating ``/``), RFC 8414 §3.3 / RFC 7519 §4.1.1 (the issuer in the metadata and
in tokens is compared as a string, exactly: a trailing ``/`` makes another issuer).

One home for these rules: the token verifier's key cache, the exchange client, the agent
card and the conformance command all discover issuers through these functions.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "authorization_server_metadata_url",
    "discovery_urls",
    "identifier_mismatch",
    "names_same_server",
    "openid_configuration_url",
]


def authorization_server_metadata_url(issuer: str) -> str:
    """RFC 8414 §3.1: ``https://host/.well-known/oauth-authorization-server/path``."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit(
        (parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", "")
    )


def openid_configuration_url(issuer: str) -> str:
    """OpenID Connect Discovery 1.0 §4.1: ``https://host/path/.well-known/openid-configuration``."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


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
