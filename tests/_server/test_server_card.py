"""The public routes: the Agent Card (A2A 1.0 field rules, ETag / 304) and RFC 9728 metadata,
also when the agent's app is mounted under a path of another app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from google.protobuf import json_format
from server_support import (
    A2A_HEADERS,
    AGENT_URL,
    ISSUER,
    EchoAgent,
    TokenMinter,
    bearer,
    rpc,
    text_message,
)
from starlette.applications import Starlette

from keycard_agents import AgentMount, create_app

pytestmark = pytest.mark.anyio

MINTER = TokenMinter()
BINDINGS = {"JSONRPC", "GRPC", "HTTP+JSON"}
SCHEME_KINDS = {
    "apiKeySecurityScheme",
    "httpAuthSecurityScheme",
    "oauth2SecurityScheme",
    "openIdConnectSecurityScheme",
    "mtlsSecurityScheme",
}


def make_app(url: str = AGENT_URL) -> Starlette:
    agent = EchoAgent(url=url, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    return create_app(agent, verifier=MINTER.verifier(), card_max_age=120)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    application = make_app()
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as c:
            yield c


def no_kind_fields(value: Any) -> None:
    if isinstance(value, dict):
        assert "kind" not in value
        for item in value.values():
            no_kind_fields(item)
    elif isinstance(value, list):
        for item in value:
            no_kind_fields(item)


def check_card_rules(card: dict[str, Any], url: str) -> None:
    """A2A 1.0 Agent Card field rules (A2A spec §8)."""
    for field in (
        "name",
        "description",
        "supportedInterfaces",
        "version",
        "capabilities",
        "defaultInputModes",
        "defaultOutputModes",
        "skills",
    ):
        assert field in card, field
    assert isinstance(card["name"], str)
    assert card["name"]
    assert isinstance(card["description"], str)
    assert card["description"]
    interfaces = card["supportedInterfaces"]
    assert interfaces
    for interface in interfaces:
        assert interface["url"] == url
        assert interface["protocolBinding"] in BINDINGS  # upper case, exactly
        assert interface["protocolVersion"] == "1.0"
    assert {i["protocolBinding"] for i in interfaces} == {"JSONRPC", "HTTP+JSON"}
    capabilities = card["capabilities"]
    for flag in ("streaming", "pushNotifications", "extendedAgentCard"):
        assert isinstance(capabilities.get(flag, False), bool)
    assert capabilities["streaming"] is True
    assert capabilities["pushNotifications"] is True  # the default runtime sends them
    for extension in capabilities.get("extensions", []):
        assert isinstance(extension["uri"], str)
        assert extension["uri"].startswith("https://")
        assert isinstance(extension.get("required", False), bool)
        assert isinstance(extension.get("params", {}), dict)
    for modes in (card["defaultInputModes"], card["defaultOutputModes"]):
        assert modes
        assert all(isinstance(m, str) and "/" in m for m in modes)
    assert card["skills"]
    for skill in card["skills"]:
        for field in ("id", "name", "description", "tags"):
            assert field in skill, (skill, field)
        assert isinstance(skill["tags"], list)
    for scheme in card.get("securitySchemes", {}).values():
        assert len(scheme) == 1
        assert next(iter(scheme)) in SCHEME_KINDS
    no_kind_fields(card)
    # Every field name and enum string is one the official proto knows.
    from a2a.types.a2a_pb2 import AgentCard as ProtoAgentCard

    json_format.ParseDict(card, ProtoAgentCard(), ignore_unknown_fields=False)


async def test_card_follows_a2a_rules(client: httpx.AsyncClient) -> None:
    response = await client.get("/.well-known/agent-card.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    card = response.json()
    check_card_rules(card, AGENT_URL)
    assert card["name"] == "Echo"
    assert card["version"] == "1.2.3"
    assert {s["id"] for s in card["skills"]} == {"echo", "wait", "admin", "ping", "explode"}


async def test_card_caching_headers_and_304(client: httpx.AsyncClient) -> None:
    first = await client.get("/.well-known/agent-card.json")
    etag = first.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert first.headers["cache-control"] == "public, max-age=120"
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await client.get("/.well-known/agent-card.json", headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == "public, max-age=120"
    stale = await client.get("/.well-known/agent-card.json", headers={"If-None-Match": '"x"'})
    assert stale.status_code == 200
    assert stale.content == first.content


async def test_protected_resource_metadata(client: httpx.AsyncClient) -> None:
    response = await client.get("/.well-known/oauth-protected-resource")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["resource"] == AGENT_URL
    assert metadata["authorization_servers"] == [ISSUER]
    assert metadata["bearer_methods_supported"] == ["header"]
    assert "admin" in metadata["scopes_supported"]
    assert response.headers["etag"]


async def test_unknown_route_is_json_not_html(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route", headers=A2A_HEADERS)
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"
    wrong_method = await client.get("/", headers=A2A_HEADERS)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == 405


async def test_mounted_under_a_path() -> None:
    agent_url = "http://host.test/agents/echo"
    a2a = make_app(agent_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with a2a.router.lifespan_context(a2a):
            yield

    parent = FastAPI(lifespan=lifespan)

    @parent.get("/health")
    async def health() -> dict[str, str]:
        return {"ok": "yes"}

    parent.router.routes.append(AgentMount("/agents/echo", a2a))
    token = MINTER.token(aud=agent_url)
    async with parent.router.lifespan_context(parent):
        transport = httpx.ASGITransport(app=parent)
        async with httpx.AsyncClient(transport=transport, base_url="http://host.test") as client:
            assert (await client.get("/health")).json() == {"ok": "yes"}
            card = (await client.get("/agents/echo/.well-known/agent-card.json")).json()
            check_card_rules(card, agent_url)
            metadata = await client.get("/agents/echo/.well-known/oauth-protected-resource")
            assert metadata.json()["resource"] == agent_url
            payload = rpc("SendMessage", {"message": text_message("mounted")})
            for path in ("/agents/echo", "/agents/echo/"):
                response = await client.post(path, json=payload, headers=bearer(token))
                assert response.status_code == 200, (path, response.text)
                task = response.json()["result"]["task"]
                assert task["status"]["state"] == "TASK_STATE_COMPLETED"
            rest = await client.post(
                "/agents/echo/message:send",
                json={"message": text_message("rest")},
                headers=bearer(token),
            )
            assert rest.status_code == 200
            missing = await client.post("/agents/echo", json=payload, headers=A2A_HEADERS)
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == (
                f'Bearer resource_metadata="{agent_url}/.well-known/oauth-protected-resource"'
            )
            wrong_audience = await client.post(
                "/agents/echo", json=payload, headers=bearer(MINTER.token())
            )
            assert wrong_audience.status_code == 401


async def test_agent_asgi_app_serves_the_same_card_as_create_app() -> None:
    agent = EchoAgent(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    application = agent.asgi_app(verifier=MINTER.verifier())
    async with application.router.lifespan_context(application):  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as c:
            response = await c.get("/.well-known/agent-card.json")
    assert response.status_code == 200
    card = response.json()
    assert card["name"] == agent.agent_name
    assert card["supportedInterfaces"][0]["url"].startswith(AGENT_URL)
