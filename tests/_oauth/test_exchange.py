"""The RFC 8693 exchange client against a scripted token service (httpx.MockTransport)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx
import pytest
from anyio import wait_all_tasks_blocked
from joserfc import jwt
from joserfc.jwk import KeySet

from keycard_agents import (
    ClientSecret,
    ConfigurationError,
    DelegationDeniedError,
    InteractionRequiredError,
    InvalidTokenError,
    IssuerUnreachableError,
    TransportError,
    WebIdentity,
)
from keycard_agents._oauth._exchange import ACCESS_TOKEN_TYPE_URN, TOKEN_EXCHANGE_GRANT
from keycard_agents.auth import ExchangedToken, InvalidTokenResponseError, TokenExchangeClient
from keycard_agents.sts import TokenService, hash_secret, parse_config

ISSUER = "https://sts.example"
TOKEN_URL = "https://sts.example/oauth/token"
TARGET = "https://calendar.example/a2a"
OTHER = "https://mail.example/a2a"

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def fake_jwt(**claims: Any) -> str:
    """A JWT-shaped token (unsigned: the client reads it without verifying)."""

    def seg(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims.setdefault("jti", str(uuid.uuid4()))
    return f"{seg({'alg': 'ES256', 'typ': 'at+jwt'})}.{seg(claims)}.c2ln"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """Records backoff sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class FakeTokenService:
    """Serves RFC 8414 metadata and a token endpoint whose answers a test scripts."""

    def __init__(self, *, issuer: str = ISSUER, metadata_path: str | None = None) -> None:
        self.issuer = issuer
        self.metadata_path = metadata_path or "/.well-known/oauth-authorization-server"
        self.metadata: dict[str, Any] = {"issuer": issuer, "token_endpoint": TOKEN_URL}
        self.token_requests: list[httpx.Request] = []
        self.metadata_requests: list[httpx.Request] = []
        self.answers: list[Callable[[httpx.Request], Awaitable[httpx.Response]]] = []
        self.expires_in: Any = 300
        self.gate: anyio.Event | None = None

    def forms(self) -> list[dict[str, str]]:
        return [
            {k: v[0] for k, v in parse_qs(r.content.decode(), keep_blank_values=True).items()}
            for r in self.token_requests
        ]

    def default_answer(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        body: dict[str, Any] = {
            "access_token": fake_jwt(sub="alice", aud=form.get("resource")),
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        if form["grant_type"] == TOKEN_EXCHANGE_GRANT:
            body["issued_token_type"] = ACCESS_TOKEN_TYPE_URN
        if "scope" in form:
            body["scope"] = form["scope"]
        return httpx.Response(200, json=body)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            self.metadata_requests.append(request)
            if request.url.path == self.metadata_path:
                return httpx.Response(200, json=self.metadata)
            return httpx.Response(404, json={"error": "not found"})
        assert str(request.url) == TOKEN_URL, request.url
        self.token_requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.answers:
            return await self.answers.pop(0)(request)
        return self.default_answer(request)

    def then(self, *responses: httpx.Response | type[Exception] | float) -> None:
        """Script the next answers: a response, an httpx exception class, or a delay."""
        for item in responses:

            async def answer(request: httpx.Request, item: Any = item) -> httpx.Response:
                if isinstance(item, httpx.Response):
                    return item
                if isinstance(item, float):
                    await anyio.sleep(item)
                    return self.default_answer(request)
                raise item("scripted failure", request=request)

            self.answers.append(answer)


@pytest.fixture
def sts() -> FakeTokenService:
    return FakeTokenService()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_client(
    sts: FakeTokenService,
    clock: Clock,
    sleeps: Sleeps,
    *,
    credential: Any = None,
    issuer: str = ISSUER,
    **options: Any,
) -> TokenExchangeClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(sts))
    return TokenExchangeClient(
        issuer=issuer,
        credential=credential or ClientSecret("planner", "planner-secret"),
        http_client=http,
        clock=clock,
        sleep=sleeps,
        **options,
    )


def oauth_error(status: int, error: str, description: str = "") -> httpx.Response:
    return httpx.Response(status, json={"error": error, "error_description": description})


# --------------------------------------------------------------------------- the request


@pytest.mark.anyio
async def test_exchange_sends_exact_rfc8693_form(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    subject = fake_jwt(sub="alice", exp=clock.now + 3600)
    async with make_client(sts, clock, sleeps) as client:
        token = await client.exchange(subject, resource=TARGET, scopes=["write", "read", "read"])
    (form,) = sts.forms()
    assert form == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": subject,
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "resource": TARGET,
        "scope": "read write",
    }
    request = sts.token_requests[0]
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    basic = base64.b64encode(b"planner:planner-secret").decode()
    assert request.headers["Authorization"] == f"Basic {basic}"
    assert token.scopes == ("read", "write")
    assert token.resource == TARGET
    assert token.issued_token_type == ACCESS_TOKEN_TYPE_URN
    assert token.expires_at == clock.now + 300
    assert token.authorization == f"Bearer {token.access_token}"
    assert token.access_token not in repr(token)


@pytest.mark.anyio
async def test_exchange_without_scopes_sends_no_scope(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    async with make_client(sts, clock, sleeps) as client:
        token = await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    (form,) = sts.forms()
    assert "scope" not in form
    assert "actor_token" not in form
    assert "actor_token_type" not in form
    assert token.scopes == ()


@pytest.mark.anyio
async def test_actor_token_sent_with_its_type(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    async with make_client(sts, clock, sleeps, use_actor_token=True) as client:
        await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
        await client.exchange(fake_jwt(sub="bob"), resource=OTHER)
    forms = sts.forms()
    assert [f["grant_type"] for f in forms] == [
        "client_credentials",
        TOKEN_EXCHANGE_GRANT,
        TOKEN_EXCHANGE_GRANT,
    ]
    actor = forms[1]["actor_token"]
    assert actor.count(".") == 2
    assert forms[1]["actor_token_type"] == ACCESS_TOKEN_TYPE_URN
    # The agent's own token is cached: the second exchange reuses it.
    assert forms[2]["actor_token"] == actor
    assert "resource" not in forms[0]
    assert "scope" not in forms[0]


@pytest.mark.anyio
async def test_actor_token_resource_and_scopes_are_configurable(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    # Some issuers issue an opaque client-credentials token unless a resource is named.
    async with make_client(
        sts,
        clock,
        sleeps,
        use_actor_token=True,
        actor_token_resource=ISSUER,
        actor_token_scopes=["actor"],
    ) as client:
        await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    actor_request, exchange = sts.forms()
    assert actor_request["grant_type"] == "client_credentials"
    assert actor_request["resource"] == ISSUER
    assert actor_request["scope"] == "actor"
    assert exchange["actor_token_type"] == ACCESS_TOKEN_TYPE_URN


def test_actor_token_resource_must_be_a_url() -> None:
    with pytest.raises(ConfigurationError, match="RFC 8707"):
        TokenExchangeClient(
            issuer=ISSUER,
            credential=ClientSecret("a", "b"),
            use_actor_token=True,
            actor_token_resource="not a url",
        )


@pytest.mark.anyio
async def test_client_secret_post_and_web_identity_auth(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps, tmp_path: Path
) -> None:
    post = ClientSecret("planner", "planner-secret", method="post")
    async with make_client(sts, clock, sleeps, credential=post) as client:
        await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    assert sts.forms()[0]["client_secret"] == "planner-secret"
    assert "Authorization" not in sts.token_requests[0].headers

    identity = WebIdentity("planner", storage_dir=tmp_path)
    async with make_client(sts, clock, sleeps, credential=identity, retries=1) as client:
        sts.then(httpx.Response(503))
        await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    forms = sts.forms()[1:]
    assert len(forms) == 2
    keys = KeySet.import_key_set(identity.public_jwks())  # type: ignore[arg-type]
    jtis = set()
    for form in forms:
        assert form["client_id"] == "planner"
        assert form["client_assertion_type"] == (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        )
        assertion = jwt.decode(form["client_assertion"], keys, algorithms=["ES256"])
        assert assertion.claims["aud"] == ISSUER
        jtis.add(assertion.claims["jti"])
    assert len(jtis) == 2  # a retry carries a fresh assertion


@pytest.mark.anyio
async def test_client_credentials_grant(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    async with make_client(sts, clock, sleeps) as client:
        token = await client.client_credentials(scopes=["agents"], resource=TARGET)
        again = await client.client_credentials(scopes=["agents"], resource=TARGET)
    assert again is token
    (form,) = sts.forms()
    assert form == {"grant_type": "client_credentials", "resource": TARGET, "scope": "agents"}
    assert token.scopes == ("agents",)


# --------------------------------------------------------------------------- metadata


@pytest.mark.anyio
async def test_metadata_discovered_once_with_path_insertion(clock: Clock, sleeps: Sleeps) -> None:
    issuer = "https://sts.example/tenant-1"
    sts = FakeTokenService(
        issuer=issuer, metadata_path="/.well-known/oauth-authorization-server/tenant-1"
    )
    async with make_client(sts, clock, sleeps, issuer=issuer) as client:
        for _ in range(3):
            await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
        assert await client.token_endpoint() == TOKEN_URL
    assert len(sts.metadata_requests) == 1
    assert len(sts.token_requests) == 3


@pytest.mark.anyio
@pytest.mark.parametrize("issuer", ["https://sts.example/oidc", "https://sts.example/zone/"])
async def test_metadata_falls_back_to_openid_discovery(
    clock: Clock, sleeps: Sleeps, issuer: str
) -> None:
    # An issuer with a path that serves only OpenID Connect discovery (Keycloak, node
    # oidc-provider): RFC 8414 answers 404, then issuer + /.well-known/openid-configuration.
    oidc_path = issuer.removeprefix("https://sts.example").rstrip("/")
    sts = FakeTokenService(
        issuer=issuer, metadata_path=oidc_path + "/.well-known/openid-configuration"
    )
    async with make_client(sts, clock, sleeps, issuer=issuer) as client:
        await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
        await client.exchange(fake_jwt(sub="bob"), resource=TARGET)
    assert [r.url.path for r in sts.metadata_requests] == [
        "/.well-known/oauth-authorization-server" + oidc_path,
        oidc_path + "/.well-known/openid-configuration",
    ]
    assert len(sts.token_requests) == 2


@pytest.mark.anyio
async def test_configured_token_endpoint_needs_no_metadata(clock: Clock, sleeps: Sleeps) -> None:
    sts = FakeTokenService(issuer="https://sts.example/oidc", metadata_path="/nowhere")
    async with make_client(
        sts, clock, sleeps, issuer="https://sts.example/oidc", token_endpoint=TOKEN_URL
    ) as client:
        await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    assert sts.metadata_requests == []
    assert len(sts.token_requests) == 1


@pytest.mark.anyio
async def test_configured_metadata_url_is_the_only_one_tried(clock: Clock, sleeps: Sleeps) -> None:
    sts = FakeTokenService(issuer=ISSUER, metadata_path="/custom/metadata")
    async with make_client(
        sts, clock, sleeps, metadata_url="https://sts.example/custom/metadata"
    ) as client:
        await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    assert [r.url.path for r in sts.metadata_requests] == ["/custom/metadata"]
    missing = FakeTokenService(issuer=ISSUER, metadata_path="/elsewhere")
    async with make_client(
        missing, clock, sleeps, metadata_url="https://sts.example/custom/metadata"
    ) as client:
        with pytest.raises(IssuerUnreachableError, match="HTTP 404"):
            await client.token_endpoint()
    assert [r.url.path for r in missing.metadata_requests] == ["/custom/metadata"]


@pytest.mark.anyio
async def test_no_metadata_anywhere_names_both_urls(clock: Clock, sleeps: Sleeps) -> None:
    sts = FakeTokenService(issuer="https://sts.example/oidc", metadata_path="/nowhere")
    async with make_client(sts, clock, sleeps, issuer="https://sts.example/oidc") as client:
        with pytest.raises(IssuerUnreachableError) as info:
            await client.token_endpoint()
    message = str(info.value)
    assert "/.well-known/oauth-authorization-server/oidc" in message
    assert "/oidc/.well-known/openid-configuration" in message
    assert "token_endpoint" in message


@pytest.mark.anyio
async def test_metadata_issuer_mismatch_refused(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    sts.metadata["issuer"] = "https://evil.example"
    async with make_client(sts, clock, sleeps) as client:
        with pytest.raises(ConfigurationError, match="is not the configured") as info:
            await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    assert info.value.setting == "issuer"
    assert sts.token_requests == []


@pytest.mark.anyio
async def test_metadata_issuer_must_match_exactly(clock: Clock, sleeps: Sleeps) -> None:
    sts = FakeTokenService(issuer=ISSUER + "/")  # trailing slash differs
    async with make_client(sts, clock, sleeps) as client:
        with pytest.raises(ConfigurationError, match="differ only by a trailing '/'"):
            await client.metadata()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("metadata", "status", "phrase"),
    [
        ({"issuer": ISSUER}, 200, "no valid token_endpoint"),
        ({"issuer": ISSUER, "token_endpoint": "/token"}, 200, "no valid token_endpoint"),
        (["not", "an", "object"], 200, "not a JSON object"),
        ({"error": "not_found"}, 404, "HTTP 404"),
    ],
)
async def test_bad_metadata(
    sts: FakeTokenService,
    clock: Clock,
    sleeps: Sleeps,
    metadata: Any,
    status: int,
    phrase: str,
) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=metadata)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = TokenExchangeClient(
        issuer=ISSUER, credential=ClientSecret("a", "b"), http_client=http, sleep=sleeps
    )
    with pytest.raises(IssuerUnreachableError, match=phrase):
        await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    assert sleeps.calls == []  # none of these is retried
    await http.aclose()


@pytest.mark.anyio
async def test_metadata_retried_then_unreachable(clock: Clock, sleeps: Sleeps) -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("connection refused", request=request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = TokenExchangeClient(
        issuer=ISSUER, credential=ClientSecret("a", "b"), http_client=http, sleep=sleeps, retries=2
    )
    with pytest.raises(IssuerUnreachableError, match="unreachable after 3 attempts") as info:
        await client.token_endpoint()
    assert "ConnectError" in str(info.value)
    assert calls == 3
    await http.aclose()


# --------------------------------------------------------------------------- cache


@pytest.mark.anyio
async def test_cache_hit_sends_no_request(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    subject = fake_jwt(sub="alice")
    async with make_client(sts, clock, sleeps) as client:
        first = await client.exchange(subject, resource=TARGET, scopes=["read", "write"])
        second = await client.exchange(subject, resource=TARGET, scopes=["write", "read"])
        assert second is first
        assert client.stats.cache_hits == 1
        assert client.stats.exchanges == 1
    assert len(sts.token_requests) == 1


@pytest.mark.anyio
async def test_cache_key_has_subject_resource_and_scopes(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    subject = fake_jwt(sub="alice")
    async with make_client(sts, clock, sleeps) as client:
        await client.exchange(subject, resource=TARGET, scopes=["read"])
        await client.exchange(subject, resource=TARGET, scopes=["read", "write"])
        await client.exchange(subject, resource=TARGET)
        await client.exchange(subject, resource=OTHER, scopes=["read"])
        await client.exchange(fake_jwt(sub="alice"), resource=TARGET, scopes=["read"])
        await client.exchange(fake_jwt(sub="bob", jti="same"), resource=TARGET)
        await client.exchange(fake_jwt(sub="eve", jti="same"), resource=TARGET)
        assert client.stats.cache_hits == 0
        assert client.cache_len == 7
        # The cache never keeps a raw subject token.
        assert subject not in repr(client._cache)
    assert len(sts.token_requests) == 7


@pytest.mark.anyio
async def test_refresh_before_token_expiry(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    subject = fake_jwt(sub="alice", exp=clock.now + 3600)
    async with make_client(sts, clock, sleeps, refresh_margin=30) as client:
        first = await client.exchange(subject, resource=TARGET)
        clock.now += 269
        assert await client.exchange(subject, resource=TARGET) is first
        clock.now += 2  # 271 s: inside the 30 s margin before expires_in=300
        renewed = await client.exchange(subject, resource=TARGET)
    assert renewed is not first
    assert len(sts.token_requests) == 2


@pytest.mark.anyio
async def test_cache_bounded_by_subject_expiry(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    subject = fake_jwt(sub="alice", exp=clock.now + 100)
    async with make_client(sts, clock, sleeps, refresh_margin=30) as client:
        await client.exchange(subject, resource=TARGET)
        clock.now += 69
        await client.exchange(subject, resource=TARGET)
        assert len(sts.token_requests) == 1
        clock.now += 2
        await client.exchange(subject, resource=TARGET)
    assert len(sts.token_requests) == 2


@pytest.mark.anyio
async def test_short_lived_tokens_not_cached(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    sts.expires_in = 20
    subject = fake_jwt(sub="alice")
    async with make_client(sts, clock, sleeps, refresh_margin=30) as client:
        await client.exchange(subject, resource=TARGET)
        await client.exchange(subject, resource=TARGET)
        assert client.cache_len == 0
    assert len(sts.token_requests) == 2


@pytest.mark.anyio
async def test_cache_is_lru_bounded(sts: FakeTokenService, clock: Clock, sleeps: Sleeps) -> None:
    a, b, c = (fake_jwt(sub=name) for name in "abc")
    async with make_client(sts, clock, sleeps, cache_size=2) as client:
        await client.exchange(a, resource=TARGET)
        await client.exchange(b, resource=TARGET)
        await client.exchange(a, resource=TARGET)  # a is now the most recently used
        await client.exchange(c, resource=TARGET)  # evicts b
        assert client.cache_len == 2
        assert len(sts.token_requests) == 3
        await client.exchange(a, resource=TARGET)
        await client.exchange(c, resource=TARGET)
        assert len(sts.token_requests) == 3
        await client.exchange(b, resource=TARGET)
        assert len(sts.token_requests) == 4
        client.clear_cache()
        assert client.cache_len == 0


@pytest.mark.anyio
async def test_opaque_subject_token_cached_by_digest(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    async with make_client(sts, clock, sleeps) as client:
        await client.exchange("opaque-token-1", resource=TARGET)
        await client.exchange("opaque-token-1", resource=TARGET)
        await client.exchange("opaque-token-2", resource=TARGET)
    assert len(sts.token_requests) == 2


# --------------------------------------------------------------------------- coalescing


@pytest.mark.anyio
async def test_concurrent_identical_exchanges_coalesce(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    subject = fake_jwt(sub="alice")
    results: list[ExchangedToken] = []
    sts.gate = anyio.Event()
    async with make_client(sts, clock, sleeps) as client:

        async def call() -> None:
            results.append(await client.exchange(subject, resource=TARGET, scopes=["read"]))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(call)
            await wait_all_tasks_blocked()
            sts.gate.set()
        assert client.stats.coalesced == 19
    assert len(sts.token_requests) == 1
    assert len(results) == 20
    assert all(r is results[0] for r in results)


@pytest.mark.anyio
async def test_coalesced_waiters_all_get_the_error(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    subject = fake_jwt(sub="alice")
    errors: list[BaseException] = []
    sts.gate = anyio.Event()
    sts.then(oauth_error(400, "invalid_target", "calendar is not a dependency of planner"))
    async with make_client(sts, clock, sleeps) as client:

        async def call() -> None:
            try:
                await client.exchange(subject, resource=TARGET)
            except DelegationDeniedError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(call)
            await wait_all_tasks_blocked()
            sts.gate.set()
    assert len(sts.token_requests) == 1
    assert len(errors) == 20
    assert {e.error for e in errors if isinstance(e, DelegationDeniedError)} == {"invalid_target"}


@pytest.mark.anyio
async def test_cancelled_leader_hands_over_to_a_waiter(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    subject = fake_jwt(sub="alice")
    sts.gate = anyio.Event()
    results: list[ExchangedToken] = []
    async with make_client(sts, clock, sleeps) as client, anyio.create_task_group() as tg:
        leader_scope = anyio.CancelScope()

        async def leader() -> None:
            with leader_scope:
                await client.exchange(subject, resource=TARGET)

        async def waiter() -> None:
            results.append(await client.exchange(subject, resource=TARGET))

        tg.start_soon(leader)
        await wait_all_tasks_blocked()
        tg.start_soon(waiter)
        await wait_all_tasks_blocked()
        leader_scope.cancel()
        await wait_all_tasks_blocked()
        sts.gate.set()
    assert len(results) == 1
    assert len(sts.token_requests) == 2  # the waiter sent its own request


# --------------------------------------------------------------------------- retries


@pytest.mark.anyio
async def test_retries_503_429_and_connect_error_then_success(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    sts.then(
        httpx.Response(503),
        httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.ConnectError,
    )
    async with make_client(sts, clock, sleeps, retries=3, backoff=0.1, max_backoff=1.0) as client:
        token = await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
        assert client.stats.retries == 3
        assert client.stats.http_requests == 4
    assert token.access_token
    assert len(sts.token_requests) == 4
    assert len(sleeps.calls) == 3
    assert sleeps.calls[1] == 2.0  # Retry-After honoured
    assert 0 <= sleeps.calls[0] <= 1.0
    assert 0 <= sleeps.calls[2] <= 1.0


@pytest.mark.anyio
async def test_retry_after_is_capped(sts: FakeTokenService, clock: Clock, sleeps: Sleeps) -> None:
    sts.then(httpx.Response(429, headers={"Retry-After": "3600"}))
    async with make_client(sts, clock, sleeps, max_retry_after=5.0) as client:
        await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    assert sleeps.calls == [5.0]


@pytest.mark.anyio
async def test_retries_exhausted_raise_transport_error(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    sts.then(*[httpx.Response(502)] * 4)
    async with make_client(sts, clock, sleeps, retries=3) as client:
        with pytest.raises(TransportError) as info:
            await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    assert type(info.value) is TransportError
    assert str(info.value) == (
        f"token service at {TOKEN_URL} unreachable after 4 attempts: HTTP 502"
    )
    assert len(sts.token_requests) == 4


@pytest.mark.anyio
async def test_no_retry_on_policy_denial(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    subject = fake_jwt(sub="alice")
    sts.then(oauth_error(400, "invalid_scope", "scope 'admin' exceeds the subject token's scope"))
    async with make_client(sts, clock, sleeps, retries=5) as client:
        with pytest.raises(DelegationDeniedError) as info:
            await client.exchange(subject, resource=TARGET, scopes=["admin"])
    assert type(info.value) is DelegationDeniedError
    assert info.value.error == "invalid_scope"
    assert info.value.error_description == "scope 'admin' exceeds the subject token's scope"
    assert info.value.status_code == 400
    assert len(sts.token_requests) == 1
    assert sleeps.calls == []
    assert subject not in str(info.value)


@pytest.mark.anyio
async def test_invalid_client_is_a_denial(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    sts.then(oauth_error(401, "invalid_client", "client authentication failed"))
    async with make_client(sts, clock, sleeps) as client:
        with pytest.raises(DelegationDeniedError) as info:
            await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    assert info.value.error == "invalid_client"
    assert info.value.status_code == 401
    assert "planner-secret" not in str(info.value)
    assert len(sts.token_requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("error", ["interaction_required", "consent_required"])
async def test_interaction_required_mapping(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps, error: str
) -> None:
    sts.then(oauth_error(400, error, "alice must approve calendar access"))
    async with make_client(sts, clock, sleeps) as client:
        with pytest.raises(InteractionRequiredError) as info:
            await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    assert isinstance(info.value, DelegationDeniedError)
    assert info.value.error == error
    assert info.value.error_description == "alice must approve calendar access"


@pytest.mark.anyio
async def test_timeout_each_attempt(sts: FakeTokenService, clock: Clock, sleeps: Sleeps) -> None:
    sts.then(5.0, 5.0)
    async with make_client(sts, clock, sleeps, timeout=0.05, retries=1) as client:
        with pytest.raises(TransportError, match=r"unreachable after 2 attempts: no answer within"):
            await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    assert len(sts.token_requests) == 2


# --------------------------------------------------------------------------- validation


def _ok(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "access_token": fake_jwt(sub="alice"),
        "issued_token_type": ACCESS_TOKEN_TYPE_URN,
        "token_type": "Bearer",
        "expires_in": 300,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "phrase"),
    [
        (httpx.Response(200, json=_ok(access_token=None)), "no access_token"),
        (httpx.Response(200, json=_ok(access_token=42)), "no access_token"),
        (
            httpx.Response(200, json=_ok(issued_token_type="urn:ietf:params:oauth:token-type:jwt")),
            "issued_token_type",
        ),
        (httpx.Response(200, json=_ok(issued_token_type=None)), "issued_token_type None"),
        (httpx.Response(200, json=_ok(token_type="N_A")), "token_type 'N_A'"),
        (httpx.Response(200, json=_ok(token_type="DPoP")), "token_type 'DPoP'"),
        (httpx.Response(200, json=_ok(token_type=None)), "token_type None"),
        (httpx.Response(200, json=_ok(expires_in=0)), "expires_in 0"),
        (httpx.Response(200, json=_ok(expires_in="300")), "expires_in '300'"),
        (httpx.Response(200, json=_ok(expires_in=True)), "expires_in True"),
        (httpx.Response(200, json=_ok(expires_in=-5)), "expires_in -5"),
        (
            httpx.Response(200, json=_ok(expires_in=None, access_token="opaque")),
            "no expires_in and the token carries no exp",
        ),
        (httpx.Response(200, text="<html>ok</html>"), "not a JSON object"),
        (httpx.Response(200, json=["access_token"]), "not a JSON object"),
        (httpx.Response(404, text="<html>not found</html>"), "HTTP 404 without an OAuth error"),
        (httpx.Response(400, json={"message": "bad"}), "HTTP 400 without an OAuth error"),
        (httpx.Response(302, headers={"Location": "/login"}), "HTTP 302"),
    ],
)
async def test_malformed_responses(
    sts: FakeTokenService,
    clock: Clock,
    sleeps: Sleeps,
    response: httpx.Response,
    phrase: str,
) -> None:
    sts.then(response)
    async with make_client(sts, clock, sleeps) as client:
        with pytest.raises(InvalidTokenResponseError, match=phrase) as info:
            await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    assert info.value.status_code == response.status_code
    assert isinstance(info.value, TransportError)
    assert len(sts.token_requests) == 1  # never retried


@pytest.mark.anyio
async def test_expiry_read_from_token_when_expires_in_absent(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    exp = int(clock.now) + 120
    sts.then(httpx.Response(200, json=_ok(expires_in=None, access_token=fake_jwt(exp=exp))))
    async with make_client(sts, clock, sleeps) as client:
        token = await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    assert token.expires_at == exp


@pytest.mark.anyio
async def test_token_type_is_case_insensitive_and_scope_from_response(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    sts.then(httpx.Response(200, json=_ok(token_type="bearer", scope="read")))
    async with make_client(sts, clock, sleeps) as client:
        token = await client.exchange(fake_jwt(sub="alice"), resource=TARGET, scopes=["read", "x"])
    assert token.token_type == "Bearer"
    assert token.scopes == ("read",)


@pytest.mark.anyio
async def test_long_error_description_is_bounded(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    sts.then(oauth_error(400, "invalid_grant", "x" * 10_000))
    async with make_client(sts, clock, sleeps) as client:
        with pytest.raises(DelegationDeniedError) as info:
            await client.exchange(fake_jwt(sub="alice"), resource=TARGET)
    assert len(info.value.error_description) == 500


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"subject_token": "", "resource": TARGET}, InvalidTokenError),
        ({"subject_token": "t", "resource": "calendar"}, ConfigurationError),
        ({"subject_token": "t", "resource": TARGET + "#frag"}, ConfigurationError),
        ({"subject_token": "t", "resource": TARGET, "scopes": ["a b"]}, ConfigurationError),
        ({"subject_token": "t", "resource": TARGET, "scopes": [""]}, ConfigurationError),
    ],
)
async def test_invalid_arguments_rejected_before_any_request(
    sts: FakeTokenService,
    clock: Clock,
    sleeps: Sleeps,
    kwargs: dict[str, Any],
    error: type[Exception],
) -> None:
    async with make_client(sts, clock, sleeps) as client:
        options = dict(kwargs)
        subject = options.pop("subject_token")
        with pytest.raises(error):
            await client.exchange(subject, **options)
    assert sts.token_requests == []
    assert sts.metadata_requests == []


def test_constructor_validation() -> None:
    cred = ClientSecret("a", "b")
    with pytest.raises(ConfigurationError):
        TokenExchangeClient(issuer="sts.example", credential=cred)
    with pytest.raises(ConfigurationError):
        TokenExchangeClient(issuer=ISSUER, credential=cred, timeout=0)
    with pytest.raises(ConfigurationError):
        TokenExchangeClient(issuer=ISSUER, credential=cred, retries=-1)


@pytest.mark.anyio
async def test_owned_http_client_closed_and_repr_safe() -> None:
    client = TokenExchangeClient(issuer=ISSUER, credential=ClientSecret("a", "topsecret"))
    assert "topsecret" not in repr(client)
    await client.aclose()
    assert client._http.is_closed


@pytest.mark.anyio
async def test_borrowed_http_client_left_open(
    sts: FakeTokenService, clock: Clock, sleeps: Sleeps
) -> None:
    client = make_client(sts, clock, sleeps)
    await client.aclose()
    assert not client._http.is_closed
    await client._http.aclose()


# --------------------------------------------------------------------------- real token service

STS_ISSUER = "http://127.0.0.1:8900"
PLANNER = "https://planner.example/a2a"


def _token_service(tmp_path: Path, web: WebIdentity) -> TokenService:
    config = parse_config(
        {
            "issuer": STS_ISSUER,
            "key_dir": str(tmp_path / "sts-keys"),
            "agents": [
                {
                    "client_id": "planner",
                    "resource": PLANNER,
                    "auth": "client_secret",
                    "secret_hash": hash_secret("planner-secret", cost=2**4),
                    "scopes": ["plan"],
                    "dependencies": [TARGET],
                },
                {
                    "client_id": "planner-web",
                    "resource": "https://planner-web.example/a2a",
                    "auth": "private_key_jwt",
                    "jwks": web.public_jwks(),
                    "dependencies": [TARGET],
                },
                {
                    "client_id": "calendar",
                    "resource": TARGET,
                    "auth": "client_secret",
                    "secret_hash": hash_secret("calendar-secret", cost=2**4),
                    "scopes": ["calendar.read", "calendar.write"],
                },
            ],
        }
    )
    return TokenService(config)


@asynccontextmanager
async def open_client(
    service: TokenService, credential: Any, **options: Any
) -> AsyncIterator[TokenExchangeClient]:
    """A client talking to ``service`` in process, inside the app's lifespan."""
    transport = httpx.ASGITransport(app=service.app)
    async with (
        service.app.router.lifespan_context(service.app),
        httpx.AsyncClient(transport=transport) as http,
        TokenExchangeClient(
            issuer=STS_ISSUER, credential=credential, http_client=http, **options
        ) as client,
    ):
        yield client


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return data


@pytest.mark.anyio
@pytest.mark.parametrize("auth", ["client_secret", "web_identity"])
async def test_against_real_token_service(tmp_path: Path, auth: str) -> None:
    web = WebIdentity("planner-web", storage_dir=tmp_path / "agent-keys")
    service = _token_service(tmp_path, web)
    if auth == "client_secret":
        credential: Any = ClientSecret("planner", "planner-secret")
        audience = PLANNER
    else:
        credential = web
        audience = "https://planner-web.example/a2a"
    agent_id = credential.client_id
    user_token = service.issue_user_token(
        "alice", audience=audience, scopes=["calendar.read", "calendar.write"]
    )
    async with open_client(service, credential, use_actor_token=True) as client:
        own = await client.client_credentials()
        assert _claims(own.access_token)["sub"] == agent_id

        token = await client.exchange(user_token, resource=TARGET, scopes=["calendar.read"])
        claims = _claims(token.access_token)
        assert claims["sub"] == "alice"
        assert claims["aud"] == TARGET
        assert claims["act"]["sub"] == agent_id
        assert claims["scope"] == "calendar.read"
        assert token.scopes == ("calendar.read",)
        # Cached: the token service sees no second exchange.
        again = await client.exchange(user_token, resource=TARGET, scopes=["calendar.read"])
        assert again is token
        assert service.stats.exchanges == 1

        # A policy denial comes back typed, with the OAuth fields, after one request.
        with pytest.raises(DelegationDeniedError) as info:
            await client.exchange(user_token, resource=TARGET, scopes=["calendar.admin"])
        assert info.value.error == "invalid_scope"
        assert info.value.error_description
        with pytest.raises(DelegationDeniedError) as info:
            await client.exchange(user_token, resource=OTHER)
        assert info.value.error in {"invalid_target", "unauthorized_client"}
        assert service.stats.exchanges == 3
        # The actor token was fetched once and reused for every exchange.
        assert service.stats.by_grant["client_credentials"] == 1


@pytest.mark.anyio
async def test_wrong_secret_against_real_token_service(tmp_path: Path) -> None:
    web = WebIdentity("planner-web", storage_dir=tmp_path / "agent-keys")
    service = _token_service(tmp_path, web)
    async with open_client(service, ClientSecret("planner", "wrong-secret")) as client:
        with pytest.raises(DelegationDeniedError) as info:
            await client.client_credentials()
    assert info.value.error == "invalid_client"
    assert info.value.status_code == 401
    assert "wrong-secret" not in str(info.value)
