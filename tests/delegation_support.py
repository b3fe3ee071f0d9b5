"""Agents shared by the delegation and end-to-end tests: a chain Front → Middle → Collector,
and a Planner calling two HTTP APIs.

The classes are built per test by :func:`chain_agents` because the dependencies (with the
agents' URLs) are class attributes and real servers get their ports at run time.
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from keycard_agents import (
    AccessContext,
    Agent,
    AgentDependency,
    Context,
    HttpDependency,
    grant,
    skill,
)

A_URL = "http://127.0.0.1:9101"
B_URL = "http://127.0.0.1:9102"
C_URL = "http://127.0.0.1:9103"
USER_SCOPES = ("a.use", "b.call", "c.read", "unrelated")


def view(ctx: Context, name: str) -> dict[str, Any]:
    """What an agent saw of its caller."""
    principal = ctx.principal
    assert principal is not None
    return {
        "agent": name,
        "sub": principal.user,
        "actors": list(principal.actors.subjects()),
        "aud": list(principal.audience),
        "scopes": sorted(principal.scopes),
        "txn": principal.txn,
        "client_id": principal.client_id,
    }


@dataclass
class Chain:
    front: Agent
    middle: Agent
    collector: Agent

    @property
    def all(self) -> list[Agent]:
        return [self.front, self.middle, self.collector]


def chain_agents(
    a_url: str = A_URL,
    b_url: str = B_URL,
    c_url: str = C_URL,
    *,
    c_scopes: tuple[str, ...] = ("c.read",),
    middle_calls_front: bool = False,
) -> Chain:
    """Front (``start``) calls Middle (``relay``), which calls Collector (``seen``).

    ``c_scopes`` are the scopes Middle asks for at Collector; ``middle_calls_front``
    makes Middle call Front's ``start`` instead (a cycle).
    """

    class Collector(Agent):
        name = "collector"

        @skill(scopes=["c.read"])
        async def seen(self, ctx: Context) -> dict[str, Any]:
            """Report what the caller's token says."""
            return view(ctx, "collector")

    middle_deps = [AgentDependency("collector", url=c_url, scopes=c_scopes)]
    middle_scopes = ["b.call", "c.read"]
    if middle_calls_front:
        middle_deps.append(AgentDependency("front", url=a_url, scopes=["a.use"]))
        middle_scopes.append("a.use")

    class Middle(Agent):
        name = "middle"
        dependencies = tuple(middle_deps)

        @skill(scopes=["b.call"])
        async def relay(self, ctx: Context) -> dict[str, Any]:
            """Call the collector (or the front, in a cycle) and pass on what it saw."""
            if middle_calls_front:
                below = await ctx.dependency("front").call("start")
            else:
                below = await ctx.dependency("collector").call("seen")
            return {"here": view(ctx, "middle"), "below": below}

    class Front(Agent):
        name = "front"
        dependencies = (
            AgentDependency("middle", url=b_url, scopes=middle_scopes),
            AgentDependency("collector", url=c_url, scopes=["c.read"]),
        )

        @skill(scopes=["a.use"])
        async def start(self, ctx: Context) -> dict[str, Any]:
            """Call the middle agent."""
            below = await ctx.dependency("middle").call("relay")
            return {"here": view(ctx, "front"), "below": below}

        @skill(scopes=["a.use"])
        async def peek(self, ctx: Context) -> dict[str, Any]:
            """Stream the collector's task and report its states and result."""
            states: list[str] = []
            data = None
            async with aclosing(ctx.dependency("collector").stream_call("seen")) as events:
                async for event in events:
                    if event.status_update is not None:
                        states.append(event.status_update.status.state.value)
                    if event.artifact_update is not None:
                        data = event.artifact_update.artifact.parts[0].data
            return {"states": states, "data": data}

        @skill(scopes=["a.use"])
        async def undeclared(self, ctx: Context) -> str:
            """Call a dependency this agent never declared."""
            await ctx.dependency("billing").call("charge")
            return "unreachable"

        @skill(scopes=["a.use"])
        async def replay(self, ctx: Context) -> str:
            """Send the token obtained for Middle to Collector."""
            from keycard_agents import AgentClient

            token = await ctx.dependency("middle").token()
            handle = ctx.dependency("collector")
            async with AgentClient(
                handle.url, token=token.access_token, http_client=handle.client.http_client
            ) as client:
                await client.call("seen")
            return "unreachable"

    return Chain(
        front=Front(url=a_url),
        middle=Middle(url=b_url),
        collector=Collector(url=c_url),
    )


WEATHER = "http://127.0.0.1:9301/api"
MAIL = "http://127.0.0.1:9302"
PLANNER = "http://127.0.0.1:9300"


class Planner(Agent):
    name = "planner"
    dependencies = (
        HttpDependency("weather", resource=WEATHER, scopes=["weather.read"]),
        HttpDependency("mail", resource=MAIL, scopes=["mail.send"]),
    )

    @skill(scopes=["plan"])
    async def forecast(self, ctx: Context, city: str) -> Any:
        """Ask the weather API."""
        response = await ctx.dependency("weather").get("forecast", params={"city": city})
        return {"status": response.status_code, "body": response.json()}

    @skill(scopes=["plan"])
    async def leak(self, ctx: Context) -> str:
        """Try to send the weather token elsewhere."""
        await ctx.dependency("weather").get("http://127.0.0.1:9999/collect")
        return "sent"

    @skill(scopes=["plan"])
    @grant("weather", MAIL)
    async def both(self, ctx: Context, access: AccessContext, day: str) -> dict[str, Any]:
        """Use the grant pattern for both APIs."""
        token = access.access(WEATHER).access_token if not access.has_errors() else None
        return {
            "day": day,
            "status": access.get_status(),
            "ok": access.get_successful_resources(),
            "failed": access.get_failed_resources(),
            "errors": access.get_errors(),
            "weather_token": access.access("weather").access_token,
            "same": token is None or token == access.access("weather").access_token,
        }
