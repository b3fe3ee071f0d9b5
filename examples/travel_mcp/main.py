"""A planning chain with an MCP tool server: alice → planner → travel → flights (MCP).

The flights server is a plain ``mcp`` SDK server; our verifier protects it, so a tool
call needs a token issued for the server's own URL. The travel agent never forwards the
token it received: each hop gets its own by RFC 8693 token exchange, with scopes
narrowed on the way (the MCP server only sees ``flights.read``).

    python examples/travel_mcp/main.py      # needs keycard-agents[mcp]
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from typing import Any

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from pydantic import AnyHttpUrl

from keycard_agents import (
    Agent,
    AgentDependency,
    Context,
    McpDependency,
    open_agent_client,
    skill,
)
from keycard_agents.audit import render_text
from keycard_agents.auth import TokenVerifier
from keycard_agents.mcp import McpBearerVerifier
from keycard_agents.testing import LocalTokenService, free_loopback_socket, serve_on_loopback

FLIGHTS = {
    "lisbon": [("TP 571", "08:40", 142), ("LH 1166", "13:10", 189)],
    "oslo": [("SK 1804", "09:55", 171)],
}


def flights_server(*, url: str, issuer: str) -> MCPServer[Any]:
    """An MCP server from the mcp SDK whose bearer tokens our verifier checks."""
    verifier = TokenVerifier(issuers=[issuer])

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:
            await verifier.aclose()

    server: MCPServer[Any] = MCPServer(
        "flights",
        log_level="WARNING",
        lifespan=lifespan,
        token_verifier=McpBearerVerifier(verifier, resource=url),
        auth=AuthSettings(
            issuer_url=AnyHttpUrl(issuer),
            resource_server_url=AnyHttpUrl(url),
            validate_token_resource=True,
        ),
    )

    @server.tool()
    def search_flights(city: str) -> dict[str, Any]:
        """Flights to a city, cheapest first."""
        access = get_access_token()  # the verified token of this call
        found = sorted(FLIGHTS.get(city.lower(), []), key=lambda f: f[2])
        return {
            "flights": [{"flight": f, "departs": d, "eur": p} for f, d, p in found],
            "seen_by_server": {
                "user": access.subject if access else None,
                "scopes": access.scopes if access else [],
            },
        }

    return server


def agent_classes(travel_url: str, flights_url: str) -> tuple[type[Agent], type[Agent]]:
    class Travel(Agent):
        """Finds flights with the flights MCP server."""

        name = "travel"
        dependencies = (McpDependency("flights", url=flights_url, scopes=["flights.read"]),)

        @skill(scopes=["trips.plan"])
        async def find_flights(self, ctx: Context, city: str) -> dict[str, Any]:
            """Flights to a city."""
            result = await ctx.dependency("flights").call_tool("search_flights", {"city": city})
            return dict(result.structured)

    class Planner(Agent):
        """Plans a trip with the travel agent's help."""

        name = "planner"
        dependencies = (
            AgentDependency("travel", url=travel_url, scopes=["trips.plan", "flights.read"]),
        )

        @skill(scopes=["trips.plan"])
        async def plan(self, ctx: Context, request: str) -> dict[str, Any]:
            """Plan a trip from plain words: "a weekend in Lisbon"."""
            city = request.rstrip(".!?").split()[-1]
            found = await ctx.dependency("travel").call("find_flights", city=city)
            best = found["flights"][0] if found["flights"] else None
            return {"city": city, "best": best, "seen_by_server": found["seen_by_server"]}

    return Planner, Travel


async def ask(url: str, token: str, request: str) -> Any:
    async with open_agent_client(url, token=token) as client:
        return await client.call("plan", request=request)


def main() -> None:
    (sts_sock, sts_url), (p_sock, p_url), (t_sock, t_url), (f_sock, f_base) = (
        free_loopback_socket() for _ in range(4)
    )
    flights_url = f"{f_base}/mcp"
    planner_class, travel_class = agent_classes(t_url, flights_url)
    planner, travel = planner_class(url=p_url), travel_class(url=t_url)
    # Registers both agents, and the MCP server as a resource accepting flights.read.
    sts = LocalTokenService(agents=[planner, travel], issuer=sts_url)
    flights = flights_server(url=flights_url, issuer=sts_url)
    with ExitStack() as stack:
        stack.enter_context(serve_on_loopback(sts.app, sts_sock))
        stack.enter_context(serve_on_loopback(flights.streamable_http_app(), f_sock))
        stack.enter_context(serve_on_loopback(travel.asgi_app(), t_sock))
        stack.enter_context(serve_on_loopback(planner.asgi_app(), p_sock))
        token = sts.mint_user_token(
            "alice", audience=planner, scopes=["trips.plan", "flights.read", "hotels.book"]
        )
        plan = anyio.run(ask, p_url, token, "a weekend in Lisbon")
    # The token service's audit trail: one txn for the whole chain, drawn as a tree.
    trail = sts.service.trail
    trail.names[flights_url] = "flights"  # name the MCP server (agents are named already)
    verifier = sts.verifier()  # reads the keys directly: no server needed any more
    principal = anyio.run(lambda: verifier.verify(token, audience=p_url))
    tree = anyio.run(trail.tree, str(principal.txn))
    best = plan["best"]
    print(f"best flight to {plan['city']}: {best['flight']} at {best['departs']}, €{best['eur']}")
    seen = plan["seen_by_server"]
    print(f"the MCP server saw user {seen['user']} with scopes {seen['scopes']}")
    print()
    print(render_text(tree), end="")


if __name__ == "__main__":
    main()
