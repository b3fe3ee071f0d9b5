"""Figure 5: resident memory of an agent process holding finished tasks and cached tokens.

A child process (``python benchmarks/bench_memory.py --child N``) builds what a serving
agent holds, fills it past its bounds and reports its RSS (Linux ``/proc``) at each step:

* the task store (``MemoryTaskStore``, default bound 10,000): N echo tasks run to completion
  through the real ``TaskRuntime.send_message``; the time per 1,000 tasks shows what
  creating a task costs once the store is full;
* the inbound verification cache (``TokenVerifier(cache_size=10_000)``): N distinct tokens;
* the exchanged-token cache (``TokenExchangeClient``, default bound 10,000): N exchanges
  of distinct subject tokens (the token endpoint is an ``httpx.MockTransport`` answering
  with signed delegated tokens, so only the client's memory is measured);
* then everything again with N new items: memory must stay flat once the bounds hold.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import anyio
import httpx
from _common import REPO, Plan, rss_bytes
from _issuer import ISSUER, BenchIssuer

from keycard_agents import Agent, Caller, ClientSecret, skill
from keycard_agents.a2a import SendMessageRequest
from keycard_agents.auth import StaticKeys, TokenExchangeClient, TokenVerifier
from keycard_agents.runtime import MemoryTaskStore, TaskRuntime

AUDIENCE = "https://agent.bench.example"
STS = "https://sts.bench.example"


class MemoryEcho(Agent):
    name = "memory echo"
    description = "Echoes text back."

    @skill(id="echo")
    async def echo(self, text: str) -> str:
        """Say it back."""
        return text


def _rss() -> int:
    gc.collect()
    return rss_bytes(os.getpid())


def _exchange_transport(issuer: BenchIssuer) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/.well-known/oauth-authorization-server"):
            return httpx.Response(200, json={"issuer": STS, "token_endpoint": STS + "/token"})
        token = issuer.token(
            aud="https://next.bench.example",
            client_id="memory-echo",
            act={"sub": "memory-echo", "iss": STS},
            txn=uuid.uuid4().hex,
        )
        return httpx.Response(
            200,
            json={
                "access_token": token,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "echo",
            },
        )

    return httpx.MockTransport(handle)


async def _child(count: int, bound: int) -> dict[str, Any]:
    issuer = BenchIssuer()
    steps: dict[str, int] = {}
    agent = MemoryEcho(url=AUDIENCE)
    store = MemoryTaskStore(max_tasks=bound, max_tasks_per_owner=bound)
    runtime = TaskRuntime(agent, store=store)
    verifier = TokenVerifier(
        issuers=[ISSUER], keys=StaticKeys({ISSUER: issuer.jwks()}), cache_size=bound
    )
    http = httpx.AsyncClient(transport=_exchange_transport(issuer))
    # The default bound of the exchange cache is 10,000; --quick scales it down.
    exchange = TokenExchangeClient(
        issuer=STS,
        credential=ClientSecret("memory-echo", "x" * 32),
        http_client=http,
        cache_size=bound,
    )
    principal = await verifier.verify(issuer.token(aud=AUDIENCE), audience=AUDIENCE)
    caller = Caller(principal=principal, token=None)
    steps["baseline"] = _rss()
    batch_ms: list[float] = []
    rounds: list[dict[str, Any]] = []
    async with runtime.running():
        for _round in range(2):
            start = time.perf_counter()
            for index in range(count):
                request = SendMessageRequest.model_validate(
                    {
                        "message": {
                            "messageId": uuid.uuid4().hex,
                            "role": "ROLE_USER",
                            "parts": [{"text": f"hello {index}"}],
                        }
                    }
                )
                await runtime.send_message(request, caller=caller)
                if (index + 1) % 1000 == 0 or index + 1 == count:
                    now = time.perf_counter()
                    done = (index % 1000) + 1
                    batch_ms.append((now - start) / done * 1e3)
                    start = now
            tasks_rss = _rss()
            for _ in range(count):
                await verifier.verify(issuer.token(aud=AUDIENCE), audience=AUDIENCE)
            verify_rss = _rss()
            subjects = [issuer.token(aud=AUDIENCE) for _ in range(count)]
            for subject in subjects:
                await exchange.exchange(subject, resource="https://next.bench.example")
            del subjects
            exchange_rss = _rss()
            rounds.append(
                {
                    "tasks_held": len(store),
                    "verified_tokens_cached": len(verifier._cache),
                    "exchanged_tokens_cached": exchange.cache_len,
                    "rss_after_tasks": tasks_rss,
                    "rss_after_verifications": verify_rss,
                    "rss_after_exchanges": exchange_rss,
                }
            )
    await exchange.aclose()
    await http.aclose()
    return {
        "items_per_round": count,
        "bound": bound,
        "rss_baseline": steps["baseline"],
        "rounds": rounds,
        "ms_per_task_by_1000": batch_ms,
    }


def run(plan: Plan) -> dict[str, Any]:
    count, bound = (1200, 1000) if plan.quick else (12_000, 10_000)
    argv = [sys.executable, __file__, "--child", str(count), "--bound", str(bound)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    last = result["rounds"][-1]
    first = result["rounds"][0]
    result["bounds_hold"] = (
        last["tasks_held"] <= bound
        and last["verified_tokens_cached"] <= bound
        and last["exchanged_tokens_cached"] <= bound
    )
    result["rss_growth_second_round_bytes"] = (
        last["rss_after_exchanges"] - first["rss_after_exchanges"]
    )
    result["rss_held_bytes"] = first["rss_after_exchanges"] - result["rss_baseline"]
    mib = 1024 * 1024
    plan.log(
        f"  memory: baseline {result['rss_baseline'] / mib:.1f} MiB, full "
        f"{first['rss_after_exchanges'] / mib:.1f} MiB, after a second round "
        f"{last['rss_after_exchanges'] / mib:.1f} MiB; bounds hold: {result['bounds_hold']}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", type=int, required=True)
    parser.add_argument("--bound", type=int, default=10_000)
    args = parser.parse_args()
    result = anyio.run(_child, args.child, args.bound)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
