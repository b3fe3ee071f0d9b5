"""The MCP test helpers themselves: token claims and the server thread."""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

import pytest
from mcp_support import ServerThread, claims_of


def test_claims_of_reads_a_payload() -> None:
    body = base64.urlsafe_b64encode(json.dumps({"sub": "x"}).encode()).decode().rstrip("=")
    assert claims_of(f"h.{body}.s") == {"sub": "x"}


def test_server_thread_refuses_to_report_a_dead_server() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:

        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise AssertionError("never served")

        thread = ServerThread(app, port=int(taken.getsockname()[1]))
        with pytest.raises(RuntimeError, match="did not start"):
            thread.__enter__()
        thread.thread.join(timeout=5)
    finally:
        taken.close()
