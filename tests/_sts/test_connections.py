"""Connections end to end at the token service, against a real upstream OAuth server.

The upstream is npm ``oidc-provider`` (``tests/interop_oidc/upstream.mjs``) on loopback,
issuing JWT access tokens for one API and rotating refresh tokens; the API is a small
server on loopback that accepts only those tokens. The token service runs in process
(its pages and token endpoint through ``httpx.ASGITransport``), with an injected clock so
that an upstream token can be made due for refresh without waiting.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from span_support import recorded_spans
from sts_support import AT, EXCHANGE, JWT_BEARER, Clock, claims_of
from upstream_support import (
    CLIENT_ID,
    Upstream,
    api_app,
    connect,
    requires_node,
    run_upstream,
    sign_in_connections,
    start_connect,
    through_provider,
)

from keycard_agents.auth import CLIENT_ASSERTION_TYPE, SigningKey
from keycard_agents.sts import (
    AuditRecord,
    MemoryAuditStore,
    TokenService,
    hash_secret,
    parse_config,
)
from keycard_agents.testing import free_loopback_socket, serve_on_loopback

pytestmark = [pytest.mark.anyio, pytest.mark.slow, requires_node]

STS = "http://127.0.0.1:9"  # never dialled: the browser and agents reach it in process
CALLBACK = f"{STS}/connections/callback"
AGENT_A = "https://a.example/"
AGENT_B = "https://b.example/"
SECRET_ENV = "KEYCARD_TEST_UPSTREAM_SECRET"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-2", "carol": "carol-password-3"}
STATIC_API = "https://weather.example/"


@dataclass
class Deployment:
    upstream: Upstream
    api: str
    api_calls: list[str]


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    api_sock, api_url = free_loopback_socket()
    api = api_url + "/"
    with ExitStack() as stack:
        upstream = stack.enter_context(run_upstream(redirect_uri=CALLBACK, api=api, access_ttl=600))
        app = api_app(issuer=upstream.issuer, audience=api, jwks=upstream.jwks())
        stack.enter_context(serve_on_loopback(app, api_sock))
        yield Deployment(upstream, api, app.state.calls)


@dataclass
class World:
    service: TokenService
    clock: Clock
    http: httpx.AsyncClient
    key: SigningKey
    audit: MemoryAuditStore
    deployment: Deployment

    def browser(self) -> httpx.AsyncClient:
        """A fresh browser (its own cookie jar): our service in process, the rest real."""
        transport = httpx.ASGITransport(app=self.service.app)
        return httpx.AsyncClient(mounts={STS: transport}, timeout=20, follow_redirects=False)

    def user_token(self, user: str) -> str:
        return self.service.issue_user_token(user, audience=AGENT_A, scopes=["read"])

    async def exchange(
        self, subject: str, resource: str, *, client: str = "a", **extra: str
    ) -> httpx.Response:
        now = int(self.clock())
        if client == "a":
            assertion = self.key.sign(
                {
                    "iss": "a",
                    "sub": "a",
                    "aud": STS,
                    "iat": now,
                    "exp": now + 60,
                    "jti": secrets.token_hex(8),
                },
                typ=CLIENT_ASSERTION_TYPE,
            )
            auth = {"client_assertion_type": JWT_BEARER, "client_assertion": assertion}
        else:
            auth = {"client_id": "b", "client_secret": "b-secret-0123456789"}
        form = {
            "grant_type": EXCHANGE,
            "subject_token": subject,
            "subject_token_type": AT,
            "resource": resource,
            **auth,
            **extra,
        }
        return await self.http.post("/token", data=form)

    async def connect(self, user: str) -> httpx.Response:
        async with self.browser() as browser:
            page = await connect(browser, STS, "github", user=user, password=PASSWORDS[user])
        assert page.status_code == 200, page.text
        return page

    async def stored(self, user: str) -> Any:
        assert self.service.vault is not None
        return await self.service.vault.get(STS, user, "github")


def _config(api: str, upstream: Upstream) -> dict[str, Any]:
    return {
        "issuer": STS,
        "limits": {"throttle_delay": 0},
        "agents": [
            {
                "client_id": "a",
                "resource": AGENT_A,
                "auth": "private_key_jwt",
                "jwks": {"keys": []},  # replaced below
                "scopes": ["read"],
                "dependencies": [api, STATIC_API],
            },
            {
                "client_id": "b",
                "resource": AGENT_B,
                "auth": "client_secret",
                "secret_hash": hash_secret("b-secret-0123456789", cost=2**4),
                "scopes": ["read"],
            },
        ],
        "users": [
            {"username": name, "password": password, "scopes": ["read"]}
            for name, password in PASSWORDS.items()
        ],
        "connections": [
            {
                "name": "github",
                "display_name": "GitHub (test)",
                "issuer": upstream.issuer,
                "client_id": CLIENT_ID,
                "client_secret_env": SECRET_ENV,
                "scopes": ["repo", "read:user"],
                "resources": [api],
            },
            {"name": "weather", "kind": "static", "resources": [STATIC_API]},
        ],
    }


@asynccontextmanager
async def open_world(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    monkeypatch.setenv(SECRET_ENV, deployment.upstream.client_secret)
    key = SigningKey.generate("ES256")
    data = _config(deployment.api, deployment.upstream)
    data["agents"][0]["jwks"] = {"keys": [key.public_jwk()]}
    clock = Clock(__import__("time").time())
    audit = MemoryAuditStore()
    service = TokenService(parse_config(data), clock=clock, audit=audit)
    async with service.app.router.lifespan_context(service.app):
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url=STS) as http:
            yield World(service, clock, http, key, audit, deployment)


def _user(prefix: str) -> str:
    """A user name no other test uses (the provider keeps its grants per account)."""
    return prefix  # our dev users are fixed; the provider's account is the login name


async def _call_api(url: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url + "user", headers={"Authorization": f"Bearer {token}"})


async def test_connect_then_exchange_returns_the_users_upstream_token(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_world(deployment, monkeypatch) as w:
        user_token = w.user_token("alice")
        txn = claims_of(user_token)["txn"]
        before = await w.exchange(user_token, deployment.api)
        assert before.status_code == 400
        body = before.json()
        assert body["error"] == "consent_required"
        assert body["error_uri"] == f"{STS}/connections/github/connect?txn={txn}"

        page = await w.connect("alice")
        assert "connected" in page.text

        reply = await w.exchange(user_token, deployment.api)
        assert reply.status_code == 200, reply.text
        issued = reply.json()
        assert issued["issued_token_type"] == AT
        assert issued["token_type"] == "Bearer"
        assert 0 < issued["expires_in"] <= 600
        assert issued["scope"] == "repo read:user"
        claims = claims_of(issued["access_token"])
        assert claims["iss"] == deployment.upstream.issuer  # the provider's token, not ours
        assert claims["aud"] == deployment.api
        api = await _call_api(deployment.api, issued["access_token"])
        assert api.status_code == 200, api.text
        assert api.json()["login"] == "alice"
        # Our own tokens are not accepted by the third-party API.
        ours = await _call_api(deployment.api, user_token)
        assert ours.status_code == 401

        records = await w.audit.query(user="alice")
        kinds = [(r.grant_type, r.decision) for r in records]
        assert ("connection:connect", "issued") in kinds
        assert kinds[-1] == (EXCHANGE, "issued")
        assert records[-1].target == deployment.api
        assert records[-1].txn == txn
        assert records[-1].jti is not None
        assert records[-1].jti.startswith("sha256:")


async def test_exactly_one_refresh_under_fifty_concurrent_exchanges(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_world(deployment, monkeypatch) as w:
        await w.connect("bob")
        first = await w.stored("bob")
        user_token = w.user_token("bob")
        refreshes = deployment.upstream.refreshes()
        w.clock.advance(600 - 30)  # within the refresh margin of the upstream token's expiry
        replies: list[httpx.Response] = []

        async def one() -> None:
            replies.append(await w.exchange(user_token, deployment.api))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(one)
        assert [r.status_code for r in replies] == [200] * 50, replies[0].text
        tokens = {r.json()["access_token"] for r in replies}
        assert len(tokens) == 1
        assert tokens != {first.access_token}
        assert deployment.upstream.refreshes() == refreshes + 1
        assert w.service.connections is not None
        assert w.service.connections.stats.refreshes == 1
        second = await w.stored("bob")
        assert second.refresh_token != first.refresh_token  # rotated
        api = await _call_api(deployment.api, tokens.pop())
        assert api.status_code == 200
        refreshed = [
            r for r in await w.audit.query(user="bob") if r.grant_type == "connection:refresh"
        ]
        assert len(refreshed) == 1
        assert refreshed[0].decision == "issued"


async def test_disconnect_revokes_and_the_next_exchange_needs_consent(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_world(deployment, monkeypatch) as w:
        await w.connect("carol")
        grant = await w.stored("carol")
        user_token = w.user_token("carol")
        assert (await w.exchange(user_token, deployment.api)).status_code == 200
        async with w.browser() as browser:
            await sign_in_connections(browser, STS, user="carol", password=PASSWORDS["carol"])
            listing = await browser.get(f"{STS}/connections")
            assert "GitHub (test)</b>: connected" in listing.text
            csrf = listing.text.split("name='csrf' value='")[1].split("'")[0]
            stale = await browser.post(f"{STS}/connections/github/disconnect", data={"csrf": "x"})
            assert stale.status_code == 403
            done = await browser.post(f"{STS}/connections/github/disconnect", data={"csrf": csrf})
            assert done.status_code == 200
            outcome = re.findall("role='status'>([^<]*)", done.text)
            assert outcome == ["GitHub (test): disconnected and revoked at the provider."]
        assert await w.stored("carol") is None
        # The provider no longer honours the refresh token (RFC 7009).
        async with httpx.AsyncClient(timeout=10) as http:
            reuse = await http.post(
                deployment.upstream.issuer + "/token",
                data={"grant_type": "refresh_token", "refresh_token": grant.refresh_token},
                auth=(CLIENT_ID, deployment.upstream.client_secret),
            )
        assert reuse.status_code == 400
        assert reuse.json()["error"] == "invalid_grant"
        after = await w.exchange(user_token, deployment.api)
        assert after.status_code == 400
        assert after.json()["error"] == "consent_required"
        assert after.json()["error_uri"].startswith(f"{STS}/connections/github/connect")
        # Connecting again makes the same request succeed.
        await w.connect("carol")
        assert (await w.exchange(user_token, deployment.api)).status_code == 200
        events = [r.grant_type for r in await w.audit.query(user="carol")]
        assert "connection:disconnect" in events


async def test_a_grant_revoked_upstream_becomes_consent_needed(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_world(deployment, monkeypatch) as w:
        await w.connect("alice")
        grant = await w.stored("alice")
        async with httpx.AsyncClient(timeout=10) as http:
            revoked = await http.post(
                deployment.upstream.issuer + "/token/revocation",
                data={"token": grant.refresh_token, "token_type_hint": "refresh_token"},
                auth=(CLIENT_ID, deployment.upstream.client_secret),
            )
        assert revoked.status_code == 200
        w.clock.advance(590)
        reply = await w.exchange(w.user_token("alice"), deployment.api)
        assert reply.status_code == 400
        assert reply.json()["error"] == "consent_required"
        assert await w.stored("alice") is None
        denied = [r for r in await w.audit.query(user="alice") if r.decision == "denied"]
        assert denied[0].grant_type == "connection:refresh"
        assert denied[0].error == "consent_required"


async def test_static_key_connection(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_world(deployment, monkeypatch) as w:
        async with w.browser() as browser:
            await sign_in_connections(browser, STS, user="alice", password=PASSWORDS["alice"])
            form = await browser.get(f"{STS}/connections/weather/connect")
            assert form.status_code == 200
            assert "name='key'" in form.text
            csrf = form.text.split("name='csrf' value='")[1].split("'")[0]
            bad = await browser.post(
                f"{STS}/connections/weather/key", data={"csrf": csrf, "key": "two words"}
            )
            assert bad.status_code == 400
            saved = await browser.post(
                f"{STS}/connections/weather/key", data={"csrf": csrf, "key": "wk-123456"}
            )
            assert saved.status_code == 200
        reply = await w.exchange(w.user_token("alice"), STATIC_API)
        assert reply.status_code == 200, reply.text
        assert reply.json()["access_token"] == "wk-123456"
        assert reply.json()["expires_in"] == 300
        # the audit names the connection that answered, and never the key itself
        (issued,) = [r for r in await w.audit.query(user="alice") if r.grant_type == EXCHANGE]
        assert (issued.decision, issued.connection, issued.target) == (
            "issued",
            "weather",
            STATIC_API,
        )
        assert issued.jti is not None
        assert issued.jti.startswith("sha256:")
        assert "wk-123456" not in repr(issued)


# -- hostile cases -------------------------------------------------------------------------


async def test_state_replay_and_unknown_state_are_refused(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_world(deployment, monkeypatch) as w:
        async with w.browser() as browser:
            location = await start_connect(
                browser, STS, "github", user="alice", password=PASSWORDS["alice"]
            )
            callback = await through_provider(browser, location, user="alice")
            first = await browser.get(callback)
            assert first.status_code == 200
            replay = await browser.get(callback)
            assert replay.status_code == 400
            assert "unknown, expired or already used" in replay.text
            forged = await browser.get(f"{STS}/connections/callback?state=forged&code=x")
            assert forged.status_code == 400
        assert w.service.connections is not None
        assert w.service.connections.stats.connects == 1


async def test_callback_in_another_session_or_for_another_user_stores_nothing(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_world(deployment, monkeypatch) as w:
        async with w.browser() as alice, w.browser() as mallory:
            location = await start_connect(
                alice, STS, "github", user="alice", password=PASSWORDS["alice"]
            )
            callback = await through_provider(alice, location, user="alice")
            # Mallory (signed in as bob) is made to open alice's callback.
            await sign_in_connections(mallory, STS, user="bob", password=PASSWORDS["bob"])
            stolen = await mallory.get(callback)
            assert stolen.status_code == 403
            assert "another sign-in session" in stolen.text
            # ... and the state is spent: alice's own browser cannot finish it either.
            late = await alice.get(callback)
            assert late.status_code == 400
        assert await w.stored("alice") is None
        assert w.service.vault is not None
        assert await w.service.vault.get(STS, "bob", "github") is None


async def test_a_code_injected_from_another_session_is_refused(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_world(deployment, monkeypatch) as w:
        async with w.browser() as victim, w.browser() as attacker:
            victim_location = await start_connect(
                victim, STS, "github", user="alice", password=PASSWORDS["alice"]
            )
            victim_state = parse_qs(urlsplit(victim_location).query)["state"][0]
            attacker_location = await start_connect(
                attacker, STS, "github", user="bob", password=PASSWORDS["bob"]
            )
            attacker_callback = await through_provider(attacker, attacker_location, user="bob")
            code = parse_qs(urlsplit(attacker_callback).query)["code"][0]
            iss = deployment.upstream.issuer
            injected = await victim.get(
                f"{STS}/connections/callback",
                params={"state": victim_state, "code": code, "iss": iss},
            )
            assert injected.status_code == 400
            assert "invalid_grant" in injected.text  # PKCE: the code was not issued to this flow
            assert "Nothing was stored" in injected.text
        assert await w.stored("alice") is None
        assert w.service.vault is not None
        assert await w.service.vault.get(STS, "bob", "github") is None


async def test_policy_applies_to_connections(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_world(deployment, monkeypatch) as w:
        await w.connect("alice")
        token = w.user_token("alice")
        # b did not declare the API (and the token was not sent to b).
        b_token = w.service.issue_user_token("alice", audience=AGENT_B, scopes=["read"])
        undeclared = await w.exchange(b_token, deployment.api, client="b")
        assert undeclared.status_code == 400
        assert undeclared.json()["error"] == "invalid_target"
        beyond = await w.exchange(token, deployment.api, scope="repo admin:org")
        assert beyond.status_code == 400
        assert beyond.json()["error"] == "invalid_scope"
        narrowed = await w.exchange(token, deployment.api, scope="read:user")
        assert narrowed.status_code == 200
        assert narrowed.json()["scope"] == "read:user"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span the test makes, kept in memory (the SDK provider installed globally)."""
    with recorded_spans() as memory:
        yield memory


