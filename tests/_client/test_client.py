"""The public A2A client: discovery caching, JSON-RPC calls, streams and error mapping.

Client logic runs against ``httpx.MockTransport``; the last tests call a real agent app
in process through the token service fixtures.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import anyio
import httpx
import pytest

from keycard_agents import (
    Agent,
    AgentClient,
    CardCache,
    ConfigurationError,
    Context,
    RemoteAuthenticationError,
    RemoteTaskError,
    TransportError,
    call_message,
    open_agent_client,
    skill,
    task_result,
)
from keycard_agents.a2a import (
    InternalError,
    InvalidAgentResponseError,
    InvalidParamsError,
    Message,
    Part,
    Role,
    Task,
    TaskNotFoundError,
    TaskState,
    TaskStatus,
    UnsupportedOperationError,
)
from keycard_agents.testing import LocalTokenService, open_local_agents

pytestmark = pytest.mark.anyio

URL = "http://agent.test"


def card(url: str = URL, name: str = "mock") -> dict[str, Any]:
    return {
        "name": name,
        "description": "a mock agent",
        "version": "1.0.0",
        "supportedInterfaces": [
            {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
        ],
        "capabilities": {"streaming": True},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [],
    }


def task_json(state: str = "TASK_STATE_COMPLETED", **extra: Any) -> dict[str, Any]:
    return {"id": "t1", "contextId": "c1", "status": {"state": state}, **extra}


class FakeAgent:
    """A MockTransport handler: the card, metadata and a scripted JSON-RPC endpoint."""

    def __init__(self, rpc: Callable[[dict[str, Any], httpx.Request], httpx.Response]) -> None:
        self.rpc = rpc
        self.requests: list[httpx.Request] = []
        self.card_headers = {"Cache-Control": "max-age=60", "ETag": '"v1"'}
        self.card = card()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/.well-known/agent-card.json":
            etag = self.card_headers.get("ETag")
            if etag is not None and request.headers.get("if-none-match") == etag:
                return httpx.Response(304, headers=self.card_headers)
            return httpx.Response(200, json=self.card, headers=self.card_headers)
        if request.method == "POST" and request.url.path in ("", "/"):
            return self.rpc(json.loads(request.content), request)
        return httpx.Response(404)

    def posts(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST"]


def result(body: dict[str, Any], value: Any) -> httpx.Response:
    return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": value})


def completed_with(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"task": task_json(artifacts=[{"artifactId": "a1", "parts": list(parts)}])}


def client_for(fake: FakeAgent, **options: Any) -> AgentClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    return AgentClient(URL, http_client=http, **options)


# ---------------------------------------------------------------------- calls


async def test_call_sends_typed_message_with_version_and_token() -> None:
    fake = FakeAgent(lambda body, _: result(body, completed_with({"data": {"ok": 1}})))
    async with client_for(fake, token="tok-1") as client:
        value = await client.call("plan", city="Paris", days=2)
    assert value == {"ok": 1}
    (post,) = fake.posts()
    body = json.loads(post.content)
    assert body["method"] == "SendMessage"
    assert body["params"]["message"]["role"] == "ROLE_USER"
    assert body["params"]["message"]["parts"] == [
        {"data": {"skill": "plan", "arguments": {"city": "Paris", "days": 2}}}
    ]
    assert post.headers["A2A-Version"] == "1.0"
    assert post.headers["Authorization"] == "Bearer tok-1"
    card_request = fake.requests[0]
    assert "authorization" not in card_request.headers  # discovery is public


async def test_token_provider_is_asked_for_every_call() -> None:
    issued: list[str] = []

    async def provider() -> str:
        issued.append(f"tok-{len(issued)}")
        return issued[-1]

    fake = FakeAgent(lambda body, _: result(body, completed_with({"text": "hi"})))
    async with client_for(fake, token_provider=provider) as client:
        assert await client.call("a") == "hi"
        assert await client.call("a") == "hi"
    assert [p.headers["Authorization"] for p in fake.posts()] == ["Bearer tok-0", "Bearer tok-1"]


async def test_send_options_and_task_operations() -> None:
    seen: list[dict[str, Any]] = []

    def rpc(body: dict[str, Any], _: httpx.Request) -> httpx.Response:
        seen.append(body)
        if body["method"] == "ListTasks":
            return result(body, {"tasks": [task_json()], "nextPageToken": "n", "pageSize": 1})
        if body["method"] == "SendMessage":
            return result(body, {"task": task_json("TASK_STATE_WORKING")})
        return result(body, task_json("TASK_STATE_CANCELED"))

    async with client_for(FakeAgent(rpc)) as client:
        task = await client.send(
            "hello", context_id="c9", return_immediately=True, history_length=0
        )
        got = await client.get_task("t1", history_length=2)
        canceled = await client.cancel_task("t1")
        page = await client.list_tasks(status=TaskState.COMPLETED, page_size=1)
    assert isinstance(task, Task)
    assert task.status.state is TaskState.WORKING
    assert got.status.state is TaskState.CANCELED
    assert canceled.id == "t1"
    assert page.next_page_token == "n"
    assert [b["method"] for b in seen] == ["SendMessage", "GetTask", "CancelTask", "ListTasks"]
    assert seen[0]["params"]["configuration"] == {"returnImmediately": True, "historyLength": 0}
    assert seen[0]["params"]["message"]["contextId"] == "c9"
    assert seen[0]["params"]["message"]["parts"] == [{"text": "hello"}]
    assert seen[1]["params"] == {"id": "t1", "historyLength": 2}
    assert seen[3]["params"] == {"status": "TASK_STATE_COMPLETED", "pageSize": 1}


async def test_protocol_errors_map_to_a2a_error_classes() -> None:
    def rpc(body: dict[str, Any], _: httpx.Request) -> httpx.Response:
        code = -32001 if body["method"] == "GetTask" else -32602
        error = {"code": code, "message": "nope", "data": [{"reason": "X"}]}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "error": error})

    async with client_for(FakeAgent(rpc)) as client:
        with pytest.raises(TaskNotFoundError, match="nope"):
            await client.get_task("t404")
        with pytest.raises(InvalidParamsError) as caught:
            await client.call("x")
    assert caught.value.data == [{"reason": "X"}]


async def test_refused_token_reports_the_challenge() -> None:
    challenge = (
        'Bearer error="invalid_token", error_description="the access token failed the '
        'audience check", resource_metadata="http://agent.test/.well-known/oauth-protected-resource"'
    )

    def rpc(body: dict[str, Any], _: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": challenge}, json={})

    async with client_for(FakeAgent(rpc), token="wrong") as client:
        with pytest.raises(RemoteAuthenticationError) as caught:
            await client.call("x")
    error = caught.value
    assert error.status_code == 401
    assert error.error == "invalid_token"
    assert error.error_description == "the access token failed the audience check"
    assert error.resource_metadata is not None
    assert "wrong" not in str(error)


async def test_transport_failures_become_transport_errors() -> None:
    def rpc(body: dict[str, Any], request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with client_for(FakeAgent(rpc)) as client:
        with pytest.raises(TransportError, match=r"SendMessage on http://agent\.test failed"):
            await client.call("x")

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with AgentClient(
        URL, http_client=httpx.AsyncClient(transport=httpx.MockTransport(down))
    ) as client:
        with pytest.raises(TransportError, match=r"agent-card\.json failed"):
            await client.card()


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(502, text="bad gateway"), TransportError),
        (httpx.Response(200, text="not json"), InvalidAgentResponseError),
        (httpx.Response(200, json={"jsonrpc": "2.0", "id": "x"}), InvalidAgentResponseError),
        (httpx.Response(200, json=["not", "an", "object"]), InvalidAgentResponseError),
        (httpx.Response(200, json={"jsonrpc": "2.0", "id": "x", "result": 3}), None),
    ],
)
async def test_malformed_answers(
    response: httpx.Response, expected: type[Exception] | None
) -> None:
    fake = FakeAgent(lambda body, _: response)
    async with client_for(fake) as client:
        with pytest.raises(expected or InvalidAgentResponseError):
            await client.send("hi")


async def test_interface_on_another_origin_gets_no_credentials() -> None:
    fake = FakeAgent(lambda body, _: result(body, completed_with({"text": "x"})))
    fake.card = card(url="http://elsewhere.test")
    async with client_for(fake, token="secret-token") as client:
        with pytest.raises(InvalidAgentResponseError, match="another origin"):
            await client.call("x")
    assert fake.posts() == []


async def test_card_without_jsonrpc_interface() -> None:
    fake = FakeAgent(lambda body, _: result(body, {}))
    fake.card["supportedInterfaces"][0]["protocolBinding"] = "GRPC"
    async with client_for(fake) as client:
        with pytest.raises(UnsupportedOperationError):
            await client.send("x")


def test_constructor_checks() -> None:
    with pytest.raises(ConfigurationError):
        AgentClient("not a url")
    with pytest.raises(ConfigurationError, match="at most one"):
        AgentClient(URL, token="a", auth=httpx.BasicAuth("u", "p"))
    with pytest.raises(ConfigurationError):
        AgentClient(URL, timeout=0)


# ---------------------------------------------------------------------- discovery


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_card_is_cached_for_max_age_then_revalidated_by_etag() -> None:
    clock = Clock()
    cache = CardCache(clock=clock)
    fake = FakeAgent(lambda body, _: result(body, {}))
    async with client_for(fake, card_cache=cache) as client:
        first = await client.card()
        clock.now += 30
        await client.card()
        assert cache.stats.fetches == 1
        assert cache.stats.hits == 1
        clock.now += 31
        again = await client.card()
    assert again == first
    assert cache.stats.fetches == 2
    assert cache.stats.revalidated == 1
    assert fake.requests[-1].headers["If-None-Match"] == '"v1"'


@pytest.mark.parametrize(
    ("cache_control", "fetches"),
    [("no-store", 3), ("no-cache", 3), ("max-age=60", 1), ("max-age=5", 3), ("", 3)],
)
async def test_cache_control_directives(cache_control: str, fetches: int) -> None:
    clock = Clock()
    cache = CardCache(clock=clock)
    fake = FakeAgent(lambda body, _: result(body, {}))
    fake.card_headers = {"Cache-Control": cache_control}
    async with client_for(fake, card_cache=cache) as client:
        for _ in range(3):
            await client.card()
            clock.now += 10
    assert cache.stats.fetches == fetches


async def test_age_header_shortens_freshness() -> None:
    clock = Clock()
    cache = CardCache(clock=clock)
    fake = FakeAgent(lambda body, _: result(body, {}))
    fake.card_headers = {"Cache-Control": "public, max-age=60", "Age": "55"}
    async with client_for(fake, card_cache=cache) as client:
        await client.card()
        clock.now += 10
        await client.card()
    assert cache.stats.fetches == 2


async def test_invalid_card_and_missing_card() -> None:
    fake = FakeAgent(lambda body, _: result(body, {}))
    fake.card = {"name": "x"}
    async with client_for(fake) as client:
        with pytest.raises(InvalidAgentResponseError, match=r"not a valid A2A 1\.0 card"):
            await client.card()
    empty = FakeAgent(lambda body, _: result(body, {}))
    async with AgentClient(
        URL + "/nowhere", http_client=httpx.AsyncClient(transport=httpx.MockTransport(empty))
    ) as client:
        with pytest.raises(InvalidAgentResponseError, match="HTTP 404"):
            await client.card()


def metadata_transport(documents: dict[str, Any]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        document = documents.get(str(request.url))
        if document is None:
            return httpx.Response(404)
        return httpx.Response(200, json=document)

    return httpx.MockTransport(handler)


async def test_resource_metadata_under_agent_url_and_rfc9728_location() -> None:
    mounted = "http://host.test/agents/a"
    documents = {
        # RFC 9728 §3.1 location: the well-known segment before the path.
        "http://host.test/.well-known/oauth-protected-resource/agents/a": {
            "resource": mounted,
            "authorization_servers": ["http://issuer.test"],
            "scopes_supported": ["x"],
        },
        URL + "/.well-known/oauth-protected-resource": {
            "resource": URL,
            "authorization_servers": [],
        },
    }
    http = httpx.AsyncClient(transport=metadata_transport(documents))
    async with AgentClient(mounted, http_client=http) as client:
        metadata = await client.resource_metadata()
    assert metadata.resource == mounted
    assert metadata.authorization_servers == ("http://issuer.test",)
    assert metadata.scopes_supported == ("x",)
    async with AgentClient(URL, http_client=http) as client:
        assert (await client.resource_metadata()).authorization_servers == ()


@pytest.mark.parametrize(
    "document",
    [
        {"resource": "http://other.test", "authorization_servers": []},
        {"resource": URL, "authorization_servers": "http://issuer.test"},
        ["not", "an", "object"],
    ],
)
async def test_resource_metadata_that_does_not_describe_the_agent_is_refused(
    document: Any,
) -> None:
    documents = {URL + "/.well-known/oauth-protected-resource": document}
    http = httpx.AsyncClient(transport=metadata_transport(documents))
    async with AgentClient(URL, http_client=http) as client:
        with pytest.raises(InvalidAgentResponseError):
            await client.resource_metadata()


# ---------------------------------------------------------------------- streams


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b": keep-alive\n\n" + f"data: {json.dumps(e)}\n\n".encode() for e in events)


async def test_stream_yields_each_event_then_raises_a_mid_stream_error() -> None:
    def rpc(body: dict[str, Any], _: httpx.Request) -> httpx.Response:
        events = [
            {
                "jsonrpc": "2.0",
                "id": body["id"],
                "result": {"task": task_json("TASK_STATE_WORKING")},
            },
            {
                "jsonrpc": "2.0",
                "id": body["id"],
                "result": {
                    "statusUpdate": {
                        "taskId": "t1",
                        "contextId": "c1",
                        "status": {"state": "TASK_STATE_COMPLETED"},
                    }
                },
            },
            {"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32603, "message": "boom"}},
        ]
        return httpx.Response(
            200, content=sse(*events), headers={"Content-Type": "text/event-stream"}
        )

    fake = FakeAgent(rpc)
    events = []

    async def consume(client: AgentClient) -> None:
        async with aclosing(client.stream_call("x", n=1)) as stream:
            async for event in stream:
                events.append(event)

    async with client_for(fake) as client:
        with pytest.raises(InternalError, match="boom"):
            await consume(client)
    assert events[0].task is not None
    assert events[1].status_update is not None
    assert fake.posts()[0].headers["Accept"] == "text/event-stream"
    assert json.loads(fake.posts()[0].content)["method"] == "SendStreamingMessage"


async def test_stream_refused_before_it_starts() -> None:
    def rpc(body: dict[str, Any], _: httpx.Request) -> httpx.Response:
        error = {"code": -32001, "message": "no such task"}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "error": error})

    async with client_for(FakeAgent(rpc)) as client:
        with pytest.raises(TaskNotFoundError):
            await anext(aiter(client.subscribe("t404")))


# ---------------------------------------------------------------------- results


def finished(state: TaskState, *parts: Part, text: str | None = None) -> Task:
    message = None
    if text is not None:
        message = Message(message_id="m", role=Role.AGENT, parts=[Part(text=text)])
    artifacts = [{"artifactId": "a", "parts": [p.model_dump() for p in parts]}] if parts else []
    return Task.model_validate(
        {
            "id": "t",
            "context_id": "c",
            "status": TaskStatus(state=state, message=message),
            "artifacts": artifacts,
        }
    )


def test_task_result_values() -> None:
    assert task_result(finished(TaskState.COMPLETED)) is None
    assert task_result(finished(TaskState.COMPLETED, Part(text="hi"))) == "hi"
    assert task_result(finished(TaskState.COMPLETED, Part(raw=b"\x00"))) == b"\x00"
    assert task_result(finished(TaskState.COMPLETED, Part(text="a"), Part(data=[1]))) == ["a", [1]]
    message = Message(message_id="m", role=Role.AGENT, parts=[Part(url="http://x.test/f")])
    assert task_result(message) == "http://x.test/f"
    with pytest.raises(RemoteTaskError) as caught:
        task_result(finished(TaskState.FAILED, text="it broke"))
    assert caught.value.state == "TASK_STATE_FAILED"
    assert caught.value.reason == "it broke"
    assert str(caught.value) == "task t ended failed: it broke"
    with pytest.raises(RemoteTaskError, match="ended input required"):
        task_result(finished(TaskState.INPUT_REQUIRED))
    with pytest.raises(InvalidAgentResponseError, match="still"):
        task_result(finished(TaskState.WORKING))


# ---------------------------------------------------------------------- a real agent


class Worker(Agent):
    name = "worker"

    @skill(scopes=["work"])
    async def echo(self, text: str) -> str:
        """Echo the text."""
        return f"echo: {text}"

    @skill(scopes=["work"])
    async def wait(self, ctx: Context) -> str:
        """Report progress, then wait until canceled."""
        await ctx.update("started")
        await anyio.sleep_forever()
        return "never"


async def test_against_a_real_agent_in_process() -> None:
    worker = Worker(url="http://127.0.0.1:9201")
    sts = LocalTokenService(agents=[worker])
    token = sts.mint_user_token("dana", audience=worker, scopes=["work"])
    async with open_local_agents(sts, [worker]) as net:
        async with open_agent_client(
            str(worker.url), token=token, http_client=net.http_client
        ) as client:
            assert await client.call("echo", text="hi") == "echo: hi"
            assert task_result(await client.send("plain text")) == "echo: plain text"
            events = [e async for e in client.stream(call_message("echo", {"text": "s"}))]
            running = await client.send(call_message("wait"), return_immediately=True)
            assert isinstance(running, Task)
            canceled = await client.cancel_task(running.id)
            listed = await client.list_tasks(page_size=10)
            metadata = await client.resource_metadata()
        async with net.client(worker, token="not-a-token") as bad:
            with pytest.raises(RemoteAuthenticationError) as refused:
                await bad.call("echo", text="x")
    assert events[0].task is not None
    assert events[-1].status_update is not None
    assert events[-1].status_update.status.state is TaskState.COMPLETED
    assert any(e.artifact_update is not None for e in events)
    assert canceled.status.state is TaskState.CANCELED
    assert len(listed.tasks) == 4
    assert metadata.authorization_servers == (sts.issuer,)
    assert refused.value.status_code == 401
    assert refused.value.error == "invalid_token"
