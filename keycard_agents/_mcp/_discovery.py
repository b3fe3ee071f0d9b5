"""Which resource an MCP server is, from its OAuth 2.0 Protected Resource Metadata.

Implements RFC 9728 §3.1 (the metadata URL: ``/.well-known/oauth-protected-resource``
inserted between the host and the path of the resource URL), §3.2 (the response), §3.3
(the ``resource`` in the metadata must be the URL the metadata was derived from) and §5.1
(the ``resource_metadata`` parameter of a ``WWW-Authenticate`` challenge, used when the
well-known document is absent). The MCP authorization spec requires servers to publish it;
the ``resource`` found is what the agent asks the token service for (RFC 8707).

A challenge's ``resource_metadata`` is only followed on the server's own origin (the
rule agent dependencies apply to their card's interfaces): a server, or whoever answers
in its place, cannot make the agent send requests to any other host (blind SSRF).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from keycard_agents._mcp._errors import McpServerError
from keycard_agents._oauth._challenge import bearer_challenge
from keycard_agents._oauth._http import DocumentTooLargeError, read_document
from keycard_agents._oauth._urls import protected_resource_metadata_url, same_origin, same_resource

__all__ = ["ProtectedResource", "discover_resource"]


@dataclass(frozen=True)
class ProtectedResource:
    """The parts of RFC 9728 metadata the agent uses."""

    resource: str
    authorization_servers: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()


def _parse(body: Any, *, url: str, server: str) -> ProtectedResource:
    if not isinstance(body, Mapping) or not isinstance(body.get("resource"), str):
        raise McpServerError(
            f"MCP server {server!r}: its protected resource metadata is not a JSON object "
            "with a 'resource' string (RFC 9728 §2)",
            server=server,
        )
    resource = str(body["resource"])
    if not same_resource(resource, url):
        raise McpServerError(
            f"MCP server {server!r}: its metadata names resource {resource!r}, not the "
            f"declared URL {url!r} (RFC 9728 §3.3); fix the dependency's url",
            server=server,
        )

    def strings(name: str) -> tuple[str, ...]:
        value = body.get(name)
        if isinstance(value, list):
            return tuple(v for v in value if isinstance(v, str))
        return ()

    return ProtectedResource(
        resource=resource,
        authorization_servers=strings("authorization_servers"),
        scopes_supported=strings("scopes_supported"),
    )


async def _get_json(http: httpx.AsyncClient, url: str, server: str) -> tuple[int, Any]:
    async with http.stream("GET", url, headers={"Accept": "application/json"}) as response:
        if response.status_code != 200:
            return response.status_code, None
        try:
            body = await read_document(response)
        except DocumentTooLargeError as exc:
            raise McpServerError(
                f"MCP server {server!r}: its protected resource metadata at {url}: {exc}",
                server=server,
            ) from exc
    try:
        return 200, json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise McpServerError(
            f"MCP server {server!r}: its protected resource metadata is not JSON", server=server
        ) from exc


async def discover_resource(
    http: httpx.AsyncClient, url: str, *, server: str, time_limit: float = 10.0
) -> ProtectedResource:
    """Fetch and check the RFC 9728 metadata of the MCP server at ``url``.

    Tries the well-known URL first, then the ``resource_metadata`` of the challenge an
    unauthenticated request gets. Raises :class:`McpServerError` with what to fix.
    """
    try:
        with anyio.fail_after(time_limit):
            status, body = await _get_json(http, protected_resource_metadata_url(url), server)
            if status == 200:
                return _parse(body, url=url, server=server)
            probe = await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 0, "method": "ping"},
                headers={"Accept": "application/json, text/event-stream"},
            )
            challenge = bearer_challenge(probe.headers.get("www-authenticate"))
            pointed = challenge.get("resource_metadata")
            if probe.status_code == 401 and pointed:
                if not same_origin(pointed, url):
                    raise McpServerError(
                        f"MCP server {server!r} points its resource_metadata at another "
                        f"origin ({pointed[:100]!r}); refusing to fetch it: publish the "
                        f"metadata at {protected_resource_metadata_url(url)} or on the "
                        "server's own origin",
                        server=server,
                    )
                status, body = await _get_json(http, pointed, server)
                if status == 200:
                    return _parse(body, url=url, server=server)
    except TimeoutError as exc:
        raise McpServerError(
            f"MCP server {server!r} did not serve its protected resource metadata within "
            f"{time_limit:g} s",
            server=server,
        ) from exc
    except httpx.HTTPError as exc:
        raise McpServerError(
            f"MCP server {server!r} is unreachable while fetching its protected resource "
            f"metadata ({type(exc).__name__}); is it running at the declared url?",
            server=server,
        ) from exc
    raise McpServerError(
        f"MCP server {server!r} publishes no protected resource metadata (RFC 9728) at "
        f"{protected_resource_metadata_url(url)} nor in a 401 challenge (last status "
        f"{status}); set the dependency's resource= explicitly if the server cannot publish it",
        server=server,
    )
