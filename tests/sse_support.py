"""Reading an app's Server-Sent Events as they are sent, over either A2A binding.

``httpx.ASGITransport`` returns a response only once the app has finished it, which cannot
show a stream that stays open while the test acts on the task. :func:`open_events` drives
the ASGI app directly and hands each event over as soon as the app sends it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from starlette.types import ASGIApp

__all__ = ["Binding", "open_events", "stream_result"]

#: The two HTTP bindings every protocol test runs over.
Binding = str


def _scope(method: str, path: str, headers: dict[str, str], host: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "server": (host, 80),
        "client": ("127.0.0.1", 5000),
    }


@asynccontextmanager
async def open_events(
    app: ASGIApp,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
    *,
    host: str = "agent.test",
) -> AsyncIterator[MemoryObjectReceiveStream[dict[str, Any]]]:
    """POST ``body`` to ``path`` and receive each SSE ``data:`` document as it is sent.

    The stream ends when the app ends the response; leaving the block disconnects.
    """
    payload = b"" if body is None else json.dumps(body).encode()
    send_events, receive_events = anyio.create_memory_object_stream[dict[str, Any]](100)
    gone = anyio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200, message
            return
        chunk: bytes = message.get("body", b"")
        for block in chunk.decode().split("\n\n"):
            for line in block.split("\n"):
                if line.startswith("data: "):
                    await send_events.send(json.loads(line[len("data: ") :]))
        if not message.get("more_body", False):
            send_events.close()

    async def run() -> None:
        try:
            await app(_scope("POST", path, headers, host), receive, send)
        finally:
            send_events.close()

    with receive_events:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            try:
                yield receive_events
            finally:
                gone.set()


def stream_result(binding: Binding, event: dict[str, Any]) -> dict[str, Any]:
    """The StreamResponse in an event of ``binding`` (JSON-RPC wraps it in ``result``)."""
    if binding == "JSONRPC":
        assert "result" in event, event
        result: dict[str, Any] = event["result"]
        return result
    return event
