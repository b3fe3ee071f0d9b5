"""Figure 4: delegation chain scaling, 1 to 5 hops, cold and warm, and token size per hop.

Five agents (hop1 → hop2 → ... → hop5), each its own uvicorn process, with the embedded
token service (``keycard-agents sts``) as a sixth. A request "through L hops" enters at
hop(6-L) and is relayed down to hop5: L agents verify a token, L-1 exchanges happen.

* warm: the same user token again; every agent's exchange cache and verification cache hit.
* cold: a user token never seen before; every hop verifies it and exchanges afresh.
* open: the same relay through five more agents with anonymous skills and no tokens at
  all: the unauthenticated baseline (same server, same A2A client, same JSON-RPC).

Token size per hop comes from exchanging down the chain with each agent's credential.
"""

from __future__ import annotations

import itertools
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
from _common import HOST, Plan, ServerSpec, free_port, percentile, running_servers, summarize

from keycard_agents import AgentClient, CardCache, WebIdentity
from keycard_agents.auth import KeyStore, TokenExchangeClient

HOPS = 5
CLI = "import sys; from keycard_agents._cli import main; sys.exit(main())"
AGENT = str(Path(__file__).with_name("chain_agent.py"))


def _toml(issuer: str, key_dir: Path, hops: list[tuple[str, str, dict[str, Any]]]) -> str:
    lines = [f'issuer = "{issuer}"', f'key_dir = "{key_dir}"', 'alg = "ES256"', ""]
    for index, (client_id, url, jwk) in enumerate(hops):
        items = ", ".join(f'{k} = "{v}"' for k, v in jwk.items() if isinstance(v, str))
        deps = f'["{hops[index + 1][1]}"]' if index + 1 < len(hops) else "[]"
        lines += [
            "[[agents]]",
            f'client_id = "{client_id}"',
            f'resource = "{url}"',
            'auth = "private_key_jwt"',
            'scopes = ["relay"]',
            f"dependencies = {deps}",
            f"jwks = {{ keys = [ {{ {items} }} ] }}",
            "",
        ]
    return "\n".join(lines)


def _fit_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


class _Chain:
    def __init__(self, plan: Plan) -> None:
        base = plan.work / "chain"
        base.mkdir(parents=True, exist_ok=True)
        self.sts_port = free_port()
        self.issuer = f"http://{HOST}:{self.sts_port}"
        self.keys = KeyStore(base / "sts-keys", alg="ES256", retention=3600)
        self.keys.current  # noqa: B018 - create the signing key before the token service loads it
        self.ports = [free_port() for _ in range(HOPS)]
        self.open_ports = [free_port() for _ in range(HOPS)]
        self.urls = [f"http://{HOST}:{p}" for p in self.ports]
        self.open_urls = [f"http://{HOST}:{p}" for p in self.open_ports]
        self.identities: list[WebIdentity] = []
        hops = []
        for index, url in enumerate(self.urls):
            identity = WebIdentity(f"hop{index + 1}", storage_dir=base / f"hop{index + 1}")
            self.identities.append(identity)
            hops.append((f"hop{index + 1}", url, identity.public_jwks()["keys"][0]))
        self.config = base / "sts.toml"
        self.config.write_text(_toml(self.issuer, base / "sts-keys", hops), encoding="utf-8")
        self.base = base

    def user_token(self, entry: int) -> str:
        now = int(time.time())
        return self.keys.current.sign(
            {
                "iss": self.issuer,
                "sub": "alice",
                "aud": self.urls[entry],
                "iat": now,
                "nbf": now,
                "exp": now + 3600,
                "jti": uuid.uuid4().hex,
                "scope": "relay",
                "txn": uuid.uuid4().hex,
            },
            typ="at+jwt",
        )

    def specs(self) -> list[ServerSpec]:
        sts = [sys.executable, "-c", CLI, "sts", "--config", str(self.config)]
        sts += ["--host", HOST, "--port", str(self.sts_port)]
        specs = [
            ServerSpec("chain-sts", sts, self.sts_port, "/.well-known/oauth-authorization-server")
        ]
        card = "/.well-known/agent-card.json"
        for index in range(HOPS):
            nxt = ["--next", self.urls[index + 1]] if index + 1 < HOPS else []
            argv = [sys.executable, AGENT, "--port", str(self.ports[index]), *nxt]
            argv += ["--issuer", self.issuer, "--identity", str(self.base / f"hop{index + 1}")]
            argv += ["--client-id", f"hop{index + 1}"]
            specs.append(ServerSpec(f"hop{index + 1}", argv, self.ports[index], card))
            nxt = ["--next", self.open_urls[index + 1]] if index + 1 < HOPS else []
            argv = [sys.executable, AGENT, "--port", str(self.open_ports[index]), "--open", *nxt]
            specs.append(ServerSpec(f"open-hop{index + 1}", argv, self.open_ports[index], card))
        return specs

    async def token_sizes(self) -> list[int]:
        """Bytes of the token each hop receives, hop1 (the user's) to hop5."""
        token = self.user_token(0)
        sizes = [len(token)]
        for index in range(HOPS - 1):
            async with TokenExchangeClient(
                issuer=self.issuer, credential=self.identities[index]
            ) as client:
                exchanged = await client.exchange(token, resource=self.urls[index + 1])
            token = exchanged.access_token
            sizes.append(len(token))
        return sizes


