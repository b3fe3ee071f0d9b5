"""The demo's cast: three A2A 1.0 agents and an MCP tool server built with the ``mcp`` SDK.

planner (``plan``) calls travel (``plan_trip``) and weather (``forecast``); travel calls
the ``search_flights`` and ``find_hotels`` tools of the travel-tools MCP server. Every
call carries a token from an RFC 8693 exchange (``act`` names each agent on the way);
the MCP server verifies it with our verifier (RFC 9068 access token, audience = its
RFC 8707 resource, per the MCP authorization spec). Data comes from small tables.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import AnyHttpUrl

from keycard_agents._agent._agent import Agent, skill
from keycard_agents._agent._context import Context
from keycard_agents._agent._dependencies import AgentDependency, HttpDependency, McpDependency
from keycard_agents._oauth._verifier import TokenVerifier

__all__ = [
    "USER_SCOPES",
    "DemoAgents",
    "build_agents",
    "city_of",
    "travel_tools_server",
]

#: What alice may grant to the planner when she signs in.
USER_SCOPES = ("trips.plan", "flights.read", "hotels.read", "weather.read")
TRAVEL_SCOPES = ("trips.plan", "flights.read", "hotels.read")
TOOL_SCOPES = ("flights.read", "hotels.read")
WEATHER_SCOPES = ("weather.read",)

_FLIGHTS: dict[str, dict[str, Any]] = {
    "lisbon": {"flight": "TP 571", "from": "Berlin", "departs": "08:40", "price_eur": 142},
    "paris": {"flight": "AF 1535", "from": "Berlin", "departs": "07:15", "price_eur": 118},
    "tokyo": {"flight": "NH 224", "from": "Frankfurt", "departs": "20:55", "price_eur": 912},
    "rome": {"flight": "AZ 431", "from": "Berlin", "departs": "11:05", "price_eur": 131},
}
_HOTELS: dict[str, dict[str, Any]] = {
    "lisbon": {"hotel": "Casa do Rio", "area": "Alfama", "per_night_eur": 98},
    "paris": {"hotel": "Hôtel des Arts", "area": "Montmartre", "per_night_eur": 164},
    "tokyo": {"hotel": "Kyobashi Inn", "area": "Chuo", "per_night_eur": 121},
    "rome": {"hotel": "Albergo Trevi", "area": "Centro", "per_night_eur": 139},
}
_WEATHER: dict[str, dict[str, Any]] = {
    "lisbon": {"sky": "sunny", "high_c": 24, "low_c": 16},
    "paris": {"sky": "light rain", "high_c": 17, "low_c": 11},
    "tokyo": {"sky": "cloudy", "high_c": 21, "low_c": 15},
    "rome": {"sky": "sunny", "high_c": 27, "low_c": 18},
}


def city_of(request: str) -> str:
    """The destination named in a request such as "plan a trip to Lisbon"."""
    match = re.search(r"\bto\s+([A-Za-z][A-Za-z -]*)", request)
    words = (match.group(1) if match else request).strip().split()
    return words[0].capitalize() if words else "Lisbon"


@dataclass
class DemoAgents:
    planner: Agent
    travel: Agent
    weather: Agent

    @property
    def all(self) -> list[Agent]:
        return [self.planner, self.travel, self.weather]


def build_agents(
    *, planner: str, travel: str, weather: str, tools: str, calendar: str
) -> DemoAgents:
    """The three agents, their dependencies pointing at the given URLs."""

    class Weather(Agent):
        """Forecasts for a city, next to the user's busy slots (their own calendar)."""

        name = "weather"
        dependencies = (HttpDependency("calendar", resource=calendar, scopes=["calendar.read"]),)

        @skill(scopes=WEATHER_SCOPES, examples=["Lisbon"])
        async def forecast(self, ctx: Context, city: str) -> dict[str, Any]:
            """Tomorrow's weather in a city, and when the user is busy."""
            found = _WEATHER.get(city.lower(), {"sky": "unknown", "high_c": None, "low_c": None})
            # A third-party API, called with the user's own calendar token (a connection).
            busy = await ctx.dependency("calendar").get("busy")
            busy.raise_for_status()
            return {"city": city, **found, "busy": busy.json().get("busy", [])}

    class Travel(Agent):
        """Finds flights and hotels with the travel-tools MCP server."""

        name = "travel"
        dependencies = (McpDependency("travel-tools", url=tools, scopes=TOOL_SCOPES),)

        @skill(scopes=["trips.plan"], examples=["Lisbon"])
        async def plan_trip(self, ctx: Context, city: str) -> dict[str, Any]:
            """A flight and a hotel for a city."""
            async with ctx.dependency("travel-tools").session() as tools_session:
                flight = await tools_session.call_tool("search_flights", {"destination": city})
                hotel = await tools_session.call_tool("find_hotels", {"city": city})
            return {"city": city, "flight": flight.structured, "hotel": hotel.structured}

    class Planner(Agent):
        """Plans trips: asks the travel and weather agents, then sums it up."""

        name = "planner"
        dependencies = (
            AgentDependency("travel", url=travel, scopes=TRAVEL_SCOPES),
            AgentDependency("weather", url=weather, scopes=WEATHER_SCOPES),
        )

        @skill(scopes=["trips.plan"], examples=["plan a trip to Lisbon"])
        async def plan(self, ctx: Context, request: str) -> str:
            """Plan a trip from a request in plain words ("plan a trip to Lisbon")."""
            city = city_of(request)
            await ctx.update(f"asking the travel and weather agents about {city}")
            trip = await ctx.dependency("travel").call("plan_trip", city=city)
            sky = await ctx.dependency("weather").call("forecast", city=city)
            return _summary(city, trip, sky)

    return DemoAgents(
        planner=Planner(url=planner), travel=Travel(url=travel), weather=Weather(url=weather)
    )


