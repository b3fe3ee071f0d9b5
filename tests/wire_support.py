"""One A2A client over either binding (JSON-RPC or HTTP+JSON), for protocol tests.

Each test that checks a rule of the A2A 1.0 specification runs over both bindings: this
module hides the difference (paths, the JSON-RPC envelope, how errors are reported) so
the test states the rule once.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from anyio.streams.memory import MemoryObjectReceiveStream
from sse_support import open_events, stream_result
from starlette.types import ASGIApp

__all__ = ["BINDINGS", "Refusal", "Wire"]

BINDINGS = ("JSONRPC", "HTTP+JSON")

_REST_ROUTES = {
    "SendMessage": ("POST", "/message:send"),
    "GetTask": ("GET", "/tasks/{id}"),
    "ListTasks": ("GET", "/tasks"),
    "CancelTask": ("POST", "/tasks/{id}:cancel"),
    "GetExtendedAgentCard": ("GET", "/extendedAgentCard"),
}


@dataclass
class Refusal:
    """An error answer: the JSON-RPC code or the HTTP status, and the message."""

    binding: str
    status: int
    code: int | None
    reason: str
    message: str
    headers: httpx.Headers = field(default_factory=httpx.Headers)


@dataclass
class Wire:
    """Calls the app over ``binding`` with ``headers`` (authorization, version, extensions)."""

    binding: str
    app: ASGIApp
    client: httpx.AsyncClient
    headers: dict[str, str]

    def with_headers(self, **headers: str) -> Wire:
        merged = {**self.headers, **{k.replace("_", "-"): v for k, v in headers.items()}}
        return Wire(self.binding, self.app, self.client, merged)

    async def call(self, method: str, params: dict[str, Any]) -> tuple[Any, httpx.Response]:
        """Call ``method``; the result (or a :class:`Refusal`) and the raw response."""
        if self.binding == "JSONRPC":
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            response = await self.client.post("/", json=body, headers=self.headers)
            data = response.json()
            if "error" in data:
                error = data["error"]
                reason = error.get("data", [{}])[0].get("reason", "")
                refusal = Refusal(
                    self.binding,
                    response.status_code,
                    error["code"],
                    reason,
                    error["message"],
                    response.headers,
                )
                return refusal, response
            return data["result"], response
        verb, template = _REST_ROUTES[method]
        path = template.format(id=params.get("id", ""))
        if verb == "GET":
            query = {k: str(v) for k, v in params.items() if k != "id"}
            response = await self.client.get(path, params=query, headers=self.headers)
        else:
            body = {k: v for k, v in params.items() if k != "id"}
            response = await self.client.post(path, json=body, headers=self.headers)
        data = response.json()
        if response.status_code >= 400:
            error = data["error"]
            refusal = Refusal(
                self.binding,
                response.status_code,
                None,
                error["details"][0]["reason"],
                error["message"],
                response.headers,
            )
            return refusal, response
        return data, response

    async def send(self, message: dict[str, Any], **configuration: Any) -> Any:
        params: dict[str, Any] = {"message": message}
        if configuration:
            params["configuration"] = configuration
        result, _ = await self.call("SendMessage", params)
        return result

    @asynccontextmanager
    async def _events(
        self, method: str, rest_path: str, params: dict[str, Any] | None
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        if self.binding == "JSONRPC":
            body: dict[str, Any] | None = {
                "jsonrpc": "2.0",
                "id": uuid.uuid4().hex,
                "method": method,
                "params": params or {},
            }
            path = "/"
        else:
            body, path = params, rest_path
        async with open_events(self.app, path, body, self.headers) as events:
            yield _results(self.binding, events)

    def stream(self, message: dict[str, Any]) -> Any:
        """``SendStreamingMessage``: an async context manager over StreamResponses."""
        return self._events("SendStreamingMessage", "/message:stream", {"message": message})

    def subscribe(self, task_id: str) -> Any:
        """``SubscribeToTask``: an async context manager over StreamResponses."""
        if self.binding == "JSONRPC":
            return self._events("SubscribeToTask", "", {"id": task_id})
        return self._events("SubscribeToTask", f"/tasks/{task_id}:subscribe", None)


async def _results(
    binding: str, events: MemoryObjectReceiveStream[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    async for event in events:
        yield stream_result(binding, event)
