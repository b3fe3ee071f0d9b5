"""Test helpers: an in-process token service, agents wired to it, contexts and fake grants.

Everything here speaks the same protocols as production: RFC 8693 token exchange against
the embedded token service, A2A 1.0 JSON-RPC between agents, RFC 9728 metadata. In
process, requests travel through ``httpx.ASGITransport`` (no sockets, any anyio backend);
:func:`serve_on_loopback` runs an app under uvicorn on a free 127.0.0.1 port instead.

Typical use::

    sts = LocalTokenService(agents=[planner, calendar])
    async with open_local_agents(sts, [planner, calendar]) as net:
        token = sts.mint_user_token("alice", audience=planner, scopes=["plan"])
        async with net.client(planner, token=token) as client:
            assert await client.call("plan", day="monday") == ...
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from pydantic import ValidationError

from keycard_agents._a2a.types import Message, Part, Role
from keycard_agents._agent._agent import Agent
from keycard_agents._agent._context import Context, DelegationProvider
from keycard_agents._agent._grant import MOCK_ACCESS as _MOCK_ACCESS
from keycard_agents._agent._grant import ResourceError, mock_factory
from keycard_agents._client._agent_client import AgentClient
from keycard_agents._delegation._provider import TokenExchangeDelegation
from keycard_agents._errors import ConfigurationError
from keycard_agents._jose._principal import Actor, ActorChain, Principal
from keycard_agents._oauth._credentials import ClientSecret, WebIdentity
from keycard_agents._oauth._exchange import TokenExchangeClient
from keycard_agents._oauth._resource_server import Caller
from keycard_agents._oauth._verifier import TokenVerifier
from keycard_agents._runtime._runtime import TaskRuntime
from keycard_agents._server import create_app
from keycard_agents._server._app import AGENT_JWKS_PATH as _AGENT_JWKS_PATH
from keycard_agents._sts._app import TokenService
from keycard_agents._sts._config import (
    Lifetimes,
    RegisteredAgent,
    RegisteredResource,
    TokenServiceConfig,
)
from keycard_agents._sts._secrets import hash_client_secret, new_client_secret

__all__ = [
    "DEFAULT_ISSUER",
    "LocalAgents",
    "LocalTokenService",
    "RecordingSink",
    "client_id_for",
    "free_loopback_socket",
    "make_context",
    "mock_access_context",
    "open_local_agents",
    "serve_on_loopback",
]

DEFAULT_ISSUER = "http://127.0.0.1:8900"


def client_id_for(agent: Agent) -> str:
    """The client id a :class:`LocalTokenService` registers ``agent`` under."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", agent.agent_name).strip("-").lower() or "agent"


def _dependency_target(target: str | None, urls: Mapping[str, str]) -> str:
    """The resource a dependency is registered under: a registered agent's URL exactly as
    the agent has it (its RFC 9728 ``resource``, which tokens are asked for), whether or
    not the dependency spells it with a trailing "/"; any other target without that "/"."""
    bare = (target or "").rstrip("/")
    return next((url for url in urls if url.rstrip("/") == bare), bare)


