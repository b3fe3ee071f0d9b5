"""A2A 1.0 wire types as pydantic models (A2A spec §4 "Protocol data model", ProtoJSON mapping).

Field names follow the proto definitions of the official ``a2a.proto`` (the ``a2a_pb2``
module of a2a-sdk 1.3.0): camelCase on the wire, enums as SCREAMING_SNAKE strings
(``TASK_STATE_COMPLETED``), ``oneof`` groups checked to hold exactly one member, no
``kind`` discriminators. Dump with :func:`dump` (``by_alias=True, exclude_none=True``).

Parsing rejects unknown enum strings and wrongly typed values with a pydantic
``ValidationError``; :func:`keycard_agents._a2a.errors.invalid_params` turns one into an
InvalidParams (-32602) error listing the problems. Unknown fields are ignored, as ProtoJSON
parsers that accept newer peers do.
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "A2A_PROTOCOL_VERSION",
    "AGENT_CARD_PATH",
    "INTERRUPTED_STATES",
    "TERMINAL_STATES",
    "APIKeySecurityScheme",
    "AgentCapabilities",
    "AgentCard",
    "AgentCardSignature",
    "AgentExtension",
    "AgentInterface",
    "AgentProvider",
    "AgentSkill",
    "Artifact",
    "AuthenticationInfo",
    "AuthorizationCodeOAuthFlow",
    "CancelTaskRequest",
    "ClientCredentialsOAuthFlow",
    "DeleteTaskPushNotificationConfigRequest",
    "DeviceCodeOAuthFlow",
    "GetExtendedAgentCardRequest",
    "GetTaskPushNotificationConfigRequest",
    "GetTaskRequest",
    "HTTPAuthSecurityScheme",
    "ImplicitOAuthFlow",
    "JSONRPCError",
    "JSONRPCRequest",
    "JSONRPCResponse",
    "ListTaskPushNotificationConfigsRequest",
    "ListTaskPushNotificationConfigsResponse",
    "ListTasksRequest",
    "ListTasksResponse",
    "Message",
    "MutualTlsSecurityScheme",
    "OAuth2SecurityScheme",
    "OAuthFlows",
    "OpenIdConnectSecurityScheme",
    "Part",
    "PasswordOAuthFlow",
    "ProtocolBinding",
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
    "TaskPushNotificationConfig",
    "TaskState",
    "TaskStatus",
    "TaskStatusUpdateEvent",
    "dump",
]

A2A_PROTOCOL_VERSION = "1.0"
#: Where an agent publishes its Agent Card, under its URL (A2A 1.0 §8.2, RFC 8615).
AGENT_CARD_PATH = "/.well-known/agent-card.json"


class ProtocolBinding:
    """The ``protocolBinding`` values of an AgentInterface (upper case, as clients compare)."""

    JSONRPC = "JSONRPC"
    HTTP_JSON = "HTTP+JSON"
    GRPC = "GRPC"


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=False,
    )


def new_id() -> str:
    """A random (version 4) UUID as text: the ids the runtime gives tasks, contexts,
    artifacts and messages. The string ``str(uuid.uuid4())`` gives, from the same
    ``os.urandom`` bytes, without building a ``UUID`` on the way (a third of the time;
    three per ``SendMessage``)."""
    h = os.urandom(16).hex()
    # Version 4 in the 13th digit, the RFC 9562 variant (10xx) in the 17th.
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def dump(model: BaseModel) -> dict[str, Any]:
    """A model as ProtoJSON-shaped JSON data (camelCase, ``None`` fields left out)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _one_of(model: BaseModel, names: tuple[str, ...], what: str) -> None:
    present = [n for n in names if getattr(model, n) is not None]
    if len(present) != 1:
        wire = ", ".join(to_camel(n) for n in names)
        raise ValueError(f"{what} must set exactly one of {wire} (got {len(present)})")


def _b64decode(value: Any) -> Any:
    # ProtoJSON ``bytes``: standard or URL-safe base64, padding optional.
    if isinstance(value, str):
        padded = value + "=" * (-len(value) % 4)
        try:
            if "-" in value or "_" in value:
                return base64.urlsafe_b64decode(padded.encode("ascii"))
            return base64.b64decode(padded.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise ValueError("raw must be base64-encoded bytes") from exc
    return value


def _b64encode(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_b64decode),
    PlainSerializer(_b64encode, return_type=str, when_used="json"),
]


