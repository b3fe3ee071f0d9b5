"""Delegation policy (``_policy``): the edges a mutation run showed no test pinned. An
agent with several resources (its A2A and its MCP endpoint) exchanges a token sent to
either, and only to those (``dev.py mutation sts``, docs/testing.md)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sts_support import ISSUER, B, World, make_config, open_world

from keycard_agents import OAuthError
from keycard_agents._sts._policy import check_audience  # internal: the module's own API
from keycard_agents.auth import SigningKey

pytestmark = pytest.mark.anyio

MCP = "https://a.example/mcp"


@asynccontextmanager
async def _two_endpoints() -> AsyncIterator[World]:
    """The usual world, but agent a also serves ``MCP``."""
    base, _ = make_config()
    key = SigningKey.generate("ES256")
    agents: list[dict[str, Any]] = []
    for agent in base.agents:
        data = agent.model_dump(mode="json", exclude_none=True)
        if agent.client_id == "a":
            data.update(resources=[MCP], jwks={"keys": [key.public_jwk()]})
        agents.append(data)
    async with open_world(agents=agents) as w:
        w.keys["a"] = key
        yield w


def _user(w: World, **claims: Any) -> str:
    now = int(w.clock())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "scope": "read",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    return str(w.service.keys.current.sign(base, typ="at+jwt"))


@pytest.mark.parametrize("aud", [MCP, [MCP]], ids=["string", "list-of-one"])
async def test_a_token_sent_to_an_agents_second_endpoint_is_exchanged(aud: Any) -> None:
    async with _two_endpoints() as w:
        reply = await w.exchange("a", _user(w, aud=aud), B)
        (record,) = await w.service.audit.query()
    assert reply.status_code == 200, reply.text
    assert (record.decision, record.client_id, record.target) == ("issued", "a", B)
    if isinstance(aud, str):  # the audit says which endpoint the token was sent to
        assert record.resource == MCP


@pytest.mark.parametrize(
    "aud", [B, [MCP, B], "https://a.example/mcp/"], ids=["other-agent", "two", "near-miss"]
)
async def test_a_token_sent_elsewhere_fails_its_audience_check(aud: Any) -> None:
    """Not one of the agent's endpoints: the token is verified against the agent's main
    resource and fails there, whatever the (unverified) ``aud`` it brings."""
    async with _two_endpoints() as w:
        reply = await w.exchange("a", _user(w, aud=aud), B)
    assert reply.status_code == 400
    body = reply.json()
    assert body["error"] == "invalid_request"
    assert body["error_description"].startswith("subject_token rejected (audience): ")


async def test_a_token_without_aud_is_refused_as_such_by_an_agent_with_two_endpoints() -> None:
    async with _two_endpoints() as w:
        reply = await w.exchange("a", _user(w), B)
    assert reply.status_code == 400
    body = reply.json()
    assert body["error"] == "invalid_request"
    assert body["error_description"].startswith("subject_token rejected (")
    assert "aud" in body["error_description"]


@pytest.mark.parametrize(
    ("token_scope", "remedy"),
    [
        (
            "read",  # B accepts write, but the user's token does not carry it
            "the user's token does not carry 'write': the client must request it when the "
            "user signs in",
        ),
        (
            "read write admin",  # the token carries admin, but B does not accept it
            f"{B} does not accept 'admin': register the scope for it",
        ),
    ],
    ids=["not-in-the-token", "not-accepted-by-the-target"],
)
async def test_a_scope_beyond_the_delegable_ones_names_what_to_fix(
    token_scope: str, remedy: str
) -> None:
    async with open_world() as w:
        subject = _user(w, aud="https://a.example/", scope=token_scope)
        wanted = "read write" if token_scope == "read" else "read admin"
        reply = await w.exchange("a", subject, B, scope=wanted)
    assert reply.status_code == 400
    assert reply.json()["error"] == "invalid_scope"
    assert remedy in reply.json()["error_description"]


def test_audience_chaining_refuses_a_token_for_another_resource_by_itself() -> None:
    """The policy's own check, whatever the verification before it already refused."""
    config, _ = make_config()
    agent = config.agent("a")
    assert agent is not None
    check_audience({"aud": "https://a.example/"}, agent)
    check_audience({"aud": ["https://a.example/"]}, agent)
    for aud in ("https://b.example/", ["https://a.example/", B], None):
        with pytest.raises(OAuthError) as refused:
            check_audience({"aud": aud}, agent)
        assert refused.value.error == "invalid_request"
        assert "an agent may only exchange tokens that were sent to it" in str(refused.value)


@pytest.mark.parametrize("may_act", ["a", {"sub": 7}, ["a"]])
async def test_a_malformed_may_act_is_refused_with_the_rfc_reference(may_act: Any) -> None:
    async with open_world() as w:
        reply = await w.exchange("a", _user(w, aud="https://a.example/", may_act=may_act), B)
    assert reply.status_code == 400
    assert reply.json() == {
        "error": "invalid_request",
        "error_description": "subject_token has a malformed 'may_act' claim (RFC 8693 §4.4)",
    }
