"""The HTTP+JSON binding: routes, query parameters, SSE, and google.rpc.Status errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from server_support import (
    A2A_HEADERS,
    AGENT_URL,
    ISSUER,
    EchoAgent,
    TokenMinter,
    bearer,
    call_message,
    text_message,
)
from starlette.applications import Starlette

from keycard_agents import create_app

pytestmark = pytest.mark.anyio

MINTER = TokenMinter()


@pytest.fixture
def alice() -> dict[str, str]:
    """Alice's bearer header, minted as the test starts (never at import: it would expire)."""
    return bearer(MINTER.token(sub="alice"))


@pytest.fixture
def bob() -> dict[str, str]:
    """Bob's bearer header, minted as the test starts."""
    return bearer(MINTER.token(sub="bob"))


def make_app(**options: Any) -> Starlette:
    agent = EchoAgent(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    # Push notifications off: these tests check the PushNotificationNotSupported answers
    # (test_server_push.py covers an agent that sends them).
    options.setdefault("push", False)
    return create_app(agent, verifier=MINTER.verifier(), **options)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    application = make_app(max_body_size=4096)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as c:
            yield c


def status_error(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == status
    info = error["details"][0]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == reason
    assert info["domain"] == "a2a-protocol.org"
    return error


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line]
        if not lines:
            continue
        name = "message"
        data = []
        for line in lines:
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        assert len(data) == 1
        events.append((name, json.loads(data[0])))
    return events


async def send(client: httpx.AsyncClient, body: dict[str, Any], headers: Any = None) -> Any:
    if headers is None:  # alice's, minted now
        headers = bearer(MINTER.token(sub="alice"))
    return await client.post("/message:send", json=body, headers=headers)


async def test_send_get_list(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    response = await send(client, {"message": text_message("rest")})
    assert response.status_code == 200
    task = response.json()["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    got = await client.get(f"/tasks/{task['id']}", params={"historyLength": 0}, headers=alice)
    assert got.status_code == 200
    assert got.json()["id"] == task["id"]
    assert got.json().get("history", []) == []
    listed = await client.get(
        "/tasks",
        params={"status": "TASK_STATE_COMPLETED", "pageSize": 5, "includeArtifacts": "true"},
        headers=alice,
    )
    assert listed.status_code == 200
    ids = [t["id"] for t in listed.json()["tasks"]]
    assert task["id"] in ids
    assert listed.json()["pageSize"] == 5


async def test_a2a_json_content_type(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    body = json.dumps({"message": text_message("typed")}).encode()
    headers = {**alice, "content-type": "application/a2a+json"}
    response = await client.post("/message:send", content=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/a2a+json")


async def test_stream_data_lines_are_stream_responses(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    response = await client.post(
        "/message:stream", json={"message": text_message("s")}, headers=alice
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[0][1].keys() == {"task"}
    for name, event in events:
        assert name == "message"
        assert len(event) == 1
        assert next(iter(event)) in {"task", "message", "statusUpdate", "artifactUpdate"}
    assert events[-1][1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_cancel_and_subscribe(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    body = {
        "message": call_message("wait", {"label": 3}),
        "configuration": {"returnImmediately": True},
    }
    task = (await send(client, body)).json()["task"]
    events: list[tuple[str, dict[str, Any]]] = []

    async def subscribe() -> None:
        response = await client.post(f"/tasks/{task['id']}:subscribe", headers=alice)
        events.extend(sse_events(response.text))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(subscribe)
            for _ in range(100):
                await anyio.lowlevel.checkpoint()
            canceled = await client.post(f"/tasks/{task['id']}:cancel", headers=alice)
    assert canceled.status_code == 200
    assert canceled.json()["status"]["state"] == "TASK_STATE_CANCELED"
    assert events[-1][1]["statusUpdate"]["status"]["state"] == "TASK_STATE_CANCELED"
    again = await client.post(
        f"/tasks/{task['id']}:cancel", json={"metadata": {"why": "twice"}}, headers=alice
    )
    status_error(again, 409, "TASK_NOT_CANCELABLE")
    gone = await client.post(f"/tasks/{task['id']}:subscribe", headers=alice)
    status_error(gone, 501, "UNSUPPORTED_OPERATION")


async def test_other_users_tasks_are_not_found(
    client: httpx.AsyncClient, bob: dict[str, str]
) -> None:
    task = (await send(client, {"message": text_message("mine")})).json()["task"]
    status_error(await client.get(f"/tasks/{task['id']}", headers=bob), 404, "TASK_NOT_FOUND")
    cancel = await client.post(f"/tasks/{task['id']}:cancel", headers=bob)
    status_error(cancel, 404, "TASK_NOT_FOUND")
    listed = await client.get("/tasks", headers=bob)
    assert task["id"] not in [t["id"] for t in listed.json().get("tasks", [])]


async def test_errors(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    bad_json = await client.post(
        "/message:send", content=b"{nope", headers={**alice, "content-type": "application/json"}
    )
    status_error(bad_json, 400, "PARSE_ERROR")
    not_object = await send(client, [1, 2])  # type: ignore[arg-type]
    status_error(not_object, 400, "INVALID_REQUEST")
    invalid = await send(client, {"message": {"role": "ROLE_ROBOT"}})
    error = status_error(invalid, 400, "INVALID_PARAMS")
    assert "message.role" in error["message"]
    assert error["details"][1]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    bad_query = await client.get("/tasks", params={"pageSize": "many"}, headers=alice)
    status_error(bad_query, 400, "INVALID_PARAMS")
    wrong_type = await client.post(
        "/message:send", content=b"{}", headers={**alice, "content-type": "text/plain"}
    )
    status_error(wrong_type, 415, "INVALID_REQUEST")
    too_big = await send(client, {"message": text_message("x" * 5000)})
    error = status_error(too_big, 413, "INVALID_REQUEST")
    assert "4096 bytes" in error["message"]
    no_version = await client.get("/tasks", headers={"Authorization": alice["Authorization"]})
    error = status_error(no_version, 400, "VERSION_NOT_SUPPORTED")
    assert "A2A-Version: 1.0" in error["message"]
    by_query = await client.get(
        "/tasks?A2A-Version=1.0", headers={"Authorization": alice["Authorization"]}
    )
    assert by_query.status_code == 200
    status_error(
        await client.get("/extendedAgentCard", headers=alice),
        400,
        ("EXTENDED_AGENT_CARD_NOT_CONFIGURED"),
    )
    for method, path in (
        ("POST", "/tasks/t/pushNotificationConfigs"),
        ("GET", "/tasks/t/pushNotificationConfigs"),
        ("GET", "/tasks/t/pushNotificationConfigs/c"),
        ("DELETE", "/tasks/t/pushNotificationConfigs/c"),
    ):
        response = await client.request(method, path, headers=alice)
        status_error(response, 400, "PUSH_NOTIFICATION_NOT_SUPPORTED")


async def test_stream_errors_before_first_event_are_plain_responses(
    client: httpx.AsyncClient,
    alice: dict[str, str],
) -> None:
    response = await client.post("/tasks/nope:subscribe", headers=alice)
    status_error(response, 404, "TASK_NOT_FOUND")
    assert response.headers["content-type"].startswith("application/json")


async def test_anonymous_skill(client: httpx.AsyncClient) -> None:
    response = await send(client, {"message": call_message("ping", {"count": 1})}, A2A_HEADERS)
    assert response.status_code == 200
    assert response.json()["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
