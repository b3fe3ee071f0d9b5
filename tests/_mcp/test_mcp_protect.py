"""Existing MCP servers protected by ``AuthProvider``: an ``mcp`` SDK ``MCPServer`` and a
FastMCP server, each reached over loopback HTTP by the official ``mcp`` client starting from
nothing but the server URL (401 → RFC 9728 metadata → RFC 8414 metadata → RFC 7591
registration → auth code + PKCE against our login page → a token whose audience is the MCP
endpoint), then calling ``@grant`` tools (async and sync) that reach a downstream API with
a delegated token whose ``act`` names the MCP server. Also the hostile cases at both
endpoints, CORS, and ``mock_access_context`` on plain tools."""

from __future__ import annotations

import json
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp_support import ServerThread, claims_of, free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from keycard_agents import AccessContext
from keycard_agents.auth import TokenVerifier, TrustedIssuer
from keycard_agents.mcp import AuthProvider, current_principal
from keycard_agents.sts import TokenService, hash_secret, parse_config
from keycard_agents.testing import mock_access_context

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # third-party import-time notices
    fastmcp = pytest.importorskip("fastmcp", minversion="4.1.0")
    from fastmcp.client.auth import OAuth as FastMCPOAuth

pytestmark = pytest.mark.anyio

SDK_SECRET = "notes-mcp-secret"  # the docs' credentials
FAST_SECRET = "fast-mcp-secret"
PASSWORD = "wonderland"


@dataclass
class World:
    sts: TokenService
    expired_sts: TokenService  # same keys, a clock two hours behind
    issuer: str
    api: str
    sdk_url: str
    fast_url: str
    api_seen: list[dict[str, Any]] = field(default_factory=list)