class LocalTokenService:
    """The embedded token service configured for a set of agents, with test credentials.

    Each agent (which needs a ``url``) is registered under :func:`client_id_for` with
    its URL as resource, a generated client secret (or, for an agent whose
    ``credential`` is a :class:`~keycard_agents.WebIdentity`, ``private_key_jwt`` with
    the JWKS the agent serves at ``/.well-known/jwks.json``, fetched over HTTP: serve
    such agents on real sockets), its declared dependencies as allowed targets (targets
    that are not agents here become resources), and as accepted scopes its skills'
    scopes, the scopes its callers declare for it, and ``scopes[client_id]``. Agents
    without an issuer are pointed at this service and given their credential (see
    :meth:`configure`).
    """

    def __init__(
        self,
        *,
        agents: Sequence[Agent] = (),
        issuer: str = DEFAULT_ISSUER,
        scopes: Mapping[str, Sequence[str]] | None = None,
        resources: Mapping[str, Sequence[str]] | None = None,
        max_chain_depth: int = 5,
        allow_repeated_agents: bool = False,
        lifetimes: Lifetimes | None = None,
        clock: Any = time.time,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self._secrets: dict[str, str] = {}
        urls: dict[str, str] = {}
        for agent in agents:
            if not agent.url:
                raise ConfigurationError(
                    f"agent {agent.agent_name!r} needs a url to be registered", setting="url"
                )
            urls[agent.url] = client_id_for(agent)
        accepted: dict[str, dict[str, None]] = {url: {} for url in urls}
        extra: dict[str, dict[str, None]] = {
            url: dict.fromkeys(s) for url, s in (resources or {}).items()
        }
        for agent in agents:
            for skill in agent.skills.values():
                accepted[str(agent.url)].update(dict.fromkeys(skill.scopes))
            for dependency in agent.dependencies:
                target = _dependency_target(dependency.target, urls)
                if not target:
                    continue
                bucket = accepted if target in urls else extra
                bucket.setdefault(target, {}).update(dict.fromkeys(dependency.scopes))
        for client_id, more in (scopes or {}).items():
            url = next((u for u, c in urls.items() if c == client_id), None)
            if url is None:
                raise ConfigurationError(f"scopes: no agent {client_id!r}", setting="scopes")
            accepted[url].update(dict.fromkeys(more))
        try:
            self.config = self._config(
                agents, urls, accepted, extra, max_chain_depth, allow_repeated_agents, lifetimes
            )
        except ValidationError as exc:
            raise ConfigurationError(
                f"cannot register these agents with the token service: {exc.errors()[0]['msg']}"
            ) from exc
        self.service = TokenService(self.config, clock=clock)
        self.app = self.service.app
        for agent in agents:
            self.configure(agent)

    def _config(
        self,
        agents: Sequence[Agent],
        urls: Mapping[str, str],
        accepted: Mapping[str, Mapping[str, None]],
        extra: Mapping[str, Mapping[str, None]],
        max_chain_depth: int,
        allow_repeated_agents: bool,
        lifetimes: Lifetimes | None,
    ) -> TokenServiceConfig:
        registered = []
        for agent in agents:
            client_id = urls[str(agent.url)]
            secret = new_client_secret()
            self._secrets[client_id] = secret
            targets = tuple(
                dict.fromkeys(
                    _dependency_target(d.target, urls)
                    for d in agent.dependencies
                    if d.target is not None
                )
            )
            authentication: dict[str, Any] = {
                "auth": "client_secret",
                "secret_hash": hash_client_secret(secret),
            }
            if isinstance(agent.credential, WebIdentity):
                # The agent serves its public keys; the service fetches them (RFC 7523).
                self._secrets.pop(client_id)
                authentication = {
                    "auth": "private_key_jwt",
                    "jwks_uri": str(agent.url) + _AGENT_JWKS_PATH,
                }
            registered.append(
                RegisteredAgent(
                    client_id=client_id,
                    resource=str(agent.url),
                    scopes=tuple(accepted[str(agent.url)]),
                    dependencies=targets,
                    **authentication,
                )
            )
        return TokenServiceConfig(
            issuer=self.issuer,
            agents=tuple(registered),
            resources=tuple(
                RegisteredResource(resource=url, scopes=tuple(s)) for url, s in extra.items()
            ),
            max_chain_depth=max_chain_depth,
            allow_repeated_agents=allow_repeated_agents,
            lifetimes=lifetimes or Lifetimes(),
        )

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/token"

    @property
    def stats(self) -> Any:
        """The token endpoint's counters (``requests``, ``issued``, ``exchanges``, ...)."""
        return self.service.stats

    def credential(self, agent: Agent | str) -> ClientSecret:
        """The client credential of a registered agent (by agent or client id)."""
        client_id = agent if isinstance(agent, str) else client_id_for(agent)
        try:
            return ClientSecret(client_id, self._secrets[client_id])
        except KeyError:
            raise ConfigurationError(f"no registered agent {client_id!r}") from None

    def configure(self, agent: Agent) -> None:
        """Point ``agent`` at this service (issuer, token endpoint, credential)."""
        if agent.issuer is None:
            agent.issuer = self.issuer
            agent.token_endpoint = self.token_endpoint
        if agent.credential is None and agent.exchange is None:
            agent.credential = self.credential(agent)

    def verifier(self) -> TokenVerifier:
        """A verifier for tokens of this service that reads its keys directly (no HTTP)."""
        return TokenVerifier(issuers=[self.issuer], keys=self.service.keys.resolver(self.issuer))

    def mint_user_token(
        self,
        user: str,
        *,
        audience: Agent | str,
        scopes: Sequence[str] = (),
        may_act: Agent | str | None = None,
        lifetime: float | None = None,
    ) -> str:
        """A signed user token for ``audience`` (an agent or a resource URL)."""
        aud = audience if isinstance(audience, str) else str(audience.url)
        actor = may_act if isinstance(may_act, str) or may_act is None else client_id_for(may_act)
        return self.service.issue_user_token(
            user, audience=aud, scopes=scopes, may_act=actor, lifetime=lifetime
        )

    async def audit(self, **filters: Any) -> list[Any]:
        """Audit records of the service (``txn=``, ``user=``, ...)."""
        return list(await self.service.audit.query(**filters))


class _Router(httpx.AsyncBaseTransport):
    """Sends each request to the transport registered for its origin."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], httpx.AsyncBaseTransport] = {}

    def add(self, url: str, transport: httpx.AsyncBaseTransport) -> None:
        parts = urlsplit(url)
        self.routes[(parts.scheme, parts.netloc)] = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = (request.url.scheme, request.url.netloc.decode())
        transport = self.routes.get(key)
        if transport is None:
            raise httpx.ConnectError(f"nothing serves {key[0]}://{key[1]}", request=request)
        return await transport.handle_async_request(request)


@dataclass
class LocalAgents:
    """Agents and the token service running in process; see :func:`open_local_agents`."""

    sts: LocalTokenService
    http_client: httpx.AsyncClient
    apps: dict[str, Any]
    delegations: dict[str, TokenExchangeDelegation] = field(default_factory=dict)
    router: _Router = field(default_factory=_Router)

    def exchange_client(self, agent: Agent | str) -> TokenExchangeClient:
        key = agent if isinstance(agent, str) else str(agent.url)
        return self.delegations[key].exchange

    def client(
        self, agent: Agent | str, *, token: str | None = None, **options: Any
    ) -> AgentClient:
        """An :class:`AgentClient` reaching ``agent`` in process (close it, or use async with)."""
        url = agent if isinstance(agent, str) else str(agent.url)
        return AgentClient(url, token=token, http_client=self.http_client, **options)


@asynccontextmanager
async def open_local_agents(
    sts: LocalTokenService,
    agents: Sequence[Agent],
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    exchange_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[LocalAgents]:
    """Run the token service and ``agents`` in process, wired to each other.

    Every agent gets its own :class:`TokenExchangeClient` (``exchange_options`` are passed
    to it, e.g. ``retries=0``) and delegation provider; all HTTP goes through one client
    that routes by origin. ``transports`` adds or replaces routes (an
    ``httpx.MockTransport`` for a fake API, or for a token service that is down).
    """

    router = _Router()
    router.add(sts.issuer, httpx.ASGITransport(app=sts.app))
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(transport=router))
        net = LocalAgents(sts=sts, http_client=http, apps={}, router=router)
        await stack.enter_async_context(sts.app.router.lifespan_context(sts.app))
        for agent in agents:
            sts.configure(agent)
            url = str(agent.url)
            exchange = agent.exchange or TokenExchangeClient(
                issuer=str(agent.issuer),
                credential=agent.credential or sts.credential(agent),
                http_client=http,
                **dict(exchange_options or {}),
            )
            delegation = TokenExchangeDelegation(
                exchange=exchange,
                trusted_issuers=agent.trusted_issuers,
                http_client=http,
                owns_exchange=agent.exchange is None,
            )
            stack.push_async_callback(delegation.aclose)
            runtime = TaskRuntime(agent, delegation=delegation)
            app = create_app(agent, verifier=sts.verifier(), runtime=runtime)
            router.add(url, httpx.ASGITransport(app=app))
            net.apps[url] = app
            net.delegations[url] = delegation
            await stack.enter_async_context(app.router.lifespan_context(app))
        for url, transport in (transports or {}).items():
            router.add(url, transport)
        yield net


# ------------------------------------------------------------------ real servers


def free_loopback_socket() -> tuple[socket.socket, str]:
    """A listening-ready TCP socket on a free 127.0.0.1 port, and its ``http://`` URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    return sock, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def serve_on_loopback(
    app: Any, sock: socket.socket, *, start_timeout: float = 10.0, stop_timeout: float = 10.0
) -> Iterator[None]:
    """Serve ``app`` with uvicorn on ``sock`` in a thread; stop it on exit (bounded waits)."""

    # Idle keep-alive connections outlive httpx's 5 s pool expiry, so a client never reuses a
    # connection that the server is closing at that moment (a "disconnected" error). The
    # plain asyncio loop and h11, whatever uvicorn extras are installed (uvloop, httptools).
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=15,
        loop="asyncio",
        http="h11",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="keycard-test-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(stop_timeout)
            raise ConfigurationError("the test server did not start in time")
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(stop_timeout)
        sock.close()


