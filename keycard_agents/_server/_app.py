"""The ASGI application that serves one agent.

Implements A2A 1.0 §8.2 (the Agent Card at ``/.well-known/agent-card.json``, served with
``Cache-Control`` and a strong ``ETag``; RFC 9110 §13.1.2 ``If-None-Match`` → 304), RFC 9728
§3 (protected resource metadata at ``/.well-known/oauth-protected-resource``), the
JSON-RPC binding at the agent's URL and the HTTP+JSON binding under it, both behind bearer
authentication (RFC 6750); the card and the metadata are public.

The app's lifespan runs the task runtime: tasks that outlive a request run in its task
group, and leaving the lifespan cancels them, marks them and ends every open stream.
Mounted under a path in another app, the parent must run this lifespan (see
:func:`create_app`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from email.utils import formatdate, parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from starlette._utils import get_route_path
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from keycard_agents._a2a.errors import A2AError, MethodNotFoundError
from keycard_agents._a2a.types import AGENT_CARD_PATH, AgentCard, dump
from keycard_agents._a2a.v03 import AGENT_CARD_PATH_V03, card_to_v03
from keycard_agents._agent._agent import register_app_factory
from keycard_agents._agent._card import build_agent_card, protected_resource_metadata
from keycard_agents._audit._agent_records import AuditRecorder
from keycard_agents._delegation._provider import TokenExchangeDelegation, delegation_for
from keycard_agents._errors import ConfigurationError
from keycard_agents._jose._card_signature import sign_card
from keycard_agents._jose._card_signature03 import sign_card_v03
from keycard_agents._jose._keys import SigningKey
from keycard_agents._oauth._credentials import (
    ENV_CLIENT_ID,
    HoldsSigningKey,
    PublishesJwks,
    bind_to_agent,
    web_identity_from_env,
)
from keycard_agents._oauth._exchange import SharedTokenCache
from keycard_agents._oauth._jwks import TrustedIssuer
from keycard_agents._oauth._resource_server import BearerAuthenticator, BearerVerifier, Caller
from keycard_agents._oauth._urls import PROTECTED_RESOURCE_WELL_KNOWN, resource_metadata_url_under
from keycard_agents._oauth._verifier import TokenVerifier
from keycard_agents._runtime._push import PushNotifier
from keycard_agents._runtime._runtime import TaskRuntime
from keycard_agents._runtime._store import TaskStore
from keycard_agents._server._dispatch import (
    A2ARuntime,
    Dispatcher,
    ManagedRuntime,
    sends_push_notifications,
)
from keycard_agents._server._extensions import ExtensionNegotiation
from keycard_agents._server._jsonrpc import JsonRpcEndpoint
from keycard_agents._server._protocol import DEFAULT_MAX_BODY_SIZE, rest_error_body
from keycard_agents._server._rest import RestBinding

if TYPE_CHECKING:
    from keycard_agents._agent._agent import Agent

__all__ = [
    "AGENT_JWKS_PATH",
    "AgentMount",
    "create_app",
]

#: Where an agent whose credential is a key pair (``WebIdentity``) publishes its public
#: keys, so the token service can verify its ``private_key_jwt`` assertions (RFC 7523).
AGENT_JWKS_PATH = "/.well-known/jwks.json"
#: The JSON-RPC path keycardai-a2a's DelegationClient posts to; served as an alias of ``/``.
KEYCARD_JSONRPC_PATH = "/a2a/jsonrpc"


def _jwks_endpoint(public_jwks: Callable[[], Any]) -> Callable[[Request], Any]:
    """Serve the agent's public keys; read per request so a key rotation shows at once."""

    async def handle(request: Request) -> Response:
        return JSONResponse(public_jwks(), headers={"Cache-Control": "public, max-age=60"})

    return handle


class _StaticJson:
    """A JSON document served with a strong ETag, ``Last-Modified`` and ``Cache-Control``;
    304 when the client's copy is current (RFC 9110 §13.1.2 ``If-None-Match``, and
    §13.1.3 ``If-Modified-Since`` when no ``If-None-Match`` was sent)."""

    def __init__(
        self, build: Callable[[], Any], *, max_age: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._build = build
        self._clock = clock
        self._body: bytes | None = None
        self._etag = ""
        self._modified = 0
        self._cache_control = f"public, max-age={max_age}"

    def prepare(self) -> bytes:
        if self._body is None:
            data = self._build()
            self._body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
            self._etag = '"' + hashlib.sha256(self._body).hexdigest()[:32] + '"'
            self._modified = int(self._clock())
        return self._body

    async def handle(self, request: Request) -> Response:
        body = self.prepare()
        headers = {
            "ETag": self._etag,
            "Last-Modified": formatdate(self._modified, usegmt=True),
            "Cache-Control": self._cache_control,
        }
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None:
            if _etag_matches(if_none_match, self._etag):
                return Response(status_code=304, headers=headers)
        elif _not_modified_since(request.headers.get("if-modified-since"), self._modified):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)


