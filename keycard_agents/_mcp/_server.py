"""An agent served as an MCP server (MCP spec "Tools", "Transports" and "Authorization").

Each skill becomes a tool whose input schema is the skill's. Over streamable HTTP, bearer
tokens (RFC 6750 §2.1) are verified by the agent's own verifier with the MCP endpoint's
resource as audience (RFC 8707, RFC 9068 §4) in front of the endpoint (the same front as
:class:`~keycard_agents.mcp.AuthProvider`: RFC 6750 challenges, CORS), and the endpoint
publishes RFC 9728 metadata listing the scopes the whole chain needs. A tool call runs the
skill as an A2A task in the agent's :class:`~keycard_agents.runtime.TaskRuntime`, so the
skill sees the same :class:`~keycard_agents.Principal` (user, ``act`` chain, scopes) as over
A2A and its own downstream calls are delegated as usual.

Over stdio there is no transport to carry a token: pass ``stdio_token`` (a token issued
for ``resource``, verified like an HTTP bearer token) to act as that user; without it
only skills declared ``anonymous=True`` can be called.

A skill that stops in AUTH_REQUIRED with a link (an account to connect, a consent, a key
to enter) answers the tool call with the MCP 2025-11-25 URL-mode elicitation error
(``URLElicitationRequiredError``, -32042) carrying that link; the client retries the
call once the user is done.
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import mcp_types
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import UrlElicitationRequiredError

from keycard_agents._a2a.errors import A2AError
from keycard_agents._a2a.types import Message, Part, Role, SendMessageRequest, Task, TaskState
from keycard_agents._agent._agent import Agent, Skill
from keycard_agents._agent._card import chain_scopes
from keycard_agents._agent._context import DelegationProvider
from keycard_agents._delegation._provider import delegation_for
from keycard_agents._errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidTokenError,
    KeycardError,
)
from keycard_agents._jose._principal import Principal
from keycard_agents._logs import get_logger
from keycard_agents._mcp._protect import AuthProvider
from keycard_agents._oauth._resource_server import Caller
from keycard_agents._oauth._verifier import TokenVerifier
from keycard_agents._runtime._runtime import TaskRuntime

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from keycard_agents._oauth._resource_server import BearerVerifier
    from keycard_agents._runtime._runtime import TaskRuntime

__all__ = ["AgentMcpServer", "McpBearerVerifier", "create_mcp_server", "mcp_app"]

logger = get_logger("keycard_agents.mcp")

_INVALID_TOOL_CHARS = re.compile(r"[^A-Za-z0-9._-]")


class McpBearerVerifier:
    """The MCP SDK's ``TokenVerifier`` backed by a keycard verifier for one resource.

    Every check of :class:`~keycard_agents.auth.TokenVerifier` applies (type, algorithm,
    issuer, audience = ``resource``, lifetime, ``act`` depth). A rejected token yields
    ``None`` (the SDK answers 401 with a ``resource_metadata`` challenge); the reason is
    logged by check name, never with the token.
    """

    def __init__(self, verifier: BearerVerifier, *, resource: str) -> None:
        self._verifier = verifier
        self.resource = resource

    @property
    def verifier(self) -> BearerVerifier:
        return self._verifier

    async def principal(self, token: str) -> Principal:
        return await self._verifier.verify(token, audience=self.resource)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            principal = await self.principal(token)
        except KeycardError as exc:
            check = exc.check if isinstance(exc, InvalidTokenError) else type(exc).__name__
            logger.info("MCP bearer token rejected for %s (%s)", self.resource, check)
            return None
        current = principal.actors.current
        client_id = principal.client_id or (current.sub if current else principal.user)
        return AccessToken(
            token=token,
            client_id=client_id,
            scopes=sorted(principal.scopes),
            expires_at=principal.expires_at,
            resource=self.resource,  # the verifier checked aud == resource
            subject=principal.user,
            claims=dict(principal.claims),
        )


def _tool_names(skills: Sequence[Skill]) -> dict[str, Skill]:
    names: dict[str, Skill] = {}
    for skill in skills:
        name = _INVALID_TOOL_CHARS.sub("_", skill.id)[:128]
        if name in names:
            raise ConfigurationError(
                f"skills {names[name].id!r} and {skill.id!r} both become MCP tool {name!r}; "
                "give one of them another id",
                setting="skill",
            )
        names[name] = skill
    return names


def _object_schema(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "object"


def _status_text(task: Task) -> str:
    message = task.status.message
    texts = [p.text for p in message.parts if p.text] if message is not None else []
    return "\n".join(texts) or task.status.state.value


def _error(text: str) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=text)], is_error=True
    )


def _content(part: Part, artifact_id: str) -> mcp_types.ContentBlock:
    if part.text is not None:
        return mcp_types.TextContent(type="text", text=part.text)
    if part.raw is not None:
        data = base64.b64encode(part.raw).decode()
        media = part.media_type or "application/octet-stream"
        if media.startswith("image/"):
            return mcp_types.ImageContent(type="image", data=data, mime_type=media)
        return mcp_types.EmbeddedResource(
            type="resource",
            resource=mcp_types.BlobResourceContents(
                uri=f"urn:keycard-agents:artifact:{artifact_id}", blob=data, mime_type=media
            ),
        )
    if part.url is not None:
        return mcp_types.ResourceLink(
            type="resource_link", uri=part.url, name=part.filename or part.url
        )
    return mcp_types.TextContent(type="text", text=json.dumps(part.data, ensure_ascii=False))


def _auth_url(task: Task) -> str | None:
    """The link of a task stopped in AUTH_REQUIRED (its status message's ``url`` part)."""
    message = task.status.message
    if task.status.state != TaskState.AUTH_REQUIRED or message is None:
        return None
    return next((p.url for p in message.parts if p.url is not None), None)


def _result(task: Task, *, structured: bool) -> mcp_types.CallToolResult:
    url = _auth_url(task)
    if url is not None:
        # MCP 2025-11-25 "Elicitation", URL mode: the user opens the link (connects an
        # account, consents, enters a key), then the client retries the tool call.
        raise UrlElicitationRequiredError(
            [
                mcp_types.ElicitRequestURLParams(
                    message=_status_text(task), url=url, elicitation_id=task.id
                )
            ]
        )
    state = task.status.state
    if state != TaskState.COMPLETED:
        label = state.value.removeprefix("TASK_STATE_").lower().replace("_", " ")
        return _error(f"The skill ended {label}: {_status_text(task)}")
    content: list[mcp_types.ContentBlock] = []
    data: Any = None
    for artifact in task.artifacts:
        for part in artifact.parts:
            if part.data is not None and data is None:
                data = part.data
            content.append(_content(part, artifact.artifact_id))
    structured_content = data if structured and isinstance(data, dict) else None
    return mcp_types.CallToolResult(content=content, structured_content=structured_content)


class AgentMcpServer(MCPServer[Any]):
    """An ``mcp`` SDK ``MCPServer`` whose tools are an agent's skills (see module doc)."""

    def __init__(
        self,
        agent: Agent,
        *,
        runtime: TaskRuntime,
        run_runtime: bool,
        bearer: McpBearerVerifier | None,
        authenticate: bool,
        issuer: str | None,
        stdio_token: str | None = None,
        name: str | None = None,
        instructions: str | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.agent = agent
        self.runtime = runtime
        self.bearer = bearer
        self.issuers = [issuer] if issuer else []
        self._bearer = bearer
        self._stdio_token = stdio_token
        _tool_names(list(agent.skills.values()))  # a name clash surfaces at startup

        @asynccontextmanager
        async def lifespan(_: MCPServer[Any]) -> AsyncIterator[Any]:
            try:
                if not run_runtime:
                    yield {}
                    return
                async with runtime.running():
                    yield {}
            finally:
                if on_close is not None:
                    await on_close()

        if authenticate:
            if bearer is None:
                raise ConfigurationError("an authenticated MCP server needs a verifier")
            if issuer is None:
                raise ConfigurationError(
                    "serving an agent over MCP with tokens needs the token issuer: set "
                    "Agent(issuer=...) or pass issuer=",
                    setting="issuer",
                )
        #: Whether :func:`mcp_app` puts bearer authentication in front of the endpoint.
        self.authenticated = authenticate
        super().__init__(
            name=name or agent.agent_name,
            description=agent.agent_description,
            instructions=instructions,
            version=agent.version,
            lifespan=lifespan,
        )

    @property
    def skill_tools(self) -> dict[str, Skill]:
        """Tool name → skill, now (an McpAgent's tools may be loaded after startup)."""
        return _tool_names(list(self.agent.skills.values()))

    async def list_tools(self) -> list[mcp_types.Tool]:
        tools: list[mcp_types.Tool] = []
        for name, skill in self.skill_tools.items():
            output = skill.output_schema()
            tools.append(
                mcp_types.Tool(
                    name=name,
                    title=skill.name,
                    description=skill.description,
                    input_schema=skill.input_schema(),
                    output_schema=output if _object_schema(output) else None,
                )
            )
        return tools

    async def _caller(self) -> Caller:
        access = get_access_token()
        if access is not None:
            return Caller(Principal.from_claims(access.claims or {}), token=access.token)
        if self._bearer is None or self._stdio_token is None:
            return Caller(None)
        return Caller(await self._bearer.principal(self._stdio_token), token=self._stdio_token)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Any = None
    ) -> mcp_types.CallToolResult:
        known = self.skill_tools
        skill = known.get(name)
        if skill is None:
            return _error(f"Unknown tool {name!r}. Tools: {', '.join(known)}")
        try:
            caller = await self._caller()
        except KeycardError as exc:
            return _error(f"The configured stdio identity token was rejected: {exc}")
        if caller.principal is None and not skill.anonymous:
            return _error(
                f"Tool {name!r} needs an authenticated user. Over stdio, start the server "
                "with stdio_token= (a token issued for its resource) to act as that user."
            )
        request = SendMessageRequest(
            message=Message(
                message_id=str(uuid.uuid4()),
                role=Role.USER,
                parts=[Part(data={"skill": skill.id, "arguments": arguments})],
            )
        )
        try:
            outcome = await self.runtime.send_message(request, caller=caller)
        except A2AError as exc:
            return _error(exc.message)
        except (AuthenticationError, ConfigurationError) as exc:
            return _error(str(exc))
        if not isinstance(outcome, Task):
            return _error("The skill answered with a message instead of a task.")
        return _result(outcome, structured=_object_schema(skill.output_schema()))


def create_mcp_server(
    agent: Agent,
    *,
    resource: str | None = None,
    verifier: BearerVerifier | None = None,
    issuer: str | None = None,
    runtime: TaskRuntime | None = None,
    delegation: DelegationProvider | None = None,
    stdio_token: str | None = None,
    authenticate: bool = True,
    name: str | None = None,
    instructions: str | None = None,
) -> AgentMcpServer:
    """The agent as an ``mcp`` SDK ``MCPServer`` whose tools are its skills.

    ``resource`` is the MCP endpoint's canonical URL (the audience of inbound tokens;
    default ``agent.url``). ``verifier`` verifies bearer tokens (default: a
    ``TokenVerifier`` trusting ``issuer``, default ``agent.issuer``). ``runtime`` runs the
    skills (default: a new ``TaskRuntime(agent, delegation=delegation)`` started by the
    server's lifespan; pass the A2A app's runtime to share tasks with it). ``delegation``
    defaults, as in ``create_app``, to the agent's own RFC 8693 exchange client
    (``agent.credential`` and ``agent.issuer``, else the environment), closed with the
    server's lifespan.
    ``authenticate=False`` serves without tokens (stdio for local clients, where
    ``stdio_token`` can still name the user; see the module docstring).
    """
    issuer = issuer or agent.issuer
    bearer: McpBearerVerifier | None = None
    closers: list[Callable[[], Awaitable[None]]] = []  # what this function opened
    if authenticate or stdio_token is not None:
        resource = (resource or agent.url or "").rstrip("/") or None
        if resource is None:
            raise ConfigurationError(
                "the MCP endpoint needs its resource URL (the audience of its tokens): pass "
                "resource= or Agent(url=...)",
                setting="resource",
            )
        if verifier is None:
            if issuer is None:
                raise ConfigurationError(
                    "no verifier and no issuer to trust: pass verifier= or Agent(issuer=...)",
                    setting="issuer",
                )

            default_verifier = TokenVerifier(issuers=[issuer])
            closers.append(default_verifier.aclose)
            verifier = default_verifier
        bearer = McpBearerVerifier(verifier, resource=resource)
    run_runtime = runtime is None
    if runtime is None:
        if delegation is None:
            owned = delegation_for(agent)
            closers.append(owned.aclose)
            delegation = owned
        runtime = TaskRuntime(agent, delegation=delegation)
    return AgentMcpServer(
        agent,
        runtime=runtime,
        run_runtime=run_runtime,
        bearer=bearer,
        authenticate=authenticate,
        issuer=issuer,
        stdio_token=stdio_token,
        name=name,
        instructions=instructions,
        on_close=_close_all(closers),
    )


def _close_all(closers: list[Callable[[], Awaitable[None]]]) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        for closer in reversed(closers):
            await closer()

    return close


def mcp_app(server: AgentMcpServer, *, path: str = "/mcp", **options: Any) -> Starlette:
    """The streamable HTTP ASGI app of ``server`` (its lifespan runs the runtime).

    Serve it where its ``resource`` URL points (``path`` is the endpoint path within the
    app). ``options`` go to ``MCPServer.streamable_http_app`` (``json_response``,
    ``stateless_http``, ``transport_security``, ...).
    """
    app = server.streamable_http_app(streamable_http_path=path, **options)
    bearer = server.bearer
    if not server.authenticated or bearer is None:
        return app
    # The same front as AuthProvider gives any MCP server: RFC 6750 challenges (none
    # without a token), CORS, and RFC 9728 metadata listing what a caller needs for the
    # whole chain (scopes_supported), naming the issuer exactly as configured.
    provider = AuthProvider(
        url=bearer.resource,
        issuer=server.issuers[0],
        verifier=bearer.verifier,
        scopes_supported=chain_scopes(server.agent),
        resource_name=server.agent.agent_name,
    )
    return provider.app(app)


STDIO_TOKEN_ENV = "KEYCARD_AGENTS_MCP_TOKEN"  # noqa: S105 - the variable's name


async def serve_mcp_stdio(
    agent: Agent,
    *,
    stdio_token: str | None = None,
    resource: str | None = None,
    verifier: BearerVerifier | None = None,
    delegation: DelegationProvider | None = None,
) -> None:
    """Serve ``agent`` to a local MCP client over stdin/stdout until the client leaves.

    Identity: stdio carries no token, so the user is configured here: ``stdio_token`` (or
    the ``KEYCARD_AGENTS_MCP_TOKEN`` environment variable) is a token issued for
    ``resource`` (default ``agent.url``), verified like a bearer token; every call acts
    as its user and downstream calls are exchanged from it. Without one, only anonymous
    skills can be called.
    """

    token = stdio_token or os.environ.get(STDIO_TOKEN_ENV) or None
    server = create_mcp_server(
        agent,
        resource=resource,
        verifier=verifier,
        delegation=delegation,
        stdio_token=token,
        authenticate=False,
    )
    await server.run_stdio_async()
