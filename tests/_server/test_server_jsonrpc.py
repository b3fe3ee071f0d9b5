"""The JSON-RPC binding: results, every error code the server produces, SSE framing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from server_support import (
    AGENT_URL,
    ISSUER,
    EchoAgent,
    TokenMinter,
    bearer,
    call_message,
    rpc,
    text_message,
)
from starlette.applications import Starlette

from keycard_agents import create_app
from keycard_agents._server._jsonrpc import JsonRpcEndpoint

pytestmark = pytest.mark.anyio

MINTER = TokenMinter()


def make_app(**options: Any) -> Starlette:
    agent = EchoAgent(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    # Push notifications off: these tests check the PushNotificationNotSupported answers
    # (test_server_push.py covers an agent that sends them).
    options.setdefault("push", False)
    return create_app(agent, verifier=MINTER.verifier(), **options)


@pytest.fixture
async def app() -> AsyncIterator[Starlette]:
    application = make_app()
    async with application.router.lifespan_context(application):
        yield application


def jsonrpc_endpoint(app: Starlette) -> JsonRpcEndpoint:
    """The app's JSON-RPC endpoint at `/`, found by what it is, not by its place in the routes."""
    for route in app.routes:
        endpoint = getattr(getattr(route, "endpoint", None), "__self__", None)
        if isinstance(endpoint, JsonRpcEndpoint) and getattr(route, "path", None) == "/":
            return endpoint
    raise AssertionError("the app has no JSON-RPC endpoint at /")


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as c:
        yield c


@pytest.fixture
def alice() -> dict[str, str]:
    """Alice's bearer header, minted as the test starts (never at import: it would expire)."""
    return bearer(MINTER.token(sub="alice"))


@pytest.fixture
def bob() -> dict[str, str]:
    """Bob's bearer header, minted as the test starts."""
    return bearer(MINTER.token(sub="bob"))


