"""The agent card (A2A 1.0) and RFC 9728 protected resource metadata built from an Agent."""

from __future__ import annotations

from typing import Any

import pytest
from a2a.types import a2a_pb2
from google.protobuf import json_format
from pydantic import BaseModel

from keycard_agents import (
    Agent,
    AgentDependency,
    ConfigurationError,
    Context,
    HttpDependency,
    McpDependency,
    skill,
)
from keycard_agents.a2a import (
    DELEGATION_EXTENSION_URI,
    AgentCard,
    AgentProvider,
    build_agent_card,
    dump,
)
from keycard_agents.auth import protected_resource_metadata

URL = "http://127.0.0.1:9001"
ISSUER = "http://127.0.0.1:9000"
TOKEN_ENDPOINT = "http://127.0.0.1:9000/oauth2/token"


class Itinerary(BaseModel):
    city: str
    days: int


class Planner(Agent):
    name = "planner"
    description = "Plans trips"
    version = "2.1.0"
    provider = AgentProvider(organization="Example", url="https://example.test")
    documentation_url = "https://example.test/docs"
    dependencies = (
        AgentDependency("calendar", url="http://127.0.0.1:9002", scopes=["calendar:read"]),
        McpDependency("maps", url="http://127.0.0.1:9003/mcp", scopes=["maps:read"]),
        HttpDependency("weather", resource="https://weather.test", scopes=["weather:read"]),
    )

    @skill(
        description="Plan a trip", tags=["travel"], examples=["plan Paris"], scopes=["trips:plan"]
    )
    async def plan(self, ctx: Context, city: str, days: int = 3) -> Itinerary:
        return Itinerary(city=city, days=days)

    @skill(scopes=["trips:plan", "trips:read"])
    async def describe(self, ctx: Context, text: str) -> str:
        """Describe a destination."""
        return text

    @skill(anonymous=True)
    async def ping(self) -> str:
        return "pong"


def _card_data(**options: Any) -> dict[str, Any]:
    agent = Planner(url=URL + "/", issuer=ISSUER, token_endpoint=TOKEN_ENDPOINT)
    return dump(build_agent_card(agent, **options))


