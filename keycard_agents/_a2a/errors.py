"""A2A 1.0 protocol errors (A2A spec §8 "Error handling") and JSON-RPC 2.0 standard errors.

Each error carries its JSON-RPC ``code`` and the HTTP status the HTTP+JSON binding uses.
Messages are safe to send to the client: they never contain a token or a secret.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ValidationError

from keycard_agents._errors import KeycardError

__all__ = [
    "A2AError",
    "ContentTypeNotSupportedError",
    "ExtendedAgentCardNotConfiguredError",
    "ExtensionSupportRequiredError",
    "InternalError",
    "InvalidAgentResponseError",
    "InvalidParamsError",
    "InvalidRequestError",
    "MethodNotFoundError",
    "ParseError",
    "PushNotificationNotSupportedError",
    "TaskNotCancelableError",
    "TaskNotFoundError",
    "UnsupportedOperationError",
    "VersionNotSupportedError",
    "invalid_params",
]


class A2AError(KeycardError):
    """An A2A protocol error with its JSON-RPC ``code`` and HTTP ``http_status``.

    ``reason`` is the SCREAMING_SNAKE name the HTTP+JSON binding puts in its error
    details (``google.rpc.ErrorInfo.reason``). ``data`` is optional JSON-serializable
    detail (for example the list of invalid fields of an InvalidParams error).
    """

    code: ClassVar[int] = -32603
    http_status: ClassVar[int] = 500
    reason: ClassVar[str] = "INTERNAL"
    default_message: ClassVar[str] = "Internal error"

    def __init__(self, message: str | None = None, *, data: Any = None) -> None:
        self.message = message or self.default_message
        self.data = data
        super().__init__(self.message)

    def to_jsonrpc(self) -> dict[str, Any]:
        """The JSON-RPC 2.0 ``error`` object."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r})"


class TaskNotFoundError(A2AError):
    """The task does not exist, or it belongs to someone else (reported the same way)."""

    code = -32001
    http_status = 404
    reason = "TASK_NOT_FOUND"
    default_message = "Task not found"


class TaskNotCancelableError(A2AError):
    """The task is already in a terminal state."""

    code = -32002
    http_status = 409
    reason = "TASK_NOT_CANCELABLE"
    default_message = "Task cannot be canceled"


class PushNotificationNotSupportedError(A2AError):
    code = -32003
    http_status = 400
    reason = "PUSH_NOTIFICATION_NOT_SUPPORTED"
    default_message = "Push notifications are not supported by this agent"


class UnsupportedOperationError(A2AError):
    code = -32004
    http_status = 501
    reason = "UNSUPPORTED_OPERATION"
    default_message = "This operation is not supported"


class ContentTypeNotSupportedError(A2AError):
    code = -32005
    http_status = 415
    reason = "CONTENT_TYPE_NOT_SUPPORTED"
    default_message = "Content type not supported"


class InvalidAgentResponseError(A2AError):
    code = -32006
    http_status = 500
    reason = "INVALID_AGENT_RESPONSE"
    default_message = "Invalid agent response"


class ExtendedAgentCardNotConfiguredError(A2AError):
    code = -32007
    http_status = 400
    reason = "EXTENDED_AGENT_CARD_NOT_CONFIGURED"
    default_message = "The extended agent card is not configured"


class ExtensionSupportRequiredError(A2AError):
    code = -32008
    http_status = 400
    reason = "EXTENSION_SUPPORT_REQUIRED"
    default_message = "A required extension is not supported by the client"


class VersionNotSupportedError(A2AError):
    code = -32009
    http_status = 400
    reason = "VERSION_NOT_SUPPORTED"
    default_message = "A2A protocol version not supported; send header A2A-Version: 1.0"


class ParseError(A2AError):
    """JSON-RPC -32700: the body is not valid JSON."""

    code = -32700
    http_status = 400
    reason = "PARSE_ERROR"
    default_message = "Invalid JSON payload"


class InvalidRequestError(A2AError):
    """JSON-RPC -32600: the body is JSON but not a valid request object."""

    code = -32600
    http_status = 400
    reason = "INVALID_REQUEST"
    default_message = "Invalid request"


class MethodNotFoundError(A2AError):
    code = -32601
    http_status = 404
    reason = "METHOD_NOT_FOUND"
    default_message = "Method not found"


class InvalidParamsError(A2AError):
    """JSON-RPC -32602: parameters are missing or have the wrong type.

    ``data`` is ``{"errors": [{"loc": "...", "msg": "..."}, ...]}`` when the problems
    are known field by field.
    """

    code = -32602
    http_status = 400
    reason = "INVALID_PARAMS"
    default_message = "Invalid params"


class InternalError(A2AError):
    code = -32603
    http_status = 500
    reason = "INTERNAL"
    default_message = "Internal error"


def invalid_params(exc: ValidationError, *, what: str = "params") -> InvalidParamsError:
    """Translate a pydantic ``ValidationError`` into InvalidParams listing every problem.

    The message names each field path and what is wrong with it; ``data["errors"]``
    carries the same list as ``{"field": ..., "message": ...}`` objects. Input values
    are left out, so a secret sent in the wrong place is never echoed back.
    """
    problems = [
        {"field": ".".join(str(p) for p in err["loc"]) or what, "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    listed = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return InvalidParamsError(f"Invalid {what}: {listed}", data={"errors": problems})
