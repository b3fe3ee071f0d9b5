"""Hardening of issue #13, finding 9: log forging, client-id enumeration, MCP discovery
(same-origin metadata, trusted issuers), key store ownership, read deadlines, and JSON
Lines audit files that queries read without blocking appends."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from server_support import EchoAgent
from sts_support import JWT_BEARER, T0, open_world

from keycard_agents import ConfigurationError, DelegationDeniedError, create_app
from keycard_agents._jose._keys import KeyStore, SigningKey
from keycard_agents.mcp import McpConnector, McpServer, McpServerError, discover_resource
from keycard_agents.sts import AuditRecord, JsonlAuditStore

TESTS = Path(__file__).parent
ISS = "https://issuer.test"
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes and owners")


# -- log forging ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_forged_line_break_in_a_logged_value_stays_on_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="keycard_agents")
    forged = "x\nINFO keycard_agents.sts issued token jti=forged\r\x1b[2J\u2028"
    async with open_world() as w:
        reply = await w.post_token({"grant_type": forged})
        assert reply.status_code == 400
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("keycard_agents")]
    denial = next(line for line in lines if "token request denied" in line)
    assert "grant=x\\x0aINFO keycard_agents.sts issued token jti=forged\\x0d\\x1b[2J\\u2028" in (
        denial
    )
    for line in lines:
        assert not any(c in line for c in "\n\r\x1b\u2028"), line


def test_the_http_servers_access_logs_are_escaped_too() -> None:
    from uvicorn.logging import AccessFormatter

    from keycard_agents._server._timeouts import escape_server_logs

    escape_server_logs()
    access = logging.getLogger("uvicorn.access")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    access.addHandler(handler)
    old_level, access.level = access.level, logging.INFO
    try:
        path = '/tasks/x\n127.0.0.1 - "GET /admin HTTP/1.1" 200'
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", path, "1.1", 404)
    finally:
        access.removeHandler(handler)
        access.level = old_level
    line = AccessFormatter(use_colors=False).format(records[0])
    assert "\n" not in line
    assert "/tasks/x\\x0a127.0.0.1" in line


# -- client-id enumeration --------------------------------------------------------------


@pytest.mark.anyio
async def test_client_authentication_failures_all_read_the_same() -> None:
    async with open_world() as w:
        other_key = w.keys["a-other"]
        attempts = [
            {"client_id": "nobody", "client_secret": "x"},  # unknown client
            {"client_id": "b", "client_secret": "x"},  # wrong secret
            {"client_id": "a", "client_secret": "x"},  # a private_key_jwt agent
            {
                "client_assertion_type": JWT_BEARER,
                "client_assertion": w.assertion("nobody", key=other_key),
            },
            {
                "client_assertion_type": JWT_BEARER,
                "client_assertion": w.assertion("a", key=other_key),
            },
            {
                "client_assertion_type": JWT_BEARER,
                "client_assertion": w.assertion("b", key=other_key),
            },
        ]
        bodies = []
        for extra in attempts:
            reply = await w.post_token({"grant_type": "client_credentials", **extra})
            assert reply.status_code == 401, reply.text
            bodies.append(reply.json())
        assert all(body == bodies[0] for body in bodies), bodies
        assert bodies[0]["error"] == "invalid_client"
        # the operator still learns what went wrong, from the audit trail
        reasons = [r.reason or "" for r in await w.service.audit.query()]
        assert "unknown client 'nobody'" in reasons[0]
        assert "wrong client secret for 'b'" in reasons[1]
        assert "client_assertion rejected (unknown_key)" in reasons[4]


# -- MCP discovery: same origin, trusted issuers ----------------------------------------

MCP_URL = "https://tools.test/mcp"


@pytest.mark.anyio
async def test_a_challenge_cannot_send_discovery_to_another_origin() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.method == "POST":
            challenge = 'Bearer resource_metadata="http://169.254.169.254/latest/meta-data/"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(404)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(McpServerError, match="another origin") as caught:
            await discover_resource(http, MCP_URL, server="tools")
    assert caught.value.server == "tools"
    assert all(url.startswith("https://tools.test/") for url in seen), seen


class _Exchange:
    issuer = "https://sts.test"

    def __init__(self) -> None:
        self.calls = 0

    async def exchange(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise AssertionError("no token may be requested for an untrusted server")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("servers", "trusted"),
    [
        (["https://evil.test"], None),
        ([], None),
        (["https://sts.test"], ["https://other-sts.test"]),
    ],
)
async def test_an_mcp_server_must_name_a_trusted_issuer(
    servers: list[str], trusted: list[str] | None
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"resource": MCP_URL, "authorization_servers": servers})

    exchange = _Exchange()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        options: dict[str, Any] = {} if trusted is None else {"trusted_issuers": trusted}
        connector = McpConnector(exchange=exchange, http_client=http, **options)
        with pytest.raises(DelegationDeniedError, match="does not trust") as caught:
            await connector.resource(McpServer("tools", url=MCP_URL))
    assert caught.value.error == "invalid_target"
    assert exchange.calls == 0


@pytest.mark.anyio
@pytest.mark.parametrize("named", ["https://sts.test", "https://sts.test/", "HTTPS://STS.test"])
async def test_an_mcp_server_naming_our_issuer_is_accepted(named: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"resource": MCP_URL, "authorization_servers": ["https://x.test", named]}
        return httpx.Response(200, json=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        connector = McpConnector(exchange=_Exchange(), http_client=http)
        assert await connector.resource(McpServer("tools", url=MCP_URL)) == MCP_URL


# -- the key store refuses directories and files others control -------------------------


@posix_only
def test_key_store_refuses_a_directory_others_can_read(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    with pytest.raises(ConfigurationError, match=f"chmod 700 {directory}"):
        KeyStore(directory)
    directory.chmod(0o700)
    assert KeyStore(directory).current.kid


@posix_only
@pytest.mark.skipif(os.name == "posix" and os.geteuid() != 0, reason="needs root to chown")
def test_key_store_refuses_a_directory_or_file_owned_by_someone_else(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    kid = KeyStore(directory).current.kid
    os.chown(directory, 65534, -1)
    with pytest.raises(ConfigurationError, match=f"user id 65534.*chown {os.geteuid()} "):
        KeyStore(directory)
    os.chown(directory, os.geteuid(), -1)
    key_file = directory / f"{kid}.json"
    os.chown(key_file, 65534, -1)
    with pytest.raises(ConfigurationError, match=r"key file .* belongs to user id 65534"):
        KeyStore(directory)
    os.chown(key_file, os.geteuid(), -1)
    assert KeyStore(directory).current.kid == kid


@posix_only
def test_key_store_refuses_a_symlinked_key_file(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    KeyStore(directory).current  # noqa: B018 (makes the directory)
    elsewhere = tmp_path / "planted.json"
    key = SigningKey.generate()
    elsewhere.write_text(json.dumps(key.to_json()))
    elsewhere.chmod(0o600)
    (directory / f"{key.kid}.json").symlink_to(elsewhere)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        KeyStore(directory)


# -- read deadlines ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_body_that_never_finishes_gets_408() -> None:
    """The ASGI form of the body deadline (used under hypercorn, and for mounted apps)."""
    from keycard_agents._server._timeouts import BodyDeadline

    agent = EchoAgent(url="http://agent.test", issuer=ISS, token_endpoint=ISS + "/token")
    app = BodyDeadline(create_app(agent), seconds=0.2)
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b'{"jsonrpc"', "more_body": True}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 5),
        "server": ("agent.test", 80),
    }
    with anyio.fail_after(10):
        await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert "did not arrive within 0.2 s" in json.loads(sent[1]["body"])["error_description"]


@pytest.mark.parametrize("option", ["header_timeout", "body_timeout", "keep_alive_timeout"])
def test_read_deadlines_are_validated(option: str) -> None:
    from keycard_agents import serve

    agent = EchoAgent(url="http://agent.test", issuer=ISS, token_endpoint=ISS + "/token")
    with pytest.raises(ConfigurationError, match=option):
        serve(agent, port=1, **{option: 0})  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


AGENT_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, os.environ["TESTS_DIR"])
    from server_support import EchoAgent
    from keycard_agents import serve

    agent = EchoAgent(issuer="https://issuer.test", token_endpoint="https://issuer.test/token")
    serve(agent, port=int(os.environ["TEST_PORT"]), backend=os.environ["TEST_BACKEND"],
          log_level="warning", header_timeout=1, keep_alive_timeout=1, body_timeout=1)
    """
)
STS_TOML = """
[limits]
header_timeout = 1
body_timeout = 1
keep_alive_timeout = 1
"""


