"""keycard-agents: agent-to-agent delegation with real RFC 8693 token exchange.

The package root is the authoring surface: what you need to write an agent, serve it and
call agents. Everything else has one public topic module: :mod:`keycard_agents.auth`
(tokens, keys, the exchange client), :mod:`keycard_agents.audit` (the audit trail),
:mod:`keycard_agents.delegation` (dependency handles and their provider),
:mod:`keycard_agents.runtime` (the task runtime and stores), :mod:`keycard_agents.a2a`
(A2A wire types, the agent card), :mod:`keycard_agents.sts` (the token service),
:mod:`keycard_agents.mcp` and :mod:`keycard_agents.testing`.
"""

from __future__ import annotations

import importlib as _importlib
import warnings as _warnings
from typing import Any as _Any

from keycard_agents._agent._agent import Agent as Agent
from keycard_agents._agent._agent import Skill as Skill
from keycard_agents._agent._agent import SkillCall as SkillCall
from keycard_agents._agent._agent import skill as skill
from keycard_agents._agent._context import Context as Context
from keycard_agents._agent._dependencies import AgentDependency as AgentDependency
from keycard_agents._agent._dependencies import Dependency as Dependency
from keycard_agents._agent._dependencies import HttpDependency as HttpDependency
from keycard_agents._agent._dependencies import McpDependency as McpDependency
from keycard_agents._agent._grant import AccessContext as AccessContext
from keycard_agents._agent._grant import ResourceError as ResourceError
from keycard_agents._agent._grant import grant as grant
from keycard_agents._client._agent_client import AgentClient as AgentClient
from keycard_agents._client._agent_client import call_message as call_message
from keycard_agents._client._agent_client import open_agent_client as open_agent_client
from keycard_agents._client._agent_client import task_result as task_result
from keycard_agents._client._agent_client import text_message as text_message
from keycard_agents._client._assembly import ArtifactAssembler as ArtifactAssembler
from keycard_agents._errors import AuthenticationError as AuthenticationError
from keycard_agents._errors import ConfigurationError as ConfigurationError
from keycard_agents._errors import DelegationDeniedError as DelegationDeniedError
from keycard_agents._errors import InsufficientScopeError as InsufficientScopeError
from keycard_agents._errors import InteractionRequiredError as InteractionRequiredError
from keycard_agents._errors import InvalidTokenError as InvalidTokenError
from keycard_agents._errors import IssuerUnreachableError as IssuerUnreachableError
from keycard_agents._errors import KeycardError as KeycardError
from keycard_agents._errors import OAuthError as OAuthError
from keycard_agents._errors import RemoteAuthenticationError as RemoteAuthenticationError
from keycard_agents._errors import RemoteTaskError as RemoteTaskError
from keycard_agents._errors import ResourceAccessError as ResourceAccessError
from keycard_agents._errors import TransportError as TransportError
from keycard_agents._errors import UserRequiredError as UserRequiredError
from keycard_agents._jose._principal import Actor as Actor
from keycard_agents._jose._principal import ActorChain as ActorChain
from keycard_agents._jose._principal import Principal as Principal
from keycard_agents._jose._principal import UserId as UserId
from keycard_agents._oauth._credentials import ApplicationCredential as ApplicationCredential
from keycard_agents._oauth._credentials import ClientSecret as ClientSecret
from keycard_agents._oauth._credentials import EKSWorkloadIdentity as EKSWorkloadIdentity
from keycard_agents._oauth._credentials import WebIdentity as WebIdentity
from keycard_agents._oauth._credentials import WorkloadIdentity as WorkloadIdentity
from keycard_agents._oauth._credentials import credential_from_env as credential_from_env
from keycard_agents._oauth._credentials import resolve_issuer as resolve_issuer
from keycard_agents._oauth._discovery import CardCache as CardCache
from keycard_agents._oauth._resource_server import Caller as Caller
from keycard_agents._server import AgentMount as AgentMount
from keycard_agents._server import create_app as create_app
from keycard_agents._server import serve as serve
from keycard_agents._version import __version__ as __version__

