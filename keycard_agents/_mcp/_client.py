"""Calling MCP servers on the caller's behalf: one RFC 8693 exchange per hop, per server.

The agent never forwards the token it received (the MCP authorization spec forbids token
passthrough): it exchanges it (RFC 8693 §2.1) for a token whose ``resource`` (RFC 8707) is
the MCP server's own resource identifier, read from its RFC 9728 metadata, and sends that
as ``Authorization: Bearer`` (RFC 6750 §2.1) over streamable HTTP (MCP spec "Transports").
A 401 gets one fresh exchange and one retry. Every operation has a deadline; failures
become :class:`McpServerError` (down, slow, malformed), :class:`McpTokenRejectedError` or,
for the caller to decide, an ``is_error`` :class:`McpToolResult`.

Sessions are never shared between principals: each handle belongs to one caller and each
operation (or :meth:`McpServerHandle.session` block) opens its own MCP session with that
caller's delegated token.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
import httpx
import httpx2
import mcp_types
from mcp import Client, MCPError, UrlElicitationRequiredError
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from keycard_agents._a2a.interrupt import TaskInterrupt
from keycard_agents._agent._context import Context, DelegationProvider
from keycard_agents._agent._dependencies import McpDependency
from keycard_agents._audit._calls import audited_call
from keycard_agents._errors import (
    AuthenticationError,
    ConfigurationError,
    DelegationDeniedError,
    KeycardError,
)
from keycard_agents._logs import get_logger
from keycard_agents._mcp._discovery import discover_resource
from keycard_agents._mcp._errors import (
    McpAuthRequiredError,
    McpServerError,
    McpTokenRejectedError,
)
from keycard_agents._mcp._results import McpTool, McpToolResult, result_from_mcp, tool_from_mcp
from keycard_agents._oauth._resource_server import Caller
from keycard_agents._oauth._urls import names_same_server
from keycard_agents._observe._tracing import (
    ATTR_DEPENDENCY,
    ATTR_OUTCOME,
    ATTR_SCOPES_REQUESTED,
    ATTR_TARGET,
    ATTR_TOOL,
    inject_context,
    set_attributes,
    span,
)

if sys.version_info >= (3, 11):  # pragma: no cover - depends on the interpreter
    from builtins import BaseExceptionGroup
else:  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

if TYPE_CHECKING:
    from keycard_agents._agent._dependencies import Dependency
    from keycard_agents._oauth._exchange import ExchangedToken

__all__ = ["McpConnector", "McpServerHandle", "McpSession", "TokenExchanger", "TokenSource"]

logger = get_logger("keycard_agents.mcp")

_MAX_PAGES = 100
_T = TypeVar("_T")


class TokenExchanger(Protocol):
    """What the connector needs from :class:`~keycard_agents.auth.TokenExchangeClient`."""

    @property
    def issuer(self) -> str:
        """The token service's issuer: the default authorization server a server may name."""
        ...

    async def exchange(
        self,
        subject_token: str,
        *,
        resource: str,
        scopes: Sequence[str] | None = None,
        refresh: bool = False,
    ) -> ExchangedToken: ...


class TokenSource(Protocol):
    """Exchanged tokens for one caller (``keycard_agents.delegation.DelegatedTokens``)."""

    async def get(
        self, resource: str, *, scopes: Sequence[str] | None = None, refresh: bool = False
    ) -> ExchangedToken: ...


