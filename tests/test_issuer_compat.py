"""Working with issuers we did not write (issue 14): explicit endpoints, identifiers kept
exactly as configured, per-issuer token profiles, keys served for environment-only
credentials, and skills that require a human subject.
"""

from __future__ import annotations

import httpx
import pytest
from test_server_support import A2A_HEADERS, ISSUER, EchoAgent, TokenMinter, call_message, rpc

from keycard_agents import (
    ClientSecret,
    InvalidTokenError,
    create_app,
    delegation_for,
    resolve_issuer,
)

pytestmark = pytest.mark.anyio


# ------------------------------------------------------------------ explicit settings


async def test_agent_token_endpoint_and_metadata_url_reach_the_exchange_client() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(404)

    agent = EchoAgent(
        url="http://agent.test",
        issuer="https://idp.example/realms/acme",
        token_endpoint="https://idp.example/realms/acme/protocol/openid-connect/token",
        metadata_url="https://idp.example/realms/acme/.well-known/openid-configuration",
        credential=ClientSecret("echo", "echo-secret"),
    )
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    delegation = delegation_for(agent, http_client=http)
    try:
        exchange = delegation.exchange
        assert await exchange.token_endpoint() == agent.token_endpoint
        assert seen == []  # nothing discovered: the configured endpoint is used as is
    finally:
        await delegation.aclose()
        await http.aclose()


# ------------------------------------------------------------------ identifiers kept exactly


def test_zone_url_keeps_its_trailing_slash() -> None:
    assert resolve_issuer(zone_url="https://acme.keycard.cloud/", env={}) == (
        "https://acme.keycard.cloud/"
    )
    assert resolve_issuer(env={"KEYCARD_ZONE_URL": "https://acme.keycard.cloud/"}) == (
        "https://acme.keycard.cloud/"
    )


async def test_agent_url_with_trailing_slash_is_its_resource() -> None:
    # Keycard registers resources with a trailing slash (mcp_base_url gets one): the agent
    # must publish and accept exactly that string.
    minter = TokenMinter()
    url = "http://agent.test/echo/"
    agent = EchoAgent(url=url, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    app = create_app(agent, verifier=minter.verifier())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent.test") as http:
            metadata = (await http.get("/.well-known/oauth-protected-resource")).json()
            assert metadata["resource"] == url
            message = rpc("SendMessage", {"message": call_message("echo", {"text": "hi"})})
            ok = await http.post(
                "/",
                json=message,
                headers={"Authorization": f"Bearer {minter.token(aud=url)}", **A2A_HEADERS},
            )
            assert ok.status_code == 200, ok.text
            stripped = minter.token(aud=url.rstrip("/"))
            refused = await http.post(
                "/", json=message, headers={"Authorization": f"Bearer {stripped}", **A2A_HEADERS}
            )
            assert refused.status_code == 401


async def test_audience_differing_by_a_slash_says_so() -> None:
    minter = TokenMinter()
    verifier = minter.verifier()
    with pytest.raises(InvalidTokenError, match="differ only by a trailing '/'") as info:
        await verifier.verify(minter.token(aud="http://agent.test/"), audience="http://agent.test")
    assert info.value.check == "audience"