def _wait_up(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the server did not start"
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)


@pytest.fixture(params=["agent-asyncio", "agent-trio", "sts"])
def slow_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, str]]:
    port = _free_port()
    env = {**os.environ, "TESTS_DIR": str(TESTS), "TEST_PORT": str(port)}
    if request.param == "sts":
        config = tmp_path / "sts.toml"
        config.write_text(STS_TOML)
        cli = "import sys; from keycard_agents._cli import main; sys.exit(main())"
        argv = [sys.executable, "-c", cli, "sts", "--config", str(config), "--port", str(port)]
        path = "/token"
    else:
        script = tmp_path / "serve.py"
        script.write_text(AGENT_SCRIPT)
        env["TEST_BACKEND"] = request.param.removeprefix("agent-")
        argv = [sys.executable, str(script)]
        path = "/"
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_up(f"http://127.0.0.1:{port}/", proc)
        yield port, path
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a 20 s bound, never reached when the
    server enforces its deadlines; a server that does not raises socket.timeout)."""
    sock.settimeout(20)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


@pytest.mark.slow
def test_trickled_headers_and_bodies_are_cut_off(slow_target: tuple[int, str]) -> None:
    port, path = slow_target
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    with socket.create_connection(("127.0.0.1", port)) as silent:
        assert _read_until_closed(silent) == b""  # connected, never sent a byte
    with socket.create_connection(("127.0.0.1", port)) as trickler:
        trickler.sendall(head.encode())  # the headers never end
        assert _read_until_closed(trickler) == b""
    with socket.create_connection(("127.0.0.1", port)) as slow_body:
        media, part = (
            ("application/x-www-form-urlencoded", b"grant_type=client_cre")
            if path == "/token"
            else ("application/json", b'{"jsonrpc": "2.0",')
        )
        headers = head + f"Content-Type: {media}\r\nContent-Length: 500\r\n\r\n"
        slow_body.sendall(headers.encode() + part)  # the body never ends
        answer = _read_until_closed(slow_body)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


# -- JSON Lines audit files: indexed, and read without the append lock -------------------


def _audit_record(i: int, txn: str) -> AuditRecord:
    return AuditRecord(time=T0 + i, decision="issued", txn=txn, user=f"u{i % 7}", client_id="a")


@pytest.mark.anyio
async def test_an_audit_query_reads_only_the_lines_it_may_return(tmp_path: Path) -> None:
    store = JsonlAuditStore(tmp_path / "audit.jsonl")
    for i in range(300):
        await store.append(_audit_record(i, txn=f"t{i % 100}"))
    parsed: list[bytes] = []
    real = store._parse

    def counting(line: bytes) -> AuditRecord:
        parsed.append(line)
        return real(line)

    store._parse = counting
    found = await store.query(txn="t42")
    assert [r.time for r in found] == [T0 + 42, T0 + 142, T0 + 242]
    assert len(parsed) == 3
    parsed.clear()
    assert [r.time for r in await store.query(limit=5)] == [T0 + i for i in range(295, 300)]
    assert len(parsed) == 5
    parsed.clear()
    await store.append(_audit_record(300, txn="t42"))  # indexed on the next query
    found = await store.query(txn="t42", user="u6")  # only the new record is both
    assert [r.time for r in found] == [T0 + 300]
    assert len(parsed) == 1


@pytest.mark.anyio
async def test_appends_do_not_wait_for_a_slow_query(tmp_path: Path) -> None:
    store = JsonlAuditStore(tmp_path / "audit.jsonl")
    for i in range(3):
        await store.append(_audit_record(i, txn="t"))
    reading = threading.Event()
    finish = threading.Event()
    real = store._parse

    def slow(line: bytes) -> AuditRecord:
        reading.set()
        finish.wait(timeout=10)  # a safety bound: the test opens it as soon as it can
        return real(line)

    store._parse = slow
    results: list[list[AuditRecord]] = []

    async def query() -> None:
        results.append(await store.query())

    async with anyio.create_task_group() as tg:
        tg.start_soon(query)
        await anyio.to_thread.run_sync(reading.wait, 10)
        with anyio.fail_after(5):
            await store.append(_audit_record(9, txn="new"))  # not blocked by the reader
        appended_while_reading = not finish.is_set()
        finish.set()
    assert appended_while_reading
    assert len(results[0]) == 3
    store._parse = real
    assert [r.txn for r in await store.query()] == ["t", "t", "t", "new"]


@pytest.mark.anyio
async def test_the_index_follows_a_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    store = JsonlAuditStore(path)
    for i in range(4):
        await store.append(_audit_record(i, txn="old"))
    assert len(await store.query(txn="old")) == 4
    path.rename(tmp_path / "audit.jsonl.1")  # logrotate moves the file away
    await store.append(_audit_record(5, txn="new"))
    assert await store.query(txn="old") == []
    assert [r.txn for r in await store.query()] == ["new"]
    path.write_text("")  # ... or truncates it
    assert await store.query() == []


@pytest.mark.anyio
async def test_the_audit_page_view_reads_the_recent_records_not_the_whole_file(
    tmp_path: Path,
) -> None:
    from keycard_agents.audit import AuditTrail

    store = JsonlAuditStore(tmp_path / "audit.jsonl")
    for i in range(3000):
        await store.append(_audit_record(i, txn=f"t{i // 3}"))
    parsed: list[bytes] = []
    real = store._parse

    def counting(line: bytes) -> AuditRecord:
        parsed.append(line)
        return real(line)

    store._parse = counting
    chains = await AuditTrail(token_service=store).chains(limit=5)
    assert [c.txn for c in chains] == [f"t{i}" for i in range(999, 994, -1)]
    assert len(parsed) <= 500 + 5 * 3  # one window of recent records, then each txn
