"""MCP tools as skills, end to end: a user calls agent A over A2A; A's card lists the
tools of a real MCP server (``mcp`` SDK, protected by our verifier with
``validate_token_resource``); calling a tool skill reaches the server with a token
exchanged for it (``sub`` the user, ``act`` naming A, scopes narrowed), never the user's.
Also the failure modes: down, slow, malformed, token rejected."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from mcp_support import (
    AGENT_A,
    SECRET_A,
    NotesServer,
    ServerThread,
    claims_of,
    free_port,
    make_sts,
    notes_server,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keycard_agents import ClientSecret, Context, create_app, skill
from keycard_agents.a2a import TaskState
from keycard_agents.auth import TokenExchangeClient, TokenVerifier, TrustedIssuer
from keycard_agents.delegation import TokenExchangeDelegation
from keycard_agents.mcp import (
    McpAgent,
    McpConnector,
    McpServer,
    McpServerError,
    McpTokenRejectedError,
    McpToolResult,
    connector_for,
)
from keycard_agents.runtime import TaskRuntime
from keycard_agents.sts import TokenService

pytestmark = pytest.mark.anyio


def _malformed_app(resource: str, issuer: str) -> Starlette:
    """Serves valid RFC 9728 metadata, then JSON-RPC results of the wrong shape."""

    async def metadata(request: Request) -> Response:
        return JSONResponse({"resource": resource, "authorization_servers": [issuer]})

    async def mcp(request: Request) -> Response:
        body = await request.json()
        if "id" not in body:
            return Response(status_code=202)
        return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "result": {"tools": 42}})

    return Starlette(
        routes=[
            Route("/.well-known/oauth-protected-resource/mcp", metadata),
            Route("/mcp", mcp, methods=["POST", "GET", "DELETE"]),
        ]
    )


@dataclass
class World:
    sts: TokenService
    issuer: str
    notes: NotesServer
    rejecting: NotesServer
    down_url: str
    malformed_url: str


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    sts_port, notes_port, reject_port, down_port, bad_port = (free_port() for _ in range(5))
    issuer = f"http://127.0.0.1:{sts_port}"
    notes_url = f"http://127.0.0.1:{notes_port}/mcp"
    reject_url = f"http://127.0.0.1:{reject_port}/mcp"
    down_url = f"http://127.0.0.1:{down_port}/mcp"
    bad_url = f"http://127.0.0.1:{bad_port}/mcp"
    sts = make_sts(issuer, resources=[notes_url, reject_url, down_url, bad_url])
    notes = notes_server(resource=notes_url, issuer=issuer)
    rejecting = notes_server(resource=reject_url, issuer=issuer, reject_all=True)
    with ExitStack() as stack:
        stack.enter_context(ServerThread(sts.app, port=sts_port))
        stack.enter_context(ServerThread(notes.server.streamable_http_app(), port=notes_port))
        stack.enter_context(ServerThread(rejecting.server.streamable_http_app(), port=reject_port))
        stack.enter_context(ServerThread(_malformed_app(bad_url, issuer), port=bad_port))
        yield World(sts, issuer, notes, rejecting, down_url, bad_url)


def assistant_class(world: World) -> type[McpAgent]:
    class Assistant(McpAgent):
        """Answers with the help of a notes MCP server."""

        name = "assistant"
        dependencies = (
            McpServer(
                "notes",
                url=world.notes.resource,
                scopes=["notes:read"],
                deny=["internal_*"],
                rename={"echo": "say"},
            ),
            McpServer(
                "rejecting",
                url=world.rejecting.resource,
                scopes=["notes:read"],
                expose_tools=False,
            ),
            McpServer("down", url=world.down_url, resource=world.down_url, expose_tools=False),
            McpServer("broken", url=world.malformed_url, expose_tools=False),
        )

        @skill
        async def digest(self, ctx: Context, text: str) -> str:
            """Uses the notes server from a hand-written skill."""
            notes = ctx.dependency("notes")
            tools = await notes.list_tools()
            async with notes.session() as session:
                first = await session.call_tool("echo", {"text": text})
                second = await session.call_tool("add", {"a": 1, "b": 2})
            return f"{len(tools)} tools; {first.text}; total={second.structured['total']}"

        @skill
        async def probe(self, ctx: Context, server: str) -> str:
            """Calls a tool on a named server (to exercise failures)."""
            result: McpToolResult = await ctx.dependency(server).call_tool("echo", {"text": "x"})
            return result.text

    return Assistant


@asynccontextmanager
async def open_assistant(
    world: World, *, step_limit: float = 10.0, default_provider: bool = False
) -> AsyncIterator[Any]:
    exchange = TokenExchangeClient(
        issuer=world.issuer, credential=ClientSecret("agent-a", SECRET_A), retries=0
    )
    delegation: Any
    if default_provider:  # the core's provider, with the MCP handle factory registered
        delegation = TokenExchangeDelegation(exchange=exchange)
        connector = connector_for(delegation)
    else:
        connector = McpConnector(exchange=exchange, timeout=step_limit)
        delegation = connector
    agent = assistant_class(world)(
        url=AGENT_A, issuer=world.issuer, token_endpoint=f"{world.issuer}/token"
    )
    operator = world.sts.issue_user_token(
        "operator", audience=AGENT_A, scopes=["notes:read", "chat"]
    )
    await agent.load_mcp_tools(connector, subject_token=operator)
    verifier = TokenVerifier(
        issuers=[TrustedIssuer(world.issuer, jwks_uri=f"{world.issuer}/jwks.json")]
    )
    app = create_app(agent, verifier=verifier, runtime=TaskRuntime(agent, delegation=delegation))
    async with exchange, connector, app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url=AGENT_A) as client:
                yield client, agent, connector
        finally:
            await verifier.aclose()
            if default_provider:
                await delegation.aclose()


def _caller(token: str) -> Any:
    from keycard_agents import Caller

    return Caller(principal=None, token=token)


async def send(client: httpx.AsyncClient, token: str, skill_id: str, args: Any) -> dict[str, Any]:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {
            "message": {
                "messageId": str(uuid.uuid4()),
                "role": "ROLE_USER",
                "parts": [{"data": {"skill": skill_id, "arguments": args}}],
            }
        },
    }
    headers = {"Authorization": f"Bearer {token}", "A2A-Version": "1.0"}
    response = await client.post("/", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert "result" in payload, payload
    return dict(payload["result"]["task"])


def status_text(task: dict[str, Any]) -> str:
    message = task["status"].get("message") or {"parts": []}
    return " ".join(p.get("text", "") for p in message["parts"])


def user_token(
    world: World, scopes: tuple[str, ...] = ("notes:read", "notes:write", "chat")
) -> str:
    return world.sts.issue_user_token("alice", audience=AGENT_A, scopes=scopes)


async def test_card_lists_the_tools_as_skills(world: World) -> None:
    async with open_assistant(world) as (client, _, _):
        card = (await client.get("/.well-known/agent-card.json")).json()
    skills = {s["id"]: s for s in card["skills"]}
    assert set(skills) == {
        "digest",
        "probe",
        "notes/say",
        "notes/add",
        "notes/locked",
        "notes/whoami",
        "notes/slow",
    }
    assert skills["notes/say"]["tags"] == ["mcp", "notes", "read-only"]
    assert skills["notes/add"]["tags"] == ["mcp", "notes"]
    assert skills["notes/add"]["name"] == "Add numbers"
    assert skills["notes/say"]["name"] == "echo"
    assert skills["notes/say"]["description"] == "Repeat the text."
    assert skills["notes/add"]["inputModes"] == ["application/json"]
    params = card["capabilities"]["extensions"][0]["params"]["skills"]
    assert params["notes/add"]["inputSchema"]["required"] == ["a", "b"]
    assert params["notes/add"]["outputSchema"]["properties"]["total"]["type"] == "integer"
    assert params["notes/say"]["outputSchema"] == {}


async def test_tool_skill_is_called_with_a_delegated_token(world: World) -> None:
    token = user_token(world)
    seen_before = len(world.notes.tokens)
    async with open_assistant(world) as (client, _, _):
        task = await send(client, token, "notes/whoami", {})
        added = await send(client, token, "notes/add", {"a": 2, "b": 3})
        said = await send(client, token, "notes/say", {"text": "hi"})
    assert task["status"]["state"] == "TASK_STATE_COMPLETED", status_text(task)
    claims = world.notes.claims[-1]
    assert claims["sub"] == "alice"
    assert claims["act"]["sub"] == "agent-a"
    assert "act" not in claims["act"]
    assert claims["aud"] == world.notes.resource
    assert claims["scope"] == "notes:read"  # narrowed from the user's three scopes
    assert claims["client_id"] == "agent-a"
    assert claims["txn"] == claims_of(token)["txn"]
    assert token not in world.notes.tokens  # the user's token never left agent A
    assert all(
        claims_of(t)["aud"] == world.notes.resource for t in world.notes.tokens[seen_before:]
    )
    assert added["artifacts"][0]["parts"] == [
        {"data": {"total": 5}, "mediaType": "application/json"}
    ]
    assert said["artifacts"][0]["parts"] == [{"text": "echo: hi"}]


async def test_tool_error_fails_the_task_with_its_message(world: World) -> None:
    async with open_assistant(world) as (client, _, _):
        task = await send(client, user_token(world), "notes/locked", {})
    assert task["status"]["state"] == "TASK_STATE_FAILED"
    assert "the notebook is locked" in status_text(task)
    assert "notes/locked" in status_text(task)


async def test_tool_arguments_are_checked_against_the_tool_schema(world: World) -> None:
    body_args = {"a": "two", "b": 3}
    async with open_assistant(world) as (client, _, _):
        headers = {"Authorization": f"Bearer {user_token(world)}", "A2A-Version": "1.0"}
        body = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "SendMessage",
            "params": {
                "message": {
                    "messageId": "m1",
                    "role": "ROLE_USER",
                    "parts": [{"data": {"skill": "notes/add", "arguments": body_args}}],
                }
            },
        }
        payload = (await client.post("/", json=body, headers=headers)).json()
    assert payload["error"]["code"] == -32602
    assert "a:" in payload["error"]["message"]


async def test_hand_written_skill_uses_ctx_dependency(world: World) -> None:
    async with open_assistant(world) as (client, _, _):
        task = await send(client, user_token(world), "digest", {"text": "yo"})
    assert task["status"]["state"] == "TASK_STATE_COMPLETED", status_text(task)
    assert task["artifacts"][0]["parts"][0]["text"] == "6 tools; echo: yo; total=3"


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("down", "unreachable"),
        ("broken", "malformed"),
        ("rejecting", "rejected the delegated token"),
    ],
)
async def test_bad_servers_fail_the_task_clearly(world: World, server: str, expected: str) -> None:
    async with open_assistant(world) as (client, _, _):
        with_fail = await send(client, user_token(world), "probe", {"server": server})
    assert with_fail["status"]["state"] == "TASK_STATE_FAILED"
    assert expected in status_text(with_fail)
    assert server in status_text(with_fail)


async def test_slow_tool_times_out(world: World) -> None:
    async with open_assistant(world, step_limit=1.0) as (client, _, _):
        task = await send(client, user_token(world), "notes/slow", {})
    assert task["status"]["state"] == "TASK_STATE_FAILED"
    assert "did not answer within 1 s" in status_text(task)


async def test_rejected_token_is_retried_once_with_a_fresh_exchange(world: World) -> None:
    exchange = TokenExchangeClient(
        issuer=world.issuer, credential=ClientSecret("agent-a", SECRET_A), retries=0
    )
    async with exchange, McpConnector(exchange=exchange, timeout=10) as connector:
        server = McpServer("rejecting", url=world.rejecting.resource, scopes=["notes:read"])
        before = len(world.rejecting.tokens)
        with pytest.raises(McpTokenRejectedError) as caught:
            await connector.list_tools(server, _caller(user_token(world)))
        sent = world.rejecting.tokens[before:]
    assert caught.value.status_code == 401
    assert len(set(sent)) == 2  # the first token, then one freshly exchanged
    assert exchange.stats.exchanges == 2


async def test_tool_catalog_is_cached_until_refreshed(world: World) -> None:
    now = [0.0]
    exchange = TokenExchangeClient(
        issuer=world.issuer, credential=ClientSecret("agent-a", SECRET_A), retries=0
    )
    async with (
        exchange,
        McpConnector(exchange=exchange, tools_ttl=60, clock=lambda: now[0]) as connector,
    ):
        server = McpServer("notes", url=world.notes.resource, scopes=["notes:read"])
        caller = _caller(user_token(world))
        first = await connector.list_tools(server, caller)
        seen = len(world.notes.tokens)
        again = await connector.list_tools(server, caller)
        assert len(world.notes.tokens) == seen  # served from the cache
        now[0] = 61.0
        await connector.list_tools(server, caller)
        assert len(world.notes.tokens) > seen
        seen = len(world.notes.tokens)
        await connector.list_tools(server, caller, refresh=True)
        assert len(world.notes.tokens) > seen
    assert [t.name for t in first] == [t.name for t in again]
    assert "internal_admin" in {t.name for t in first}  # filters apply to skills only


async def test_anonymous_caller_cannot_reach_an_mcp_server(world: World) -> None:
    from keycard_agents import AuthenticationError, Caller

    exchange = TokenExchangeClient(
        issuer=world.issuer, credential=ClientSecret("agent-a", SECRET_A), retries=0
    )
    async with exchange, McpConnector(exchange=exchange) as connector:
        server = McpServer("notes", url=world.notes.resource)
        with pytest.raises(AuthenticationError, match="anonymous"):
            await connector.list_tools(server, Caller(None))
        with pytest.raises(McpServerError, match="unreachable"):
            await connector.resource(McpServer("gone", url=world.down_url))


async def test_the_default_delegation_provider_serves_mcp_dependencies(world: World) -> None:
    token = user_token(world)
    async with open_assistant(world, default_provider=True) as (client, agent, _):
        digest = await send(client, token, "digest", {"text": "hey"})
        whoami = await send(client, token, "notes/whoami", {})
    assert "notes/whoami" in agent.skills
    assert digest["status"]["state"] == "TASK_STATE_COMPLETED", status_text(digest)
    assert digest["artifacts"][0]["parts"][0]["text"] == "6 tools; echo: hey; total=3"
    assert whoami["status"]["state"] == "TASK_STATE_COMPLETED", status_text(whoami)
    assert world.notes.claims[-1]["act"]["sub"] == "agent-a"


async def test_errors_inside_a_session_block_come_out_unwrapped(world: World) -> None:
    from keycard_agents._a2a.interrupt import TaskInterrupt

    exchange = TokenExchangeClient(
        issuer=world.issuer, credential=ClientSecret("agent-a", SECRET_A), retries=0
    )
    # 3 s per call is ample for the echo tool on a loaded machine; the session block lives
    # longer than that, so only a per-call deadline can explain its success
    async with exchange, McpConnector(exchange=exchange, timeout=3.0) as connector:
        handle = connector.for_caller(
            McpServer("notes", url=world.notes.resource), _caller(user_token(world))
        )
        with pytest.raises(LookupError, match="mine"):
            async with handle.session():
                raise LookupError("mine")
        with pytest.raises(TaskInterrupt):
            async with handle.session():
                raise TaskInterrupt(TaskState.INPUT_REQUIRED, "which notebook?")
        async with handle.session() as session:
            await anyio.sleep(3.2)  # the skill's own work between calls is not timed
            result = await session.call_tool("echo", {"text": "still here"})
        assert result.text == "echo: still here"
        with pytest.raises(McpServerError, match=r"did not answer within 3 s"):
            async with handle.session() as session:
                await session.call_tool("slow", {})
