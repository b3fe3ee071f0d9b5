"""Read deadlines of ``serve()`` over a real socket, past the first request of a
connection: requests split across reads, keep-alive, pipelining, and slow clients on a
connection that was already answered (``keycard_agents._server._timeouts``).

The first-request cases (silent connection, trickled headers, a body that never ends) are
in ``tests/test_security_hardening.py`` for the agent on both backends and the token service.
Every read here is bounded by 20 s, far above the 1 s deadlines: a server that does not
enforce them fails with ``socket.timeout``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from keycard_agents._server._timeouts import ServerTimeouts, uvicorn_options

TESTS = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, os.environ["TESTS_DIR"])
    from server_support import EchoAgent
    from keycard_agents import serve

    agent = EchoAgent(issuer="https://issuer.test", token_endpoint="https://issuer.test/token")
    serve(agent, port=int(os.environ["TEST_PORT"]), backend=os.environ["TEST_BACKEND"],
          log_level="warning", header_timeout=1, body_timeout=1, keep_alive_timeout=1)
    """
)

CARD = b"GET /.well-known/agent-card.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
BODY = b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "t"}}'
POST = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    + b"A2A-Version: 1.0\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(params=["asyncio", "trio"])
def port(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[int]:
    port = _free_port()
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "TESTS_DIR": str(TESTS),
        "TEST_PORT": str(port),
        "TEST_BACKEND": request.param,
    }
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the server did not start"
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)


class Connection:
    """A raw HTTP/1.1 connection that reads whole responses (Content-Length framed)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(20)
        self.buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> tuple[int, bytes]:
        """The next response's status and body."""
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"closed before a whole response: {self.buffer[:200]!r}"
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            assert self._fill(), "closed in the middle of a response body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), body

    def rest_until_closed(self) -> bytes:
        """Everything else the server sends, once it closes the connection."""
        while self._fill():
            pass
        rest, self.buffer = self.buffer, b""
        return rest


def test_uvicorn_serves_with_the_deadlines_on_httptools() -> None:
    options = uvicorn_options(ServerTimeouts(header=2, body=3, keep_alive=4.5))
    assert issubclass(options["http"], HttpToolsProtocol)
    assert options["timeout_keep_alive"] == 5


@pytest.mark.slow
def test_requests_split_across_reads_are_served_and_the_connection_kept(port: int) -> None:
    with Connection(port) as conn:
        for cut in (5, len(POST) - 3, len(POST) + 10):  # in the request line, headers, body
            whole = POST + BODY
            conn.send(whole[:cut])
            time.sleep(0.2)  # well within the 1 s deadlines, long enough for two reads
            conn.send(whole[cut:])
            status, body = conn.response()
            assert status == 200, body  # answered (a JSON-RPC error: no bearer token)
            assert b'"error"' in body
        conn.send(CARD)
        assert conn.response()[0] == 200


@pytest.mark.slow
def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    with Connection(port) as conn:
        conn.send(CARD + POST + BODY + CARD)
        assert [conn.response()[0] for _ in range(3)] == [200, 200, 200]


@pytest.mark.slow
def test_a_kept_connection_whose_next_headers_trickle_is_closed(port: int) -> None:
    with Connection(port) as conn:
        conn.send(CARD)
        assert conn.response()[0] == 200
        conn.send(b"GET /.well-known/agent-card.json HTTP/1.1\r\n")  # never finished
        assert conn.rest_until_closed() == b""


@pytest.mark.slow
def test_a_kept_connection_sent_stray_line_ends_is_closed(port: int) -> None:
    with Connection(port) as conn:
        conn.send(CARD)
        assert conn.response()[0] == 200
        conn.send(b"\r\n")  # begins no request, but ends the wait for one
        rest = conn.rest_until_closed()  # h11 (hypercorn) answers 400, llhttp skips them
        assert rest == b"" or rest.startswith(b"HTTP/1.1 400"), rest[:200]


@pytest.mark.slow
def test_the_next_body_that_never_ends_gets_408(port: int) -> None:
    with Connection(port) as conn:
        conn.send(CARD)
        assert conn.response()[0] == 200
        conn.send(POST + BODY[:10])
        status, body = conn.response()
        assert status == 408
        assert b"did not arrive within 1 s" in body
        assert conn.rest_until_closed() == b""


@pytest.mark.slow
def test_a_pipelined_body_that_never_ends_closes_the_connection(port: int) -> None:
    with Connection(port) as conn:
        conn.send(CARD + POST + BODY[:10])
        assert conn.response()[0] == 200
        rest = conn.rest_until_closed()  # a 408 if the first answer was out in time
        assert rest == b"" or rest.startswith(b"HTTP/1.1 408"), rest[:200]
