"""Client authentication (``_clientauth``): the edges a mutation run showed no test
pinned (``dev.py mutation sts``, docs/testing.md)."""

from __future__ import annotations

import base64
import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from sts_support import (
    ISSUER,
    JWT_BEARER,
    PASSWORD,
    REDIRECT,
    VERIFIER,
    A,
    Clock,
    World,
    make_config,
    open_world,
)

from keycard_agents import OAuthError
from keycard_agents._jose._keys import StaticKeys
from keycard_agents._sts._clientauth import ClientAuthenticator  # internal: the module's API
from keycard_agents._sts._config import RegisteredAgent
from keycard_agents._sts._forms import oauth_error_response, read_form
from keycard_agents._sts._shared import SharedServiceState  # internal: the replicas' protocol
from keycard_agents.auth import CLIENT_ASSERTION_TYPE
from keycard_agents.sts import MemoryAuditStore, TokenService, hash_secret, pkce_challenge

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("user_id", "seen"),
    [("team+b", "team b"), ("team%2Bb", "team+b"), ("a%3Ab", "a:b")],
)
async def test_a_basic_client_id_is_form_decoded(user_id: str, seen: str) -> None:
    """RFC 6749 §2.3.1: the client id is form-urlencoded before base64, so ``+`` is a
    space and ``%2B`` a plus; the audit names the client id as decoded."""
    async with open_world() as w:
        raw = base64.b64encode(f"{user_id}:secret".encode()).decode()
        reply = await w.post_token(
            {"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {raw}"}
        )
        (record,) = await w.service.audit.query()
    assert reply.status_code == 401
    assert reply.json()["error"] == "invalid_client"
    assert record.reason == f"unknown client {seen!r}"


def _basic(user_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def test_a_basic_secret_is_form_decoded() -> None:
    """A secret with a space and a plus, sent as RFC 6749 §2.3.1 asks: ``+`` and ``%2B``."""
    secret = "two words+one plus 0123456789abcdef"
    agent = {
        "client_id": "s",
        "resource": "https://s.example/",
        "auth": "client_secret",
        "secret_hash": hash_secret(secret, cost=2**4),
    }
    async with open_world(agents=[agent]) as w:
        grant = {"grant_type": "client_credentials"}
        encoded = secret.replace("+", "%2B").replace(" ", "+")
        ok = await w.post_token(grant, headers=_basic("s", encoded))
        raw_plus = await w.post_token(grant, headers=_basic("s", secret.replace(" ", "+")))
    assert ok.status_code == 200, ok.text
    assert raw_plus.status_code == 401  # an unencoded '+' is a space: another secret


async def test_failed_basic_authentications_are_charged_to_their_source() -> None:
    """30 failures from one address, each for another client id (no account reaches its
    own limit), and that address waits, whatever client it names next."""
    async with open_world(limits={"failed_auth_per_source": 30}) as w:
        grant = {"grant_type": "client_credentials"}
        statuses = [
            (await w.post_token(grant, headers=_basic(f"guess-{i}", "x"))).status_code
            for i in range(30)
        ]
        throttled = await w.post_token(grant, headers=_basic("b", "wrong"))
    assert statuses == [401] * 30
    assert throttled.status_code == 429
    assert throttled.json()["error"] == "temporarily_unavailable"
    assert "too many failed attempts from this address" in throttled.json()["error_description"]


async def test_failed_posted_client_secrets_are_charged_to_their_source() -> None:
    """The same for ``client_secret_post``: 30 wrong secrets from one address, each for
    another client id, and that address waits, even with the right secret of b."""
    async with open_world(limits={"failed_auth_per_source": 30}) as w:
        grant = {"grant_type": "client_credentials"}
        statuses = [
            (
                await w.post_token({**grant, "client_id": f"guess-{i}", "client_secret": "x"})
            ).status_code
            for i in range(30)
        ]
        throttled = await w.post_token({**grant, **w.auth("b")})
    assert statuses == [401] * 30
    assert throttled.status_code == 429
    assert "too many failed attempts from this address" in throttled.json()["error_description"]


def _assertion_of_length(w: World, length: int) -> str:
    """A valid client assertion of agent a, padded with a claim to exactly ``length``
    (base64url cannot make every length: the header's ``typ`` varies too, and both
    forms are accepted)."""
    now = int(w.clock())
    for pad, typ in itertools.product(range(length), (CLIENT_ASSERTION_TYPE, "JWT")):
        claims = {
            "iss": "a",
            "sub": "a",
            "aud": ISSUER,
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
            "pad": "p" * pad,
        }
        assertion = w.keys["a"].sign(claims, typ=typ)
        if len(assertion) == length:
            return assertion
    raise AssertionError(f"no assertion of {length} characters")


@pytest.mark.parametrize(("length", "status"), [(8192, 200), (8194, 401)])
async def test_a_client_assertion_may_be_8_kib_long(length: int, status: int) -> None:
    async with open_world() as w:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": _assertion_of_length(w, length),
        }
        reply = await w.post_token(form)
        records = await w.service.audit.query()
    assert reply.status_code == status, reply.text
    if status == 401:
        assert records[-1].reason == "client_assertion is too large"


