"""Shared helpers for the token service tests (and unit tests of the small pieces)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from keycard_agents.auth import CLIENT_ASSERTION_TYPE, SigningKey
from keycard_agents.sts import (
    AuditStore,
    TokenService,
    TokenServiceConfig,
    hash_secret,
    parse_config,
    pkce_challenge,
)

ISSUER = "https://sts.example"
A = "https://a.example/"
B = "https://b.example/"
C = "https://c.example/"
D = "https://d.example/api"
SECRET_B = "b-secret-0123456789"
PASSWORD = "wonderland"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
REDIRECT = "http://127.0.0.1:7777/callback"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
AT = "urn:ietf:params:oauth:token-type:access_token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
T0 = 1_800_000_000.0


class Clock:
    """An injected clock the tests move by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class World:
    """A token service with agents a (private_key_jwt), b (secret), c (private_key_jwt)."""

    service: TokenService
    client: httpx.AsyncClient
    clock: Clock
    keys: dict[str, SigningKey] = field(default_factory=dict)

    def assertion(
        self,
        client_id: str,
        *,
        aud: str = ISSUER,
        lifetime: float = 60,
        jti: str | None = None,
        typ: str = CLIENT_ASSERTION_TYPE,
        sub: str | None = None,
        key: SigningKey | None = None,
    ) -> str:
        now = int(self.clock())
        claims = {
            "iss": client_id,
            "sub": sub or client_id,
            "aud": aud,
            "iat": now,
            "exp": int(now + lifetime),
            "jti": jti or uuid.uuid4().hex,
        }
        return (key or self.keys[client_id]).sign(claims, typ=typ)

    def auth(self, client_id: str) -> dict[str, str]:
        """Form fields that authenticate ``client_id`` (fresh assertion or secret post)."""
        if client_id == "b":
            return {"client_id": "b", "client_secret": SECRET_B}
        return {"client_assertion_type": JWT_BEARER, "client_assertion": self.assertion(client_id)}

    async def post_token(
        self, data: dict[str, str] | list[tuple[str, str]], **kwargs: Any
    ) -> httpx.Response:
        if isinstance(data, list):
            headers = {"content-type": "application/x-www-form-urlencoded"}
            return await self.client.post("/token", content=urlencode(data), headers=headers)
        return await self.client.post("/token", data=data, **kwargs)

    async def exchange(
        self, client_id: str, subject: str, resource: str, **extra: str
    ) -> httpx.Response:
        form = {
            "grant_type": EXCHANGE,
            "subject_token": subject,
            "subject_token_type": AT,
            "resource": resource,
            **self.auth(client_id),
            **extra,
        }
        return await self.post_token(form)

    async def sign_in(self, *, scope: str | None = "read write", resource: str = A) -> str:
        """The browser part of the login flow; returns the authorization code."""
        params = {
            "response_type": "code",
            "client_id": "app",
            "redirect_uri": REDIRECT,
            "code_challenge": pkce_challenge(VERIFIER),
            "code_challenge_method": "S256",
            "resource": resource,
            "state": "xyz",
        }
        if scope is not None:
            params["scope"] = scope
        page = await self.client.get("/authorize", params=params)
        assert page.status_code == 200, page.text
        reply = await self.client.post(
            "/authorize", data={**params, "username": "alice", "password": PASSWORD}
        )
        assert reply.status_code == 303, reply.text
        query = parse_qs(urlsplit(reply.headers["location"]).query)
        assert query["state"] == ["xyz"]
        assert query["iss"] == [ISSUER]
        return query["code"][0]

    async def user_token(self, **kwargs: Any) -> str:
        code = await self.sign_in(**kwargs)
        reply = await self.post_token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "client_id": "app",
                "code_verifier": VERIFIER,
            }
        )
        assert reply.status_code == 200, reply.text
        return str(reply.json()["access_token"])


def make_config(
    *, secret_hash_b: str | None = None, **overrides: Any
) -> tuple[TokenServiceConfig, dict[str, SigningKey]]:
    """The three agents' service (``secret_hash_b``: another hash of b's secret)."""
    keys = {name: SigningKey.generate("ES256") for name in ("a", "c")}
    keys["a-other"] = SigningKey.generate("ES256")
    data: dict[str, Any] = {
        "issuer": ISSUER,
        "agents": [
            {
                "client_id": "a",
                "resource": A,
                "auth": "private_key_jwt",
                "jwks": {"keys": [keys["a"].public_jwk()]},
                "scopes": ["read", "write", "admin"],
                "dependencies": [B, C],
            },
            {
                "client_id": "b",
                "resource": B,
                "auth": "client_secret",
                "secret_hash": secret_hash_b or hash_secret(SECRET_B, cost=2**4),
                "scopes": ["read", "write"],
                "dependencies": [C, A],
                "may_act_first": False,
            },
            {
                "client_id": "c",
                "resource": C,
                "auth": "private_key_jwt",
                "jwks": {"keys": [keys["c"].public_jwk()]},
                "scopes": ["read"],
                "dependencies": [D, B],
            },
        ],
        "resources": [{"resource": D, "scopes": ["read"]}],
        "users": [{"username": "alice", "password": PASSWORD, "scopes": ["read", "write"]}],
        "clients": [{"client_id": "app", "redirect_uris": [REDIRECT]}],
    }
    # Throttled answers come back without the tarpit delay (a real second each, which
    # would only slow the tests); every other limit keeps its real default.
    limits = {"throttle_delay": 0, **overrides.pop("limits", {})}
    data.update(overrides, limits=limits)
    return parse_config(data), keys


@asynccontextmanager
async def open_world(*, audit: AuditStore | None = None, **overrides: Any) -> AsyncIterator[World]:
    config, keys = make_config(**overrides)
    clock = Clock()
    service = TokenService(config, clock=clock, audit=audit)
    async with service.app.router.lifespan_context(service.app):
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
            yield World(service=service, client=client, clock=clock, keys=keys)


def claims_of(token: str) -> dict[str, Any]:
    """Decode a JWT payload WITHOUT verifying (only for asserting on what we issued)."""
    import json

    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
