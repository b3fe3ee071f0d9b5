"""``docs/a2a.md`` is true: each row of its table is checked against a running server.

Every row needs a check here (and every check a row), so a feature cannot be claimed, or
dropped from the table, without this test saying so. Method rows run over both bindings.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from server_support import AGENT_URL, ISSUER, TokenMinter, bearer, call_message, text_message
from wire_support import BINDINGS, Refusal, Wire

from keycard_agents import Agent, Context, WebIdentity, create_app, skill
from keycard_agents._jose._card_signature import verify_card
from keycard_agents._jose._keys import VerificationKeys
from keycard_agents.a2a import AgentExtension, Message, Part, Role
from keycard_agents.runtime import PushNotifier

pytestmark = pytest.mark.anyio

MINTER = TokenMinter()
TABLE = Path(__file__).parent.parent / "docs" / "a2a.md"
EXTENSION = "urn:example:status:ext"


class Reference(Agent):
    name = "Reference"
    description = "One skill per A2A feature."
    extensions = (AgentExtension(uri=EXTENSION, description="Checked", required=True),)

    @skill(id="echo")
    async def echo(self, text: str) -> str:
        """Say it back."""
        return text

    @skill(id="ask")
    async def ask(self, ctx: Context, topic: str) -> str:
        """Ask, then answer."""
        return f"{topic}: {await ctx.ask_input('who?')}"

    @skill(id="now")
    async def now(self, ctx: Context, zone: str) -> Message:
        """A direct answer."""
        return Message(message_id=uuid.uuid4().hex, role=Role.AGENT, parts=[Part(text=zone)])

    @skill(id="pieces")
    async def pieces(self, ctx: Context, count: int) -> str:
        """A chunked artifact."""
        writer = ctx.open_artifact(name="pieces")
        for i in range(count):
            await writer.write(str(i), last=i == count - 1)
        return "ok"

    @skill(id="refuse")
    async def refuse(self, ctx: Context, why: str) -> str:
        """Rejects."""
        await ctx.reject(why)
        return "never"

    @skill(id="hidden", extended=True)
    async def hidden(self, ctx: Context, n: int) -> int:
        """On the extended card only."""
        return n


@dataclass
class Row:
    feature: str
    status: str


def rows() -> list[Row]:
    found = []
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[2] in ("supported", "not supported"):
            found.append(Row(cells[0], cells[2]))
    return found


async def public_resolver(host: str, port: int) -> list[str]:
    return ["93.184.216.34"]


@pytest.fixture(params=BINDINGS)
async def wire(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Wire]:
    agent = Reference(
        url=AGENT_URL,
        issuer=ISSUER,
        token_endpoint=ISSUER + "/token",
        credential=WebIdentity("reference", storage_dir=tmp_path / "keys"),
    )
    app = create_app(agent, verifier=MINTER.verifier(), push=PushNotifier(resolve=public_resolver))
    headers = {**bearer(MINTER.token(sub="alice")), "A2A-Extensions": EXTENSION}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            yield Wire(str(request.param), app, client, headers)


def ok(result: Any) -> Any:
    assert not isinstance(result, Refusal), result
    return result


def call(skill_id: str, **arguments: Any) -> dict[str, Any]:
    return call_message(skill_id, arguments)


async def task_of(wire: Wire, message: dict[str, Any], **config: Any) -> dict[str, Any]:
    task: dict[str, Any] = ok(await wire.send(message, **config))["task"]
    return task


async def events_of(wire: Wire, message: dict[str, Any]) -> list[dict[str, Any]]:
    with anyio.fail_after(10):
        async with wire.stream(message) as events:
            return [e async for e in events]


async def card(wire: Wire) -> httpx.Response:
    return await wire.client.get("/.well-known/agent-card.json")


# -- one check per row ---------------------------------------------------------------


async def send_message(wire: Wire) -> None:
    task = await task_of(wire, call("echo", text="hi"), historyLength=0)
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    assert task.get("history", []) == []
    assert "message" in ok(await wire.send(call("now", zone="UTC")))


async def send_streaming_message(wire: Wire) -> None:
    events = await events_of(wire, call("echo", text="hi"))
    assert "task" in events[0]
    assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def get_task(wire: Wire) -> None:
    task = await task_of(wire, call("echo", text="hi"))
    got, _ = await wire.call("GetTask", {"id": task["id"]})
    assert ok(got)["id"] == task["id"]


async def list_tasks(wire: Wire) -> None:
    task = await task_of(wire, call("echo", text="hi"))
    listed, _ = await wire.call("ListTasks", {"pageSize": 5})
    assert task["id"] in [t["id"] for t in ok(listed)["tasks"]]


async def cancel_task(wire: Wire) -> None:
    task = await task_of(wire, call("ask", topic="x"))
    canceled, _ = await wire.call("CancelTask", {"id": task["id"]})
    assert ok(canceled)["status"]["state"] == "TASK_STATE_CANCELED"
    again, _ = await wire.call("CancelTask", {"id": task["id"]})
    assert isinstance(again, Refusal)
    assert again.reason == "TASK_NOT_CANCELABLE"


async def subscribe_to_task(wire: Wire) -> None:
    task = await task_of(wire, call("ask", topic="x"))
    async with wire.subscribe(task["id"]) as events:
        with anyio.fail_after(10):
            first = await anext(events)
            assert first["task"]["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
            await wire.send(text_message("me", taskId=task["id"]))
            rest = [e async for e in events]
    assert rest[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def _push_config(wire: Wire) -> tuple[str, str]:
    task = await task_of(wire, call("ask", topic="x"))
    params = {"taskId": task["id"], "url": "https://hooks.example/cb"}
    if wire.binding == "JSONRPC":
        created, _ = await wire.call("CreateTaskPushNotificationConfig", params)
    else:
        path = f"/tasks/{task['id']}/pushNotificationConfigs"
        created = (await wire.client.post(path, json=params, headers=wire.headers)).json()
    return task["id"], ok(created)["id"]


async def _push(wire: Wire, method: str, task_id: str, config_id: str) -> Any:
    if wire.binding == "JSONRPC":
        params = {"taskId": task_id, "id": config_id}
        result, _ = await wire.call(method, params)
        return ok(result)
    base = f"/tasks/{task_id}/pushNotificationConfigs"
    verb, path = {
        "GetTaskPushNotificationConfig": ("GET", f"{base}/{config_id}"),
        "ListTaskPushNotificationConfigs": ("GET", base),
        "DeleteTaskPushNotificationConfig": ("DELETE", f"{base}/{config_id}"),
    }[method]
    response = await wire.client.request(verb, path, headers=wire.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def create_push(wire: Wire) -> None:
    assert all(await _push_config(wire))


async def get_push(wire: Wire) -> None:
    task_id, config_id = await _push_config(wire)
    config = await _push(wire, "GetTaskPushNotificationConfig", task_id, config_id)
    assert config["url"] == "https://hooks.example/cb"


async def list_push(wire: Wire) -> None:
    task_id, config_id = await _push_config(wire)
    listed = await _push(wire, "ListTaskPushNotificationConfigs", task_id, config_id)
    assert [c["id"] for c in listed["configs"]] == [config_id]


async def delete_push(wire: Wire) -> None:
    task_id, config_id = await _push_config(wire)
    assert await _push(wire, "DeleteTaskPushNotificationConfig", task_id, config_id) == {}


async def extended_card(wire: Wire) -> None:
    assert "hidden" not in [s["id"] for s in (await card(wire)).json()["skills"]]
    extended, _ = await wire.call("GetExtendedAgentCard", {})
    assert "hidden" in [s["id"] for s in ok(extended)["skills"]]


async def jsonrpc_binding(wire: Wire) -> None:
    bindings = [i["protocolBinding"] for i in (await card(wire)).json()["supportedInterfaces"]]
    assert "JSONRPC" in bindings
    body = {"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}
    assert "result" in (await wire.client.post("/", json=body, headers=wire.headers)).json()


async def rest_binding(wire: Wire) -> None:
    bindings = [i["protocolBinding"] for i in (await card(wire)).json()["supportedInterfaces"]]
    assert "HTTP+JSON" in bindings
    response = await wire.client.get("/tasks", headers=wire.headers)
    assert response.status_code == 200


async def grpc_binding(wire: Wire) -> None:
    bindings = [i["protocolBinding"] for i in (await card(wire)).json()["supportedInterfaces"]]
    assert "GRPC" not in bindings


async def version_1_0(wire: Wire) -> None:
    other = Wire(wire.binding, wire.app, wire.client, {**wire.headers, "A2A-Version": "2.0"})
    refused, _ = await other.call("ListTasks", {})
    assert isinstance(refused, Refusal)
    assert refused.reason == "VERSION_NOT_SUPPORTED"
    ok((await wire.call("ListTasks", {}))[0])


async def version_0_3(wire: Wire) -> None:
    headers = {k: v for k, v in wire.headers.items() if k != "A2A-Version"}
    refused, _ = await Wire(wire.binding, wire.app, wire.client, headers).call("ListTasks", {})
    assert isinstance(refused, Refusal)
    assert refused.reason == "VERSION_NOT_SUPPORTED"
    # 0.3 methods on the JSON-RPC endpoint (whichever binding the row runs over).
    part = {"kind": "data", "data": {"skill": "echo", "arguments": {"text": "old"}}}
    message = {"kind": "message", "messageId": uuid.uuid4().hex, "role": "user", "parts": [part]}
    body = {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": message}}
    task = (await wire.client.post("/", json=body, headers=headers)).json()["result"]
    assert task["kind"] == "task"
    assert task["status"]["state"] == "completed"
    assert task["artifacts"][0]["parts"] == [{"kind": "text", "text": "old"}]
    body = {"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"id": "nope"}}
    missing = (await wire.client.post("/", json=body, headers=headers)).json()["error"]
    assert missing["code"] == -32001
    body = {"jsonrpc": "2.0", "id": 3, "method": "agent/getAuthenticatedExtendedCard"}
    extended = (await wire.client.post("/", json=body, headers=headers)).json()["result"]
    assert extended["protocolVersion"] == "0.3.0"
    assert "hidden" in [s["id"] for s in extended["skills"]]
    # The card in 0.3 form at its own path, signed over the 0.3 form (the 1.0 one is not).
    old = (await wire.client.get("/.well-known/agent-card-0.3.json")).json()
    assert old["protocolVersion"] == "0.3.0"
    assert len(old["signatures"]) == 1
    assert old["signatures"] != (await card(wire)).json()["signatures"]


async def agent_card(wire: Wire) -> None:
    response = await card(wire)
    assert {"etag", "last-modified", "cache-control"} <= set(response.headers)
    again = await wire.client.get(
        "/.well-known/agent-card.json", headers={"If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304


async def signed_card(wire: Wire) -> None:
    data = (await card(wire)).json()
    jwks = (await wire.client.get("/.well-known/jwks.json")).json()
    keys = VerificationKeys.from_jwks(jwks)
    assert verify_card(data, keys, policy="require", where="status test")


async def security_schemes(wire: Wire) -> None:
    data = (await card(wire)).json()
    assert "oauth2SecurityScheme" in data["securitySchemes"]["keycard"]
    anonymous = Wire(wire.binding, wire.app, wire.client, {"A2A-Version": "1.0"})
    _, response = await anonymous.call("ListTasks", {})
    assert response.status_code == 401


async def media_types(wire: Wire) -> None:
    odd = {"raw": base64.b64encode(b"x").decode(), "mediaType": "application/x-odd"}
    message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [odd]}
    refused = await wire.send(message)
    assert isinstance(refused, Refusal)
    assert refused.reason == "CONTENT_TYPE_NOT_SUPPORTED"


async def extensions(wire: Wire) -> None:
    result, response = await wire.call("SendMessage", {"message": call("echo", text="x")})
    ok(result)
    assert response.headers["A2A-Extensions"] == EXTENSION
    headers = {k: v for k, v in wire.headers.items() if k != "A2A-Extensions"}
    refused, _ = await Wire(wire.binding, wire.app, wire.client, headers).call("ListTasks", {})
    assert isinstance(refused, Refusal)
    assert refused.reason == "EXTENSION_SUPPORT_REQUIRED"


async def task_states(wire: Wire) -> None:
    seen = {
        (await task_of(wire, call("echo", text="x")))["status"]["state"],
        (await task_of(wire, call("ask", topic="x")))["status"]["state"],
        (await task_of(wire, call("refuse", why="no")))["status"]["state"],
    }
    assert seen == {
        "TASK_STATE_COMPLETED",
        "TASK_STATE_INPUT_REQUIRED",
        "TASK_STATE_REJECTED",
    }


async def chunked_artifacts(wire: Wire) -> None:
    events = await events_of(wire, call("pieces", count=2))
    chunks = [e["artifactUpdate"] for e in events if "artifactUpdate" in e]
    pieces = [c for c in chunks if c["artifact"].get("name") == "pieces"]
    assert [(c.get("append", False), c.get("lastChunk", False)) for c in pieces] == [
        (False, False),
        (True, True),
    ]


async def multi_tenancy(wire: Wire) -> None:
    # Accepted and ignored: a tenant does not separate anything.
    task = await task_of(wire, call("echo", text="x"))
    got, _ = await wire.call("GetTask", {"id": task["id"], "tenant": "other"})
    assert ok(got)["id"] == task["id"]


#: Each row's check, and the status it proves (the table must claim that status).
CHECKS: dict[str, tuple[str, Callable[[Wire], Awaitable[None]]]] = {
    "SendMessage": ("supported", send_message),
    "SendStreamingMessage": ("supported", send_streaming_message),
    "GetTask": ("supported", get_task),
    "ListTasks": ("supported", list_tasks),
    "CancelTask": ("supported", cancel_task),
    "SubscribeToTask": ("supported", subscribe_to_task),
    "CreateTaskPushNotificationConfig": ("supported", create_push),
    "GetTaskPushNotificationConfig": ("supported", get_push),
    "ListTaskPushNotificationConfigs": ("supported", list_push),
    "DeleteTaskPushNotificationConfig": ("supported", delete_push),
    "GetExtendedAgentCard": ("supported", extended_card),
    "JSON-RPC binding": ("supported", jsonrpc_binding),
    "HTTP+JSON binding": ("supported", rest_binding),
    "gRPC binding": ("not supported", grpc_binding),
    "A2A-Version 1.0": ("supported", version_1_0),
    "A2A 0.3 requests": ("supported", version_0_3),
    "Agent card": ("supported", agent_card),
    "Signed agent card": ("supported", signed_card),
    "Security schemes": ("supported", security_schemes),
    "Media types": ("supported", media_types),
    "Extensions": ("supported", extensions),
    "Task states": ("supported", task_states),
    "Chunked artifacts": ("supported", chunked_artifacts),
    "Multi-tenancy": ("not supported", multi_tenancy),
}


def test_every_row_has_a_check_and_every_check_a_row() -> None:
    documented = [r.feature for r in rows()]
    assert len(documented) == len(set(documented))
    assert set(documented) == set(CHECKS)
    for row in rows():
        assert row.status == CHECKS[row.feature][0], f"{row.feature}: the server shows otherwise"
    methods = re.findall(r"^\| ([A-Z][A-Za-z]+) \| §3\.1\.", TABLE.read_text(), re.MULTILINE)
    assert len(methods) == 11  # every A2A 1.0 operation


async def test_the_table_matches_the_server(wire: Wire) -> None:
    for row in rows():
        try:
            await CHECKS[row.feature][1](wire)
        except AssertionError as exc:
            raise AssertionError(f"docs/a2a.md row {row.feature!r} ({row.status}): {exc}") from exc
