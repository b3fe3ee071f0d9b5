"""Delegated calls from skills: the handles behind ``ctx.dependency(...)`` and their provider.

Every call carries a token obtained by RFC 8693 token exchange with the caller's token as
``subject_token``. :class:`TokenExchangeDelegation` is the default
:class:`DelegationProvider` (``delegation_for(agent)`` builds it from the agent's
settings); it returns an :class:`AgentHandle` for an agent, an :class:`HttpApiHandle` for
an HTTP API and, with the ``mcp`` extra, an MCP server handle. Other dependency kinds
plug in with :func:`register_handle_factory`.
"""

from __future__ import annotations

from keycard_agents._agent._context import DelegationProvider as DelegationProvider
from keycard_agents._agent._handles import AgentCalls as AgentCalls
from keycard_agents._agent._handles import HttpApiCalls as HttpApiCalls
from keycard_agents._delegation._provider import AgentHandle as AgentHandle
from keycard_agents._delegation._provider import DelegatedAuth as DelegatedAuth
from keycard_agents._delegation._provider import DelegatedTokens as DelegatedTokens
from keycard_agents._delegation._provider import HandleFactory as HandleFactory
from keycard_agents._delegation._provider import HttpApiHandle as HttpApiHandle
from keycard_agents._delegation._provider import TokenExchangeDelegation as TokenExchangeDelegation
from keycard_agents._delegation._provider import delegation_for as delegation_for
from keycard_agents._delegation._provider import register_handle_factory as register_handle_factory

__all__ = [
    "AgentCalls",
    "AgentHandle",
    "DelegatedAuth",
    "DelegatedTokens",
    "DelegationProvider",
    "HandleFactory",
    "HttpApiCalls",
    "HttpApiHandle",
    "TokenExchangeDelegation",
    "delegation_for",
    "register_handle_factory",
]
