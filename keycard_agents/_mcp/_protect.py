"""Protecting an existing MCP server: bearer tokens in, delegated tokens out.

Wraps the streamable HTTP app of an ``mcp`` SDK server (or any Starlette app serving MCP)
as the MCP authorization spec asks of a resource server: RFC 6750 §2.1 bearer tokens
verified by our verifier with the MCP endpoint as audience (RFC 8707 resource, RFC 9068
§4), RFC 9728 §3.1 protected resource metadata at ``/.well-known/oauth-protected-resource``
followed by the endpoint's path, RFC 6750 §3 / §3.1 challenges (no ``error`` attribute
when no token was sent, ``invalid_token``, ``insufficient_scope`` with ``scope``) carrying
RFC 9728 §5.1 ``resource_metadata``, and CORS (Fetch standard) for browser clients.

Tools read the verified caller with :func:`current_principal`, and ``@auth.grant(...)``
gives a tool an :class:`~keycard_agents.AccessContext` of tokens for downstream APIs, one
RFC 8693 exchange of the caller's token per resource, run concurrently (the MCP spec
forbids passing the caller's token through).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx
from mcp.server.auth.middleware.auth_context import auth_context_var, get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keycard_agents._agent._dependencies import HttpDependency
from keycard_agents._agent._grant import (
    MOCK_ACCESS,
    AccessContext,
    ResourceError,
    error_of,
)
from keycard_agents._errors import ConfigurationError, InvalidTokenError, KeycardError
from keycard_agents._jose._principal import Principal
from keycard_agents._logs import get_logger
from keycard_agents._oauth._credentials import (
    ApplicationCredential,
    bind_to_agent,
    credential_from_env,
    resolve_issuer,
)
from keycard_agents._oauth._exchange import ExchangedToken, TokenExchangeClient
from keycard_agents._oauth._jwks import TrustedIssuer
from keycard_agents._oauth._resource_server import (
    BearerVerifier,
    Caller,
    MissingCredentialsError,
    auth_failure,
    bearer_token,
)
from keycard_agents._oauth._urls import protected_resource_metadata_url
from keycard_agents._oauth._verifier import TokenVerifier

__all__ = ["AuthProvider", "current_caller", "current_principal"]

logger = get_logger("keycard_agents.mcp")

_CALLER: ContextVar[Caller | None] = ContextVar("keycard_mcp_caller", default=None)

_EXPOSE = "Mcp-Session-Id, Mcp-Protocol-Version, WWW-Authenticate"
_ALLOW_HEADERS = (
    "Authorization, Content-Type, Accept, Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID"
)


def current_caller() -> Caller:
    """The caller of the MCP request being served (principal and token).

    Set by :class:`AuthProvider`'s app; under a FastMCP server protected by
    :meth:`AuthProvider.fastmcp`, read from the access token the SDK keeps for the
    request. ``Caller(None)`` outside an authenticated request.
    """
    caller = _CALLER.get()
    if caller is not None:
        return caller
    access = get_access_token()
    if access is not None and access.claims:
        return Caller(Principal.from_claims(access.claims), token=access.token)
    return Caller(None)


def current_principal() -> Principal | None:
    """The verified principal (user, ``act`` chain, scopes, ``txn``) of the current request."""
    return current_caller().principal


def _access_token(principal: Principal, token: str, resource: str) -> AccessToken:
    current = principal.actors.current
    client_id = principal.client_id or (current.sub if current else principal.user)
    return AccessToken(
        token=token,
        client_id=client_id,
        scopes=sorted(principal.scopes),
        expires_at=principal.expires_at,
        resource=resource,
        subject=principal.user,
        claims=dict(principal.claims),
    )


class AuthProvider:
    """Authentication, authorization and delegated API access for an MCP server.

    ``url`` is the MCP endpoint's public URL (``https://host/mcp``): the audience of the
    tokens it accepts and the ``resource`` clients ask the issuer for. The issuer is
    ``issuer=``, else Keycard's ``zone_id=`` / ``zone_url=`` (or their environment
    variables). ``credential`` (default: from the environment, when a tool first needs a
    delegated token) is how the server authenticates its RFC 8693 exchanges.
    ``required_scopes`` must be in every token (else 403 ``insufficient_scope``);
    ``scopes_supported`` adds to what the metadata advertises (the required scopes and
    the scopes of every ``grant`` are always listed, so a client asks for what the whole
    chain needs). ``allowed_origins`` are the browser origins CORS lets in (``"*"``: any).

    Protect an ``mcp`` SDK server with ``auth.app(server)``, a FastMCP server with
    ``FastMCP(..., auth=auth.fastmcp())``.
    """

    def __init__(
        self,
        *,
        url: str,
        issuer: str | None = None,
        zone_id: str | None = None,
        zone_url: str | None = None,
        credential: ApplicationCredential | None = None,
        required_scopes: Sequence[str] = (),
        scopes_supported: Sequence[str] = (),
        verifier: BearerVerifier | None = None,
        exchange: TokenExchangeClient | None = None,
        allowed_origins: Sequence[str] = ("*",),
        resource_name: str | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise ConfigurationError(
                f"AuthProvider(url=...) must be the MCP endpoint's absolute http(s) URL, got "
                f"{url[:100]!r}",
                setting="url",
            )
        for label, value in (("required_scopes", required_scopes), ("scopes", scopes_supported)):
            if isinstance(value, str):
                raise ConfigurationError(f"{label} must be a list of strings", setting=label)
        self.resource = url
        self.issuer = resolve_issuer(issuer=issuer, zone_id=zone_id, zone_url=zone_url)
        self.metadata_url = protected_resource_metadata_url(url)
        self.required_scopes = tuple(required_scopes)
        self.resource_name = resource_name
        self._extra_scopes = tuple(scopes_supported)
        self._grant_scopes: dict[str, tuple[str, ...]] = {}
        self._origins = tuple(allowed_origins)
        self._credential = credential
        self._http = http_client
        self._closers: list[Callable[[], Awaitable[None]]] = []
        if verifier is None:
            own = TokenVerifier(issuers=[TrustedIssuer(self.issuer)], http_client=http_client)
            self._closers.append(own.aclose)
            verifier = own
        self._verifier = verifier
        self._exchange = exchange
        self._owns_exchange = False

    # -- tokens in -------------------------------------------------------------------------

    async def verify(self, token: str, *, required_scopes: Sequence[str] = ()) -> Principal:
        """Every check of the verifier, with this endpoint as audience."""
        return await self._verifier.verify(
            token, audience=self.resource, required_scopes=required_scopes
        )

    @property
    def scopes_supported(self) -> list[str]:
        """What a caller's token needs: required scopes, then every grant's scopes."""
        scopes = dict.fromkeys(self.required_scopes)
        for granted in self._grant_scopes.values():
            scopes.update(dict.fromkeys(granted))
        scopes.update(dict.fromkeys(self._extra_scopes))
        return list(scopes)

    def metadata(self) -> dict[str, Any]:
        """The RFC 9728 §2 protected resource metadata of the endpoint."""
        data: dict[str, Any] = {
            "resource": self.resource,
            "authorization_servers": [self.issuer],
            "scopes_supported": self.scopes_supported,
            "bearer_methods_supported": ["header"],
        }
        if self.resource_name:
            data["resource_name"] = self.resource_name
        return data

    async def authenticate(self, headers: Mapping[str, str]) -> tuple[Principal, str]:
        """The verified principal and token of a request; raises what
        :func:`~keycard_agents._oauth._resource_server.auth_failure` maps."""
        token = bearer_token(headers)
        if token is None:
            raise MissingCredentialsError("This MCP server requires a bearer token.")
        principal = await self.verify(token, required_scopes=self.required_scopes)
        return principal, token

    # -- the ASGI app ----------------------------------------------------------------------

    def app(self, server: MCPServer[Any] | Starlette, **options: Any) -> Starlette:
        """The protected ASGI app of ``server`` (serve it where ``url`` points).

        An ``MCPServer`` is served over streamable HTTP at ``url``'s path (``options`` go
        to ``streamable_http_app``); a Starlette app is wrapped as it is. The app's
        lifespan runs the server's and closes what this provider opened.
        """
        path = urlsplit(self.resource).path or "/"
        if isinstance(server, MCPServer):
            inner = server.streamable_http_app(streamable_http_path=path, **options)
        elif isinstance(server, Starlette):
            if options:
                raise ConfigurationError("options apply to an MCPServer only", setting="options")
            inner = server
        else:
            raise ConfigurationError(
                "AuthProvider.app() takes an mcp MCPServer or a Starlette app", setting="server"
            )
        well_known = urlsplit(self.metadata_url).path

        @asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            try:
                async with inner.router.lifespan_context(inner):
                    yield
            finally:
                await self.aclose()

        return Starlette(
            routes=[
                Route(well_known, self.metadata_endpoint, methods=["GET", "OPTIONS"]),
                Mount("/", app=_Guard(self, inner)),
            ],
            lifespan=lifespan,
        )

    async def metadata_endpoint(self, request: Request) -> Response:
        """Serve :meth:`metadata` (GET, and CORS preflight)."""
        cors = self.cors_headers(request.headers.get("origin"))
        if request.method == "OPTIONS":
            return Response(
                status_code=204, headers={**cors, "Access-Control-Allow-Methods": "GET, OPTIONS"}
            )
        return JSONResponse(self.metadata(), headers={**cors, "Cache-Control": "max-age=300"})

    def cors_headers(self, origin: str | None) -> dict[str, str]:
        """CORS response headers for a request from ``origin`` (none when not allowed)."""
        if not origin:
            return {}
        if "*" in self._origins:
            allowed = "*"
        elif origin in self._origins:
            allowed = origin
        else:
            return {}
        headers = {"Access-Control-Allow-Origin": allowed, "Access-Control-Expose-Headers": _EXPOSE}
        if allowed != "*":
            headers["Vary"] = "Origin"
        return headers

    # -- tokens out ------------------------------------------------------------------------

    def _exchange_client(self) -> TokenExchangeClient:
        if self._exchange is None:
            credential = self._credential if self._credential is not None else credential_from_env()
            bind_to_agent(credential, self.resource)
            self._exchange = TokenExchangeClient(
                issuer=self.issuer, credential=credential, http_client=self._http
            )
            self._owns_exchange = True
        return self._exchange

    async def access(self, resources: Sequence[str]) -> AccessContext:
        """Tokens for ``resources`` exchanged from the current caller's token; never raises."""
        specs = tuple(dict.fromkeys(resources))
        mock = MOCK_ACCESS.get()
        if mock is not None:
            return mock([(spec, HttpDependency(spec, resource=spec)) for spec in specs])
        caller = current_caller()
        if caller.token is None:
            reason = ResourceError(
                "access_denied",
                "the tool was called without a verified bearer token: serve it with "
                "AuthProvider.app() (or FastMCP(auth=auth.fastmcp()))",
            )
            return AccessContext(errors=dict.fromkeys(specs, reason), error=reason)
        token = caller.token
        tokens: dict[str, ExchangedToken] = {}
        errors: dict[str, ResourceError] = {}

        async def fetch(spec: str) -> None:
            try:
                client = self._exchange_client()
                scopes = self._grant_scopes.get(spec) or None
                tokens[spec] = await client.exchange(token, resource=spec, scopes=scopes)
            except KeycardError as exc:
                errors[spec] = error_of(exc)
            except Exception as exc:  # never throw into the tool; the type is enough
                logger.error("token exchange for %s failed: %s", spec, type(exc).__name__)
                errors[spec] = ResourceError("server_error", f"{type(exc).__name__}")

        async with anyio.create_task_group() as group:
            for spec in specs:
                group.start_soon(fetch, spec)
        return AccessContext(
            tokens={s: tokens[s] for s in specs if s in tokens},
            errors={s: errors[s] for s in specs if s in errors},
        )

    def grant(
        self, *resources: str | Sequence[str], scopes: Sequence[str] = ()
    ) -> Callable[[Callable[..., Any]], Callable[..., Awaitable[Any]]]:
        """Give a tool tokens for ``resources`` (RFC 8707 resource URLs).

        The tool (sync or async) takes one parameter annotated :class:`AccessContext`,
        filled before it runs and hidden from the tool's input schema. ``scopes`` are
        requested in each exchange (default: all the caller's scopes the resource
        accepts) and advertised in the metadata. Put it below the server's decorator::

            @server.tool()
            @auth.grant("https://api.example.com", scopes=["notes:read"])
            async def notes(access: AccessContext) -> str:
                if access.has_errors():
                    return f"no access: {access.get_errors()}"
                token = access.access("https://api.example.com").access_token
                ...
        """
        flat: list[object] = []
        for item in resources:
            flat.extend(item if isinstance(item, (list, tuple)) else [item])
        if not flat or not all(isinstance(r, str) and r for r in flat):
            raise ConfigurationError("@grant needs one or more resource URLs")
        if isinstance(scopes, str):
            raise ConfigurationError("grant(scopes=...) must be a list of strings")
        specs = tuple(dict.fromkeys(str(r) for r in flat))
        for spec in specs:
            merged = dict.fromkeys((*self._grant_scopes.get(spec, ()), *scopes))
            self._grant_scopes[spec] = tuple(merged)

        def decorate(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
            signature = inspect.signature(func, eval_str=True)
            params = list(signature.parameters.values())
            access_params = [p for p in params if p.annotation is AccessContext]
            if len(access_params) != 1:
                raise ConfigurationError(
                    f"@grant: {func.__qualname__} needs exactly one parameter annotated "
                    "AccessContext to receive the tokens",
                    setting=func.__qualname__,
                )
            name = access_params[0].name
            kept = [p for p in params if p.name != name]
            is_async = inspect.iscoroutinefunction(func)

            @functools.wraps(func)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                kwargs[name] = await self.access(specs)
                if is_async:
                    return await func(*args, **kwargs)
                return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))

            annotations = {p.name: p.annotation for p in kept if p.annotation is not p.empty}
            if signature.return_annotation is not signature.empty:
                annotations["return"] = signature.return_annotation
            wrapper.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]
            wrapper.__annotations__ = annotations
            wrapper.__keycard_grant__ = specs  # type: ignore[attr-defined]
            return wrapper

        return decorate

    def fastmcp(self) -> Any:
        """This provider as a FastMCP auth provider: ``FastMCP(..., auth=auth.fastmcp())``."""
        # Here, not at the top: the adapter imports FastMCP, an optional extra.
        from keycard_agents._mcp._fastmcp import fastmcp_provider

        return fastmcp_provider(self)

    async def aclose(self) -> None:
        """Close the HTTP clients this provider opened (the app's lifespan calls it)."""
        closers, self._closers = self._closers, []
        if self._owns_exchange and self._exchange is not None:
            exchange, self._exchange, self._owns_exchange = self._exchange, None, False
            await exchange.aclose()  # a new one is built on the next loop that needs it
        for close in reversed(closers):
            await close()