# ---------------------------------------------------------------------------- enums


class TaskState(str, enum.Enum):
    """Task lifecycle states (A2A spec §4.1.3)."""

    UNSPECIFIED = "TASK_STATE_UNSPECIFIED"
    SUBMITTED = "TASK_STATE_SUBMITTED"
    WORKING = "TASK_STATE_WORKING"
    COMPLETED = "TASK_STATE_COMPLETED"
    FAILED = "TASK_STATE_FAILED"
    CANCELED = "TASK_STATE_CANCELED"
    INPUT_REQUIRED = "TASK_STATE_INPUT_REQUIRED"
    REJECTED = "TASK_STATE_REJECTED"
    AUTH_REQUIRED = "TASK_STATE_AUTH_REQUIRED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def is_interrupted(self) -> bool:
        return self in INTERRUPTED_STATES


TERMINAL_STATES = frozenset(
    {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELED, TaskState.REJECTED}
)
INTERRUPTED_STATES = frozenset({TaskState.INPUT_REQUIRED, TaskState.AUTH_REQUIRED})


class Role(str, enum.Enum):
    UNSPECIFIED = "ROLE_UNSPECIFIED"
    USER = "ROLE_USER"
    AGENT = "ROLE_AGENT"


# ------------------------------------------------------------------ messages and tasks


class Part(_Wire):
    """One piece of content: exactly one of ``text``, ``raw``, ``url`` or ``data``.

    ``data`` is any JSON value; a JSON ``null`` data part cannot be told apart from an
    absent one and is rejected.
    """

    text: str | None = None
    raw: Base64Bytes | None = None
    url: str | None = None
    data: Any = None
    metadata: dict[str, Any] | None = None
    filename: str | None = None
    media_type: str | None = None

    @model_validator(mode="after")
    def _check_content(self) -> Part:
        _one_of(self, ("text", "raw", "url", "data"), "Part")
        return self


class Message(_Wire):
    message_id: str
    role: Role
    parts: list[Part] = Field(min_length=1)
    context_id: str | None = None
    task_id: str | None = None
    metadata: dict[str, Any] | None = None
    extensions: list[str] | None = None
    reference_task_ids: list[str] | None = None


class TaskStatus(_Wire):
    state: TaskState
    message: Message | None = None
    timestamp: datetime | None = None


class Artifact(_Wire):
    artifact_id: str
    parts: list[Part] = Field(min_length=1)
    name: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None
    extensions: list[str] | None = None


class Task(_Wire):
    id: str
    context_id: str
    status: TaskStatus
    artifacts: list[Artifact] = Field(default_factory=list)
    history: list[Message] = Field(default_factory=list)
    metadata: dict[str, Any] | None = None


class TaskStatusUpdateEvent(_Wire):
    task_id: str
    context_id: str
    status: TaskStatus
    metadata: dict[str, Any] | None = None


class TaskArtifactUpdateEvent(_Wire):
    task_id: str
    context_id: str
    artifact: Artifact
    append: bool | None = None
    last_chunk: bool | None = None
    metadata: dict[str, Any] | None = None


class StreamResponse(_Wire):
    """One streamed event: exactly one of task, message, statusUpdate, artifactUpdate."""

    task: Task | None = None
    message: Message | None = None
    status_update: TaskStatusUpdateEvent | None = None
    artifact_update: TaskArtifactUpdateEvent | None = None

    @model_validator(mode="after")
    def _check_payload(self) -> StreamResponse:
        _one_of(self, ("task", "message", "status_update", "artifact_update"), "StreamResponse")
        return self


# ------------------------------------------------------------------------ requests


class AuthenticationInfo(_Wire):
    scheme: str
    credentials: str | None = Field(default=None, repr=False)


class TaskPushNotificationConfig(_Wire):
    url: str
    id: str | None = None
    task_id: str | None = None
    token: str | None = Field(default=None, repr=False)
    authentication: AuthenticationInfo | None = None
    tenant: str | None = None


