"""MCP tools as A2A skills (A2A 1.0 §4.4.5 ``AgentSkill``; MCP spec "Tools").

An :class:`McpServer` dependency (a :class:`~keycard_agents.McpDependency` with a stable
slug and tool options) lends its tools to an :class:`McpAgent` as skills with id
``slug/tool``: name from the tool's title (or name), its description, tags ``mcp``, the
slug and ``read-only`` / ``destructive`` / ``idempotent`` / ``open-world`` only for hints
that are true, input mode JSON, and the tool's JSON Schemas in the delegation extension.
Calling such a skill calls the tool with a token exchanged from the caller's.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonschema
from pydantic import BaseModel, ConfigDict, TypeAdapter

from keycard_agents._a2a.errors import InvalidParamsError
from keycard_agents._a2a.interrupt import TaskInterrupt
from keycard_agents._a2a.types import Part, TaskState
from keycard_agents._agent._agent import Agent, Skill
from keycard_agents._agent._context import Context
from keycard_agents._agent._dependencies import McpDependency
from keycard_agents._errors import ConfigurationError, InteractionRequiredError
from keycard_agents._mcp._errors import McpToolError
from keycard_agents._mcp._results import McpTool, McpToolResult
from keycard_agents._oauth._resource_server import Caller

if TYPE_CHECKING:
    from keycard_agents._mcp._client import McpConnector

__all__ = ["McpAgent", "McpServer", "McpToolSkill", "tool_skill"]

_SLUG = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass(frozen=True, init=False)
class McpServer(McpDependency):
    """An MCP server whose tools become skills of an :class:`McpAgent`.

    ``name`` is the stable slug that prefixes skill ids (``slug/tool``). ``scopes`` are
    requested in the exchanged token. ``resource`` skips RFC 9728 discovery. ``allow``
    and ``deny`` are glob patterns on tool names (deny wins); ``rename`` maps a tool name
    to the name used in its skill id; ``skill_scopes`` are required in the caller's token
    to call the tool skills; ``expose_tools=False`` keeps the server for ``ctx`` use only.
    """

    expose_tools: bool
    allow: tuple[str, ...] | None
    deny: tuple[str, ...]
    rename: tuple[tuple[str, str], ...]
    skill_scopes: tuple[str, ...]

    def __init__(
        self,
        name: str,
        *,
        url: str,
        scopes: Sequence[str] = (),
        description: str | None = None,
        resource: str | None = None,
        expose_tools: bool = True,
        allow: Sequence[str] | None = None,
        deny: Sequence[str] = (),
        rename: Mapping[str, str] | None = None,
        skill_scopes: Sequence[str] = (),
    ) -> None:
        super().__init__(name, url=url, scopes=scopes, description=description, resource=resource)
        if not _SLUG.fullmatch(name):
            raise ConfigurationError(
                f"MCP server slug {name!r} must be 1-64 characters of A-Z a-z 0-9 . _ -",
                setting="name",
            )
        for label, value in (("allow", allow), ("deny", deny), ("skill_scopes", skill_scopes)):
            if isinstance(value, str):
                raise ConfigurationError(
                    f"MCP server {name!r}: {label} must be a list of strings", setting=label
                )
        renames = dict(rename or {})
        for new in renames.values():
            if not _TOOL_NAME.fullmatch(new):
                raise ConfigurationError(
                    f"MCP server {name!r}: rename target {new!r} is not a valid tool name "
                    "(A-Z a-z 0-9 . _ -, at most 128)",
                    setting="rename",
                )
        if len(set(renames.values())) != len(renames):
            raise ConfigurationError(
                f"MCP server {name!r}: two tools are renamed to the same name", setting="rename"
            )
        object.__setattr__(self, "expose_tools", expose_tools)
        object.__setattr__(self, "allow", None if allow is None else tuple(allow))
        object.__setattr__(self, "deny", tuple(deny))
        object.__setattr__(self, "rename", tuple(sorted(renames.items())))
        object.__setattr__(self, "skill_scopes", tuple(skill_scopes))

    def exposes(self, tool: str) -> bool:
        """Whether ``tool`` passes the allow and deny lists."""
        if any(fnmatch.fnmatchcase(tool, p) for p in self.deny):
            return False
        return self.allow is None or any(fnmatch.fnmatchcase(tool, p) for p in self.allow)

    def skill_id(self, tool: str) -> str:
        return f"{self.name}/{dict(self.rename).get(tool, tool)}"


class _AnyArguments(BaseModel):
    model_config = ConfigDict(extra="allow")


_ANY: TypeAdapter[Any] = TypeAdapter(Any)


@dataclass(frozen=True)
class McpToolSkill(Skill):
    """A skill that calls one MCP tool; its schemas are the tool's own."""

    server: str = ""
    tool_name: str = ""
    tool_input_schema: Mapping[str, Any] = field(default_factory=dict, repr=False)
    tool_output_schema: Mapping[str, Any] | None = field(default=None, repr=False)

    def input_schema(self) -> dict[str, Any]:
        return copy.deepcopy(dict(self.tool_input_schema))

    def output_schema(self) -> dict[str, Any]:
        if self.tool_output_schema is None:
            return {}
        return copy.deepcopy(dict(self.tool_output_schema))

    def validate_arguments(self, arguments: Any) -> dict[str, Any]:
        """Check arguments against the tool's input schema (JSON Schema 2020-12)."""
        if not isinstance(arguments, Mapping):
            raise InvalidParamsError(
                f"arguments of skill {self.id!r} must be a JSON object",
                data={"errors": [{"field": "arguments", "message": "must be an object"}]},
            )
        values = dict(arguments)
        schema = dict(self.tool_input_schema)
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
            validator = jsonschema.Draft202012Validator(schema)
            errors = sorted(validator.iter_errors(values), key=lambda e: list(e.absolute_path))
        except Exception:  # a broken or unresolvable schema: let the server judge the call
            return values
        if errors:
            problems = [
                {
                    "field": ".".join(str(p) for p in e.absolute_path) or "arguments",
                    "message": e.message[:200],
                }
                for e in errors[:20]
            ]
            listed = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            raise InvalidParamsError(
                f"invalid arguments for skill {self.id!r}: {listed}",
                data={"skill": self.id, "errors": problems},
            )
        return values

    def result_parts(self, value: Any) -> list[Part]:
        if isinstance(value, McpToolResult):
            return value.to_parts()
        return super().result_parts(value)


