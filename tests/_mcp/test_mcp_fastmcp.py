"""An independent verifier accepts our delegated tokens: a FastMCP 4.1.0 server whose
``JWTVerifier`` points at the embedded token service's JWKS, issuer and the server's own
audience is called through an agent's MCP connector (an RFC 8693 exchange per hop)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from mcp_support import AGENT_A, SECRET_A, ServerThread, free_port, make_sts

from keycard_agents import Caller, ClientSecret
from keycard_agents.auth import TokenExchangeClient
from keycard_agents.mcp import McpConnector, McpServer, McpServerError, McpTokenRejectedError
from keycard_agents.sts import TokenService

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # third-party import-time notices
    fastmcp = pytest.importorskip("fastmcp", minversion="4.1.0")
    from fastmcp.server.auth.providers.jwt import JWTVerifier
    from fastmcp.server.dependencies import get_access_token

pytestmark = pytest.mark.anyio


@dataclass
class FastWorld:
    sts: TokenService
    issuer: str
    url: str
    other_url: str


def fast_app(*, issuer: str, audience: str, base_url: str) -> Any:
    verifier = JWTVerifier(
        jwks_uri=f"{issuer}/jwks.json",
        issuer=issuer,
        audience=audience,
        algorithm="ES256",
        base_url=base_url,
    )
    server = fastmcp.FastMCP("independent", auth=verifier)

    @server.tool  # type: ignore[untyped-decorator]  # fastmcp's decorator is untyped
    def token_claims() -> dict[str, Any]:
        """The claims FastMCP verified."""
        access = get_access_token()
        assert access is not None
        claims = dict(access.claims or {})
        return {k: claims.get(k) for k in ("sub", "aud", "act", "scope", "client_id", "iss")}

    return server.http_app(path="/mcp")


@pytest.fixture(scope="module")
def fast_world() -> Iterator[FastWorld]:
    sts_port, fast_port, other_port = free_port(), free_port(), free_port()
    issuer = f"http://127.0.0.1:{sts_port}"
    url = f"http://127.0.0.1:{fast_port}/mcp"
    other = f"http://127.0.0.1:{other_port}/mcp"
    sts = make_sts(issuer, resources=[url, other])
    with ExitStack() as stack:
        stack.enter_context(ServerThread(sts.app, port=sts_port))
        stack.enter_context(
            ServerThread(
                fast_app(issuer=issuer, audience=url, base_url=f"http://127.0.0.1:{fast_port}"),
                port=fast_port,
            )
        )
        # Same server code, but it expects tokens for another audience: ours must fail.
        stack.enter_context(
            ServerThread(
                fast_app(issuer=issuer, audience=url, base_url=f"http://127.0.0.1:{other_port}"),
                port=other_port,
            )
        )
        yield FastWorld(sts, issuer, url, other)


async def test_fastmcp_jwt_verifier_accepts_our_delegated_token(fast_world: FastWorld) -> None:
    user = fast_world.sts.issue_user_token(
        "alice", audience=AGENT_A, scopes=["notes:read", "notes:write", "chat"]
    )
    exchange = TokenExchangeClient(
        issuer=fast_world.issuer, credential=ClientSecret("agent-a", SECRET_A), retries=0
    )
    # FastMCP's JWTVerifier alone publishes no RFC 9728 metadata: name the resource.
    undiscoverable = McpServer("independent", url=fast_world.url)
    server = McpServer(
        "independent", url=fast_world.url, resource=fast_world.url, scopes=["notes:read"]
    )
    async with exchange, McpConnector(exchange=exchange, timeout=10) as connector:
        with pytest.raises(McpServerError, match="publishes no protected resource metadata"):
            await connector.resource(undiscoverable)
        handle = connector.for_caller(server, Caller(None, token=user))
        tools = await handle.list_tools()
        result = await handle.call_tool("token_claims")
    assert [t.name for t in tools] == ["token_claims"]
    assert not result.is_error, result.text
    claims = result.structured
    assert claims["sub"] == "alice"
    assert claims["iss"] == fast_world.issuer
    assert claims["aud"] == fast_world.url
    assert claims["act"] == {"sub": "agent-a", "iss": fast_world.issuer}
    assert claims["scope"] == "notes:read"


async def test_fastmcp_refuses_a_token_for_another_audience(fast_world: FastWorld) -> None:
    user = fast_world.sts.issue_user_token("alice", audience=AGENT_A, scopes=["notes:read"])
    exchange = TokenExchangeClient(
        issuer=fast_world.issuer, credential=ClientSecret("agent-a", SECRET_A), retries=0
    )
    server = McpServer("other", url=fast_world.other_url, resource=fast_world.other_url)
    async with exchange, McpConnector(exchange=exchange, timeout=10) as connector:
        with pytest.raises(McpTokenRejectedError):
            await connector.for_caller(server, Caller(None, token=user)).list_tools()
