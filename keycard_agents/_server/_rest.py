"""The A2A 1.0 HTTP+JSON (REST) binding.

Implements A2A 1.0 §11 (HTTP+JSON/REST binding): ``POST /message:send``,
``POST /message:stream`` and ``POST /tasks/{id}:subscribe`` (Server-Sent Events whose
``data:`` lines are StreamResponse JSON, §11.3.2), ``GET /tasks/{id}``, ``GET /tasks``
(query parameters in camelCase), ``POST /tasks/{id}:cancel``, ``GET /extendedAgentCard``,
and the push notification configuration routes under ``/tasks/{id}/pushNotificationConfigs``;
content type ``application/a2a+json`` (``application/json`` accepted); errors as
``google.rpc.Status`` bodies (§11.6, AIP-193) with the HTTP status of each error.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from keycard_agents._a2a.errors import (
    A2AError,
    InternalError,
    InvalidRequestError,
    invalid_params,
)
from keycard_agents._a2a.types import (
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTasksRequest,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
)
from keycard_agents._errors import AuthenticationError, IssuerUnreachableError
from keycard_agents._oauth._resource_server import BearerAuthenticator
from keycard_agents._observe._tracing import ATTR_OPERATION, mark_error, server_span, set_principal
from keycard_agents._server._dispatch import Dispatcher, as_protocol_error
from keycard_agents._server._extensions import ExtensionNegotiation
from keycard_agents._server._protocol import (
    BodyTooLargeError,
    check_version,
    log_refusal,
    media_type,
    parse_json_body,
    read_body,
    rest_error_body,
)
from keycard_agents._server._sse import EventStreamResponse, format_event

__all__ = ["A2A_JSON", "RestBinding"]

A2A_JSON = "application/a2a+json"
_BODY_TYPES = frozenset({A2A_JSON, "application/json"})

# How a route builds its request model from the path, the query and the JSON body.
_Builder = Callable[[Request, dict[str, Any]], BaseModel | None]


class _HttpError(Exception):
    def __init__(self, status_code: int, error: A2AError, *, reason: str | None = None) -> None:
        super().__init__(error.message)
        self.status_code = status_code
        self.error = error
        self.reason = reason


def _wants_a2a_json(request: Request) -> bool:
    return A2A_JSON in request.headers.get("accept", "") or media_type(request) == A2A_JSON


class RestBinding:
    """Starlette routes of the HTTP+JSON binding for one agent."""

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

    def routes(self) -> list[BaseRoute]:
        def route(path: str, method: str, operation: str, build: _Builder, *, body: bool) -> Route:
            async def endpoint(request: Request) -> Response:
                return await self._handle(request, operation, build, body=body)

            return Route(path, endpoint, methods=[method], name=f"a2a-rest-{operation}")

        return [
            route(
                "/message:send", "POST", "SendMessage", _from_body(SendMessageRequest), body=True
            ),
            route(
                "/message:stream",
                "POST",
                "SendStreamingMessage",
                _from_body(SendMessageRequest),
                body=True,
            ),
            route("/tasks/{id}:cancel", "POST", "CancelTask", _cancel, body=True),
            route("/tasks/{id}:subscribe", "POST", "SubscribeToTask", _subscribe, body=False),
            route(
                "/tasks/{id}/pushNotificationConfigs",
                "POST",
                "CreateTaskPushNotificationConfig",
                _push_create,
                body=True,
            ),
            route(
                "/tasks/{id}/pushNotificationConfigs",
                "GET",
                "ListTaskPushNotificationConfigs",
                _push_list,
                body=False,
            ),
            route(
                "/tasks/{id}/pushNotificationConfigs/{cid}",
                "GET",
                "GetTaskPushNotificationConfig",
                _push_one(GetTaskPushNotificationConfigRequest),
                body=False,
            ),
            route(
                "/tasks/{id}/pushNotificationConfigs/{cid}",
                "DELETE",
                "DeleteTaskPushNotificationConfig",
                _push_one(DeleteTaskPushNotificationConfigRequest),
                body=False,
            ),
            route("/tasks/{id}", "GET", "GetTask", _get_task, body=False),
            route("/tasks", "GET", "ListTasks", _from_query(ListTasksRequest), body=False),
            route(
                "/extendedAgentCard",
                "GET",
                "GetExtendedAgentCard",
                _from_query(GetExtendedAgentCardRequest),
                body=False,
            ),
        ]

    async def _handle(
        self, request: Request, operation: str, build: _Builder, *, body: bool
    ) -> Response:
        content_type = A2A_JSON if _wants_a2a_json(request) else "application/json"
        with server_span(
            request.headers, name=f"A2A {operation}", attributes=_span_attributes(operation)
        ) as current:
            try:
                check_version(request, allow_missing=self._allow_missing_version)
                caller = await self._auth.caller(request.headers)
                set_principal(current, caller.principal)
                activated = self._extensions.activate(request)
                if activated != caller.extensions:  # most requests activate none
                    caller = dataclasses.replace(caller, extensions=activated)
                echo = self._extensions.echo(activated)
                self._dispatcher.check_supported(operation)
                data = await self._read_json(request) if body else {}
                try:
                    model = build(request, data)
                except ValidationError as exc:
                    raise invalid_params(exc, what="request") from exc
                if operation in ("SendStreamingMessage", "SubscribeToTask"):
                    events = await self._dispatcher.open_stream(operation, model, caller=caller)
                    return EventStreamResponse(_frame(events), headers=echo)
                result = await self._dispatcher.unary(operation, model, caller=caller)
                return JSONResponse(result, media_type=content_type, headers=echo)
            except Exception as exc:  # every failure gets a Status body, never a 500 page
                mark_error(current, exc)
                log_refusal("HTTP+JSON", exc.error if isinstance(exc, _HttpError) else exc)
                return self._error_response(exc, content_type)

    async def _read_json(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if media_type(request) == "" and declared in (None, "0"):
            return {}  # an empty body (e.g. ``:cancel`` without metadata)
        if media_type(request) not in _BODY_TYPES:
            raise _HttpError(
                415,
                InvalidRequestError(
                    "Content-Type must be application/a2a+json (or application/json)."
                ),
            )
        try:
            raw = await read_body(request, limit=self._max_body_size)
        except BodyTooLargeError as exc:
            raise _HttpError(413, InvalidRequestError(str(exc))) from exc
        if not raw.strip():
            return {}
        data = parse_json_body(raw)
        if not isinstance(data, dict):
            raise InvalidRequestError("The request body must be a JSON object.")
        return data

    def _error_response(self, exc: Exception, content_type: str) -> Response:
        if isinstance(exc, _HttpError):
            body = rest_error_body(exc.error, status_code=exc.status_code, reason=exc.reason)
            return JSONResponse(body, status_code=exc.status_code, media_type=content_type)
        if isinstance(exc, AuthenticationError | IssuerUnreachableError):
            failure = self._auth.failure(exc)
            error: A2AError = (
                InternalError(failure.message)
                if failure.status_code == 503
                else InvalidRequestError(failure.message)
            )
            reason = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}.get(
                failure.status_code, "UNAVAILABLE"
            )
            headers = {}
            if failure.www_authenticate is not None:
                headers["WWW-Authenticate"] = failure.www_authenticate
            return JSONResponse(
                rest_error_body(error, status_code=failure.status_code, reason=reason),
                status_code=failure.status_code,
                headers=headers,
                media_type=content_type,
            )
        reported = as_protocol_error(exc)
        if not isinstance(reported, A2AError):  # pragma: no cover - as_protocol_error's contract
            reported = InternalError()
        return JSONResponse(
            rest_error_body(reported), status_code=reported.http_status, media_type=content_type
        )


@functools.lru_cache(maxsize=64)
def _span_attributes(operation: str) -> Mapping[str, str]:
    return {ATTR_OPERATION: operation, "keycard.a2a.binding": "HTTP+JSON"}


def _from_body(model: type[BaseModel]) -> _Builder:
    def build(request: Request, data: dict[str, Any]) -> BaseModel:
        return model.model_validate(data)

    return build


def _from_query(model: type[BaseModel]) -> _Builder:
    def build(request: Request, data: dict[str, Any]) -> BaseModel:
        return model.model_validate(dict(request.query_params))

    return build


def _get_task(request: Request, data: dict[str, Any]) -> BaseModel:
    return GetTaskRequest.model_validate({**request.query_params, "id": request.path_params["id"]})


def _cancel(request: Request, data: dict[str, Any]) -> BaseModel:
    return CancelTaskRequest.model_validate({**data, "id": request.path_params["id"]})


def _subscribe(request: Request, data: dict[str, Any]) -> BaseModel:
    return SubscribeToTaskRequest.model_validate({"id": request.path_params["id"]})


def _push_create(request: Request, data: dict[str, Any]) -> BaseModel:
    return TaskPushNotificationConfig.model_validate({**data, "taskId": request.path_params["id"]})


def _push_list(request: Request, data: dict[str, Any]) -> BaseModel:
    query = {**request.query_params, "taskId": request.path_params["id"]}
    return ListTaskPushNotificationConfigsRequest.model_validate(query)


def _push_one(model: type[BaseModel]) -> _Builder:
    def build(request: Request, data: dict[str, Any]) -> BaseModel:
        params = request.path_params
        return model.model_validate({"taskId": params["id"], "id": params["cid"]})

    return build


async def _frame(events: AsyncGenerator[dict[str, Any], None]) -> AsyncGenerator[bytes, None]:
    """Each event as StreamResponse JSON; a failure mid-stream as an ``error`` event."""
    try:
        async for event in events:
            yield format_event(event)
    except Exception as exc:
        reported = as_protocol_error(exc)
        error = reported if isinstance(reported, A2AError) else InternalError()
        yield format_event(rest_error_body(error), event="error")
    finally:
        await events.aclose()
