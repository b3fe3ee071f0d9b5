"""A2A 1.0 wire types and protocol errors, as keycard-agents speaks them.

Models are ProtoJSON-shaped pydantic models (camelCase, enum strings); use
:func:`dump` to serialize one. Errors carry their JSON-RPC ``code`` and HTTP status.
:func:`build_agent_card` is the card an agent publishes, with our delegation extension
(:data:`DELEGATION_EXTENSION_URI`).
"""

from __future__ import annotations

from keycard_agents._a2a.errors import A2AError as A2AError
from keycard_agents._a2a.errors import ContentTypeNotSupportedError as ContentTypeNotSupportedError
from keycard_agents._a2a.errors import (
    ExtendedAgentCardNotConfiguredError as ExtendedAgentCardNotConfiguredError,
)
from keycard_agents._a2a.errors import (
    ExtensionSupportRequiredError as ExtensionSupportRequiredError,
)
from keycard_agents._a2a.errors import InternalError as InternalError
from keycard_agents._a2a.errors import InvalidAgentResponseError as InvalidAgentResponseError
from keycard_agents._a2a.errors import InvalidParamsError as InvalidParamsError
from keycard_agents._a2a.errors import InvalidRequestError as InvalidRequestError
from keycard_agents._a2a.errors import MethodNotFoundError as MethodNotFoundError
from keycard_agents._a2a.errors import ParseError as ParseError
from keycard_agents._a2a.errors import (
    PushNotificationNotSupportedError as PushNotificationNotSupportedError,
)
from keycard_agents._a2a.errors import TaskNotCancelableError as TaskNotCancelableError
from keycard_agents._a2a.errors import TaskNotFoundError as TaskNotFoundError
from keycard_agents._a2a.errors import UnsupportedOperationError as UnsupportedOperationError
from keycard_agents._a2a.errors import VersionNotSupportedError as VersionNotSupportedError
from keycard_agents._a2a.parts import File as File
from keycard_agents._a2a.types import A2A_PROTOCOL_VERSION as A2A_PROTOCOL_VERSION
from keycard_agents._a2a.types import AGENT_CARD_PATH as AGENT_CARD_PATH
from keycard_agents._a2a.types import INTERRUPTED_STATES as INTERRUPTED_STATES
from keycard_agents._a2a.types import TERMINAL_STATES as TERMINAL_STATES
from keycard_agents._a2a.types import AgentCapabilities as AgentCapabilities
from keycard_agents._a2a.types import AgentCard as AgentCard
from keycard_agents._a2a.types import AgentCardSignature as AgentCardSignature
from keycard_agents._a2a.types import AgentExtension as AgentExtension
from keycard_agents._a2a.types import AgentInterface as AgentInterface
from keycard_agents._a2a.types import AgentProvider as AgentProvider
from keycard_agents._a2a.types import AgentSkill as AgentSkill
from keycard_agents._a2a.types import APIKeySecurityScheme as APIKeySecurityScheme
from keycard_agents._a2a.types import Artifact as Artifact
from keycard_agents._a2a.types import AuthenticationInfo as AuthenticationInfo
from keycard_agents._a2a.types import AuthorizationCodeOAuthFlow as AuthorizationCodeOAuthFlow
from keycard_agents._a2a.types import CancelTaskRequest as CancelTaskRequest
from keycard_agents._a2a.types import ClientCredentialsOAuthFlow as ClientCredentialsOAuthFlow
from keycard_agents._a2a.types import (
    DeleteTaskPushNotificationConfigRequest as DeleteTaskPushNotificationConfigRequest,
)
from keycard_agents._a2a.types import DeviceCodeOAuthFlow as DeviceCodeOAuthFlow
from keycard_agents._a2a.types import GetExtendedAgentCardRequest as GetExtendedAgentCardRequest
from keycard_agents._a2a.types import (
    GetTaskPushNotificationConfigRequest as GetTaskPushNotificationConfigRequest,
)
from keycard_agents._a2a.types import GetTaskRequest as GetTaskRequest
from keycard_agents._a2a.types import HTTPAuthSecurityScheme as HTTPAuthSecurityScheme
from keycard_agents._a2a.types import ImplicitOAuthFlow as ImplicitOAuthFlow
from keycard_agents._a2a.types import JSONRPCError as JSONRPCError
from keycard_agents._a2a.types import JSONRPCRequest as JSONRPCRequest
from keycard_agents._a2a.types import JSONRPCResponse as JSONRPCResponse
from keycard_agents._a2a.types import (
    ListTaskPushNotificationConfigsRequest as ListTaskPushNotificationConfigsRequest,
)
from keycard_agents._a2a.types import (
    ListTaskPushNotificationConfigsResponse as ListTaskPushNotificationConfigsResponse,
)
from keycard_agents._a2a.types import ListTasksRequest as ListTasksRequest
from keycard_agents._a2a.types import ListTasksResponse as ListTasksResponse
from keycard_agents._a2a.types import Message as Message
from keycard_agents._a2a.types import MutualTlsSecurityScheme as MutualTlsSecurityScheme
from keycard_agents._a2a.types import OAuth2SecurityScheme as OAuth2SecurityScheme
from keycard_agents._a2a.types import OAuthFlows as OAuthFlows
from keycard_agents._a2a.types import OpenIdConnectSecurityScheme as OpenIdConnectSecurityScheme
from keycard_agents._a2a.types import Part as Part
from keycard_agents._a2a.types import PasswordOAuthFlow as PasswordOAuthFlow
from keycard_agents._a2a.types import ProtocolBinding as ProtocolBinding
from keycard_agents._a2a.types import Role as Role
from keycard_agents._a2a.types import SecurityRequirement as SecurityRequirement
from keycard_agents._a2a.types import SecurityScheme as SecurityScheme
from keycard_agents._a2a.types import SendMessageConfiguration as SendMessageConfiguration
from keycard_agents._a2a.types import SendMessageRequest as SendMessageRequest
from keycard_agents._a2a.types import SendMessageResponse as SendMessageResponse
from keycard_agents._a2a.types import StreamResponse as StreamResponse
from keycard_agents._a2a.types import StringList as StringList
from keycard_agents._a2a.types import SubscribeToTaskRequest as SubscribeToTaskRequest
from keycard_agents._a2a.types import Task as Task
from keycard_agents._a2a.types import TaskArtifactUpdateEvent as TaskArtifactUpdateEvent
from keycard_agents._a2a.types import TaskPushNotificationConfig as TaskPushNotificationConfig
from keycard_agents._a2a.types import TaskState as TaskState
from keycard_agents._a2a.types import TaskStatus as TaskStatus
from keycard_agents._a2a.types import TaskStatusUpdateEvent as TaskStatusUpdateEvent
from keycard_agents._a2a.types import dump as dump
from keycard_agents._agent._card import DELEGATION_EXTENSION_URI as DELEGATION_EXTENSION_URI
from keycard_agents._agent._card import build_agent_card as build_agent_card
from keycard_agents._client._agent_client import AuthRequired as AuthRequired
from keycard_agents._client._agent_client import auth_required as auth_required
from keycard_agents._jose._card_signature import CardSignatureError as CardSignatureError

