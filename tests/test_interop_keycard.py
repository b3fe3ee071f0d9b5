"""A mixed fleet: our agents and an agent built with Keycard's own SDK (keycardai-a2a 0.5.0
from PyPI), both ways, through our token service standing in for a Keycard zone.

The chain is user → Front (ours) → Relay (keycardai-a2a) → Collector (ours), each under
uvicorn on its own loopback port. Front reads Relay's RFC 9728 metadata (written by
keycardai-starlette, which names the issuer and the resource with a trailing "/"),
exchanges for it and calls it over A2A; Relay verifies that token with Keycard's
TokenVerifier and calls Collector with keycardai-a2a's DelegationClient, which sends both
``resource`` and ``audience`` to our token service and posts to ``/a2a/jsonrpc``. The
Keycard side is written the way Keycard's documentation writes it, unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from keycard_agents import (
    Agent,
    AgentDependency,
    Context,
    open_agent_client,
    skill,
    task_result,
)
from keycard_agents.sts import TokenService, hash_secret, parse_config
from keycard_agents.testing import free_loopback_socket, serve_on_loopback

pytestmark = [pytest.mark.slow]

RELAY = Path(__file__).parent / "keycard_relay.py"


def our_agents(relay: str) -> tuple[type[Agent], type[Agent]]:
    class Collector(Agent):
        name = "collector"

        @skill(scopes=["c.read"])
        async def seen(self, ctx: Context, text: str) -> str:
            """Report what the caller's token says (as JSON text)."""
            principal = ctx.principal
            assert principal is not None
            return json.dumps(
                {
                    "asked": text,
                    "sub": principal.user,
                    "actors": list(principal.actors.subjects()),
                    "client_id": principal.client_id,
                    "aud": list(principal.audience),
                }
            )

    class Front(Agent):
        name = "front"
        dependencies = (AgentDependency("relay", url=relay, scopes=["relay", "c.read"]),)

        @skill(scopes=["a.use"])
        async def start(self, ctx: Context) -> Any:
            """Ask the Keycard relay to reach the collector."""
            reply = await ctx.dependency("relay").send("collect, please")
            return task_result(reply)

    return Front, Collector


@dataclass
class Fleet:
    sts: TokenService
    front: str
    relay: str
    collector: str
    relay_log: Path


@contextlib.contextmanager
def run_keycard_relay(sock: socket.socket, url: str, env: dict[str, str]) -> Iterator[Path]:
    """tests/keycard_relay.py in a child process serving ``sock``; stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="keycard-relay-") as tmp:
        log_path = Path(tmp) / "stderr.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, str(RELAY)],
                env={**os.environ, **env, "KEYCARD_RELAY_FD": str(sock.fileno())},
                pass_fds=[sock.fileno()],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        sock.close()  # the child holds its own copy
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the Keycard relay did not start in 60 s"
                try:
                    if httpx.get(url + "/.well-known/agent-card.json", timeout=2).is_success:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            yield log_path
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    sockets = [free_loopback_socket() for _ in range(4)]
    (s_sock, sts_url), (a_sock, a_url), (k_sock, k_url), (c_sock, c_url) = sockets
    relay_resource = k_url + "/"  # what keycardai-starlette's metadata says it is
    secret = {name: secrets.token_urlsafe(24) for name in ("front", "relay", "collector")}

    def agent(client_id: str, resource: str, scopes: list[str], deps: list[str]) -> dict[str, Any]:
        return {
            "client_id": client_id,
            "resource": resource,
            "auth": "client_secret",
            "secret_hash": hash_secret(secret[client_id.removeprefix("keycard-")], cost=2**4),
            "scopes": scopes,
            "dependencies": deps,
        }

    config = parse_config(
        {
            "issuer": sts_url,
            "alg": "RS256",  # what Keycard's TokenVerifier accepts by default
            "agents": [
                agent("front", a_url, ["a.use"], [relay_resource]),
                agent("keycard-relay", relay_resource, ["relay", "c.read"], [c_url]),
                agent("collector", c_url, ["c.read"], []),
            ],
        }
    )
    sts = TokenService(config)
    Front, Collector = our_agents(k_url)
    from keycard_agents import ClientSecret

    front = Front(
        url=a_url,
        issuer=sts_url,
        token_endpoint=sts_url + "/token",
        credential=ClientSecret(("front", secret["front"])),
    )
    collector = Collector(url=c_url, issuer=sts_url, token_endpoint=sts_url + "/token")
    relay_env = {
        "KEYCARD_RELAY_URL": k_url,
        "KEYCARD_RELAY_ISSUER": sts_url,
        "KEYCARD_RELAY_SECRET": secret["relay"],
        "KEYCARD_RELAY_COLLECTOR": c_url,
    }
    with ExitStack() as stack:
        stack.enter_context(serve_on_loopback(sts.app, s_sock))
        stack.enter_context(serve_on_loopback(front.asgi_app(), a_sock))
        stack.enter_context(serve_on_loopback(collector.asgi_app(), c_sock))
        log = stack.enter_context(run_keycard_relay(k_sock, k_url, relay_env))
        yield Fleet(sts, a_url, k_url, c_url, log)


@pytest.mark.anyio
async def test_ours_to_keycard_to_ours(fleet: Fleet, anyio_backend: str) -> None:
    alice = f"alice-{anyio_backend}"  # the fleet serves both backends' runs
    user = fleet.sts.issue_user_token(
        alice, audience=fleet.front, scopes=["a.use", "relay", "c.read"], may_act="front"
    )
    try:
        with anyio.fail_after(60):
            async with open_agent_client(fleet.front, token=user) as client:
                relayed = await client.call("start")
    except Exception as exc:
        log = fleet.relay_log.read_text(errors="replace")[-4000:]
        raise AssertionError(f"{exc}\nKeycard relay log:\n{log}") from exc
    # keycardai-a2a hands back the collector's SendMessage result as JSON text.
    task = json.loads(relayed)["task"]
    seen = json.loads(task["artifacts"][0]["parts"][0]["text"])
    assert seen["asked"] == "collect, please"
    assert seen["sub"] == alice
    assert seen["actors"] == ["keycard-relay", "front"]
    assert seen["client_id"] == "keycard-relay"
    assert seen["aud"] == [fleet.collector]
    records = [
        r for r in await fleet.sts.audit.query() if r.decision == "issued" and r.user == alice
    ]
    assert [(r.client_id, r.target) for r in records] == [
        ("front", fleet.relay + "/"),
        ("keycard-relay", fleet.collector),
    ]
