"""Unit tests of the MCP pieces: RFC 9728 discovery (httpx MockTransport), bearer auth
with one re-exchange on 401 (httpx2 MockTransport), tool → skill conversion, filters and
renames, result → parts, argument checks, and the optional-import contract."""

from __future__ import annotations

import base64
import subprocess
import sys
from typing import Any

import httpx
import httpx2
import mcp_types
import pytest

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup, ExceptionGroup
else:  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

from keycard_agents import (
    AgentDependency,
    Caller,
    ConfigurationError,
    Context,
    InteractionRequiredError,
    TransportError,
    skill,
)
from keycard_agents._a2a.interrupt import TaskInterrupt
from keycard_agents._mcp._client import _DelegatedAuth, _leaf
from keycard_agents._mcp._results import result_from_mcp, tool_from_mcp
from keycard_agents._oauth._urls import protected_resource_metadata_url
from keycard_agents.a2a import InvalidParamsError, Message, Part, Role, TaskState
from keycard_agents.mcp import (
    McpAgent,
    McpConnector,
    McpServer,
    McpServerError,
    McpServerHandle,
    McpTool,
    McpToolError,
    McpToolResult,
    McpToolSkill,
    discover_resource,
    tool_skill,
)

URL = "https://tools.test/mcp"


# -- RFC 9728 discovery --------------------------------------------------------------


def _client(handler: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.anyio
async def test_discovery_reads_the_well_known_document() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == protected_resource_metadata_url(URL)
        return httpx.Response(
            200, json={"resource": URL, "authorization_servers": ["https://as.test"], "x": 1}
        )

    async with _client(handler) as http:
        found = await discover_resource(http, URL, server="tools")
    assert found.resource == URL
    assert found.authorization_servers == ("https://as.test",)


@pytest.mark.anyio
async def test_discovery_falls_back_to_the_challenge() -> None:
    other = "https://tools.test/meta/doc"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url == protected_resource_metadata_url(URL):
            return httpx.Response(404)
        if request.method == "POST":
            challenge = f'Bearer error="invalid_token", resource_metadata="{other}"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        assert request.url == other
        return httpx.Response(200, json={"resource": URL})

    async with _client(handler) as http:
        assert (await discover_resource(http, URL, server="tools")).resource == URL


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(200, json={"resource": "https://evil.test/mcp"}), "RFC 9728 §3.3"),
        (httpx.Response(200, content=b"<html>"), "not JSON"),
        (httpx.Response(200, json=["resource"]), "'resource' string"),
        (httpx.Response(404), "publishes no protected resource metadata"),
    ],
)
async def test_discovery_refuses_bad_metadata(response: httpx.Response, message: str) -> None:
    async with _client(lambda request: response) as http:
        with pytest.raises(McpServerError, match=message) as caught:
            await discover_resource(http, URL, server="tools")
    assert caught.value.server == "tools"


@pytest.mark.anyio
async def test_discovery_of_a_server_that_is_down() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with _client(handler) as http:
        with pytest.raises(McpServerError, match="unreachable"):
            await discover_resource(http, URL, server="tools")


# -- bearer auth with one fresh exchange -----------------------------------------------


class _Renewals:
    def __init__(self, tokens: list[str], error: Exception | None = None) -> None:
        self.tokens = tokens
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.tokens.pop(0)


async def _send(auth: _DelegatedAuth, accepted: set[str], status: int = 401) -> list[str]:
    seen: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        seen.append(token)
        return httpx2.Response(200 if token in accepted else status)

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler), auth=auth) as http:
        await http.post(URL, json={"jsonrpc": "2.0"})
    return seen


@pytest.mark.anyio
async def test_a_401_gets_one_fresh_token() -> None:
    renew = _Renewals(["fresh"])
    auth = _DelegatedAuth("stale", renew)
    assert await _send(auth, {"fresh"}) == ["stale", "fresh"]
    assert await _send(auth, {"fresh"}) == ["fresh"]  # the fresh token is kept
    assert renew.calls == 1
    assert auth.rejected_status is None