class GetTaskPushNotificationConfigRequest(_Wire):
    task_id: str = Field(min_length=1)
    id: str = Field(min_length=1)
    tenant: str | None = None


class DeleteTaskPushNotificationConfigRequest(GetTaskPushNotificationConfigRequest):
    pass


class ListTaskPushNotificationConfigsRequest(_Wire):
    task_id: str = Field(min_length=1)
    page_size: int | None = Field(default=None, ge=0)
    page_token: str | None = None
    tenant: str | None = None


class ListTaskPushNotificationConfigsResponse(_Wire):
    configs: list[TaskPushNotificationConfig] = Field(default_factory=list)
    next_page_token: str | None = None


class SendMessageConfiguration(_Wire):
    accepted_output_modes: list[str] | None = None
    history_length: int | None = Field(default=None, ge=0)
    return_immediately: bool | None = None
    task_push_notification_config: TaskPushNotificationConfig | None = None


class SendMessageRequest(_Wire):
    message: Message
    configuration: SendMessageConfiguration | None = None
    metadata: dict[str, Any] | None = None
    tenant: str | None = None


class SendMessageResponse(_Wire):
    """The result of SendMessage: exactly one of ``task`` or ``message``."""

    task: Task | None = None
    message: Message | None = None

    @model_validator(mode="after")
    def _check_payload(self) -> SendMessageResponse:
        _one_of(self, ("task", "message"), "SendMessageResponse")
        return self


class GetTaskRequest(_Wire):
    id: str
    history_length: int | None = Field(default=None, ge=0)
    tenant: str | None = None


class ListTasksRequest(_Wire):
    context_id: str | None = None
    status: TaskState | None = None
    page_size: int | None = Field(default=None, ge=0)
    page_token: str | None = None
    history_length: int | None = Field(default=None, ge=0)
    status_timestamp_after: datetime | None = None
    include_artifacts: bool | None = None
    tenant: str | None = None


class ListTasksResponse(_Wire):
    tasks: list[Task] = Field(default_factory=list)
    next_page_token: str = ""
    page_size: int = 0
    total_size: int = 0


class CancelTaskRequest(_Wire):
    id: str
    metadata: dict[str, Any] | None = None
    tenant: str | None = None


class SubscribeToTaskRequest(_Wire):
    id: str
    tenant: str | None = None


class GetExtendedAgentCardRequest(_Wire):
    tenant: str | None = None


# ------------------------------------------------------------------------ agent card


class AgentInterface(_Wire):
    url: str
    protocol_binding: str
    protocol_version: str = A2A_PROTOCOL_VERSION
    tenant: str | None = None


class AgentProvider(_Wire):
    organization: str
    url: str


class AgentExtension(_Wire):
    uri: str
    description: str | None = None
    required: bool | None = None
    params: dict[str, Any] | None = None


class AgentCapabilities(_Wire):
    streaming: bool | None = None
    push_notifications: bool | None = None
    extended_agent_card: bool | None = None
    extensions: list[AgentExtension] | None = None


class StringList(_Wire):
    values: list[str] = Field(default_factory=list, alias="list")

    @classmethod
    def of(cls, values: Sequence[str]) -> StringList:
        return cls.model_validate({"list": list(values)})


class SecurityRequirement(_Wire):
    """``{"schemes": {"oauth2": {"list": ["scope", ...]}}}``: schemes that must all hold."""

    schemes: dict[str, StringList] = Field(default_factory=dict)


class APIKeySecurityScheme(_Wire):
    location: str
    name: str
    description: str | None = None


class HTTPAuthSecurityScheme(_Wire):
    scheme: str
    bearer_format: str | None = None
    description: str | None = None


class AuthorizationCodeOAuthFlow(_Wire):
    authorization_url: str
    token_url: str
    scopes: dict[str, str] = Field(default_factory=dict)
    refresh_url: str | None = None
    pkce_required: bool | None = None


class ClientCredentialsOAuthFlow(_Wire):
    token_url: str
    scopes: dict[str, str] = Field(default_factory=dict)
    refresh_url: str | None = None


class ImplicitOAuthFlow(_Wire):
    """Deprecated by OAuth 2.0 Security BCP (RFC 9700); parsed, never generated."""

    authorization_url: str
    scopes: dict[str, str] = Field(default_factory=dict)
    refresh_url: str | None = None


