"""Agents served as MCP servers, exercised with the ``mcp`` SDK client: list tools, call
one, and see the delegation chain in a downstream agent (itself served over MCP).
Also inbound authentication (RFC 6750 challenge, RFC 9728 metadata) and stdio identity."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import mcp_types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_support import SECRET_A, ServerThread, free_port, make_sts
from starlette.applications import Starlette
from starlette.routing import Mount

from keycard_agents import (
    Agent,
    ClientSecret,
    ConfigurationError,
    Context,
    InvalidTokenError,
    skill,
)
from keycard_agents.a2a import Part
from keycard_agents.auth import TokenExchangeClient, TokenVerifier, TrustedIssuer
from keycard_agents.mcp import McpAgent, McpConnector, McpServer, create_mcp_server, mcp_app
from keycard_agents.runtime import MemoryTaskStore, TaskRecord, TaskRuntime
from keycard_agents.sts import TokenService

pytestmark = pytest.mark.anyio


class Backend(Agent):
    """Reports who is calling."""

    name = "backend"

    @skill(scopes=["chat"])
    async def whoami(self, ctx: Context) -> dict[str, Any]:
        """The verified caller, as the skill sees it."""
        assert ctx.principal is not None
        return {
            "user": ctx.user,
            "actors": list(ctx.actors.subjects()),
            "chain": ctx.principal.render_chain(receiver="agent-b"),
            "scopes": sorted(ctx.scopes),
        }


def front_class(backend_url: str) -> type[McpAgent]:
    class Front(McpAgent):
        """Greets, and relays to the backend agent."""

        name = "front"
        dependencies = (McpServer("backend", url=backend_url, scopes=["chat"], expose_tools=False),)

        @skill(scopes=["chat"])
        async def greet(self, name: str, times: int = 1) -> str:
            """Say hello."""
            return " ".join([f"hello {name}"] * times)

        @skill(scopes=["chat"])
        async def relay(self, ctx: Context) -> str:
            """Ask the backend who is calling."""
            result = await ctx.dependency("backend").call_tool("whoami", {})
            assert not result.is_error, result.text
            return str(result.structured["chain"])

        @skill(scopes=["admin"])
        async def wipe(self) -> str:
            """Needs a scope users do not have."""
            return "wiped"

        @skill(anonymous=True)
        async def ping(self) -> str:
            """Anyone may ping."""
            return "pong"

    return Front


@dataclass
class Deployment:
    sts: TokenService
    issuer: str
    front_url: str
    backend_url: str
    front: Agent


def _verifier(issuer: str) -> TokenVerifier:
    return TokenVerifier(issuers=[TrustedIssuer(issuer, jwks_uri=f"{issuer}/jwks.json")])


def _with_cleanup(inner: Starlette, *closers: Any) -> Starlette:
    """Run ``inner``'s lifespan, then close what the test opened on the server's loop."""

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            async with inner.router.lifespan_context(inner):
                yield
        finally:
            for close in closers:
                await close()

    return Starlette(routes=[Mount("/", app=inner)], lifespan=lifespan)


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    sts_port, front_port, back_port = free_port(), free_port(), free_port()
    issuer = f"http://127.0.0.1:{sts_port}"
    front_url = f"http://127.0.0.1:{front_port}/mcp"
    backend_url = f"http://127.0.0.1:{back_port}/mcp"
    sts = make_sts(issuer, resources=[], agent_b=backend_url, a_resource=front_url)
    backend_verifier = _verifier(issuer)
    backend_app = mcp_app(
        create_mcp_server(
            Backend(url=backend_url, issuer=issuer, token_endpoint=f"{issuer}/token"),
            verifier=backend_verifier,
        )
    )
    front_verifier = _verifier(issuer)
    exchange = TokenExchangeClient(issuer=issuer, credential=ClientSecret("agent-a", SECRET_A))
    connector = McpConnector(exchange=exchange, timeout=10)
    front = front_class(backend_url)(url=front_url, issuer=issuer, token_endpoint=f"{issuer}/token")
    front_app = mcp_app(create_mcp_server(front, verifier=front_verifier, delegation=connector))
    with ExitStack() as stack:
        stack.enter_context(ServerThread(sts.app, port=sts_port))
        stack.enter_context(
            ServerThread(_with_cleanup(backend_app, backend_verifier.aclose), port=back_port)
        )
        stack.enter_context(
            ServerThread(
                _with_cleanup(front_app, front_verifier.aclose, connector.aclose, exchange.aclose),
                port=front_port,
            )
        )
        yield Deployment(sts, issuer, front_url, backend_url, front)


@asynccontextmanager
async def mcp_client(url: str, token: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=20) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


def alice(d: Deployment, *, audience: str | None = None) -> str:
    return d.sts.issue_user_token(
        "alice", audience=audience or d.front_url, scopes=["chat", "notes:read"]
    )


async def test_tools_are_the_agents_skills(deployment: Deployment) -> None:
    async with mcp_client(deployment.front_url, alice(deployment)) as client:
        listed = await client.list_tools()
    tools = {t.name: t for t in listed.tools}
    assert set(tools) == {"greet", "relay", "wipe", "ping"}
    greet = tools["greet"]
    assert greet.description == "Say hello."
    assert greet.input_schema["required"] == ["name"]
    assert greet.input_schema["properties"]["times"]["default"] == 1
    assert greet.output_schema is None


async def test_call_a_skill_as_a_tool(deployment: Deployment) -> None:
    async with mcp_client(deployment.front_url, alice(deployment)) as client:
        result = await client.call_tool("greet", {"name": "bob", "times": 2})
        invalid = await client.call_tool("greet", {"times": 2})
        denied = await client.call_tool("wipe", {})
    assert not result.is_error
    assert result.content[0].text == "hello bob hello bob"  # type: ignore[union-attr]
    assert invalid.is_error
    assert "name" in invalid.content[0].text  # type: ignore[union-attr]
    assert denied.is_error
    assert "admin" in denied.content[0].text  # type: ignore[union-attr]


async def test_chain_reaches_the_downstream_agent(deployment: Deployment) -> None:
    token = alice(deployment)
    async with mcp_client(deployment.front_url, token) as client:
        result = await client.call_tool("relay", {})
    assert not result.is_error, result.content
    assert result.content[0].text == "alice → agent-a → agent-b"  # type: ignore[union-attr]


async def test_downstream_skill_gets_structured_content(deployment: Deployment) -> None:
    token = deployment.sts.issue_user_token(
        "carol", audience=deployment.backend_url, scopes=["chat"]
    )
    async with mcp_client(deployment.backend_url, token) as client:
        listed = await client.list_tools()
        result = await client.call_tool("whoami", {})
    assert listed.tools[0].output_schema is not None
    assert result.structured_content == {
        "user": "carol",
        "actors": [],
        "chain": "carol → agent-b",
        "scopes": ["chat"],
    }


async def test_unauthenticated_requests_get_a_challenge(deployment: Deployment) -> None:
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(
            deployment.front_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        wrong = await http.post(
            deployment.front_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={
                "Accept": "application/json, text/event-stream",
                "Authorization": f"Bearer {alice(deployment, audience=deployment.backend_url)}",
            },
        )
        base, _, path = deployment.front_url.rpartition("/")
        metadata = await http.get(f"{base}/.well-known/oauth-protected-resource/{path}")
    assert response.status_code == 401
    assert "resource_metadata=" in response.headers["www-authenticate"]
    assert wrong.status_code == 401  # a token for another resource is refused
    assert metadata.json()["resource"] == deployment.front_url
    assert metadata.json()["authorization_servers"] == [deployment.issuer]


async def test_stdio_identity_comes_from_a_configured_token(deployment: Deployment) -> None:
    verifier = _verifier(deployment.issuer)
    token = alice(deployment)
    # The front agent declares dependencies but has no credential: the default delegation
    # would stop it at start-up (as create_app does), so it is given one.
    exchange = TokenExchangeClient(
        issuer=deployment.issuer, credential=ClientSecret("agent-a", SECRET_A)
    )
    connector = McpConnector(exchange=exchange, timeout=10)
    with_identity = create_mcp_server(
        deployment.front,
        authenticate=False,
        stdio_token=token,
        verifier=verifier,
        delegation=connector,
    )
    without = create_mcp_server(deployment.front, authenticate=False, delegation=connector)
    try:
        async with Client(with_identity) as client:
            greeted = await client.call_tool("greet", {"name": "dora"})
        async with Client(without) as client:
            refused = await client.call_tool("greet", {"name": "dora"})
            pong = await client.call_tool("ping", {})
    finally:
        await verifier.aclose()
        await connector.aclose()
        await exchange.aclose()
    assert greeted.content[0].text == "hello dora"  # type: ignore[union-attr]
    assert refused.is_error
    assert "stdio_token" in refused.content[0].text  # type: ignore[union-attr]
    assert pong.content[0].text == "pong"  # type: ignore[union-attr]


def test_configuration_mistakes_are_explained() -> None:
    with pytest.raises(ConfigurationError, match="resource"):
        create_mcp_server(Backend())
    with pytest.raises(ConfigurationError, match="issuer"):
        create_mcp_server(Backend(url="http://127.0.0.1:1/mcp"))


STDIO_AGENT = """
import sys

