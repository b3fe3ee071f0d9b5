"""Serving: graceful shutdown (in process and over a real socket, uvicorn and hypercorn on
trio) and the ``keycard-agents serve`` subcommand."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from server_support import AGENT_URL, ISSUER, EchoAgent, TokenMinter, bearer, call_message, rpc

from keycard_agents import ConfigurationError, create_app
from keycard_agents._server import add_serve_arguments, run_serve
from keycard_agents._server._command import load_agent
from keycard_agents._server._serve import default_url

MINTER = TokenMinter()
TESTS = Path(__file__).resolve().parents[1]  # where the shared test helpers live


def sse_results(lines: list[str]) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :])["result"] for line in lines if line.startswith("data: ")
    ]


def final_state(result: dict[str, Any]) -> str:
    payload = result.get("statusUpdate") or result.get("task")
    assert payload is not None
    state: str = payload["status"]["state"]
    return state


# ------------------------------------------------------------------- in process


@pytest.mark.anyio
async def test_shutdown_cancels_running_tasks_and_ends_streams() -> None:
    agent = EchoAgent(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    app = create_app(agent, verifier=MINTER.verifier())
    alice = bearer(MINTER.token())
    results: list[dict[str, Any]] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            background = {
                "message": call_message("wait", {"label": 1}),
                "configuration": {"returnImmediately": True},
            }
            response = await client.post("/", json=rpc("SendMessage", background), headers=alice)
            other = response.json()["result"]["task"]["id"]

            async def stream() -> None:
                params = {"message": call_message("wait", {"label": 2})}
                response = await client.post(
                    "/", json=rpc("SendStreamingMessage", params), headers=alice
                )
                results.extend(sse_results(response.text.splitlines()))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(stream)
                    for _ in range(100):
                        await anyio.lowlevel.checkpoint()
                    await app.state.keycard_runtime.aclose()
            got = await client.post("/", json=rpc("GetTask", {"id": other}), headers=alice)
            refused = await client.post("/", json=rpc("SendMessage", background), headers=alice)
    status = got.json()["result"]["status"]
    assert status["state"] == "TASK_STATE_CANCELED"
    assert "shutting down" in status["message"]["parts"][0]["text"]
    assert final_state(results[-1]) == "TASK_STATE_CANCELED"
    assert refused.json()["error"]["code"] == -32603


def test_default_url() -> None:
    assert default_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert default_url("0.0.0.0", 9) == "http://127.0.0.1:9"  # noqa: S104
    assert default_url("::", 9) == "http://[::1]:9"
    assert default_url("agent.local", 80) == "http://agent.local:80"


# ------------------------------------------------------------------ CLI pieces


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_serve_arguments() -> None:
    args = parse("pkg.mod:Agent", "--port", "9001", "--backend", "trio", "--max-body-size", "10")
    assert args.target == "pkg.mod:Agent"
    assert args.port == 9001
    assert args.backend == "trio"
    assert args.max_body_size == 10
    assert args.allow_missing_version is False
    assert parse("m:A").max_body_size == 1024 * 1024


def test_load_agent_class_and_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    agent = load_agent(
        "server_support:EchoAgent",
        url="http://a.test/",
        issuer=ISSUER,
        token_endpoint=ISSUER + "/token",
    )
    assert isinstance(agent, EchoAgent)
    assert agent.url == "http://a.test/"  # the resource exactly as registered at the issuer
    assert agent.issuer == ISSUER


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("no_colon", "module:AgentClass"),
        ("no_such_module_xyz:Agent", "cannot import"),
        ("server_support:Missing", "no attribute"),
        ("server_support:ISSUER", "not an Agent"),
    ],
)
def test_load_agent_errors(monkeypatch: pytest.MonkeyPatch, target: str, fragment: str) -> None:
    monkeypatch.syspath_prepend(str(TESTS))
    with pytest.raises(ConfigurationError, match=fragment):
        load_agent(target)


def test_run_serve_reports_configuration_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_serve(parse("no_colon")) == 2
    assert "module:AgentClass" in capsys.readouterr().err


# ------------------------------------------------------- real server, real signal

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, os.environ["TESTS_DIR"])
    from server_support import ISSUER, EchoAgent
    from keycard_agents import serve
    from keycard_agents.auth import StaticKeys, TokenVerifier

    jwks = json.loads(os.environ["TEST_JWKS"])
    verifier = TokenVerifier(issuers=[ISSUER], keys=StaticKeys({ISSUER: jwks}))
    port = int(os.environ["TEST_PORT"])
    agent = EchoAgent(issuer=ISSUER, token_endpoint=ISSUER + "/token")
    serve(agent, port=port, backend=os.environ["TEST_BACKEND"], log_level="warning",
          verifier=verifier)
    import gc
    print("startup heap frozen" if gc.get_freeze_count() > 10_000 else "not frozen", flush=True)
    print("exited cleanly", flush=True)
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server_process(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    backend = request.param
    port = free_port()
    script = tmp_path / "serve_agent.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "TESTS_DIR": str(TESTS),
        "TEST_JWKS": json.dumps(MINTER.jwks()),
        "TEST_PORT": str(port),
        "TEST_BACKEND": backend,
    }
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(url + "/.well-known/agent-card.json", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("server_process", ["asyncio", "trio"], indirect=True)
def test_sigint_cancels_tasks_and_closes_streams(server_process: tuple[Any, str]) -> None:
    proc, url = server_process
    token = MINTER.token(aud=url)
    card = httpx.get(url + "/.well-known/agent-card.json").json()
    assert card["supportedInterfaces"][0]["url"] == url
    lines: list[str] = []
    params = {"message": call_message("wait", {"label": 9})}
    with (
        httpx.Client(timeout=20) as client,
        client.stream(
            "POST", url + "/", json=rpc("SendStreamingMessage", params), headers=bearer(token)
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            lines.append(line)
            if "waiting 9" in line:  # the skill is running: now stop the server
                proc.send_signal(signal.SIGINT)
    results = sse_results(lines)
    assert final_state(results[-1]) == "TASK_STATE_CANCELED"
    assert "shutting down" in json.dumps(results[-1])
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err[-3000:]
    assert "exited cleanly" in out
    assert "startup heap frozen" in out


CLI_SCRIPT = textwrap.dedent(
    """
    import argparse, os, sys
    sys.path.insert(0, os.environ["TESTS_DIR"])
    from keycard_agents._server import add_serve_arguments, run_serve

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    sys.exit(run_serve(parser.parse_args(sys.argv[1:])))
    """
)


@pytest.mark.slow
def test_serve_command_end_to_end(tmp_path: Path) -> None:
    port = free_port()
    script = tmp_path / "cli.py"
    script.write_text(CLI_SCRIPT)
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            "server_support:EchoAgent",
            "--port",
            str(port),
            "--issuer",
            ISSUER,
            "--token-endpoint",
            ISSUER + "/token",
            "--log-level",
            "warning",
        ],
        env={**os.environ, "TESTS_DIR": str(TESTS)},
        cwd=TESTS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the server did not start"
            try:
                card = httpx.get(url + "/.well-known/agent-card.json", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert card.json()["supportedInterfaces"][0]["url"] == url
        missing = httpx.post(
            url + "/",
            json=rpc("SendMessage", {"message": call_message("admin", {"action": 1})}),
            headers={"A2A-Version": "1.0"},
        )
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == (
            f'Bearer resource_metadata="{url}/.well-known/oauth-protected-resource"'
        )
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
