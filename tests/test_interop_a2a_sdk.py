"""Interop with the official ``a2a-sdk`` 1.3.0 Python client, with a bearer token.

The client resolves our card, sends a message, streams a task, gets, lists and cancels
tasks over both bindings it speaks (JSON-RPC and HTTP+JSON), in process through
``httpx.ASGITransport`` (the SDK accepts our httpx client).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.transports.jsonrpc import JsonRpcTransport
from a2a.client.transports.rest import RestTransport
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.errors import (
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from google.protobuf import json_format
from server_support import AGENT_URL, ISSUER, EchoAgent, TokenMinter
from starlette.applications import Starlette

from keycard_agents import create_app

pytestmark = pytest.mark.anyio

MINTER = TokenMinter()
BINDINGS = ["JSONRPC", "HTTP+JSON"]


@pytest.fixture
async def app() -> AsyncIterator[Starlette]:
    agent = EchoAgent(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    application = create_app(agent, verifier=MINTER.verifier())
    async with application.router.lifespan_context(application):
        yield application


def http_client(app: Starlette, *, sub: str = "alice") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        headers={"Authorization": f"Bearer {MINTER.token(sub=sub)}"},
        timeout=10,
    )


def message(parts: list[dict[str, Any]]) -> Message:
    data = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": parts}
    parsed: Message = json_format.ParseDict(data, Message())
    return parsed


def texts(task: Any) -> list[str]:
    return [p.text for a in task.artifacts for p in a.parts if p.HasField("text")]


@pytest.mark.parametrize("binding", BINDINGS)
async def test_send_get_list_cancel(app: Starlette, binding: str) -> None:
    async with http_client(app) as http:
        config = ClientConfig(
            httpx_client=http, streaming=False, supported_protocol_bindings=[binding]
        )
        client = await ClientFactory(config).create_from_url(AGENT_URL)
        transport = client._transport  # type: ignore[attr-defined]
        expected = JsonRpcTransport if binding == "JSONRPC" else RestTransport
        assert isinstance(transport, expected)  # the 1.0 transport, not the 0.3 compat one
        assert http.headers["A2A-Version"] == "1.0"

        events = [
            e
            async for e in client.send_message(
                SendMessageRequest(message=message([{"text": "hello"}]))
            )
        ]
        assert len(events) == 1
        task = events[0].task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert texts(task) == ["echo: hello"]

        got = await client.get_task(GetTaskRequest(id=task.id))
        assert got.id == task.id
        listed = await client.list_tasks(ListTasksRequest())
        assert task.id in [t.id for t in listed.tasks]

        wait = SendMessageRequest(
            message=message([{"data": {"skill": "wait", "arguments": {"label": 1}}}])
        )
        wait.configuration.return_immediately = True
        sent = [e async for e in client.send_message(wait)]
        running = sent[0].task
        assert running.status.state in (
            TaskState.TASK_STATE_SUBMITTED,
            TaskState.TASK_STATE_WORKING,
        )
        canceled = await client.cancel_task(CancelTaskRequest(id=running.id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED

        with pytest.raises(TaskNotCancelableError):
            await client.cancel_task(CancelTaskRequest(id=running.id))
        with pytest.raises(TaskNotFoundError):
            await client.get_task(GetTaskRequest(id="no-such-task"))
        bad = SendMessageRequest(message=message([{"data": {"skill": "nope"}}]))
        with pytest.raises(InvalidParamsError):
            [e async for e in client.send_message(bad)]
        await client.close()


@pytest.mark.parametrize("binding", BINDINGS)
async def test_stream_and_subscribe(app: Starlette, binding: str, anyio_backend: str) -> None:
    async with http_client(app) as http:
        config = ClientConfig(
            httpx_client=http, streaming=True, supported_protocol_bindings=[binding]
        )
        client = await ClientFactory(config).create_from_url(AGENT_URL)
        request = SendMessageRequest(message=message([{"text": "streamed"}]))
        events = [e async for e in client.send_message(request)]
        assert events[0].HasField("task")
        kinds = [e.WhichOneof("payload") for e in events]
        assert "artifact_update" in kinds
        last = events[-1]
        assert last.HasField("status_update")
        assert last.status_update.status.state == TaskState.TASK_STATE_COMPLETED
        artifact = next(e.artifact_update for e in events if e.HasField("artifact_update"))
        assert [p.text for p in artifact.artifact.parts] == ["echo: streamed"]
        if binding == "HTTP+JSON" or anyio_backend == "asyncio":
            # (On trio the SDK's JSON-RPC transport leaves its inner SSE generator
            # unclosed when an error answers a stream request: an SDK issue, not ours.)
            with pytest.raises(UnsupportedOperationError, match="COMPLETED"):
                [e async for e in client.subscribe(SubscribeToTaskRequest(id=events[0].task.id))]
        await client.close()


async def test_other_user_cannot_get_task(app: Starlette) -> None:
    async with http_client(app, sub="alice") as alice_http, http_client(app, sub="bob") as bob_http:
        alice = await ClientFactory(
            ClientConfig(httpx_client=alice_http, streaming=False)
        ).create_from_url(AGENT_URL)
        bob = await ClientFactory(
            ClientConfig(httpx_client=bob_http, streaming=False)
        ).create_from_url(AGENT_URL)
        request = SendMessageRequest(message=message([{"text": "private"}]))
        sent = [e async for e in alice.send_message(request)]
        task = sent[0].task
        with pytest.raises(TaskNotFoundError):
            await bob.get_task(GetTaskRequest(id=task.id))
