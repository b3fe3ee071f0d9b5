"""Signing key rotation: old tokens keep verifying within retention, new ones use the new kid."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from sts_support import ISSUER, JWT_BEARER, A, B, Clock, World, claims_of, make_config

from keycard_agents import InvalidTokenError
from keycard_agents.auth import KeyStore, StaticKeys, TokenVerifier
from keycard_agents.sts import TokenService

pytestmark = pytest.mark.anyio


def _header_kid(token: str) -> str:
    head = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"])


async def test_rotation_keeps_old_tokens_valid_until_retention(tmp_path: Path) -> None:
    config, _ = make_config(key_dir=str(tmp_path / "keys"))
    clock = Clock()
    service = TokenService(config, clock=clock)
    old_token = service.issue_user_token("alice", audience=A, scopes=["read"], lifetime=3600)
    old_kid = _header_kid(old_token)
    assert (tmp_path / "keys" / f"{old_kid}.json").stat().st_mode & 0o777 == 0o600

    clock.advance(60)
    new_kid = service.keys.rotate().kid
    assert new_kid != old_kid
    new_token = service.issue_user_token("alice", audience=A, scopes=["read"])
    assert _header_kid(new_token) == new_kid

    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        jwks = (await client.get("/jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]
    verifier = TokenVerifier(issuers=[ISSUER], keys=StaticKeys({ISSUER: jwks}), clock=clock)
    assert (await verifier.verify(old_token, audience=A)).user == "alice"
    assert (await verifier.verify(new_token, audience=A)).user == "alice"

    # retention = the longest token lifetime (3600 s): then the old key is withdrawn
    clock.advance(3600)
    kids = [k["kid"] for k in service.keys.public_jwks()["keys"]]
    assert kids == [new_kid]
    later = TokenVerifier(
        issuers=[ISSUER], keys=StaticKeys({ISSUER: service.keys.public_jwks()}), clock=clock
    )
    with pytest.raises(InvalidTokenError) as info:
        await later.verify(old_token, audience=A)
    assert info.value.check in {"unknown_key", "expired"}


async def test_service_picks_up_rotation_done_by_another_process(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    config, agent_keys = make_config(key_dir=str(key_dir))
    clock = Clock()
    service = TokenService(config, clock=clock)
    before = service.keys.current.kid
    subject = service.issue_user_token("alice", audience=A, scopes=["read"], may_act="a")

    # what `keycard-agents sts rotate-key` does, from its own KeyStore instance
    rotated = KeyStore(key_dir, clock=clock, retention=config.longest_lifetime()).rotate()
    assert rotated.kid != before
    assert service.keys.current.kid == before  # the directory is looked at once a second
    clock.advance(1)
    assert service.keys.current.kid == rotated.kid
    assert {k["kid"] for k in service.keys.public_jwks()["keys"]} == {before, rotated.kid}

    # a restarted service loads the same keys from disk
    again = TokenService(config, clock=clock)
    assert again.keys.current.kid == rotated.kid

    # the token signed before the rotation is still accepted as a subject token
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        world = World(service=service, client=client, clock=clock, keys=agent_keys)
        reply = await client.post(
            "/token",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": subject,
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "resource": B,
                "client_assertion_type": JWT_BEARER,
                "client_assertion": world.assertion("a"),
            },
        )
    assert reply.status_code == 200, reply.text
    assert _header_kid(reply.json()["access_token"]) == rotated.kid
    assert claims_of(reply.json()["access_token"])["act"]["sub"] == "a"
