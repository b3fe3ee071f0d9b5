"""Figure 3: the embedded token service, one-hop RFC 8693 exchanges per second and latency.

The service runs exactly as users run it: ``keycard-agents sts --config FILE`` (uvicorn, one
worker, default settings), once per signing algorithm (ES256 is the default; EdDSA, RS256).
Each request is a complete exchange as an agent sends it: a fresh ``private_key_jwt``
client assertion (unique ``jti``, so no request is a replay), the user's token as
``subject_token``, a ``resource``. wrk sends pre-built bodies, each once.

Also measured: one sequential client with the real ``TokenExchangeClient`` (assertion
signing, httpx and response parsing included), cache bypassed, to show what an agent sees.

And the two ways agents authenticate, side by side in the same pass (ES256 service): the
hop-1 exchange by an agent that signs a ``private_key_jwt`` assertion and by one that sends
its generated client secret with ``client_secret_basic`` (HTTP Basic), each with wrk at
2 threads x 16 connections and at one connection, p50/p90/p99 and the load average
around every run.
"""

from __future__ import annotations

import base64
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx
from _common import (
    HOST,
    Plan,
    ServerSpec,
    free_port,
    percentile,
    profile_under_load,
    running_servers,
    summarize,
    user_token,
    write_lines,
    wrk,
)

from keycard_agents import WebIdentity
from keycard_agents.auth import KeyStore, TokenExchangeClient
from keycard_agents.sts import hash_client_secret, new_client_secret

A = "https://agent-a.bench.example"
S = "https://agent-s.bench.example"
B = "https://agent-b.bench.example"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLI = "import sys; from keycard_agents._cli import main; sys.exit(main())"


def _config_toml(
    *, issuer: str, alg: str, key_dir: Path, agent_jwk: dict[str, Any], secret_hash: str
) -> str:
    jwk_items = ", ".join(f'{k} = "{v}"' for k, v in agent_jwk.items() if isinstance(v, str))
    return f"""issuer = "{issuer}"
key_dir = "{key_dir}"
alg = "{alg}"

[[agents]]
client_id = "agent-a"
resource = "{A}"
auth = "private_key_jwt"
scopes = ["read", "write"]
dependencies = ["{B}"]
jwks = {{ keys = [ {{ {jwk_items} }} ] }}

[[agents]]
client_id = "agent-s"
resource = "{S}"
auth = "client_secret"
secret_hash = "{secret_hash}"
scopes = ["read", "write"]
dependencies = ["{B}"]

[[resources]]
resource = "{B}"
scopes = ["read"]
"""


