"""Server-Sent Events framing for A2A streaming methods.

Implements the event stream format of the WHATWG HTML Living Standard §9.2 ("Server-sent
events") as A2A 1.0 uses it (A2A spec §3.3 streaming, §9.4.2 JSON-RPC
``SendStreamingMessage`` / ``SubscribeToTask``, §11.3 HTTP+JSON ``message:stream``): one
event per ``data:`` line holding one complete JSON document, an empty line after each.

The response is written by the task that serves the request, so an async generator that
produces the events is iterated (and closed) by the task that started it; a child task only
watches for the client going away and cancels the stream when it does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["EventStreamResponse", "format_event"]


def format_event(data: Any, *, event: str | None = None) -> bytes:
    """One SSE event: optional ``event:`` line, one ``data:`` line of compact JSON."""
    # json.dumps never emits a raw newline (they are escaped inside strings), so the
    # document always fits on one ``data:`` line.
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


class EventStreamResponse(Response):
    """An ASGI response that sends ``text/event-stream`` chunks from an async iterator.

    ``events`` yields already framed chunks (see :func:`format_event`). When it ends the
    response ends; when the client disconnects, iteration is cancelled and the iterator is
    closed so the producer can release what it holds.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._events = events
        self.status_code = status_code
        raw: dict[str, str] = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-store",
            "x-accel-buffering": "no",
        }
        for name, value in (headers or {}).items():
            raw[name.lower()] = value
        self.background = None
        self.body = b""
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in raw.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        disconnected = False
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                nonlocal disconnected
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        disconnected = True
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch_disconnect)
            try:
                async with aclosing(self._events) as events:
                    async for chunk in events:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except OSError:
                # The transport went away while writing: same as a disconnect.
                disconnected = True
            if not disconnected:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            tg.cancel_scope.cancel()
