"""MCP integration: MCP servers as agent dependencies whose tools become skills, agents
served as MCP servers, and existing MCP servers protected (``AuthProvider``). Needs the
optional extra: ``pip install keycard-agents[mcp]``.

Implements, on top of the ``mcp`` SDK: RFC 8693 token exchange per hop towards MCP
servers (no token passthrough, as the MCP authorization spec requires), RFC 8707
resources found from RFC 9728 protected resource metadata, and RFC 6750 bearer
authentication of MCP clients with the agent's own verifier.

Importing ``keycard_agents`` never imports this module or the ``mcp`` SDK.
"""

from __future__ import annotations

from keycard_agents._errors import ConfigurationError as _ConfigurationError


class McpNotInstalledError(_ConfigurationError, ImportError):
    """The ``mcp`` SDK is not installed (install ``keycard-agents[mcp]``)."""


try:
    import mcp as _mcp_sdk  # noqa: F401 - probe for the optional dependency
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise McpNotInstalledError(
        "keycard_agents.mcp needs the MCP SDK: install keycard-agents[mcp]", setting="mcp"
    ) from _exc

from keycard_agents._mcp import (  # noqa: E402 - after the dependency probe
    AgentMcpServer as AgentMcpServer,
)
from keycard_agents._mcp import AuthProvider as AuthProvider  # noqa: E402
from keycard_agents._mcp import McpAgent as McpAgent  # noqa: E402
from keycard_agents._mcp import McpAuthRequiredError as McpAuthRequiredError  # noqa: E402
from keycard_agents._mcp import McpBearerVerifier as McpBearerVerifier  # noqa: E402
from keycard_agents._mcp import McpConnector as McpConnector  # noqa: E402
from keycard_agents._mcp import McpServer as McpServer  # noqa: E402
from keycard_agents._mcp import McpServerError as McpServerError  # noqa: E402
from keycard_agents._mcp import McpServerHandle as McpServerHandle  # noqa: E402
from keycard_agents._mcp import McpSession as McpSession  # noqa: E402
from keycard_agents._mcp import McpTokenRejectedError as McpTokenRejectedError  # noqa: E402
from keycard_agents._mcp import McpTool as McpTool  # noqa: E402
from keycard_agents._mcp import McpToolError as McpToolError  # noqa: E402
from keycard_agents._mcp import McpToolResult as McpToolResult  # noqa: E402
from keycard_agents._mcp import McpToolSkill as McpToolSkill  # noqa: E402
from keycard_agents._mcp import ProtectedResource as ProtectedResource  # noqa: E402
from keycard_agents._mcp import TokenExchanger as TokenExchanger  # noqa: E402
from keycard_agents._mcp import TokenSource as TokenSource  # noqa: E402
from keycard_agents._mcp import connector_for as connector_for  # noqa: E402
from keycard_agents._mcp import create_mcp_server as create_mcp_server  # noqa: E402
from keycard_agents._mcp import current_caller as current_caller  # noqa: E402
from keycard_agents._mcp import current_principal as current_principal  # noqa: E402
from keycard_agents._mcp import discover_resource as discover_resource  # noqa: E402
from keycard_agents._mcp import mcp_app as mcp_app  # noqa: E402
from keycard_agents._mcp import serve_mcp_stdio as serve_mcp_stdio  # noqa: E402
from keycard_agents._mcp import tool_skill as tool_skill  # noqa: E402

__all__ = [
    "AgentMcpServer",
    "AuthProvider",
    "McpAgent",
    "McpAuthRequiredError",
    "McpBearerVerifier",
    "McpConnector",
    "McpNotInstalledError",
    "McpServer",
    "McpServerError",
    "McpServerHandle",
    "McpSession",
    "McpTokenRejectedError",
    "McpTool",
    "McpToolError",
    "McpToolResult",
    "McpToolSkill",
    "ProtectedResource",
    "TokenExchanger",
    "TokenSource",
    "connector_for",
    "create_mcp_server",
    "current_caller",
    "current_principal",
    "discover_resource",
    "mcp_app",
    "serve_mcp_stdio",
    "tool_skill",
]
