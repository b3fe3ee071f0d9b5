"""Token endpoint request parsing and error responses.

RFC 6749 §3.2 (form-encoded POST, parameters without a value are omitted, no
repeated parameters), §5.2 (JSON error responses, ``Cache-Control: no-store``),
§2.3.1 (``WWW-Authenticate`` on a failed HTTP Basic client authentication).
Every malformed input becomes an ``invalid_request``; none reaches a handler raw.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from keycard_agents._errors import OAuthError

from ._throttle import TooManyAttemptsError

__all__ = [
    "MAX_BODY_BYTES",
    "ClientAuthError",
    "Form",
    "audit_reason",
    "oauth_error_response",
    "parse_form",
    "read_form",
    "retry_after_header",
    "token_response",
]

MAX_BODY_BYTES = 64 * 1024
MAX_FIELDS = 64
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM_TYPE = "application/x-www-form-urlencoded"


class ClientAuthError(OAuthError):
    """``invalid_client`` (HTTP 401); ``basic`` when the client tried HTTP Basic.

    ``detail`` is the precise reason when the description sent to the caller is kept
    vague on purpose (so that it does not tell which clients exist): it goes to the audit
    record and the log, never to the caller.
    """

    def __init__(self, description: str, *, basic: bool = False, detail: str | None = None) -> None:
        super().__init__("invalid_client", description, status_code=401)
        self.basic = basic
        self.detail = detail


def audit_reason(exc: OAuthError) -> str:
    """What the audit record and the log say about a denial: the precise reason."""
    detail = exc.detail if isinstance(exc, ClientAuthError) else None
    return detail or exc.error_description


def retry_after_header(exc: OAuthError) -> dict[str, str]:
    """``Retry-After`` (RFC 9110 §10.2.3) for an error that says when to come back."""
    if isinstance(exc, TooManyAttemptsError):
        return {"Retry-After": str(exc.retry_after)}
    return {}


class Form:
    """A parsed form: parameter name -> all its (non-empty) values."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            if value == "":  # RFC 6749 §3.2: treated as if omitted
                continue
            self._values.setdefault(name, []).append(value)

    def get(self, name: str) -> str | None:
        """The parameter's single value; a repeated parameter is an ``invalid_request``."""
        values = self._values.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise OAuthError(
                "invalid_request", f"parameter {name!r} is repeated: send it exactly once"
            )
        return values[0]

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise OAuthError("invalid_request", f"missing required parameter {name!r}")
        return value

    def all(self, name: str) -> list[str]:
        return list(self._values.get(name, ()))

    def __contains__(self, name: object) -> bool:
        return name in self._values


def check_form_content_type(request: Request) -> None:
    raw = request.headers.get("content-type", "")
    media, _, params = raw.partition(";")
    media = media.strip().lower()
    if media != FORM_TYPE:
        raise OAuthError(
            "invalid_request",
            f"send the body as {FORM_TYPE} (RFC 6749 §3.2), not {media[:60] or 'nothing'}",
        )
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in {
            "utf-8",
            "utf8",
        }:
            raise OAuthError("invalid_request", "the form must be UTF-8 encoded")


async def read_body(request: Request, *, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise OAuthError("invalid_request", "malformed Content-Length header")
        if int(declared) > limit:
            raise _too_large(limit)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise _too_large(limit)
    except ClientDisconnect as exc:
        raise OAuthError("invalid_request", "the client disconnected mid-request") from exc
    return bytes(body)


def _too_large(limit: int) -> OAuthError:
    return OAuthError(
        "invalid_request", f"request body larger than {limit // 1024} KiB", status_code=413
    )


async def read_form(request: Request, *, limit: int = MAX_BODY_BYTES) -> Form:
    """Read and strictly parse a form-encoded POST body."""
    check_form_content_type(request)
    body = await read_body(request, limit=limit)
    try:
        pairs = parse_form(body.decode("ascii"))
    except ValueError as exc:  # includes UnicodeDecodeError
        raise OAuthError(
            "invalid_request",
            "malformed form body: use name=value pairs joined by '&', percent-encoded UTF-8",
        ) from exc
    return Form(pairs)


#: Decoded form names and values by their encoded text, for short ones: they repeat from
#: request to request (grant and token types, resources). Cleared when full.
_DECODED: dict[str, str] = {}
_MAX_DECODED = 512
_MAX_DECODED_LENGTH = 256


def _decode(raw: str) -> str:
    """A form name or value: ``+`` is a space, then percent-decoding as strict UTF-8."""
    if "%" not in raw and "+" not in raw:
        return raw
    decoded = _DECODED.get(raw)
    if decoded is None:
        decoded = unquote(raw.replace("+", " "), encoding="utf-8", errors="strict")
        if len(raw) <= _MAX_DECODED_LENGTH:
            if len(_DECODED) >= _MAX_DECODED:
                _DECODED.clear()
            _DECODED[raw] = decoded
    return decoded


def parse_form(text: str) -> list[tuple[str, str]]:
    """What ``parse_qsl(text, keep_blank_values=True, strict_parsing=True,
    encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS)`` returns or raises
    (``ValueError``), with the decoding of repeated names and values remembered."""
    if not text:
        return []
    if text.count("&") + 1 > MAX_FIELDS:
        raise ValueError("Max number of fields exceeded")
    pairs = []
    for field in text.split("&"):
        name, equals, value = field.partition("=")
        if not equals:
            raise ValueError(f"bad form field: {field[:40]!r}")
        pairs.append((_decode(name), _decode(value)))
    return pairs


def oauth_error_response(exc: OAuthError) -> JSONResponse:
    """The RFC 6749 §5.2 JSON error body for ``exc``."""
    headers = {**NO_STORE, **retry_after_header(exc)}
    if isinstance(exc, ClientAuthError) and exc.basic:
        headers["WWW-Authenticate"] = 'Basic realm="token", charset="UTF-8"'
    body = {"error": exc.error, "error_description": exc.error_description}
    if exc.error_uri is not None:
        body["error_uri"] = exc.error_uri
    return JSONResponse(
        body,
        status_code=exc.status_code,
        headers=headers,
    )


def token_response(payload: dict[str, Any]) -> JSONResponse:
    return JSONResponse(payload, headers=dict(NO_STORE))
