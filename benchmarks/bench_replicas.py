"""Replicas on Redis: the in-memory stores and the Redis stores side by side.

    python benchmarks/bench_replicas.py [--quick] [--seconds S] [--concurrency C]

A. A2A ``SendMessage`` (JSON-RPC, one skill that echoes) per second through the agent's
   ASGI app: ``MemoryTaskStore`` vs ``RedisTaskStore`` (each task: create, WORKING,
   artifact, COMPLETED, each a Redis script that also publishes the event).
B. Token exchanges per second through the token service's ASGI app: memory vs the shared
   Redis state (replay set, audit stream, rate-limit buckets for the client secret).
C. Chains per second (user → Front → Echo, two exchanges per new user) over loopback
   HTTP with 1 and with 2 Front replicas as processes (tests/replica_processes.py).

Starts its own ``redis-server`` (Debian's) on a free port. Prints the figures; nothing is
asserted (tests/_redis/test_bench_replicas_smoke.py runs it in its quick mode). On a
2-core machine the replicas, Redis and the load generator share two cores: the ratio to
the in-memory figure is the number to watch, not the absolute rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from redis_support import RedisServer  # noqa: E402
from replica_processes import start_replicas  # noqa: E402
from server_support import TokenMinter  # noqa: E402
from sts_support import ISSUER, B, make_config  # noqa: E402

from keycard_agents import Agent, Context, create_app, skill  # noqa: E402
from keycard_agents.redis import RedisServiceState, RedisSettings, RedisTaskStore  # noqa: E402
from keycard_agents.runtime import MemoryTaskStore, TaskRuntime, TaskStore  # noqa: E402
from keycard_agents.sts import TokenService, hash_client_secret, new_client_secret  # noqa: E402

AGENT_URL = "http://127.0.0.1:9301"


class EchoAgent(Agent):
    name = "bench-echo"

    @skill(scopes=["echo"])
    async def echo(self, ctx: Context, text: str) -> str:
        return text


async def rate(
    work: Callable[[int], Awaitable[None]], *, seconds: float, concurrency: int
) -> dict[str, float]:
    """Run ``work`` from ``concurrency`` workers for ``seconds``; requests per second."""
    done = 0
    errors = 0
    started = time.perf_counter()
    until = started + seconds

    async def worker(index: int) -> None:
        nonlocal done, errors
        n = 0
        while time.perf_counter() < until:
            try:
                await work(index * 1_000_000 + n)
                done += 1
            except Exception:
                errors += 1
            n += 1

    async with anyio.create_task_group() as group:
        for index in range(concurrency):
            group.start_soon(worker, index)
    elapsed = time.perf_counter() - started
    return {"per_second": round(done / elapsed, 1), "requests": done, "errors": errors}


async def send_messages(store: TaskStore, *, seconds: float, concurrency: int) -> dict[str, float]:
    minter = TokenMinter()
    agent = EchoAgent(url=AGENT_URL)
    token = minter.token(sub="bench", aud=AGENT_URL, scopes=("echo",), lifetime=3600)
    app = create_app(agent, runtime=TaskRuntime(agent, store=store), verifier=minter.verifier())
    headers = {"A2A-Version": "1.0", "Authorization": f"Bearer {token}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as http:

            async def one(n: int) -> None:
                message = {
                    "messageId": uuid.uuid4().hex,
                    "role": "ROLE_USER",
                    "parts": [{"data": {"skill": "echo", "arguments": {"text": str(n)}}}],
                }
                body = {
                    "jsonrpc": "2.0",
                    "id": n,
                    "method": "SendMessage",
                    "params": {"message": message},
                }
                reply = (await http.post("/", json=body, headers=headers)).json()
                assert reply["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"

            return await rate(one, seconds=seconds, concurrency=concurrency)


async def exchanges(url: str | None, *, seconds: float, concurrency: int) -> dict[str, float]:
    secret = new_client_secret()
    config, _ = make_config(
        agents=[
            {
                "client_id": "b",
                "resource": B,
                "auth": "client_secret",
                "secret_hash": hash_client_secret(secret),
                "scopes": ["read"],
                "dependencies": ["https://c.example/"],
            },
            {
                "client_id": "c",
                "resource": "https://c.example/",
                "auth": "client_secret",
                "secret_hash": hash_client_secret(new_client_secret()),
                "scopes": ["read"],
            },
        ],
        limits={"failed_auth_per_account": 1000},
    )
    shared = None if url is None else RedisServiceState(RedisSettings(url))
    service = TokenService(config, shared=shared)
    async with service.app.router.lifespan_context(service.app):
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:

            async def one(n: int) -> None:
                subject = service.issue_user_token(f"u{n % 500}", audience=B, scopes=["read"])
                form = {
                    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                    "subject_token": subject,
                    "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "resource": "https://c.example/",
                    "client_id": "b",
                    "client_secret": secret,
                }
                reply = await http.post("/token", data=form)
                assert reply.status_code == 200, reply.text

            return await rate(one, seconds=seconds, concurrency=concurrency)


async def chains(
    fronts: list[str], replicas: Any, *, seconds: float, concurrency: int
) -> dict[str, float]:
    tokens = [replicas.user_token(f"chain{i}") for i in range(50)]
    async with httpx.AsyncClient(timeout=60) as http:

        async def one(n: int) -> None:
            message = {
                "messageId": uuid.uuid4().hex,
                "role": "ROLE_USER",
                "parts": [{"data": {"skill": "relay", "arguments": {}}}],
            }
            body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "SendMessage",
                "params": {"message": message},
            }
            headers = {"A2A-Version": "1.0", "Authorization": f"Bearer {tokens[n % len(tokens)]}"}
            reply = (
                await http.post(fronts[n % len(fronts)] + "/", json=body, headers=headers)
            ).json()
            assert reply["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"

        return await rate(one, seconds=seconds, concurrency=concurrency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s per figure (smoke test)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    seconds = 1.0 if args.quick else args.seconds
    concurrency = 4 if args.quick else args.concurrency
    figures: dict[str, Any] = {"seconds": seconds, "concurrency": concurrency}
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        redis = RedisServer(Path(tmp) / "redis")
        redis.start()
        try:
            run = anyio.run
            memory = run(
                lambda: send_messages(MemoryTaskStore(), seconds=seconds, concurrency=concurrency)
            )
            shared = run(
                lambda: send_messages(
                    RedisTaskStore(RedisSettings(redis.url), namespace=AGENT_URL),
                    seconds=seconds,
                    concurrency=concurrency,
                )
            )
            figures["A_send_message"] = {"memory": memory, "redis": shared}
            figures["B_exchanges"] = {
                "memory": run(lambda: exchanges(None, seconds=seconds, concurrency=concurrency)),
                "redis": run(
                    lambda: exchanges(redis.url, seconds=seconds, concurrency=concurrency)
                ),
            }
            deployment = start_replicas(Path(tmp) / "replicas", redis.url, lease=15.0)
            try:
                urls = [f.url for f in deployment.fronts]
                figures["C_chains"] = {
                    "one_replica": run(
                        lambda: chains(
                            urls[:1], deployment, seconds=seconds, concurrency=concurrency
                        )
                    ),
                    "two_replicas": run(
                        lambda: chains(urls, deployment, seconds=seconds, concurrency=concurrency)
                    ),
                }
            finally:
                deployment.stop()
        finally:
            redis.stop()
    for name in ("A_send_message", "B_exchanges"):
        pair = figures[name]
        mem, red = pair["memory"]["per_second"], pair["redis"]["per_second"]
        pair["redis_over_memory"] = round(red / mem, 2) if mem else None
        print(f"{name}: memory {mem}/s, redis {red}/s, ratio {pair['redis_over_memory']}")
    one = figures["C_chains"]["one_replica"]["per_second"]
    two = figures["C_chains"]["two_replicas"]["per_second"]
    figures["C_chains"]["two_over_one"] = round(two / one, 2) if one else None
    ratio = figures["C_chains"]["two_over_one"]
    print(f"C_chains: 1 replica {one}/s, 2 replicas {two}/s, ratio {ratio}")
    print(json.dumps(figures, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
