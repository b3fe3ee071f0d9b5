"""Event streams: framing, errors in the middle of a stream, client disconnects."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, MutableMapping
from typing import Any

import anyio
import pytest

from keycard_agents._server._jsonrpc import _frame as jsonrpc_frame
from keycard_agents._server._rest import _frame as rest_frame
from keycard_agents._server._sse import EventStreamResponse, format_event
from keycard_agents.a2a import TaskNotFoundError

pytestmark = pytest.mark.anyio


def test_format_event_is_one_data_line() -> None:
    chunk = format_event({"text": "two\nlines", "n": "ü"})
    assert chunk == 'data: {"text":"two\\nlines","n":"ü"}\n\n'.encode()
    assert format_event([1], event="error") == b"event: error\ndata: [1]\n\n"


async def events_then(error: Exception | None) -> AsyncGenerator[dict[str, Any], None]:
    yield {"task": {"id": "t"}}
    if error is not None:
        raise error


async def collect(chunks: AsyncGenerator[bytes, None]) -> list[bytes]:
    return [chunk async for chunk in chunks]


async def test_jsonrpc_stream_failure_becomes_final_error_response() -> None:
    chunks = await collect(jsonrpc_frame(7, events_then(KeyError("/private/state"))))
    assert len(chunks) == 2
    first = json.loads(chunks[0].decode()[len("data: ") :])
    assert first == {"jsonrpc": "2.0", "id": 7, "result": {"task": {"id": "t"}}}
    last = json.loads(chunks[1].decode()[len("data: ") :])
    assert last["id"] == 7
    assert last["error"]["code"] == -32603
    assert "private" not in chunks[1].decode()


async def test_jsonrpc_stream_protocol_error_keeps_its_code() -> None:
    chunks = await collect(jsonrpc_frame("s", events_then(TaskNotFoundError())))
    assert json.loads(chunks[1].decode()[len("data: ") :])["error"]["code"] == -32001


async def test_rest_stream_failure_is_an_error_event() -> None:
    chunks = await collect(rest_frame(events_then(RuntimeError("/private/state"))))
    assert chunks[0].startswith(b"data: ")
    assert chunks[1].startswith(b"event: error\ndata: ")
    body = json.loads(chunks[1].decode().split("data: ", 1)[1])
    assert body["error"]["code"] == 500
    assert body["error"]["status"] == "INTERNAL"
    assert "private" not in chunks[1].decode()


async def test_client_disconnect_closes_the_producer() -> None:
    closed = anyio.Event()
    produced = 0

    async def endless() -> AsyncGenerator[bytes, None]:
        nonlocal produced
        try:
            while True:
                produced += 1
                yield format_event({"n": produced})
                await anyio.sleep(0.01)
        finally:
            closed.set()

    sent: list[MutableMapping[str, Any]] = []
    disconnect = anyio.Event()

    async def receive() -> dict[str, Any]:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)
        if len(sent) == 3:  # start + two events: the client goes away
            disconnect.set()

    with anyio.fail_after(5):
        await EventStreamResponse(endless())({"type": "http"}, receive, send)
        await closed.wait()
    assert sent[0]["status"] == 200
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert headers[b"cache-control"] == b"no-store"
    assert all(m.get("more_body", False) for m in sent[1:])  # no clean end after disconnect


async def test_stream_end_sends_final_chunk() -> None:
    async def two() -> AsyncGenerator[bytes, None]:
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    with anyio.fail_after(5):
        await EventStreamResponse(two())({"type": "http"}, receive, send)
    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n", b"data: 2\n\n", b""]
    assert sent[-1]["more_body"] is False


async def test_disconnect_from_a_real_stream_leaves_the_task_running() -> None:
    import httpx
    from server_support import (
        AGENT_URL,
        ISSUER,
        EchoAgent,
        TokenMinter,
        bearer,
        call_message,
        rpc,
    )

    from keycard_agents import create_app

    minter = TokenMinter()
    app = create_app(
        EchoAgent(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token"),
        verifier=minter.verifier(),
    )
    headers = bearer(minter.token())
    body = json.dumps(
        rpc("SendStreamingMessage", {"message": call_message("wait", {"label": 5})})
    ).encode()
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
        "headers": [(b"content-type", b"application/json")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "server": ("agent.test", 80),
        "client": ("127.0.0.1", 5000),
    }
    sent: list[MutableMapping[str, Any]] = []
    gone = anyio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)
        if b"waiting 5" in message.get("body", b""):
            gone.set()  # the skill is running: the client leaves

    async with app.router.lifespan_context(app):
        with anyio.fail_after(5):
            await app(scope, receive, send)
        events = [json.loads(m["body"].decode()[len("data: ") :]) for m in sent[1:]]
        task_id = events[0]["result"]["task"]["id"]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            got = await client.post("/", json=rpc("GetTask", {"id": task_id}), headers=headers)
            assert got.json()["result"]["status"]["state"] == "TASK_STATE_WORKING"
            canceled = await client.post(
                "/", json=rpc("CancelTask", {"id": task_id}), headers=headers
            )
            assert canceled.json()["result"]["status"]["state"] == "TASK_STATE_CANCELED"
