"""Token exchange (``TokenEndpoint._token_exchange`` and the subject checks): the edges a
mutation run showed no test pinned (``dev.py mutation sts``, docs/testing.md).

A user's third-party token handed out through a connection (the requested scope, the
transaction, the audit record), the policy span, the metric of each refused subject
token, a subject issuer's unusable keys (500, not a refusal), and an undecodable
subject token sent to an agent with two endpoints.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from metrics_support import metric_reader
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from span_support import recorded_spans
from sts_support import ISSUER, A, B, Clock, World, claims_of, make_config, open_world

from keycard_agents.auth import SigningKey
from keycard_agents.sts import (
    MemoryAuditStore,
    MemoryVaultStore,
    StoredGrant,
    TokenService,
    parse_config,
)

pytestmark = pytest.mark.anyio

API = "https://api.github.example/"
IDP = "https://idp.example"
UPSTREAM_TOKEN = "upstream-access-0123456789"  # a stand-in: no upstream is ever called


def _error(reply: httpx.Response) -> tuple[int, str, str]:
    """Status, error and description of an answer (never the body of an issued token)."""
    body = reply.json()
    return reply.status_code, str(body.get("error")), str(body.get("error_description"))


# -- a user's third-party token, through a connection ---------------------------------------


@asynccontextmanager
async def _connected_world(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    """Agent a depends on agent B and on a GitHub-like API served by connection
    ``github``; alice has connected it (her grant is in the vault), bob has not."""
    monkeypatch.setenv("GH_SECRET", "s3cret-upstream")
    config, keys = make_config()
    data = config.model_dump(mode="json", exclude_none=True)
    data["agents"][0]["dependencies"].append(API)
    data["connections"] = [
        {
            "name": "github",
            "resources": [API],
            "authorization_endpoint": "https://gh.example/authorize",
            "token_endpoint": "https://gh.example/token",
            "client_id": "keycard",
            "client_secret_env": "GH_SECRET",
        }
    ]
    clock = Clock()
    service = TokenService(
        parse_config(data), clock=clock, audit=MemoryAuditStore(), vault_store=MemoryVaultStore()
    )
    assert service.vault is not None
    grant = StoredGrant(
        kind="oauth",
        access_token=UPSTREAM_TOKEN,
        expires_at=clock() + 3600,  # far from its refresh: the upstream is never called
        scopes=("repo", "read:user"),
        connected_at=clock(),
    )
    await service.vault.put(ISSUER, "alice", "github", grant)
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield World(service=service, client=client, clock=clock, keys=keys)


def _user_token(w: World, user: str, txn: str) -> str:
    return w.service.issue_user_token(user, audience=A, scopes=["read"], may_act="a", txn=txn)


async def test_a_connection_gives_the_requested_part_of_the_users_grant_and_audits_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent asks for ``repo`` of the ``repo read:user`` alice granted: it gets her
    upstream token with that scope only, and the audit record names the connection,
    the subject token's transaction, the scope and the token's thumbprint."""
    async with _connected_world(monkeypatch) as w:
        reply = await w.exchange("a", _user_token(w, "alice", "txn-alice-1"), API, scope="repo")
        (record,) = await w.service.audit.query()
    assert reply.status_code == 200
    body = reply.json()
    assert body["access_token"] == UPSTREAM_TOKEN
    assert body["scope"] == "repo"
    assert (record.decision, record.connection, record.target) == ("issued", "github", API)
    assert (record.user, record.user_issuer, record.txn) == ("alice", ISSUER, "txn-alice-1")
    assert record.scopes_granted == ("repo",)
    assert record.jti == "sha256:" + hashlib.sha256(UPSTREAM_TOKEN.encode()).hexdigest()[:12]


async def test_a_connection_refuses_a_scope_beyond_the_users_grant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with _connected_world(monkeypatch) as w:
        reply = await w.exchange("a", _user_token(w, "alice", "txn-2"), API, scope="repo admin")
        (record,) = await w.service.audit.query()
    status, error, description = _error(reply)
    assert (status, error) == (400, "invalid_scope")
    assert description.startswith("scope 'admin' exceeds what the user granted")
    assert UPSTREAM_TOKEN not in reply.text
    assert (record.decision, record.txn, record.scopes_granted) == ("denied", "txn-2", None)


