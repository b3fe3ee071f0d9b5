"""Happy paths through the HTTP token endpoint, verified the way receivers verify."""

from __future__ import annotations

import pytest
from sts_support import AT, EXCHANGE, ISSUER, A, B, C, D, claims_of, open_world

from keycard_agents.auth import StaticKeys, TokenVerifier

pytestmark = pytest.mark.anyio


async def test_three_hop_chain_narrows_scopes_and_keeps_txn() -> None:
    async with open_world() as w:
        user_token = await w.user_token(scope="read write")
        user_claims = claims_of(user_token)
        assert user_claims["sub"] == "alice"
        assert user_claims["aud"] == A
        assert user_claims["may_act"] == {"sub": "a"}
        assert user_claims["client_id"] == "app"
        txn = user_claims["txn"]

        # hop 1: a -> b, keeping both scopes
        r1 = await w.exchange("a", user_token, B)
        assert r1.status_code == 200, r1.text
        assert r1.headers["cache-control"] == "no-store"
        body1 = r1.json()
        assert body1["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
        assert body1["token_type"] == "Bearer"
        assert body1["scope"] == "read write"
        assert "refresh_token" not in body1
        # hop 2: b -> c, narrowed to read (c accepts only read)
        r2 = await w.exchange("b", body1["access_token"], C, scope="read")
        assert r2.status_code == 200, r2.text
        final = r2.json()["access_token"]

        verifier = TokenVerifier(
            issuers=[ISSUER],
            keys=StaticKeys({ISSUER: w.service.keys.public_jwks()}),
            clock=w.clock,
        )
        at_b = await verifier.verify(body1["access_token"], audience=B)
        assert at_b.actors.subjects() == ("a",)
        assert at_b.txn == txn
        at_c = await verifier.verify(final, audience=C, required_scopes=["read"])
        assert at_c.user == "alice"
        assert at_c.actors.subjects() == ("b", "a")
        assert at_c.scopes == frozenset({"read"})
        assert at_c.txn == txn
        assert at_c.client_id == "b"
        assert at_c.render_chain(receiver="c") == "alice → a → b → c"
        raw = claims_of(final)
        assert raw["act"] == {"sub": "b", "iss": ISSUER, "act": {"sub": "a", "iss": ISSUER}}
        assert raw["exp"] <= user_claims["exp"]
        assert w.service.stats.exchanges == 2


async def test_default_scope_is_the_whole_intersection() -> None:
    async with open_world() as w:
        user = w.service.issue_user_token("alice", audience=A, scopes=["read", "admin"])
        r = await w.exchange("a", user, C)
        assert r.status_code == 200, r.text
        assert r.json()["scope"] == "read"


async def test_delegated_token_never_outlives_its_subject() -> None:
    async with open_world() as w:
        user = w.service.issue_user_token("alice", audience=A, scopes=["read"], lifetime=100)
        r = await w.exchange("a", user, B)
        assert r.status_code == 200
        assert r.json()["expires_in"] == 100
        assert claims_of(r.json()["access_token"])["exp"] == claims_of(user)["exp"]


async def test_client_credentials_token_works_as_actor_token() -> None:
    async with open_world() as w:
        r = await w.post_token({"grant_type": "client_credentials", **w.auth("a")})
        assert r.status_code == 200, r.text
        actor = r.json()["access_token"]
        claims = claims_of(actor)
        assert claims["sub"] == claims["client_id"] == "a"
        assert claims["aud"] == ISSUER
        assert r.json()["expires_in"] == 300
        user = w.service.issue_user_token("alice", audience=A, scopes=["read"], may_act="a")
        ok = await w.exchange(
            "a",
            user,
            B,
            actor_token=actor,
            actor_token_type="urn:ietf:params:oauth:token-type:access_token",
        )
        assert ok.status_code == 200, ok.text


async def test_client_secret_basic_and_external_txn_created() -> None:
    async with open_world() as w:
        user = w.service.issue_user_token("alice", audience=A, scopes=["read"], txn="t-1")
        hop = await w.exchange("a", user, B)
        token_b = hop.json()["access_token"]
        r = await w.client.post(
            "/token",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": token_b,
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "resource": C,
            },
            auth=("b", "b-secret-0123456789"),
        )
        assert r.status_code == 200, r.text
        assert claims_of(r.json()["access_token"])["txn"] == "t-1"


async def test_metadata_and_jwks() -> None:
    async with open_world() as w:
        meta = (await w.client.get("/.well-known/oauth-authorization-server")).json()
        assert meta["issuer"] == ISSUER
        assert meta["token_endpoint"] == f"{ISSUER}/token"
        assert meta["jwks_uri"] == f"{ISSUER}/jwks.json"
        assert meta["authorization_endpoint"] == f"{ISSUER}/authorize"
        assert "urn:ietf:params:oauth:grant-type:token-exchange" in meta["grant_types_supported"]
        assert {"client_credentials", "authorization_code"} <= set(meta["grant_types_supported"])
        assert meta["token_endpoint_auth_methods_supported"] == [
            "private_key_jwt",
            "client_secret_basic",
            "client_secret_post",
            "none",
        ]
        assert meta["code_challenge_methods_supported"] == ["S256"]
        assert meta["response_types_supported"] == ["code"]
        jwks = (await w.client.get("/jwks.json")).json()
        assert [k["kid"] for k in jwks["keys"]] == [w.service.keys.current.kid]
        assert all("d" not in k for k in jwks["keys"])


@pytest.mark.parametrize(
    "target",
    [
        pytest.param({"audience": "b"}, id="audience by client id"),
        pytest.param({"audience": B}, id="audience as absolute URI"),
        pytest.param({"resource": B, "audience": B}, id="resource and audience, Keycard style"),
        pytest.param({"resource": B, "audience": "b"}, id="resource and the same target by name"),
    ],
)
async def test_audience_names_the_target(target: dict[str, str]) -> None:
    # RFC 8693 §2.1: audience (a logical name or an absolute URI) names where the token is
    # used, alone or with resource; Keycard's SDK always sends both.
    async with open_world() as w:
        user = w.service.issue_user_token("alice", audience=A, scopes=["read"], may_act="a")
        form = {"grant_type": EXCHANGE, "subject_token": user, "subject_token_type": AT}
        r = await w.post_token({**form, **target, **w.auth("a")})
        assert r.status_code == 200, r.text
        assert claims_of(r.json()["access_token"])["aud"] == B
        [record] = [x for x in await w.service.audit.query() if x.decision == "issued"]
        assert record.target == B


async def test_audience_names_a_resource_by_its_name() -> None:
    resources = [{"resource": D, "scopes": ["read"], "name": "reports-api"}]
    async with open_world(resources=resources) as w:
        hop = await w.exchange(
            "a", w.service.issue_user_token("alice", audience=A, scopes=["read"]), C
        )
        form = {"grant_type": EXCHANGE, "subject_token": hop.json()["access_token"]}
        r = await w.post_token(
            {**form, "subject_token_type": AT, "audience": "reports-api", **w.auth("c")}
        )
        assert r.status_code == 200, r.text
        assert claims_of(r.json()["access_token"])["aud"] == D
