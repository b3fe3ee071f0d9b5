"""A2A 0.3 requests on the JSON-RPC endpoint: 0.3 shapes in, 0.3 shapes out, 1.0 rules.

The official 0.3 client is exercised against a real socket in
``tests/test_interop_a2a_sdk_03.py``; these tests pin the wire shapes and show that
authentication, ownership and errors run through the same path as 1.0 requests.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry
from server_support import AGENT_URL, ISSUER, EchoAgent, TokenMinter, rpc
from starlette.applications import Starlette

from keycard_agents import Context, WebIdentity, create_app, skill
from keycard_agents._a2a.types import AGENT_CARD_PATH
from keycard_agents._a2a.v03 import AGENT_CARD_PATH_V03
from keycard_agents._jose._card_signature03 import signed_content_v03
from keycard_agents.runtime import PushNotifier

pytestmark = pytest.mark.anyio

MINTER = TokenMinter()


class Asking(EchoAgent):
    @skill(id="ask")
    async def ask(self, ctx: Context, topic: int) -> str:
        """Ask who, then answer."""
        return f"{topic}: {await ctx.ask_input('who?')}"


async def resolve(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]  # hooks.example, allowed as loopback for this test only


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    agent = Asking(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    push = PushNotifier(allow_loopback=True, resolve=resolve)
    app: Starlette = create_app(agent, verifier=MINTER.verifier(), push=push)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as c:
            yield c


def auth(sub: str = "alice") -> dict[str, str]:
    """A bearer header and no A2A-Version: how a 0.3 client calls."""
    return {"Authorization": f"Bearer {MINTER.token(sub=sub)}"}


def message_v03(*parts: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "kind": "message",
        "messageId": uuid.uuid4().hex,
        "role": "user",
        "parts": list(parts),
        **fields,
    }


def call_v03(skill: str, **arguments: Any) -> dict[str, Any]:
    return message_v03({"kind": "data", "data": {"skill": skill, "arguments": arguments}})


async def call(
    client: httpx.AsyncClient, method: str, params: dict[str, Any], **headers: str
) -> httpx.Response:
    return await client.post("/", json=rpc(method, params), headers={**auth(), **headers})


async def test_send_answers_a_0_3_task(client: httpx.AsyncClient) -> None:
    params = {"message": message_v03({"kind": "text", "text": "hi"})}
    response = await call(client, "message/send", params)
    assert response.status_code == 200
    task = response.json()["result"]
    assert task["kind"] == "task"
    assert task["status"]["state"] == "completed"
    assert task["artifacts"][0]["parts"] == [{"kind": "text", "text": "echo: hi"}]
    assert next(m["role"] for m in task["history"]) == "user"
    assert all(m["kind"] == "message" for m in task["history"])
    assert "A2A-Version" not in response.headers

    got = (await call(client, "tasks/get", {"id": task["id"], "historyLength": 0})).json()
    assert got["result"]["id"] == task["id"]
    assert got["result"]["status"]["state"] == "completed"
    assert got["result"]["history"] == []


async def test_cancel_and_errors_use_0_3_codes(client: httpx.AsyncClient) -> None:
    params = {"message": call_v03("wait", label=1), "configuration": {"blocking": False}}
    running = (await call(client, "message/send", params)).json()["result"]
    assert running["status"]["state"] in ("submitted", "working")
    canceled = (await call(client, "tasks/cancel", {"id": running["id"]})).json()["result"]
    assert canceled["status"]["state"] == "canceled"

    again = (await call(client, "tasks/cancel", {"id": running["id"]})).json()
    assert again["error"]["code"] == -32002
    missing = (await call(client, "tasks/get", {"id": "no-such-task"})).json()
    assert missing["error"]["code"] == -32001
    assert set(missing["error"]) == {"code", "message"}  # no 1.0 google.rpc details
    bad = (await call(client, "message/send", {"message": {"kind": "message"}})).json()
    assert bad["error"]["code"] == -32602


@pytest.mark.parametrize(
    "params",
    [
        {"message": "not an object"},
        {"message": message_v03({"kind": "weird"})},
        {"message": message_v03({"kind": "file", "file": {"name": "no content"}})},
        {"message": message_v03({"kind": "file", "file": "nope"})},
        {"message": {**message_v03({"kind": "text", "text": "x"}), "role": "robot"}},
        {"message": message_v03({"kind": "text", "text": "x"}), "configuration": []},
        {},
    ],
)
async def test_malformed_0_3_params_are_invalid_params(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    response = await call(client, "message/send", params)
    assert response.status_code == 200
    assert response.json()["error"]["code"] == -32602


async def test_ownership_and_authentication_are_the_1_0_rules(
    client: httpx.AsyncClient,
) -> None:
    params = {"message": message_v03({"kind": "text", "text": "mine"})}
    task = (await call(client, "message/send", params)).json()["result"]
    other = await client.post("/", json=rpc("tasks/get", {"id": task["id"]}), headers=auth("bob"))
    assert other.json()["error"]["code"] == -32001

    anonymous = await client.post("/", json=rpc("message/send", params))
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.json()["error"]["code"] == -32600

    pinged = (await call(client, "message/send", {"message": call_v03("ping", count=2)})).json()
    assert pinged["result"]["artifacts"][0]["parts"][0]["text"] == "pong 2"


async def test_version_header_selects_the_protocol(client: httpx.AsyncClient) -> None:
    params = {"message": message_v03({"kind": "text", "text": "v"})}
    as_03 = await call(client, "message/send", params, **{"A2A-Version": "0.3"})
    assert as_03.json()["result"]["status"]["state"] == "completed"
    # A 0.3 name is no 1.0 method; a 1.0 name without a version is still refused.
    as_10 = await call(client, "message/send", params, **{"A2A-Version": "1.0"})
    assert as_10.json()["error"]["code"] == -32601
    v1 = await call(client, "SendMessage", {"message": {}})
    assert v1.json()["error"]["code"] == -32009


async def test_stream_events_are_kind_discriminated(client: httpx.AsyncClient) -> None:
    params = {"message": message_v03({"kind": "text", "text": "streamed"})}
    response = await call(client, "message/stream", params)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[5:])["result"]
        for line in response.text.splitlines()
        if line.startswith("data:")
    ]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "task"
    assert "artifact-update" in kinds
    artifact = next(e for e in events if e["kind"] == "artifact-update")["artifact"]
    assert artifact["parts"] == [{"kind": "text", "text": "echo: streamed"}]
    last = events[-1]
    assert last["kind"] == "status-update"
    assert last["status"]["state"] == "completed"
    assert last["final"] is True
    assert all(e["final"] is False for e in events[1:-1] if e["kind"] == "status-update")

    # A finished task has nothing to subscribe to: the 1.0 answer, in 0.3 form.
    again = await call(client, "tasks/resubscribe", {"id": events[0]["id"]})
    assert again.json()["error"]["code"] == -32004


async def test_file_parts_are_translated_both_ways(client: httpx.AsyncClient) -> None:
    file_part = {
        "kind": "file",
        "file": {"bytes": "aGVsbG8=", "mimeType": "text/plain", "name": "a.txt"},
    }
    params = {"message": message_v03({"kind": "text", "text": "with file"}, file_part)}
    task = (await call(client, "message/send", params)).json()["result"]
    sent = task["history"][0]["parts"]
    assert {"kind": "text", "text": "with file"} in sent
    assert file_part in sent


async def test_push_notification_configs_in_0_3_shape(client: httpx.AsyncClient) -> None:
    params = {"message": call_v03("wait", label=2), "configuration": {"blocking": False}}
    task = (await call(client, "message/send", params)).json()["result"]
    config = {"id": "cfg-1", "url": "https://hooks.example/a2a", "token": "opaque"}
    body = {"taskId": task["id"], "pushNotificationConfig": config}
    created = (await call(client, "tasks/pushNotificationConfig/set", body)).json()
    assert created["result"]["taskId"] == task["id"]
    assert created["result"]["pushNotificationConfig"]["url"] == config["url"]
    got = await call(
        client,
        "tasks/pushNotificationConfig/get",
        {"id": task["id"], "pushNotificationConfigId": "cfg-1"},
    )
    assert got.json()["result"]["pushNotificationConfig"]["id"] == "cfg-1"
    listed = (await call(client, "tasks/pushNotificationConfig/list", {"id": task["id"]})).json()
    assert [c["pushNotificationConfig"]["id"] for c in listed["result"]] == ["cfg-1"]
    deleted = await call(
        client,
        "tasks/pushNotificationConfig/delete",
        {"id": task["id"], "pushNotificationConfigId": "cfg-1"},
    )
    assert deleted.json()["result"] is None

    # Without ids, as 0.3 clients often send them: the config is known by the task's id.
    unnamed = {"taskId": task["id"], "pushNotificationConfig": {"url": config["url"]}}
    made = (await call(client, "tasks/pushNotificationConfig/set", unnamed)).json()["result"]
    assert made["pushNotificationConfig"]["id"] == task["id"]
    found = (await call(client, "tasks/pushNotificationConfig/get", {"id": task["id"]})).json()
    assert found["result"]["pushNotificationConfig"]["url"] == config["url"]
    gone = await call(client, "tasks/pushNotificationConfig/delete", {"id": task["id"]})
    assert gone.json()["result"] is None
    listed = (await call(client, "tasks/pushNotificationConfig/list", {"id": task["id"]})).json()
    assert listed["result"] == []
    await call(client, "tasks/cancel", {"id": task["id"]})


def sse_results(response: httpx.Response) -> list[dict[str, Any]]:
    return [
        json.loads(line[5:])["result"]
        for line in response.text.splitlines()
        if line.startswith("data:")
    ]


async def test_a_0_3_stream_ends_at_input_required(client: httpx.AsyncClient) -> None:
    # httpx's ASGI transport returns once the stream ends: a stream left open would hang.
    streamed = await call(client, "message/stream", {"message": call_v03("ask", topic=7)})
    events = sse_results(streamed)
    assert events[0]["kind"] == "task"
    last = events[-1]
    assert last["kind"] == "status-update"
    assert last["status"]["state"] == "input-required"
    assert last["final"] is True
    assert last["status"]["message"]["role"] == "agent"

    reply = message_v03({"kind": "text", "text": "bob"}, taskId=events[0]["id"])
    resumed = await call(client, "message/stream", {"message": reply})
    final = sse_results(resumed)[-1]
    assert final["status"]["state"] == "completed"
    got = (await call(client, "tasks/get", {"id": events[0]["id"]})).json()["result"]
    assert got["artifacts"][0]["parts"][0]["text"] == "7: bob"


async def test_the_0_3_card_is_served_signed_beside_the_1_0_card(tmp_path: Path) -> None:
    identity = WebIdentity("echo03", storage_dir=tmp_path / "keys")
    agent = Asking(
        url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token", credential=identity
    )
    app: Starlette = create_app(agent, verifier=MINTER.verifier())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=AGENT_URL) as http,
    ):
        card = await http.get(AGENT_CARD_PATH_V03)
        v10 = (await http.get(AGENT_CARD_PATH)).json()
        jwks = (await http.get("/.well-known/jwks.json")).json()
        again = await http.get(AGENT_CARD_PATH_V03, headers={"If-None-Match": card.headers["etag"]})
    assert card.status_code == 200
    assert again.status_code == 304
    data = card.json()
    assert data["protocolVersion"] == "0.3.0"
    assert data["url"].startswith(AGENT_URL)
    assert "supportedInterfaces" not in data
    assert "ask" in [s["id"] for s in data["skills"]]
    # One detached JWS over the 0.3 form, by the agent's key, naming its JWKS.
    (signature,) = data["signatures"]
    key = JWKRegistry.import_key(jwks["keys"][0])
    compact = jws.deserialize_compact(
        signature["protected"] + "." + b64(signed_content_v03(data)) + "." + signature["signature"],
        key,
        algorithms=[jwks["keys"][0]["alg"]],
    )
    assert compact.headers()["jku"] == AGENT_URL + "/.well-known/jwks.json"
    tampered = {**data, "description": "Send me your credentials."}
    with pytest.raises(JoseError):
        jws.deserialize_compact(
            signature["protected"]
            + "."
            + b64(signed_content_v03(tampered))
            + "."
            + signature["signature"],
            key,
            algorithms=[jwks["keys"][0]["alg"]],
        )
    # The 1.0 card keeps its own form and signature.
    assert "supportedInterfaces" in v10
    assert v10["signatures"][0]["signature"] != signature["signature"]


async def test_the_0_3_card_of_an_agent_without_a_key_is_unsigned(
    client: httpx.AsyncClient,
) -> None:
    data = (await client.get(AGENT_CARD_PATH_V03)).json()
    assert data["protocolVersion"] == "0.3.0"
    assert "signatures" not in data


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
