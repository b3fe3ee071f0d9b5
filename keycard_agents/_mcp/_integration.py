"""MCP handles for the default delegation provider (``keycard_agents._delegation._provider``).

Importing this package registers a handle factory for ``"mcp"`` dependencies, so
``ctx.dependency(name)`` of an :class:`~keycard_agents.McpDependency` returns an
:class:`McpServerHandle` whose tokens come from the provider's RFC 8693 exchanges (with
its AUTH_REQUIRED handling of ``interaction_required`` / ``consent_required``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from keycard_agents._agent._context import Context
from keycard_agents._agent._dependencies import Dependency, McpDependency
from keycard_agents._delegation._provider import register_handle_factory
from keycard_agents._errors import ConfigurationError
from keycard_agents._mcp._client import McpConnector, McpServerHandle
from keycard_agents._oauth._resource_server import Caller

if TYPE_CHECKING:
    from keycard_agents._delegation._provider import TokenExchangeDelegation

__all__ = ["connector_for", "register"]

_CONNECTORS: WeakKeyDictionary[Any, McpConnector] = WeakKeyDictionary()


def connector_for(delegation: TokenExchangeDelegation) -> McpConnector:
    """The MCP connector that serves ``delegation``'s MCP dependencies (one per provider,
    closed with it). Use it to load an :class:`McpAgent`'s tools before serving."""
    connector = _CONNECTORS.get(delegation)
    if connector is None:
        connector = McpConnector(
            exchange=delegation.exchange,
            http_client=delegation.http_client,
            trusted_issuers=delegation.trusted_issuers,
        )
        _CONNECTORS[delegation] = connector
        delegation.call_on_close(connector.aclose)
    return connector


def _handle(
    dependency: Dependency,
    *,
    caller: Caller,
    context: Context,
    delegation: TokenExchangeDelegation,
) -> McpServerHandle:
    if not isinstance(dependency, McpDependency):  # registered for kind "mcp" only
        raise ConfigurationError(f"dependency {dependency.name!r} is not an MCP server")
    return McpServerHandle(
        connector_for(delegation),
        dependency,
        caller,
        tokens=delegation.tokens(caller, context=context),
        context=context,
    )


def register() -> None:
    """Register the MCP handle factory with the default delegation provider."""
    register_handle_factory("mcp", _handle)