def _span_text(memory: InMemorySpanExporter) -> str:
    out = []
    for span in memory.get_finished_spans():
        out.append(span.name)
        out.extend(f"{k}={v!r}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            out.append(event.name)
            out.extend(f"{k}={v!r}" for k, v in (event.attributes or {}).items())
        out.append(span.status.description or "")
    return "\n".join(out)


async def test_no_token_or_secret_in_logs_audit_spans_pages_or_errors(
    deployment: Deployment,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    spans: InMemorySpanExporter,
) -> None:
    caplog.set_level(logging.DEBUG, logger="keycard_agents")
    seen: list[str] = []
    async with open_world(deployment, monkeypatch) as w:
        seen.append((await w.connect("alice")).text)
        token = w.user_token("alice")
        seen.append((await w.exchange(token, deployment.api, scope="nope")).text)
        grant = await w.stored("alice")
        w.clock.advance(590)
        refreshed = await w.exchange(token, deployment.api)
        assert refreshed.status_code == 200
        fresh = await w.stored("alice")
        async with w.browser() as browser:
            await sign_in_connections(browser, STS, user="alice", password=PASSWORDS["alice"])
            listing = await browser.get(f"{STS}/connections")
            seen.append(listing.text)
            csrf = listing.text.split("name='csrf' value='")[1].split("'")[0]
            seen.append(
                (
                    await browser.post(f"{STS}/connections/github/disconnect", data={"csrf": csrf})
                ).text
            )
        seen.append((await w.exchange(token, deployment.api)).text)
        records: list[AuditRecord] = await w.audit.query()
        seen.extend(r.model_dump_json() for r in records)
        seen.append(repr(grant))
        seen.append(repr(w.service.connections))
    seen.append(caplog.text)
    span_text = _span_text(spans)
    assert "token service policy" in span_text  # the token service's spans were recorded
    seen.append(span_text)
    everything = "\n".join(seen)
    secrets_ = {
        "upstream access token": grant.access_token,
        "upstream refresh token": grant.refresh_token,
        "refreshed access token": fresh.access_token,
        "refreshed refresh token": fresh.refresh_token,
        "upstream client secret": deployment.upstream.client_secret,
        "user password": PASSWORDS["alice"],
    }
    for what, value in secrets_.items():
        assert value, what
        assert value not in everything, f"the {what} leaked"


async def test_login_csrf_and_foreign_origins_are_refused(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_world(deployment, monkeypatch) as w, w.browser() as browser:
        # A sign-in form posted from elsewhere (no login cookie, or another site's Origin).
        forged = await browser.post(
            f"{STS}/connections/signin",
            data={"username": "bob", "password": PASSWORDS["bob"], "login_csrf": "guess"},
        )
        assert forged.status_code == 403
        assert "keycard_connections" not in forged.cookies
        other_site = await browser.post(
            f"{STS}/connections/signin",
            data={"username": "bob", "password": PASSWORDS["bob"]},
            headers={"Origin": "https://evil.example"},
        )
        assert other_site.status_code == 403
        signed_in = await sign_in_connections(
            browser, STS, user="alice", password=PASSWORDS["alice"]
        )
        assert signed_in.status_code == 303
        page = await browser.get(f"{STS}/connections")
        assert "Signed in as <b>alice</b>" in page.text
        cross = await browser.post(
            f"{STS}/connections/weather/key",
            data={"csrf": page.text.split("name='csrf' value='")[1].split("'")[0], "key": "k"},
            headers={"Origin": "https://evil.example"},
        )
        assert cross.status_code == 403
    assert w.service.vault is not None
    assert await w.service.vault.get(STS, "alice", "weather") is None