import anyio

from keycard_agents import Agent, Context, skill
from keycard_agents.auth import TokenVerifier, TrustedIssuer
from keycard_agents.mcp import serve_mcp_stdio


class Local(Agent):
    @skill(scopes=["chat"])
    async def whoami(self, ctx: Context) -> str:
        return ctx.principal.render_chain(receiver="local")

    @skill(anonymous=True)
    async def ping(self) -> str:
        return "pong"


issuer, resource = sys.argv[1], sys.argv[2]
verifier = TokenVerifier(issuers=[TrustedIssuer(issuer, jwks_uri=issuer + "/jwks.json")])
agent = Local(url=resource, issuer=issuer, token_endpoint=issuer + "/token")
anyio.run(lambda: serve_mcp_stdio(agent, verifier=verifier))
"""


async def test_served_over_stdio_as_the_configured_user(
    deployment: Deployment, tmp_path: Any
) -> None:
    """A real stdio subprocess; the user comes from KEYCARD_AGENTS_MCP_TOKEN (the path
    without a token is covered in process above)."""
    import os
    import sys

    from mcp import StdioServerParameters

    script = tmp_path / "local_agent.py"
    script.write_text(STDIO_AGENT)
    resource = "http://127.0.0.1:9/local"
    env = dict(os.environ)
    env["KEYCARD_AGENTS_MCP_TOKEN"] = deployment.sts.issue_user_token(
        "erin", audience=resource, scopes=["chat"]
    )
    params = StdioServerParameters(
        command=sys.executable, args=[str(script), deployment.issuer, resource], env=env
    )
    async with Client(params) as client:
        whoami = await client.call_tool("whoami", {})
        pong = await client.call_tool("ping", {})
    assert pong.content[0].text == "pong"  # type: ignore[union-attr]
    assert whoami.content[0].text == "erin → local"  # type: ignore[union-attr]


class _Clashing(Agent):
    @skill(id="notes/find", anonymous=True)
    async def find(self) -> str:
        return "a"

    @skill(id="notes_find", anonymous=True)
    async def find_too(self) -> str:
        return "b"


class _Slashed(Agent):
    @skill(id="notes/find", anonymous=True)
    async def find(self, ctx: Context) -> list[int]:
        """Returns a list: not an object, so no output schema over MCP."""
        return [1, 2]


async def test_skill_ids_become_valid_tool_names() -> None:
    with pytest.raises(ConfigurationError, match="both become MCP tool 'notes_find'"):
        create_mcp_server(_Clashing(), authenticate=False)
    server = create_mcp_server(_Slashed(), authenticate=False)
    async with Client(server) as client:
        listed = await client.list_tools()
        found = await client.call_tool("notes_find", {})
        unknown = await client.call_tool("nothing", {})
    assert [t.name for t in listed.tools] == ["notes_find"]
    assert listed.tools[0].output_schema is None
    assert not found.is_error
    assert found.structured_content is None
    assert found.content[0].text == "[1, 2]"  # type: ignore[union-attr]
    assert unknown.is_error
    assert "notes_find" in unknown.content[0].text  # type: ignore[union-attr]


class _Media(Agent):
    @skill(anonymous=True)
    async def media(self, ctx: Context) -> None:
        """Artifacts of every kind."""
        await ctx.artifact(b"\x89PNG", media_type="image/png")
        await ctx.artifact(b"\x00\x01")
        await ctx.artifact(Part(url="https://files.test/report.pdf", filename="report.pdf"))

    @skill(anonymous=True)
    async def broken(self) -> str:
        """Always fails."""
        raise ConfigurationError("the printer is on fire")


class _Refusing:
    async def verify(self, token: str, *, audience: str, required_scopes: Any = ()) -> Any:
        raise InvalidTokenError("no", check="signature")


class _CountingStore(MemoryTaskStore):
    def __init__(self) -> None:
        super().__init__()
        self.created = 0

    async def create(self, record: TaskRecord) -> None:
        self.created += 1
        await super().create(record)


async def test_artifacts_failures_and_a_shared_runtime() -> None:
    agent = _Media()
    store = _CountingStore()
    runtime = TaskRuntime(agent, store=store)
    server = create_mcp_server(agent, authenticate=False, runtime=runtime)
    async with runtime.running(), Client(server) as client:
        media = await client.call_tool("media", {})
        broken = await client.call_tool("broken", {})
    png, raw, link = media.content
    assert isinstance(png, mcp_types.ImageContent)
    assert png.mime_type == "image/png"
    assert isinstance(raw, mcp_types.EmbeddedResource)
    assert raw.resource.mime_type == "application/octet-stream"
    assert isinstance(link, mcp_types.ResourceLink)
    assert link.name == "report.pdf"
    assert broken.is_error
    assert broken.content[0].text == (  # type: ignore[union-attr]
        "The skill ended failed: the printer is on fire"
    )
    assert store.created == 2  # the tasks ran in the runtime that was passed in
    assert len(store) == 0  # anonymous: nobody can read them once they stop


async def test_a_rejected_stdio_token_is_reported() -> None:
    server = create_mcp_server(
        _Media(url="http://127.0.0.1:9/x"),
        authenticate=False,
        stdio_token="not-a-token",
        verifier=_Refusing(),
    )
    async with Client(server) as client:
        result = await client.call_tool("media", {})
    assert result.is_error
    assert "stdio identity token was rejected" in result.content[0].text  # type: ignore[union-attr]
    assert "not-a-token" not in result.content[0].text  # type: ignore[union-attr]