def _not_modified_since(header: str | None, modified: int) -> bool:
    # RFC 9110 §13.1.3: an HTTP-date; an invalid date is ignored (the full answer).
    if not header or len(header) > 64:
        return False
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        return False
    return modified <= since.timestamp()


def _etag_matches(header: str | None, etag: str) -> bool:
    # RFC 9110 §13.1.2: weak comparison; "*" matches any current representation.
    if not header:
        return False
    for candidate in header.split(","):
        value = candidate.strip()
        if value == "*":
            return True
        if value.startswith("W/"):
            value = value[2:]
        if value == etag:
            return True
    return False


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    error: A2AError = MethodNotFoundError(
        f"No A2A operation at {request.method} {request.url.path[:200]}."
    )
    return JSONResponse(rest_error_body(error, status_code=status), status_code=status)


def create_app(
    agent: Agent,
    *,
    verifier: BearerVerifier | None = None,
    runtime: A2ARuntime | None = None,
    card: Callable[[], AgentCard] | None = None,
    extended_card: Callable[[Caller], AgentCard] | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    allow_missing_version: bool = False,
    card_max_age: int = 300,
    recorder: AuditRecorder | None = None,
    store: TaskStore | None = None,
    card_signing_key: SigningKey | None = None,
    push: PushNotifier | bool = True,
) -> Starlette:
    """Build the ASGI app serving ``agent`` (A2A 1.0 JSON-RPC and HTTP+JSON bindings).

    ``agent.url`` is the canonical URL: the audience of inbound tokens, the RFC 9728
    ``resource`` and the URL of the card's interfaces; it must be where this app is
    reachable (including the mount path when mounted). ``verifier`` verifies bearer tokens
    (default: a ``TokenVerifier`` trusting ``agent.issuer``). ``runtime`` runs the tasks
    (default: a ``TaskRuntime`` for the agent). ``max_body_size`` caps request bodies
    (bytes). ``allow_missing_version`` serves requests without ``A2A-Version`` as 1.0
    instead of refusing them as 0.3 requests. The card is signed (A2A 1.0 §8.4, JWS over
    its RFC 8785 form) with ``card_signing_key``, by default the key of the agent's
    credential when it has one (``WebIdentity``). ``push`` is how the default runtime
    sends push notifications: ``True`` (a ``PushNotifier`` that calls public webhooks
    only), a ``PushNotifier`` of your own (``allow_loopback=True`` for local webhooks), or
    ``False`` (the push methods answer PushNotificationNotSupported).

    ``recorder`` is the agent's own audit trail: every task it serves and every call its
    skills make to dependencies (denials by the token service included). The default
    keeps the newest 100,000 records in memory (a ``MemoryAgentAuditStore``), under the
    agent's client id; pass ``AuditRecorder(agent=..., store=JsonlAgentAuditStore(path))``
    to keep them in a file. A ``runtime`` built without a recorder gets this one. The
    recorder in use is ``app.state.keycard_recorder``.

    ``store`` is where the default runtime keeps tasks: a ``MemoryTaskStore``, or the
    Redis task store that replicas share when ``KEYCARD_REDIS_URL`` is set (or pass
    ``keycard_agents.redis.RedisTaskStore(url)``; see docs/replicas.md).

    To mount it in a FastAPI or Starlette app, run its lifespan from the parent's and
    mount it with :class:`AgentMount` so the bare mount path also reaches the JSON-RPC
    endpoint (plain ``Mount`` would redirect it)::

        a2a = create_app(agent)

        @asynccontextmanager
        async def lifespan(app):
            async with a2a.router.lifespan_context(a2a):
                yield

        app = FastAPI(lifespan=lifespan)
        app.router.routes.append(AgentMount("/agents/planner", a2a))
    """
    if not agent.url:
        raise ConfigurationError(
            "the agent has no url: pass Agent(url=...) with the URL clients reach it at "
            "(it is the audience of inbound tokens)",
            setting="url",
        )
    if max_body_size <= 0:
        raise ConfigurationError("max_body_size must be a positive number of bytes")
    # The resource (token audience, RFC 9728 ``resource``) is the URL exactly as configured;
    # routes and documents hang below it without its trailing "/".
    resource = agent.url
    base_url = agent.url.rstrip("/")
    closers: list[Callable[[], Awaitable[None]]] = []  # what the app opened, it closes
    credential = agent.credential
    if credential is None and agent.exchange is None and runtime is None:
        # Configured by environment only: build the credential now, once, so the keys a
        # web identity signs with are published from the start (and the same ones used).
        credential = web_identity_from_env()
    if credential is not None:
        bind_to_agent(credential, agent.url)
    if verifier is None:
        default_verifier = _default_verifier(agent)
        closers.append(default_verifier.aclose)
        verifier = default_verifier
    token_cache = _token_cache_from_env() if agent.exchange is None else None
    if token_cache is None and agent.exchange is not None:
        token_cache = agent.exchange.token_cache
    if runtime is None:
        # Calls to dependencies use tokens exchanged by the agent's own client; the
        # credential is only looked up when a skill first calls a dependency.
        delegation = delegation_for(agent, credential=credential, token_cache=token_cache)
        closers.append(delegation.aclose)
        notifier = (PushNotifier() if push is True else push) or None
        runtime = TaskRuntime(
            agent,
            delegation=delegation,
            # Not `store or ...`: an empty MemoryTaskStore is falsy (it has a length).
            store=store if store is not None else _store_from_env(agent.url),
            push=notifier,
        )
    elif store is not None or not isinstance(push, bool):
        raise ConfigurationError(
            "pass store= and push= to the TaskRuntime you pass as runtime=, not to create_app",
            setting="store",
        )
    recorder = _audit_recorder(agent, runtime, recorder, base_url)
    authenticator = BearerAuthenticator(
        verifier=verifier,
        audience=resource,
        resource_metadata_url=resource_metadata_url_under(base_url),
        anonymous_allowed=any(s.anonymous for s in agent.skills.values()),
    )
    if extended_card is None and any(s.extended for s in agent.skills.values()):
        # The extended card of an authenticated caller: the skills its scopes may see.
        def extended_card(caller: Caller) -> AgentCard:
            scopes = caller.principal.scopes if caller.principal is not None else frozenset()
            return build_agent_card(
                agent,
                base_url=base_url,
                extended_agent_card=True,
                viewer_scopes=scopes,
                push_notifications=sends_push_notifications(runtime),
            )

    # Whenever the credential in use has keys, publish them (RFC 7517 §5), so an issuer
    # that registered this agent's jwks_uri can verify its private_key_jwt assertions,
    # and sign the card with its key (A2A 1.0 §8.4), naming the JWKS as ``jku``.
    in_use = credential
    if in_use is None and agent.exchange is not None:
        in_use = agent.exchange.credential
    if card_signing_key is None and isinstance(in_use, HoldsSigningKey):
        card_signing_key = in_use.signing_key
    signer = card_signing_key
    jku = base_url + AGENT_JWKS_PATH if isinstance(in_use, PublishesJwks) else None
    serve_extended = extended_card
    if extended_card is not None and signer is not None:
        unsigned_extended = extended_card

        def serve_extended(caller: Caller) -> AgentCard:  # signed like the public card
            data = sign_card(dump(unsigned_extended(caller)), signer, jku=jku)
            return AgentCard.model_validate(data)

    dispatcher = Dispatcher(runtime=runtime, extended_card=serve_extended)
    has_extended = extended_card is not None
    pushes = sends_push_notifications(runtime)
    build_card = card or (
        lambda: _default_card(agent, base_url, extended=has_extended, push=pushes)
    )
    # The extensions a request may activate, and those it must, are the card's (§3.3.4).
    extensions = ExtensionNegotiation(build_card().capabilities.extensions or ())
    jsonrpc = JsonRpcEndpoint(
        dispatcher=dispatcher,
        authenticator=authenticator,
        max_body_size=max_body_size,
        allow_missing_version=allow_missing_version,
        extensions=extensions,
    )
    rest = RestBinding(
        dispatcher=dispatcher,
        authenticator=authenticator,
        max_body_size=max_body_size,
        allow_missing_version=allow_missing_version,
        extensions=extensions,
    )

    def card_document() -> Any:
        data = dump(build_card())
        return data if signer is None else sign_card(data, signer, jku=jku)

    card_route = _StaticJson(card_document, max_age=card_max_age)

    def card_document_v03() -> Any:  # the same card for 0.3 clients, signed in their form
        data = card_to_v03(dump(build_card()))
        return data if signer is None else sign_card_v03(data, signer, jku=jku)

    card_route_v03 = _StaticJson(card_document_v03, max_age=card_max_age)
    metadata_route = _StaticJson(lambda: _default_metadata(agent, resource), max_age=card_max_age)
    # Build both documents now: a mistake in the agent's configuration surfaces at startup,
    # and the routes then only serve bytes (they cannot fail).
    card_route.prepare()
    card_route_v03.prepare()
    metadata_route.prepare()
    jwks_routes: list[BaseRoute] = []
    if isinstance(in_use, PublishesJwks):
        jwks = _jwks_endpoint(in_use.public_jwks)
        jwks_routes.append(Route(AGENT_JWKS_PATH, jwks, methods=["GET"], name="agent-jwks"))
    routes: list[BaseRoute] = [
        Route(AGENT_CARD_PATH, card_route.handle, methods=["GET"], name="agent-card"),
        Route(AGENT_CARD_PATH_V03, card_route_v03.handle, methods=["GET"], name="agent-card-0.3"),
        Route(
            PROTECTED_RESOURCE_WELL_KNOWN,
            metadata_route.handle,
            methods=["GET"],
            name="resource-metadata",
        ),
        *jwks_routes,
        Route("/", jsonrpc.handle, methods=["POST"], name="a2a-jsonrpc"),
        # Where Keycard's keycardai-a2a clients send JSON-RPC (`{url}/a2a/jsonrpc`).
        Route(KEYCARD_JSONRPC_PATH, jsonrpc.handle, methods=["POST"], name="a2a-jsonrpc-keycard"),
        *rest.routes(),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for close in closers:
                stack.push_async_callback(close)
            if token_cache is not None:
                await stack.enter_async_context(token_cache.connected())
            if isinstance(runtime, ManagedRuntime):
                await stack.enter_async_context(runtime.running())
            app.state.keycard_runtime = runtime
            yield

    app = _AgentApp(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _not_found},
    )
    app.jsonrpc = jsonrpc
    app.state.keycard_agent = agent
    app.state.keycard_card = card_document
    app.state.keycard_runtime = runtime
    app.state.keycard_recorder = recorder
    return app