# ------------------------------------------------------------------ skills in isolation


class RecordingSink:
    """A task sink that records what a skill reported (for :func:`make_context`)."""

    def __init__(self) -> None:
        self.updates: list[str] = []
        self.artifacts: list[list[Part]] = []

    async def status_update(self, message: Message) -> None:
        self.updates.append("\n".join(p.text for p in message.parts if p.text is not None))

    async def add_artifact(
        self,
        parts: Sequence[Part],
        *,
        name: str | None,
        description: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        self.artifacts.append(list(parts))

    async def append_artifact(
        self,
        artifact_id: str,
        parts: Sequence[Part],
        *,
        name: str | None,
        description: str | None,
        metadata: Mapping[str, Any] | None,
        append: bool,
        last_chunk: bool,
    ) -> None:
        """Chunks of one artifact are recorded as one entry, as the task holds them."""
        if append and self.artifacts:
            self.artifacts[-1].extend(parts)
        else:
            self.artifacts.append(list(parts))


def make_context(
    *,
    user: str = "alice",
    scopes: Sequence[str] = (),
    actors: Sequence[str] = (),
    issuer: str = DEFAULT_ISSUER,
    audience: str = "http://127.0.0.1:8000",
    txn: str | None = None,
    token: str | None = None,
    agent: Agent | None = None,
    delegation: DelegationProvider | None = None,
    skill_id: str = "test",
    text: str = "",
) -> tuple[Context, RecordingSink]:
    """A :class:`Context` for calling a skill method directly, and the sink it writes to.

    ``actors`` are the agents that acted before, current first. ``agent`` provides the
    declared dependencies (needed by ``@grant`` and ``ctx.dependency``).
    """
    principal = Principal(
        user=user,
        issuer=issuer,
        audience=(audience,),
        scopes=frozenset(scopes),
        actors=ActorChain([Actor(sub=a, iss=issuer) for a in actors]),
        txn=txn or uuid.uuid4().hex,
        jti=uuid.uuid4().hex,
    )
    sink = RecordingSink()
    message = Message(
        message_id=str(uuid.uuid4()), role=Role.USER, parts=[Part(text=text or "test")]
    )
    ctx = Context(
        caller=Caller(principal=principal, token=token),
        task_id=str(uuid.uuid4()),
        context_id=str(uuid.uuid4()),
        skill_id=skill_id,
        message=message,
        sink=sink,
        dependencies=agent.dependency_map if agent is not None else {},
        delegation=delegation,
    )
    return ctx, sink


@contextlib.contextmanager
def mock_access_context(
    access_token: str | None = "test-access-token",  # noqa: S107 - a fake for tests
    resource_tokens: Mapping[str, str] | None = None,
    has_errors: bool = False,
    error_message: str = "Mock authentication error",
    *,
    errors: Mapping[str, str | ResourceError] | None = None,
    expires_in: float = 300.0,
) -> Iterator[None]:
    """Within this block, ``@grant`` skills get a fake :class:`AccessContext`, no exchange.

    The arguments of Keycard's ``mock_access_context`` mean what they mean there:
    ``access_token`` is the token of every resource, unless ``resource_tokens`` is given,
    which then names the only resources that get a token (the others fail with
    ``access_denied``); ``has_errors=True`` sets an error that affects every resource,
    with ``error_message``. ``errors`` (ours) makes single resources fail (an OAuth error
    code, or a :class:`ResourceError` with a message).
    """
    build = mock_factory(
        default_token=access_token if resource_tokens is None else None,
        tokens=dict(resource_tokens or {}),
        errors=dict(errors or {}),
        expires_at=time.time() + expires_in,
        global_error=ResourceError("mock_error", error_message) if has_errors else None,
    )
    reset = _MOCK_ACCESS.set(build)
    try:
        yield
    finally:
        _MOCK_ACCESS.reset(reset)