class _DelegatedAuth(httpx2.Auth):
    """Bearer auth with one fresh exchange after a 401 (RFC 6750 §3.1 ``invalid_token``)."""

    def __init__(self, token: str, renew: Callable[[], Awaitable[str]]) -> None:
        self._token = token
        self._renew = renew
        self._lock = anyio.Lock()
        self.renewed = False
        self.rejected_status: int | None = None
        self.renew_error: BaseException | None = None

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        sent = self._token
        request.headers["Authorization"] = f"Bearer {sent}"
        inject_context(request.headers)  # W3C traceparent of the current span
        response = yield request
        if response.status_code == 403:
            self.rejected_status = 403
        if response.status_code != 401:
            return
        async with self._lock:
            if sent == self._token and not self.renewed:
                self.renewed = True
                try:
                    self._token = await self._renew()
                except (KeycardError, TaskInterrupt) as exc:  # raised after the session ends
                    self.renew_error = exc
            fresh = self._token
        if fresh == sent:
            self.rejected_status = 401
            return
        request.headers["Authorization"] = f"Bearer {fresh}"
        response = yield request
        if response.status_code in (401, 403):
            self.rejected_status = response.status_code


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _leaf(exc: BaseException) -> BaseException:
    """The exception that matters in a (nested) group from the SDK's task groups: ours
    first, then any other error, then whatever there is (a cancellation)."""
    leaves = _leaves(exc)
    for wanted in (KeycardError, Exception):
        for leaf in leaves:
            if isinstance(leaf, wanted):
                return leaf
    return leaves[0]