# -- the replay check in the replicas' shared state -----------------------------------------


class _SharedReplay:
    """The replay half of a shared state (what Redis does with ``SET NX PXAT``, in a
    dict): ``first_use`` is true once per (client, jti) until the given expiry."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.seen: dict[tuple[str, str], float] = {}
        self.calls: list[tuple[str, str, float]] = []

    async def first_use(self, client_id: str, jti: str, expires_at: float) -> bool:
        self.calls.append((client_id, jti, expires_at))
        key = (client_id, jti)
        until = float(expires_at)  # Redis takes it as milliseconds: a number, or an error
        if key in self.seen and self.seen[key] > self._clock():
            return False
        self.seen[key] = until
        return True


@asynccontextmanager
async def _replicated_world() -> AsyncIterator[tuple[World, _SharedReplay]]:
    """A token service whose client-assertion replay set is the replicas' shared one."""
    config, keys = make_config()
    clock = Clock()
    store = _SharedReplay(clock)
    service = TokenService(
        config,
        clock=clock,
        audit=MemoryAuditStore(),
        shared=cast(SharedServiceState, store),
    )
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield World(service=service, client=client, clock=clock, keys=keys), store


async def _credentials(w: World, client_id: str, jti: str) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": w.assertion(client_id, jti=jti, lifetime=60),
    }
    return await w.post_token(form)


async def test_with_replicas_a_jti_is_used_once_per_client_in_the_shared_state() -> None:
    """With a shared state (Redis), the replay check is the shared one: asked with the
    client, the jti and the last second the assertion is accepted (``exp`` + leeway);
    a jti is unique per client (RFC 7523 §3), and the local cache is not consulted."""
    async with _replicated_world() as (w, store):
        exp = int(w.clock()) + 60
        first = await _credentials(w, "a", "j1")
        other_jti = await _credentials(w, "a", "j2")
        other_client = await _credentials(w, "c", "j1")
        replayed = await _credentials(w, "a", "j1")
        records = await w.service.audit.query()
    assert [r.status_code for r in (first, other_jti, other_client)] == [200] * 3
    assert replayed.status_code == 401
    assert replayed.json()["error"] == "invalid_client"
    assert records[-1].reason == (
        "client_assertion jti 'j1' was already used: sign a fresh assertion (new jti) for "
        "every request"
    )
    until = exp + 30
    assert store.calls == [
        ("a", "j1", until),
        ("a", "j2", until),
        ("c", "j1", until),
        ("a", "j1", until),
    ]
    # the process's own cache never saw the jti: the shared state alone decides
    assert w.service.clients.replay.check_and_remember("a", "j1", until)


async def test_with_replicas_a_replay_inside_the_leeway_after_exp_is_refused() -> None:
    """The assertion is accepted until ``exp`` + leeway (30 s), so the shared state must
    remember its jti that long: a replay 10 s after ``exp`` is still a replay."""
    async with _replicated_world() as (w, _):
        assertion = w.assertion("a", lifetime=60)
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion,
        }
        first = await w.post_token(form)
        w.clock.advance(70)  # 10 s past exp, inside the 30 s leeway
        replayed = await w.post_token(form)
        w.clock.advance(21)  # 31 s past exp: the assertion itself has expired
        expired = await w.post_token(form)
        records = await w.service.audit.query()
    assert first.status_code == 200
    assert replayed.status_code == 401
    assert "was already used" in (records[-2].reason or "")
    assert expired.status_code == 401
    assert (records[-1].reason or "").startswith("client_assertion rejected (expired)")