__all__ = [
    "A2A_PROTOCOL_VERSION",
    "AGENT_CARD_PATH",
    "DELEGATION_EXTENSION_URI",
    "INTERRUPTED_STATES",
    "TERMINAL_STATES",
    "A2AError",
    "APIKeySecurityScheme",
    "AgentCapabilities",
    "AgentCard",
    "AgentCardSignature",
    "AgentExtension",
    "AgentInterface",
    "AgentProvider",
    "AgentSkill",
    "Artifact",
    "AuthRequired",
    "AuthenticationInfo",
    "AuthorizationCodeOAuthFlow",
    "CancelTaskRequest",
    "CardSignatureError",
    "ClientCredentialsOAuthFlow",
    "ContentTypeNotSupportedError",
    "DeleteTaskPushNotificationConfigRequest",
    "DeviceCodeOAuthFlow",
    "ExtendedAgentCardNotConfiguredError",
    "ExtensionSupportRequiredError",
    "File",
    "GetExtendedAgentCardRequest",
    "GetTaskPushNotificationConfigRequest",
    "GetTaskRequest",
    "HTTPAuthSecurityScheme",
    "ImplicitOAuthFlow",
    "InternalError",
    "InvalidAgentResponseError",
    "InvalidParamsError",
    "InvalidRequestError",
    "JSONRPCError",
    "JSONRPCRequest",
    "JSONRPCResponse",
    "ListTaskPushNotificationConfigsRequest",
    "ListTaskPushNotificationConfigsResponse",
    "ListTasksRequest",
    "ListTasksResponse",
    "Message",
    "MethodNotFoundError",
    "MutualTlsSecurityScheme",
    "OAuth2SecurityScheme",
    "OAuthFlows",
    "OpenIdConnectSecurityScheme",
    "ParseError",
    "Part",
    "PasswordOAuthFlow",
    "ProtocolBinding",
    "PushNotificationNotSupportedError",
    "Role",
    "SecurityRequirement",
    "SecurityScheme",
    "SendMessageConfiguration",
    "SendMessageRequest",
    "SendMessageResponse",
    "StreamResponse",
    "StringList",
    "SubscribeToTaskRequest",
    "Task",
    "TaskArtifactUpdateEvent",
    "TaskNotCancelableError",
    "TaskNotFoundError",
    "TaskPushNotificationConfig",
    "TaskState",
    "TaskStatus",
    "TaskStatusUpdateEvent",
    "UnsupportedOperationError",
    "VersionNotSupportedError",
    "auth_required",
    "build_agent_card",
    "dump",
]