class _Guard:
    """Authenticates every request to the inner app; sets the caller for its tools."""

    def __init__(self, provider: AuthProvider, inner: ASGIApp) -> None:
        self._provider = provider
        self._inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._inner(scope, receive, send)
            return
        headers = Headers(scope=scope)
        cors = self._provider.cors_headers(headers.get("origin"))
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            preflight = {
                **cors,
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": _ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
            }
            await Response(status_code=204, headers=preflight)(scope, receive, send)
            return
        try:
            principal, token = await self._provider.authenticate(headers)
        except KeycardError as exc:
            failure = auth_failure(exc, resource_metadata_url=self._provider.metadata_url)
            check = exc.check if isinstance(exc, InvalidTokenError) else type(exc).__name__
            logger.info(
                "MCP request to %s refused: %d (%s)",
                self._provider.resource,
                failure.status_code,
                check,
            )
            body: dict[str, str] = {"error_description": failure.message}
            if failure.error is not None:
                body = {"error": failure.error, **body}
            out = dict(cors)
            if failure.www_authenticate is not None:
                out["WWW-Authenticate"] = failure.www_authenticate
            response = JSONResponse(body, status_code=failure.status_code, headers=out)
            await response(scope, receive, send)
            return
        access = _access_token(principal, token, self._provider.resource)
        user = AuthenticatedUser(access)
        scope = {**scope, "user": user, "auth": AuthCredentials(access.scopes)}
        reset_caller = _CALLER.set(Caller(principal, token=token))
        reset_user = auth_context_var.set(user)
        try:
            await self._inner(scope, receive, _with_headers(send, cors))
        finally:
            auth_context_var.reset(reset_user)
            _CALLER.reset(reset_caller)


def _with_headers(send: Send, extra: Mapping[str, str]) -> Send:
    if not extra:
        return send
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *raw]}
        await send(message)

    return sending