# -- a ClientAuthenticator with only its required arguments ------------------------------------


def _authenticating_app(auth: ClientAuthenticator) -> Starlette:
    async def token(request: Request) -> Response:
        try:
            client = await auth.authenticate(request, await read_form(request))
        except OAuthError as exc:
            return oauth_error_response(exc)
        return JSONResponse({"client_id": client.client_id, "method": client.method})

    return Starlette(routes=[Route("/token", token, methods=["POST"])])


async def test_a_client_authenticator_made_with_its_defaults() -> None:
    """Its defaults: the configured public clients, a 30 s leeway, and a throttle of
    its own with the configured limits (the service passes its own of each)."""
    config, keys = make_config(limits={"failed_auth_per_account": 3})
    clock = Clock()

    def agent_keys(agent: RegisteredAgent) -> StaticKeys:
        assert agent.jwks is not None
        return StaticKeys({agent.client_id: agent.jwks})

    auth = ClientAuthenticator(config=config, issuer=ISSUER, clock=clock, agent_keys=agent_keys)
    now = int(clock())
    late = [
        keys["a"].sign(
            {"iss": "a", "sub": "a", "aud": ISSUER, "iat": now, "exp": now + 60, "jti": jti},
            typ=CLIENT_ASSERTION_TYPE,
        )
        for jti in ("late-1", "late-2")
    ]
    transport = httpx.ASGITransport(app=_authenticating_app(auth))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        public = await client.post("/token", data={"client_id": "app"})
        form = {"client_assertion_type": JWT_BEARER}
        clock.advance(60 + 29.5)  # inside the leeway after exp
        within = await client.post("/token", data={**form, "client_assertion": late[0]})
        clock.advance(1)  # 30.5 s after exp: beyond it
        beyond = await client.post("/token", data={**form, "client_assertion": late[1]})
        wrong = [
            (await client.post("/token", data={"client_id": "b", "client_secret": "x"})).status_code
            for _ in range(4)
        ]
    assert public.json() == {"client_id": "app", "method": "none"}
    assert within.json() == {"client_id": "a", "method": "private_key_jwt"}
    assert beyond.status_code == 401
    assert beyond.json()["error"] == "invalid_client"
    assert wrong == [401, 401, 401, 429]


async def test_failed_client_secrets_and_passwords_share_one_budget_per_source() -> None:
    """One throttle for every credential the service checks: guesses at client
    secrets and at user passwords from one address add up."""
    async with open_world(limits={"failed_auth_per_source": 30}) as w:
        secrets = [
            (
                await w.post_token(
                    {"grant_type": "client_credentials"}, headers=_basic(f"guess-{i}", "x")
                )
            ).status_code
            for i in range(15)
        ]
        params = {
            "response_type": "code",
            "client_id": "app",
            "redirect_uri": REDIRECT,
            "code_challenge": pkce_challenge(VERIFIER),
            "code_challenge_method": "S256",
            "resource": A,
            "scope": "read",
        }
        passwords = [
            (
                await w.client.post(
                    "/authorize", data={**params, "username": f"user-{i}", "password": "guess"}
                )
            ).status_code
            for i in range(15)
        ]
        alice = await w.client.post(
            "/authorize", data={**params, "username": "alice", "password": PASSWORD}
        )
    assert secrets == [401] * 15
    assert passwords == [401] * 15
    assert alice.status_code == 429


async def test_a_client_assertion_without_its_type_is_refused_as_such() -> None:
    """A ``client_assertion`` alone is an attempt at private_key_jwt: it is told the
    missing ``client_assertion_type``, not that no authentication was sent; beside a
    client secret it is a second method."""
    async with open_world() as w:
        grant = {"grant_type": "client_credentials"}
        alone = await w.post_token({**grant, "client_assertion": w.assertion("a")})
        both = await w.post_token({**grant, **w.auth("b"), "client_assertion": w.assertion("a")})
    assert alone.status_code == 400
    assert alone.json() == {
        "error": "invalid_request",
        "error_description": f"client_assertion_type must be {JWT_BEARER} (RFC 7523 §2.2)",
    }
    assert both.status_code == 400
    assert both.json()["error_description"] == (
        "more than one client authentication method in one request: use exactly one"
    )
