"""MCP servers and tools as agent skills, and agents as MCP servers (the ``mcp`` extra).

``_client.py`` calls MCP servers with delegated tokens (RFC 8693, RFC 8707, RFC 9728),
``_skills.py`` turns their tools into skills, ``_server.py`` serves an agent's skills
over MCP, ``_results.py`` converts MCP content to A2A parts, ``_protect.py`` protects an existing
MCP server (``AuthProvider``; ``_fastmcp.py`` adapts it to FastMCP). Importing this package
imports the ``mcp`` SDK; the core package never imports it.
"""

from __future__ import annotations

from keycard_agents._mcp._client import (
    McpConnector,
    McpServerHandle,
    McpSession,
    TokenExchanger,
    TokenSource,
)
from keycard_agents._mcp._discovery import ProtectedResource, discover_resource
from keycard_agents._mcp._errors import (
    McpAuthRequiredError,
    McpServerError,
    McpTokenRejectedError,
    McpToolError,
)
from keycard_agents._mcp._integration import connector_for, register
from keycard_agents._mcp._protect import AuthProvider, current_caller, current_principal
from keycard_agents._mcp._results import McpTool, McpToolResult
from keycard_agents._mcp._server import (
    AgentMcpServer,
    McpBearerVerifier,
    create_mcp_server,
    mcp_app,
    serve_mcp_stdio,
)
from keycard_agents._mcp._skills import McpAgent, McpServer, McpToolSkill, tool_skill

__all__ = [
    "AgentMcpServer",
    "AuthProvider",
    "McpAgent",
    "McpAuthRequiredError",
    "McpBearerVerifier",
    "McpConnector",
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

register()  # ctx.dependency(name) of MCP dependencies via the default provider
