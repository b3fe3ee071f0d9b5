"""``keycard-agents demo``: user → agent → agent → MCP tool, over real HTTP on loopback.

Starts the embedded token service (RFC 8693 token exchange, RFC 8414 metadata, the audit
page), three A2A 1.0 agents and an MCP server, each on its own 127.0.0.1 port; signs
alice in with the authorization code flow and PKCE (RFC 6749 §4.1, RFC 7636); sends her
request to the planner, which delegates to the travel agent (which calls MCP tools) and
the weather agent; prints the answer and the delegation tree read back from the audit
trail; then stops everything. Prints identifiers and claims' meaning, never a token.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio
import httpx

from keycard_agents._a2a.types import AGENT_CARD_PATH, Task
from keycard_agents._audit._agent_records import AuditRecorder, MemoryAgentAuditStore
from keycard_agents._audit._render import render_text, should_colour
from keycard_agents._client._agent_client import auth_required, open_agent_client, task_result
from keycard_agents._delegation._provider import delegation_for
from keycard_agents._demo._agents import (
    TOOL_SCOPES,
    TRAVEL_SCOPES,
    USER_SCOPES,
    WEATHER_SCOPES,
    build_agents,
    travel_tools_server,
)
from keycard_agents._demo._calendar import (
    calendar_api,
    calendar_connection,
    calendar_provider,
    connect,
)
from keycard_agents._demo._services import RunningServer, bind_loopback, start_server, stopping
from keycard_agents._demo._signin import sign_in
from keycard_agents._errors import ConfigurationError
from keycard_agents._oauth._credentials import ApplicationCredential, ClientSecret, WebIdentity
from keycard_agents._oauth._urls import (
    authorization_server_metadata_url,
    protected_resource_metadata_url,
)
from keycard_agents._oauth._verifier import TokenVerifier
from keycard_agents._runtime._runtime import TaskRuntime
from keycard_agents._server import create_app
from keycard_agents._sts._app import TokenService
from keycard_agents._sts._config import (
    AdminConfig,
    DevUser,
    PublicClient,
    RegisteredAgent,
    RegisteredResource,
    TokenServiceConfig,
)
from keycard_agents._sts._secrets import hash_client_secret, hash_secret, new_client_secret

__all__ = ["DEFAULT_REQUEST", "DemoDependencyError", "run_demo"]

DEFAULT_REQUEST = "plan a trip to Lisbon"
#: The services, in start order; with --port-base they get consecutive ports in this order.
SERVICES = (
    "token service",
    "calendar-auth",
    "calendar",
    "travel-tools",
    "weather",
    "travel",
    "planner",
)
_CLIENT_ID = "demo-app"
_REDIRECT = "http://127.0.0.1/callback"  # RFC 8252 §7.3 loopback; the demo reads the code itself
_HASH_COST = 2**12  # secrets that live only as long as this process
_STEP_TIMEOUT = 30.0


class DemoDependencyError(ConfigurationError):
    """A package the demo needs is not installed."""


def check_dependencies(modules: tuple[str, ...] = ("mcp", "uvicorn")) -> None:
    """Raise :class:`DemoDependencyError` naming the install command when one is missing."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise DemoDependencyError(
                f"the demo needs the {module!r} package, which is not installed: run "
                "`python3 scripts/dev.py demo` from the repository (it installs everything), "
                "or `pip install 'keycard-agents[mcp]'`",
                setting=module,
            ) from exc


@dataclass
class _Printer:
    out: TextIO
    colour: bool

    def __call__(self, text: str = "", *, end: str = "\n") -> None:
        print(text, file=self.out, end=end, flush=True)

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour else text

    def heading(self, text: str) -> None:
        self()
        self(self.paint(text, "1"))


@dataclass
class _Cast:
    """Everything the demo started, and what it needs to talk to it."""

    issuer: str
    urls: dict[str, str]
    service: Any
    agents: Any
    stores: list[Any]
    trail: Any
    password: str
    admin_token: str
    provider: Any = None
    provider_password: str = ""
    servers: list[RunningServer] = field(default_factory=list)
    #: With ``--replicas``/``--redis``: the ``ReplicaPlan``, the replicas' URLs, and the
    #: task and token of alice's request (to read it through another replica).
    plan: Any = None
    replica_urls: dict[str, list[str]] = field(default_factory=dict)
    last: tuple[str, str] = ("", "")


def _ports(port_base: int | None) -> list[int]:
    if port_base is None:
        return [0] * len(SERVICES)
    if not 1024 <= port_base <= 65535 - len(SERVICES):
        raise ConfigurationError(
            f"--port-base {port_base}: use a port between 1024 and {65535 - len(SERVICES)} "
            f"(the demo takes {len(SERVICES)} consecutive ports from it)",
            setting="port-base",
        )
    return [port_base + i for i in range(len(SERVICES))]