class PasswordOAuthFlow(_Wire):
    """Deprecated by OAuth 2.0 Security BCP (RFC 9700); parsed, never generated."""

    token_url: str
    scopes: dict[str, str] = Field(default_factory=dict)
    refresh_url: str | None = None


class DeviceCodeOAuthFlow(_Wire):
    device_authorization_url: str
    token_url: str
    scopes: dict[str, str] = Field(default_factory=dict)
    refresh_url: str | None = None


class OAuthFlows(_Wire):
    """Exactly one flow (the proto ``oneof``)."""

    authorization_code: AuthorizationCodeOAuthFlow | None = None
    client_credentials: ClientCredentialsOAuthFlow | None = None
    implicit: ImplicitOAuthFlow | None = None
    password: PasswordOAuthFlow | None = None
    device_code: DeviceCodeOAuthFlow | None = None

    @model_validator(mode="after")
    def _check_flow(self) -> OAuthFlows:
        flows = ("authorization_code", "client_credentials", "implicit", "password", "device_code")
        _one_of(self, flows, "OAuthFlows")
        return self


class OAuth2SecurityScheme(_Wire):
    flows: OAuthFlows
    description: str | None = None
    oauth2_metadata_url: str | None = None


class OpenIdConnectSecurityScheme(_Wire):
    open_id_connect_url: str
    description: str | None = None


class MutualTlsSecurityScheme(_Wire):
    description: str | None = None


class SecurityScheme(_Wire):
    api_key_security_scheme: APIKeySecurityScheme | None = None
    http_auth_security_scheme: HTTPAuthSecurityScheme | None = None
    oauth2_security_scheme: OAuth2SecurityScheme | None = None
    open_id_connect_security_scheme: OpenIdConnectSecurityScheme | None = None
    mtls_security_scheme: MutualTlsSecurityScheme | None = None

    @model_validator(mode="after")
    def _check_scheme(self) -> SecurityScheme:
        _one_of(
            self,
            (
                "api_key_security_scheme",
                "http_auth_security_scheme",
                "oauth2_security_scheme",
                "open_id_connect_security_scheme",
                "mtls_security_scheme",
            ),
            "SecurityScheme",
        )
        return self


class AgentSkill(_Wire):
    id: str
    name: str
    description: str
    tags: list[str] = Field(default_factory=list)
    examples: list[str] | None = None
    input_modes: list[str] | None = None
    output_modes: list[str] | None = None
    security_requirements: list[SecurityRequirement] | None = None


class AgentCardSignature(_Wire):
    protected: str
    signature: str
    header: dict[str, Any] | None = None


class AgentCard(_Wire):
    name: str
    description: str
    supported_interfaces: list[AgentInterface] = Field(min_length=1)
    version: str
    capabilities: AgentCapabilities
    default_input_modes: list[str]
    default_output_modes: list[str]
    skills: list[AgentSkill]
    provider: AgentProvider | None = None
    documentation_url: str | None = None
    security_schemes: dict[str, SecurityScheme] | None = None
    security_requirements: list[SecurityRequirement] | None = None
    signatures: list[AgentCardSignature] | None = None
    icon_url: str | None = None


# ------------------------------------------------------------------------ JSON-RPC 2.0


class JSONRPCRequest(BaseModel):
    jsonrpc: Literal["2.0"]
    method: str
    id: StrictStr | StrictInt | None = None
    params: dict[str, Any] | None = None


class JSONRPCError(BaseModel):
    code: int
    message: str
    data: Any = None


class JSONRPCResponse(BaseModel):
    """A response: ``result`` on success, ``error`` on failure (never both)."""

    jsonrpc: Literal["2.0"] = "2.0"
    id: StrictStr | StrictInt | None = None
    result: Any = None
    error: JSONRPCError | None = None

    def to_json_data(self) -> dict[str, Any]:
        """JSON data with exactly one of ``result`` / ``error`` (``result`` may be null)."""
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self.id}
        if self.error is not None:
            body["error"] = self.error.model_dump(mode="json", exclude_none=True)
        else:
            body["result"] = self.result
        return body
