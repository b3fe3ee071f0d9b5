"""keycard-agents: agent-to-agent delegation with real RFC 8693 token exchange."""

from __future__ import annotations

from ._agent import Agent as Agent
from ._agent import AgentDependency as AgentDependency
from ._agent import Dependency as Dependency
from ._agent import HttpDependency as HttpDependency
from ._agent import McpDependency as McpDependency
from ._agent import Skill as Skill
from ._agent import SkillCall as SkillCall
from ._agent import skill as skill
from ._card import DELEGATION_EXTENSION_URI as DELEGATION_EXTENSION_URI
from ._card import build_agent_card as build_agent_card
from ._card import protected_resource_metadata as protected_resource_metadata
from ._client import AgentClient as AgentClient
from ._client import CardCache as CardCache
from ._client import ResourceMetadata as ResourceMetadata
from ._client import call_message as call_message
from ._client import open_agent_client as open_agent_client
from ._client import task_result as task_result
from ._client import text_message as text_message
from ._context import Caller as Caller
from ._context import Context as Context
from ._context import DelegationProvider as DelegationProvider
from ._delegation import AgentHandle as AgentHandle
from ._delegation import DelegatedAuth as DelegatedAuth
from ._delegation import DelegatedTokens as DelegatedTokens
from ._delegation import HandleFactory as HandleFactory
from ._delegation import HttpApiHandle as HttpApiHandle
from ._delegation import TokenExchangeDelegation as TokenExchangeDelegation
from ._delegation import delegation_for as delegation_for
from ._delegation import register_handle_factory as register_handle_factory
from ._errors import AuthenticationError as AuthenticationError
from ._errors import ConfigurationError as ConfigurationError
from ._errors import DelegationDeniedError as DelegationDeniedError
from ._errors import InsufficientScopeError as InsufficientScopeError
from ._errors import InteractionRequiredError as InteractionRequiredError
from ._errors import InvalidTokenError as InvalidTokenError
from ._errors import InvalidTokenResponseError as InvalidTokenResponseError
from ._errors import IssuerUnreachableError as IssuerUnreachableError
from ._errors import KeycardError as KeycardError
from ._errors import OAuthError as OAuthError
from ._errors import RemoteAuthenticationError as RemoteAuthenticationError
from ._errors import RemoteTaskError as RemoteTaskError
from ._errors import ResourceAccessError as ResourceAccessError
from ._errors import TraceNotFoundError as TraceNotFoundError
from ._errors import TransportError as TransportError
from ._errors import UserRequiredError as UserRequiredError
from ._exchange import ExchangedToken as ExchangedToken
from ._exchange import ExchangeStats as ExchangeStats
from ._exchange import TokenExchangeClient as TokenExchangeClient
from ._grant import AccessContext as AccessContext
from ._grant import ResourceError as ResourceError
from ._grant import grant as grant
from ._identity import ApplicationCredential as ApplicationCredential
from ._identity import ClientSecret as ClientSecret
from ._identity import EKSWorkloadIdentity as EKSWorkloadIdentity
from ._identity import WebIdentity as WebIdentity
from ._identity import WorkloadIdentity as WorkloadIdentity
from ._identity import credential_from_env as credential_from_env
from ._identity import resolve_issuer as resolve_issuer
from ._jwks import JWKSCache as JWKSCache
from ._keys import ALGORITHMS as ALGORITHMS
from ._keys import KeyStore as KeyStore
from ._keys import SigningKey as SigningKey
from ._principal import Actor as Actor
from ._principal import ActorChain as ActorChain
from ._principal import Principal as Principal
from ._profiles import TokenProfile as TokenProfile
from ._runtime import TaskRuntime as TaskRuntime
from ._server import AgentMount as AgentMount
from ._server import create_app as create_app
from ._server import serve as serve
from ._stores import CapacityExceededError as CapacityExceededError
from ._stores import MemoryTaskStore as MemoryTaskStore
from ._stores import TaskRecord as TaskRecord
from ._stores import TaskStore as TaskStore
from ._tokens import ACCESS_TOKEN_TYPE as ACCESS_TOKEN_TYPE
from ._tokens import CLIENT_ASSERTION_TYPE as CLIENT_ASSERTION_TYPE
from ._tokens import KeyResolver as KeyResolver
from ._tokens import StaticKeys as StaticKeys
from ._tokens import TokenVerifier as TokenVerifier
from ._tokens import TrustedIssuer as TrustedIssuer
from ._tokens import verify_jwt as verify_jwt
from ._trace._inspect import TokenReport as TokenReport
from ._trace._inspect import inspect_token as inspect_token
from ._trace._query import AuditTrail as AuditTrail
from ._trace._query import ChainSummary as ChainSummary
from ._trace._records import AgentAuditRecord as AgentAuditRecord
from ._trace._records import AgentAuditStore as AgentAuditStore
from ._trace._records import AuditRecorder as AuditRecorder
from ._trace._records import JsonlAgentAuditStore as JsonlAgentAuditStore
from ._trace._records import MemoryAgentAuditStore as MemoryAgentAuditStore
from ._trace._render import render_text as render_text
from ._trace._render import to_dot as to_dot
from ._trace._render import to_json as to_json
from ._trace._render import to_mermaid as to_mermaid
from ._trace._tree import DelegationTree as DelegationTree
from ._trace._tree import Hop as Hop
from ._trace._tree import TrailEntry as TrailEntry

__version__ = "0.1.0.dev0"

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
    "EKSWorkloadIdentity",
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
    "TokenProfile",
    "TokenReport",
    "TokenVerifier",
    "TraceNotFoundError",
    "TrailEntry",
    "TransportError",
    "TrustedIssuer",
    "UserRequiredError",
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