class _AgentApp(Starlette):
    """The agent's Starlette app with JSON-RPC ``POST`` answered in front of the stack.

    ``SendMessage`` is the hot path; Starlette's server-error and exception layers, the
    route search and the per-route exception wrapper are not needed by it: the endpoint
    reads its own bounded body and answers every exception itself with a JSON-RPC error.
    Every other path and method goes through the full stack (``GET /`` is answered 405
    by the router as before), and so does everything once middleware is added.
    """

    jsonrpc: JsonRpcEndpoint | None = None

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        endpoint = self.jsonrpc
        if endpoint is None or self.user_middleware:
            return stack
        handle = endpoint.handle
        paths = ("/", KEYCARD_JSONRPC_PATH)

        async def front(scope: Scope, receive: Receive, send: Send) -> None:
            # The path as the routes match it (below a mount's root_path).
            if (
                scope["type"] == "http"
                and scope["method"] == "POST"
                and get_route_path(scope) in paths
            ):
                response = await handle(Request(scope, receive, send))
                await response(scope, receive, send)
            else:
                await stack(scope, receive, send)

        return front


def _store_from_env(namespace: str) -> TaskStore | None:
    """The Redis task store when ``KEYCARD_REDIS_URL`` names one (docs/replicas.md)."""
    if not os.environ.get("KEYCARD_REDIS_URL", "").strip():
        return None
    try:  # the redis extra, imported only when Redis is configured
        from keycard_agents._redis._connection import settings_from_env
        from keycard_agents._redis._tasks import RedisTaskStore
    except ImportError as exc:
        raise ConfigurationError(
            "KEYCARD_REDIS_URL is set but coredis is not installed: install keycard-agents[redis]",
            setting="KEYCARD_REDIS_URL",
        ) from exc
    settings = settings_from_env()
    assert settings is not None
    lease = os.environ.get("KEYCARD_REDIS_TASK_LEASE", "").strip()
    try:
        seconds = float(lease) if lease else 15.0
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigurationError(
            "KEYCARD_REDIS_TASK_LEASE must be a positive number of seconds",
            setting="KEYCARD_REDIS_TASK_LEASE",
        )
    return RedisTaskStore(settings, lease=seconds, namespace=namespace)


