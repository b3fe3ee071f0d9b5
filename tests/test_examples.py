"""Every program in examples/ runs (as a user would run it) and prints what it promises."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from leak_support import assert_no_token

from keycard_agents.sts import TokenService, hash_secret, parse_config
from keycard_agents.testing import free_loopback_socket, serve_on_loopback

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 45

EXPECTED = {
    "two_agents": [
        "concierge card: concierge, skills ['welcome']",
        "Hello, Bob! (request path: alice → concierge → greeter)",
        "token exchanges: 1",
    ],
    "travel_mcp": [
        "best flight to Lisbon: TP 571 at 08:40, €142",
        "the MCP server saw user alice with scopes ['flights.read']",
        "✔ travel",
        "✔ flights",
    ],
    "fastapi_mount": [
        "GET /health -> {'status': 'ok'}",
        "POST /agents/support without a token -> 401 Bearer resource_metadata=",
        "/agents/support/.well-known/agent-card.json: support",
        "alice, your espresso machine (order 1001) is shipped.",
    ],
    "grant_http_api": [
        "access status: partial_error",
        "granted: calendar",
        "refused: mail: invalid_scope",
        "calendar API saw user alice via assistant",
        "09:00 stand-up",
    ],
    "hosted_issuer": [
        "(from a local token service: no zone set)",
        "latest note: 'buy oat milk'",
        "the notes API saw: alice → assistant → notes",
    ],
    "trio_client": [
        "client running on trio",
        "alice: 4 words",
        "bob: 2 words",
        "TASK_STATE_COMPLETED",
    ],
}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYCARD_")}
    env.update(PYTHONUNBUFFERED="1", NO_COLOR="1", **extra)
    return env


def run_example(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name / "main.py"), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        cwd=ROOT,
        env=env or _clean_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert_no_token(done.stdout + done.stderr)
    return done.stdout


def test_every_example_has_a_readme_and_a_test() -> None:
    folders = {p.name for p in EXAMPLES.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert folders == set(EXPECTED)
    for name in folders:
        assert (EXAMPLES / name / "README.md").read_text().startswith("# ")
        assert f"examples/{name}/main.py" in (EXAMPLES / name / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    out = run_example(name)
    for line in EXPECTED[name]:
        assert line in out, out


def test_hosted_issuer_reads_the_zone_id_from_the_environment() -> None:
    env = _clean_env(
        KEYCARD_ZONE_ID="acme", KEYCARD_CLIENT_ID="assistant", KEYCARD_CLIENT_SECRET="s3cret"
    )
    out = run_example("hosted_issuer", "--print-config", env=env)
    assert "issuer https://acme.keycard.cloud" in out
    assert "credential ClientSecret for client assistant" in out
    assert "s3cret" not in out
    env["KEYCARD_BASE_URL"] = "http://localhost:8900"
    assert "issuer http://acme.localhost:8900" in run_example(
        "hosted_issuer", "--print-config", env=env
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def stand_in_zone() -> Iterator[tuple[TokenService, str, int, int]]:
    """Our token service playing the hosted issuer, with the example's agent registered."""
    sock, issuer = free_loopback_socket()
    agent_port, api_port = _free_port(), _free_port()
    agent, api = f"http://127.0.0.1:{agent_port}", f"http://127.0.0.1:{api_port}"
    config = parse_config(
        {
            "issuer": issuer,
            "agents": [
                {
                    "client_id": "assistant",
                    "resource": agent,
                    "auth": "client_secret",
                    "secret_hash": hash_secret("zone-secret", cost=16),
                    "scopes": ["notes.read"],
                    "dependencies": [api],
                }
            ],
            "resources": [{"resource": api, "scopes": ["notes.read"]}],
        }
    )
    service = TokenService(config)
    with ExitStack() as stack:
        stack.enter_context(serve_on_loopback(service.app, sock))
        yield service, issuer, agent_port, api_port


def test_hosted_issuer_runs_the_same_code_against_another_issuer(
    stand_in_zone: tuple[TokenService, str, int, int],
) -> None:
    service, issuer, agent_port, api_port = stand_in_zone
    token = service.issue_user_token(
        "dana", audience=f"http://127.0.0.1:{agent_port}", scopes=["notes.read"]
    )
    env = _clean_env(
        KEYCARD_ZONE_URL=issuer,
        KEYCARD_CLIENT_ID="assistant",
        KEYCARD_CLIENT_SECRET="zone-secret",
        EXAMPLE_USER_TOKEN=token,
        EXAMPLE_AGENT_PORT=str(agent_port),
        EXAMPLE_API_PORT=str(api_port),
    )
    out = run_example("hosted_issuer", env=env)
    assert f"issuer {issuer} (from KEYCARD_ZONE_URL)" in out
    assert "the notes API saw: dana → assistant → notes" in out
    assert service.stats.exchanges == 1  # the exchange happened at the stand-in zone
