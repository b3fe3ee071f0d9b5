"""Property-based fuzzing of the ``/token`` request parsing (hypothesis).

Whatever bytes, content type, parameters or ``Authorization`` header arrive, the token
service answers with a documented OAuth error (RFC 6749 §5.2 JSON, ``no-store``), never
a 5xx and never a token.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_from_bytes

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sts_support import EXCHANGE, ISSUER, JWT_BEARER, make_config

from keycard_agents.sts import TokenService

#: Every error code the token endpoint documents (docs/token-service.md, troubleshooting).
DOCUMENTED = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "invalid_scope",
    "invalid_target",
    "unauthorized_client",
    "unsupported_grant_type",
    "temporarily_unavailable",
}
STATUSES = {400, 401, 413, 429, 503}
PARAMS = [
    "grant_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "resource",
    "audience",
    "scope",
    "code",
    "code_verifier",
    "redirect_uri",
]
VALUES = [
    "client_credentials",
    "authorization_code",
    EXCHANGE,
    JWT_BEARER,
    "urn:ietf:params:oauth:token-type:access_token",
    "a",
    "b",
    "app",
    "https://b.example/",
    "x.y.z",
    "eyJhbGciOiJub25lIn0.e30.",
    "read write",
]

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,  # no example files left in the working tree
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def service() -> TokenService:
    config, _ = make_config(limits={"failed_auth_per_source": 1_000_000})
    return TokenService(config)


def _post(service: TokenService, backend: str, **request: Any) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
            return await client.post("/token", **request)

    return anyio.run(send, backend=backend)


def _check(reply: httpx.Response) -> None:
    assert reply.status_code in STATUSES, (reply.status_code, reply.text[:300])
    assert reply.headers["cache-control"] == "no-store"
    body = reply.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] in DOCUMENTED, body
    assert isinstance(body["error_description"], str)
    assert body["error_description"]
    if reply.status_code in (429, 503):
        assert int(reply.headers["retry-after"]) >= 1


form_values = st.one_of(st.sampled_from(VALUES), st.text(max_size=60))
forms = st.lists(
    st.tuples(st.one_of(st.sampled_from(PARAMS), st.text(max_size=20)), form_values),
    max_size=12,
)


def _encode(pairs: list[tuple[str, str]]) -> bytes:
    def part(text: str) -> str:
        return quote_from_bytes(text.encode("utf-8", "surrogatepass"), safe="")

    return "&".join(f"{part(k)}={part(v)}" for k, v in pairs).encode("ascii")


backends = pytest.mark.parametrize("backend", ["asyncio", "trio"])


@backends
@SETTINGS
@given(pairs=forms)
def test_any_well_encoded_form_gets_a_documented_error(
    service: TokenService, backend: str, pairs: list[tuple[str, str]]
) -> None:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    _check(_post(service, backend, content=_encode(pairs), headers=headers))


@backends
@SETTINGS
@given(
    body=st.binary(max_size=400),
    content_type=st.one_of(
        st.none(),
        st.sampled_from(
            [
                "application/x-www-form-urlencoded",
                "application/x-www-form-urlencoded; charset=utf-8",
                "application/x-www-form-urlencoded; charset=latin-1",
                "application/json",
                "multipart/form-data; boundary=x",
                "text/plain",
            ]
        ),
        st.text(max_size=40).filter(lambda t: t.isprintable() and t.isascii()),
    ),
)
def test_any_bytes_get_a_documented_error(
    service: TokenService, backend: str, body: bytes, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    _check(_post(service, backend, content=body, headers=headers))


def _basic(user: bytes, password: bytes) -> str:
    return "Basic " + base64.b64encode(user + b":" + password).decode()


authorizations: st.SearchStrategy[str] = st.one_of(
    st.builds(_basic, st.binary(max_size=30), st.binary(max_size=30)),
    st.builds(lambda s: "Basic " + s, st.text(max_size=40)),
    st.builds(lambda s: "Bearer " + s, st.text(max_size=40)),
    st.text(max_size=40),
).filter(lambda h: h.isascii() and h.isprintable())


@backends
@SETTINGS
@given(authorization=authorizations, pairs=forms)
def test_any_authorization_header_gets_a_documented_error(
    service: TokenService, backend: str, authorization: str, pairs: list[tuple[str, str]]
) -> None:
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "authorization": authorization,
    }
    _check(_post(service, backend, content=_encode(pairs), headers=headers))


def test_the_fuzzers_reach_the_interesting_paths(service: TokenService) -> None:
    """A sanity check of the strategies: known inputs give the expected codes."""
    cases: list[tuple[Callable[[], httpx.Response], str]] = [
        (lambda: _post(service, "asyncio", content=b"grant_type=x"), "invalid_request"),
        (
            lambda: _post(
                service,
                "asyncio",
                content=_encode([("grant_type", "client_credentials")]),
                headers={"content-type": "application/x-www-form-urlencoded"},
            ),
            "invalid_client",
        ),
        (
            lambda: _post(
                service,
                "asyncio",
                content=_encode([("grant_type", "nope")]),
                headers={"content-type": "application/x-www-form-urlencoded"},
            ),
            "unsupported_grant_type",
        ),
    ]
    for send, error in cases:
        reply = send()
        _check(reply)
        assert reply.json()["error"] == error