def _token_cache_from_env() -> SharedTokenCache | None:
    """The Redis token cache when ``KEYCARD_REDIS_URL`` and ``KEYCARD_REDIS_CACHE_KEY``
    are set (docs/replicas.md): tokens are shared only encrypted, under that key."""
    if not os.environ.get("KEYCARD_REDIS_URL", "").strip():
        return None
    if not os.environ.get("KEYCARD_REDIS_CACHE_KEY", "").strip():
        return None
    from keycard_agents._redis._token_cache import RedisTokenCache  # the redis extra

    return RedisTokenCache.from_env()


def _audit_recorder(
    agent: Agent, runtime: A2ARuntime, recorder: AuditRecorder | None, base_url: str
) -> AuditRecorder | None:
    """The recorder the runtime uses: its own, else ``recorder``, else a bounded default."""
    if not isinstance(runtime, ManagedRuntime):
        return recorder  # a custom runtime keeps its own records (or none)
    own: AuditRecorder | None = runtime.recorder
    if own is not None:
        if recorder is not None and recorder is not own:
            raise ConfigurationError(
                "the runtime already has an audit recorder: pass it to TaskRuntime(recorder=) "
                "or to create_app(recorder=), not both",
                setting="recorder",
            )
        return own
    if recorder is None:
        recorder = AuditRecorder(agent=_client_id(agent, runtime), resource=base_url)
    runtime.recorder = recorder
    return recorder


