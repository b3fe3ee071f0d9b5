"""JWKSCache against httpx.MockTransport: discovery, caching, refetch, retries, errors."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from span_support import recorded_spans

from keycard_agents import ConfigurationError, InvalidTokenError, IssuerUnreachableError
from keycard_agents._oauth._http import MAX_DOCUMENT_BYTES
from keycard_agents._oauth._urls import authorization_server_metadata_url
from keycard_agents.auth import JWKSCache, SigningKey, TokenVerifier, TrustedIssuer

ISS = "https://as.test"
AUD = "https://calendar.test"
NOW = 1_700_000_000


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Issuer:
    """A fake authorization server: metadata + JWKS, with request counting."""

    def __init__(self, issuer: str = ISS, *, metadata_path: str | None = None) -> None:
        self.issuer = issuer
        self.metadata_path = (
            metadata_path or httpx.URL(authorization_server_metadata_url(issuer)).path
        )
        self.keys = [SigningKey.generate("ES256")]
        self.metadata: dict[str, Any] = {"issuer": issuer, "jwks_uri": f"{ISS}/jwks"}
        self.requests: Counter[str] = Counter()
        self.failures: list[Callable[[], httpx.Response]] = []
        self.gate: anyio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests[path] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            return self.failures.pop(0)()
        if path == self.metadata_path:
            return httpx.Response(200, json=self.metadata)
        if path == "/jwks":
            return httpx.Response(200, json={"keys": [k.public_jwk() for k in self.keys]})
        return httpx.Response(404)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))

    @property
    def jwks_requests(self) -> int:
        return self.requests["/jwks"]


def cache(issuer: Issuer, *, config: TrustedIssuer | None = None, **options: Any) -> JWKSCache:
    options.setdefault("backoff", 0)
    return JWKSCache(
        issuers=[config or TrustedIssuer(issuer.issuer)], http_client=issuer.client(), **options
    )


@pytest.mark.anyio
async def test_discovery_then_resolve() -> None:
    server = Issuer()
    keys = cache(server)
    kid = server.keys[0].kid
    key = await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
    assert key.kid == kid
    assert not key.is_private
    assert keys.known(issuer=ISS, kid=kid)
    assert not keys.known(issuer=ISS, kid="other")
    assert server.requests == {"/.well-known/oauth-authorization-server": 1, "/jwks": 1}
    assert keys.requests_made(ISS) == 2


@pytest.mark.anyio
async def test_discovery_with_path_insertion() -> None:
    server = Issuer(f"{ISS}/tenants/acme")
    keys = cache(server)
    await keys.resolve(issuer=server.issuer, kid=server.keys[0].kid, alg="ES256")
    assert server.requests["/.well-known/oauth-authorization-server/tenants/acme"] == 1


@pytest.mark.anyio
async def test_openid_configuration_fallback() -> None:
    server = Issuer(
        f"{ISS}/realms/demo", metadata_path="/realms/demo/.well-known/openid-configuration"
    )
    keys = cache(server)
    await keys.resolve(issuer=server.issuer, kid=server.keys[0].kid, alg="ES256")
    assert server.requests["/.well-known/oauth-authorization-server/realms/demo"] == 1
    assert server.requests["/realms/demo/.well-known/openid-configuration"] == 1


@pytest.mark.anyio
async def test_no_metadata_anywhere() -> None:
    server = Issuer(metadata_path="/elsewhere")
    with pytest.raises(IssuerUnreachableError, match="set jwks_uri or metadata_url"):
        await cache(server).resolve(issuer=ISS, kid="k", alg="ES256")


@pytest.mark.anyio
async def test_explicit_metadata_url() -> None:
    server = Issuer(metadata_path="/meta")
    keys = cache(server, config=TrustedIssuer(ISS, metadata_url=f"{ISS}/meta"))
    await keys.resolve(issuer=ISS, kid=server.keys[0].kid, alg="ES256")
    assert server.requests["/meta"] == 1
    missing = cache(server, config=TrustedIssuer(ISS, metadata_url=f"{ISS}/nothing"))
    with pytest.raises(IssuerUnreachableError, match="check metadata_url"):
        await missing.resolve(issuer=ISS, kid="k", alg="ES256")


@pytest.mark.anyio
async def test_explicit_jwks_uri_skips_metadata_even_cross_origin() -> None:
    server = Issuer()
    keys = cache(server, config=TrustedIssuer(ISS, jwks_uri="https://keys.elsewhere.test/jwks"))
    await keys.resolve(issuer=ISS, kid=server.keys[0].kid, alg="ES256")
    assert server.requests == {"/jwks": 1}


@pytest.mark.anyio
async def test_inline_jwks_needs_no_network() -> None:
    key = SigningKey.generate("EdDSA")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    keys = JWKSCache(
        issuers=[TrustedIssuer(ISS, jwks={"keys": [key.public_jwk()]})],
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(refuse)),
    )
    assert (await keys.resolve(issuer=ISS, kid=key.kid, alg="EdDSA")).kid == key.kid
    await keys.refresh(ISS)
    assert keys.known(issuer=ISS, kid=key.kid)
    with pytest.raises(InvalidTokenError) as info:
        await keys.resolve(issuer=ISS, kid="nope", alg="EdDSA")
    assert info.value.check == "unknown_key"
    with pytest.raises(ConfigurationError):
        JWKSCache(issuers=[TrustedIssuer(ISS, jwks={"keys": 1})])


@pytest.mark.anyio
async def test_issuer_mismatch_is_refused() -> None:
    server = Issuer()
    server.metadata["issuer"] = "https://as.test/"
    with pytest.raises(ConfigurationError) as info:
        await cache(server).resolve(issuer=ISS, kid="k", alg="ES256")
    assert "'https://as.test/'" in str(info.value)
    assert "RFC 8414" in str(info.value)
    assert server.jwks_requests == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "jwks_uri",
    ["https://evil.test/jwks", "http://as.test/jwks", "https://as.test:8443/jwks"],
)
async def test_cross_origin_jwks_uri_is_refused(jwks_uri: str) -> None:
    server = Issuer()
    server.metadata["jwks_uri"] = jwks_uri
    with pytest.raises(ConfigurationError, match="another origin"):
        await cache(server).resolve(issuer=ISS, kid="k", alg="ES256")
    assert server.jwks_requests == 0


@pytest.mark.anyio
async def test_same_origin_with_explicit_default_port_is_accepted() -> None:
    server = Issuer()
    server.metadata["jwks_uri"] = "https://AS.test:443/jwks"
    key = await cache(server).resolve(issuer=ISS, kid=server.keys[0].kid, alg="ES256")
    assert key.kid == server.keys[0].kid


@pytest.mark.anyio
async def test_ttl_expiry_refetches() -> None:
    server = Issuer()
    clock = Clock()
    keys = cache(server, clock=clock, ttl=300)
    kid = server.keys[0].kid
    await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
    clock.now += 299
    await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
    assert server.jwks_requests == 1
    clock.now += 1
    assert not keys.known(issuer=ISS, kid=kid)
    await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
    assert server.jwks_requests == 2
    assert keys.known(issuer=ISS, kid=kid)


@pytest.mark.anyio
async def test_unknown_kid_refetches_once_and_is_rate_limited() -> None:
    server = Issuer()
    clock = Clock()
    keys = cache(server, clock=clock, min_refresh_interval=30)
    await keys.resolve(issuer=ISS, kid=server.keys[0].kid, alg="ES256")
    rotated = SigningKey.generate("ES256")
    server.keys.append(rotated)
    # Just fetched: an unknown kid does not trigger another request yet.
    with pytest.raises(InvalidTokenError) as info:
        await keys.resolve(issuer=ISS, kid=rotated.kid, alg="ES256")
    assert info.value.check == "unknown_key"
    assert server.jwks_requests == 1
    clock.now += 30
    assert (await keys.resolve(issuer=ISS, kid=rotated.kid, alg="ES256")).kid == rotated.kid
    assert server.jwks_requests == 2
    # A bogus kid right after: one refetch at most per interval.
    for _ in range(5):
        with pytest.raises(InvalidTokenError):
            await keys.resolve(issuer=ISS, kid="bogus", alg="ES256")
    assert server.jwks_requests == 2
    clock.now += 30
    with pytest.raises(InvalidTokenError):
        await keys.resolve(issuer=ISS, kid="bogus", alg="ES256")
    assert server.jwks_requests == 3


@pytest.mark.anyio
async def test_concurrent_resolves_are_coalesced() -> None:
    server = Issuer()
    server.gate = anyio.Event()
    keys = cache(server)
    kid = server.keys[0].kid
    found: list[str | None] = []

    async def resolve() -> None:
        found.append((await keys.resolve(issuer=ISS, kid=kid, alg="ES256")).kid)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(resolve)
        await anyio.wait_all_tasks_blocked()
        server.gate.set()
    assert found == [kid] * 20
    assert server.requests == {"/.well-known/oauth-authorization-server": 1, "/jwks": 1}


@pytest.mark.anyio
async def test_concurrent_failures_share_one_attempt() -> None:
    server = Issuer()
    server.gate = anyio.Event()
    server.failures = [lambda: httpx.Response(403)]
    keys = cache(server)
    errors: list[str] = []

    async def resolve() -> None:
        try:
            await keys.resolve(issuer=ISS, kid="k", alg="ES256")
        except IssuerUnreachableError as exc:
            errors.append(str(exc))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(resolve)
        await anyio.wait_all_tasks_blocked()
        server.gate.set()
    assert len(errors) == 5
    assert len(set(errors)) == 1
    assert "HTTP 403" in errors[0]
    assert sum(server.requests.values()) == 1


@pytest.mark.anyio
async def test_5xx_is_retried_then_succeeds() -> None:
    server = Issuer()
    server.failures = [lambda: httpx.Response(503), lambda: httpx.Response(502)]
    keys = cache(server, backoff=0.001)  # exercises the real (anyio) sleep on both backends
    await keys.resolve(issuer=ISS, kid=server.keys[0].kid, alg="ES256")
    assert server.requests["/.well-known/oauth-authorization-server"] == 3


@pytest.mark.anyio
async def test_retries_exhausted_raise_issuer_unreachable() -> None:
    server = Issuer()
    server.failures = [lambda: httpx.Response(500)] * 10
    keys = cache(server, retries=2)
    with pytest.raises(IssuerUnreachableError) as info:
        await keys.resolve(issuer=ISS, kid="k", alg="ES256")
    message = str(info.value)
    assert message.startswith(f"could not reach issuer {ISS} at ")
    assert "HTTP 500" in message
    assert "after 3 attempts" in message
    assert "check" in message
    assert server.requests["/.well-known/oauth-authorization-server"] == 3


@pytest.mark.anyio
async def test_transport_errors_are_retried() -> None:
    attempts = 0

    def down(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        raise httpx.ConnectError("connection refused", request=request)

    keys = JWKSCache(
        issuers=[TrustedIssuer(ISS)],
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(down)),
        retries=3,
        backoff=0,
    )
    with pytest.raises(IssuerUnreachableError, match="ConnectError: connection refused"):
        await keys.resolve(issuer=ISS, kid="k", alg="ES256")
    assert attempts == 4


@pytest.mark.anyio
async def test_4xx_is_not_retried() -> None:
    server = Issuer()
    server.failures = [lambda: httpx.Response(200, json=server.metadata)]
    server.failures.append(lambda: httpx.Response(401))
    with pytest.raises(
        IssuerUnreachableError, match=r"JWKS at https://as\.test/jwks: answered HTTP 401"
    ):
        await cache(server).resolve(issuer=ISS, kid="k", alg="ES256")
    assert server.jwks_requests == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("where", "body", "reason"),
    [
        ("metadata", b"{not json", "is not valid JSON"),
        ("metadata", b"[1, 2]", "is not a JSON object"),
        ("metadata", b'{"issuer": "https://as.test"}', "has no jwks_uri"),
        ("jwks", b"<html>", "is not valid JSON"),
        ("jwks", b'{"keys": {}}', "has no 'keys' array"),
        ("jwks", b'{"keys": [1]}', "is not a JSON object"),
        (
            "jwks",
            b'{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}',
            "not a valid EC",
        ),
        ("jwks", b'{"keys": [{"kty": "oct", "k": "AAAA"}]}', "no signature key"),
        ("jwks", b"x" * (MAX_DOCUMENT_BYTES + 1), "larger than"),
    ],
)
async def test_malformed_documents(where: str, body: bytes, reason: str) -> None:
    server = Issuer()
    if where == "jwks":
        server.failures.append(lambda: httpx.Response(200, json=server.metadata))
    server.failures.append(lambda: httpx.Response(200, content=body))
    with pytest.raises(IssuerUnreachableError, match=reason):
        await cache(server).resolve(issuer=ISS, kid="k", alg="ES256")


@pytest.mark.anyio
async def test_stale_keys_are_kept_when_refresh_fails() -> None:
    server = Issuer()
    clock = Clock()
    keys = cache(server, clock=clock, ttl=300, min_refresh_interval=30, retries=0)
    kid = server.keys[0].kid
    await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
    clock.now += 301
    server.failures = [lambda: httpx.Response(503)]
    assert (await keys.resolve(issuer=ISS, kid=kid, alg="ES256")).kid == kid
    before = sum(server.requests.values())
    clock.now += 10  # within the rate limit: no new attempt
    await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
    assert sum(server.requests.values()) == before
    clock.now += 30
    await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
    assert sum(server.requests.values()) == before + 2
    assert keys.known(issuer=ISS, kid=kid)


@pytest.mark.anyio
async def test_unconfigured_issuer() -> None:
    keys = cache(Issuer())
    with pytest.raises(InvalidTokenError) as info:
        await keys.resolve(issuer="https://other.test", kid="k", alg="ES256")
    assert info.value.check == "issuer"
    assert not keys.known(issuer="https://other.test", kid="k")


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        JWKSCache(issuers=[TrustedIssuer(ISS)], ttl=0)
    with pytest.raises(ConfigurationError, match="twice"):
        JWKSCache(issuers=[TrustedIssuer(ISS), TrustedIssuer(ISS)])


@pytest.mark.anyio
async def test_token_verifier_discovers_keys_end_to_end() -> None:
    server = Issuer()
    signer = server.keys[0]
    token = signer.sign(
        {"iss": ISS, "sub": "alice", "aud": AUD, "exp": NOW + 60, "iat": NOW, "jti": "j"},
        typ="at+jwt",
    )
    async with server.client() as client:
        verifier = TokenVerifier(issuers=[ISS], http_client=client, clock=lambda: NOW)
        assert isinstance(verifier.keys, JWKSCache)
        principal = await verifier.verify(token, audience=AUD)
        assert principal.user == "alice"
        await verifier.verify(token, audience=AUD)
        assert server.jwks_requests == 1
        await verifier.aclose()
        assert not client.is_closed  # not ours to close


@pytest.mark.anyio
async def test_owned_client_is_closed() -> None:
    keys = JWKSCache(issuers=[TrustedIssuer(ISS)])
    client = keys._http()
    await keys.aclose()
    assert client.is_closed
    await keys.aclose()


def test_jwks_json_is_well_formed_fixture() -> None:
    key = SigningKey.generate("ES256")
    assert json.loads(json.dumps({"keys": [key.public_jwk()]}))["keys"][0]["kid"] == key.kid


# -- edges a mutation run found unpinned (dev.py mutation) ------------------------------


def _edge_cache(handler: httpx.MockTransport, **options: object) -> JWKSCache:
    client = httpx.AsyncClient(transport=handler)
    return JWKSCache(issuers=[TrustedIssuer(ISS)], http_client=client, backoff=0, **options)  # type: ignore[arg-type]


def _edge_issuer(
    keys: list[SigningKey], gate: anyio.Event | None = None, **metadata: object
) -> httpx.MockTransport:
    document = {"issuer": ISS, "jwks_uri": f"{ISS}/jwks", **metadata}

    async def handler(request: httpx.Request) -> httpx.Response:
        if gate is not None:
            await gate.wait()
        if request.url.path == "/jwks":
            return httpx.Response(200, json={"keys": [k.public_jwk() for k in keys]})
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json=document)
        return httpx.Response(404)

    return httpx.MockTransport(handler)


@pytest.mark.anyio
async def test_fetched_keys_outside_the_caches_algorithms_are_not_imported() -> None:
    es256, eddsa = SigningKey.generate("ES256"), SigningKey.generate("EdDSA")
    keys = _edge_cache(_edge_issuer([es256, eddsa]), algorithms=["ES256"])
    assert (await keys.resolve(issuer=ISS, kid=es256.kid, alg="ES256")).kid == es256.kid
    assert keys.known(issuer=ISS, kid=es256.kid)
    assert not keys.known(issuer=ISS, kid=eddsa.kid)


@pytest.mark.anyio
async def test_nothing_is_known_before_the_first_fetch() -> None:
    keys = _edge_cache(_edge_issuer([SigningKey.generate("ES256")]))
    assert not keys.known(issuer=ISS, kid="k1")
    assert not keys.known(issuer=ISS, kid=None)
    assert not keys.known(issuer="https://other.test", kid="k1")


@pytest.mark.parametrize(
    ("metadata", "setting", "words"),
    [
        ({"issuer": "https://as.test/"}, "issuers", "RFC 8414 §3.3"),
        ({"jwks_uri": "https://evil.test/jwks"}, "jwks_uri", "another origin"),
    ],
)
@pytest.mark.anyio
async def test_every_waiter_on_a_misconfigured_issuer_gets_the_same_error(
    metadata: dict[str, str], setting: str, words: str
) -> None:
    gate = anyio.Event()
    keys = _edge_cache(_edge_issuer([SigningKey.generate("ES256")], gate, **metadata))
    errors: list[ConfigurationError] = []

    async def resolve() -> None:
        with pytest.raises(ConfigurationError) as info:
            await keys.resolve(issuer=ISS, kid="k", alg="ES256")
        errors.append(info.value)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(resolve)
        await anyio.wait_all_tasks_blocked()  # all three wait for the one fetch
        gate.set()
    assert len(errors) == 3
    assert keys.requests_made(ISS) == 1
    assert {e.setting for e in errors} == {setting}
    assert len({str(e) for e in errors}) == 1
    assert words in str(errors[0])


@pytest.mark.anyio
async def test_metadata_with_an_empty_jwks_uri_is_unusable() -> None:
    keys = _edge_cache(_edge_issuer([SigningKey.generate("ES256")], jwks_uri=""))
    with pytest.raises(IssuerUnreachableError, match="has no jwks_uri"):
        await keys.resolve(issuer=ISS, kid="k", alg="ES256")


@pytest.mark.anyio
async def test_keys_are_requested_as_json_with_the_timeout() -> None:
    seen: list[httpx.Request] = []
    server = Issuer()

    async def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return await server(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(recording))
    keys = JWKSCache(issuers=[TrustedIssuer(ISS)], http_client=client, backoff=0, timeout=2.5)
    await keys.resolve(issuer=ISS, kid=server.keys[0].kid, alg="ES256")
    assert [r.method for r in seen] == ["GET", "GET"]
    assert all(r.headers["accept"] == "application/json" for r in seen)
    assert all(r.extensions["timeout"]["read"] == 2.5 for r in seen)


@pytest.mark.anyio
async def test_refresh_fetches_now_whatever_the_ttl() -> None:
    server = Issuer()
    keys = cache(server, clock=Clock())
    await keys.resolve(issuer=ISS, kid=server.keys[0].kid, alg="ES256")
    server.keys.append(SigningKey.generate("ES256"))
    assert not keys.known(issuer=ISS, kid=server.keys[1].kid)
    await keys.refresh(ISS)
    assert server.jwks_requests == 2
    assert keys.known(issuer=ISS, kid=server.keys[1].kid)


@pytest.mark.anyio
async def test_keys_past_their_ttl_are_refetched_even_inside_the_rate_limit() -> None:
    server = Issuer()
    clock = Clock()
    keys = cache(server, clock=clock, ttl=10, min_refresh_interval=100)
    kid = server.keys[0].kid
    await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
    clock.now += 20  # expired; the last attempt was 20 s ago, under the 100 s rate limit
    await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
    assert server.jwks_requests == 2


@pytest.mark.anyio
@pytest.mark.parametrize("fails", [False, True], ids=["refresh works", "refresh fails"])
async def test_concurrent_resolves_of_expired_keys_share_one_refresh(fails: bool) -> None:
    """Waiters share one refetch (and, when it fails, keep using the cached keys)."""
    server = Issuer()
    clock = Clock()
    keys = cache(server, clock=clock, ttl=10, retries=0)
    kid = server.keys[0].kid
    await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
    clock.now += 20
    server.gate = anyio.Event()
    if fails:
        server.failures = [lambda: httpx.Response(503)]
    found: list[str | None] = []

    async def resolve() -> None:
        found.append((await keys.resolve(issuer=ISS, kid=kid, alg="ES256")).kid)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(resolve)
        await anyio.wait_all_tasks_blocked()
        server.gate.set()
    assert found == [kid] * 4
    assert server.jwks_requests == 2 - fails  # a failed refetch of the JWKS is a 503


@pytest.mark.anyio
async def test_key_refreshes_are_logged_with_issuer_and_key_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Issuer()
    clock = Clock()
    keys = cache(server, clock=clock, ttl=300, min_refresh_interval=0, retries=0)
    kid = server.keys[0].kid
    with caplog.at_level(logging.DEBUG, logger="keycard_agents"):
        await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
        with pytest.raises(InvalidTokenError):
            await keys.resolve(issuer=ISS, kid="k-unknown", alg="ES256")
        clock.now += 301
        server.failures = [lambda: httpx.Response(503)]
        await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
    messages = [r.getMessage() for r in caplog.records]
    assert f"issuer {ISS}: 1 key(s): {kid}" in messages
    assert f"issuer {ISS}: unknown key id 'k-unknown', refetching its JWKS" in messages
    failed = [m for m in messages if m.startswith(f"issuer {ISS}: refreshing keys failed")]
    assert len(failed) == 1
    assert failed[0].startswith(
        f"issuer {ISS}: refreshing keys failed, still using the cached ones: "
    )
    assert "HTTP 503" in failed[0]


@pytest.mark.anyio
async def test_known_is_false_before_the_first_fetch_even_within_the_ttl() -> None:
    # The clock is still inside the first TTL: only the missing keys make it unknown.
    keys = cache(Issuer(), clock=Clock(now=5.0), ttl=300)
    assert not keys.known(issuer=ISS, kid="k1")


@pytest.mark.anyio
@pytest.mark.parametrize("rfc8414", [True, False], ids=["RFC 8414", "OpenID Connect"])
async def test_a_broken_metadata_document_is_named_in_the_error(rfc8414: bool) -> None:
    server = Issuer()
    url = f"{ISS}/.well-known/oauth-authorization-server"
    if not rfc8414:  # the RFC 8414 document is absent, the OpenID Connect one is broken
        server.failures.append(lambda: httpx.Response(404))
        url = f"{ISS}/.well-known/openid-configuration"
    server.failures.append(lambda: httpx.Response(200, content=b"{not json"))
    with pytest.raises(IssuerUnreachableError) as info:
        await cache(server).resolve(issuer=ISS, kid="k", alg="ES256")
    assert str(info.value).startswith(
        f"could not use issuer {ISS}: metadata at {url} is not valid JSON ("
    )


@pytest.mark.anyio
async def test_a_malformed_jwks_is_named_by_its_url_in_the_error() -> None:
    server = Issuer()
    server.failures.append(lambda: httpx.Response(200, json=server.metadata))
    server.failures.append(lambda: httpx.Response(200, json={"keys": {}}))
    with pytest.raises(IssuerUnreachableError) as info:
        await cache(server).resolve(issuer=ISS, kid="k", alg="ES256")
    assert str(info.value) == (
        f"could not use the keys of issuer {ISS}: JWKS at {ISS}/jwks has no 'keys' array"
    )


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff waits of the retries, recorded instead of slept."""
    recorded: list[float] = []
    real_sleep = anyio.sleep

    async def sleep(seconds: float) -> None:
        recorded.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(anyio, "sleep", sleep)
    return recorded


