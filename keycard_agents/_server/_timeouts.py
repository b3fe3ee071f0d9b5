"""Read deadlines: a slow or silent client cannot hold a connection open.

RFC 9110 §15.5.9 (``408 Request Timeout``), RFC 9112 §9.3 / §9.6 (persistent
connections and closing idle ones). Three limits, used by the serve paths of agents
(``serve``) and of the token service (``keycard-agents sts``):

- ``header_timeout``: the request line and headers must be complete this many seconds
  after the connection opened or the first byte of the next request arrived (uvicorn:
  :func:`uvicorn_options` installs an h11 protocol with that timer; hypercorn: its idle
  timer covers the wait for headers, :func:`apply_to_hypercorn` sets it to the smaller
  of ``header_timeout`` and ``keep_alive_timeout``);
- ``body_timeout``: the whole body must have arrived this many seconds after the headers,
  else the answer is 408 and the connection is closed (uvicorn: a timer of the same
  protocol, free per request; hypercorn on trio: :class:`BodyDeadline`, an ASGI
  middleware that works under any server);
- ``keep_alive_timeout``: how long an idle connection is kept between requests.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

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


def _h11_protocol(timeouts: ServerTimeouts) -> type[Any]:
    """uvicorn's h11 protocol with a deadline for each request's headers and body."""

    class DeadlineProtocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            self._header_timer: Any = None
            self._body_timer: Any = None
            super().connection_made(transport)
            self._arm_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.trailing_data[0]:  # part of a pipelined request is buffered
                self._follow()

        def _follow(self) -> None:
            state = self.conn.their_state
            answered = self.cycle is None or self.cycle.response_complete
            if state is h11.IDLE or (state is h11.SEND_BODY and answered):
                self._arm_headers()  # waiting for a request, or for a body nobody reads
            elif state is h11.SEND_BODY:
                self._disarm()
                if self._body_timer is None:
                    self._body_timer = self.loop.call_later(timeouts.body, self._body_too_slow)
            else:
                self._disarm()

        def _arm_headers(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(timeouts.header, self._too_slow)

        def _disarm(self) -> None:
            for name in ("_header_timer", "_body_timer"):
                timer = getattr(self, name)
                if timer is not None:
                    timer.cancel()
                    setattr(self, name, None)

        def _too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                logger.info(
                    "closing a connection whose request headers took over %g s", timeouts.header
                )
                self.transport.close()

        def _body_too_slow(self) -> None:
            self._body_timer = None
            cycle = self.cycle
            if self.transport.is_closing() or cycle is None:
                return
            logger.info(
                "request body of %s %s not received within %g s: answering 408",
                self.scope.get("method"),
                self.scope.get("path"),
                timeouts.body,
            )
            if not cycle.response_started:
                headers, body = _timeout_response(timeouts.body)
                try:
                    data = self.conn.send(h11.Response(status_code=408, headers=headers))
                    data += self.conn.send(h11.Data(data=body)) or b""
                    data += self.conn.send(h11.EndOfMessage()) or b""
                except h11.LocalProtocolError:
                    data = b""
                self.transport.write(data or b"")
            # The application sees a disconnected client; whatever it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            self.transport.close()

    return DeadlineProtocol


def uvicorn_options(timeouts: ServerTimeouts) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` that apply ``timeouts``."""
    return {
        "http": _h11_protocol(timeouts),
        "timeout_keep_alive": max(1, math.ceil(timeouts.keep_alive)),
    }


def apply_to_hypercorn(config: Any, timeouts: ServerTimeouts) -> None:
    """Set a ``hypercorn.config.Config``'s timers from ``timeouts``.

    hypercorn's idle timer runs from the end of a response (or the connection's start)
    until the next request's headers are complete, so it is both the keep-alive and the
    header deadline: it gets the smaller of the two.
    """
    config.keep_alive_timeout = min(timeouts.header, timeouts.keep_alive)