async def call(
    client: httpx.AsyncClient, method: str, params: dict[str, Any] | None, headers: dict[str, str]
) -> dict[str, Any]:
    response = await client.post("/", json=rpc(method, params), headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["jsonrpc"] == "2.0"
    assert body["id"] == 1
    return body


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    assert "result" not in body, body
    error: dict[str, Any] = body["error"]
    return error


def sse_data(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line]
        if not lines:
            continue
        data = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
        assert len(data) == 1, block
        events.append(json.loads(data[0]))
    return events


# ----------------------------------------------------------------------------- results


async def test_send_message_completes_with_artifact(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    body = await call(client, "SendMessage", {"message": text_message("hi")}, alice)
    task = body["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    texts = [p["text"] for a in task["artifacts"] for p in a["parts"] if "text" in p]
    assert texts == ["echo: hi"]


async def test_string_and_null_ids_are_echoed(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for request_id in ("abc", None, 7):
        payload = rpc("SendMessage", {"message": text_message("x")}, id=request_id)
        response = await client.post("/", json=payload, headers=alice)
        assert response.json()["id"] == request_id


async def test_get_and_list_tasks(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    task = (await call(client, "SendMessage", {"message": text_message("a")}, alice))["result"]
    task_id = task["task"]["id"]
    got = (await call(client, "GetTask", {"id": task_id}, alice))["result"]
    assert got["id"] == task_id
    assert got["status"]["state"] == "TASK_STATE_COMPLETED"
    listed = (await call(client, "ListTasks", {}, alice))["result"]
    assert task_id in [t["id"] for t in listed["tasks"]]


async def test_streaming_frames_each_event_as_jsonrpc_response(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    payload = rpc("SendStreamingMessage", {"message": text_message("s")}, id="st-1")
    response = await client.post("/", json=payload, headers=alice)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_data(response.text)
    assert events, response.text
    for event in events:
        assert event["jsonrpc"] == "2.0"
        assert event["id"] == "st-1"
        result = event["result"]
        assert len(result) == 1
        assert next(iter(result)) in {"task", "message", "statusUpdate", "artifactUpdate"}
    last = events[-1]["result"]
    final_state = (last.get("statusUpdate") or last.get("task"))["status"]["state"]
    assert final_state == "TASK_STATE_COMPLETED"


# ------------------------------------------------------------- JSON-RPC protocol errors


async def test_parse_error(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    response = await client.post(
        "/",
        content=b'{"jsonrpc": "2.0", "id": 1, ',
        headers={**alice, "content-type": "application/json"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["id"] is None
    assert error_of(body)["code"] == -32700


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ([rpc("GetTask", {"id": "x"})], "Batch"),
        ("just a string", "JSON object"),
        ({"jsonrpc": "2.0", "method": "GetTask"}, "no id"),
        ({"jsonrpc": "1.0", "id": 1, "method": "GetTask"}, "jsonrpc"),
        ({"jsonrpc": "2.0", "id": 1, "method": 5}, "method"),
        ({"jsonrpc": "2.0", "id": [1], "method": "GetTask"}, "id"),
        ({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": [1]}, "params"),
    ],
)
async def test_invalid_request(
    client: httpx.AsyncClient, payload: Any, fragment: str, alice: dict[str, str]
) -> None:
    response = await client.post("/", json=payload, headers=alice)
    assert response.status_code == 200
    error = error_of(response.json())
    assert error["code"] == -32600
    assert fragment in error["message"]


async def test_unknown_method(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    error = error_of(await call(client, "message/send", {}, alice))
    assert error["code"] == -32601
    assert "message/send" in error["message"]


async def test_invalid_params_lists_every_problem(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    params = {"message": {"messageId": 5, "role": "ROLE_ROBOT", "parts": []}}
    error = error_of(await call(client, "SendMessage", params, alice))
    assert error["code"] == -32602
    for field in ("message.messageId", "message.role", "message.parts"):
        assert field in error["message"]
    bad_request = [d for d in error["data"] if d["@type"].endswith("google.rpc.BadRequest")]
    fields = {v["field"] for v in bad_request[0]["fieldViolations"]}
    assert {"message.messageId", "message.role", "message.parts"} <= fields


async def test_invalid_params_missing_and_wrong_type(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    assert error_of(await call(client, "GetTask", {}, alice))["code"] == -32602
    assert error_of(await call(client, "GetTask", {"id": 3}, alice))["code"] == -32602
    bad_state = {"status": "TASK_STATE_SLEEPING"}
    assert error_of(await call(client, "ListTasks", bad_state, alice))["code"] == -32602
    bad_history = {"id": "x", "historyLength": -1}
    assert error_of(await call(client, "GetTask", bad_history, alice))["code"] == -32602


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type(
    client: httpx.AsyncClient, content_type: str | None, alice: dict[str, str]
) -> None:
    headers = dict(alice)
    if content_type is not None:
        headers["content-type"] = content_type
    body = json.dumps(rpc("GetTask", {"id": "x"})).encode()
    response = await client.post("/", content=body, headers=headers)
    assert response.status_code == 415
    error = error_of(response.json())
    assert error["code"] == -32600
    assert "application/json" in error["message"]


async def test_a2a_json_content_type_is_accepted(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    body = json.dumps(rpc("SendMessage", {"message": text_message("x")})).encode()
    headers = {**alice, "content-type": "application/a2a+json; charset=utf-8"}
    response = await client.post("/", content=body, headers=headers)
    assert response.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_oversized_body_with_content_length(alice: dict[str, str]) -> None:
    application = make_app(max_body_size=512)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            payload = rpc("SendMessage", {"message": text_message("x" * 600)})
            response = await client.post("/", json=payload, headers=alice)
            assert response.status_code == 413
            error = error_of(response.json())
            assert error["code"] == -32600
            assert "512 bytes" in error["message"]
            small = await client.post(
                "/", json=rpc("SendMessage", {"message": text_message("ok")}), headers=alice
            )
            assert small.status_code == 200


async def test_oversized_chunked_body_is_cut_off_while_reading(alice: dict[str, str]) -> None:
    application = make_app(max_body_size=1024)
    received = 0
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        if received > 10_000:  # far more than the limit: the server must stop before this
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b"a" * 256, "more_body": True}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    headers = [
        (b"content-type", b"application/json"),
        (b"a2a-version", b"1.0"),
        (b"authorization", alice["Authorization"].encode()),
        (b"transfer-encoding", b"chunked"),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "server": ("agent.test", 80),
        "client": ("127.0.0.1", 5000),
    }
    async with application.router.lifespan_context(application):
        await application(scope, receive, send)
    assert sent[0]["status"] == 413
    assert received <= 1024 // 256 + 1
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert error_of(body)["code"] == -32600


async def test_missing_version_is_refused_with_what_to_send(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    token = alice["Authorization"]
    response = await client.post(
        "/", json=rpc("GetTask", {"id": "x"}), headers={"Authorization": token}
    )
    assert response.status_code == 200
    error = error_of(response.json())
    assert error["code"] == -32009
    assert "A2A-Version: 1.0" in error["message"]


@pytest.mark.parametrize("version", ["0.3", "0.3.0", "2.0", "1.1", "abc"])
async def test_other_versions_are_refused(
    client: httpx.AsyncClient, version: str, alice: dict[str, str]
) -> None:
    headers = {**alice, "A2A-Version": version}
    error = error_of(await call(client, "GetTask", {"id": "x"}, headers))
    assert error["code"] == -32009
    assert "A2A-Version: 1.0" in error["message"]


@pytest.mark.parametrize("version", ["1.0", "1.0.1"])
async def test_accepted_versions(
    client: httpx.AsyncClient, version: str, alice: dict[str, str]
) -> None:
    headers = {**alice, "A2A-Version": version}
    body = await call(client, "SendMessage", {"message": text_message("v")}, headers)
    assert "result" in body


async def test_version_as_query_parameter(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    headers = {"Authorization": alice["Authorization"]}
    payload = rpc("SendMessage", {"message": text_message("q")})
    response = await client.post("/?A2A-Version=1.0", json=payload, headers=headers)
    assert "result" in response.json()


async def test_missing_version_allowed_by_switch(alice: dict[str, str]) -> None:
    application = make_app(allow_missing_version=True)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            headers = {"Authorization": alice["Authorization"]}
            payload = rpc("SendMessage", {"message": text_message("legacy")})
            response = await client.post("/", json=payload, headers=headers)
            assert "result" in response.json()
            refused = await client.post(
                "/", json=payload, headers={**headers, "A2A-Version": "0.3"}
            )
            assert error_of(refused.json())["code"] == -32009


# ----------------------------------------------------------------- A2A error codes


async def test_task_not_found(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    error = error_of(await call(client, "GetTask", {"id": "no-such-task"}, alice))
    assert error["code"] == -32001
    info = error["data"][0]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == "TASK_NOT_FOUND"


async def test_task_not_cancelable(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    task = (await call(client, "SendMessage", {"message": text_message("done")}, alice))["result"]
    error = error_of(await call(client, "CancelTask", {"id": task["task"]["id"]}, alice))
    assert error["code"] == -32002


@pytest.mark.parametrize(
    "method",
    [
        "CreateTaskPushNotificationConfig",
        "GetTaskPushNotificationConfig",
        "ListTaskPushNotificationConfigs",
        "DeleteTaskPushNotificationConfig",
    ],
)
async def test_push_notification_methods(
    client: httpx.AsyncClient, method: str, alice: dict[str, str]
) -> None:
    error = error_of(await call(client, method, {"taskId": "t", "id": "c"}, alice))
    assert error["code"] == -32003


async def test_push_config_in_send_message(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    params = {
        "message": text_message("push"),
        "configuration": {"taskPushNotificationConfig": {"url": "https://hook.test/cb"}},
    }
    error = error_of(await call(client, "SendMessage", params, alice))
    assert error["code"] == -32003


async def test_extended_card_not_configured(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    error = error_of(await call(client, "GetExtendedAgentCard", {}, alice))
    assert error["code"] == -32007


async def test_extended_card_when_configured(alice: dict[str, str]) -> None:
    seen: list[str | None] = []

    def extended(caller: Any) -> Any:
        from keycard_agents.a2a import AgentCard

        seen.append(caller.principal.user if caller.principal else None)
        base = application.state.keycard_card()
        return AgentCard.model_validate({**base, "description": "extended"})

    application = make_app(extended_card=extended)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            body = await call(client, "GetExtendedAgentCard", {}, alice)
    assert body["result"]["description"] == "extended"
    assert seen == ["alice"]


async def test_bug_in_skill_is_an_internal_error_without_internals(
    client: httpx.AsyncClient,
    alice: dict[str, str],
) -> None:
    body = await call(
        client, "SendMessage", {"message": call_message("explode", {"code": 7})}, alice
    )
    text = json.dumps(body)
    assert "secret-path" not in text
    assert "internal detail" not in text
    if "error" in body:
        assert body["error"]["code"] == -32603
    else:
        assert body["result"]["task"]["status"]["state"] == "TASK_STATE_FAILED"


async def test_bug_in_runtime_is_an_internal_error(app: Starlette, alice: dict[str, str]) -> None:
    class Broken:
        async def get_task(self, request: Any, *, caller: Any) -> Any:
            raise KeyError("/internal/state")

    from keycard_agents._server._dispatch import Dispatcher

    dispatcher = Dispatcher(runtime=Broken())  # type: ignore[arg-type]
    endpoint = jsonrpc_endpoint(app)
    endpoint._dispatcher = dispatcher
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
        body = await call(client, "GetTask", {"id": "x"}, alice)
    assert body["error"] == {
        "code": -32603,
        "message": "Internal error",
        "data": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "INTERNAL",
                "domain": "a2a-protocol.org",
                "metadata": {},
            }
        ],
    }


# ---------------------------------------------------------------- users and tasks


async def test_users_cannot_see_each_others_tasks(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    task = (await call(client, "SendMessage", {"message": text_message("mine")}, alice))["result"]
    task_id = task["task"]["id"]
    assert error_of(await call(client, "GetTask", {"id": task_id}, bob))["code"] == -32001
    assert error_of(await call(client, "CancelTask", {"id": task_id}, bob))["code"] == -32001
    listed = (await call(client, "ListTasks", {}, bob))["result"]
    assert task_id not in [t["id"] for t in listed.get("tasks", [])]
    follow_up = text_message("again", taskId=task_id)
    error = error_of(await call(client, "SendMessage", {"message": follow_up}, bob))
    assert error["code"] == -32001
    subscribe = rpc("SubscribeToTask", {"id": task_id})
    response = await client.post("/", json=subscribe, headers=bob)
    assert error_of(response.json())["code"] == -32001


async def test_cancel_running_skill(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    params = {
        "message": call_message("wait", {"label": 1}),
        "configuration": {"returnImmediately": True},
    }
    task = (await call(client, "SendMessage", params, alice))["result"]["task"]
    assert task["status"]["state"] in {"TASK_STATE_SUBMITTED", "TASK_STATE_WORKING"}
    canceled = (await call(client, "CancelTask", {"id": task["id"]}, alice))["result"]
    assert canceled["status"]["state"] == "TASK_STATE_CANCELED"
    got = (await call(client, "GetTask", {"id": task["id"]}, alice))["result"]
    assert got["status"]["state"] == "TASK_STATE_CANCELED"


async def test_cancel_ends_open_streams(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    params = {
        "message": call_message("wait", {"label": 2}),
        "configuration": {"returnImmediately": True},
    }
    task = (await call(client, "SendMessage", params, alice))["result"]["task"]
    events: list[dict[str, Any]] = []

    async def subscribe() -> None:
        payload = rpc("SubscribeToTask", {"id": task["id"]})
        response = await client.post("/", json=payload, headers=alice)
        events.extend(sse_data(response.text))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(subscribe)
            for _ in range(100):  # let the subscription attach before cancelling
                await anyio.lowlevel.checkpoint()
            await call(client, "CancelTask", {"id": task["id"]}, alice)
    assert events
    last = events[-1]["result"]
    final = last.get("statusUpdate") or last.get("task")
    assert final["status"]["state"] == "TASK_STATE_CANCELED"


async def test_every_error_code_the_server_produces(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    """One request per code; -32005, -32006 and -32008 are never produced by this server."""
    codes: set[int] = set()

    async def code_of(payload: Any, headers: dict[str, str] = alice, **kw: Any) -> None:
        response = await client.post("/", json=payload, headers=headers, **kw)
        codes.add(response.json()["error"]["code"])

    bad_json = await client.post(
        "/", content=b"{", headers={**alice, "content-type": "application/json"}
    )
    codes.add(bad_json.json()["error"]["code"])
    await code_of([1])
    await code_of(rpc("Nope"))
    await code_of(rpc("GetTask", {}))
    await code_of(rpc("GetTask", {"id": "missing"}))
    done = (await call(client, "SendMessage", {"message": text_message("x")}, alice))["result"]
    done_id = done["task"]["id"]
    await code_of(rpc("CancelTask", {"id": done_id}))
    await code_of(rpc("DeleteTaskPushNotificationConfig", {"taskId": done_id, "id": "c"}))
    await code_of(rpc("SubscribeToTask", {"id": done_id}))
    await code_of(rpc("SendMessage", {"message": text_message("more", taskId=done_id)}))
    await code_of(rpc("GetExtendedAgentCard", {}))
    await code_of(rpc("GetTask", {"id": "x"}), headers={**alice, "A2A-Version": "0.3"})

    class Broken:
        async def get_task(self, request: Any, *, caller: Any) -> Any:
            raise ValueError("bug")

    from keycard_agents._server._dispatch import Dispatcher

    endpoint = jsonrpc_endpoint(client._transport.app)  # type: ignore[attr-defined]
    original = endpoint._dispatcher
    endpoint._dispatcher = Dispatcher(runtime=Broken())  # type: ignore[arg-type]
    try:
        await code_of(rpc("GetTask", {"id": "x"}))
    finally:
        endpoint._dispatcher = original
    assert codes == {
        -32700,
        -32600,
        -32601,
        -32602,
        -32603,
        -32001,
        -32002,
        -32003,
        -32004,
        -32007,
        -32009,
    }