@pytest.mark.anyio
async def test_a_second_401_is_a_rejection_without_more_exchanges() -> None:
    renew = _Renewals(["fresh", "fresher"])
    auth = _DelegatedAuth("stale", renew)
    assert await _send(auth, set()) == ["stale", "fresh"]
    assert await _send(auth, set()) == ["fresh"]
    assert renew.calls == 1
    assert auth.rejected_status == 401


@pytest.mark.anyio
async def test_a_failed_re_exchange_is_remembered() -> None:
    denied = InteractionRequiredError("consent_required", "ask the user")
    auth = _DelegatedAuth("stale", _Renewals([], error=denied))
    assert await _send(auth, set()) == ["stale"]
    assert auth.renew_error is denied
    connector = McpConnector(exchange=_NoExchange())
    assert connector._timed_out(auth, "tools") is denied


@pytest.mark.anyio
async def test_a_403_is_a_rejection() -> None:
    auth = _DelegatedAuth("token", _Renewals([]))
    await _send(auth, set(), status=403)
    assert auth.rejected_status == 403


def test_leaf_prefers_our_errors_in_groups() -> None:
    ours = McpServerError("x", server="s")
    group = BaseExceptionGroup("g", [ValueError("v"), ExceptionGroup("h", [ours])])
    assert _leaf(group) is ours
    assert isinstance(_leaf(ExceptionGroup("g", [KeyError("k")])), KeyError)


# -- tools as skills -------------------------------------------------------------------


def _tool(**overrides: Any) -> McpTool:
    fields: dict[str, Any] = {
        "name": "search",
        "description": "Find notes.",
        "input_schema": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query"],
        },
    }
    fields.update(overrides)
    return McpTool(**fields)


def test_tool_from_mcp_reads_hints_only_when_true() -> None:
    tool = mcp_types.Tool(
        name="wipe",
        input_schema={"type": "object"},
        annotations=mcp_types.ToolAnnotations(
            title="Wipe all",
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=True,
            open_world_hint=None,
        ),
    )
    ours = tool_from_mcp(tool)
    assert ours.display_name == "Wipe all"
    made = tool_skill(McpServer("notes", url=URL), ours)
    assert made.tags == ("mcp", "notes", "destructive", "idempotent")
    assert made.output_modes == ("text/plain", "application/json")


def test_tool_skill_fields() -> None:
    server = McpServer("notes", url=URL, skill_scopes=["notes"], rename={"search": "find"})
    made = tool_skill(server, _tool(output_schema={"type": "object"}, open_world=True))
    assert made.id == "notes/find"
    assert made.tool_name == "search"
    assert made.name == "search"
    assert made.description == "Find notes."
    assert made.tags == ("mcp", "notes", "open-world")
    assert made.scopes == ("notes",)
    assert made.input_modes == ("application/json",)
    assert made.output_modes == ("application/json",)
    assert made.parameters == ("query", "limit")
    assert made.input_schema()["required"] == ["query"]
    assert made.output_schema() == {"type": "object"}
    made.input_schema()["required"].append("mutated")
    assert made.input_schema()["required"] == ["query"]  # a copy every time


def test_arguments_are_validated_against_the_tool_schema() -> None:
    made = tool_skill(McpServer("notes", url=URL), _tool())
    assert made.validate_arguments({"query": "q"}) == {"query": "q"}
    with pytest.raises(InvalidParamsError, match="query") as caught:
        made.validate_arguments({"limit": "ten"})
    fields = {e["field"] for e in caught.value.data["errors"]}
    assert fields == {"arguments", "limit"}
    with pytest.raises(InvalidParamsError, match="JSON object"):
        made.validate_arguments(["q"])
    broken = tool_skill(McpServer("notes", url=URL), _tool(input_schema={"type": 12}))
    assert broken.validate_arguments({"any": 1}) == {"any": 1}  # the server decides


def test_server_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="slug"):
        McpServer("no spaces", url=URL)
    with pytest.raises(ConfigurationError, match="list of strings"):
        McpServer("notes", url=URL, allow="search")
    with pytest.raises(ConfigurationError, match="valid tool name"):
        McpServer("notes", url=URL, rename={"a": "b/c"})
    with pytest.raises(ConfigurationError, match="same name"):
        McpServer("notes", url=URL, rename={"a": "x", "b": "x"})
    server = McpServer("notes", url=URL, allow=["read_*", "list"], deny=["read_secret"])
    assert [n for n in ("read_a", "read_secret", "list", "write") if server.exposes(n)] == [
        "read_a",
        "list",
    ]
    assert McpServer("notes", url=URL, resource="urn:x").to_params()["resource"] == "urn:x"
    assert hash(server) == hash(
        McpServer("notes", url=URL, allow=["read_*", "list"], deny=["read_secret"])
    )


