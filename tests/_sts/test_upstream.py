"""The token service as a client of an upstream provider: hostile or broken answers.

``httpx.MockTransport`` plays providers that misbehave (the happy paths run against
npm ``oidc-provider`` in ``test_connections.py``): each answer is refused with an
``UpstreamError`` whose message names the problem and never echoes a token.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keycard_agents._sts._connections._pages import _local_next
from keycard_agents._sts._connections._upstream import UpstreamError, UpstreamProvider
from keycard_agents.sts import ConnectionConfig

pytestmark = pytest.mark.anyio

ISSUER = "https://provider.example"
SECRET_TOKEN = "upstream-access-token-never-shown"


def _provider(handler: Any, **fields: Any) -> tuple[UpstreamProvider, httpx.AsyncClient]:
    connection = ConnectionConfig(
        name="gh",
        resources=("https://api.example/",),
        client_id="keycard",
        client_secret_env="UNUSED",
        **({"issuer": ISSUER} | fields),
    )
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return UpstreamProvider(connection, http=http, client_secret="s"), http


def _metadata(**extra: Any) -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        **extra,
    }


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (200, b"not json", "invalid_response", "not a JSON object"),
        (200, {"token_type": "Bearer"}, "invalid_response", "no usable access_token"),
        (200, {"access_token": SECRET_TOKEN, "token_type": "mac"}, "invalid_response", "Bearer"),
        (
            200,
            {"access_token": SECRET_TOKEN, "token_type": "Bearer", "expires_in": -5},
            "invalid_response",
            "expires_in",
        ),
        (
            200,
            {"access_token": SECRET_TOKEN, "token_type": "Bearer", "refresh_token": 7},
            "invalid_response",
            "refresh_token",
        ),
        (400, {"error": "invalid_grant", "error_description": "code reused"}, "invalid_grant", ""),
        (400, {"error": "bad\ncode" + SECRET_TOKEN}, "invalid_response", ""),
        (502, b"", "unreachable", "HTTP 502"),
    ],
)
async def test_a_misbehaving_token_endpoint_is_refused(
    status: int, body: Any, error: str, text: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/.well-known/oauth-authorization-server"):
            return httpx.Response(200, json=_metadata())
        assert request.headers["authorization"].startswith("Basic ")  # client_secret_basic
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body)

    provider, http = _provider(handler)
    async with http:
        with pytest.raises(UpstreamError) as caught:
            await provider.redeem_code("c", redirect_uri="https://sts/cb", code_verifier="v" * 43)
    assert caught.value.error == error
    assert text in str(caught.value)
    assert SECRET_TOKEN not in str(caught.value)


async def test_metadata_naming_another_issuer_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=_metadata(issuer="https://evil.example"))

    provider, http = _provider(handler)
    async with http:
        with pytest.raises(UpstreamError) as caught:
            await provider.endpoints()
    assert caught.value.error == "invalid_response"
    assert "evil.example" in str(caught.value)


async def test_discovery_falls_back_to_openid_configuration_and_finds_revocation() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=_metadata(revocation_endpoint=f"{ISSUER}/revoke"))
        if request.url.path == "/revoke":
            return httpx.Response(200)
        return httpx.Response(404)

    provider, http = _provider(handler)
    async with http:
        endpoints = await provider.endpoints()
        assert await provider.revoke("t", hint="refresh_token") is True
    assert endpoints.revocation_endpoint == f"{ISSUER}/revoke"
    assert seen[:2] == [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ]


def test_the_sign_in_redirect_stays_on_the_connections_pages() -> None:
    root = "/connections"
    assert _local_next("/connections/github/connect?txn=ab", root) == (
        "/connections/github/connect?txn=ab"
    )
    for hostile in ("//evil.example/connections", "https://evil.example/connections", "/admin"):
        assert _local_next(hostile, root) == root
    assert _local_next("/connections\\..\\x", root) == root
    assert _local_next(None, root) == root
