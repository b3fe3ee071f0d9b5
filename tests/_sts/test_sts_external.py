"""Keys fetched over HTTP: trusted external issuers and agents with a jwks_uri."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sts_support import (
    AT,
    EXCHANGE,
    ISSUER,
    JWT_BEARER,
    A,
    B,
    Clock,
    World,
    claims_of,
    make_config,
    open_world,
)

from keycard_agents.auth import SigningKey
from keycard_agents.sts import AuditRecord, TokenService, parse_config

pytestmark = pytest.mark.anyio

IDP = "https://idp.example"


def _idp_transport(idp_key: SigningKey, agent_key: SigningKey) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == f"{IDP}/jwks":
            return httpx.Response(200, json={"keys": [idp_key.public_jwk()]})
        if str(request.url) == "https://agents.example/x/jwks.json":
            return httpx.Response(200, json={"keys": [agent_key.public_jwk()]})
        return httpx.Response(404)

    return httpx.MockTransport(handler)


def _external_config(agent_key: SigningKey) -> tuple[Any, dict[str, SigningKey]]:
    config, keys = make_config()
    data = config.model_dump(mode="json")
    data["trusted_issuers"] = [{"issuer": IDP, "jwks_uri": f"{IDP}/jwks"}]
    data["agents"].append(
        {
            "client_id": "x",
            "resource": "https://x.example/",
            "auth": "private_key_jwt",
            "jwks_uri": "https://agents.example/x/jwks.json",
            "scopes": ["read"],
            "dependencies": [B],
        }
    )
    return parse_config(data), keys


async def test_external_user_token_and_jwks_uri_agent() -> None:
    idp_key = SigningKey.generate("EdDSA")
    agent_key = SigningKey.generate("RS256")
    clock = Clock()
    http = httpx.AsyncClient(transport=_idp_transport(idp_key, agent_key))
    config, _ = _external_config(agent_key)
    service = TokenService(config, clock=clock, http_client=http)
    now = int(clock())
    external = idp_key.sign(
        {
            "iss": IDP,
            "sub": "carol@idp",
            "aud": "https://x.example/",
            "scope": "read profile",
            "iat": now,
            "exp": now + 600,
            "jti": "ext-1",
        },
        typ="at+jwt",
    )
    assertion = agent_key.sign(
        {"iss": "x", "sub": "x", "aud": ISSUER, "iat": now, "exp": now + 60, "jti": "j1"},
        typ="JWT",  # the plain typ is accepted for client assertions too
    )
    async with service.app.router.lifespan_context(service.app):
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
            form = {
                "grant_type": EXCHANGE,
                "subject_token": external,
                "subject_token_type": AT,
                "resource": B,
                "client_assertion_type": JWT_BEARER,
                "client_assertion": assertion,
            }
            reply = await client.post("/token", data=form)
            assert reply.status_code == 200, reply.text
            claims = claims_of(reply.json()["access_token"])
            assert claims["iss"] == ISSUER
            assert claims["sub"] == "carol@idp"
            assert claims["scope"] == "read"
            assert claims["act"] == {"sub": "x", "iss": ISSUER}
            assert len(claims["txn"]) == 32  # a new txn: the external token had none

            # a token from an issuer that is not trusted is refused
            stranger = SigningKey.generate("ES256").sign(
                {"iss": "https://other.example", "sub": "eve", "aud": "https://x.example/",
                 "iat": now, "exp": now + 600},
                typ="at+jwt",
            )  # fmt: skip
            again = agent_key.sign(
                {"iss": "x", "sub": "x", "aud": ISSUER, "iat": now, "exp": now + 60, "jti": "j2"},
                typ="JWT",
            )
            form.update(subject_token=stranger, client_assertion=again)
            reply = await client.post("/token", data=form)
            assert reply.status_code == 400
            assert reply.json()["error"] == "invalid_request"  # RFC 8693 §2.2.2
            assert "(issuer)" in reply.json()["error_description"]
    assert not http.is_closed  # the caller's client is the caller's to close
    await http.aclose()


async def test_unreachable_issuer_keys_are_a_503_not_a_500() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)  # not retried: the answer comes at once

    async with httpx.AsyncClient(transport=httpx.MockTransport(down)) as http:
        config, keys = _external_config(SigningKey.generate("ES256"))
        clock = Clock()
        service = TokenService(config, clock=clock, http_client=http)
        now = int(clock())
        token = SigningKey.generate("ES256").sign(
            {"iss": IDP, "sub": "c", "aud": A, "iat": now, "exp": now + 60}, typ="at+jwt"
        )
        assertion = keys["a"].sign(
            {"iss": "a", "sub": "a", "aud": ISSUER, "iat": now, "exp": now + 60, "jti": "q"},
            typ="client-authentication+jwt",
        )
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
            reply = await client.post(
                "/token",
                data={
                    "grant_type": EXCHANGE,
                    "subject_token": token,
                    "subject_token_type": AT,
                    "resource": B,
                    "client_assertion_type": JWT_BEARER,
                    "client_assertion": assertion,
                },
            )
        assert reply.status_code == 503
        assert reply.json()["error"] == "temporarily_unavailable"
        (record,) = await service.audit.query()
        assert (record.decision, record.client_id, record.user) == ("denied", "a", None)


class _BrokenAudit:
    async def append(self, record: AuditRecord) -> None:
        raise RuntimeError("disk full at /secret/path")

    async def query(self, **kwargs: Any) -> list[AuditRecord]:
        return []


async def test_internal_errors_become_server_error_without_internals() -> None:
    config, _ = make_config()
    service = TokenService(config, audit=_BrokenAudit(), clock=Clock())
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        reply = await client.post("/token", data={"grant_type": "nope"})
    assert reply.status_code == 500
    body = reply.json()
    assert body["error"] == "server_error"
    assert "secret" not in body["error_description"]
    assert "RuntimeError" not in body["error_description"]


async def test_client_secret_post_and_unknown_client() -> None:
    async with open_world() as w:
        ok = await w.post_token(
            {
                "grant_type": "client_credentials",
                "client_id": "b",
                "client_secret": "b-secret-0123456789",
            }
        )
        assert ok.status_code == 200
        bad = await w.post_token(
            {"grant_type": "client_credentials", "client_id": "zz", "client_secret": "x"}
        )
        assert bad.status_code == 401
        assert "www-authenticate" not in bad.headers  # only for HTTP Basic
        # an agent with a secret cannot authenticate by assertion, nor the reverse
        assertion = w.assertion("a", sub="a")
        form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER}
        wrong = await w.post_token({**form, "client_assertion": assertion, "client_id": "b"})
        assert wrong.status_code == 401
        post_a = await w.post_token(
            {"grant_type": "client_credentials", "client_id": "a", "client_secret": "x"}
        )
        assert post_a.status_code == 401
        # one answer for all three: it does not tell which client ids exist or how they
        # authenticate; the audit record keeps the precise reason for the operator
        descriptions = {r.json()["error_description"] for r in (bad, wrong, post_a)}
        assert len(descriptions) == 1
        reasons = [r.reason or "" for r in await w.service.audit.query() if r.error]
        assert "unknown client 'zz'" in reasons[0]
        assert "client secret, not private_key_jwt" in reasons[1]
        assert "private_key_jwt" in reasons[2]
        assert uuid.UUID(claims_of(ok.json()["access_token"])["jti"])


async def test_trusted_issuer_profile_relaxes_only_that_issuer() -> None:
    # A Keycloak-shaped user token (typ JWT, no jti, the client in azp) is exchanged when
    # its issuer's [[trusted_issuers]] entry declares that shape; our own tokens stay strict.
    idp_key = SigningKey.generate("ES256")
    clock = Clock()
    http = httpx.AsyncClient(transport=_idp_transport(idp_key, SigningKey.generate("ES256")))
    config, keys = make_config()
    data = config.model_dump(mode="json")
    data["trusted_issuers"] = [
        {
            "issuer": IDP,
            "jwks_uri": f"{IDP}/jwks",
            "token_types": ["JWT"],
            "require_jti": False,
            "client_claim": "azp",
        }
    ]
    service = TokenService(parse_config(data), clock=clock, http_client=http)
    now = int(clock())
    claims = {"iss": IDP, "sub": "carol", "aud": A, "azp": "web", "scope": "read"}
    keycloak = idp_key.sign({**claims, "iat": now, "exp": now + 600}, typ="JWT")
    own = service.minter.mint(sub="alice", aud=A, lifetime=600, extra={"scope": "read"})[0]
    own_untyped = service.keys.current.sign(claims_of(own), typ="JWT")
    async with service.app.router.lifespan_context(service.app):
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
            w = World(service=service, client=client, clock=clock, keys=keys)
            ok = await w.exchange("a", keycloak, B)
            assert ok.status_code == 200, ok.text
            assert claims_of(ok.json()["access_token"])["sub"] == "carol"
            refused = await w.exchange("a", own_untyped, B)
            assert refused.status_code == 400
            assert refused.json()["error"] == "invalid_request"
            assert "(type)" in refused.json()["error_description"]
    await http.aclose()
