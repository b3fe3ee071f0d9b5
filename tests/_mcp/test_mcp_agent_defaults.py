"""An agent served over MCP as a new user would serve it: ``create_mcp_server(agent)`` with
no delegation argument reaches its dependencies, the MCP endpoint's RFC 9728 metadata lists
the scopes the whole chain needs, one registered agent exchanges tokens sent to either of
its endpoints (A2A and MCP), and a scope missing from the user's token gets a remedy that
points at sign-in. Also ``McpDependency(resource=...)``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_support import ServerThread, claims_of, free_port

from keycard_agents import (
    AccessContext,
    Agent,
    Caller,
    ClientSecret,
    ConfigurationError,
    Context,
    HttpDependency,
    KeycardError,
    McpDependency,
    grant,
    skill,
)
from keycard_agents.auth import TokenExchangeClient
from keycard_agents.mcp import McpConnector, create_mcp_server, mcp_app
from keycard_agents.sts import TokenService, hash_secret, parse_config

pytestmark = pytest.mark.anyio

SECRET = "notes-agent-secret"
API = "https://notes-api.test"


class NotesAgent(Agent):
    """Reads notes for its user."""

    name = "notes-agent"
    dependencies = (HttpDependency("notes", resource=API, scopes=["notes:read"]),)

    @skill(scopes=["chat"])
    @grant("notes")
    async def read_notes(self, ctx: Context, access: AccessContext) -> dict[str, Any]:
        """What the notes API would be sent."""
        if access.has_errors():
            return {"errors": access.get_errors()}
        return {"claims": claims_of(access.access("notes").access_token)}


@dataclass
class World:
    sts: TokenService
    issuer: str
    a2a_url: str
    mcp_url: str


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    sts_port, agent_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{sts_port}"
    a2a_url = f"http://127.0.0.1:{agent_port}"
    mcp_url = f"{a2a_url}/mcp"
    config = parse_config(
        {
            "issuer": issuer,
            "agents": [
                {
                    "client_id": "notes-agent",
                    "resource": a2a_url,
                    "resources": [mcp_url],  # the same agent, also served over MCP
                    "auth": "client_secret",
                    "secret_hash": hash_secret(SECRET, cost=2**4),
                    "scopes": ["chat", "notes:read"],
                    "dependencies": [API],
                }
            ],
            "resources": [{"resource": API, "scopes": ["notes:read"]}],
        }
    )
    sts = TokenService(config)
    agent = NotesAgent(
        url=mcp_url,
        issuer=issuer,
        token_endpoint=f"{issuer}/token",
        credential=ClientSecret("notes-agent", SECRET),
    )
    # No delegation= and no runtime=: the defaults must reach the dependencies.
    app = mcp_app(create_mcp_server(agent))
    with ExitStack() as stack:
        stack.enter_context(ServerThread(sts.app, port=sts_port))
        stack.enter_context(ServerThread(app, port=agent_port))
        yield World(sts=sts, issuer=issuer, a2a_url=a2a_url, mcp_url=mcp_url)


async def _call(world: World, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(world.mcp_url, http_client=http)) as client,
    ):
        result = await client.call_tool("read_notes", {})
    assert not result.is_error, result
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def test_agent_over_mcp_delegates_without_extra_arguments(world: World) -> None:
    token = world.sts.issue_user_token(
        "alice", audience=world.mcp_url, scopes=["chat", "notes:read"], may_act="notes-agent"
    )
    out = await _call(world, token)
    claims = out["claims"]
    assert claims["sub"] == "alice"
    assert claims["aud"] == API
    assert claims["act"]["sub"] == "notes-agent"
    assert claims["scope"] == "notes:read"


async def test_missing_chain_scope_has_a_remedy_pointing_at_sign_in(world: World) -> None:
    # The client asked only for the skill's scope: the exchange for the API fails, and the
    # error tells what to do (request the scope at sign-in), not "request only those".
    token = world.sts.issue_user_token("alice", audience=world.mcp_url, scopes=["chat"])
    out = await _call(world, token)
    error = out["errors"]["resources"]["notes"]
    assert error["error"] == "invalid_scope"
    assert "request it when the user signs in" in error["message"]
    assert "request only those" not in error["message"]


async def test_mcp_endpoint_metadata_lists_the_whole_chain_scopes(world: World) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{world.a2a_url}/.well-known/oauth-protected-resource/mcp")
        assert r.status_code == 200, r.text
        metadata = r.json()
        assert metadata["resource"] == world.mcp_url
        assert metadata["authorization_servers"] == [world.issuer]  # exactly as configured
        assert metadata["scopes_supported"] == ["chat", "notes:read"]
        preflight = await http.options(
            f"{world.a2a_url}/.well-known/oauth-protected-resource/mcp",
            headers={"Origin": "https://app.test", "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        # RFC 6750 §3.1: a request without a token gets a challenge without an error.
        bare = await http.post(world.mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert bare.status_code == 401
        metadata_url = f"{world.a2a_url}/.well-known/oauth-protected-resource/mcp"
        assert bare.headers["www-authenticate"] == f'Bearer resource_metadata="{metadata_url}"'


async def test_one_agent_exchanges_tokens_sent_to_either_of_its_resources(world: World) -> None:
    exchange = TokenExchangeClient(
        issuer=world.issuer, credential=ClientSecret("notes-agent", SECRET)
    )
    try:
        for audience in (world.a2a_url, world.mcp_url):
            user = world.sts.issue_user_token("bob", audience=audience, scopes=["notes:read"])
            token = await exchange.exchange(user, resource=API)
            assert claims_of(token.access_token)["act"]["sub"] == "notes-agent"
        stranger = world.sts.issue_user_token(
            "bob", audience=f"{world.a2a_url}/other", scopes=["notes:read"]
        )
        with pytest.raises(KeycardError, match="sent to it") as refused:
            await exchange.exchange(stranger, resource=API)
        assert getattr(refused.value, "error", None) == "invalid_request"
    finally:
        await exchange.aclose()


def test_config_refuses_a_resource_registered_twice() -> None:
    base = {
        "client_id": "a",
        "resource": "https://a.test",
        "auth": "client_secret",
        "secret_hash": hash_secret("s", cost=2**4),
    }
    with pytest.raises(ConfigurationError, match="appears twice"):
        parse_config(
            {
                "issuer": "https://sts.test",
                "agents": [
                    {**base, "resources": ["https://a.test/mcp"]},
                    {**base, "client_id": "b", "resource": "https://a.test/mcp"},
                ],
            }
        )
    with pytest.raises(ConfigurationError, match="resources"):
        parse_config({"issuer": "https://sts.test", "agents": [{**base, "resources": ["ftp://x"]}]})


async def test_declared_mcp_resource_skips_discovery() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no request expected, got {request.url}")

    dependency = McpDependency(
        "tools", url="https://tools.test/mcp", resource="https://tools.test/mcp"
    )
    assert dependency.to_params()["resource"] == "https://tools.test/mcp"
    exchange = TokenExchangeClient(issuer="https://sts.test", credential=ClientSecret("a", "s"))
    http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    connector = McpConnector(exchange=exchange, http_client=http)
    try:
        assert await connector.resource(dependency) == "https://tools.test/mcp"
        assert connector.for_caller(dependency, Caller(None)) is not None
    finally:
        await connector.aclose()
        await http.aclose()
        await exchange.aclose()
    with pytest.raises(ConfigurationError, match="resource"):
        McpDependency("tools", url="https://tools.test/mcp", resource="")
    assert json.dumps(McpDependency("t", url="https://t.test").to_params())