def assert_backoff(waits: list[float], bases: list[float], jitter: float) -> None:
    assert len(waits) == len(bases)
    for wait, base in zip(waits, bases, strict=True):
        assert base <= wait <= base + jitter


@pytest.mark.anyio
async def test_retries_back_off_exponentially_with_bounded_jitter(waits: list[float]) -> None:
    """Each wait is ``backoff * 2**n`` capped at ``max_backoff``, plus up to ``backoff``."""
    server = Issuer()
    server.failures = [lambda: httpx.Response(503)] * 5
    keys = cache(server, retries=5, backoff=0.1, max_backoff=0.5)
    await keys.resolve(issuer=ISS, kid=server.keys[0].kid, alg="ES256")
    assert server.requests["/.well-known/oauth-authorization-server"] == 6
    assert_backoff(waits, [0.1, 0.2, 0.4, 0.5, 0.5], jitter=0.1)


@pytest.mark.anyio
async def test_the_default_retries_and_backoff(waits: list[float]) -> None:
    server = Issuer()
    server.failures = [lambda: httpx.Response(503)] * 10
    keys = JWKSCache(issuers=[TrustedIssuer(ISS)], http_client=server.client())
    with pytest.raises(IssuerUnreachableError, match="after 4 attempts"):
        await keys.resolve(issuer=ISS, kid="k", alg="ES256")
    assert server.requests["/.well-known/oauth-authorization-server"] == 4
    assert_backoff(waits, [0.5, 1, 2], jitter=0.5)
    waits.clear()
    longer = JWKSCache(issuers=[TrustedIssuer(ISS)], http_client=server.client(), retries=6)
    server.failures = [lambda: httpx.Response(503)] * 6
    await longer.resolve(issuer=ISS, kid=server.keys[0].kid, alg="ES256")
    assert_backoff(waits, [0.5, 1, 2, 4, 8, 8], jitter=0.5)  # capped at 8 s


