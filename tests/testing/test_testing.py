"""The public test helpers in ``keycard_agents.testing``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from delegation_support import MAIL, PLANNER, WEATHER, Planner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from keycard_agents import (
    Agent,
    ConfigurationError,
    Context,
    ResourceAccessError,
    ResourceError,
    skill,
)
from keycard_agents.auth import TokenExchangeClient
from keycard_agents.testing import (
    LocalTokenService,
    client_id_for,
    free_loopback_socket,
    make_context,
    mock_access_context,
    open_local_agents,
    serve_on_loopback,
)

pytestmark = pytest.mark.anyio


async def test_mock_access_context_default_token() -> None:
    agent = Planner(url=PLANNER)
    ctx, _ = make_context(agent=agent)
    with mock_access_context():
        value = await agent.both(ctx, day="wed")
    assert value["status"] == "success"
    assert value["ok"] == ["weather", MAIL]
    assert value["weather_token"] == "test-access-token"


async def test_mock_access_context_per_resource_tokens_and_errors() -> None:
    agent = Planner(url=PLANNER)
    ctx, _ = make_context(agent=agent)
    with mock_access_context(
        None,
        resource_tokens={"weather": "w-token"},
        errors={MAIL: ResourceError("access_denied", "mail is off today")},
    ):
        value = await agent.both(ctx, day="thu")
    assert value["status"] == "partial_error"
    assert value["weather_token"] == "w-token"
    assert value["failed"] == [MAIL]
    assert value["errors"] == {
        "resources": {
            MAIL: {
                "error": "access_denied",
                "message": "mail is off today",
                "code": "access_denied",
                "description": "mail is off today",
            }
        },
        "error": None,
    }


async def test_mock_access_context_without_tokens_fails_every_resource() -> None:
    class Reporter(Agent):
        name = "reporter"
        dependencies = Planner.dependencies

        @skill
        async def report(self, ctx: Context) -> str:
            return "x"

    from keycard_agents import AccessContext, grant

    seen: list[AccessContext] = []

    @grant("weather", "mail")
    async def probe(self: Any, access: AccessContext) -> None:
        seen.append(access)

    agent = Reporter(url=PLANNER)
    ctx, _ = make_context(agent=agent)
    with mock_access_context(None, errors={"mail": "consent_required"}):
        await probe(agent, ctx)
    access = seen[0]
    assert access.get_status() == "partial_error"  # Keycard's: "error" is a global error
    assert not access.has_error()
    assert access.get_failed_resources() == ["weather", "mail"]
    assert access.get_resource_errors("mail") == {
        "error": "consent_required",
        "message": "consent_required",
        "code": "consent_required",
        "description": "consent_required",
    }
    assert access.has_resource_error(WEATHER)  # by URL as well as by name
    with pytest.raises(ResourceAccessError, match="no token for weather"):
        access.access("weather")
    with pytest.raises(ResourceAccessError, match="was not requested"):
        access.access("http://127.0.0.1:1/other")
    assert "error" in repr(access)


async def test_grant_outside_mock_without_delegation_records_errors() -> None:
    from keycard_agents import AccessContext, grant

    seen: list[AccessContext] = []

    @grant("weather")
    async def probe(self: Any, ctx: Context, access: AccessContext) -> None:
        seen.append(access)

    agent = Planner(url=PLANNER)
    ctx, _ = make_context(agent=agent)
    await probe(agent, ctx)
    assert seen[0].get_status() == "error"
    assert seen[0].has_error()  # nothing can be exchanged: an error of the whole context
    assert seen[0].get_errors()["resources"]["weather"]["error"] == "configuration_error"
    assert "no delegation configured" in seen[0].get_errors()["resources"]["weather"]["message"]
    assert seen[0].get_error() == seen[0].get_errors()["error"]


async def test_make_context_records_updates_and_artifacts() -> None:
    ctx, sink = make_context(user="zoe", scopes=["a"], actors=["b", "c"], txn="t-1", text="hi")
    await ctx.update("working")
    await ctx.artifact({"k": 1}, name="out")
    assert ctx.user is not None
    assert (ctx.user.sub, ctx.user.issuer) == ("zoe", "http://127.0.0.1:8900")
    assert ctx.actors.subjects() == ("b", "c")
    assert ctx.scopes == frozenset({"a"})
    assert ctx.txn == "t-1"
    assert ctx.text == "hi"
    assert sink.updates == ["working"]
    assert sink.artifacts[0][0].data == {"k": 1}


def test_local_token_service_registers_agents_and_resources() -> None:
    planner = Planner(url=PLANNER)
    sts = LocalTokenService(
        agents=[planner], scopes={"planner": ["extra"]}, resources={"http://127.0.0.1:9700": ["r"]}
    )
    (registered,) = sts.config.agents
    assert registered.client_id == "planner" == client_id_for(planner)
    assert registered.resource == PLANNER
    assert set(registered.scopes) == {"plan", "extra"}
    assert set(registered.dependencies) == {WEATHER, MAIL}
    resources = {r.resource: r.scopes for r in sts.config.resources}
    assert resources == {
        WEATHER: ("weather.read",),
        MAIL: ("mail.send",),
        "http://127.0.0.1:9700": ("r",),
    }
    assert planner.issuer == sts.issuer
    assert planner.token_endpoint == sts.token_endpoint
    assert planner.credential is not None
    assert planner.credential.client_id == "planner"
    assert "secret" not in repr(planner.credential).lower().replace("clientsecret", "")


def test_local_token_service_configuration_mistakes() -> None:
    with pytest.raises(ConfigurationError, match="needs a url"):
        LocalTokenService(agents=[Planner()])
    with pytest.raises(ConfigurationError, match="no agent 'ghost'"):
        LocalTokenService(agents=[Planner(url=PLANNER)], scopes={"ghost": ["x"]})
    with pytest.raises(ConfigurationError, match="cannot register"):
        LocalTokenService(agents=[Planner(url="http://example.com")])
    sts = LocalTokenService()
    with pytest.raises(ConfigurationError, match="no registered agent"):
        sts.credential("ghost")


async def test_minted_tokens_and_credentials_work_against_the_service() -> None:
    planner = Planner(url=PLANNER)
    sts = LocalTokenService(agents=[planner])
    token = sts.mint_user_token(
        "ivy", audience=planner, scopes=["plan", "weather.read"], may_act=planner
    )
    principal = await sts.verifier().verify(token, audience=PLANNER)
    assert principal.user == "ivy"
    assert principal.claims["may_act"] == {"sub": "planner"}
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=sts.app)) as http,
        TokenExchangeClient(
            issuer=sts.issuer, credential=sts.credential(planner), http_client=http
        ) as exchange,
    ):
        exchanged = await exchange.exchange(token, resource=WEATHER, scopes=None)
    assert exchanged.scopes == ("weather.read",)
    assert sts.stats.issued == 1
    records = await sts.audit(user="ivy")
    assert [r.target for r in records] == [WEATHER]


async def test_open_local_agents_routes_unknown_origins_to_a_connect_error() -> None:
    planner = Planner(url=PLANNER)
    sts = LocalTokenService(agents=[planner])
    async with open_local_agents(sts, [planner]) as net:
        with pytest.raises(httpx.ConnectError, match="nothing serves"):
            await net.http_client.get("http://127.0.0.1:1/")
        card = await net.http_client.get(PLANNER + "/.well-known/agent-card.json")
    assert card.json()["name"] == "planner"


async def test_serve_on_loopback_serves_and_stops() -> None:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/", hello)])
    sock, url = free_loopback_socket()
    assert url.startswith("http://127.0.0.1:")
    with serve_on_loopback(app, sock):
        async with httpx.AsyncClient() as http:
            response = await http.get(url + "/")
    assert response.text == "hello"
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(url + "/")
