"""Delegated calls from skills: the handles behind ``ctx.dependency(name)``.

Every outbound call carries a token obtained by RFC 8693 §2.1 token exchange with the
caller's token as ``subject_token`` and the target as ``resource`` (RFC 8707 §2). For an
agent, the resource and its issuer come from the target's RFC 9728 §2 metadata: a target
whose ``authorization_servers`` names no issuer we trust is refused before any token is
requested. A 401 answer (RFC 6750 §3.1 ``invalid_token``) is retried once with a freshly
exchanged token. When the token service answers ``interaction_required`` /
``consent_required``, the skill's task moves to ``TASK_STATE_AUTH_REQUIRED`` (A2A 1.0
§4.1.3) with a message saying what the user must do.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import httpx
from opentelemetry.trace import SpanKind, get_current_span

from keycard_agents._a2a.types import AgentCard, Message, StreamResponse, Task, TaskState
from keycard_agents._agent._context import REPORT_AUTH_REQUIRED, Context
from keycard_agents._agent._dependencies import (
    AgentDependency,
    Dependency,
    HttpDependency,
    McpDependency,
)
from keycard_agents._agent._handles import AgentCalls, HttpApiCalls
from keycard_agents._audit._calls import CallRecord, audited_call
from keycard_agents._client._agent_client import AgentClient, CardCache, ResourceMetadata
from keycard_agents._errors import (
    ConfigurationError,
    DelegationDeniedError,
    InteractionRequiredError,
    RemoteTaskError,
    TransportError,
)
from keycard_agents._oauth._credentials import (
    ApplicationCredential,
    bind_to_agent,
    credential_from_env,
    resolve_issuer,
)
from keycard_agents._oauth._exchange import (
    ExchangedToken,
    SharedTokenCache,
    TokenExchangeClient,
)
from keycard_agents._oauth._resource_server import Caller
from keycard_agents._oauth._urls import names_same_server, same_origin
from keycard_agents._observe._tracing import (
    ATTR_DEPENDENCY,
    ATTR_SCOPES_REQUESTED,
    ATTR_TARGET,
    inject_context,
    set_attributes,
    set_grant,
    set_http_outcome,
    span,
)

if TYPE_CHECKING:
    from keycard_agents._agent._agent import Agent

__all__ = [
    "AgentHandle",
    "DelegatedAuth",
    "DelegatedTokens",
    "HandleFactory",
    "HttpApiHandle",
    "TokenExchangeDelegation",
    "delegation_for",
    "register_handle_factory",
]


class HandleFactory(Protocol):
    """Builds the handle for a dependency kind another module implements (``"mcp"``).

    ``delegation`` is the provider asking: its ``exchange`` client, ``http_client`` and
    :meth:`TokenExchangeDelegation.tokens` give what the handle needs, and
    :meth:`TokenExchangeDelegation.call_on_close` ties resources to its lifetime.
    """

    def __call__(
        self,
        dependency: Dependency,
        *,
        caller: Caller,
        context: Context,
        delegation: TokenExchangeDelegation,
    ) -> Any: ...


_FACTORIES: dict[str, HandleFactory] = {}
_MCP_MODULE = "keycard_agents._mcp"


def register_handle_factory(kind: str, factory: HandleFactory) -> None:
    """Let ``ctx.dependency(name)`` build handles for dependencies of ``kind``.

    The MCP integration registers ``"mcp"`` when ``keycard_agents._mcp`` is imported.
    """
    _FACTORIES[kind] = factory


class DelegatedTokens:
    """Exchanged tokens for one caller: the subject token never leaves this object.

    ``get(resource)`` exchanges the caller's token for one addressed to ``resource``
    (cached by the exchange client). With a ``context``, an answer that needs the user
    (consent, sign-in) ends the task in AUTH_REQUIRED instead of failing it.
    """

    def __init__(
        self, *, exchange: TokenExchangeClient, subject_token: str, context: Context | None
    ) -> None:
        self._exchange = exchange
        self._subject = subject_token
        self._context = context

    async def get(
        self, resource: str, *, scopes: Sequence[str] | None = None, refresh: bool = False
    ) -> ExchangedToken:
        while True:
            try:
                return await self._exchange.exchange(
                    self._subject, resource=resource, scopes=scopes, refresh=refresh
                )
            except InteractionRequiredError as exc:
                if self._context is None or REPORT_AUTH_REQUIRED.get():
                    raise
                # Interrupts the task (AUTH_REQUIRED); returns when the client replied.
                where = f" at {exc.error_uri}" if exc.error_uri else ""
                await self._context.require_auth(
                    f"The token service needs the user before this agent can call {resource}: "
                    f"{exc.error} ({exc.error_description or 'no details'}). Complete it"
                    f"{where}, then send a message to this task to continue.",
                    url=exc.error_uri,
                )

    def __repr__(self) -> str:
        return f"DelegatedTokens(issuer={self._exchange.issuer!r})"


class DelegatedAuth(httpx.Auth):
    """An ``httpx.Auth`` attaching a delegated token for ``resource``.

    Requests may only go to the resource's origin (the token is for it alone). A 401
    answer is retried once with a newly exchanged token. ``resource`` may be an async
    callable resolving it on first use (an agent's RFC 9728 metadata).
    """

    def __init__(
        self,
        tokens: DelegatedTokens,
        *,
        resource: str | Callable[[], Awaitable[str]],
        scopes: Sequence[str] | None = None,
    ) -> None:
        self._tokens = tokens
        self._resource = resource
        self._scopes = tuple(scopes) if scopes else None
        self.granted: tuple[str, ...] | None = None  # scopes of the last token obtained

    async def resource(self) -> str:
        return self._resource if isinstance(self._resource, str) else await self._resource()

    async def token(self, *, refresh: bool = False) -> ExchangedToken:
        """The delegated token for the resource (exchanged or cached)."""
        token = await self._tokens.get(await self.resource(), scopes=self._scopes, refresh=refresh)
        self.granted = token.scopes
        return token

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        resource = await self.resource()
        if not same_origin(str(request.url), resource):
            raise ConfigurationError(
                f"refusing to send a token for {resource} to {request.url.scheme}://"
                f"{request.url.netloc.decode()}: a delegated token goes only to its resource",
                setting="url",
            )
        token = await self.token()
        set_grant(get_current_span(), requested=self._scopes, granted=token.scopes)
        request.headers["Authorization"] = token.authorization
        response = yield request
        if response.status_code == 401:
            token = await self.token(refresh=True)
            request.headers["Authorization"] = token.authorization
            yield request


class HttpApiHandle:
    """Calls an HTTP API with tokens exchanged for its resource URL.

    ``get``/``post``/... take a URL relative to the resource (or an absolute URL on its
    origin) and return the ``httpx.Response``. ``auth`` plugs the same tokens into your
    own ``httpx.AsyncClient``: ``await client.get(url, auth=handle.auth)``.
    """

    def __init__(
        self, *, dependency: HttpDependency, tokens: DelegatedTokens, http_client: httpx.AsyncClient
    ) -> None:
        self.dependency = dependency
        self.resource = dependency.resource
        self.auth = DelegatedAuth(tokens, resource=dependency.resource, scopes=dependency.scopes)
        self._http = http_client

    def url(self, path: str) -> str:
        """``path`` resolved against the resource URL; ``""`` is the resource itself."""
        if urlsplit(path).scheme:
            return path
        if not path:
            return self.resource
        return self.resource.rstrip("/") + "/" + path.lstrip("/")

    async def token(self) -> ExchangedToken:
        """The delegated token itself (for a client library that wants a string)."""
        return await self.auth.token()

    async def request(self, method: str, url: str = "", **kwargs: Any) -> httpx.Response:
        target = self.url(url)
        dependency = self.dependency
        with span(f"HTTP {method} {self.resource}", kind=SpanKind.CLIENT) as current:
            if current.is_recording():
                parts = urlsplit(target)
                set_attributes(
                    current,
                    {
                        "http.request.method": method,
                        "url.full": f"{parts.scheme}://{parts.netloc}{parts.path}",  # no query
                        "server.address": parts.hostname,
                        ATTR_TARGET: self.resource,
                        ATTR_DEPENDENCY: dependency.name,
                        ATTR_SCOPES_REQUESTED: dependency.scopes,
                    },
                )
            headers = httpx.Headers(kwargs.pop("headers", None))
            inject_context(headers)
            async with audited_call(
                target=self.resource, dependency=dependency.name, scopes_requested=dependency.scopes
            ) as call:
                try:
                    response = await self._http.request(
                        method, target, auth=self.auth, headers=headers, **kwargs
                    )
                except httpx.TransportError as exc:
                    raise TransportError(
                        f"{method} {target} ({dependency.name}) failed: {type(exc).__name__}"
                    ) from exc
                finally:
                    call.scopes_granted = self.auth.granted
                if response.status_code >= 400:
                    call.outcome = "failed"
                set_http_outcome(current, response.status_code, self.auth.granted)
                return response

    async def get(self, url: str = "", **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str = "", **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str = "", **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str = "", **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: str = "", **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", url, **kwargs)

    def __repr__(self) -> str:
        return f"HttpApiHandle(name={self.dependency.name!r}, resource={self.resource!r})"


class AgentHandle:
    """Calls another agent with tokens exchanged for it (the A2A client operations).

    Before the first token is requested, the agent's RFC 9728 metadata is read: its
    ``resource`` is what the token is asked for, and one of its ``authorization_servers``
    must be an issuer this agent trusts.
    """

    def __init__(
        self,
        *,
        name: str,
        url: str,
        scopes: Sequence[str],
        tokens: DelegatedTokens,
        trusted_issuers: Sequence[str],
        http_client: httpx.AsyncClient,
        card_cache: CardCache,
        context: Context | None,
        timeout: float = 60.0,
    ) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self._trusted = tuple(trusted_issuers)
        self._context = context
        self._metadata: ResourceMetadata | None = None
        self._scopes = tuple(scopes)
        self.auth = DelegatedAuth(tokens, resource=self._checked_resource, scopes=scopes)
        self.client = AgentClient(
            url,  # as declared: the resource its metadata must name (RFC 9728 §3.3)
            auth=self.auth,
            http_client=http_client,
            card_cache=card_cache,
            timeout=timeout,
            name=name,
        )

    async def _checked_resource(self) -> str:
        if self._metadata is None:
            metadata = await self.client.resource_metadata()
            trusted = [
                s
                for s in metadata.authorization_servers
                if any(names_same_server(s, issuer) for issuer in self._trusted)
            ]
            if not trusted:
                named = ", ".join(metadata.authorization_servers) or "none"
                raise DelegationDeniedError(
                    "invalid_target",
                    f"agent {self.name!r} at {self.url} names authorization servers ({named}) "
                    f"that this agent does not trust ({', '.join(self._trusted)}): refusing to "
                    "send it a token; add its issuer to trusted_issuers if it is legitimate",
                )
            self._metadata = metadata
        return self._metadata.resource

    async def token(self) -> ExchangedToken:
        """The delegated token for this agent (exchanged or cached)."""
        return await self.auth.token()

    async def card(self) -> AgentCard:
        return await self.client.card()

    @asynccontextmanager
    async def _audited(self) -> AsyncIterator[CallRecord]:
        """This agent's audit record of the call: the target's resource, scopes granted."""
        async with audited_call(
            target=self.url, dependency=self.name, scopes_requested=self._scopes
        ) as call:
            try:
                yield call
            finally:
                if self._metadata is not None:
                    call.target = self._metadata.resource
                call.scopes_granted = self.auth.granted

    async def _audited_stream(
        self, events: AsyncGenerator[StreamResponse, None]
    ) -> AsyncGenerator[StreamResponse, None]:
        async with self._audited() as call, aclosing(events) as stream:
            async for event in stream:
                state = _event_state(event)
                if state is not None:
                    call.outcome = state
                yield event

    async def call(self, skill: str, /, **arguments: Any) -> Any:
        """Call ``skill`` with typed arguments; returns its result.

        A task the agent ends in AUTH_REQUIRED moves this task to AUTH_REQUIRED too; other
        unfinished tasks raise :class:`RemoteTaskError` naming the dependency.
        """
        async with self._audited():
            try:
                return await self.client.call(skill, **arguments)
            except RemoteTaskError as exc:
                if exc.state == TaskState.AUTH_REQUIRED.value and self._context is not None:
                    await self._context.require_auth(
                        f"{self.name} needs authorization: {exc.reason or 'no details'}",
                        url=exc.url,
                    )
                    return await self.client.call(skill, **arguments)
                raise RemoteTaskError(
                    f"{self.name} ({self.url}): {exc}",
                    state=exc.state,
                    task_id=exc.task_id,
                    reason=exc.reason,
                ) from exc

    async def send(self, message: Message | str, **options: Any) -> Task | Message:
        async with self._audited() as call:
            result = await self.client.send(message, **options)
            if isinstance(result, Task) and result.status.state != TaskState.COMPLETED:
                call.outcome = result.status.state.value.removeprefix("TASK_STATE_").lower()
            return result

    def stream(
        self, message: Message | str, **options: Any
    ) -> AsyncGenerator[StreamResponse, None]:
        return self._audited_stream(self.client.stream(message, **options))

    def stream_call(self, skill: str, /, **arguments: Any) -> AsyncGenerator[StreamResponse, None]:
        return self._audited_stream(self.client.stream_call(skill, **arguments))

    async def get_task(self, task_id: str, *, history_length: int | None = None) -> Task:
        return await self.client.get_task(task_id, history_length=history_length)

    async def cancel_task(self, task_id: str) -> Task:
        return await self.client.cancel_task(task_id)

    def __repr__(self) -> str:
        return f"AgentHandle(name={self.name!r}, url={self.url!r})"


class TokenExchangeDelegation:
    """The :class:`~keycard_agents.delegation.DelegationProvider` agents use by default.

    ``exchange`` is the agent's :class:`TokenExchangeClient`, or a callable building it
    on first use (so a credential is only looked up when a dependency is called).
    ``trusted_issuers`` are the authorization servers a target agent may name (default:
    the exchange client's issuer). ``agent_urls`` resolve agent dependencies declared
    without a URL. ``http_client`` carries the calls to dependencies (default: one owned
    and closed by :meth:`aclose`).
    """

    def __init__(
        self,
        *,
        exchange: TokenExchangeClient | Callable[[], TokenExchangeClient],
        trusted_issuers: Sequence[str] | None = None,
        agent_urls: dict[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
        card_cache: CardCache | None = None,
        owns_exchange: bool = False,
        timeout: float = 60.0,
    ) -> None:
        self._exchange_source = exchange
        self._exchange = exchange if isinstance(exchange, TokenExchangeClient) else None
        self._owns_exchange = owns_exchange or self._exchange is None
        self._trusted = tuple(trusted_issuers) if trusted_issuers else None
        self._agent_urls = dict(agent_urls or {})
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()
        self.card_cache = card_cache if card_cache is not None else CardCache()
        self._timeout = timeout
        self._closers: list[Callable[[], Awaitable[None]]] = []

    @property
    def http_client(self) -> httpx.AsyncClient:
        """The HTTP client calls to dependencies go through."""
        return self._http

    def call_on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run ``closer`` when this provider closes (before its own clients)."""
        self._closers.append(closer)

    @property
    def exchange(self) -> TokenExchangeClient:
        """The exchange client (built now if it was deferred)."""
        if self._exchange is None:
            source = self._exchange_source
            assert not isinstance(source, TokenExchangeClient)
            self._exchange = source()
        return self._exchange

    @property
    def client_id(self) -> str | None:
        """The client id of the exchange client, or ``None`` while it is not built yet
        (reading this never looks a credential up)."""
        return None if self._exchange is None else self._exchange.client_id

    @property
    def trusted_issuers(self) -> tuple[str, ...]:
        return self._trusted if self._trusted is not None else (self.exchange.issuer,)

    def tokens(self, caller: Caller, *, context: Context | None = None) -> DelegatedTokens:
        """Exchanged tokens for ``caller`` (an authenticated caller with a token)."""
        if caller.token is None or caller.principal is None:
            raise ConfigurationError(
                "delegated calls need an authenticated caller: this call is anonymous, so "
                "there is no user token to exchange",
                setting="anonymous",
            )
        return DelegatedTokens(exchange=self.exchange, subject_token=caller.token, context=context)

    def handle(self, dependency: Dependency, *, caller: Caller, context: Context) -> Any:
        if isinstance(dependency, McpDependency):
            factory = _mcp_factory()
            return factory(dependency, caller=caller, context=context, delegation=self)
        if isinstance(dependency, HttpDependency):
            return HttpApiHandle(
                dependency=dependency,
                tokens=self.tokens(caller, context=context),
                http_client=self._http,
            )
        if isinstance(dependency, AgentDependency):
            url = dependency.url or self._agent_urls.get(dependency.name)
            if url is None:
                raise ConfigurationError(
                    f"agent dependency {dependency.name!r} has no URL: declare "
                    f"AgentDependency({dependency.name!r}, url=...) or pass agent_urls",
                    setting="dependencies",
                )
            return AgentHandle(
                name=dependency.name,
                url=url,
                scopes=dependency.scopes,
                tokens=self.tokens(caller, context=context),
                trusted_issuers=self.trusted_issuers,
                http_client=self._http,
                card_cache=self.card_cache,
                context=context,
                timeout=self._timeout,
            )
        other = _FACTORIES.get(dependency.kind)
        if other is None:
            raise ConfigurationError(
                f"dependency {dependency.name!r} is of kind {dependency.kind!r}, which no "
                "installed integration can call",
                setting="dependencies",
            )
        return other(dependency, caller=caller, context=context, delegation=self)

    async def aclose(self) -> None:
        closers, self._closers = self._closers, []
        for closer in reversed(closers):
            await closer()
        if self._owns_http:
            await self._http.aclose()
        if self._owns_exchange and self._exchange is not None:
            await self._exchange.aclose()

    def __repr__(self) -> str:
        return f"TokenExchangeDelegation(trusted_issuers={self._trusted!r})"


def _event_state(event: StreamResponse) -> str | None:
    """The task state an event reports, as an audit outcome (``completed``, ``failed``...)."""
    if event.status_update is not None:
        status = event.status_update.status
    elif event.task is not None:
        status = event.task.status
    else:
        return None
    return status.state.value.removeprefix("TASK_STATE_").lower()


def _mcp_factory() -> HandleFactory:
    install = "install it with pip install 'keycard-agents[mcp]'"
    if "mcp" not in _FACTORIES and importlib.util.find_spec(_MCP_MODULE) is not None:
        try:
            importlib.import_module(_MCP_MODULE)  # registers its factory
        except ImportError as exc:
            raise ConfigurationError(
                f"MCP dependencies need keycard-agents[mcp] support: {install} "
                f"({type(exc).__name__}: {exc})",
                setting="dependencies",
            ) from exc
        if "mcp" not in _FACTORIES:
            raise ConfigurationError(
                f"{_MCP_MODULE} is installed but registered no handle factory for MCP "
                "dependencies (register_handle_factory('mcp', ...))",
                setting="dependencies",
            )
    factory = _FACTORIES.get("mcp")
    if factory is None:
        raise ConfigurationError(
            f"MCP dependencies need keycard-agents[mcp] support: {install}",
            setting="dependencies",
        )
    return factory


def delegation_for(
    agent: Agent,
    *,
    http_client: httpx.AsyncClient | None = None,
    credential: ApplicationCredential | None = None,
    token_cache: SharedTokenCache | None = None,
) -> TokenExchangeDelegation:
    """The delegation provider for ``agent``, from its ``credential``, ``exchange`` and
    ``trusted_issuers`` settings.

    Without an ``exchange`` client, one is built from ``agent.credential`` (default
    :func:`credential_from_env`) and ``agent.issuer`` (default :func:`resolve_issuer`),
    using ``http_client`` when given: now, when the agent declares dependencies, so a
    missing or contradictory setting stops the agent at start-up with a message naming
    it; otherwise when a dependency is first called (an agent that calls nothing needs no
    credential). ``credential`` is used instead of ``agent.credential`` when given
    (``create_app`` passes the one the environment selects, so the keys it publishes are
    the ones its assertions are signed with). ``token_cache`` is shared with the agent's
    other replicas by the client built here (docs/replicas.md).
    """
    configured = agent.exchange
    if credential is None:
        credential = agent.credential

    def bound(chosen: ApplicationCredential) -> ApplicationCredential:
        bind_to_agent(chosen, agent.url)
        return chosen

    trusted = agent.trusted_issuers

    def build() -> TokenExchangeClient:

        issuer = agent.issuer or resolve_issuer()
        return TokenExchangeClient(
            issuer=issuer,
            credential=bound(credential if credential is not None else credential_from_env()),
            http_client=http_client,
            # Explicit settings win over discovery (the issuer may have a path, or no
            # RFC 8414 document); they only apply to the agent's own issuer.
            token_endpoint=agent.token_endpoint if agent.issuer else None,
            metadata_url=agent.metadata_url if agent.issuer else None,
            token_cache=token_cache,
        )

    if configured is None and agent.dependencies:
        return TokenExchangeDelegation(
            exchange=build(), owns_exchange=True, trusted_issuers=trusted, http_client=http_client
        )
    return TokenExchangeDelegation(
        exchange=configured if configured is not None else build,
        owns_exchange=configured is None,
        trusted_issuers=trusted,
        http_client=http_client,
    )


# The handles are what the agent model promises a skill (checked by mypy, no runtime cost).
_AGENT_CALLS: type[AgentCalls] = AgentHandle
_HTTP_API_CALLS: type[HttpApiCalls] = HttpApiHandle