def _tags(server: str, tool: McpTool) -> tuple[str, ...]:
    hints = (
        ("read-only", tool.read_only),
        ("destructive", tool.destructive),
        ("idempotent", tool.idempotent),
        ("open-world", tool.open_world),
    )
    return ("mcp", server, *(tag for tag, on in hints if on))


def tool_skill(server: McpServer, tool: McpTool) -> McpToolSkill:
    """The skill that stands for ``tool`` of ``server``."""
    properties = tool.input_schema.get("properties")
    parameters = tuple(properties) if isinstance(properties, Mapping) else ()
    return McpToolSkill(
        id=server.skill_id(tool.name),
        name=tool.display_name,
        description=tool.description or tool.display_name,
        tags=_tags(server.name, tool),
        examples=(),
        scopes=server.skill_scopes,
        anonymous=False,
        input_modes=("application/json",),
        output_modes=("application/json",)
        if tool.output_schema is not None
        else ("text/plain", "application/json"),
        method_name="",
        takes_context=True,
        parameters=parameters,
        text_parameter=None,
        returns_text=False,
        input_model=_AnyArguments,
        output_adapter=_ANY,
        server=server.name,
        tool_name=tool.name,
        tool_input_schema=dict(tool.input_schema),
        tool_output_schema=None if tool.output_schema is None else dict(tool.output_schema),
    )


