"""How the uvicorn protocol of ``serve()`` and ``keycard-agents sts`` puts responses on
the wire: a response's head leaves in the same write as its body, so that one small
answer is one ``send(2)`` and one TCP segment (``keycard_agents._server._timeouts``).

The protocol is driven here with a transport that records every write, on asyncio (the
only loop uvicorn runs on). Real sockets, keep-alive and pipelining under the same
protocol are in ``test_server_deadlines.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from keycard_agents._server._timeouts import ServerTimeouts, uvicorn_options

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
App = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
HEAD = b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class Recorder:
    """An asyncio transport that keeps what is written to it, one entry per write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        extra = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}
        return extra.get(name, default)

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def _until(check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds (bounded: 10,000 sleeps of 1 ms)."""
    for _ in range(10_000):
        if check():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the protocol did not get there")


def _connect(app: App) -> tuple[Any, Recorder]:
    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    protocol_class = uvicorn_options(ServerTimeouts())["http"]
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Recorder()
    protocol.connection_made(transport)
    return protocol, transport


def _text(status: int, body: bytes) -> list[dict[str, Any]]:
    return [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode())],
        },
        {"type": "http.response.body", "body": body},
    ]


def _replying(body: bytes) -> App:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        for message in _text(200, body):
            await send(message)

    return app


def _run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_a_small_response_is_one_write_of_head_and_body() -> None:
    async def test() -> None:
        protocol, transport = _connect(_replying(b'{"ok": true}'))
        protocol.data_received(GET)
        await _until(lambda: protocol.cycle.response_complete)
        assert len(transport.writes) == 1
        head, _, body = transport.writes[0].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"content-length: 12" in head
        assert body == b'{"ok": true}'
        await _turns()
        assert len(transport.writes) == 1  # nothing left over for the end of the turn
        protocol.connection_lost(None)

    _run(test)


def test_a_large_body_follows_its_head_uncopied() -> None:
    async def test() -> None:
        big = b"x" * (200 * 1024)
        protocol, transport = _connect(_replying(big))
        protocol.data_received(GET)
        await _until(lambda: protocol.cycle.response_complete)
        assert len(transport.writes) == 2
        assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert transport.writes[0].endswith(b"\r\n\r\n")
        assert transport.writes[1] == big
        protocol.connection_lost(None)

    _run(test)


def test_a_head_whose_body_is_not_ready_goes_out_at_the_end_of_the_turn() -> None:
    async def test() -> None:
        ready = asyncio.Event()

        async def stream(scope: dict[str, Any], receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await ready.wait()  # a stream waiting for its first event
            await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        protocol, transport = _connect(stream)
        protocol.data_received(GET)
        await _until(lambda: protocol.cycle.response_started)
        await _turns()
        # The client has the head while the body is still to come.
        assert len(transport.writes) == 1
        assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"transfer-encoding: chunked" in transport.writes[0]
        ready.set()
        await _until(lambda: protocol.cycle.response_complete)
        assert transport.writes[1:] == [b"9\r\ndata: 1\n\n\r\n", b"0\r\n\r\n"]
        protocol.connection_lost(None)

    _run(test)


def test_a_head_only_response_is_sent() -> None:
    async def test() -> None:
        protocol, transport = _connect(_replying(b"0123456789"))
        protocol.data_received(HEAD)
        await _until(lambda: protocol.cycle.response_complete)
        await _turns()
        assert len(transport.writes) == 1
        assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert transport.writes[0].endswith(b"\r\n\r\n")
        protocol.connection_lost(None)

    _run(test)


def test_100_continue_goes_out_before_the_answer() -> None:
    async def test() -> None:
        async def echo(scope: dict[str, Any], receive: Receive, send: Send) -> None:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            for message in _text(201, body):
                await send(message)

        protocol, transport = _connect(echo)
        protocol.data_received(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
            b"Content-Length: 5\r\n\r\n"
        )
        await _until(lambda: len(transport.writes) == 1)
        assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        protocol.data_received(b"hello")
        await _until(lambda: protocol.cycle.response_complete)
        assert len(transport.writes) == 2
        assert transport.writes[1].startswith(b"HTTP/1.1 201 Created\r\n")
        assert transport.writes[1].endswith(b"\r\n\r\nhello")
        protocol.connection_lost(None)

    _run(test)


def test_pipelined_answers_keep_their_order() -> None:
    async def test() -> None:
        async def path(scope: dict[str, Any], receive: Receive, send: Send) -> None:
            if scope["path"] == "/slow":
                await asyncio.sleep(0.05)
            for message in _text(200, scope["path"].encode()):
                await send(message)

        protocol, transport = _connect(path)
        protocol.data_received(GET.replace(b"/", b"/slow", 1) + GET.replace(b"/", b"/fast", 1))
        await _until(lambda: len(transport.writes) == 2)
        assert transport.writes[0].endswith(b"\r\n\r\n/slow")
        assert transport.writes[1].endswith(b"\r\n\r\n/fast")
        protocol.connection_lost(None)

    _run(test)


@pytest.mark.parametrize("started", [False, True])
def test_a_failing_application_still_answers_or_closes(started: bool) -> None:
    async def test() -> None:
        async def failing(scope: dict[str, Any], receive: Receive, send: Send) -> None:
            if started:
                await send({"type": "http.response.start", "status": 200, "headers": []})
            raise RuntimeError("the application broke")

        protocol, transport = _connect(failing)
        protocol.data_received(GET)
        await _until(lambda: transport.closed)
        await _turns()
        if started:  # the head that was sent, then the connection closed mid-response
            assert len(transport.writes) == 1
            assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
        else:
            assert len(transport.writes) == 1
            assert transport.writes[0].startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
            assert transport.writes[0].endswith(b"Internal Server Error")
        protocol.connection_lost(None)

    _run(test)


def test_a_closing_answer_is_one_write_then_the_close() -> None:
    async def test() -> None:
        protocol, transport = _connect(_replying(b"bye"))
        protocol.data_received(b"GET / HTTP/1.0\r\n\r\n")  # no keep-alive: closed after
        await _until(lambda: transport.closed)
        assert len(transport.writes) == 1
        assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"connection: close" in transport.writes[0].lower()
        assert transport.writes[0].endswith(b"\r\n\r\nbye")
        protocol.connection_lost(None)

    _run(test)
