"""Read deadlines: a slow or silent client cannot hold a connection open.

RFC 9110 §15.5.9 (``408 Request Timeout``), RFC 9112 §9.3 / §9.6 (persistent
connections and closing idle ones). Three limits, used by the serve paths of agents
(``serve``) and of the token service (``keycard-agents sts``):

- ``header_timeout``: the request line and headers must be complete this many seconds
  after the connection opened or the first byte of the next request arrived (uvicorn:
  :func:`uvicorn_options` installs uvicorn's httptools protocol with that timer;
  hypercorn: its idle timer covers the wait for headers, :func:`apply_to_hypercorn` sets
  it to the smaller of ``header_timeout`` and ``keep_alive_timeout``);
- ``body_timeout``: the whole body must have arrived this many seconds after the headers,
  else the answer is 408 and the connection is closed (uvicorn: a timer of the same
  protocol, free per request; hypercorn on trio: :class:`BodyDeadline`, an ASGI
  middleware that works under any server);
- ``keep_alive_timeout``: how long an idle connection is kept between requests.

The same uvicorn protocol sends a response's head (status line and headers) together
with its body, in one write: uvicorn writes the head as soon as the application starts
the response and the body when it comes, two ``send(2)`` calls and two TCP segments for
what is, for almost every response, one small message. :class:`_HeadWithBody` holds the
head until the body's first write of the same event-loop turn (a body that is not there
by the end of the turn, such as a stream waiting for its first event, finds the head
already sent).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from keycard_agents._errors import ConfigurationError
from keycard_agents._logs import escape_logger, get_logger

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_KEEP_ALIVE_TIMEOUT",
    "BodyDeadline",
    "ServerTimeouts",
    "apply_to_hypercorn",
    "escape_server_logs",
    "uvicorn_options",
]

logger = get_logger("keycard_agents.server")

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
# Longer than the 5 s for which HTTP clients (httpx, among others) keep an idle pooled
# connection: a server that closes first races a client reusing the connection, which then
# fails with "server disconnected without sending a response".
DEFAULT_KEEP_ALIVE_TIMEOUT = 15.0


@dataclass(frozen=True)
class ServerTimeouts:
    """Seconds allowed for the headers, the body and idle keep-alive (see the module)."""

    header: float = DEFAULT_HEADER_TIMEOUT
    body: float = DEFAULT_BODY_TIMEOUT
    keep_alive: float = DEFAULT_KEEP_ALIVE_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("header", "body", "keep_alive"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigurationError(
                    f"{name}_timeout must be a positive number of seconds, not {value!r}",
                    setting=f"{name}_timeout",
                )


class BodyDeadline:
    """ASGI middleware: the request body must arrive within ``seconds`` of the headers.

    Past the deadline the application sees the client as disconnected and the client
    gets ``408 Request Timeout`` with ``Connection: close`` instead of whatever the
    application answers. Once the body is complete, ``receive`` is left alone (a
    streaming response still learns of a real disconnect).
    """

    def __init__(self, app: ASGIApp, *, seconds: float = DEFAULT_BODY_TIMEOUT) -> None:
        ServerTimeouts(body=seconds)
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.seconds
        state = {"complete": False, "expired": False, "started": False}

        async def timed_receive() -> Message:
            if state["expired"]:
                return {"type": "http.disconnect"}
            if state["complete"]:
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()):
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    state["complete"] = True
                return message
            state["expired"] = True
            logger.info(
                "request body of %s %s not received within %g s: answering 408",
                scope.get("method"),
                scope.get("path"),
                self.seconds,
            )
            return {"type": "http.disconnect"}

        async def guarded_send(message: Message) -> None:
            if state["expired"]:
                if not state["started"]:
                    state["started"] = True
                    await _send_timeout(send, self.seconds)
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, timed_receive, guarded_send)
        if state["expired"] and not state["started"]:
            await _send_timeout(send, self.seconds)


def _timeout_response(seconds: float) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of the 408 answer (RFC 9110 §15.5.9), in OAuth error shape."""
    body = json.dumps(
        {
            "error": "invalid_request",
            "error_description": f"the request body did not arrive within {seconds:g} s: "
            "send the whole request at once",
        }
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
    ]
    return headers, body