async def _latencies(
    chain: _Chain, http: httpx.AsyncClient, cards: CardCache, hops: int, mode: str, count: int
) -> list[float]:
    entry = HOPS - hops
    if mode == "open":
        url, tokens = chain.open_urls[entry], [None] * (count + 1)
    elif mode == "warm":
        url = chain.urls[entry]
        token = chain.user_token(entry)
        tokens = [token] * (count + 1)
    else:
        url = chain.urls[entry]
        tokens = [chain.user_token(entry) for _ in range(count + 1)]
    samples: list[float] = []
    for index, token in enumerate(tokens):
        async with AgentClient(url, token=token, http_client=http, card_cache=cards) as client:
            start = time.perf_counter()
            with anyio.fail_after(30):
                result = await client.call("relay")
            elapsed = (time.perf_counter() - start) * 1e3
        if result != hops:
            raise RuntimeError(f"chain of {hops} answered {result!r}")
        if index > 0 or mode == "cold":  # the first warm/open call primes caches
            samples.append(elapsed)
    return samples[:count]


async def _measure(chain: _Chain, plan: Plan) -> dict[str, Any]:
    count = 5 if plan.quick else 60
    modes = ("open", "warm", "cold")
    p50: dict[str, dict[int, list[float]]] = {m: {h: [] for h in range(1, 6)} for m in modes}
    p99: dict[str, dict[int, list[float]]] = {m: {h: [] for h in range(1, 6)} for m in modes}
    cards = CardCache()
    async with httpx.AsyncClient(timeout=30) as http:
        sizes = await chain.token_sizes()
        for rep in range(plan.reps):
            for hops in range(1, HOPS + 1):
                for mode in modes:
                    samples = sorted(await _latencies(chain, http, cards, hops, mode, count))
                    p50[mode][hops].append(percentile(samples, 50))
                    p99[mode][hops].append(percentile(samples, 99))
                plan.log(
                    f"  chain {hops} hop(s) rep {rep + 1}: "
                    + ", ".join(f"{m} p50 {p50[m][hops][-1]:.2f} ms" for m in modes)
                )
    xs = [float(h) for h in range(1, HOPS + 1)]
    slopes: dict[str, list[float]] = {m: [] for m in modes}
    for rep in range(plan.reps):
        for mode in modes:
            slopes[mode].append(_fit_slope(xs, [p50[mode][h][rep] for h in range(1, HOPS + 1)]))
    warm_extra = [w - o for w, o in zip(slopes["warm"], slopes["open"], strict=True)]
    cold_extra = [c - o for c, o in zip(slopes["cold"], slopes["open"], strict=True)]
    growth = [b - a for a, b in itertools.pairwise(sizes)]
    return {
        "requests_per_point": count,
        "latency_p50_ms": {
            m: {str(h): summarize(p50[m][h]) for h in range(1, HOPS + 1)} for m in modes
        },
        "latency_p99_ms": {
            m: {str(h): summarize(p99[m][h]) for h in range(1, HOPS + 1)} for m in modes
        },
        "ms_per_hop_slope": {m: summarize(slopes[m]) for m in modes},
        "warm_hop_extra_ms_vs_open": summarize(warm_extra),
        "cold_hop_extra_ms_vs_open": summarize(cold_extra),
        "token_bytes_per_hop": sizes,
        "token_growth_bytes_per_hop": growth,
        "token_growth_slope_bytes": _fit_slope(xs, [float(s) for s in sizes]),
    }


def run(plan: Plan) -> dict[str, Any]:
    chain = _Chain(plan)
    plan.log("starting the token service and 10 chain agents")
    with running_servers(chain.specs(), log_dir=plan.work):
        result: dict[str, Any] = anyio.run(_measure, chain, plan)
    return result
