"""The A2A 1.0 JSON-RPC 2.0 binding over HTTP.

Implements A2A 1.0 §9 (JSON-RPC binding: one POST endpoint, methods named after the
operations, §9.4.2 streaming as Server-Sent Events whose every ``data:`` line is a complete
JSON-RPC response with a StreamResponse ``result``) and the JSON-RPC 2.0 specification §4
/ §5 (request and response objects; -32700 parse error, -32600 invalid request, -32601
method not found, -32602 invalid params, -32603 internal error).

HTTP-level failures keep their HTTP status (401/403 with an RFC 6750 challenge, 413 for an
oversized body, 415 for a wrong content type, 503 when the token issuer is unreachable)
and still carry a JSON-RPC error body; protocol errors are answered with HTTP 200.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import pydantic_core
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from keycard_agents._a2a.errors import (
    A2AError,
    InternalError,
    InvalidRequestError,
)
from keycard_agents._a2a.types import JSONRPCRequest
from keycard_agents._errors import AuthenticationError, IssuerUnreachableError
from keycard_agents._oauth._resource_server import BearerAuthenticator
from keycard_agents._observe._tracing import (
    mark_error,
    name_server_span,
    server_span,
    set_principal,
)
from keycard_agents._server._compat03 import V03Call, v03_call
from keycard_agents._server._dispatch import (
    STREAMING_METHODS,
    Dispatcher,
    EncodedResult,
    as_protocol_error,
    parse_params,
)
from keycard_agents._server._extensions import ExtensionNegotiation
from keycard_agents._server._protocol import (
    BodyTooLargeError,
    check_version,
    jsonrpc_error_object,
    log_refusal,
    media_type,
    parse_json_body,
    read_body,
)
from keycard_agents._server._sse import EventStreamResponse, format_event

__all__ = ["JSON_MEDIA_TYPES", "JsonRpcEndpoint"]

JSON_MEDIA_TYPES = frozenset({"application/json", "application/a2a+json"})
_SPAN_ATTRIBUTES = {"rpc.system": "jsonrpc", "keycard.a2a.binding": "JSONRPC"}


class _HttpLevelError(Exception):
    """A failure answered with its own HTTP status and a JSON-RPC error body."""

    def __init__(self, status_code: int, error: A2AError) -> None:
        super().__init__(error.message)
        self.status_code = status_code
        self.error = error


def _envelope(request_id: Any, **member: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, **member}


class JsonRpcEndpoint:
    """The POST endpoint of the JSON-RPC binding (a Starlette request handler)."""

    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        authenticator: BearerAuthenticator,
        max_body_size: int,
        allow_missing_version: bool,
        extensions: ExtensionNegotiation | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._auth = authenticator
        self._max_body_size = max_body_size
        self._allow_missing_version = allow_missing_version
        self._extensions = extensions or ExtensionNegotiation(())

    async def handle(self, request: Request) -> Response:
        with server_span(request.headers, attributes=_SPAN_ATTRIBUTES) as current:
            request_id: Any = None
            legacy: V03Call | None = None
            try:
                envelope = await self._read_envelope(request)
                request_id = envelope.id
                name_server_span(current, envelope.method)
                # An A2A 0.3 request is reshaped here and runs the 1.0 path below.
                legacy = v03_call(request, envelope.method, envelope.params)
                method, raw_params = envelope.method, envelope.params
                if legacy is not None:
                    method, raw_params = legacy.method, legacy.params
                else:
                    check_version(request, allow_missing=self._allow_missing_version)
                caller = await self._auth.caller(request.headers)
                set_principal(current, caller.principal)
                activated = self._extensions.activate(request)
                if activated != caller.extensions:  # most requests activate none
                    caller = dataclasses.replace(caller, extensions=activated)
                echo = self._extensions.echo(activated)
                self._dispatcher.check_supported(method)
                params = parse_params(method, raw_params)
                if method in STREAMING_METHODS:
                    events = await self._dispatcher.open_stream(method, params, caller=caller)
                    if legacy is not None:
                        events = legacy.events(events)
                    frames = _frame(request_id, events, legacy=legacy)
                    return EventStreamResponse(frames, headers=echo)
                if legacy is not None:
                    result = await self._dispatcher.unary(method, params, caller=caller)
                    result = legacy.result(result)
                    return _ResultResponse(_envelope(request_id, result=result), headers=echo)
                result = await self._dispatcher.unary(method, params, caller=caller, encoded=True)
                if isinstance(result, EncodedResult):
                    return _encoded_response(request_id, result, headers=echo)
                return _ResultResponse(_envelope(request_id, result=result), headers=echo)
            except Exception as exc:  # every failure gets a JSON-RPC answer, never a 500 page
                mark_error(current, exc)
                log_refusal("JSONRPC", exc.error if isinstance(exc, _HttpLevelError) else exc)
                response = self._error_response(request_id, exc)
                if legacy is not None:
                    response = _error_v03(response)
                return response

    async def _read_envelope(self, request: Request) -> JSONRPCRequest:
        if media_type(request) not in JSON_MEDIA_TYPES:
            raise _HttpLevelError(
                415,
                InvalidRequestError(
                    "Content-Type must be application/json (or application/a2a+json)."
                ),
            )
        try:
            body = await read_body(request, limit=self._max_body_size)
        except BodyTooLargeError as exc:
            raise _HttpLevelError(413, InvalidRequestError(str(exc))) from exc
        data = parse_json_body(body)
        if isinstance(data, list):
            raise InvalidRequestError("Batch requests are not supported: send one request.")
        if not isinstance(data, dict):
            raise InvalidRequestError("A JSON-RPC request must be a JSON object.")
        if "id" not in data:
            raise InvalidRequestError(
                "The request has no id: A2A methods are requests, not notifications."
            )
        try:
            return JSONRPCRequest.model_validate(data)
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in e["loc"]) or "request" for e in exc.errors()})
            raise InvalidRequestError(
                "Not a JSON-RPC 2.0 request: check "
                + ", ".join(fields)
                + ' ("jsonrpc": "2.0", "method": string, "id": string | number | null, '
                '"params": object).'
            ) from exc

    def _error_response(self, request_id: Any, exc: Exception) -> Response:
        if isinstance(exc, _HttpLevelError):
            return JSONResponse(
                _envelope(request_id, error=jsonrpc_error_object(exc.error)),
                status_code=exc.status_code,
            )
        if isinstance(exc, AuthenticationError | IssuerUnreachableError):
            failure = self._auth.failure(exc)
            if failure.status_code == 503:
                error: A2AError = InternalError(failure.message)
                reason = "UNAVAILABLE"
            else:
                error = InvalidRequestError(failure.message)
                reason = "UNAUTHENTICATED" if failure.status_code == 401 else "PERMISSION_DENIED"
            headers = {}
            if failure.www_authenticate is not None:
                headers["WWW-Authenticate"] = failure.www_authenticate
            return JSONResponse(
                _envelope(request_id, error=jsonrpc_error_object(error, reason=reason)),
                status_code=failure.status_code,
                headers=headers,
            )
        reported = as_protocol_error(exc)
        if not isinstance(reported, A2AError):  # pragma: no cover - as_protocol_error's contract
            reported = InternalError()
        return JSONResponse(_envelope(request_id, error=jsonrpc_error_object(reported)))


class _ResultResponse(JSONResponse):
    """A JSON-RPC result, encoded by pydantic-core: the same compact UTF-8 JSON as
    Starlette's ``json.dumps``, in a quarter of the time (a non-finite float, which no
    A2A result holds, becomes ``null`` instead of failing)."""

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content, inf_nan_mode="null")


def _encoded_response(
    request_id: Any, result: EncodedResult, *, headers: Mapping[str, str] | None
) -> Response:
    """The response envelope around a result encoded already: the bytes
    :class:`_ResultResponse` would write for its data."""
    body = b"".join(
        (
            b'{"jsonrpc":"2.0","id":',
            pydantic_core.to_json(request_id, inf_nan_mode="null"),
            b',"result":',
            result.json,
            b"}",
        )
    )
    return Response(body, media_type="application/json", headers=headers)


def _error_v03(response: Response) -> Response:
    """An error response with its ``error`` member in 0.3 form (same status, headers)."""
    body = pydantic_core.from_json(bytes(response.body))
    body["error"] = V03Call.error(body["error"])
    headers = {k: v for k, v in response.headers.items() if k.lower() == "www-authenticate"}
    return JSONResponse(body, status_code=response.status_code, headers=headers)


async def _frame(
    request_id: Any,
    events: AsyncGenerator[dict[str, Any], None],
    *,
    legacy: V03Call | None = None,
) -> AsyncGenerator[bytes, None]:
    """Each event as a JSON-RPC response; a failure mid-stream as a final error response."""
    try:
        async for event in events:
            yield format_event(_envelope(request_id, result=event))
    except Exception as exc:
        reported = as_protocol_error(exc)
        error = reported if isinstance(reported, A2AError) else InternalError()
        member = jsonrpc_error_object(error)
        if legacy is not None:
            member = legacy.error(member)
        yield format_event(_envelope(request_id, error=member))
    finally:
        await events.aclose()