class _Service:
    """What one token service run needs: its config, the user's token, the agent's key."""

    def __init__(self, plan: Plan, alg: str) -> None:
        self.port = free_port()
        self.issuer = f"http://{HOST}:{self.port}"
        base = plan.work / f"sts-{alg}"
        base.mkdir(parents=True, exist_ok=True)
        key_dir = base / "keys"
        store = KeyStore(key_dir, alg=alg, retention=3600)
        self.identity = WebIdentity("agent-a", storage_dir=base / "agent-a")
        jwk = self.identity.public_jwks()["keys"][0]
        self.secret = new_client_secret()
        self.config = base / "sts.toml"
        self.config.write_text(
            _config_toml(
                issuer=self.issuer,
                alg=alg,
                key_dir=key_dir,
                agent_jwk=jwk,
                secret_hash=hash_client_secret(self.secret),
            ),
            encoding="utf-8",
        )
        self.user_token = user_token(store, issuer=self.issuer, audience=A, client_id="agent-a")
        self.secret_user_token = user_token(
            store, issuer=self.issuer, audience=S, client_id="agent-s"
        )
        self.base = base

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-c",
            CLI,
            "sts",
            "--config",
            str(self.config),
            "--host",
            HOST,
            "--port",
            str(self.port),
        ]

    def body(self) -> str:
        return urlencode(
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

    def bodies(self, count: int, name: str) -> Path:
        return write_lines(self.base / name, [self.body() for _ in range(count)])

    def secret_body(self) -> Path:
        """The hop-1 exchange of the client-secret agent: the same body every time (the
        secret goes in the Authorization header, see :meth:`basic`)."""
        body = urlencode(
            {
                "grant_type": EXCHANGE,
                "subject_token": self.secret_user_token,
                "subject_token_type": ACCESS,
                "resource": B,
            }
        )
        path = self.base / "secret-body.txt"
        path.write_text(body, encoding="ascii")
        return path

    def basic(self) -> str:
        """``client_secret_basic`` (RFC 6749 §2.3.1) for agent-s."""
        pair = f"agent-s:{self.secret}".encode("ascii")
        return "Basic " + base64.b64encode(pair).decode("ascii")


def _probe(service: _Service) -> int:
    reply = httpx.post(
        service.issuer + "/token",
        content=service.body(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    if reply.status_code != 200 or "access_token" not in reply.text:
        raise RuntimeError(f"token service answered {reply.status_code}: {reply.text[:300]}")
    token = reply.json()["access_token"]
    secret = httpx.post(
        service.issuer + "/token",
        content=service.secret_body().read_bytes(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": service.basic(),
        },
        timeout=10,
    )
    if secret.status_code != 200 or "access_token" not in secret.text:
        raise RuntimeError(f"client_secret_basic: {secret.status_code}: {secret.text[:300]}")
    return len(token)


async def _client_latency(service: _Service, count: int) -> dict[str, Any]:
    samples: list[float] = []
    async with TokenExchangeClient(issuer=service.issuer, credential=service.identity) as client:
        await client.exchange(service.user_token, resource=B)  # metadata, connection
        for _ in range(count):
            start = time.perf_counter()
            await client.exchange(service.user_token, resource=B, refresh=True)
            samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return {
        "count": count,
        "p50_ms": percentile(samples, 50),
        "p99_ms": percentile(samples, 99),
        "mean_ms": sum(samples) / len(samples),
    }


#: (key, threads, connections) of the per-method runs: 2 threads x 16 connections and one
#: connection. ``private_key_jwt`` at one connection is the sequential ES256 run above.
METHOD_RUNS: list[tuple[str, int, int]] = [
    ("private_key_jwt_c16", 2, 16),
    ("client_secret_basic_c16", 2, 16),
    ("client_secret_basic_c1", 1, 1),
]


def _by_method(
    plan: Plan,
    service: _Service,
    url: str,
    count: int,
    rep: int,
    methods: dict[str, list[dict[str, Any]]],
    pid: int,
) -> None:
    """One pass of the hop-1 exchange by each client authentication method, interleaved."""
    common = {"content_type": "application/x-www-form-urlencoded", "expect": "access_token"}
    for key, threads, connections in METHOD_RUNS:
        if plan.quick and connections == 1:
            continue  # the smoke run stays short: the paired 16-connection runs only
        if key.startswith("private_key_jwt"):
            options: dict[str, Any] = {"bodies_file": service.bodies(count, "method-bodies.txt")}
        else:
            options = {"body_file": service.secret_body(), "auth": service.basic()}
        result = wrk(
            url,
            duration=plan.duration,
            connections=connections,
            threads=threads,
            pid=pid,
            **options,
            **common,
        )
        plan.log(f"  sts {key:24s} t{threads} rep {rep + 1}: {result.describe()}")
        methods[key].append(result.as_dict())


def run(plan: Plan) -> dict[str, Any]:
    algs = ["ES256"] if plan.quick else ["ES256", "EdDSA", "RS256"]
    per_alg: dict[str, list[dict[str, Any]]] = {alg: [] for alg in algs}
    sequential: list[dict[str, Any]] = []
    client_runs: list[dict[str, Any]] = []
    methods: dict[str, list[dict[str, Any]]] = {key: [] for key, _, _ in METHOD_RUNS}
    token_sizes: dict[str, int] = {}
    services = {alg: _Service(plan, alg) for alg in algs}
    url = {alg: services[alg].issuer + "/token" for alg in algs}
    common = {"content_type": "application/x-www-form-urlencoded", "expect": "access_token"}
    count = int(plan.duration * 4000) + 1000
    specs = [
        ServerSpec(
            f"sts-{alg}", service.argv(), service.port, "/.well-known/oauth-authorization-server"
        )
        for alg, service in services.items()
    ]
    plan.log(f"starting {len(algs)} token services")
    with running_servers(specs, log_dir=plan.work) as servers:
        for alg, service in services.items():
            token_sizes[alg] = _probe(service)
        if plan.warmup > 0:
            for alg in algs:
                bodies = services[alg].bodies(int(plan.warmup * 4000) + 500, "warmup.txt")
                wrk(url[alg], duration=plan.warmup, connections=32, bodies_file=bodies, **common)
        for rep in range(plan.reps):
            for alg in algs:
                bodies = services[alg].bodies(count, "bodies.txt")
                result = wrk(
                    url[alg],
                    duration=plan.duration,
                    connections=plan.connections,
                    bodies_file=bodies,
                    **common,
                )
                plan.log(
                    f"  sts {alg:6s} c{plan.connections} rep {rep + 1}: {result.describe()} "
                    f"reused {result.reused}"
                )
                per_alg[alg].append(result.as_dict())
            seq_count = int(plan.duration * 2000) + 500
            bodies = services["ES256"].bodies(seq_count, "sequential.txt")
            result = wrk(
                url["ES256"],
                duration=plan.duration,
                connections=1,
                bodies_file=bodies,
                pid=int(servers["sts-ES256"].process.pid),
                **common,
            )
            plan.log(f"  sts ES256  c1  rep {rep + 1}: {result.describe()}")
            sequential.append(result.as_dict())
            pid = int(servers["sts-ES256"].process.pid)
            _by_method(plan, services["ES256"], url["ES256"], count, rep, methods, pid)
            client = anyio.run(_client_latency, services["ES256"], 20 if plan.quick else 300)
            plan.log(
                f"  TokenExchangeClient sequential rep {rep + 1}: p50 {client['p50_ms']:.2f} ms "
                f"p99 {client['p99_ms']:.2f} ms"
            )
            client_runs.append(client)
        profile = None
        if not plan.quick:
            bodies = services["ES256"].bodies(count, "profile.txt")
            profile = profile_under_load(
                int(servers["sts-ES256"].process.pid),
                plan.duration,
                plan.work / "profile-sts.txt",
                lambda: wrk(
                    url["ES256"],
                    duration=plan.duration,
                    connections=plan.connections,
                    bodies_file=bodies,
                    **common,
                ),
            )

    def stats(results: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "exchanges_per_sec": summarize([r["requests_per_sec"] for r in results]),
            "p50_ms": summarize([r["p50_ms"] for r in results]),
            "p90_ms": summarize([r["p90_ms"] for r in results]),
            "p99_ms": summarize([r["p99_ms"] for r in results]),
            "max_ms": summarize([r["max_ms"] for r in results]),
            "server_cpu_us_per_request": summarize(
                [r["server_cpu_us_per_request"] for r in results if r["server_cpu_us_per_request"]]
            ),
            "loadavg_1min": [r["loadavg_1min"] for r in results],
            "bad_responses": sum(r["non_2xx"] + r["errors"] for r in results),
            "reused_inputs": sum(r["reused"] for r in results),
            "runs": results,
        }

    return {
        "connections": plan.connections,
        "by_algorithm": {alg: stats(per_alg[alg]) for alg in algs},
        "sequential_es256": stats(sequential),
        "client_sequential_es256": {
            "p50_ms": summarize([c["p50_ms"] for c in client_runs]),
            "p99_ms": summarize([c["p99_ms"] for c in client_runs]),
            "runs": client_runs,
        },
        "by_client_auth": {
            "private_key_jwt_c16": stats(methods["private_key_jwt_c16"]),
            "client_secret_basic_c16": stats(methods["client_secret_basic_c16"]),
            "private_key_jwt_c1": stats(sequential),
            "client_secret_basic_c1": stats(methods["client_secret_basic_c1"]),
        },
        "client_auth_ratios": {
            "client_secret_basic_vs_private_key_jwt_c16": summarize(
                [
                    s["requests_per_sec"] / p["requests_per_sec"]
                    for s, p in zip(
                        methods["client_secret_basic_c16"],
                        methods["private_key_jwt_c16"],
                        strict=True,
                    )
                    if p["requests_per_sec"]
                ]
            ),
        },
        "delegated_token_bytes": token_sizes,
        "profile": profile,
        "command": "keycard-agents sts --config sts.toml (uvicorn, one worker)",
    }


if __name__ == "__main__":  # pragma: no cover - manual use
    print(Path(__file__).name, "is run by benchmarks/run.py")