class _Notes(McpAgent):
    dependencies = (
        McpServer("notes", url=URL, deny=["admin_*"]),
        AgentDependency("helper", url="https://helper.test"),
    )

    @skill
    async def search(self, text: str) -> str:
        """A hand-written skill whose id a tool must not take."""
        return text


def test_install_tools_filters_and_detects_clashes() -> None:
    agent = _Notes()
    server = agent.mcp_servers[0]
    added = agent.install_tools(server, [_tool(name="lookup"), _tool(name="admin_wipe")])
    assert [s.id for s in added] == ["notes/lookup"]
    assert list(agent.skills) == ["search", "notes/lookup"]
    agent.install_tools(server, [_tool(name="other")])  # a refresh replaces the set
    assert list(agent.skills) == ["search", "notes/other"]
    with pytest.raises(ConfigurationError, match="clashes"):
        agent.install_tools(server, [_tool(name="x"), _tool(name="x")])
    with pytest.raises(ConfigurationError, match="not one of this agent"):
        agent.install_tools(McpServer("elsewhere", url=URL), [])
    assert type(agent)().skills.keys() == {"search"}  # tools are per instance


# -- results ---------------------------------------------------------------------------


def test_results_become_parts() -> None:
    png = base64.b64encode(b"\x89PNG").decode()
    result = result_from_mcp(
        mcp_types.CallToolResult(
            content=[
                mcp_types.TextContent(type="text", text="hello"),
                mcp_types.ImageContent(type="image", data=png, mime_type="image/png"),
                mcp_types.ImageContent(type="image", data="%%%", mime_type="image/png"),
                mcp_types.ResourceLink(type="resource_link", uri="https://x.test/a", name="a"),
                mcp_types.EmbeddedResource(
                    type="resource",
                    resource=mcp_types.TextResourceContents(uri="file:///n", text="note"),
                ),
                mcp_types.EmbeddedResource(
                    type="resource",
                    resource=mcp_types.BlobResourceContents(uri="file:///b", blob=png),
                ),
            ]
        )
    )
    parts = result.to_parts()
    assert parts[0] == Part(text="hello")
    assert parts[1].raw == b"\x89PNG"
    assert parts[1].media_type == "image/png"
    assert parts[2].url == "https://x.test/a"
    assert parts[2].filename == "a"
    assert parts[3].text == "note"
    assert parts[4].media_type == "application/octet-stream"
    assert len(parts) == 5  # the undecodable image is dropped
    assert result.text == "hello"


def test_structured_content_replaces_its_text_echo() -> None:
    result = result_from_mcp(
        mcp_types.CallToolResult(
            content=[mcp_types.TextContent(type="text", text='{"total": 3}')],
            structured_content={"total": 3},
        )
    )
    assert result.to_parts() == [Part(data={"total": 3}, media_type="application/json")]
    long = McpToolResult(is_error=True, text="x" * 5000)
    assert len(long.detail) == 1000
    assert McpToolResult(is_error=True, text="  ").detail == "(the tool gave no message)"


# -- calling tool skills ----------------------------------------------------------------


class _Sink:
    async def status_update(self, message: Message) -> None:
        raise AssertionError("not used")

    async def add_artifact(self, parts: Any, **kwargs: Any) -> None:
        raise AssertionError("not used")

    async def append_artifact(self, artifact_id: str, parts: Any, **kwargs: Any) -> None:
        raise AssertionError("not used")


class _FakeHandle:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        self.calls.append((name, arguments))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class _Provider:
    def __init__(self, handle: _FakeHandle) -> None:
        self._handle = handle

    def handle(self, dependency: Any, *, caller: Caller, context: Context) -> Any:
        return self._handle


