"""Rules of the A2A 1.0 specification, each checked over both bindings (JSON-RPC, HTTP+JSON).

§3.1.6 streams through interruptions; §3.3.2 media types (ContentTypeNotSupported);
§7.3/§7.4 the authentication of every method follows the card; §3.3.4 extensions.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from server_support import AGENT_URL, ISSUER, TokenMinter, bearer, call_message, text_message
from wire_support import BINDINGS, Refusal, Wire

from keycard_agents import Agent, Context, create_app, skill
from keycard_agents.a2a import DELEGATION_EXTENSION_URI, AgentExtension

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
def binding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def serving(agent: Agent, binding: str, *, user: str | None = "alice") -> AsyncIterator[Wire]:
    """``agent`` served in process; a Wire calling it as ``user`` (``None``: anonymous)."""
    app = create_app(agent, verifier=MINTER.verifier())
    headers = bearer(MINTER.token(sub=user)) if user else {"A2A-Version": "1.0"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            yield Wire(binding, app, client, headers)


@pytest.fixture
async def wire(binding: str) -> AsyncIterator[Wire]:
    agent = Planner(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    async with serving(agent, binding) as w:
        yield w


def refused(result: Any, *, code: int, status: int, reason: str) -> Refusal:
    """Check a refusal: the JSON-RPC code over JSON-RPC, the HTTP status over HTTP+JSON."""
    assert isinstance(result, Refusal), result
    if result.binding == "JSONRPC":
        assert result.code == code, result
    else:
        assert result.status == status, result
    assert result.reason == reason, result
    return result


def artifact_data(result: Any) -> Any:
    assert not isinstance(result, Refusal), result
    task = result["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED", task
    return task["artifacts"][-1]["parts"][0].get("data", task["artifacts"][-1]["parts"][0])


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


# ------------------------------------------------------------- §3.3.2 media types

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image").decode()


class Viewer(Agent):
    name = "Viewer"
    description = "Describes images and echoes text."

    @skill(id="describe", input_modes=["image/png", "image/jpeg", "application/pdf"])
    async def describe(self, ctx: Context) -> dict[str, Any]:
        """Describe the files sent."""
        return {
            "files": [
                {"type": f.media_type, "name": f.filename, "size": len(f.content or b"")}
                for f in ctx.files
            ],
            "text": ctx.text,
        }

    @skill(id="echo")
    async def echo(self, text: str) -> str:
        """Say it back."""
        return f"echo: {text}"


def message(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": list(parts)}


def viewer() -> Viewer:
    return Viewer(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")


async def test_a_part_no_skill_accepts_is_refused_as_unsupported_content(binding: str) -> None:
    async with serving(viewer(), binding) as wire:
        odd = {"raw": PNG, "mediaType": "application/x-unsupported"}
        only_odd = await wire.send(message(odd))
        refused(only_odd, code=-32005, status=415, reason="CONTENT_TYPE_NOT_SUPPORTED")
        # Text next to it is not enough: the part is refused, not silently dropped.
        with_text = await wire.send(message({"text": "hello"}, odd))
        error = refused(with_text, code=-32005, status=415, reason="CONTENT_TYPE_NOT_SUPPORTED")
        assert "application/x-unsupported" in error.message


async def test_each_skill_accepts_its_declared_media_types(binding: str) -> None:
    async with serving(viewer(), binding) as wire:
        call = {"data": {"skill": "describe", "arguments": {}}}
        png = {"raw": PNG, "mediaType": "image/png", "filename": "cat.png"}
        described = artifact_data(await wire.send(message(call, png, {"text": "what is it?"})))
        assert described == {
            "files": [{"type": "image/png", "name": "cat.png", "size": 19}],
            "text": "what is it?",
        }
        # An image is fine for describe, not for echo (text and JSON only).
        to_echo = await wire.send(message({"text": "look"}, png))
        error = refused(to_echo, code=-32005, status=415, reason="CONTENT_TYPE_NOT_SUPPORTED")
        assert "skill 'echo'" in error.message
        assert artifact_data(await wire.send(message({"text": "hi"}))) == {"text": "echo: hi"}


# ------------------------------------------- §7.3/§7.4 authentication follows the card


class Public(Agent):
    name = "Public"
    description = "Anyone may call it."

    @skill(id="hello", anonymous=True)
    async def hello(self, name: str) -> str:
        """Greet."""
        return f"hello {name}"


async def test_anonymous_agents_serve_every_method_to_anonymous_callers(binding: str) -> None:
    agent = Public(url=AGENT_URL)  # no issuer: the card declares no security at all
    async with serving(agent, binding, user=None) as anonymous:
        card = (await anonymous.client.get("/.well-known/agent-card.json")).json()
        assert "securitySchemes" not in card
        assert "securityRequirements" not in card
        mine = await anonymous.send(text_message("anon"))
        assert mine["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        listed, response = await anonymous.call("ListTasks", {})
        assert response.status_code == 200, response.text
        assert listed.get("tasks", []) == []  # anonymous tasks are nobody's to read later
        got, _ = await anonymous.call("GetTask", {"id": mine["task"]["id"]})
        refused(got, code=-32001, status=404, reason="TASK_NOT_FOUND")
        alice = Wire(binding, anonymous.app, anonymous.client, bearer(MINTER.token(sub="alice")))
        hers = await alice.send(text_message("alice"))
        listed, _ = await anonymous.call("ListTasks", {})
        assert listed.get("tasks", []) == []  # per-owner isolation holds for anonymous callers
        own, _ = await alice.call("ListTasks", {})
        assert [t["id"] for t in own["tasks"]] == [hers["task"]["id"]]


async def test_agents_that_require_tokens_require_them_for_every_method(binding: str) -> None:
    async with serving(viewer(), binding, user=None) as anonymous:
        for method, params in (
            ("SendMessage", {"message": text_message("x")}),
            ("ListTasks", {}),
            ("GetTask", {"id": "t"}),
            ("CancelTask", {"id": "t"}),
        ):
            result, response = await anonymous.call(method, params)
            assert isinstance(result, Refusal), (method, result)
            assert response.status_code == 401, (method, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer ")


# ------------------------------------------------------------- §3.3.4 extensions

REQUIRED = "urn:example:a2a:ext:receipts"
OPTIONAL = "urn:example:a2a:ext:timing"


class Strict(Agent):
    name = "Strict"
    description = "Needs the receipts extension."
    extensions = (
        AgentExtension(uri=REQUIRED, description="Receipts", required=True),
        AgentExtension(uri=OPTIONAL, description="Timing"),
    )

    @skill(id="which")
    async def which(self, ctx: Context, text: str) -> list[str]:
        """The extensions this request activated."""
        return sorted(ctx.extensions)


async def test_required_extensions_are_enforced_and_activated_ones_echoed(binding: str) -> None:
    agent = Strict(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    async with serving(agent, binding) as wire:
        card = (await wire.client.get("/.well-known/agent-card.json")).json()
        declared = {e["uri"]: e.get("required", False) for e in card["capabilities"]["extensions"]}
        assert declared == {DELEGATION_EXTENSION_URI: False, REQUIRED: True, OPTIONAL: False}
        without = await wire.send(text_message("hi"))
        error = refused(without, code=-32008, status=400, reason="EXTENSION_SUPPORT_REQUIRED")
        assert REQUIRED in error.message
        listed, _ = await wire.call("ListTasks", {})
        refused(listed, code=-32008, status=400, reason="EXTENSION_SUPPORT_REQUIRED")
        asking = Wire(
            binding,
            wire.app,
            wire.client,
            {**wire.headers, "A2A-Extensions": f"{REQUIRED}, {OPTIONAL}, urn:unknown:ext"},
        )
        result, response = await asking.call("SendMessage", {"message": text_message("hi")})
        assert artifact_data(result) == sorted([REQUIRED, OPTIONAL])
        echoed = {u.strip() for u in response.headers["A2A-Extensions"].split(",")}
        assert echoed == {REQUIRED, OPTIONAL}
        async with asking.stream(text_message("streamed")) as events:
            assert await next_state(events) == "task:SUBMITTED"
            assert await rest_of(events) == ["status:WORKING", "artifact", "status:COMPLETED"]


# ------------------------------------------------- §3.1.11 the authenticated extended card


class Catalog(Agent):
    name = "Catalog"
    description = "Search for everyone; more for members and admins."

    @skill(id="search")
    async def search(self, text: str) -> str:
        """Search the catalog."""
        return f"found {text}"

    @skill(id="members", extended=True)
    async def members(self, count: int) -> str:
        """Members-only offers."""
        return f"{count} offers"

    @skill(id="purge", extended=True, scopes=("admin",))
    async def purge(self, count: int) -> str:
        """Admins only."""
        return f"purged {count}"


def skill_ids(card: dict[str, Any]) -> list[str]:
    params = next(
        e for e in card["capabilities"]["extensions"] if e["uri"] == DELEGATION_EXTENSION_URI
    )
    assert sorted(params["params"]["skills"]) == sorted(s["id"] for s in card["skills"])
    return [s["id"] for s in card["skills"]]


async def test_extended_card_shows_skills_by_the_callers_scopes(binding: str) -> None:
    agent = Catalog(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    async with serving(agent, binding) as alice:
        public = (await alice.client.get("/.well-known/agent-card.json")).json()
        assert public["capabilities"]["extendedAgentCard"] is True
        assert skill_ids(public) == ["search"]
        card, _ = await alice.call("GetExtendedAgentCard", {})
        assert not isinstance(card, Refusal), card
        assert skill_ids(card) == ["search", "members"]
        admin = Wire(binding, alice.app, alice.client, bearer(MINTER.token(scopes=("admin",))))
        card, _ = await admin.call("GetExtendedAgentCard", {})
        assert skill_ids(card) == ["search", "members", "purge"]
        anonymous = Wire(binding, alice.app, alice.client, {"A2A-Version": "1.0"})
        refusal, response = await anonymous.call("GetExtendedAgentCard", {})
        assert isinstance(refusal, Refusal)
        assert response.status_code == 401
