"""Dependency handles: HTTP APIs (401 → one re-exchange), trust in the target's issuer,
the ``grant`` pattern, and how the provider is built and wired into the server."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from delegation_support import MAIL, PLANNER, USER_SCOPES, WEATHER, Planner, chain_agents

from keycard_agents import (
    AccessContext,
    Agent,
    AgentDependency,
    Caller,
    ClientSecret,
    ConfigurationError,
    Context,
    Dependency,
    HttpDependency,
    InteractionRequiredError,
    InvalidTokenError,
    McpDependency,
    TransportError,
    call_message,
    create_app,
    grant,
    skill,
)
from keycard_agents._delegation._provider import _FACTORIES
from keycard_agents.a2a import Task, TaskState
from keycard_agents.auth import TokenExchangeClient
from keycard_agents.delegation import (
    DelegatedTokens,
    HttpApiHandle,
    TokenExchangeDelegation,
    delegation_for,
    register_handle_factory,
)
from keycard_agents.testing import LocalTokenService, make_context, open_local_agents

pytestmark = pytest.mark.anyio


class FakeApi:
    """An HTTP API that verifies delegated tokens for its resource with the real verifier."""

    def __init__(self, sts: LocalTokenService, resource: str, *, reject_first: int = 0) -> None:
        self.verifier = sts.verifier()
        self.resource = resource
        self.reject = reject_first
        self.tokens: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.tokens.append(token)
        try:
            principal = await self.verifier.verify(token, audience=self.resource)
        except InvalidTokenError as exc:
            return httpx.Response(401, json={"error": exc.check})
        if self.reject > 0:
            self.reject -= 1
            return httpx.Response(
                401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                json={"error": "revoked"},
            )
        return httpx.Response(
            200,
            json={
                "path": request.url.path,
                "city": request.url.params.get("city"),
                "sub": principal.user,
                "actors": list(principal.actors.subjects()),
                "scopes": sorted(principal.scopes),
            },
        )


async def run_skill(sts: LocalTokenService, net: Any, skill_id: str, **arguments: Any) -> Task:
    token = sts.mint_user_token(
        "erin", audience=PLANNER, scopes=["plan", "weather.read", "mail.send"]
    )
    async with net.client(PLANNER, token=token) as client:
        task = await client.send(call_message(skill_id, arguments))
    assert isinstance(task, Task)
    return task


def text_of(task: Task) -> str:
    assert task.status.message is not None
    return " ".join(p.text or "" for p in task.status.message.parts)


async def test_http_api_gets_delegated_token_and_reexchanges_once_on_401() -> None:
    planner = Planner(url=PLANNER)
    sts = LocalTokenService(agents=[planner])
    api = FakeApi(sts, WEATHER, reject_first=1)
    async with open_local_agents(
        sts, [planner], transports={WEATHER: httpx.MockTransport(api)}
    ) as net:
        first = await run_skill(sts, net, "forecast", city="Oslo")
        second = await run_skill(sts, net, "forecast", city="Rome")
    assert first.status.state is TaskState.COMPLETED
    value = first.artifacts[-1].parts[0].data
    assert value["status"] == 200
    assert value["body"] == {
        "path": "/api/forecast",
        "city": "Oslo",
        "sub": "erin",
        "actors": ["planner"],
        "scopes": ["weather.read"],
    }
    assert len(api.tokens) == 3  # rejected, re-exchanged, then a new task with a new user token
    assert api.tokens[0] != api.tokens[1]
    assert second.status.state is TaskState.COMPLETED
    assert sts.stats.exchanges == 3


async def test_http_api_that_keeps_refusing_gets_one_retry_only() -> None:
    planner = Planner(url=PLANNER)
    sts = LocalTokenService(agents=[planner])
    api = FakeApi(sts, WEATHER, reject_first=5)
    async with open_local_agents(
        sts, [planner], transports={WEATHER: httpx.MockTransport(api)}
    ) as net:
        task = await run_skill(sts, net, "forecast", city="Oslo")
    assert task.artifacts[-1].parts[0].data["status"] == 401
    assert len(api.tokens) == 2


async def test_token_is_never_sent_outside_its_resource() -> None:
    planner = Planner(url=PLANNER)
    sts = LocalTokenService(agents=[planner])
    leaked: list[httpx.Request] = []
    async with open_local_agents(
        sts,
        [planner],
        transports={"http://127.0.0.1:9999": httpx.MockTransport(leaked.append)},  # type: ignore[arg-type]
    ) as net:
        task = await run_skill(sts, net, "leak")
    assert task.status.state is TaskState.FAILED
    assert "refusing to send a token" in text_of(task)
    assert leaked == []
    assert sts.stats.requests == 0


async def test_grant_exchanges_concurrently_and_reports_partial_errors() -> None:
    planner = Planner(url=PLANNER)
    sts = LocalTokenService(agents=[planner])
    asgi = httpx.ASGITransport(app=sts.app)
    arrived = 0
    both_arrived = anyio.Event()

    async def gate(request: httpx.Request) -> httpx.Response:
        nonlocal arrived
        if request.url.path == "/token":
            arrived += 1
            if arrived == 2:
                both_arrived.set()
            with anyio.fail_after(5):  # deadlocks (and fails) if exchanges ran one by one
                await both_arrived.wait()
        return await asgi.handle_async_request(request)

    token = sts.mint_user_token("erin", audience=PLANNER, scopes=["plan", "weather.read"])
    async with (
        open_local_agents(
            sts, [planner], transports={sts.issuer: httpx.MockTransport(gate)}
        ) as net,
        net.client(PLANNER, token=token) as client,
    ):
        value = await client.call("both", day="mon")
    assert value["day"] == "mon"
    assert value["status"] == "partial_error"
    assert value["ok"] == ["weather"]
    assert value["failed"] == [MAIL]
    assert value["errors"]["resources"][MAIL]["error"] == "invalid_scope"
    assert value["errors"]["error"] is None
    principal = await sts.verifier().verify(value["weather_token"], audience=WEATHER)
    assert principal.user == "erin"
    assert arrived == 2


async def test_grant_with_interaction_required_moves_task_to_auth_required() -> None:
    planner = Planner(url=PLANNER)
    sts = LocalTokenService(agents=[planner])
    asgi = httpx.ASGITransport(app=sts.app)

    async def consent(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token" and b"9302" in request.content:
            return httpx.Response(
                400, json={"error": "interaction_required", "error_description": "sign in again"}
            )
        return await asgi.handle_async_request(request)

    async with open_local_agents(
        sts, [planner], transports={sts.issuer: httpx.MockTransport(consent)}
    ) as net:
        task = await run_skill(sts, net, "both", day="tue")
    assert task.status.state is TaskState.AUTH_REQUIRED
    assert "interaction_required (sign in again)" in text_of(task)


def test_grant_declaration_errors() -> None:
    with pytest.raises(ConfigurationError):
        grant()
    with pytest.raises(ConfigurationError, match="exactly one parameter annotated AccessContext"):

        @grant("x")
        async def no_access(self: Any, ctx: Context) -> None:
            return None

    with pytest.raises(ConfigurationError, match="exactly one parameter annotated AccessContext"):
        grant("x")(lambda self: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigurationError, match="resource names or URLs"):
        grant([])


async def test_grant_on_undeclared_resource_fails_before_exchanging() -> None:
    class Careless(Agent):
        name = "careless"

        @skill
        @grant("http://127.0.0.1:9400/unknown")
        async def go(self, access: AccessContext) -> str:
            return "never"

    agent = Careless(url="http://127.0.0.1:9401")
    ctx, _ = make_context(agent=agent)
    assert list(agent.skills["go"].parameters) == []
    assert agent.skills["go"].takes_context
    with pytest.raises(ConfigurationError, match="not a declared dependency of Careless"):
        await agent.go(ctx)


# ------------------------------------------------------------------- trust


async def test_target_naming_an_untrusted_issuer_is_refused_before_any_token() -> None:
    agents = chain_agents()
    agents.collector.issuer = "http://127.0.0.1:8999"
    agents.collector.token_endpoint = "http://127.0.0.1:8999/token"
    sts = LocalTokenService(agents=agents.all)
    token = sts.mint_user_token("alice", audience=agents.front, scopes=USER_SCOPES)
    async with (
        open_local_agents(sts, agents.all) as net,
        net.client(agents.front, token=token) as client,
    ):
        task = await client.send(call_message("start"))
    assert isinstance(task, Task)
    assert task.status.state is TaskState.FAILED
    assert "does not trust" in text_of(task)
    assert "http://127.0.0.1:8999" in text_of(task)
    targets = [r.target for r in await sts.audit()]
    assert targets == [agents.middle.url]  # nothing was asked for the collector


async def test_trusted_issuers_can_admit_another_issuer() -> None:
    agents = chain_agents()
    agents.collector.issuer = "http://127.0.0.1:8999"
    agents.collector.token_endpoint = "http://127.0.0.1:8999/token"
    sts = LocalTokenService(agents=agents.all)
    agents.middle.trusted_issuers = ("http://127.0.0.1:8999",)
    token = sts.mint_user_token("alice", audience=agents.front, scopes=USER_SCOPES)
    async with (
        open_local_agents(sts, agents.all) as net,
        net.client(agents.front, token=token) as client,
    ):
        value = await client.call("start")
    assert value["below"]["below"]["actors"] == ["middle", "front"]


# ------------------------------------------------------------------- the provider


def provider(**options: Any) -> TokenExchangeDelegation:
    exchange = TokenExchangeClient(
        issuer="http://127.0.0.1:8900", credential=ClientSecret("a", "s")
    )
    return TokenExchangeDelegation(exchange=exchange, **options)


async def test_provider_refuses_anonymous_callers_and_unknown_urls() -> None:
    delegation = provider()
    ctx, _ = make_context(token="user-token")
    with pytest.raises(ConfigurationError, match="anonymous"):
        delegation.handle(HttpDependency("x", resource=WEATHER), caller=Caller(None), context=ctx)
    with pytest.raises(ConfigurationError, match="has no URL"):
        delegation.handle(AgentDependency("nameless"), caller=_caller(ctx), context=ctx)
    named = provider(agent_urls={"nameless": "http://127.0.0.1:9500"})
    handle = named.handle(AgentDependency("nameless"), caller=_caller(ctx), context=ctx)
    assert handle.url == "http://127.0.0.1:9500"
    api = delegation.handle(HttpDependency("x", resource=WEATHER), caller=_caller(ctx), context=ctx)
    assert isinstance(api, HttpApiHandle)
    assert api.url("/v1/x") == WEATHER + "/v1/x"
    assert "user-token" not in repr(api) + repr(handle) + repr(api.auth)
    await delegation.aclose()
    await named.aclose()


def _caller(ctx: Context) -> Caller:
    return ctx._caller


async def test_mcp_dependency_needs_the_mcp_integration(monkeypatch: pytest.MonkeyPatch) -> None:
    delegation = provider()
    ctx, _ = make_context(token="user-token")
    dependency = McpDependency("tools", url="http://127.0.0.1:9600/mcp")
    monkeypatch.setattr(
        "keycard_agents._delegation._provider._MCP_MODULE", "keycard_agents._no_such_mcp"
    )
    monkeypatch.delitem(_FACTORIES, "mcp", raising=False)
    with pytest.raises(ConfigurationError, match=r"keycard-agents\[mcp\]"):
        delegation.handle(dependency, caller=_caller(ctx), context=ctx)

    built: list[tuple[Dependency, DelegatedTokens]] = []
    closed: list[str] = []

    def factory(
        dependency: Dependency,
        *,
        caller: Caller,
        context: Context,
        delegation: TokenExchangeDelegation,
    ) -> str:
        built.append((dependency, delegation.tokens(caller, context=context)))

        async def close() -> None:
            closed.append(dependency.name)

        delegation.call_on_close(close)
        return "mcp-handle"

    register_handle_factory("mcp", factory)
    assert delegation.handle(dependency, caller=_caller(ctx), context=ctx) == "mcp-handle"
    assert built[0][0] is dependency
    await delegation.aclose()
    assert closed == ["tools"]

    # The module exists but registers nothing: say so rather than "install it".
    monkeypatch.setattr(
        "keycard_agents._delegation._provider._MCP_MODULE", "keycard_agents._agent._grant"
    )
    monkeypatch.delitem(_FACTORIES, "mcp")
    unregistered = provider()
    with pytest.raises(ConfigurationError, match="registered no handle factory"):
        unregistered.handle(dependency, caller=_caller(ctx), context=ctx)
    await unregistered.aclose()


async def test_delegation_for_fails_at_start_up_only_for_agents_that_call_something(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("KEYCARD_CLIENT_ID", "KEYCARD_CLIENT_SECRET", "KEYCARD_ZONE_ID"):
        monkeypatch.delenv(name, raising=False)
    # Planner declares dependencies: a missing token service setting stops it at start-up.
    with pytest.raises(ConfigurationError) as failure:
        delegation_for(Planner(url=PLANNER))
    assert failure.value.setting == "KEYCARD_ZONE_ID"
    with pytest.raises(ConfigurationError):
        create_app(Planner(url=PLANNER, issuer=PLANNER, token_endpoint=PLANNER + "/token"))

    class Leaf(Agent):
        name = "leaf"

        @skill
        async def ping(self) -> str:
            return "pong"

    lazy = delegation_for(Leaf(url=PLANNER))  # calls nothing: needs no credential
    with pytest.raises(ConfigurationError):
        lazy.exchange  # noqa: B018
    await lazy.aclose()

    configured = Planner(
        url=PLANNER,
        issuer="http://127.0.0.1:8900",
        token_endpoint="http://127.0.0.1:8900/token",
        credential=ClientSecret("planner", "secret"),
    )
    built = delegation_for(configured)
    assert built.exchange.issuer == "http://127.0.0.1:8900"
    assert built.trusted_issuers == ("http://127.0.0.1:8900",)
    await built.aclose()


async def test_create_app_wires_a_provider_and_closes_it() -> None:
    agent = Planner(
        url=PLANNER,
        issuer="http://127.0.0.1:8900",
        token_endpoint="http://127.0.0.1:8900/token",
        credential=ClientSecret("planner", "secret"),
    )
    app = create_app(agent)
    delegation = app.state.keycard_runtime.delegation
    assert isinstance(delegation, TokenExchangeDelegation)
    async with app.router.lifespan_context(app):
        exchange = delegation.exchange
        assert not delegation._http.is_closed
    assert delegation._http.is_closed
    assert exchange._http.is_closed


def test_grant_keeps_the_access_parameter_out_of_the_skill_schema() -> None:
    class Either(Agent):
        name = "either"
        dependencies = (HttpDependency("api", resource=WEATHER),)

        @grant("api")  # outside @skill: the skill mark is kept
        @skill(scopes=["x"])
        async def outer(self, access: AccessContext, n: int) -> int:
            return n

    planner_skill = Planner(url=PLANNER).skills["both"]
    assert planner_skill.parameters == ("day",)
    assert "access" not in planner_skill.input_schema()["properties"]
    outer = Either(url=PLANNER).skills["outer"]
    assert outer.parameters == ("n",)
    assert outer.takes_context
    assert outer.scopes == ("x",)


def fake_token_service(form_log: list[dict[str, str]], *, error: str | None = None) -> Any:
    issuer = "http://issuer.test"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": issuer, "token_endpoint": issuer + "/token"})
        form = dict(httpx.QueryParams(request.content.decode()))
        form_log.append(form)
        if error is not None:
            return httpx.Response(400, json={"error": error, "error_description": "go sign in"})
        return httpx.Response(
            200,
            json={
                "access_token": f"tok-{len(form_log)}",
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 300,
            },
        )

    return issuer, handler


async def test_http_api_handle_methods_and_transport_errors() -> None:
    forms: list[dict[str, str]] = []
    issuer, token_service = fake_token_service(forms)
    seen: list[tuple[str, str, str]] = []

    def api(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/down"):
            raise httpx.ConnectError("refused", request=request)
        seen.append((request.method, request.url.path, request.headers["authorization"]))
        return httpx.Response(204)

    def route(request: httpx.Request) -> httpx.Response:
        return token_service(request) if request.url.host == "issuer.test" else api(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(route)) as http:
        exchange = TokenExchangeClient(
            issuer=issuer, credential=ClientSecret("a", "s"), http_client=http
        )
        delegation = TokenExchangeDelegation(exchange=exchange, http_client=http)
        ctx, _ = make_context(token="user-token")
        dependency = HttpDependency("api", resource="http://api.test/v1", scopes=["s1"])
        handle = delegation.handle(dependency, caller=_caller(ctx), context=ctx)
        for method in ("post", "put", "patch", "delete"):
            await getattr(handle, method)("items/1")
        await handle.get()  # the resource itself, without a trailing slash
        with pytest.raises(TransportError, match=r"GET http://api\.test/v1/down \(api\) failed"):
            await handle.get("/down")
        token = await handle.token()
        await delegation.aclose()
    assert [s[0] for s in seen] == ["POST", "PUT", "PATCH", "DELETE", "GET"]
    assert [s[1] for s in seen] == ["/v1/items/1"] * 4 + ["/v1"]
    assert {s[2] for s in seen} == {"Bearer tok-1"}
    assert token.access_token == "tok-1"
    assert len(forms) == 1
    assert forms[0]["subject_token"] == "user-token"
    assert forms[0]["resource"] == "http://api.test/v1"
    assert forms[0]["scope"] == "s1"


async def test_interaction_required_without_a_task_raises() -> None:
    forms: list[dict[str, str]] = []
    issuer, token_service = fake_token_service(forms, error="login_required")
    async with httpx.AsyncClient(transport=httpx.MockTransport(token_service)) as http:
        exchange = TokenExchangeClient(
            issuer=issuer, credential=ClientSecret("a", "s"), http_client=http
        )
        tokens = DelegatedTokens(exchange=exchange, subject_token="user-token", context=None)
        with pytest.raises(InteractionRequiredError, match="go sign in"):
            await tokens.get("http://api.test")
    assert "user-token" not in repr(tokens)


async def test_handles_for_other_dependency_kinds_come_from_registered_factories(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class QueueDependency(Dependency):
        kind = "queue"

    delegation = provider()
    ctx, _ = make_context(token="user-token")
    with pytest.raises(ConfigurationError, match="kind 'queue'"):
        delegation.handle(QueueDependency("jobs"), caller=_caller(ctx), context=ctx)

    def factory(
        dep: Dependency, *, caller: Caller, context: Context, delegation: TokenExchangeDelegation
    ) -> tuple[str, Any]:
        return dep.name, delegation.http_client

    monkeypatch.setitem(_FACTORIES, "queue", factory)
    assert delegation.handle(QueueDependency("jobs"), caller=_caller(ctx), context=ctx) == (
        "jobs",
        delegation.http_client,
    )
    await delegation.aclose()