@pytest.mark.anyio
async def test_the_default_ttl_rate_limit_and_timeout() -> None:
    """Keys are trusted 5 minutes; an unknown kid refetches at most every 30 s; 5 s timeout."""
    server = Issuer()
    clock = Clock()
    timeouts: list[float] = []

    async def recording(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"]["read"])
        return await server(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(recording))
    keys = JWKSCache(issuers=[TrustedIssuer(ISS)], http_client=client, clock=clock)
    kid = server.keys[0].kid
    await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
    assert set(timeouts) == {5.0}
    clock.now += 29.9
    with pytest.raises(InvalidTokenError):
        await keys.resolve(issuer=ISS, kid="rotated", alg="ES256")
    assert server.jwks_requests == 1
    clock.now += 0.1
    with pytest.raises(InvalidTokenError):
        await keys.resolve(issuer=ISS, kid="rotated", alg="ES256")
    assert server.jwks_requests == 2  # 30 s after the first fetch
    clock.now += 299.9  # 299.9 s after the second fetch
    assert keys.known(issuer=ISS, kid=kid)
    await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
    assert server.jwks_requests == 2
    clock.now += 0.1
    assert not keys.known(issuer=ISS, kid=kid)
    await keys.resolve(issuer=ISS, kid=kid, alg="ES256")
    assert server.jwks_requests == 3


@pytest.mark.parametrize(
    "option",
    [
        {"ttl": 0},
        {"ttl": -1},
        {"min_refresh_interval": -1},
        {"timeout": 0},
        {"retries": -1},
        {"backoff": -0.1},
    ],
    ids=str,
)
def test_each_out_of_range_option_is_refused(option: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match="must be positive"):
        JWKSCache(issuers=[TrustedIssuer(ISS)], **option)  # type: ignore[arg-type]


def test_the_smallest_options_are_accepted() -> None:
    JWKSCache(
        issuers=[TrustedIssuer(ISS)], ttl=1, min_refresh_interval=0, timeout=1, retries=0, backoff=0
    )
    JWKSCache(issuers=[TrustedIssuer(ISS)], ttl=0.5, timeout=0.5)


def test_an_issuer_configured_twice_names_the_setting() -> None:
    with pytest.raises(ConfigurationError) as info:
        JWKSCache(issuers=[TrustedIssuer(ISS), TrustedIssuer(ISS, jwks_uri=f"{ISS}/keys")])
    assert info.value.setting == "issuers"
    assert str(info.value) == f"issuer {ISS!r} is configured twice"


def test_a_malformed_inline_jwks_names_the_issuer_and_the_setting() -> None:
    with pytest.raises(ConfigurationError) as info:
        JWKSCache(issuers=[TrustedIssuer(ISS, jwks={"keys": 1})])
    assert info.value.setting == "jwks"
    assert str(info.value) == f"inline JWKS of issuer {ISS!r} has no 'keys' array"


@pytest.mark.anyio
async def test_inline_keys_outside_the_caches_algorithms_are_not_imported() -> None:
    es256, eddsa = SigningKey.generate("ES256"), SigningKey.generate("EdDSA")
    inline = TrustedIssuer(ISS, jwks={"keys": [es256.public_jwk(), eddsa.public_jwk()]})
    keys = JWKSCache(issuers=[inline], algorithms=["ES256"])
    assert keys.known(issuer=ISS, kid=es256.kid)
    assert not keys.known(issuer=ISS, kid=eddsa.kid)
    with pytest.raises(InvalidTokenError) as info:
        await keys.resolve(issuer=ISS, kid=eddsa.kid, alg="EdDSA")
    assert info.value.check == "unknown_key"


@pytest.mark.anyio
async def test_without_a_kid_the_one_key_fitting_the_algorithm_is_chosen() -> None:
    server = Issuer()
    es256 = server.keys[0]
    server.keys.append(SigningKey.generate("EdDSA"))
    keys = cache(server)
    assert (await keys.resolve(issuer=ISS, kid=None, alg="ES256")).kid == es256.kid
    assert (await keys.resolve(issuer=ISS, kid=None, alg="EdDSA")).kid == server.keys[1].kid


@pytest.mark.anyio
async def test_unknown_key_and_unknown_issuer_errors_name_the_issuer() -> None:
    keys = cache(Issuer(), min_refresh_interval=0)
    with pytest.raises(InvalidTokenError) as info:
        await keys.resolve(issuer=ISS, kid="nope", alg="ES256")
    assert f"is not among the keys of issuer {ISS!r}" in str(info.value)
    with pytest.raises(InvalidTokenError) as info:
        await keys.resolve(issuer="https://other.test", kid="k", alg="ES256")
    assert str(info.value) == "issuer 'https://other.test' is not configured in this key cache"


@pytest.mark.anyio
async def test_a_transport_error_without_words_still_says_what_failed() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("", request=request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(down))
    keys = JWKSCache(issuers=[TrustedIssuer(ISS)], http_client=client, retries=0)
    with pytest.raises(IssuerUnreachableError) as info:
        await keys.resolve(issuer=ISS, kid="k", alg="ES256")
    assert ": ConnectError: no detail (after 1 attempts)" in str(info.value)


@pytest.mark.anyio
async def test_an_undecodable_answer_is_not_retried_and_is_named() -> None:
    server = Issuer()
    server.failures.append(lambda: httpx.Response(200, json=server.metadata))
    server.failures.append(
        lambda: httpx.Response(200, content=b"not gzip", headers={"Content-Encoding": "gzip"})
    )
    with pytest.raises(IssuerUnreachableError) as info:
        await cache(server, retries=3).resolve(issuer=ISS, kid="k", alg="ES256")
    assert str(info.value).startswith(
        f"could not reach issuer {ISS}: JWKS at {ISS}/jwks: DecodingError: "
    )
    assert server.jwks_requests == 1


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans finished during the test (an SDK tracer provider installed globally)."""
    with recorded_spans() as memory:
        yield memory


@pytest.mark.anyio
async def test_each_fetch_is_a_client_span_naming_the_document_and_its_url(
    spans: InMemorySpanExporter,
) -> None:
    server = Issuer(
        f"{ISS}/realms/demo", metadata_path="/realms/demo/.well-known/openid-configuration"
    )
    keys = cache(server)
    await keys.resolve(issuer=server.issuer, kid=server.keys[0].kid, alg="ES256")
    finished = spans.get_finished_spans()
    assert {s.kind for s in finished} == {SpanKind.CLIENT}
    fetched = [(s.name, (s.attributes or {})["url.full"]) for s in finished]
    assert fetched == [
        ("GET metadata", f"{ISS}/.well-known/oauth-authorization-server/realms/demo"),
        ("GET metadata", f"{ISS}/realms/demo/.well-known/openid-configuration"),
        ("GET JWKS", f"{ISS}/jwks"),
    ]


@pytest.mark.anyio
async def test_a_refresh_logs_every_key_id(caplog: pytest.LogCaptureFixture) -> None:
    server = Issuer()
    server.keys.append(SigningKey.generate("ES256"))
    first, second = (k.kid for k in server.keys)
    with caplog.at_level(logging.DEBUG, logger="keycard_agents"):
        await cache(server).resolve(issuer=ISS, kid=first, alg="ES256")
    assert f"issuer {ISS}: 2 key(s): {first}, {second}" in [r.getMessage() for r in caplog.records]
