"""Agents that the replica tests (and the replica benchmark) run as separate processes.

``keycard-agents serve replica_agents:Front`` with ``tests/`` on ``PYTHONPATH``. Front's
dependency URL comes from ``REPLICA_ECHO_URL`` (its port is picked at run time).
"""

from __future__ import annotations

import os
from typing import Any

import anyio

from keycard_agents import Agent, AgentDependency, Context, skill


def _view(ctx: Context) -> dict[str, Any]:
    principal = ctx.principal
    assert principal is not None
    return {
        "sub": principal.user,
        "actors": list(principal.actors.subjects()),
        "txn": principal.txn,
    }


class Echo(Agent):
    name = "echo"

    @skill(scopes=["echo.read"])
    async def whoami(self, ctx: Context) -> dict[str, Any]:
        """Say who called, and through whom."""
        return _view(ctx)


class Front(Agent):
    name = "front"
    dependencies = (
        AgentDependency(
            "echo",
            url=os.environ.get("REPLICA_ECHO_URL", "http://127.0.0.1:1"),
            scopes=["echo.read"],
        ),
    )

    @skill(scopes=["front.use"])
    async def relay(self, ctx: Context) -> dict[str, Any]:
        """Call Echo on the user's behalf and pass on what it saw."""
        below = await ctx.dependency("echo").call("whoami")
        return {"here": _view(ctx), "below": below}

    @skill(scopes=["front.use"])
    async def slow(self, ctx: Context, steps: int) -> str:
        """One artifact every half second, ``steps`` times."""
        for i in range(steps):
            await ctx.artifact({"i": i}, name=f"step {i}")
            await anyio.sleep(0.5)
        return "done"

    @skill(scopes=["front.use"])
    async def ask(self, ctx: Context, topic: str) -> str:
        """Ask the user who the thing is for."""
        who = await ctx.ask_input(f"Who is the {topic} for?")
        return f"{topic} for {who}"
