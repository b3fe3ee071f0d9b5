"""The JSON-RPC hot path's shortcuts answer exactly what the long way does: results
encoded in one pass are the bytes of their data, and middleware added to the app still
sees every request (``_server/_app.py``, ``_server/_dispatch.py``)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pydantic_core
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
from starlette.datastructures import Headers
from starlette.requests import Request

from keycard_agents import create_app
from keycard_agents._a2a.types import GetTaskRequest, SendMessageRequest
from keycard_agents._server._dispatch import EncodedResult
from keycard_agents._server._jsonrpc import JsonRpcEndpoint
from keycard_agents._server._protocol import BodyTooLargeError, read_body

pytestmark = pytest.mark.anyio

MINTER = TokenMinter()


def _endpoint(app: Any) -> JsonRpcEndpoint:
    for route in app.routes:
        endpoint = getattr(getattr(route, "endpoint", None), "__self__", None)
        if isinstance(endpoint, JsonRpcEndpoint):
            return endpoint
    raise AssertionError("the app has no JSON-RPC endpoint")


@pytest.mark.parametrize("request_id", [7, "req-ü", None])
async def test_encoded_results_are_the_bytes_of_their_data(request_id: Any) -> None:
    agent = EchoAgent(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    app = create_app(agent, verifier=MINTER.verifier(), push=False)
    alice = bearer(MINTER.token())
    message = text_message("héllo ✓ \u2028 </script>", metadata={"n": [1, 2.5, -0.0, "ü"]})
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            reply = await client.post(
                "/", json=rpc("SendMessage", {"message": message}, id=request_id), headers=alice
            )
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "application/json"
        sent = json.loads(reply.content)
        assert sent["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        # The envelope the data path writes (compact, this member order) around the result.
        assert reply.content == pydantic_core.to_json(sent, inf_nan_mode="null")

        # The same task both ways through the dispatcher: identical bytes.
        endpoint = _endpoint(app)
        caller = await endpoint._auth.caller(Headers(headers=alice))
        assert caller.principal is not None
        dispatcher = endpoint._dispatcher
        get = GetTaskRequest(id=sent["result"]["task"]["id"])
        encoded = await dispatcher.unary("GetTask", get, caller=caller, encoded=True)
        data = await dispatcher.unary("GetTask", get, caller=caller)
        assert isinstance(encoded, EncodedResult)
        assert encoded.json == pydantic_core.to_json(data, inf_nan_mode="null")
        assert data == sent["result"]["task"]

        # A skill call with typed data: SendMessage's encoded result against its data.
        send = SendMessageRequest.model_validate({"message": call_message("ping", {"count": 3})})
        encoded_send = await dispatcher.unary("SendMessage", send, caller=caller, encoded=True)
        assert isinstance(encoded_send, EncodedResult)
        task = json.loads(encoded_send.json)["task"]
        again = await dispatcher.unary("GetTask", GetTaskRequest(id=task["id"]), caller=caller)
        assert encoded_send.json == pydantic_core.to_json({"task": again}, inf_nan_mode="null")


async def test_middleware_added_to_the_app_still_sees_jsonrpc_requests() -> None:
    seen: list[str] = []

    class Spy:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                seen.append(f"{scope['method']} {scope['path']}")
            await self.app(scope, receive, send)

    agent = EchoAgent(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    app = create_app(agent, verifier=MINTER.verifier(), push=False)
    app.add_middleware(Spy)
    alice = bearer(MINTER.token())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            params = {"message": text_message("hi")}
            for path in ("/", "/a2a/jsonrpc"):
                reply = await client.post(path, json=rpc("SendMessage", params), headers=alice)
                assert reply.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert seen == ["POST /", "POST /a2a/jsonrpc"]


def _request(messages: list[dict[str, Any]]) -> Request:
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return Request(scope, receive)


async def test_read_body_reads_the_asgi_messages_as_starlette_does() -> None:
    parts = [
        {"type": "http.request", "body": b'{"a": ', "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"1}", "more_body": False},
    ]
    request = _request(parts)
    assert await read_body(request, limit=100) == b'{"a": 1}'
    with pytest.raises(RuntimeError, match="consumed"):  # as after Request.stream()
        await request.body()
    # Cut off as soon as the limit is passed, the rest never read.
    with pytest.raises(BodyTooLargeError):
        await read_body(_request([*parts[:1], {"type": "never read"}]), limit=3)
    gone = _request([parts[0], {"type": "http.disconnect"}])
    assert await read_body(gone, limit=100) == b""
    assert await gone.is_disconnected()
    # Read before through the same Request: the cached body, as Request.stream() gives it.
    cached = _request(list(parts))
    assert await cached.body() == b'{"a": 1}'
    assert await read_body(cached, limit=100) == b'{"a": 1}'
    with pytest.raises(BodyTooLargeError):
        await read_body(cached, limit=3)
