"""The seams between layers are declared Protocols, not attribute probing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from keycard_agents import Agent, ClientSecret, WebIdentity, create_app, skill
from keycard_agents.auth import PublishesJwks
from keycard_agents.delegation import AgentCalls, AgentHandle, HttpApiCalls, HttpApiHandle
from keycard_agents.runtime import ManagedRuntime, TaskRuntime

pytestmark = pytest.mark.anyio

URL = "http://127.0.0.1:9710"
ISSUER = "http://127.0.0.1:9711"


class Echo(Agent):
    name = "echo"

    @skill(anonymous=True)
    async def echo(self, text: str) -> str:
        return text


def test_only_key_pair_credentials_publish_a_jwks(tmp_path: Path) -> None:
    assert isinstance(WebIdentity("echo", storage_dir=tmp_path / "keys"), PublishesJwks)
    assert not isinstance(ClientSecret("echo", "secret"), PublishesJwks)


def test_the_task_runtime_is_a_managed_runtime() -> None:
    assert isinstance(TaskRuntime(Echo(url=URL)), ManagedRuntime)


def test_the_delegation_handles_are_what_skills_are_promised() -> None:
    # Structural: mypy checks these assignments member by member.
    agent_calls: type[AgentCalls] = AgentHandle
    http_calls: type[HttpApiCalls] = HttpApiHandle
    assert {"call", "send", "stream", "token", "card"} <= set(dir(agent_calls))
    assert {"get", "post", "request", "token", "url"} <= set(dir(http_calls))


async def test_jwks_route_comes_from_the_credential_protocol(tmp_path: Path) -> None:
    identity = WebIdentity("echo", storage_dir=tmp_path / "keys")
    agent = Echo(url=URL, issuer=ISSUER, token_endpoint=ISSUER + "/token", credential=identity)
    app = create_app(agent)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=URL) as http,
    ):
        jwks = await http.get("/.well-known/jwks.json")
        assert jwks.status_code == 200
        assert jwks.json() == identity.public_jwks()
    plain = Echo(url=URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    bare = create_app(plain, runtime=TaskRuntime(plain))
    async with (
        bare.router.lifespan_context(bare),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url=URL) as http,
    ):
        assert (await http.get("/.well-known/jwks.json")).status_code == 404
