"""Rules of the A2A 1.0 specification, each checked over both bindings (JSON-RPC, HTTP+JSON).

§3.1.6 streams through interruptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from server_support import AGENT_URL, ISSUER, TokenMinter, bearer, call_message, text_message
from wire_support import BINDINGS, Refusal, Wire

from keycard_agents import Agent, Context, create_app, skill

pytestmark = pytest.mark.anyio

MINTER = TokenMinter()


class Planner(Agent):
    name = "Planner"
    description = "Plans trips, asking what it needs."
    version = "1.0.0"

    @skill(id="plan")
    async def plan(self, ctx: Context, city: str) -> str:
        """Ask who travels, then for consent, then book."""
        who = await ctx.ask_input("Who travels?")
        await ctx.require_auth("Consent to book is needed")
        return f"{city} for {who}"


def state_of(event: dict[str, Any]) -> str:
    if "task" in event:
        return "task:" + str(event["task"]["status"]["state"]).removeprefix("TASK_STATE_")
    if "statusUpdate" in event:
        state = str(event["statusUpdate"]["status"]["state"])
        return "status:" + state.removeprefix("TASK_STATE_")
    if "artifactUpdate" in event:
        return "artifact"
    return "message" if "message" in event else "?"


@pytest.fixture(params=BINDINGS)
async def wire(request: pytest.FixtureRequest) -> AsyncIterator[Wire]:
    agent = Planner(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    app = create_app(agent, verifier=MINTER.verifier())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            yield Wire(request.param, app, client, bearer(MINTER.token(sub="alice")))


async def next_state(events: AsyncIterator[dict[str, Any]]) -> str:
    with anyio.fail_after(10):
        return state_of(await anext(events))


async def rest_of(events: AsyncIterator[dict[str, Any]]) -> list[str]:
    with anyio.fail_after(10):
        return [state_of(e) async for e in events]


# --------------------------------------------------- §3.1.6 streams through interruptions

AFTER_FIRST_REPLY = [
    "status:WORKING",
    "status:AUTH_REQUIRED",
    "status:WORKING",
    "artifact",
    "status:COMPLETED",
]


async def test_subscription_to_an_interrupted_task_lasts_until_it_ends(wire: Wire) -> None:
    result = await wire.send(call_message("plan", {"city": "Oslo"}))
    assert not isinstance(result, Refusal), result
    task = result["task"]
    assert task["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    async with wire.subscribe(task["id"]) as events:
        assert await next_state(events) == "task:INPUT_REQUIRED"
        answered = await wire.send(text_message("alice", taskId=task["id"]))
        assert answered["task"]["status"]["state"] == "TASK_STATE_AUTH_REQUIRED"
        done = await wire.send(text_message("granted", taskId=task["id"]))
        assert done["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        assert await rest_of(events) == AFTER_FIRST_REPLY


async def test_a_streamed_message_stays_open_through_input_required(wire: Wire) -> None:
    async with wire.stream(call_message("plan", {"city": "Rome"})) as events:
        assert await next_state(events) == "task:SUBMITTED"
        assert await next_state(events) == "status:WORKING"
        with anyio.fail_after(10):
            interrupted = await anext(events)
        assert state_of(interrupted) == "status:INPUT_REQUIRED"
        task_id = interrupted["statusUpdate"]["taskId"]
        # Replying as soon as the stream shows INPUT_REQUIRED is accepted.
        answered = await wire.send(text_message("bob", taskId=task_id))
        assert answered["task"]["status"]["state"] == "TASK_STATE_AUTH_REQUIRED"
        await wire.send(text_message("granted", taskId=task_id))
        assert await rest_of(events) == AFTER_FIRST_REPLY
