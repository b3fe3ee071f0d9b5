"""Shared pieces of the MCP tests: real servers on loopback threads, a token service, and
an MCP server built with the ``mcp`` SDK and protected by our verifier."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel
from starlette.types import ASGIApp

from keycard_agents.auth import TokenVerifier, TrustedIssuer
from keycard_agents.mcp import McpBearerVerifier
from keycard_agents.sts import TokenService, hash_secret, parse_config

SECRET_A = "agent-a-secret"
SECRET_B = "agent-b-secret"
AGENT_A = "https://agent-a.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 in a thread (its own asyncio loop)."""

    def __init__(self, app: ASGIApp, *, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            ws="none",
            http="h11",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind
            self.server.run()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "server thread did not stop"


def claims_of(token: str) -> dict[str, Any]:
    """Decode a JWT payload WITHOUT verifying (only to assert on what was issued)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def make_sts(
    issuer: str, *, resources: list[str], agent_b: str | None = None, a_resource: str = AGENT_A
) -> TokenService:
    agents: list[dict[str, Any]] = [
        {
            "client_id": "agent-a",
            "resource": a_resource,
            "auth": "client_secret",
            "secret_hash": hash_secret(SECRET_A, cost=2**4),
            "scopes": ["notes:read", "notes:write", "chat"],
            "dependencies": [*resources, *([agent_b] if agent_b else [])],
        }
    ]
    if agent_b is not None:
        agents.append(
            {
                "client_id": "agent-b",
                "resource": agent_b,
                "auth": "client_secret",
                "secret_hash": hash_secret(SECRET_B, cost=2**4),
                "scopes": ["chat"],
                "may_act_first": False,
            }
        )
    config = parse_config(
        {
            "issuer": issuer,
            "agents": agents,
            "resources": [
                {"resource": r, "scopes": ["notes:read", "notes:write"]} for r in resources
            ],
        }
    )
    return TokenService(config)


@contextmanager
def running_sts(**kwargs: Any) -> Iterator[tuple[TokenService, ServerThread]]:
    """A token service served on a real port (its issuer is its own URL)."""
    port = free_port()
    service = make_sts(f"http://127.0.0.1:{port}", **kwargs)
    with ServerThread(service.app, port=port) as thread:
        yield service, thread


class Sum(BaseModel):
    total: int


@dataclass
class NotesServer:
    """A real MCP server (``mcp`` SDK) whose verifier records every token it is sent."""

    resource: str
    server: MCPServer[Any]
    tokens: list[str] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)


class _Recording:
    def __init__(self, inner: McpBearerVerifier, seen: list[str]) -> None:
        self._inner = inner
        self._seen = seen

    async def verify_token(self, token: str) -> AccessToken | None:
        self._seen.append(token)
        return await self._inner.verify_token(token)


def notes_server(*, resource: str, issuer: str, reject_all: bool = False) -> NotesServer:
    verifier = TokenVerifier(issuers=[TrustedIssuer(issuer, jwks_uri=f"{issuer}/jwks.json")])
    tokens: list[str] = []
    audience = resource + "/elsewhere" if reject_all else resource
    recording = _Recording(McpBearerVerifier(verifier, resource=audience), tokens)

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:
            await verifier.aclose()  # the JWKS client lives on this server's loop

    server: MCPServer[Any] = MCPServer(
        "notes",
        lifespan=lifespan,
        token_verifier=recording,
        auth=AuthSettings(
            issuer_url=issuer,  # type: ignore[arg-type]
            resource_server_url=resource,  # type: ignore[arg-type]
            validate_token_resource=True,
        ),
    )
    holder = NotesServer(resource=resource, server=server, tokens=tokens)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True), structured_output=False)
    def echo(text: str) -> str:
        """Repeat the text."""
        return f"echo: {text}"

    @server.tool(title="Add numbers", annotations=ToolAnnotations(read_only_hint=False))
    def add(a: int, b: int) -> Sum:
        """Add two integers."""
        return Sum(total=a + b)

    @server.tool(structured_output=False)
    def locked() -> str:
        """Always fails."""
        raise ToolError("the notebook is locked")

    @server.tool(structured_output=False)
    def whoami() -> str:
        """The claims of the token this call carried."""
        access = get_access_token()
        assert access is not None
        holder.claims.append(dict(access.claims or {}))
        return json.dumps({"sub": access.subject, "scopes": access.scopes})

    @server.tool(structured_output=False)
    async def slow() -> str:
        """Takes far too long."""
        await anyio.sleep(30)
        return "late"

    @server.tool(structured_output=False)
    def internal_admin() -> str:
        """Filtered out of the card."""
        return "secret"

    return holder


@contextmanager
def running_notes(**kwargs: Any) -> Iterator[tuple[NotesServer, ServerThread]]:
    port = free_port()
    notes = notes_server(resource=f"http://127.0.0.1:{port}/mcp", **kwargs)
    with ServerThread(notes.server.streamable_http_app(), port=port) as thread:
        yield notes, thread