async def test_a_user_who_has_not_connected_is_sent_to_connect_with_the_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``consent_required`` carries the connect page, with the subject token's ``txn``
    so that the connect audit record joins the chain that needed it."""
    async with _connected_world(monkeypatch) as w:
        reply = await w.exchange("a", _user_token(w, "bob", "txn-bob-7"), API)
        (record,) = await w.service.audit.query()
    status, error, _ = _error(reply)
    assert (status, error) == (400, "consent_required")
    assert reply.json()["error_uri"] == f"{ISSUER}/connections/github/connect?txn=txn-bob-7"
    assert (record.decision, record.user, record.txn) == ("denied", "bob", "txn-bob-7")


async def test_with_connections_configured_an_agent_target_still_gets_a_delegated_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connections serve only their own resources: agent B is no connection's, so the
    exchange mints this service's own delegated token."""
    async with _connected_world(monkeypatch) as w:
        reply = await w.exchange("a", _user_token(w, "alice", "txn-3"), B, scope="read")
        (record,) = await w.service.audit.query()
    assert reply.status_code == 200
    claims = claims_of(reply.json()["access_token"])
    assert (claims["iss"], claims["aud"], claims["sub"]) == (ISSUER, B, "alice")
    assert claims["txn"] == "txn-3"
    assert (record.decision, record.connection, record.jti) == ("issued", None, claims["jti"])


# -- the policy span ----------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recorded_spans() as memory:
        yield memory


async def test_the_policy_checks_run_in_their_own_span(spans: InMemorySpanExporter) -> None:
    """Under the request's server span, one ``token service policy`` span covers checks
    3 to 6, before the one that signs."""
    async with open_world() as w:
        user = await w.user_token(scope="read")
        reply = await w.exchange("a", user, B)
    assert reply.status_code == 200
    finished = spans.get_finished_spans()
    (server,) = [s for s in finished if s.name == "token service token-exchange"]
    (policy,) = [s for s in finished if s.name == "token service policy"]
    (sign,) = [s for s in finished if s.name == "token service sign"]
    assert policy.parent is not None
    assert policy.parent.span_id == server.context.span_id
    assert policy.context.trace_id == server.context.trace_id
    assert policy.end_time is not None
    assert sign.start_time is not None
    assert policy.end_time <= sign.start_time
    assert not [s for s in finished if not s.name]


# -- a metric for each refused subject token ----------------------------------------------


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    with metric_reader() as memory:
        yield memory


def _verification_failures(reader: InMemoryMetricReader) -> dict[tuple[Any, ...], int]:
    data = reader.get_metrics_data()
    counts: dict[tuple[Any, ...], int] = {}
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "keycard.token.verification.failures":
                    continue
                for point in metric.data.data_points:
                    key = tuple(sorted((point.attributes or {}).items()))
                    counts[key] = counts.get(key, 0) + int(getattr(point, "value", 0))
    return counts


def _labels(check: str) -> tuple[tuple[str, str], ...]:
    return (("keycard.check", check), ("keycard.verifier", "token_service"))


async def test_each_refused_subject_token_is_counted_with_the_check_that_refused_it(
    reader: InMemoryMetricReader,
) -> None:
    async with open_world() as w:
        to_b = w.service.issue_user_token("alice", audience=B, scopes=["read"])
        wrong_audience = await w.exchange("a", to_b, B)
        # expired at this very second: inside the verifier's leeway, refused all the same
        expiring = w.service.issue_user_token("alice", audience=A, scopes=["read"], lifetime=60)
        w.clock.advance(60)
        expired = await w.exchange("a", expiring, B)
    assert _error(wrong_audience)[:2] == (400, "invalid_request")
    assert "subject_token rejected (audience)" in _error(wrong_audience)[2]
    assert _error(expired)[:2] == (400, "invalid_request")
    assert _error(expired)[2].startswith("subject_token rejected (expired)")
    assert _verification_failures(reader) == {_labels("audience"): 1, _labels("expired"): 1}


def _durations(reader: InMemoryMetricReader) -> list[tuple[int, float]]:
    """(count, sum) of each point of the token endpoint's duration histogram."""
    data = reader.get_metrics_data()
    found: list[tuple[int, float]] = []
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "keycard.token_service.request.duration":
                    for point in metric.data.data_points:
                        assert isinstance(point, HistogramDataPoint)
                        found.append((point.count, point.sum))
    return found


async def test_a_requests_duration_is_the_time_it_took(reader: InMemoryMetricReader) -> None:
    """No threshold: the recorded duration lies within the time the test saw pass
    around the request (the endpoint's own span of it, however loaded the machine)."""
    async with open_world() as w:
        before = time.perf_counter()
        reply = await w.post_token({"grant_type": "client_credentials", **w.auth("b")})
        seen = time.perf_counter() - before
    assert reply.status_code == 200
    ((count, total),) = _durations(reader)
    assert count == 1
    assert 0 <= total <= seen