class McpSession:
    """An open MCP session for one caller; see :meth:`McpServerHandle.session`."""

    def __init__(self, client: Client, *, scope: anyio.CancelScope, timeout: float) -> None:
        self._client = client
        self._scope = scope
        self._timeout = timeout

    def _arm(self) -> None:
        self._scope.deadline = anyio.current_time() + self._timeout

    def _disarm(self) -> None:
        self._scope.deadline = math.inf

    async def list_tools(self) -> list[McpTool]:
        """All tools, following ``nextCursor`` pagination (at most 100 pages)."""
        tools: list[McpTool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            self._arm()
            page = await self._client.list_tools(cursor=cursor, cache_mode="refresh")
            tools.extend(tool_from_mcp(t) for t in page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self._disarm()
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> McpToolResult:
        """Call a tool; an ``is_error`` result is returned (check ``result.is_error``)."""
        self._arm()
        result = await self._client.call_tool(name, dict(arguments or {}))
        self._disarm()
        return result_from_mcp(result)


@dataclass
class _Catalog:
    tools: list[McpTool]
    expires_at: float


class McpConnector:
    """Connects an agent's skills to its declared MCP servers with delegated tokens.

    It is a :class:`~keycard_agents.delegation.DelegationProvider`: ``ctx.dependency(name)`` of an
    :class:`~keycard_agents.McpDependency` returns an :class:`McpServerHandle`; any other
    dependency goes to ``fallback`` (the provider for agents and HTTP APIs).

    ``exchange`` performs RFC 8693 exchanges (a :class:`~keycard_agents.auth.TokenExchangeClient`).
    ``trusted_issuers`` are the authorization servers an MCP server's RFC 9728 metadata
    must name one of before it gets a token (default: the exchange client's issuer), the
    check agent dependencies get too.
    ``timeout`` bounds each step of an MCP operation (connect, list, call) in seconds.
    ``tools_ttl`` is how long a tool listing is reused. ``http_client`` (core ``httpx``)
    fetches RFC 9728 metadata; ``mcp_http_client`` builds the ``httpx2`` client the MCP
    SDK speaks through (tests pass one with a mock transport). ``mode`` is the MCP
    client's protocol negotiation (``"auto"`` or ``"legacy"``).
    """

    def __init__(
        self,
        *,
        exchange: TokenExchanger,
        fallback: DelegationProvider | None = None,
        timeout: float = 30.0,
        tools_ttl: float = 300.0,
        http_client: httpx.AsyncClient | None = None,
        mcp_http_client: Callable[[httpx2.Auth, httpx2.Timeout], httpx2.AsyncClient] | None = None,
        mode: str = "auto",
        clock: Callable[[], float] = time.monotonic,
        trusted_issuers: Sequence[str] | None = None,
    ) -> None:
        if timeout <= 0 or tools_ttl < 0:
            raise ConfigurationError(
                "timeout must be positive and tools_ttl not negative", setting="McpConnector"
            )
        if mode not in ("auto", "legacy"):
            raise ConfigurationError("mode must be 'auto' or 'legacy'", setting="mode")
        self._exchange = exchange
        self._trusted = tuple(trusted_issuers) if trusted_issuers else None
        self._fallback = fallback
        self._timeout = timeout
        self._ttl = tools_ttl
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()
        self._mcp_http = mcp_http_client or _default_mcp_http
        self._mode = mode
        self._clock = clock
        self._resources: dict[str, str] = {}
        self._catalogs: dict[str, _Catalog] = {}

    # -- DelegationProvider ------------------------------------------------------------

    def handle(self, dependency: Dependency, *, caller: Caller, context: Context | None) -> Any:
        if isinstance(dependency, McpDependency):
            return McpServerHandle(self, dependency, caller)
        if self._fallback is None:
            raise ConfigurationError(
                f"dependency {dependency.name!r} is a {dependency.kind} dependency; pass "
                "McpConnector(fallback=...) a delegation provider for agents and HTTP APIs",
                setting="fallback",
            )
        if context is None:
            raise ConfigurationError("a non-MCP dependency handle needs the skill's context")
        return self._fallback.handle(dependency, caller=caller, context=context)

    def for_caller(self, dependency: McpDependency, caller: Caller) -> McpServerHandle:
        """A handle outside a skill (for example at startup, with an operator's token)."""
        return McpServerHandle(self, dependency, caller)

    # -- resources and tokens ------------------------------------------------------------

    @property
    def trusted_issuers(self) -> tuple[str, ...]:
        return self._trusted if self._trusted is not None else (self._exchange.issuer,)

    async def resource(self, dependency: McpDependency) -> str:
        """The MCP server's resource identifier: declared (``McpDependency(resource=...)``, the
        operator's word, no metadata fetched), or from its RFC 9728 metadata once that
        names an authorization server this agent trusts."""
        if dependency.resource:
            return dependency.resource
        cached = self._resources.get(dependency.url)
        if cached is None:
            found = await discover_resource(
                self._http, dependency.url, server=dependency.name, time_limit=self._timeout
            )
            trusted = self.trusted_issuers
            # pydantic-based servers (the mcp SDK) write http://host:port/ for an issuer
            # http://host:port: compare as identifiers, a trailing slash aside.
            named = found.authorization_servers
            if not any(names_same_server(s, t) for s in named for t in trusted):
                raise DelegationDeniedError(
                    "invalid_target",
                    f"MCP server {dependency.name!r} at {dependency.url} names authorization "
                    f"servers ({', '.join(named) or 'none'}) that this agent does not trust "
                    f"({', '.join(trusted)}): refusing to send it a token; add its issuer to "
                    "trusted_issuers if it is legitimate",
                )
            cached = self._resources[dependency.url] = found.resource
        return cached

    async def _token(
        self,
        dependency: McpDependency,
        caller: Caller,
        resource: str,
        *,
        refresh: bool,
        tokens: TokenSource | None = None,
    ) -> str:
        scopes = dependency.scopes or None
        if tokens is not None:
            return (await tokens.get(resource, scopes=scopes, refresh=refresh)).access_token
        if caller.token is None:
            raise AuthenticationError(
                f"calling MCP server {dependency.name!r} needs the caller's token to exchange; "
                "the call was anonymous"
            )
        token = await self._exchange.exchange(
            caller.token, resource=resource, scopes=scopes, refresh=refresh
        )
        return token.access_token

    # -- sessions ------------------------------------------------------------------------

    @asynccontextmanager
    async def open_session(
        self, dependency: McpDependency, caller: Caller, *, tokens: TokenSource | None = None
    ) -> AsyncIterator[McpSession]:
        """An MCP session authenticated as ``caller``; failures raise McpServerError.

        ``tokens`` (optional) supplies the caller's exchanged tokens instead of the
        connector's own exchange client.
        """
        name = dependency.name
        resource = await self.resource(dependency)
        token = await self._token(dependency, caller, resource, refresh=False, tokens=tokens)

        async def renew() -> str:
            logger.info("MCP server %s answered 401; exchanging a fresh token once", name)
            return await self._token(dependency, caller, resource, refresh=True, tokens=tokens)

        auth = _DelegatedAuth(token, renew)
        scope = anyio.CancelScope(deadline=anyio.current_time() + self._timeout)
        timeout = httpx2.Timeout(self._timeout)
        try:
            with scope:
                async with self._mcp_http(auth, timeout) as http:
                    transport = streamable_http_client(dependency.url, http_client=http)
                    async with Client(transport, mode=self._mode, cache=None) as client:
                        scope.deadline = math.inf  # the caller's own work is not timed
                        try:
                            yield McpSession(client, scope=scope, timeout=self._timeout)
                        finally:
                            scope.deadline = anyio.current_time() + self._timeout
        except BaseException as exc:
            leaf = _leaf(exc)
            if isinstance(leaf, anyio.get_cancelled_exc_class()):
                raise  # cancelled from outside: the canceller must see its own exception
            if isinstance(leaf, Exception):
                translated = self._translate_or_time_out(leaf, scope, auth, name)
                if translated is not None:
                    raise translated from leaf
            if leaf is exc:
                raise
            raise leaf from None  # a lone error out of the SDK's task groups, unwrapped
        if scope.cancelled_caught:
            raise self._timed_out(auth, name)

    def _translate_or_time_out(
        self, leaf: Exception, scope: anyio.CancelScope, auth: _DelegatedAuth, name: str
    ) -> BaseException | None:
        if scope.cancel_called and not isinstance(leaf, KeycardError):
            return self._timed_out(auth, name)
        return self._translate(leaf, auth, name)

    def _timed_out(self, auth: _DelegatedAuth, name: str) -> BaseException:
        return self._rejected(auth, name) or McpServerError(
            f"MCP server {name!r} did not answer within {self._timeout:g} s", server=name
        )

    def _rejected(self, auth: _DelegatedAuth, name: str) -> BaseException | None:
        if auth.renew_error is not None:
            return auth.renew_error
        if auth.rejected_status is not None:
            return McpTokenRejectedError(
                f"MCP server {name!r} rejected the delegated token (HTTP "
                f"{auth.rejected_status}) also after a fresh exchange; check that it trusts "
                "this token service and expects the resource the token was issued for",
                server=name,
                status_code=auth.rejected_status,
            )
        return None

    def _translate(
        self, exc: BaseException, auth: _DelegatedAuth, name: str
    ) -> BaseException | None:
        if isinstance(exc, (MCPError, httpx2.HTTPError, anyio.BrokenResourceError)):
            rejected = self._rejected(auth, name)
            if rejected is not None:
                return rejected
        if isinstance(exc, KeycardError):
            return None
        if isinstance(exc, MCPError) and exc.error.code == URL_ELICITATION_REQUIRED:
            asked = _elicitation(exc)
            if asked is not None:
                return McpAuthRequiredError(
                    f"MCP server {name!r} needs the user first: {asked.message[:300]}",
                    server=name,
                    url=asked.url,
                )
        if isinstance(exc, MCPError):
            return McpServerError(
                f"MCP server {name!r} answered with an error: {exc.error.message[:300]}",
                server=name,
            )
        if isinstance(exc, httpx2.HTTPError):
            return McpServerError(
                f"MCP server {name!r} is unreachable ({type(exc).__name__}); is it running at "
                "the declared url?",
                server=name,
            )
        if isinstance(exc, ValidationError):
            return McpServerError(
                f"MCP server {name!r} sent a malformed MCP result ({exc.error_count()} "
                "validation error(s))",
                server=name,
            )
        if isinstance(exc, (anyio.BrokenResourceError, anyio.ClosedResourceError)):
            return McpServerError(f"MCP server {name!r} closed the connection", server=name)
        return None

    async def run(
        self,
        dependency: McpDependency,
        caller: Caller,
        operation: Callable[[McpSession], Awaitable[_T]],
        *,
        tokens: TokenSource | None = None,
    ) -> _T:
        async with self.open_session(dependency, caller, tokens=tokens) as session:
            return await operation(session)

    # -- tool catalogs -------------------------------------------------------------------

    async def list_tools(
        self,
        dependency: McpDependency,
        caller: Caller,
        *,
        refresh: bool = False,
        tokens: TokenSource | None = None,
    ) -> list[McpTool]:
        """The server's tools, reused for ``tools_ttl`` seconds unless ``refresh``."""
        cached = self._catalogs.get(dependency.name)
        if cached is not None and not refresh and self._clock() < cached.expires_at:
            return list(cached.tools)
        tools = await self.run(dependency, caller, lambda s: s.list_tools(), tokens=tokens)
        self._catalogs[dependency.name] = _Catalog(tools, self._clock() + self._ttl)
        return list(tools)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> McpConnector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"McpConnector(timeout={self._timeout:g}, tools_ttl={self._ttl:g})"


URL_ELICITATION_REQUIRED = -32042  # MCP 2025-11-25, "Elicitation": URL mode


def _elicitation(exc: MCPError) -> mcp_types.ElicitRequestURLParams | None:
    """The first URL-mode elicitation of a -32042 error whose URL is http(s), else None."""
    try:
        asked = UrlElicitationRequiredError.from_error(exc.error).elicitations
    except (ValueError, ValidationError):
        return None
    for item in asked:
        scheme = item.url.split(":", 1)[0].lower()
        if scheme in ("https", "http") and len(item.url) <= 2048 and item.url.isprintable():
            return item
    return None


def _default_mcp_http(auth: httpx2.Auth, timeout: httpx2.Timeout) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(auth=auth, timeout=timeout)


class McpServerHandle:
    """What ``ctx.dependency(name)`` returns for an MCP server: its tools, called with a
    token exchanged from the caller's. Bound to one caller; never share it.

    With the skill's ``context``, a tool call the server answers with URL-mode
    elicitation ends the task in AUTH_REQUIRED with the server's link, and is made again
    when the client resumes the task; without it, :class:`McpAuthRequiredError` is raised.
    """

    def __init__(
        self,
        connector: McpConnector,
        dependency: McpDependency,
        caller: Caller,
        *,
        tokens: TokenSource | None = None,
        context: Context | None = None,
    ) -> None:
        self._connector = connector
        self.dependency = dependency
        self._caller = caller
        self._tokens = tokens
        self._context = context

    @property
    def name(self) -> str:
        return self.dependency.name

    async def list_tools(self, *, refresh: bool = False) -> list[McpTool]:
        """The server's tools (cached for the connector's ``tools_ttl``)."""
        return await self._connector.list_tools(
            self.dependency, self._caller, refresh=refresh, tokens=self._tokens
        )

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> McpToolResult:
        """Call one tool in its own session; ``is_error`` results are returned."""
        dependency = self.dependency
        with span(f"MCP call_tool {name}", kind=SpanKind.CLIENT) as current:
            if current.is_recording():
                set_attributes(
                    current,
                    {
                        ATTR_TOOL: name,
                        ATTR_DEPENDENCY: dependency.name,
                        ATTR_TARGET: dependency.url,
                        ATTR_SCOPES_REQUESTED: dependency.scopes,
                    },
                )
            async with audited_call(
                target=dependency.url,
                dependency=dependency.name,
                scopes_requested=dependency.scopes,
            ) as call:
                while True:
                    try:
                        result = await self._connector.run(
                            dependency,
                            self._caller,
                            lambda s: s.call_tool(name, arguments),
                            tokens=self._tokens,
                        )
                        break
                    except McpAuthRequiredError as exc:
                        if self._context is None:
                            raise
                        call.outcome = "auth_required"
                        # Interrupts the task; returns (and the call is retried) on resume.
                        await self._context.require_auth(
                            f"{exc} Complete it at {exc.url}, then send a message to this "
                            "task to continue.",
                            url=exc.url,
                        )
                if result.is_error:
                    call.outcome = "failed"
                    set_attributes(current, {ATTR_OUTCOME: "failed", "error.type": "tool_error"})
                return result

    def session(self) -> AbstractAsyncContextManager[McpSession]:
        """Several operations in one MCP session: ``async with handle.session() as s:``."""
        return self._connector.open_session(self.dependency, self._caller, tokens=self._tokens)

    def __repr__(self) -> str:
        return f"McpServerHandle(name={self.name!r}, url={self.dependency.url!r})"
