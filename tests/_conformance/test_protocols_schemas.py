"""protocols/schemas/ matches the models, and what the code emits matches the schemas."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import jsonschema
import pytest
from pydantic import BaseModel

from keycard_agents import Agent, AgentDependency, Context, HttpDependency, McpDependency, skill
from keycard_agents._jose._claims import protocol_schemas
from keycard_agents.a2a import DELEGATION_EXTENSION_URI, build_agent_card, dump

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "protocols" / "schemas"


def schema(name: str) -> dict[str, Any]:
    return dict(json.loads((SCHEMAS / name).read_text(encoding="utf-8")))


def validator(name: str) -> jsonschema.Draft202012Validator:
    body = schema(name)
    jsonschema.Draft202012Validator.check_schema(body)
    return jsonschema.Draft202012Validator(body)


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_schemas_match_the_models() -> None:
    rendered = load_script("gen_schemas").render()
    assert sorted(rendered) == sorted(p.name for p in SCHEMAS.glob("*.json"))
    for name, content in rendered.items():
        assert (SCHEMAS / name).read_text(encoding="utf-8") == content, (
            f"protocols/schemas/{name} drifted from the code: run scripts/gen_schemas.py"
        )


def test_gen_schemas_check_mode_reports_drift(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = load_script("gen_schemas")
    monkeypatch.setattr(gen, "SCHEMAS", tmp_path)
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0
    (tmp_path / "agent-card.schema.json").write_text("{}\n", encoding="utf-8")
    assert gen.main(["--check"]) == 1


@pytest.mark.parametrize("name", sorted(protocol_schemas()))
def test_schemas_are_valid_2020_12_with_ids(name: str) -> None:
    body = validator(name).schema
    assert body["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert body["$id"].endswith("/" + name)


class Report(BaseModel):
    city: str
    days: int


class Planner(Agent):
    name = "planner"
    description = "Plans trips"
    dependencies = (
        AgentDependency("calendar", url="http://127.0.0.1:9002", scopes=["calendar:read"]),
        AgentDependency("helper", description="resolved by name"),
        McpDependency("maps", url="http://127.0.0.1:9003/mcp", scopes=["maps:read"]),
        HttpDependency("weather", resource="https://weather.test", scopes=["weather:read"]),
    )

    @skill(scopes=["trips:plan"])
    async def plan(self, ctx: Context, city: str, days: int = 3) -> Report:
        return Report(city=city, days=days)

    @skill(anonymous=True)
    async def ping(self) -> str:
        return "pong"


@pytest.mark.parametrize("issuer", [None, "http://127.0.0.1:9000"])
def test_emitted_card_and_params_match_their_schemas(issuer: str | None) -> None:
    endpoint = None if issuer is None else issuer + "/token"
    agent = Planner(url="http://127.0.0.1:9001", issuer=issuer, token_endpoint=endpoint)
    card = dump(build_agent_card(agent))
    validator("agent-card.schema.json").validate(card)
    (extension,) = card["capabilities"]["extensions"]
    assert extension["uri"] == DELEGATION_EXTENSION_URI
    validator("delegation-extension-params.schema.json").validate(extension["params"])
    assert ("tokenService" in extension["params"]) is (issuer is not None)


def test_params_schema_rejects_what_the_extension_does_not_define() -> None:
    agent = Planner(url="http://127.0.0.1:9001")
    params = dump(build_agent_card(agent))["capabilities"]["extensions"][0]["params"]
    check = validator("delegation-extension-params.schema.json")
    for broken in (
        {**params, "extra": 1},
        {**params, "dependencies": [{"kind": "ftp", "name": "x", "scopes": []}]},
        {k: v for k, v in params.items() if k != "skills"},
        {**params, "skills": {"plan": {"inputSchema": {}, "scopes": []}}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            check.validate(broken)


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@pytest.mark.anyio
async def test_issued_tokens_match_the_claims_schemas() -> None:
    from test_protocols_vectors import VECTORS, Clock, conformance_service

    from keycard_agents.auth import SigningKey

    alpha = SigningKey.from_jwk(
        json.loads((VECTORS / "keys" / "alpha.private.jwk.json").read_text(encoding="utf-8"))
    )
    clock = Clock()
    service = conformance_service(clock, allow_repeated_agents=True)
    user = service.issue_user_token(
        "alice",
        audience="https://alpha.conformance.test/",
        scopes=["read", "write"],
        may_act="conformance-alpha",
    )
    validator("user-token-claims.schema.json").validate(_claims(user))
    exchange = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
    }
    now = int(clock())
    assertion = alpha.sign(
        {
            "iss": "conformance-alpha",
            "sub": "conformance-alpha",
            "aud": service.issuer,
            "iat": now,
            "exp": now + 60,
            "jti": "schema-test-1",
        },
        typ="client-authentication+jwt",
    )
    async with service.app.router.lifespan_context(service.app):
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url=service.issuer) as client:
            first = await client.post(
                "/token",
                data={
                    **exchange,
                    "subject_token": user,
                    "resource": "https://beta.conformance.test/",
                    "client_assertion_type": (
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                    ),
                    "client_assertion": assertion,
                },
            )
            assert first.status_code == 200, first.text
            second = await client.post(
                "/token",
                data={
                    **exchange,
                    "subject_token": first.json()["access_token"],
                    "resource": "https://alpha.conformance.test/",
                },
                auth=("conformance-beta", "conformance-beta-secret-TEST-ONLY-not-for-production"),
            )
            assert second.status_code == 200, second.text
    delegated_schema = validator("delegated-token-claims.schema.json")
    for reply in (first, second):
        delegated_schema.validate(_claims(reply.json()["access_token"]))
    claims = _claims(second.json()["access_token"])
    assert claims["act"]["act"]["sub"] == "conformance-alpha"
    for broken in (
        {k: v for k, v in claims.items() if k != "act"},
        {**claims, "aud": [claims["aud"]]},
        {**claims, "scope": "read  write"},
        {**claims, "act": {"iss": service.issuer}},
        {**claims, "act": {"sub": "a", "act": {"sub": 3}}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            delegated_schema.validate(broken)