def _summary(city: str, trip: dict[str, Any], sky: dict[str, Any]) -> str:
    flight = trip.get("flight") or {}
    hotel = trip.get("hotel") or {}
    lines = [f"Trip to {city}"]
    if flight.get("flight"):
        lines.append(
            f"  flight   {flight['flight']} from {flight['from']}, departs "
            f"{flight['departs']}, €{flight['price_eur']}"
        )
    else:
        lines.append("  flight   none found")
    if hotel.get("hotel"):
        lines.append(
            f"  hotel    {hotel['hotel']} ({hotel['area']}), €{hotel['per_night_eur']} a night"
        )
    else:
        lines.append("  hotel    none found")
    if sky.get("high_c") is not None:
        lines.append(f"  weather  {sky['sky']}, {sky['low_c']}–{sky['high_c']} °C")
    else:
        lines.append("  weather  no forecast")
    if sky.get("busy"):
        lines.append(f"  calendar busy {', '.join(sky['busy'])}")
    return "\n".join(lines)


def travel_tools_server(*, resource: str, issuer: str) -> Any:
    """The travel-tools MCP server (``mcp`` SDK), protected by our token verifier.

    ``resource`` is its streamable HTTP endpoint URL (the audience tokens must carry).
    Returns the ``MCPServer``; serve ``server.streamable_http_app()``.
    """
    # The optional ``mcp`` extra: imported only when the demo runs its MCP server.
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.mcpserver import MCPServer
    from mcp_types import ToolAnnotations

    from keycard_agents._mcp._server import McpBearerVerifier

    verifier = TokenVerifier(issuers=[issuer])

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:
            await verifier.aclose()  # its HTTP client lives on this server's event loop

    server: Any = MCPServer(
        "travel-tools",
        instructions="Flights and hotels for the keycard-agents demo (in-memory tables).",
        log_level="WARNING",
        lifespan=lifespan,
        token_verifier=McpBearerVerifier(verifier, resource=resource),
        auth=AuthSettings(
            issuer_url=AnyHttpUrl(issuer),
            resource_server_url=AnyHttpUrl(resource),
            required_scopes=[],
            validate_token_resource=True,
        ),
    )
    read_only = ToolAnnotations(read_only_hint=True)

    @server.tool(annotations=read_only)  # type: ignore[untyped-decorator]
    def search_flights(destination: str) -> dict[str, Any]:
        """The cheapest flight to a city."""
        return {"destination": destination, **_FLIGHTS.get(destination.lower(), {})}

    @server.tool(annotations=read_only)  # type: ignore[untyped-decorator]
    def find_hotels(city: str) -> dict[str, Any]:
        """A well-rated hotel in a city."""
        return {"city": city, **_HOTELS.get(city.lower(), {})}

    return server