__all__ = [
    "AccessContext",
    "Actor",
    "ActorChain",
    "Agent",
    "AgentClient",
    "AgentDependency",
    "AgentMount",
    "ApplicationCredential",
    "ArtifactAssembler",
    "AuthenticationError",
    "Caller",
    "CardCache",
    "ClientSecret",
    "ConfigurationError",
    "Context",
    "DelegationDeniedError",
    "Dependency",
    "EKSWorkloadIdentity",
    "HttpDependency",
    "InsufficientScopeError",
    "InteractionRequiredError",
    "InvalidTokenError",
    "IssuerUnreachableError",
    "KeycardError",
    "McpDependency",
    "OAuthError",
    "Principal",
    "RemoteAuthenticationError",
    "RemoteTaskError",
    "ResourceAccessError",
    "ResourceError",
    "Skill",
    "SkillCall",
    "TransportError",
    "UserId",
    "UserRequiredError",
    "WebIdentity",
    "WorkloadIdentity",
    "__version__",
    "call_message",
    "create_app",
    "credential_from_env",
    "grant",
    "open_agent_client",
    "resolve_issuer",
    "serve",
    "skill",
    "task_result",
    "text_message",
]

#: Names the root exported before 0.2, and the public module each lives in now. Importing
#: them from the root still works for one release, with a DeprecationWarning.
_MOVED: dict[str, str] = {
    "ACCESS_TOKEN_TYPE": "keycard_agents.auth",
    "ALGORITHMS": "keycard_agents.auth",
    "CLIENT_ASSERTION_TYPE": "keycard_agents.auth",
    "ExchangeStats": "keycard_agents.auth",
    "ExchangedToken": "keycard_agents.auth",
    "InvalidTokenResponseError": "keycard_agents.auth",
    "JWKSCache": "keycard_agents.auth",
    "KeyResolver": "keycard_agents.auth",
    "KeyStore": "keycard_agents.auth",
    "ResourceMetadata": "keycard_agents.auth",
    "SigningKey": "keycard_agents.auth",
    "StaticKeys": "keycard_agents.auth",
    "TokenExchangeClient": "keycard_agents.auth",
    "TokenReport": "keycard_agents.auth",
    "TokenVerifier": "keycard_agents.auth",
    "TrustedIssuer": "keycard_agents.auth",
    "inspect_token": "keycard_agents.auth",
    "protected_resource_metadata": "keycard_agents.auth",
    "verify_jwt": "keycard_agents.auth",
    "AgentAuditRecord": "keycard_agents.audit",
    "AgentAuditStore": "keycard_agents.audit",
    "AuditRecorder": "keycard_agents.audit",
    "AuditTrail": "keycard_agents.audit",
    "ChainSummary": "keycard_agents.audit",
    "DelegationTree": "keycard_agents.audit",
    "Hop": "keycard_agents.audit",
    "JsonlAgentAuditStore": "keycard_agents.audit",
    "MemoryAgentAuditStore": "keycard_agents.audit",
    "TraceNotFoundError": "keycard_agents.audit",
    "TrailEntry": "keycard_agents.audit",
    "render_text": "keycard_agents.audit",
    "to_dot": "keycard_agents.audit",
    "to_json": "keycard_agents.audit",
    "to_mermaid": "keycard_agents.audit",
    "AgentHandle": "keycard_agents.delegation",
    "DelegatedAuth": "keycard_agents.delegation",
    "DelegatedTokens": "keycard_agents.delegation",
    "DelegationProvider": "keycard_agents.delegation",
    "HandleFactory": "keycard_agents.delegation",
    "HttpApiHandle": "keycard_agents.delegation",
    "TokenExchangeDelegation": "keycard_agents.delegation",
    "delegation_for": "keycard_agents.delegation",
    "register_handle_factory": "keycard_agents.delegation",
    "CapacityExceededError": "keycard_agents.runtime",
    "MemoryTaskStore": "keycard_agents.runtime",
    "TaskRecord": "keycard_agents.runtime",
    "TaskRuntime": "keycard_agents.runtime",
    "TaskStore": "keycard_agents.runtime",
    "DELEGATION_EXTENSION_URI": "keycard_agents.a2a",
    "build_agent_card": "keycard_agents.a2a",
}


def __getattr__(name: str) -> _Any:
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'keycard_agents' has no attribute {name!r}")
    _warnings.warn(
        f"keycard_agents.{name} moved to {home}.{name}: import it from {home} "
        "(the old location goes away in the next release)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(_importlib.import_module(home), name)