def _client_id(agent: Agent, runtime: A2ARuntime) -> str:
    """How the token service knows this agent (the ``act.sub`` of its calls), for audit."""
    candidates: list[str | None] = []
    if agent.credential is not None:
        candidates.append(agent.credential.client_id)
    delegation = runtime.delegation if isinstance(runtime, ManagedRuntime) else None
    if isinstance(delegation, TokenExchangeDelegation) and delegation.client_id is not None:
        candidates.append(delegation.client_id)
    elif agent.exchange is not None:
        candidates.append(agent.exchange.client_id)
    for client_id in candidates:
        if client_id:
            return client_id

    from_env = os.environ.get(ENV_CLIENT_ID)
    if from_env:
        return from_env
    return re.sub(r"[^A-Za-z0-9._-]+", "-", agent.agent_name).strip("-").lower() or "agent"


def _default_verifier(agent: Agent) -> TokenVerifier:
    if not agent.issuer:
        raise ConfigurationError(
            "the agent has no issuer to verify tokens against: pass Agent(issuer=..., "
            "token_endpoint=...) or create_app(agent, verifier=...)",
            setting="issuer",
        )

    return TokenVerifier(issuers=[TrustedIssuer(agent.issuer, metadata_url=agent.metadata_url)])


def _default_card(agent: Agent, base_url: str, *, extended: bool, push: bool) -> AgentCard:

    return build_agent_card(
        agent, base_url=base_url, extended_agent_card=extended, push_notifications=push
    )


def _default_metadata(agent: Agent, resource: str) -> Mapping[str, Any]:

    return protected_resource_metadata(agent, resource=resource)


class AgentMount(Mount):
    """A ``Mount`` that also routes its bare path (``/agents/x``) to the app's ``/``.

    Starlette's ``Mount`` only matches ``/agents/x/...`` and redirects the bare path,
    which breaks JSON-RPC POSTs to an agent URL without a trailing slash.
    """

    def __init__(self, path: str, app: ASGIApp, *, name: str | None = None) -> None:
        super().__init__(path, app=app, name=name)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http":
            root_path = scope.get("root_path", "")
            path: str = scope["path"]
            route_path = path[len(root_path) :] if path.startswith(root_path) else path
            if route_path == self.path and self.path:
                child: Scope = {
                    "path": path + "/",
                    "raw_path": (path + "/").encode(),
                    "path_params": dict(scope.get("path_params", {})),
                    "app_root_path": scope.get("app_root_path", root_path),
                    "root_path": root_path + self.path,
                    "endpoint": self.app,
                }
                return Match.FULL, child
        return super().matches(scope)


register_app_factory(create_app)  # Agent.asgi_app() builds its app with create_app