def api_app(issuer: str, api: str, seen: list[dict[str, Any]]) -> Starlette:
    """The downstream API: verifies the delegated token like any resource server."""
    verifier = TokenVerifier(issuers=[TrustedIssuer(issuer, jwks_uri=f"{issuer}/jwks.json")])

    async def notes(request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        principal = await verifier.verify(token, audience=api, required_scopes=["notes:read"])
        claims = dict(principal.claims)
        seen.append(claims)
        return JSONResponse({"notes": ["buy milk"], "for": claims["sub"], "act": claims["act"]})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await verifier.aclose()

    return Starlette(routes=[Route("/api/notes", notes)], lifespan=lifespan)


DOCS = Path(__file__).resolve().parents[2] / "docs" / "mcp.md"


def doc_example(heading: str, replacements: dict[str, str]) -> dict[str, Any]:
    """Run the first python block under ``heading`` of docs/mcp.md with the docs' fixed
    URLs replaced by this test's loopback URLs; return its namespace."""
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```\n")]
    for old, new in replacements.items():
        assert old in code, old
        code = code.replace(old, new)
    namespace: dict[str, Any] = {"__name__": "docs_mcp_example"}
    exec(compile(code, f"{DOCS}:{heading}", "exec"), namespace)  # noqa: S102 - our own docs
    return namespace


def sdk_server(issuer: str, url: str, api: str) -> Starlette:
    # The user code of the docs, served as it is; two tools are added for the assertions.
    ns = doc_example(
        "## Protect an `mcp` SDK server",
        {
            "http://127.0.0.1:8000/mcp": url,
            "http://127.0.0.1:8900": issuer,
            "http://127.0.0.1:8950/api": api,
        },
    )
    auth: AuthProvider = ns["auth"]
    server: MCPServer[Any] = ns["server"]

    @server.tool()
    @auth.grant(api)
    def notes_sync(access: AccessContext, prefix: str = "") -> str:
        """A sync tool: which resources it got a token for."""
        return prefix + ",".join(access.get_successful_resources())

    @server.tool()
    def whoami() -> dict[str, Any]:
        """The verified caller."""
        principal = current_principal()
        assert principal is not None
        return {"user": principal.user, "aud": principal.claims["aud"], "txn": principal.txn}

    app: Starlette = ns["app"]
    return app


def fast_server(issuer: str, url: str, api: str) -> Any:
    ns = doc_example(
        "## Protect a FastMCP server",
        {
            "http://127.0.0.1:8001/mcp": url,
            "http://127.0.0.1:8900": issuer,
            "http://127.0.0.1:8950/api": api,
        },
    )
    auth: AuthProvider = ns["auth"]

    @ns["server"].tool  # type: ignore[untyped-decorator]  # fastmcp's decorator is untyped
    def whoami() -> dict[str, Any]:
        """The verified caller."""
        principal = current_principal()
        assert principal is not None
        return {"user": principal.user, "aud": principal.claims["aud"]}

    inner = ns["app"]

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            async with inner.router.lifespan_context(inner):
                yield
        finally:
            await auth.aclose()  # its HTTP clients live on this server's loop

    return Starlette(routes=[Mount("/", app=inner)], lifespan=lifespan)


def sts_config(issuer: str, *, key_dir: Path, sdk_url: str, fast_url: str, api: str) -> Any:
    def mcp_agent(client_id: str, url: str, secret: str) -> dict[str, Any]:
        return {
            "client_id": client_id,
            "resource": url,
            "auth": "client_secret",
            "secret_hash": hash_secret(secret, cost=2**4),
            "scopes": ["notes:read"],
            "dependencies": [api],
        }

    return parse_config(
        {
            "issuer": issuer,
            "key_dir": str(key_dir),
            "agents": [
                mcp_agent("notes-mcp", sdk_url, SDK_SECRET),
                mcp_agent("fast-mcp", fast_url, FAST_SECRET),
            ],
            "resources": [{"resource": api, "scopes": ["notes:read"]}],
            "users": [{"username": "alice", "password": PASSWORD, "scopes": ["notes:read"]}],
        }
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    sts_port, api_port, sdk_port, fast_port = (free_port() for _ in range(4))
    issuer = f"http://127.0.0.1:{sts_port}"
    api = f"http://127.0.0.1:{api_port}/api"
    sdk_url = f"http://127.0.0.1:{sdk_port}/mcp"
    fast_url = f"http://127.0.0.1:{fast_port}/mcp"
    config = sts_config(
        issuer, key_dir=tmp_path_factory.mktemp("keys"), sdk_url=sdk_url, fast_url=fast_url, api=api
    )
    sts = TokenService(config)
    expired = TokenService(config, clock=lambda: __import__("time").time() - 7200)
    seen: list[dict[str, Any]] = []
    with ExitStack() as stack:
        stack.enter_context(ServerThread(sts.app, port=sts_port))
        stack.enter_context(ServerThread(api_app(issuer, api, seen), port=api_port))
        stack.enter_context(ServerThread(sdk_server(issuer, sdk_url, api), port=sdk_port))
        stack.enter_context(ServerThread(fast_server(issuer, fast_url, api), port=fast_port))
        yield World(sts, expired, issuer, api, sdk_url, fast_url, seen)


class MemoryStorage:
    """The client's token storage (the ``mcp`` SDK's ``TokenStorage`` Protocol)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Browser:
    """Plays the user: opens the authorization URL, signs in on our login page."""

    def __init__(self) -> None:
        self.result: AuthorizationCodeResult | None = None
        self.opened: list[str] = []

    async def open(self, url: str) -> None:
        self.opened.append(url)
        params = dict(parse_qs(urlsplit(url).query))
        flat = {k: v[0] for k, v in params.items()}
        base = url.split("?")[0]
        async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as http:
            page = await http.get(url)
            assert page.status_code == 200, page.text
            assert "password" in page.text
            reply = await http.post(base, data={**flat, "username": "alice", "password": PASSWORD})
        assert reply.status_code == 303, reply.text
        query = parse_qs(urlsplit(reply.headers["location"]).query)
        self.result = AuthorizationCodeResult(
            code=query["code"][0], state=query["state"][0], iss=query["iss"][0]
        )

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


async def _sign_in_and_call(url: str) -> tuple[MemoryStorage, Browser, dict[str, Any]]:
    storage, browser = MemoryStorage(), Browser()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            redirect_uris=[f"http://127.0.0.1:{free_port()}/callback"],  # type: ignore[list-item]
            client_name="e2e client",
        ),
        storage=storage,
        redirect_handler=browser.open,
        callback_handler=browser.callback,
    )
    out: dict[str, Any] = {}
    async with (
        httpx2.AsyncClient(auth=provider, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        out["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
        for name, args in (("notes", {}), ("whoami", {}), ("notes_sync", {"prefix": ">"})):
            if name in out["tools"]:
                result = await client.call_tool(name, args)
                assert not result.is_error, result
                text = result.content[0].text  # type: ignore[union-attr]
                out[name] = result.structured_content or json.loads(text)
    return storage, browser, out


@pytest.mark.parametrize("server", ["sdk", "fastmcp"])
async def test_official_client_signs_in_from_the_server_url(world: World, server: str) -> None:
    url = world.sdk_url if server == "sdk" else world.fast_url
    client_id = "notes-mcp" if server == "sdk" else "fast-mcp"
    storage, browser, out = await _sign_in_and_call(url)

    # The client registered itself (RFC 7591) and signed in for this endpoint (RFC 8707).
    assert storage.client is not None
    assert storage.client.client_id.startswith("dcr-")
    assert await world.sts.client_store.get(storage.client.client_id) is not None
    assert storage.tokens is not None
    user_claims = claims_of(storage.tokens.access_token)
    assert user_claims["aud"] == url
    assert user_claims["client_id"] == storage.client.client_id
    assert "notes:read" in user_claims["scope"].split()  # advertised by the metadata
    (opened,) = browser.opened
    assert parse_qs(urlsplit(opened).query)["resource"] == [url]

    assert out["whoami"]["user"] == "alice"
    assert out["whoami"]["aud"] == url
    # The @grant tool reached the API as the user, the MCP server named as the actor.
    notes = out["notes"]
    assert notes["for"] == "alice", notes
    assert notes["act"]["sub"] == client_id
    delegated = world.api_seen[-1]
    assert delegated["aud"] == world.api
    assert delegated["sub"] == "alice"
    assert delegated["client_id"] == client_id
    if server == "sdk":
        assert out["notes_sync"] == {"result": ">" + world.api}
        assert "notes_sync" in out["tools"]


async def test_metadata_is_at_the_path_aware_location(world: World) -> None:
    async with httpx.AsyncClient() as http:
        for url, scopes in ((world.sdk_url, ["notes:read"]), (world.fast_url, ["notes:read"])):
            origin = url.removesuffix("/mcp")
            reply = await http.get(f"{origin}/.well-known/oauth-protected-resource/mcp")
            assert reply.status_code == 200, reply.text
            metadata = reply.json()
            assert metadata["resource"] == url
            assert [s.rstrip("/") for s in metadata["authorization_servers"]] == [world.issuer]
            assert metadata["scopes_supported"] == scopes
        sdk_meta = (
            await http.get(
                f"{world.sdk_url.removesuffix('/mcp')}/.well-known/oauth-protected-resource/mcp"
            )
        ).json()
        assert sdk_meta["authorization_servers"] == [world.issuer]  # exactly as configured


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"},
    },
}


def _hostile(world: World, url: str) -> list[tuple[str, dict[str, str], int, str | None]]:
    def token(**kwargs: Any) -> str:
        kwargs.setdefault("scopes", ["notes:read"])
        return world.sts.issue_user_token("alice", **kwargs)

    other = url.replace("/mcp", "/other-mcp")
    expired = world.expired_sts.issue_user_token("alice", audience=url, scopes=["notes:read"])
    return [
        ("no token", {}, 401, None),
        ("basic scheme", {"Authorization": "Basic YTpi"}, 401, None),
        ("malformed", {"Authorization": "Bearer a b"}, 401, "invalid_token"),
        ("garbage", {"Authorization": "Bearer abc.def.ghi"}, 401, "invalid_token"),
        (
            "token for another MCP server",
            {"Authorization": f"Bearer {token(audience=other)}"},
            401,
            "invalid_token",
        ),
        (
            "token for the other protected server",
            {
                "Authorization": "Bearer "
                + token(audience=world.fast_url if url == world.sdk_url else world.sdk_url)
            },
            401,
            "invalid_token",
        ),
        ("expired", {"Authorization": f"Bearer {expired}"}, 401, "invalid_token"),
    ]


@pytest.mark.parametrize("server", ["sdk", "fastmcp"])
async def test_hostile_requests_get_the_rfc_6750_answer(world: World, server: str) -> None:
    url = world.sdk_url if server == "sdk" else world.fast_url
    async with httpx.AsyncClient(timeout=30) as http:
        for case, headers, status, error in _hostile(world, url):
            reply = await http.post(
                url,
                json=INIT,
                headers={"Accept": "application/json, text/event-stream", **headers},
            )
            assert reply.status_code == status, (case, reply.status_code, reply.text)
            challenge = reply.headers["www-authenticate"]
            assert challenge.startswith("Bearer"), case
            assert "resource_metadata=" in challenge, case
            if error is None:
                assert "error=" not in challenge, (case, challenge)  # RFC 6750 §3.1
            else:
                assert f'error="{error}"' in challenge, (case, challenge)


async def test_insufficient_scope_names_the_needed_scopes(world: World) -> None:
    # The FastMCP server requires notes:read in every token.
    token = world.sts.issue_user_token("alice", audience=world.fast_url, scopes=["other"])
    sdk_auth = AuthProvider(url=world.sdk_url, issuer=world.issuer, required_scopes=["admin"])
    sdk_token = world.sts.issue_user_token("alice", audience=world.sdk_url, scopes=["notes:read"])
    async with httpx.AsyncClient(timeout=30) as http:
        reply = await http.post(
            world.fast_url,
            json=INIT,
            headers={
                "Accept": "application/json, text/event-stream",
                "Authorization": f"Bearer {token}",
            },
        )
    assert reply.status_code == 403, reply.text
    assert 'error="insufficient_scope"' in reply.headers["www-authenticate"]
    assert "notes:read" in reply.headers["www-authenticate"]

    # Our own wrapper, in process: 403 with scope= the required scopes, CORS headers on.
    app = sdk_auth.app(MCPServer("scoped"))
    transport = httpx.ASGITransport(app=app)
    try:
        origin = world.sdk_url.removesuffix("/mcp")
        async with httpx.AsyncClient(transport=transport, base_url=origin) as http:
            reply = await http.post(
                "/mcp",
                json=INIT,
                headers={
                    "Accept": "application/json, text/event-stream",
                    "Authorization": f"Bearer {sdk_token}",
                    "Origin": "https://inspector.test",
                },
            )
            assert reply.status_code == 403, reply.text
            challenge = reply.headers["www-authenticate"]
            assert 'error="insufficient_scope"' in challenge
            assert 'scope="admin"' in challenge
            assert reply.json()["error"] == "insufficient_scope"
            assert reply.headers["access-control-allow-origin"] == "*"
            assert "WWW-Authenticate" in reply.headers["access-control-expose-headers"]
            preflight = await http.options(
                "/mcp",
                headers={
                    "Origin": "https://inspector.test",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, mcp-session-id",
                },
            )
            assert preflight.status_code == 204
            assert "Authorization" in preflight.headers["access-control-allow-headers"]
            meta = await http.get("/.well-known/oauth-protected-resource/mcp")
            assert meta.json()["scopes_supported"] == ["admin"]
    finally:
        await sdk_auth.aclose()


async def test_mock_access_context_drives_plain_tools() -> None:
    auth = AuthProvider(url="https://mcp.test/mcp", issuer="https://issuer.test")

    @auth.grant("https://api.test", "https://mail.test")
    async def both(access: AccessContext, who: str) -> dict[str, Any]:
        return {"who": who, "ok": access.get_successful_resources(), "status": access.get_status()}

    @auth.grant("https://api.test")
    def sync_tool(access: AccessContext) -> str:
        return access.access("https://api.test").access_token

    try:
        with mock_access_context(resource_tokens={"https://api.test": "tok-1"}):
            assert await both(who="x") == {
                "who": "x",
                "ok": ["https://api.test"],
                "status": "partial_error",
            }
            assert await sync_tool() == "tok-1"
        # Without a request there is no caller token: errors, never an exception.
        outside = await both(who="y")
        assert outside["status"] == "error"
        import inspect

        assert "access" not in inspect.signature(both).parameters
    finally:
        await auth.aclose()


class ScriptedFastMCPOAuth(FastMCPOAuth):
    """FastMCP's own OAuth client, with our scripted browser instead of a real one."""

    def __init__(self, url: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "in-memory token storage"
            super().__init__(mcp_url=url, callback_host="127.0.0.1")
        self.browser = Browser()

    async def redirect_handler(self, authorization_url: str) -> None:
        await self.browser.open(authorization_url)

    async def callback_handler(self) -> AuthorizationCodeResult:
        return await self.browser.callback()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # FastMCP's client is asyncio-only
@pytest.mark.parametrize("server", ["sdk", "fastmcp"])
async def test_fastmcp_client_signs_in_too(world: World, server: str) -> None:
    url = world.sdk_url if server == "sdk" else world.fast_url
    auth = ScriptedFastMCPOAuth(url)
    async with fastmcp.Client(url, auth=auth) as client:
        result = await client.call_tool("notes", {})
    notes = json.loads(result.content[0].text)
    assert notes["for"] == "alice"
    assert notes["act"]["sub"] == ("notes-mcp" if server == "sdk" else "fast-mcp")
    assert len(auth.browser.opened) == 1  # one sign-in, after registering itself