def _context(agent: McpAgent, handle: _FakeHandle) -> Context:
    return Context(
        caller=Caller(None, token="t"),
        task_id="task",
        context_id="ctx",
        skill_id="notes/lookup",
        message=Message(message_id="m", role=Role.USER, parts=[Part(text="x")]),
        sink=_Sink(),
        dependencies=agent.dependency_map,
        delegation=_Provider(handle),
    )


async def _call(outcome: Any) -> tuple[Any, _FakeHandle]:
    agent = _Notes()
    agent.install_tools(agent.mcp_servers[0], [_tool(name="lookup")])
    skill_ = agent.skills["notes/lookup"]
    assert isinstance(skill_, McpToolSkill)
    handle = _FakeHandle(outcome)
    return await agent.call_skill(skill_, _context(agent, handle), {"query": "q"}), handle


@pytest.mark.anyio
async def test_tool_skill_calls_the_tool() -> None:
    ok = McpToolResult(is_error=False, text="found")
    result, handle = await _call(ok)
    assert result is ok
    assert handle.calls == [("lookup", {"query": "q"})]


@pytest.mark.anyio
async def test_tool_error_raises_with_the_tool_message() -> None:
    with pytest.raises(McpToolError, match=r"notes/lookup.*disk full") as caught:
        await _call(McpToolResult(is_error=True, text="disk full"))
    assert caught.value.tool == "lookup"
    assert caught.value.detail == "disk full"


@pytest.mark.anyio
async def test_consent_needed_becomes_auth_required() -> None:
    with pytest.raises(TaskInterrupt) as caught:
        await _call(InteractionRequiredError("consent_required", "approve notes access"))
    assert caught.value.state == TaskState.AUTH_REQUIRED
    assert "approve notes access" in caught.value.text


@pytest.mark.anyio
async def test_a_foreign_provider_is_reported() -> None:
    with pytest.raises(ConfigurationError, match="McpConnector"):
        await _call("not a result")


@pytest.mark.anyio
async def test_hand_written_skills_still_run() -> None:
    agent = _Notes()
    ctx = _context(agent, _FakeHandle(None))
    assert await agent.call_skill(agent.skills["search"], ctx, {"text": "hi"}) == "hi"


class _NoExchange:
    issuer = "https://sts.test"

    async def exchange(self, subject_token: str, **kwargs: Any) -> Any:
        raise AssertionError("no exchange expected")


def test_connector_routes_dependencies() -> None:
    connector = McpConnector(exchange=_NoExchange())
    agent = _Notes()
    handle = connector.handle(agent.dependency_map["notes"], caller=Caller(None), context=None)
    assert isinstance(handle, McpServerHandle)
    assert "notes" in repr(handle)
    assert handle.name == "notes"
    with pytest.raises(ConfigurationError, match="fallback"):
        connector.handle(agent.dependency_map["helper"], caller=Caller(None), context=None)
    fallback = _Provider(_FakeHandle(None))
    routed = McpConnector(exchange=_NoExchange(), fallback=fallback)
    ctx = _context(agent, _FakeHandle(None))
    assert routed.handle(agent.dependency_map["helper"], caller=Caller(None), context=ctx) is (
        fallback._handle
    )
    with pytest.raises(ConfigurationError):
        McpConnector(exchange=_NoExchange(), timeout=0)
    with pytest.raises(ConfigurationError):
        McpConnector(exchange=_NoExchange(), mode="modern")
    assert isinstance(McpServerError("x", server="s"), TransportError)


def test_result_skill_falls_back_for_other_values() -> None:
    made = tool_skill(McpServer("notes", url=URL), _tool())
    assert made.result_parts("plain") == [Part(text="plain")]
    assert made.result_parts(None) == []


# -- the optional extra ------------------------------------------------------------------


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_core_import_does_not_import_mcp() -> None:
    done = _run(
        "import sys, keycard_agents; "
        "print(sorted(m for m in ('mcp', 'httpx2', 'keycard_agents.mcp') if m in sys.modules))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_missing_sdk_gives_a_clear_error() -> None:
    done = _run(
        "import sys; sys.modules['mcp'] = None\n"
        "from keycard_agents import ConfigurationError\n"
        "try:\n"
        "    import keycard_agents.mcp\n"
        "except ImportError as exc:\n"
        "    assert isinstance(exc, ConfigurationError), type(exc)\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "install keycard-agents[mcp]" in done.stdout
