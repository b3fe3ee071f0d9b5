"""Errors of the MCP integration, each a subclass of the core hierarchy (``_errors.py``).

Messages name the MCP server by its dependency slug and never carry a token.
"""

from __future__ import annotations

from keycard_agents._errors import KeycardError, TransportError

__all__ = ["McpAuthRequiredError", "McpServerError", "McpTokenRejectedError", "McpToolError"]


class McpServerError(TransportError):
    """An MCP server could not be reached, did not answer in time, or answered something
    that is not a usable MCP result. ``server`` is the dependency slug."""

    def __init__(self, message: str, *, server: str) -> None:
        super().__init__(message)
        self.server = server


class McpTokenRejectedError(McpServerError):
    """The MCP server refused the delegated token (HTTP 401/403), also after one fresh
    exchange. Usually the server trusts another issuer or expects another resource."""

    def __init__(self, message: str, *, server: str, status_code: int) -> None:
        super().__init__(message, server=server)
        self.status_code = status_code


class McpAuthRequiredError(McpServerError):
    """The MCP server needs the user first: it answered with URL-mode elicitation (MCP
    2025-11-25, ``URLElicitationRequiredError``, -32042). ``url`` is where the user goes
    (to connect an account, consent, enter a key); then retry. Inside a skill the task
    ends in AUTH_REQUIRED with that link instead."""

    def __init__(self, message: str, *, server: str, url: str) -> None:
        super().__init__(message, server=server)
        self.url = url


class McpToolError(KeycardError):
    """A tool ran and reported failure (``isError``); ``detail`` is the tool's own text."""

    def __init__(self, message: str, *, server: str, tool: str, detail: str) -> None:
        super().__init__(message)
        self.server = server
        self.tool = tool
        self.detail = detail