class McpAgent(Agent):
    """An :class:`~keycard_agents.Agent` whose :class:`McpServer` dependencies lend their
    tools as skills.

    Load the tools before building the app (the card is built once)::

        connector = McpConnector(exchange=exchange_client)  # or connector_for(delegation)
        await agent.load_mcp_tools(connector, subject_token=operator_token)
        app = create_app(agent, runtime=TaskRuntime(agent, delegation=connector))

    Listing needs a delegated token like any call: ``subject_token`` is a token issued
    for this agent (for example an operator's), exchanged for each MCP server. Call
    ``load_mcp_tools(..., refresh=True)`` to pick up new tools (a new app then serves
    them in its card). Tool calls use the delegation provider of the runtime: an
    :class:`McpConnector`, or the core provider (which builds MCP handles through
    :func:`connector_for`).
    """

    _mcp_skills: dict[str, McpToolSkill]

    @property
    def skills(self) -> Mapping[str, Skill]:
        own = self._skill_table()
        extra = self.__dict__.get("_mcp_skills")
        if not extra:
            return own
        return {**own, **extra}

    @property
    def mcp_servers(self) -> tuple[McpServer, ...]:
        return tuple(d for d in self.dependencies if isinstance(d, McpServer))

    def install_tools(self, server: McpServer, tools: Sequence[McpTool]) -> list[McpToolSkill]:
        """Replace ``server``'s tool skills with skills for ``tools`` (after filtering)."""
        if server not in self.mcp_servers:
            raise ConfigurationError(
                f"{server.name!r} is not one of this agent's MCP server dependencies",
                setting="dependencies",
            )
        current = dict(self.__dict__.get("_mcp_skills") or {})
        current = {k: v for k, v in current.items() if v.server != server.name}
        own = self._skill_table()
        added: list[McpToolSkill] = []
        for tool in tools:
            if not server.expose_tools or not server.exposes(tool.name):
                continue
            made = tool_skill(server, tool)
            if made.id in own or made.id in current:
                raise ConfigurationError(
                    f"skill id {made.id!r} of MCP tool {tool.name!r} clashes with another "
                    "skill; rename the tool with McpServer(rename=...)",
                    setting="rename",
                )
            current[made.id] = made
            added.append(made)
        self._mcp_skills = current
        return added

    async def load_mcp_tools(
        self, connector: McpConnector, *, subject_token: str, refresh: bool = False
    ) -> list[McpToolSkill]:
        """List each MCP server's tools and install them as skills; returns the new skills."""
        caller = Caller(principal=None, token=subject_token)
        added: list[McpToolSkill] = []
        for server in self.mcp_servers:
            if not server.expose_tools:
                continue
            tools = await connector.list_tools(server, caller, refresh=refresh)
            added.extend(self.install_tools(server, tools))
        return added

    async def call_skill(self, skill: Skill, ctx: Context, arguments: Mapping[str, Any]) -> Any:
        if not isinstance(skill, McpToolSkill):
            return await super().call_skill(skill, ctx, arguments)
        handle = ctx.dependency(skill.server)
        try:
            result = await handle.call_tool(skill.tool_name, dict(arguments))
        except InteractionRequiredError as exc:
            raise TaskInterrupt(
                TaskState.AUTH_REQUIRED,
                f"MCP server {skill.server!r} needs the user's authorization first: "
                f"{exc.error_description}",
            ) from exc
        if not isinstance(result, McpToolResult):
            raise ConfigurationError(
                f"the delegation provider returned a {type(result).__name__} for MCP server "
                f"{skill.server!r}; use McpConnector (or delegate MCP dependencies to it)",
                setting="delegation",
            )
        if result.is_error:
            raise McpToolError(
                f"MCP tool {skill.id!r} failed: {result.detail}",
                server=skill.server,
                tool=skill.tool_name,
                detail=result.detail,
            )
        return result
