"""Interop with the official ``@a2a-js/sdk`` 1.3.0 JavaScript client.

The test installs the client into ``tests/interop_js`` (``npm install``, bounded in time)
when ``node_modules`` is missing, serves an agent with uvicorn on a free loopback port,
and runs ``client.mjs``: it resolves the card, sends a message and streams a task with a
bearer token, over JSON-RPC and over HTTP+JSON.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from server_support import ISSUER, EchoAgent, TokenMinter

from keycard_agents import Context, WebIdentity, create_app, skill
from keycard_agents.a2a import Message, Part, Role
from keycard_agents.runtime import PushNotifier

JS_DIR = Path(__file__).parent / "interop_js"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(NODE is None or NPM is None, reason="node and npm are not installed"),
]


@pytest.fixture(scope="module")
def js_client() -> Path:
    if not (JS_DIR / "node_modules" / "@a2a-js" / "sdk").is_dir():
        assert NPM is not None
        subprocess.run(
            [NPM, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_DIR,
            check=True,
            timeout=240,
            capture_output=True,
        )
    installed = json.loads((JS_DIR / "node_modules/@a2a-js/sdk/package.json").read_text())
    assert installed["version"] == "1.3.0"
    return JS_DIR / "client.mjs"


@pytest.fixture(scope="module")
def served_agent() -> Iterator[tuple[str, TokenMinter]]:
    minter = TokenMinter()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    agent = EchoAgent(url=url, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    app = create_app(agent, verifier=minter.verifier())
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn stopped while starting"
        time.sleep(0.02)
    try:
        yield url, minter
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        assert not thread.is_alive()


def run_client(script: Path, url: str, token: str, binding: str) -> dict[str, Any]:
    assert NODE is not None
    result = subprocess.run(
        [NODE, str(script), url, token, binding],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    output: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return output


@pytest.mark.timeout(300)
@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
def test_js_client_sends_and_streams(
    js_client: Path, served_agent: tuple[str, TokenMinter], binding: str
) -> None:
    url, minter = served_agent
    out = run_client(js_client, url, minter.token(aud=url), binding)
    assert out["protocolVersion"] == "1.0"
    assert out["transport"] == binding
    assert out["send"]["artifacts"] == ["echo: hello from js"]
    assert out["stream"]["kinds"][0] == "task"
    assert "artifactUpdate" in out["stream"]["kinds"]
    assert out["stream"]["texts"] == ["echo: stream from js"]
    completed = out["send"]["state"]
    assert completed == out["stream"]["lastState"]
    assert completed in (3, "TASK_STATE_COMPLETED")


@pytest.mark.timeout(120)
def test_js_client_without_token_is_refused(
    js_client: Path, served_agent: tuple[str, TokenMinter]
) -> None:
    url, minter = served_agent
    assert NODE is not None
    result = subprocess.run(
        [NODE, str(js_client), url, minter.token(aud="http://elsewhere.test"), "JSONRPC"],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert result.returncode == 1
    assert "failed the audience check" in result.stderr


class Features(EchoAgent):
    """EchoAgent plus the skills the feature script needs."""

    @skill(id="now")
    async def now(self, zone: str) -> Message:
        """A direct answer."""
        return Message(message_id=uuid.uuid4().hex, role=Role.AGENT, parts=[Part(text=zone)])

    @skill(id="report")
    async def report(self, ctx: Context, sections: int) -> str:
        """A report in chunks."""
        writer = ctx.open_artifact(name="report")
        for i in range(sections):
            await writer.write(f"s{i};", last=i == sections - 1)
        return "done"

    @skill(id="ask")
    async def ask(self, ctx: Context, topic: str) -> str:
        """Asks first."""
        return f"{topic} for {await ctx.ask_input('who?')}"

    @skill(id="vault", extended=True)
    async def vault(self, item: int) -> str:
        """On the extended card only."""
        return f"item {item}"


async def public_resolver(host: str, port: int) -> list[str]:
    return ["93.184.216.34"]


@pytest.fixture(scope="module")
def served_features(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TokenMinter]]:
    minter = TokenMinter()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    identity = WebIdentity("features", storage_dir=tmp_path_factory.mktemp("keys") / "k")
    agent = Features(url=url, issuer=ISSUER, token_endpoint=ISSUER + "/token", credential=identity)
    app = create_app(agent, verifier=minter.verifier(), push=PushNotifier(resolve=public_resolver))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn stopped while starting"
        time.sleep(0.02)
    try:
        yield url, minter
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        assert not thread.is_alive()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
def test_js_client_uses_the_a2a_features(
    js_client: Path, served_features: tuple[str, TokenMinter], binding: str
) -> None:
    url, minter = served_features
    out = run_client(js_client.parent / "features.mjs", url, minter.token(aud=url), binding)
    assert out["transport"] == binding
    assert out["card"]["verified"] is True  # the SDK verified the signature with our jku
    assert out["card"]["tamperedRefused"] is True
    assert "vault" in out["card"]["skills"]  # the authenticated extended card
    assert "vault" not in out["card"]["publicSkills"]
    assert out["direct"] == {"isMessage": True, "texts": ["UTC"]}
    chunks = out["chunks"]
    assert len({c["id"] for c in chunks}) == 1
    assert [(c["append"], c["last"]) for c in chunks] == [
        (False, False),
        (True, False),
        (True, True),
    ]
    assert [t for c in chunks for t in c["texts"]] == ["s0;", "s1;", "s2;"]
    resubscribe = out["resubscribe"]
    completed = {3, "TASK_STATE_COMPLETED"}
    assert resubscribe["first"] in (6, "TASK_STATE_INPUT_REQUIRED")
    assert resubscribe["answered"] in completed
    assert resubscribe["states"][-1] in completed  # the stream lasted through the reply
    assert out["push"] == {"url": "https://hooks.example/cb", "listed": [True], "after": 0}
