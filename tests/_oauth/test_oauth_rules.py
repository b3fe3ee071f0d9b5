"""The one home of each RFC rule (``keycard_agents._oauth``): URLs, origins, resource
identifiers, the bearer challenge, the HTTP retry and size policy, PKCE.

Where two copies of a rule used to disagree, the test names the RFC text it pins.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime

import httpx
import pytest

from keycard_agents._oauth._challenge import bearer_challenge, parse_challenges, quote
from keycard_agents._oauth._http import (
    MAX_DOCUMENT_BYTES,
    DocumentTooLargeError,
    freshness,
    is_retryable_status,
    read_document,
    retry_after,
)
from keycard_agents._oauth._urls import (
    authorization_server_metadata_url,
    openid_configuration_url,
    origin,
    protected_resource_metadata_url,
    resource_metadata_url_under,
    same_origin,
    same_resource,
)
from keycard_agents.sts import pkce_challenge

# -- RFC 8414 §3.1 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        ("https://as.test", "https://as.test/.well-known/oauth-authorization-server"),
        ("https://as.test/", "https://as.test/.well-known/oauth-authorization-server"),
        (
            "https://as.test/tenant/1",
            "https://as.test/.well-known/oauth-authorization-server/tenant/1",
        ),
        (
            "https://as.test:8443/tenants/a/",
            "https://as.test:8443/.well-known/oauth-authorization-server/tenants/a",
        ),
    ],
)
def test_rfc8414_inserts_the_well_known_segment_before_the_path(issuer: str, expected: str) -> None:
    assert authorization_server_metadata_url(issuer) == expected


def test_openid_discovery_appends_to_the_issuer() -> None:
    assert openid_configuration_url("https://as.test/tenant/") == (
        "https://as.test/tenant/.well-known/openid-configuration"
    )


# -- RFC 9728 §3.1 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("https://rs.test/mcp", "https://rs.test/.well-known/oauth-protected-resource/mcp"),
        ("https://rs.test/", "https://rs.test/.well-known/oauth-protected-resource"),
        ("https://rs.test", "https://rs.test/.well-known/oauth-protected-resource"),
        # The query follows the path (the old agent-client copy dropped it).
        (
            "https://rs.test/api?tenant=a",
            "https://rs.test/.well-known/oauth-protected-resource/api?tenant=a",
        ),
    ],
)
def test_rfc9728_inserts_the_well_known_segment_before_path_and_query(
    resource: str, expected: str
) -> None:
    assert protected_resource_metadata_url(resource) == expected


def test_agents_publish_their_metadata_under_their_own_url() -> None:
    assert resource_metadata_url_under("https://h.test/agents/p/") == (
        "https://h.test/agents/p/.well-known/oauth-protected-resource"
    )
    # For an agent at the root both locations are the same URL.
    root = "https://h.test"
    assert resource_metadata_url_under(root) == protected_resource_metadata_url(root)


# -- RFC 6454 §4-§5: origins -----------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://as.test/x", "https://AS.test:443/jwks"),  # default port (the old
        ("http://h.test", "http://h.test:80/a"),  # A2A-client copy refused these)
        ("HTTPS://h.test/a", "https://h.test/b?q=1"),
        ("https://user:pw@h.test/a", "https://h.test/b"),  # userinfo is no part of it
    ],
)
def test_same_origin_applies_default_ports_and_ignores_userinfo(a: str, b: str) -> None:
    assert same_origin(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://h.test", "http://h.test"),
        ("https://h.test", "https://h.test:8443"),
        ("https://h.test", "https://other.test"),
        ("https://h.test:bad/", "https://h.test:bad/"),  # no origin: never equal
        ("/relative", "/relative"),
    ],
)
def test_different_origins(a: str, b: str) -> None:
    assert not same_origin(a, b)


def test_origin_is_scheme_host_and_port() -> None:
    assert origin("HTTPS://Example.test/x") == ("https", "example.test", 443)
    assert origin("mailto:someone@example.test") is None


# -- RFC 9728 §3.3 with RFC 3986 §6.2.2-§6.2.3: resource identifiers --------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://tools.test/mcp", "HTTPS://Tools.test:443/mcp"),
        ("https://tools.test", "https://tools.test/"),  # an empty path is "/"
        ("https://[::1]:443/x", "https://[::1]/x"),
    ],
)
def test_same_resource_after_rfc3986_normalization(a: str, b: str) -> None:
    assert same_resource(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # RFC 9728 §3.3 wants the identical identifier: a trailing slash on a path names
        # another resource (both old copies forgave it).
        ("https://tools.test/mcp/", "https://tools.test/mcp"),
        ("https://tools.test/MCP", "https://tools.test/mcp"),  # paths are case-sensitive
        ("https://tools.test/other", "https://tools.test/mcp"),
        ("https://tools.test:8443/mcp", "https://tools.test/mcp"),
        ("https://tools.test/mcp?a=1", "https://tools.test/mcp"),
    ],
)
def test_different_resources(a: str, b: str) -> None:
    assert not same_resource(a, b)


# -- RFC 6750 §3 / RFC 9110 §11.2: the bearer challenge ------------------------------------


def test_the_challenge_unescapes_every_quoted_pair() -> None:
    header = 'Bearer realm="a\\"b", error_description="back\\\\slash \\q"'
    assert bearer_challenge(header) == {"realm": 'a"b', "error_description": "back\\slash q"}


def test_resource_metadata_with_escaped_quotes_is_read_whole() -> None:
    # The old MCP copy stopped at the first quote, escaped or not.
    header = 'Bearer resource_metadata="https://rs.test/m?x=\\"y\\""'
    assert bearer_challenge(header)["resource_metadata"] == 'https://rs.test/m?x="y"'


def test_token_values_and_case_insensitive_names() -> None:
    header = 'Bearer Error=invalid_token, SCOPE="read write"'
    assert bearer_challenge(header) == {"error": "invalid_token", "scope": "read write"}


def test_only_the_bearer_challenge_counts() -> None:
    header = 'Basic realm="basic", error="nope", Bearer error="insufficient_scope", scope="a"'
    assert parse_challenges(header) == [
        ("basic", {"realm": "basic", "error": "nope"}),
        ("bearer", {"error": "insufficient_scope", "scope": "a"}),
    ]
    assert bearer_challenge(header) == {"error": "insufficient_scope", "scope": "a"}
    assert bearer_challenge('Basic realm="x"') == {}
    assert bearer_challenge(None) == {}
    assert bearer_challenge("Bearer") == {}


def test_token68_credentials_are_kept_apart() -> None:
    assert parse_challenges("Negotiate abc==, Bearer realm=x") == [
        ("negotiate", {"": "abc=="}),
        ("bearer", {"realm": "x"}),
    ]


def test_quote_round_trips() -> None:
    value = 'say "hi" \\ bye'
    assert bearer_challenge(f"Bearer error_description={quote(value)}") == {
        "error_description": value
    }


# -- RFC 9110 §15.6, RFC 6585 §4, §10.2.3: retries -------------------------------------------


@pytest.mark.parametrize(("status", "retry"), [(429, True), (500, True), (503, True), (599, True)])
def test_server_errors_and_too_many_requests_are_retried(status: int, retry: bool) -> None:
    # The old JWKS copy did not retry 429.
    assert is_retryable_status(status) is retry


@pytest.mark.parametrize("status", [200, 304, 400, 401, 403, 404, 408, 413, 600])
def test_other_answers_are_not_retried(status: int) -> None:
    assert not is_retryable_status(status)


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after(httpx.Response(503, headers={"Retry-After": "7"})) == 7.0
    moment = datetime(2030, 1, 1, tzinfo=timezone.utc)
    dated = httpx.Response(429, headers={"Retry-After": format_datetime(moment, usegmt=True)})
    assert retry_after(dated, clock=lambda: moment.timestamp() - 12) == 12.0
    assert retry_after(dated, clock=lambda: moment.timestamp() + 5) == 0.0
    assert retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None
    assert retry_after(httpx.Response(503)) is None


# -- one size cap for every document ------------------------------------------------------


@pytest.mark.anyio
async def test_documents_are_cut_off_past_the_one_size_cap() -> None:
    # The JWKS copy allowed 512 KiB, the discovery copy 1 MiB: one cap now.
    assert MAX_DOCUMENT_BYTES == 1024 * 1024
    small = httpx.Response(200, content=b"x" * MAX_DOCUMENT_BYTES)
    assert len(await read_document(small)) == MAX_DOCUMENT_BYTES
    large = httpx.Response(200, content=b"x" * (MAX_DOCUMENT_BYTES + 1))
    with pytest.raises(DocumentTooLargeError, match="larger than"):
        await read_document(large)


def test_freshness_follows_cache_control_and_age() -> None:
    assert freshness(httpx.Response(200, headers={"Cache-Control": "max-age=60"})) == (True, 60)
    aged = httpx.Response(200, headers={"Cache-Control": "max-age=60", "Age": "50"})
    assert freshness(aged) == (True, 10)
    assert freshness(httpx.Response(200, headers={"Cache-Control": "no-cache"})) == (True, 0)
    assert freshness(httpx.Response(200, headers={"Cache-Control": "no-store"})) == (False, 0)


# -- RFC 7636 ---------------------------------------------------------------------------


def test_pkce_s256_matches_the_rfc7636_appendix_b_example() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
