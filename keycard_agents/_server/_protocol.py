"""Transport rules shared by the A2A JSON-RPC and HTTP+JSON bindings.

Implements A2A 1.0 §3.2.6 / §3.6 (the ``A2A-Version`` service parameter, sent as a header
or a query parameter; a request without it is a 0.3 request), the error shapes of §9.5
(JSON-RPC 2.0 ``error`` objects whose ``data`` is a list of typed details) and §11.6
(HTTP+JSON errors as ``google.rpc.Status`` with ``google.rpc.ErrorInfo`` /
``google.rpc.BadRequest`` details, AIP-193), and bounded reading of request bodies.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

from starlette.requests import ClientDisconnect, Request

from keycard_agents._a2a.errors import (
    A2AError,
    InvalidParamsError,
    InvalidRequestError,
    ParseError,
    VersionNotSupportedError,
)
from keycard_agents._errors import AuthenticationError, InvalidTokenError, KeycardError
from keycard_agents._json import JsonLimitError, loads_bounded
from keycard_agents._logs import get_logger

__all__ = [
    "A2A_VERSION_HEADER",
    "DEFAULT_MAX_BODY_SIZE",
    "SUPPORTED_VERSION",
    "BodyTooLargeError",
    "check_version",
    "error_details",
    "grpc_status_name",
    "jsonrpc_error_object",
    "log_refusal",
    "media_type",
    "parse_json_body",
    "read_body",
    "rest_error_body",
]

logger = get_logger("keycard_agents.server")

A2A_VERSION_HEADER = "A2A-Version"
SUPPORTED_VERSION = "1.0"
DEFAULT_MAX_BODY_SIZE = 1024 * 1024

_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
_A2A_DOMAIN = "a2a-protocol.org"

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "FAILED_PRECONDITION",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


class BodyTooLargeError(KeycardError):
    """The request body is larger than the server accepts (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body exceeds the limit of {limit} bytes.")
        self.limit = limit


def grpc_status_name(status_code: int) -> str:
    """The ``google.rpc.Code`` name matching an HTTP status (AIP-193 mapping)."""
    return _STATUS_NAMES.get(status_code, "INTERNAL" if status_code >= 500 else "UNKNOWN")


def _accepted(version: str) -> bool:
    # Patch versions do not affect negotiation: "1.0" and "1.0.1" are both 1.0.
    parts = version.strip().split(".")
    return len(parts) in (2, 3) and parts[:2] == ["1", "0"] and all(p.isdigit() for p in parts)


def check_version(request: Request, *, allow_missing: bool) -> str:
    """The negotiated A2A version, or VersionNotSupportedError saying what to send.

    The version comes from the ``A2A-Version`` header or, failing that, the query
    parameter of the same name. A missing version means 0.3 (spec §3.2.6) and is refused
    unless ``allow_missing`` is set, in which case the request is served as 1.0.
    """
    version = request.headers.get(A2A_VERSION_HEADER) or request.query_params.get(
        A2A_VERSION_HEADER
    )
    if not version:
        if allow_missing:
            return SUPPORTED_VERSION
        raise VersionNotSupportedError(
            "This agent speaks A2A 1.0 only. The request has no A2A-Version, which means "
            "0.3: send the header 'A2A-Version: 1.0'.",
            data={"supportedVersions": SUPPORTED_VERSION},
        )
    if not _accepted(version):
        shown = version if len(version) <= 16 and version.isprintable() else "(unreadable)"
        raise VersionNotSupportedError(
            f"A2A version {shown} is not supported: this agent speaks A2A 1.0. "
            "Send the header 'A2A-Version: 1.0'.",
            data={"supportedVersions": SUPPORTED_VERSION},
        )
    return SUPPORTED_VERSION


def media_type(request: Request) -> str:
    """The request's media type without parameters, lower case ('' when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body(request: Request, *, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes while it is being read.

    A declared ``Content-Length`` over the limit is refused before reading anything; a
    body without one (chunked) is cut off as soon as it passes the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLargeError(limit)
        except ValueError:
            pass
    chunks: list[bytes] = []
    size = 0
    if request._stream_consumed or hasattr(request, "_body"):
        # Read before through this Request: Starlette's stream has what is left (or the
        # cached body, or raises that the stream is consumed).
        try:
            async with aclosing(request.stream()) as stream:
                async for chunk in stream:
                    size += len(chunk)
                    if size > limit:
                        raise BodyTooLargeError(limit)
                    chunks.append(chunk)
        except ClientDisconnect:
            return b""
        return b"".join(chunks)
    # The ASGI messages themselves, as Request.stream() reads them, without its async
    # generator (a quarter of the time: this runs on every request).
    receive = request.receive
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                request._stream_consumed = True
                return b"".join(chunks)
        elif kind == "http.disconnect":
            request._is_disconnected = True
            return b""


def log_refusal(binding: str, exc: BaseException) -> None:
    """One log line for a request refused because of what the client sent.

    Internal errors are logged (with their traceback) where they are mapped; this covers
    the expected refusals: bad input, authentication, unknown tasks. Only our own
    message is logged (repr-escaped, cut short), never a token or a request body.
    """
    if isinstance(exc, InvalidTokenError):
        logger.info("A2A %s request refused: invalid token (%s check)", binding, exc.check)
    elif isinstance(exc, AuthenticationError):
        logger.info("A2A %s request refused: %s", binding, type(exc).__name__)
    elif isinstance(exc, A2AError) and exc.http_status < 500:
        logger.info("A2A %s request refused: %s %r", binding, type(exc).__name__, exc.message[:200])


def parse_json_body(body: bytes) -> Any:
    """A request body as JSON, with the bounds of :func:`keycard_agents._json.loads_bounded`.

    Not JSON (including ``NaN``, ``Infinity``, numbers beyond a double, lone surrogates)
    is a ParseError (-32700); JSON nested too deep is an InvalidRequestError (-32600).
    """
    try:
        return loads_bounded(body)
    except JsonLimitError as exc:
        if exc.problem == "depth":
            raise InvalidRequestError(
                f"The request body is {exc}: flatten the message or its metadata."
            ) from None
        raise ParseError(f"The request body is not valid JSON: {exc}.") from None


def _string_metadata(data: Any) -> dict[str, str]:
    # google.rpc.ErrorInfo.metadata is map<string, string>.
    if not isinstance(data, dict):
        return {}
    return {
        str(k): v if isinstance(v, str) else str(v)
        for k, v in data.items()
        if k != "errors" and v is not None
    }


def error_details(error: A2AError, *, reason: str | None = None) -> list[dict[str, Any]]:
    """The typed details of an error: an ErrorInfo, plus a BadRequest for InvalidParams."""
    details: list[dict[str, Any]] = [
        {
            "@type": _ERROR_INFO,
            "reason": reason or error.reason,
            "domain": _A2A_DOMAIN,
            "metadata": _string_metadata(error.data),
        }
    ]
    if isinstance(error, InvalidParamsError) and isinstance(error.data, dict):
        problems = error.data.get("errors")
        if isinstance(problems, list) and problems:
            details.append(
                {
                    "@type": _BAD_REQUEST,
                    "fieldViolations": [
                        {"field": str(p.get("field", "")), "description": str(p.get("message", ""))}
                        for p in problems
                        if isinstance(p, dict)
                    ],
                }
            )
    return details


def jsonrpc_error_object(error: A2AError, *, reason: str | None = None) -> dict[str, Any]:
    """The JSON-RPC ``error`` member for an A2A error."""
    return {
        "code": error.code,
        "message": error.message,
        "data": error_details(error, reason=reason),
    }


def rest_error_body(
    error: A2AError, *, status_code: int | None = None, reason: str | None = None
) -> dict[str, Any]:
    """The HTTP+JSON error body: ``{"error": google.rpc.Status}``."""
    status = status_code or error.http_status
    return {
        "error": {
            "code": status,
            "status": grpc_status_name(status),
            "message": error.message,
            "details": error_details(error, reason=reason),
        }
    }