# -- a subject issuer whose keys cannot be used -------------------------------------------


async def test_a_subject_issuer_with_unusable_keys_is_the_services_500_not_a_refusal() -> None:
    """The trusted issuer's metadata sends its ``jwks_uri`` to another origin: a
    configuration problem of this service (500 ``server_error`` naming it), not the
    caller's (a 4xx would tell the agent to fix its request)."""

    def idp(request: httpx.Request) -> httpx.Response:
        if str(request.url) == f"{IDP}/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": IDP, "jwks_uri": "https://else.example/k"})
        return httpx.Response(404)

    config, keys = make_config()
    data = config.model_dump(mode="json", exclude_none=True)
    data["trusted_issuers"] = [
        {"issuer": IDP, "metadata_url": f"{IDP}/.well-known/oauth-authorization-server"}
    ]
    clock = Clock()
    now = int(clock())
    subject = SigningKey.generate("ES256").sign(
        {"iss": IDP, "sub": "carol", "aud": A, "iat": now, "exp": now + 600, "jti": "x1"},
        typ="at+jwt",
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(idp)) as http:
        service = TokenService(parse_config(data), clock=clock, http_client=http)
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
            w = World(service=service, client=client, clock=clock, keys=keys)
            reply = await w.exchange("a", subject, B)
        (record,) = await service.audit.query()
    status, error, description = _error(reply)
    assert (status, error) == (500, "server_error")
    assert description.startswith(
        "the token service cannot use the subject token issuer's keys: metadata of issuer "
        f"{IDP} points its jwks_uri to another origin"
    )
    assert (record.decision, record.error, record.client_id) == ("denied", "server_error", "a")


# -- an agent with two endpoints ------------------------------------------------------------


async def test_an_undecodable_subject_token_for_an_agent_with_two_endpoints_is_a_400() -> None:
    """With two resources the service peeks at the token's ``aud`` to pick one; a token
    it cannot even decode is refused by the verification (malformed), not a 500."""
    config, keys = make_config()
    data = config.model_dump(mode="json", exclude_none=True)
    data["agents"][0]["resources"] = ["https://a.example/mcp"]
    clock = Clock()
    service = TokenService(parse_config(data), clock=clock, audit=MemoryAuditStore())
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        w = World(service=service, client=client, clock=clock, keys=keys)
        reply = await w.exchange("a", "not-a-jwt", B)
        (record,) = await service.audit.query()
    status, error, description = _error(reply)
    assert (status, error) == (400, "invalid_request")
    assert description.startswith("subject_token rejected (malformed)")
    assert (record.decision, record.error) == ("denied", "invalid_request")


# -- what the answer and the audit keep of a long grant_type --------------------------------


@pytest.mark.parametrize(
    ("length", "kept"),
    [(100, "g" * 100), (101, "g" * 97 + "...")],
    ids=["100-kept-whole", "101-shortened"],
)
async def test_an_unsupported_grant_type_is_named_in_at_most_100_characters(
    length: int, kept: str
) -> None:
    async with open_world() as w:
        reply = await w.post_token({"grant_type": "g" * length})
        (record,) = await w.service.audit.query()
    status, error, description = _error(reply)
    assert (status, error) == (400, "unsupported_grant_type")
    assert description.startswith(f"grant_type {kept!r} is not supported; use ")
    assert record.grant_type == kept


# -- a subject that expires within the current second -------------------------------------


async def test_a_subject_expiring_within_this_second_gives_a_token_of_no_lifetime() -> None:
    """The delegated token never outlives its subject: when the subject's (fractional)
    ``exp`` falls inside the current second, the new token's whole seconds leave it
    none, and ``expires_in`` says 0, not a second the token does not have."""
    async with open_world() as w:
        now = int(w.clock())
        w.clock.advance(0.2)
        claims = {
            "iss": ISSUER,
            "sub": "alice",
            "aud": A,
            "scope": "read",
            "may_act": {"sub": "a"},
            "iat": now,
            "exp": now + 0.5,
            "jti": "short-lived",
        }
        subject = w.service.keys.current.sign(claims, typ="at+jwt")
        reply = await w.exchange("a", subject, B)
    assert reply.status_code == 200
    issued = claims_of(reply.json()["access_token"])
    assert issued["exp"] == issued["iat"] == now
    assert reply.json()["expires_in"] == 0