def test_card_required_fields_and_interfaces() -> None:
    card = _card_data()
    for required in (
        "name",
        "description",
        "supportedInterfaces",
        "version",
        "capabilities",
        "defaultInputModes",
        "defaultOutputModes",
        "skills",
    ):
        assert required in card, required
    assert (card["name"], card["description"], card["version"]) == (
        "planner",
        "Plans trips",
        "2.1.0",
    )
    assert card["supportedInterfaces"] == [
        {"url": URL, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
        {"url": URL, "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
    ]
    assert card["provider"] == {"organization": "Example", "url": "https://example.test"}
    assert card["documentationUrl"] == "https://example.test/docs"
    caps = card["capabilities"]
    assert (caps["streaming"], caps["pushNotifications"], caps["extendedAgentCard"]) == (
        True,
        False,
        False,
    )


def test_card_skills_with_examples_modes_and_requirements() -> None:
    skills = {s["id"]: s for s in _card_data()["skills"]}
    assert skills["plan"] == {
        "id": "plan",
        "name": "Plan",
        "description": "Plan a trip",
        "tags": ["travel"],
        "examples": ["plan Paris"],
        "inputModes": ["application/json"],
        "outputModes": ["application/json"],
        "securityRequirements": [{"schemes": {"keycard": {"list": ["trips:plan"]}}}],
    }
    assert skills["describe"]["description"] == "Describe a destination."
    assert skills["describe"]["inputModes"] == ["text/plain", "application/json"]
    assert skills["describe"]["securityRequirements"] == [
        {"schemes": {"keycard": {"list": ["trips:plan", "trips:read"]}}}
    ]
    assert skills["ping"]["securityRequirements"] == [{"schemes": {}}]  # no auth needed


def test_security_scheme_describes_the_token_service() -> None:
    card = _card_data()
    oauth2 = card["securitySchemes"]["keycard"]["oauth2SecurityScheme"]
    assert oauth2["oauth2MetadataUrl"] == ISSUER + "/.well-known/oauth-authorization-server"
    flow = oauth2["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == TOKEN_ENDPOINT
    assert set(flow["scopes"]) == {"trips:plan", "trips:read"}
    # an anonymous skill exists, so the card-level requirement is left to the skills
    assert "securityRequirements" not in card


def test_card_level_requirement_when_every_skill_needs_a_token() -> None:
    class Private(Agent):
        @skill(scopes=["a"])
        async def run(self) -> None: ...

    agent = Private(url=URL, issuer=ISSUER, token_endpoint=TOKEN_ENDPOINT, metadata_url="https://m")
    card = dump(build_agent_card(agent))
    assert card["securityRequirements"] == [{"schemes": {"keycard": {"list": []}}}]
    assert card["securitySchemes"]["keycard"]["oauth2SecurityScheme"]["oauth2MetadataUrl"] == (
        "https://m"
    )
    assert card["name"] == "Private"


def test_delegation_extension_params() -> None:
    (extension,) = _card_data()["capabilities"]["extensions"]
    assert extension["uri"] == DELEGATION_EXTENSION_URI
    assert extension["required"] is False
    params = extension["params"]
    assert params["tokenService"] == {
        "issuer": ISSUER,
        "tokenEndpoint": TOKEN_ENDPOINT,
        "metadataUrl": ISSUER + "/.well-known/oauth-authorization-server",
    }
    assert [(d["kind"], d["name"]) for d in params["dependencies"]] == [
        ("agent", "calendar"),
        ("mcp", "maps"),
        ("http", "weather"),
    ]
    assert params["dependencies"][2]["resource"] == "https://weather.test"
    plan = params["skills"]["plan"]
    assert plan["inputSchema"]["required"] == ["city"]
    assert plan["inputSchema"]["properties"]["days"]["default"] == 3
    assert plan["outputSchema"]["title"] == "Itinerary"
    assert (plan["scopes"], plan["anonymous"]) == (["trips:plan"], False)
    assert params["skills"]["ping"]["anonymous"] is True
    assert params["skills"]["ping"]["outputSchema"] == {"type": "string"}


def test_card_parses_with_the_official_sdk() -> None:
    from a2a.client.card_resolver import parse_agent_card

    data = _card_data()
    strict = json_format.ParseDict(data, a2a_pb2.AgentCard())  # rejects unknown fields
    assert strict.supported_interfaces[0].protocol_binding == "JSONRPC"
    assert strict.capabilities.extensions[0].params["skills"]["plan"]["scopes"] == ["trips:plan"]
    assert strict.security_schemes["keycard"].oauth2_security_scheme.flows.client_credentials
    parsed = parse_agent_card(data)
    assert parsed.name == "planner"
    assert AgentCard.model_validate(data) == build_agent_card(
        Planner(url=URL, issuer=ISSUER, token_endpoint=TOKEN_ENDPOINT)
    )


def test_card_without_token_service_has_no_security_schemes() -> None:
    card = dump(build_agent_card(Planner(), base_url="http://agent.test/x/"))
    assert "securitySchemes" not in card
    assert "securityRequirements" not in card["skills"][0]
    assert "tokenService" not in card["capabilities"]["extensions"][0]["params"]
    assert card["supportedInterfaces"][0]["url"] == "http://agent.test/x"


def test_card_options_override_the_agent() -> None:
    card = _card_data(
        base_url="https://public.test/planner",
        issuer="https://zone.test",
        token_endpoint="https://zone.test/token",
        streaming=False,
        extended_agent_card=True,
    )
    assert card["supportedInterfaces"][1]["url"] == "https://public.test/planner"
    assert card["capabilities"]["streaming"] is False
    assert card["capabilities"]["extendedAgentCard"] is True
    params = card["capabilities"]["extensions"][0]["params"]
    assert params["tokenService"]["issuer"] == "https://zone.test"


def test_card_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="URL"):
        build_agent_card(Planner())
    with pytest.raises(ConfigurationError, match="token endpoint"):
        build_agent_card(Planner(url=URL), issuer=ISSUER)


def test_protected_resource_metadata() -> None:
    agent = Planner(url=URL, issuer=ISSUER, token_endpoint=TOKEN_ENDPOINT)
    assert protected_resource_metadata(agent) == {
        "resource": URL,
        "authorization_servers": [ISSUER],
        # the skills' scopes, then what the agent delegates: the whole chain's needs
        "scopes_supported": [
            "trips:plan",
            "trips:read",
            "calendar:read",
            "maps:read",
            "weather:read",
        ],
        "bearer_methods_supported": ["header"],
        "resource_name": "planner",
        "resource_documentation": "https://example.test/docs",
    }
    other = protected_resource_metadata(
        agent, resource="https://public.test", authorization_servers=["https://a", "https://b"]
    )
    assert other["resource"] == "https://public.test"
    assert other["authorization_servers"] == ["https://a", "https://b"]
    with pytest.raises(ConfigurationError):
        protected_resource_metadata(Planner())