def _with_closers(app: Any, closers: list[Callable[[], Any]]) -> Any:
    """Run ``closers`` after ``app``'s own lifespan ends (on the server's event loop)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(parent: Any) -> AsyncIterator[Any]:
        try:
            async with inner(parent) as state:
                yield state
        finally:
            for close in closers:
                await close()

    app.router.lifespan_context = lifespan
    return app


def _configure(urls: dict[str, str], workdir: str, plan: Any = None) -> _Cast:

    issuer = urls["token service"]
    agents = build_agents(
        planner=urls["planner"],
        travel=urls["travel"],
        weather=urls["weather"],
        tools=urls["travel-tools"],
        calendar=urls["calendar"],
    )
    # planner signs client assertions (private_key_jwt); the others use client secrets.
    planner_identity = WebIdentity("planner", storage_dir=f"{workdir}/planner-keys")
    travel_secret, weather_secret = new_client_secret(), new_client_secret()
    password, admin_token = secrets.token_urlsafe(12), secrets.token_urlsafe(24)
    config = TokenServiceConfig(
        issuer=issuer,
        agents=(
            RegisteredAgent(
                client_id="planner",
                resource=urls["planner"],
                auth="private_key_jwt",
                jwks=planner_identity.public_jwks(),
                scopes=USER_SCOPES,
                dependencies=(urls["travel"], urls["weather"]),
            ),
            RegisteredAgent(
                client_id="travel",
                resource=urls["travel"],
                auth="client_secret",
                secret_hash=hash_client_secret(travel_secret),
                scopes=TRAVEL_SCOPES,
                dependencies=(urls["travel-tools"],),
                may_act_first=False,
            ),
            RegisteredAgent(
                client_id="weather",
                resource=urls["weather"],
                auth="client_secret",
                secret_hash=hash_client_secret(weather_secret),
                scopes=WEATHER_SCOPES,
                dependencies=(urls["calendar"],),
                may_act_first=False,
            ),
        ),
        connections=(calendar_connection(provider=urls["calendar-auth"], api=urls["calendar"]),),
        resources=(RegisteredResource(resource=urls["travel-tools"], scopes=TOOL_SCOPES),),
        users=(
            DevUser(
                username="alice",
                password_hash=hash_secret(password, cost=_HASH_COST),
                scopes=USER_SCOPES,
            ),
        ),
        clients=(PublicClient(client_id=_CLIENT_ID, redirect_uris=(_REDIRECT,)),),
        admin=AdminConfig(token_hash=hash_secret(admin_token, cost=_HASH_COST)),
    )
    service = TokenService(config, shared=None if plan is None else plan.service_state())
    provider_password = secrets.token_urlsafe(12)
    provider = calendar_provider(
        issuer=urls["calendar-auth"],
        api=urls["calendar"],
        callback=f"{issuer}/connections/callback",
        password=provider_password,
    )
    credentials: dict[str, ApplicationCredential] = {
        "planner": planner_identity,
        "travel": ClientSecret("travel", travel_secret),
        "weather": ClientSecret("weather", weather_secret),
    }
    stores = []
    for agent in agents.all:
        agent.issuer = issuer
        agent.token_endpoint = f"{issuer}/token"
        agent.credential = credentials[agent.agent_name]
        store = MemoryAgentAuditStore()
        stores.append(store)
        service.trail.add_agent_store(store)
    service.trail.names[urls["travel-tools"]] = "travel-tools"
    service.trail.names[urls["calendar"]] = "calendar"
    return _Cast(
        issuer=issuer,
        urls=urls,
        service=service,
        agents=agents,
        stores=stores,
        trail=service.trail,
        password=password,
        admin_token=admin_token,
        provider=provider,
        provider_password=provider_password,
        plan=plan,
    )


def _agent_app(agent: Any, store: Any, plan: Any = None) -> Any:

    delegation = delegation_for(agent)
    recorder = AuditRecorder(agent=agent.agent_name, resource=agent.url, store=store)
    tasks = None if plan is None else plan.task_store(namespace=agent.url)
    runtime = TaskRuntime(agent, delegation=delegation, recorder=recorder, store=tasks)
    return _with_closers(create_app(agent, runtime=runtime), [delegation.aclose])


def _start_all(cast: _Cast, sockets: dict[str, Any], say: _Printer) -> None:

    tools = travel_tools_server(resource=cast.urls["travel-tools"], issuer=cast.issuer)
    apps: dict[str, Callable[[], Any]] = {
        "token service": lambda: cast.service.app,
        "calendar-auth": lambda: cast.provider.app,
        "calendar": lambda: calendar_api(
            api=cast.urls["calendar"], provider=cast.urls["calendar-auth"]
        ),
        "travel-tools": tools.streamable_http_app,
        "weather": lambda: _agent_app(cast.agents.weather, cast.stores[2], cast.plan),
        "travel": lambda: _agent_app(cast.agents.travel, cast.stores[1], cast.plan),
        "planner": lambda: _agent_app(cast.agents.planner, cast.stores[0], cast.plan),
    }
    kinds = {
        "token service": "embedded token service",
        "calendar-auth": "third-party OAuth provider",
        "calendar": "third-party API",
        "travel-tools": "MCP server (mcp SDK)",
        "weather": "A2A agent",
        "travel": "A2A agent",
        "planner": "A2A agent",
    }
    for name in SERVICES:
        started = time.monotonic()
        say(f"  {name:<14} {cast.urls[name]:<32} {kinds[name]:<27}", end="")
        server = start_server(apps[name](), sockets.pop(name), name=name, url=cast.urls[name])
        cast.servers.append(server)
        took = time.monotonic() - started
        say(f"{say.paint('✔', '32')} {took * 1000:.0f} ms")
    if cast.plan is not None:
        _start_replicas(cast, say)


def _start_replicas(cast: _Cast, say: _Printer) -> None:
    """Replicas 2..N of the token service and the planner (``--replicas``)."""
    from keycard_agents._demo._replicas import start_replica  # the redis extra

    cast.replica_urls = {"token service": [cast.issuer], "planner": [cast.urls["planner"]]}
    for index in range(2, cast.plan.replicas + 1):
        service = TokenService(cast.service.config, shared=cast.plan.service_state())
        planner = _agent_app(cast.agents.planner, cast.stores[0], cast.plan)
        for name, app in ((f"token service {index}", service.app), (f"planner {index}", planner)):
            server = start_replica(app, name=name)
            cast.servers.append(server)
            cast.replica_urls[name.rsplit(" ", 1)[0]].append(server.url)
            say(f"  {name:<14} {server.url:<32} replica sharing Redis")


async def _drive(cast: _Cast, request: str, say: _Printer) -> tuple[str, Any, Any, tuple[str, ...]]:

    planner = cast.urls["planner"]
    with anyio.fail_after(_STEP_TIMEOUT):
        async with httpx.AsyncClient(timeout=10.0) as http:
            token = await sign_in(
                http,
                issuer=cast.issuer,
                client_id=_CLIENT_ID,
                redirect_uri=_REDIRECT,
                username="alice",
                password=cast.password,
                resource=planner,
                scopes=USER_SCOPES,
            )
            # The planner would check the same: signature, issuer, audience, lifetime.
            verifier = TokenVerifier(issuers=[cast.issuer], http_client=http)
            principal = await verifier.verify(token, audience=planner)
            scopes = " ".join(sorted(principal.scopes))
            say(f"  signed in: user token for the planner, scopes {scopes}")
            async with open_agent_client(planner, token=token, http_client=http) as client:
                task = await client.send(request)
                needed = auth_required(task)
                if needed is not None and needed.url is not None:
                    say.heading("The task needs alice: TASK_STATE_AUTH_REQUIRED")
                    say(
                        "  the weather agent reads her calendar, a third-party API, with her own "
                        "token: she has not connected it yet"
                    )
                    say(f"  connect at {needed.url}")
                    await connect(
                        url=needed.url,
                        issuer=cast.issuer,
                        password=cast.password,
                        provider_password=cast.provider_password,
                        say=say,
                    )
                    say("  5. the demo app sends a follow-up message to the same task: it resumes")
                    task = await client.send("calendar connected", task_id=needed.task_id)
                answer = task_result(task)
                cast.last = (task.id if isinstance(task, Task) else "", token)
    tree = await cast.trail.tree(str(principal.txn))
    return str(answer), principal, tree, tuple(sorted(principal.scopes))


def _show_replicas(cast: _Cast, say: _Printer) -> None:
    from keycard_agents._demo._replicas import show_replicas  # the redis extra

    say.heading(f"Replicas sharing Redis ({cast.plan.settings.redacted_url})")
    task_id, token = cast.last
    anyio.run(
        functools.partial(
            show_replicas,
            say,
            planners=cast.replica_urls.get("planner", []),
            services=cast.replica_urls.get("token service", []),
            task_id=task_id,
            token=token,
        )
    )


def _chains(tree: Any) -> list[str]:
    """Every root-to-leaf path of the tree: ``alice → planner → travel → travel-tools``."""
    return list(dict.fromkeys(" → ".join(hop.path) for hop in tree.walk() if not hop.children))


def _where_next(cast: _Cast, say: _Printer, *, keep_running: bool, txn: str) -> None:
    say.heading("Where to look next")
    for name in ("planner", "travel", "weather"):
        say(f"  {name + ' card':<16}{cast.urls[name]}{AGENT_CARD_PATH}")
    tools = protected_resource_metadata_url(cast.urls["travel-tools"])
    say(f"  {'MCP metadata':<16}{tools}")
    say(f"  {'token service':<16}{authorization_server_metadata_url(cast.issuer)}")
    say(f"  {'audit page':<16}{cast.issuer}/audit")
    say(f"  {'this request':<16}{cast.issuer}/audit/txn/{txn}")
    if keep_running:
        say(
            f"  {'admin login':<16}user 'admin', password {cast.admin_token} "
            "(HTTP Basic; or a bearer token)"
        )
        say(f"  {'alice':<16}password {cast.password} (sign in at {cast.issuer}/authorize)")
        say(
            f"  {'trace':<16}KEYCARD_ADMIN_TOKEN={cast.admin_token} "
            f"keycard-agents trace {txn} --from {cast.issuer}"
        )
    else:
        say(
            "  These stop with the demo. Run `keycard-agents demo --keep-running` to keep them "
            "up\n  (it prints the audit page's admin credential), and see examples/ for the code."
        )


def _wait_for_signal(cast: _Cast, stop: threading.Event | None) -> None:
    event = stop or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if stop is None and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: event.set())
    try:
        while not event.wait(0.2):
            if not all(s.alive for s in cast.servers):
                dead = ", ".join(s.name for s in cast.servers if not s.alive)
                raise ConfigurationError(f"the {dead} stopped unexpectedly")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _bound(ports: list[int]) -> Iterator[dict[str, Any]]:
    sockets: dict[str, Any] = {}
    try:
        for name, port in zip(SERVICES, ports, strict=True):
            sockets[name] = bind_loopback(port, service=name)
        yield sockets
    finally:
        for sock in sockets.values():  # those not handed to a server (which closes its own)
            sock.close()


def run_demo(
    *,
    keep_running: bool = False,
    port_base: int | None = None,
    request: str = DEFAULT_REQUEST,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
    replicas: int = 1,
    redis: str | None = None,
) -> int:
    """Run the demo; returns the exit code (0 when everything worked and was stopped).

    ``port_base`` picks consecutive ports (default: free ports); ``keep_running`` waits
    for SIGINT / SIGTERM (or ``stop`` to be set) before stopping the services.
    """

    stream = out if out is not None else sys.stdout
    say = _Printer(stream, should_colour(stream))
    check_dependencies()
    plan = None
    if redis is not None or replicas != 1:
        from keycard_agents._demo._replicas import replica_plan  # the redis extra

        plan = replica_plan(replicas, redis)
    began = time.monotonic()
    say(
        say.paint("keycard-agents demo", "1")
        + ": one request, delegated agent to agent, on loopback"
    )
    say.heading("Starting services")
    ports = _ports(port_base)
    with ExitStack() as stack:
        sockets = stack.enter_context(_bound(ports))
        urls = {name: f"http://127.0.0.1:{s.getsockname()[1]}" for name, s in sockets.items()}
        urls["travel-tools"] += "/mcp"
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="keycard-demo-"))
        cast = _configure(urls, workdir, plan)
        stack.enter_context(stopping(cast.servers))
        _start_all(cast, sockets, say)

        say.heading("Signing in")
        say("  alice signs in to the demo app for the planner: authorization code + PKCE (S256)")
        answer, principal, tree, _ = anyio.run(_drive, cast, request, say)

        say.heading(f'Request: "{request}"')
        for chain in _chains(tree):
            say(f"  {chain}")
        say.heading("Answer")
        for line in answer.splitlines():
            say(f"  {line}")
        say.heading("Delegation tree (from the audit trail)")
        rendered = render_text(tree, colour=say.colour).rstrip("\n")
        for line in rendered.splitlines():
            say(f"  {line}" if line else "")
        if cast.plan is not None:
            _show_replicas(cast, say)
        _where_next(cast, say, keep_running=keep_running, txn=str(principal.txn))
        if keep_running:
            say()
            say("Services are running. Press Ctrl-C to stop them.")
            _wait_for_signal(cast, stop)
        say()
        say("  stopping services ...", end="")
    say(f" done. Demo finished in {time.monotonic() - began:.1f} s.")
    return 0
