"""Figure 6: a legitimate token exchange while attackers hammer the token service.

The service runs as users run it (``keycard-agents sts --config FILE``: uvicorn, one
worker) with an admin credential and a client-secret agent whose hashes have the default
scrypt cost (2^14). One sequential client makes legitimate exchanges (``private_key_jwt``,
a fresh assertion each, bodies built beforehand) and times each round trip, first with
the service idle, then while 4 attacker clients in another process (benchmarks/_hammer.py)
loop bad credentials: two at ``/audit`` (bearer, Basic), two at ``/token`` (wrong client
secrets, post and Basic). ``/jwks.json`` is timed the same way.

Two configurations: the default ``[limits]`` (failed attempts are throttled per source
address and per account, so most attacks get a cheap 429), and limits raised so high
that nothing is throttled (an attacker spread over many addresses): only the bounded,
off-loop hash pool protects the legitimate traffic then. Target: the exchange p50 under
attack within 2x of idle, with the default limits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from _common import (
    BENCH_DIR,
    HOST,
    Plan,
    free_port,
    percentile,
    running_server,
    summarize,
    user_token,
)

from keycard_agents import WebIdentity
from keycard_agents._jose._keys import KeyStore
from keycard_agents.sts import hash_secret

A = "https://agent-a.bench.example"
B = "https://agent-b.bench.example"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLI = "import sys; from keycard_agents._cli import main; sys.exit(main())"
HAMMER = BENCH_DIR / "_hammer.py"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
VARIANTS: dict[str, dict[str, int]] = {
    "default limits": {},
    "no throttling": {"failed_auth_per_source": 1_000_000, "failed_auth_per_account": 1_000_000},
}


def _toml_value(value: Any) -> str:
    return json.dumps(value)


class _Service:
    """One token service configuration: its TOML, the user's token, the agent's key."""

    def __init__(self, plan: Plan, name: str, limits: dict[str, int]) -> None:
        self.port = free_port()
        self.issuer = f"http://{HOST}:{self.port}"
        self.base = plan.work / f"abuse-{name.replace(' ', '-')}"
        self.base.mkdir(parents=True, exist_ok=True)
        key_dir = self.base / "keys"
        store = KeyStore(key_dir, retention=3600)
        self.identity = WebIdentity("agent-a", storage_dir=self.base / "agent-a")
        jwk = self.identity.public_jwks()["keys"][0]
        jwk_items = ", ".join(f"{k} = {_toml_value(v)}" for k, v in jwk.items())
        lines = [
            f'issuer = "{self.issuer}"',
            f'key_dir = "{key_dir}"',
            "",
            "[admin]",
            f'token_hash = "{hash_secret("the-real-admin-token-0123456789")}"',
            "",
            *(["[limits]", *(f"{k} = {v}" for k, v in limits.items()), ""] if limits else []),
            "[[agents]]",
            'client_id = "agent-a"',
            f'resource = "{A}"',
            'auth = "private_key_jwt"',
            'scopes = ["read", "write"]',
            f'dependencies = ["{B}"]',
            f"jwks = {{ keys = [ {{ {jwk_items} }} ] }}",
            "",
            "[[agents]]",
            'client_id = "batch"',
            'resource = "https://batch.bench.example"',
            'auth = "client_secret"',
            f'secret_hash = "{hash_secret("the-real-batch-secret-0123456789")}"',
            "",
            "[[resources]]",
            f'resource = "{B}"',
            'scopes = ["read"]',
        ]
        self.config = self.base / "sts.toml"
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.user_token = user_token(store, issuer=self.issuer, audience=A, client_id="agent-a")

    def argv(self) -> list[str]:
        port = str(self.port)
        return [sys.executable, "-c", CLI, "sts", "--config", str(self.config), "--port", port]

    def bodies(self, count: int) -> list[str]:
        return [
            urlencode(
                {
                    "grant_type": EXCHANGE,
                    "subject_token": self.user_token,
                    "subject_token_type": ACCESS,
                    "resource": B,
                    "client_id": "agent-a",
                    "client_assertion_type": JWT_BEARER,
                    "client_assertion": self.identity.create_assertion(audience=self.issuer),
                }
            )
            for _ in range(count)
        ]


def _timed(client: httpx.Client, service: _Service, count: int) -> dict[str, Any]:
    """``count`` legitimate exchanges, then ``count`` key set fetches, one at a time."""
    exchanges: list[float] = []
    for body in service.bodies(count):
        start = time.perf_counter()
        reply = client.post("/token", content=body, headers=FORM)
        exchanges.append((time.perf_counter() - start) * 1e3)
        if reply.status_code != 200:
            raise RuntimeError(f"a legitimate exchange got {reply.status_code}: {reply.text[:200]}")
    jwks: list[float] = []
    for _ in range(count):
        start = time.perf_counter()
        reply = client.get("/jwks.json")
        jwks.append((time.perf_counter() - start) * 1e3)
        reply.raise_for_status()
    exchanges.sort()
    jwks.sort()
    return {
        "exchange_p50_ms": percentile(exchanges, 50),
        "exchange_p90_ms": percentile(exchanges, 90),
        "jwks_p50_ms": percentile(jwks, 50),
    }


def _start_hammer(issuer: str, seconds: float) -> subprocess.Popen[str]:
    hammer = subprocess.Popen(
        [sys.executable, str(HAMMER), issuer, str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert hammer.stdout is not None
    ready: list[str] = []
    reader = threading.Thread(target=lambda: ready.append(hammer.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout=30)
    if not ready or ready[0].strip() != "ready":
        hammer.kill()
        raise RuntimeError("the attackers did not start")
    return hammer


def _stop_hammer(hammer: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = hammer.communicate(input="", timeout=60)
    return dict(json.loads(out.strip().splitlines()[-1]))


def _one_variant(plan: Plan, name: str, limits: dict[str, int], count: int) -> dict[str, Any]:
    service = _Service(plan, name, limits)
    runs: list[dict[str, Any]] = []
    probe = "/.well-known/oauth-authorization-server"
    with (
        running_server(
            f"abuse-{name}", service.argv(), port=service.port, log_dir=plan.work, probe=probe
        ),
        httpx.Client(base_url=service.issuer, timeout=30) as client,
    ):
        _timed(client, service, 20)  # warm up: connection, key caches
        for rep in range(plan.reps):
            idle = _timed(client, service, count)
            hammer = _start_hammer(service.issuer, seconds=600)
            try:
                time.sleep(1.0)  # let the attack run (and the throttle engage) first
                attacked = _timed(client, service, count)
            finally:
                attack = _stop_hammer(hammer)
            answers: dict[str, int] = {}
            for per_kind in attack["answers"].values():
                for status, n in per_kind.items():
                    answers[status] = answers.get(status, 0) + n
            total = sum(answers.values())
            run = {
                "idle": idle,
                "attacked": attacked,
                "ratio": attacked["exchange_p50_ms"] / idle["exchange_p50_ms"],
                "jwks_ratio": attacked["jwks_p50_ms"] / idle["jwks_p50_ms"],
                "attack_requests": total,
                "attack_requests_per_sec": total / attack["seconds"],
                "attack_answers": answers,
            }
            plan.log(
                f"  abuse {name:14s} rep {rep + 1}: exchange p50 idle "
                f"{idle['exchange_p50_ms']:.2f} ms, attacked {attacked['exchange_p50_ms']:.2f} ms "
                f"({run['ratio']:.2f}x); jwks {idle['jwks_p50_ms']:.2f} -> "
                f"{attacked['jwks_p50_ms']:.2f} ms; attackers {run['attack_requests_per_sec']:.0f}"
                f" req/s, answers {answers}"
            )
            runs.append(run)
    return {
        "limits": limits,
        "exchange_p50_idle_ms": summarize([r["idle"]["exchange_p50_ms"] for r in runs]),
        "exchange_p50_attacked_ms": summarize([r["attacked"]["exchange_p50_ms"] for r in runs]),
        "ratio": summarize([r["ratio"] for r in runs]),
        "jwks_p50_idle_ms": summarize([r["idle"]["jwks_p50_ms"] for r in runs]),
        "jwks_p50_attacked_ms": summarize([r["attacked"]["jwks_p50_ms"] for r in runs]),
        "attack_requests_per_sec": summarize([r["attack_requests_per_sec"] for r in runs]),
        "runs": runs,
    }


def run(plan: Plan) -> dict[str, Any]:
    count = 60 if plan.quick else 400
    variants = {name: _one_variant(plan, name, limits, count) for name, limits in VARIANTS.items()}
    return {
        "requests_per_phase": count,
        "attackers": 4,
        "variants": variants,
        "command": "keycard-agents sts --config sts.toml (uvicorn, one worker); attackers in "
        "benchmarks/_hammer.py",
    }


if __name__ == "__main__":  # python benchmarks/bench_abuse.py [--quick]
    import tempfile

    quick = "--quick" in sys.argv
    work = Path(tempfile.mkdtemp(prefix="keycard-abuse-"))
    result = run(Plan.make(quick=quick, work=work, out=work))
    for name, variant in result["variants"].items():
        print(
            f"{name}: exchange p50 idle {variant['exchange_p50_idle_ms']['median']:.2f} ms, "
            f"under attack {variant['exchange_p50_attacked_ms']['median']:.2f} ms, ratio "
            f"{variant['ratio']['median']:.2f}x (target <= 2x)"
        )
