"""An :class:`~keycard_agents.mcp.AuthProvider` as a FastMCP auth provider.

FastMCP's seams: a ``TokenVerifier`` whose ``verify_token`` returns an ``AccessToken`` or
``None`` (then FastMCP answers 401 with an RFC 6750 §3.1 challenge), inside a
``RemoteAuthProvider`` that publishes RFC 9728 metadata naming the authorization server.
Imported only when ``AuthProvider.fastmcp()`` is called (FastMCP is optional).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from pydantic import AnyHttpUrl
from starlette.routing import Route

from keycard_agents._errors import ConfigurationError, InvalidTokenError, KeycardError
from keycard_agents._logs import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from starlette.requests import Request
    from starlette.responses import Response

    from keycard_agents._jose._principal import Principal


class AuthProvider(Protocol):
    """What this adapter uses of :class:`keycard_agents._mcp._protect.AuthProvider`."""

    resource: str
    issuer: str
    metadata_url: str
    required_scopes: tuple[str, ...]
    resource_name: str | None

    @property
    def scopes_supported(self) -> list[str]: ...

    async def verify(self, token: str, *, required_scopes: Sequence[str] = ()) -> Principal: ...

    async def metadata_endpoint(self, request: Request) -> Response: ...


__all__ = ["fastmcp_provider"]

logger = get_logger("keycard_agents.mcp")


def fastmcp_provider(provider: AuthProvider) -> Any:
    """A FastMCP ``RemoteAuthProvider`` verifying tokens with ``provider``."""
    try:  # FastMCP is an optional extra: imported only when asked for
        from fastmcp.server.auth.auth import AccessToken, RemoteAuthProvider, TokenVerifier
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ConfigurationError(
            "AuthProvider.fastmcp() needs FastMCP: install keycard-agents[fastmcp]",
            setting="fastmcp",
        ) from exc

    class KeycardTokenVerifier(TokenVerifier):
        """Verifies bearer tokens with the keycard verifier, audience = the endpoint."""

        async def verify_token(self, token: str) -> Any:
            try:
                principal = await provider.verify(token)
            except KeycardError as exc:
                check = exc.check if isinstance(exc, InvalidTokenError) else type(exc).__name__
                logger.info("MCP bearer token rejected for %s (%s)", provider.resource, check)
                return None
            current = principal.actors.current
            return AccessToken(
                token=token,
                client_id=principal.client_id or (current.sub if current else principal.user),
                scopes=sorted(principal.scopes),
                expires_at=principal.expires_at,
                resource=provider.resource,
                subject=principal.user,
                claims=dict(principal.claims),
            )

    parts = urlsplit(provider.resource)
    base_url = f"{parts.scheme}://{parts.netloc}"
    verifier = KeycardTokenVerifier(required_scopes=list(provider.required_scopes))

    class KeycardAuthProvider(RemoteAuthProvider):
        """RFC 9728 metadata naming the issuer exactly as configured (RFC 8414 §3.3: a
        URL model would add a ``/`` to a root issuer, which clients then refuse)."""

        def _get_resource_url(self, path: str | None = None) -> Any:
            return AnyHttpUrl(provider.resource)

        def get_routes(self, mcp_path: str | None = None) -> list[Route]:
            self.set_mcp_path(mcp_path)
            return [
                Route(
                    urlsplit(provider.metadata_url).path,
                    provider.metadata_endpoint,
                    methods=["GET", "OPTIONS"],
                )
            ]

    return KeycardAuthProvider(
        token_verifier=verifier,
        authorization_servers=[AnyHttpUrl(provider.issuer)],
        base_url=base_url,
        scopes_supported=provider.scopes_supported,
        resource_name=provider.resource_name,
    )
