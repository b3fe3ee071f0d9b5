"""Figure 7: an exchange for an already-connected third-party API, next to one for an agent.

Both are complete RFC 8693 exchanges as an agent sends them (a fresh ``private_key_jwt``
client assertion each, the user's token as ``subject_token``): one for another agent
(the service mints and signs a delegated token), one for the API of a connection the user
has already connected (the service opens the user's sealed record in the vault, AES-GCM,
and returns the upstream token). The figure is the time *at the service*: from the
request reaching the ASGI app to the last byte of its answer, measured by a wrapper
around the app, with the client in the same process (httpx's ASGI transport), one request
at a time. Client assertions are signed before the clock starts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import httpx
from _common import Plan, percentile

from keycard_agents.auth import CLIENT_ASSERTION_TYPE, SigningKey
from keycard_agents.sts import StoredGrant, TokenService, parse_config

ISSUER = "https://sts.bench.example"
A = "https://agent-a.bench.example"
B = "https://agent-b.bench.example"
API = "https://api.thirdparty.bench.example/"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SECRET_ENV = "KEYCARD_BENCH_UPSTREAM_SECRET"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _Timed:
    """An ASGI wrapper recording, per request, the seconds until the answer's last byte."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.times: list[float] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: MutableMapping[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.times.append(time.perf_counter() - started)

        await self.app(scope, receive, timed_send)


def _service(key: SigningKey) -> TokenService:
    config = parse_config(
        {
            "issuer": ISSUER,
            "agents": [
                {
                    "client_id": "agent-a",
                    "resource": A,
                    "auth": "private_key_jwt",
                    "jwks": {"keys": [key.public_jwk()]},
                    "scopes": ["read"],
                    "dependencies": [B, API],
                }
            ],
            "resources": [{"resource": B, "scopes": ["read"]}],
            "connections": [
                {
                    "name": "thirdparty",
                    "authorization_endpoint": "https://provider.bench.example/authorize",
                    "token_endpoint": "https://provider.bench.example/token",
                    "client_id": "keycard",
                    "client_secret_env": SECRET_ENV,
                    "scopes": ["repo"],
                    "resources": [API],
                }
            ],
        }
    )
    return TokenService(config)


def _form(key: SigningKey, subject: str, resource: str) -> dict[str, str]:
    now = int(time.time())
    claims = {
        "iss": "agent-a",
        "sub": "agent-a",
        "aud": ISSUER,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    return {
        "grant_type": EXCHANGE,
        "subject_token": subject,
        "subject_token_type": ACCESS,
        "resource": resource,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": key.sign(claims, typ=CLIENT_ASSERTION_TYPE),
    }


def _stats(times: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    return {
        "p50": round(percentile(ms, 50), 3),
        "p90": round(percentile(ms, 90), 3),
        "p99": round(percentile(ms, 99), 3),
    }


async def _measure(plan: Plan) -> dict[str, Any]:
    import os

    os.environ.setdefault(SECRET_ENV, "bench-only-upstream-secret")
    key = SigningKey.generate("ES256")
    service = _service(key)
    assert service.vault is not None
    now = time.time()
    await service.vault.put(
        ISSUER,
        "alice",
        "thirdparty",
        StoredGrant(
            kind="oauth",
            access_token="upstream-" + uuid.uuid4().hex,
            refresh_token="refresh-" + uuid.uuid4().hex,
            expires_at=now + 7200,
            scopes=("repo",),
            connected_at=now,
        ),
    )
    subject = service.issue_user_token("alice", audience=A, scopes=["read"])
    count = 150 if plan.quick else 2000
    warmup = 20 if plan.quick else 200
    timed = _Timed(service.app)
    results: dict[str, Any] = {"requests_per_kind": count, "bad_responses": 0}
    async with (
        service.app.router.lifespan_context(service.app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=timed), base_url=ISSUER) as http,
    ):
        for label, target in (("agent", B), ("connection", API)):
            forms = [_form(key, subject, target) for _ in range(warmup + count)]
            timed.times.clear()
            for form in forms:
                reply = await http.post("/token", data=form)
                if reply.status_code != 200:
                    results["bad_responses"] += 1
            results[f"{label}_exchange_ms"] = _stats(timed.times[warmup:])
    return results


def run(plan: Plan) -> dict[str, Any]:
    plan.log("connections: exchange for a connected API vs for an agent, time at the service")
    figure = anyio.run(_measure, plan)
    plan.log(
        f"  p50 at the service: agent {figure['agent_exchange_ms']['p50']} ms, "
        f"connected API {figure['connection_exchange_ms']['p50']} ms"
    )
    return figure


if __name__ == "__main__":
    import sys
    import tempfile
    from pathlib import Path

    quick = "--quick" in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        print(run(Plan.make(quick=quick, work=Path(tmp), out=Path(tmp))))
