"""An agent served over MCP asks for a connection with URL-mode elicitation (MCP 2025-11-25).

The agent's dependency is a static-key connection of the token service; the user has not
entered the key, so the tool call fails with ``URLElicitationRequiredError`` (-32042) whose
URL is the token service's connect page. The user enters the key there, and the same tool
call, retried, gets it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, MCPError, UrlElicitationRequiredError
from mcp.client.streamable_http import streamable_http_client
from mcp_support import ServerThread, free_port
from upstream_support import sign_in_connections

from keycard_agents import (
    AccessContext,
    Agent,
    ClientSecret,
    Context,
    HttpDependency,
    McpDependency,
    call_message,
    create_app,
    grant,
    open_agent_client,
    skill,
    task_result,
)
from keycard_agents.a2a import Task, TaskState, auth_required
from keycard_agents.mcp import create_mcp_server, mcp_app
from keycard_agents.sts import TokenService, hash_secret, parse_config

pytestmark = pytest.mark.anyio

SECRET = "weather-agent-secret-0123456789abcdefghijklmnopqrstuv"
API = "https://weather-api.test/"
PASSWORD = "alice-mcp-password"


class WeatherAgent(Agent):
    """Reads the weather with the user's own API key."""

    name = "weather-agent"
    dependencies = (HttpDependency("weather", resource=API),)

    @skill(scopes=["chat"])
    @grant("weather")
    async def forecast(self, ctx: Context, access: AccessContext) -> dict[str, Any]:
        """The key the weather API would be sent (the test's stand-in for a call)."""
        return {"key": access.access("weather").access_token}


def _front(url: str, mcp_url: str) -> Agent:
    class Front(Agent):
        name = "front"
        dependencies = (McpDependency("weather", url=mcp_url, scopes=["chat"]),)

        @skill(scopes=["chat"])
        async def ask(self, ctx: Context) -> Any:
            """Call the weather agent's tool over MCP."""
            result = await ctx.dependency("weather").call_tool("forecast", {})
            return result.structured

    return Front(url=url, credential=ClientSecret("front", FRONT_SECRET))


FRONT_SECRET = "front-agent-secret-0123456789abcdefghijklmnopqrstuv"


@dataclass
class World:
    sts: TokenService
    issuer: str
    mcp_url: str
    front_url: str


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    sts_port, agent_port, front_port = free_port(), free_port(), free_port()
    issuer = f"http://127.0.0.1:{sts_port}"
    mcp_url = f"http://127.0.0.1:{agent_port}/mcp"
    front_url = f"http://127.0.0.1:{front_port}"
    config = parse_config(
        {
            "issuer": issuer,
            "agents": [
                {
                    "client_id": "weather-agent",
                    "resource": mcp_url,
                    "auth": "client_secret",
                    "secret_hash": hash_secret(SECRET, cost=2**4),
                    "scopes": ["chat"],
                    "dependencies": [API],
                },
                {
                    "client_id": "front",
                    "resource": front_url,
                    "auth": "client_secret",
                    "secret_hash": hash_secret(FRONT_SECRET, cost=2**4),
                    "scopes": ["chat"],
                    "dependencies": [mcp_url],
                },
            ],
            "users": [{"username": "alice", "password": PASSWORD}],
            "connections": [{"name": "weather", "kind": "static", "resources": [API]}],
        }
    )
    sts = TokenService(config)
    agent = WeatherAgent(
        url=mcp_url,
        issuer=issuer,
        token_endpoint=f"{issuer}/token",
        credential=ClientSecret("weather-agent", SECRET),
    )
    with ExitStack() as stack:
        stack.enter_context(ServerThread(sts.app, port=sts_port))
        stack.enter_context(ServerThread(mcp_app(create_mcp_server(agent)), port=agent_port))
        front = _front(front_url, mcp_url)
        front.issuer, front.token_endpoint = issuer, f"{issuer}/token"
        stack.enter_context(ServerThread(create_app(front), port=front_port))
        yield World(sts=sts, issuer=issuer, mcp_url=mcp_url, front_url=front_url)


async def _call(world: World, token: str) -> Any:
    """The tool's result, or the ``MCPError`` it answered with."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(world.mcp_url, http_client=http)) as client,
    ):
        try:
            return await client.call_tool("forecast", {})
        except MCPError as exc:
            return exc


async def _enter_key(world: World, url: str, key: str) -> None:
    async with httpx.AsyncClient(timeout=20) as browser:
        await sign_in_connections(browser, world.issuer, user="alice", password=PASSWORD)
        form = await browser.get(url)
        csrf = form.text.split("name='csrf' value='")[1].split("'")[0]
        saved = await browser.post(
            world.issuer + "/connections/weather/key", data={"csrf": csrf, "key": key}
        )
    assert saved.status_code == 200, saved.text


async def test_url_elicitation_then_retry(world: World) -> None:
    assert world.sts.vault is not None
    await world.sts.vault.delete(world.issuer, "alice", "weather")  # the other backend's run
    token = world.sts.issue_user_token("alice", audience=world.mcp_url, scopes=["chat"])
    refused = await _call(world, token)
    assert isinstance(refused, MCPError)
    assert refused.error.code == -32042
    needed = UrlElicitationRequiredError.from_error(refused.error)
    (elicitation,) = needed.elicitations
    assert elicitation.mode == "url"
    assert elicitation.url.startswith(world.issuer + "/connections/weather/connect")
    assert elicitation.elicitation_id
    assert "weather" in elicitation.message
    await _enter_key(world, elicitation.url, "wk-secret-42")
    result = await _call(world, token)
    assert not isinstance(result, MCPError)
    assert not result.is_error, result
    assert result.structured_content == {"key": "wk-secret-42"}


async def test_an_agent_calling_the_tool_ends_auth_required_and_resumes(world: World) -> None:
    assert world.sts.vault is not None
    await world.sts.vault.delete(world.issuer, "alice", "weather")
    token = world.sts.issue_user_token("alice", audience=world.front_url, scopes=["chat"])
    async with open_agent_client(world.front_url, token=token) as client:
        task = await client.send(call_message("ask"))
        assert isinstance(task, Task)
        needed = auth_required(task)
        assert needed is not None, task.status
        assert needed.url is not None
        assert needed.url.startswith(world.issuer + "/connections/weather/connect")
        await _enter_key(world, needed.url, "wk-from-front")
        resumed = await client.send("done", task_id=task.id)
    assert isinstance(resumed, Task)
    assert resumed.status.state is TaskState.COMPLETED, resumed.status
    assert task_result(resumed) == {"key": "wk-from-front"}
