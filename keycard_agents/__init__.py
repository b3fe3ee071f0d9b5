"""keycard-agents: agent-to-agent delegation with real RFC 8693 token exchange."""

from __future__ import annotations

from keycard_agents._agent._agent import Agent as Agent
from keycard_agents._agent._agent import Skill as Skill
from keycard_agents._agent._agent import SkillCall as SkillCall
from keycard_agents._agent._agent import skill as skill
from keycard_agents._agent._card import DELEGATION_EXTENSION_URI as DELEGATION_EXTENSION_URI
from keycard_agents._agent._card import build_agent_card as build_agent_card
from keycard_agents._agent._card import protected_resource_metadata as protected_resource_metadata
from keycard_agents._agent._context import Context as Context
from keycard_agents._agent._context import DelegationProvider as DelegationProvider
from keycard_agents._agent._dependencies import AgentDependency as AgentDependency
from keycard_agents._agent._dependencies import Dependency as Dependency
from keycard_agents._agent._dependencies import HttpDependency as HttpDependency
from keycard_agents._agent._dependencies import McpDependency as McpDependency
from keycard_agents._agent._grant import AccessContext as AccessContext
from keycard_agents._agent._grant import ResourceError as ResourceError
from keycard_agents._agent._grant import grant as grant
from keycard_agents._audit._agent_records import AgentAuditRecord as AgentAuditRecord
from keycard_agents._audit._agent_records import AgentAuditStore as AgentAuditStore
from keycard_agents._audit._agent_records import AuditRecorder as AuditRecorder
from keycard_agents._audit._agent_records import JsonlAgentAuditStore as JsonlAgentAuditStore
from keycard_agents._audit._agent_records import MemoryAgentAuditStore as MemoryAgentAuditStore
from keycard_agents._audit._render import render_text as render_text
from keycard_agents._audit._render import to_dot as to_dot
from keycard_agents._audit._render import to_json as to_json
from keycard_agents._audit._render import to_mermaid as to_mermaid
from keycard_agents._audit._trail import AuditTrail as AuditTrail
from keycard_agents._audit._trail import ChainSummary as ChainSummary
from keycard_agents._audit._tree import DelegationTree as DelegationTree
from keycard_agents._audit._tree import Hop as Hop
from keycard_agents._audit._tree import TrailEntry as TrailEntry
from keycard_agents._client._agent_client import AgentClient as AgentClient
from keycard_agents._client._agent_client import CardCache as CardCache
from keycard_agents._client._agent_client import ResourceMetadata as ResourceMetadata
from keycard_agents._client._agent_client import call_message as call_message
from keycard_agents._client._agent_client import open_agent_client as open_agent_client
from keycard_agents._client._agent_client import task_result as task_result
from keycard_agents._client._agent_client import text_message as text_message
from keycard_agents._delegation._provider import AgentHandle as AgentHandle
from keycard_agents._delegation._provider import DelegatedAuth as DelegatedAuth
from keycard_agents._delegation._provider import DelegatedTokens as DelegatedTokens
from keycard_agents._delegation._provider import HandleFactory as HandleFactory
from keycard_agents._delegation._provider import HttpApiHandle as HttpApiHandle
from keycard_agents._delegation._provider import TokenExchangeDelegation as TokenExchangeDelegation
from keycard_agents._delegation._provider import delegation_for as delegation_for
from keycard_agents._delegation._provider import register_handle_factory as register_handle_factory
from keycard_agents._errors import AuthenticationError as AuthenticationError
from keycard_agents._errors import ConfigurationError as ConfigurationError
from keycard_agents._errors import DelegationDeniedError as DelegationDeniedError
from keycard_agents._errors import InsufficientScopeError as InsufficientScopeError
from keycard_agents._errors import InteractionRequiredError as InteractionRequiredError
from keycard_agents._errors import InvalidTokenError as InvalidTokenError
from keycard_agents._errors import InvalidTokenResponseError as InvalidTokenResponseError
from keycard_agents._errors import IssuerUnreachableError as IssuerUnreachableError
from keycard_agents._errors import KeycardError as KeycardError
from keycard_agents._errors import OAuthError as OAuthError
from keycard_agents._errors import RemoteAuthenticationError as RemoteAuthenticationError
from keycard_agents._errors import RemoteTaskError as RemoteTaskError
from keycard_agents._errors import ResourceAccessError as ResourceAccessError
from keycard_agents._errors import TraceNotFoundError as TraceNotFoundError
from keycard_agents._errors import TransportError as TransportError
from keycard_agents._jose._jwt import ACCESS_TOKEN_TYPE as ACCESS_TOKEN_TYPE
from keycard_agents._jose._jwt import CLIENT_ASSERTION_TYPE as CLIENT_ASSERTION_TYPE
from keycard_agents._jose._jwt import verify_jwt as verify_jwt
from keycard_agents._jose._keys import ALGORITHMS as ALGORITHMS
from keycard_agents._jose._keys import KeyResolver as KeyResolver
from keycard_agents._jose._keys import KeyStore as KeyStore
from keycard_agents._jose._keys import SigningKey as SigningKey
from keycard_agents._jose._keys import StaticKeys as StaticKeys
from keycard_agents._jose._principal import Actor as Actor
from keycard_agents._jose._principal import ActorChain as ActorChain
from keycard_agents._jose._principal import Principal as Principal
from keycard_agents._oauth._credentials import ApplicationCredential as ApplicationCredential
from keycard_agents._oauth._credentials import ClientSecret as ClientSecret
from keycard_agents._oauth._credentials import WebIdentity as WebIdentity
from keycard_agents._oauth._credentials import WorkloadIdentity as WorkloadIdentity
from keycard_agents._oauth._credentials import credential_from_env as credential_from_env
from keycard_agents._oauth._credentials import resolve_issuer as resolve_issuer
from keycard_agents._oauth._exchange import ExchangedToken as ExchangedToken
from keycard_agents._oauth._exchange import ExchangeStats as ExchangeStats
from keycard_agents._oauth._exchange import TokenExchangeClient as TokenExchangeClient
from keycard_agents._oauth._inspect import TokenReport as TokenReport
from keycard_agents._oauth._inspect import inspect_token as inspect_token
from keycard_agents._oauth._jwks import JWKSCache as JWKSCache
from keycard_agents._oauth._jwks import TrustedIssuer as TrustedIssuer
from keycard_agents._oauth._resource_server import Caller as Caller
from keycard_agents._oauth._verifier import TokenVerifier as TokenVerifier
from keycard_agents._runtime._runtime import TaskRuntime as TaskRuntime
from keycard_agents._runtime._store import CapacityExceededError as CapacityExceededError
from keycard_agents._runtime._store import MemoryTaskStore as MemoryTaskStore
from keycard_agents._runtime._store import TaskRecord as TaskRecord
from keycard_agents._runtime._store import TaskStore as TaskStore
from keycard_agents._server import AgentMount as AgentMount
from keycard_agents._server import create_app as create_app
from keycard_agents._server import serve as serve
from keycard_agents._version import __version__ as __version__

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "ALGORITHMS",
    "CLIENT_ASSERTION_TYPE",
    "DELEGATION_EXTENSION_URI",
    "AccessContext",
    "Actor",
    "ActorChain",
    "Agent",
    "AgentAuditRecord",
    "AgentAuditStore",
    "AgentClient",
    "AgentDependency",
    "AgentHandle",
    "AgentMount",
    "ApplicationCredential",
    "AuditRecorder",
    "AuditTrail",
    "AuthenticationError",
    "Caller",
    "CapacityExceededError",
    "CardCache",
    "ChainSummary",
    "ClientSecret",
    "ConfigurationError",
    "Context",
    "DelegatedAuth",
    "DelegatedTokens",
    "DelegationDeniedError",
    "DelegationProvider",
    "DelegationTree",
    "Dependency",
    "ExchangeStats",
    "ExchangedToken",
    "HandleFactory",
    "Hop",
    "HttpApiHandle",
    "HttpDependency",
    "InsufficientScopeError",
    "InteractionRequiredError",
    "InvalidTokenError",
    "InvalidTokenResponseError",
    "IssuerUnreachableError",
    "JWKSCache",
    "JsonlAgentAuditStore",
    "KeyResolver",
    "KeyStore",
    "KeycardError",
    "McpDependency",
    "MemoryAgentAuditStore",
    "MemoryTaskStore",
    "OAuthError",
    "Principal",
    "RemoteAuthenticationError",
    "RemoteTaskError",
    "ResourceAccessError",
    "ResourceError",
    "ResourceMetadata",
    "SigningKey",
    "Skill",
    "SkillCall",
    "StaticKeys",
    "TaskRecord",
    "TaskRuntime",
    "TaskStore",
    "TokenExchangeClient",
    "TokenExchangeDelegation",
    "TokenReport",
    "TokenVerifier",
    "TraceNotFoundError",
    "TrailEntry",
    "TransportError",
    "TrustedIssuer",
    "WebIdentity",
    "WorkloadIdentity",
    "__version__",
    "build_agent_card",
    "call_message",
    "create_app",
    "credential_from_env",
    "delegation_for",
    "grant",
    "inspect_token",
    "open_agent_client",
    "protected_resource_metadata",
    "register_handle_factory",
    "render_text",
    "resolve_issuer",
    "serve",
    "skill",
    "task_result",
    "text_message",
    "to_dot",
    "to_json",
    "to_mermaid",
    "verify_jwt",
]