async def _send_timeout(send: Send, seconds: float) -> None:
    headers, body = _timeout_response(seconds)
    await send({"type": "http.response.start", "status": 408, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def escape_server_logs() -> None:
    """Escape control characters in what uvicorn and hypercorn log (request paths are
    percent-decoded: ``%0A`` would otherwise start a forged log line)."""
    for name in ("uvicorn.access", "uvicorn.error", "hypercorn.access", "hypercorn.error"):
        escape_logger(logging.getLogger(name))


#: A first body write up to this size is joined to the head (a larger one is sent after
#: it, not copied into one buffer with it).
_JOIN_LIMIT = 64 * 1024
_CONTINUE = b"HTTP/1.1 100 "


class _HeadWithBody:
    """The transport that uvicorn's cycle for one request writes to: it holds the
    response head, the cycle's first write other than ``100 Continue``, until the next
    write, which goes out with it, or until the end of the event-loop turn, whichever
    comes first. Every other write and ``close`` pass the held head on first, so the
    bytes leave in the order they were written."""

    __slots__ = ("_head", "_loop", "_started", "_transport")

    def __init__(self, transport: Any, loop: Any) -> None:
        # uvicorn's asyncio transport and event loop (this module stays off asyncio's API).
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) <= _JOIN_LIMIT:
                self._transport.write(head + data)
                return
            self._transport.write(head)
        elif not self._started and not data.startswith(_CONTINUE):
            self._started = True
            self._head = data
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def writelines(self, lines: Iterable[bytes]) -> None:
        self.write(b"".join(lines))

    def flush(self) -> None:
        """Send the held head, if any (a closed connection drops it)."""
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return bool(self._transport.is_closing())

    def __getattr__(self, name: str) -> Any:
        # What a cycle reads of its transport beyond writing (get_extra_info, ...).
        return getattr(self._transport, name)


# Where the parser is in the request it reads: between requests, in the request line and
# headers, or in the body.
_IDLE, _HEADERS, _BODY = 0, 1, 2


def _deadline_protocol(timeouts: ServerTimeouts) -> type[Any]:
    """uvicorn's httptools protocol with a deadline for each request's headers and body.

    httptools (llhttp, in C) parses everything it is given in one call and reports the
    request through callbacks; a timer is armed only once a call returns with a request
    incomplete, so a request that arrives in one read costs no timer at all.
    """

    class DeadlineProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            self._phase = _IDLE
            self._upgraded = False
            self._body_timer: Any = None
            super().connection_made(transport)
            # The first request's headers are due this long after the connection opened.
            self._header_timer: Any = self.loop.call_later(timeouts.header, self._headers_too_slow)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._upgraded or self.transport.is_closing():
                return  # connection_lost disarms; an upgraded connection is not ours
            phase = self._phase
            if phase == _BODY:
                if self._body_timer is None:
                    self._body_timer = self.loop.call_later(timeouts.body, self._body_too_slow)
            elif self._header_timer is None and (
                phase == _HEADERS or self.cycle is None or self.cycle.response_complete
            ):
                # A request has begun (its headers are due from its first byte), or bytes
                # that begin none arrived between requests: either way, not idle.
                self._header_timer = self.loop.call_later(timeouts.header, self._headers_too_slow)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._phase = _HEADERS

        def on_headers_complete(self) -> None:
            previous = self.cycle
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not previous and cycle is not None:
                # A new request (not an upgrade): its response goes out head with body.
                cycle.transport = _HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]
            self._phase = _BODY
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._phase = _IDLE
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

        def handle_websocket_upgrade(self) -> None:
            self._upgraded = True  # the connection now belongs to the WebSocket protocol
            self._disarm()
            super().handle_websocket_upgrade()

        def _disarm(self) -> None:
            for timer in (self._header_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._header_timer = self._body_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                logger.info(
                    "closing a connection whose request headers took over %g s", timeouts.header
                )
                self.transport.close()

        def _body_too_slow(self) -> None:
            self._body_timer = None
            if self.transport.is_closing():
                return
            logger.info(
                "request body of %s %s not received within %g s: answering 408",
                self.scope.get("method"),
                self.scope.get("path"),
                timeouts.body,
            )
            cycle = self.cycle
            if cycle is not None:  # None: no request was started (an upgrade refused)
                # A pipelined request waits behind a response still being written: no
                # answer can be put on the wire for it, closing is all that is left.
                queued = any(waiting is cycle for waiting, _ in self.pipeline)
                if not cycle.response_started and not queued:
                    headers, body = _timeout_response(timeouts.body)
                    lines = [STATUS_LINE[408]]
                    for name, value in (*self.server_state.default_headers, *headers):
                        lines += [name, b": ", value, b"\r\n"]
                    lines += [b"\r\n", body]
                    self.transport.write(b"".join(lines))
                    cycle.response_started = True
                # The application sees a disconnected client; whatever it sends is dropped.
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.close()

    return DeadlineProtocol


def uvicorn_options(timeouts: ServerTimeouts) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` that apply ``timeouts``."""
    return {
        "http": _deadline_protocol(timeouts),
        "timeout_keep_alive": max(1, math.ceil(timeouts.keep_alive)),
    }


def apply_to_hypercorn(config: Any, timeouts: ServerTimeouts) -> None:
    """Set a ``hypercorn.config.Config``'s timers from ``timeouts``.

    hypercorn's idle timer runs from the end of a response (or the connection's start)
    until the next request's headers are complete, so it is both the keep-alive and the
    header deadline: it gets the smaller of the two.
    """
    config.keep_alive_timeout = min(timeouts.header, timeouts.keep_alive)
