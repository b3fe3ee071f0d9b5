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
from ._context import Caller as Caller
from ._context import Context as Context
from ._context import DelegationProvider as DelegationProvider
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
from ._errors import TransportError as TransportError
from ._exchange import ExchangedToken as ExchangedToken
from ._exchange import ExchangeStats as ExchangeStats
from ._exchange import TokenExchangeClient as TokenExchangeClient
from ._identity import ApplicationCredential as ApplicationCredential
from ._identity import ClientSecret as ClientSecret
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

__version__ = "0.1.0.dev0"

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "ALGORITHMS",
    "CLIENT_ASSERTION_TYPE",
    "DELEGATION_EXTENSION_URI",
    "Actor",
    "ActorChain",
    "Agent",
    "AgentDependency",
    "AgentMount",
    "ApplicationCredential",
    "AuthenticationError",
    "Caller",
    "CapacityExceededError",
    "ClientSecret",
    "ConfigurationError",
    "Context",
    "DelegationDeniedError",
    "DelegationProvider",
    "Dependency",
    "ExchangeStats",
    "ExchangedToken",
    "HttpDependency",
    "InsufficientScopeError",
    "InteractionRequiredError",
    "InvalidTokenError",
    "InvalidTokenResponseError",
    "IssuerUnreachableError",
    "JWKSCache",
    "KeyResolver",
    "KeyStore",
    "KeycardError",
    "McpDependency",
    "MemoryTaskStore",
    "OAuthError",
    "Principal",
    "SigningKey",
    "Skill",
    "SkillCall",
    "StaticKeys",
    "TaskRecord",
    "TaskRuntime",
    "TaskStore",
    "TokenExchangeClient",
    "TokenVerifier",
    "TransportError",
    "TrustedIssuer",
    "WebIdentity",
    "WorkloadIdentity",
    "__version__",
    "build_agent_card",
    "create_app",
    "credential_from_env",
    "protected_resource_metadata",
    "resolve_issuer",
    "serve",
    "skill",
    "verify_jwt",
]
