"""Working with issuers we did not write (issue 14): explicit endpoints, identifiers kept
exactly as configured, per-issuer token profiles, keys served for environment-only
credentials, and skills that require a human subject.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from joserfc import jws
from server_support import (
    A2A_HEADERS,
    AGENT_URL,
    ISSUER,
    EchoAgent,
    TokenMinter,
    call_message,
    rpc,
)

from keycard_agents import (
    ClientSecret,
    ConfigurationError,
    Context,
    HttpDependency,
    InvalidTokenError,
    WebIdentity,
    create_app,
    resolve_issuer,
    skill,
)
from keycard_agents.auth import StaticKeys, TokenProfile, TokenVerifier, TrustedIssuer
from keycard_agents.delegation import delegation_for

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


# ------------------------------------------------------------------ token profiles per issuer

KEYCLOAK = "https://idp.example/realms/acme"


def signed(minter: TokenMinter, claims: dict[str, object], **header: str) -> str:
    """A token with exactly this header (joserfc's jwt.encode would add a typ)."""
    protected = {"alg": "ES256", "kid": minter.kid, **header}
    payload = json.dumps(claims).encode()
    return jws.serialize_compact(protected, payload, minter.key, algorithms=["ES256"])


def _claims(issuer: str, **extra: object) -> dict[str, object]:
    now = int(time.time())
    claims = {"iss": issuer, "sub": "alice", "aud": AGENT_URL, "iat": now, "exp": now + 60}
    return {**claims, **extra}


def keycloak_token(minter: TokenMinter) -> str:
    """A Keycloak-shaped access token: typ JWT, the client in azp, no jti."""
    return signed(minter, _claims(minter.issuer, azp="web-app"), typ="JWT")


async def test_default_profile_refuses_foreign_token_shapes() -> None:
    minter = TokenMinter(KEYCLOAK)
    verifier = TokenVerifier(issuers=[KEYCLOAK], keys=StaticKeys({KEYCLOAK: minter.jwks()}))
    with pytest.raises(InvalidTokenError) as info:
        await verifier.verify(keycloak_token(minter), audience=AGENT_URL)
    assert info.value.check == "type"


async def test_issuer_profile_accepts_what_that_issuer_issues() -> None:
    minter = TokenMinter(KEYCLOAK)
    ours = TokenMinter()
    profile = TokenProfile(token_types=("JWT",), require_jti=False, client_claim="azp")
    verifier = TokenVerifier(
        issuers=[TrustedIssuer(KEYCLOAK, profile=profile), ISSUER],
        keys=StaticKeys({KEYCLOAK: minter.jwks(), ISSUER: ours.jwks()}),
    )
    principal = await verifier.verify(keycloak_token(minter), audience=AGENT_URL)
    assert principal.user == "alice"
    assert principal.client_id == "web-app"  # from azp, as the profile says
    # The relaxation is per issuer: our own issuer still must send at+jwt with a jti.
    with pytest.raises(InvalidTokenError, match="issues 'at\\+jwt'") as info:
        await verifier.verify(ours.token(typ="JWT"), audience=AGENT_URL)
    assert info.value.check == "type"
    with pytest.raises(InvalidTokenError, match="jti") as missing:
        await verifier.verify(signed(ours, _claims(ISSUER), typ="at+jwt"), audience=AGENT_URL)
    assert missing.value.check == "claims"
    # Everything else is still checked for the relaxed issuer.
    with pytest.raises(InvalidTokenError) as audience:
        await verifier.verify(minter.token(typ="JWT", aud="http://other.test"), audience=AGENT_URL)
    assert audience.value.check == "audience"


async def test_profile_may_accept_tokens_without_typ() -> None:
    minter = TokenMinter(KEYCLOAK)
    keys = StaticKeys({KEYCLOAK: minter.jwks()})
    untyped = TrustedIssuer(KEYCLOAK, profile=TokenProfile(token_types=(None, "at+jwt")))
    token = signed(minter, _claims(KEYCLOAK, jti="j-1"))
    assert await TokenVerifier(issuers=[untyped], keys=keys).verify(token, audience=AGENT_URL)
    strict = TokenVerifier(issuers=[KEYCLOAK], keys=keys)
    with pytest.raises(InvalidTokenError, match="no 'typ' header"):
        await strict.verify(token, audience=AGENT_URL)


def test_profile_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="token_types"):
        TokenProfile(token_types=())
    with pytest.raises(ValueError, match="token_types"):
        TokenProfile(token_types="JWT")  # type: ignore[arg-type]


# ------------------------------------------------------------------ keys of env-only credentials


async def test_env_only_web_identity_publishes_its_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # keycard-agents serve with KEYCARD_WEB_IDENTITY_DIR and no credential= in code: the
    # issuer registered <agent>/.well-known/jwks.json must find the key assertions use.
    monkeypatch.setenv("KEYCARD_CLIENT_ID", "echo")
    monkeypatch.setenv("KEYCARD_WEB_IDENTITY_DIR", str(tmp_path / "keys"))
    for name in ("KEYCARD_CLIENT_SECRET", "KEYCARD_APPLICATION_CREDENTIAL_TYPE"):
        monkeypatch.delenv(name, raising=False)

    class Caller(EchoAgent):
        dependencies = (HttpDependency("api", resource="http://api.test"),)

    for agent in (EchoAgent, Caller):
        app = create_app(
            agent(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token"),
            verifier=TokenMinter().verifier(),
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as http:
                reply = await http.get("/.well-known/jwks.json")
        assert reply.status_code == 200, agent
        [key] = reply.json()["keys"]
        assert "d" not in key
        # The same key the delegation signs its client assertions with.
        assert key["kid"] == WebIdentity("echo", storage_dir=tmp_path / "keys").kid


async def test_no_keys_published_for_a_client_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYCARD_CLIENT_ID", "echo")
    monkeypatch.setenv("KEYCARD_CLIENT_SECRET", "echo-secret")
    monkeypatch.delenv("KEYCARD_WEB_IDENTITY_DIR", raising=False)
    monkeypatch.delenv("KEYCARD_APPLICATION_CREDENTIAL_TYPE", raising=False)
    app = create_app(
        EchoAgent(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token"),
        verifier=TokenMinter().verifier(),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as http:
            assert (await http.get("/.well-known/jwks.json")).status_code == 404


# ------------------------------------------------------------------ a user, not a client


class Payroll(EchoAgent):
    @skill(require_user=True)
    async def payslip(self, ctx: Context) -> str:
        """Only for a signed-in user."""
        assert ctx.principal is not None
        return f"payslip of {ctx.principal.user}"

    @skill
    async def status(self, ctx: Context) -> str:
        """Machines may ask too (the default)."""
        return "up"


class StrictPayroll(Payroll):
    require_user = True

    @skill(require_user=False)
    async def health(self, ctx: Context) -> str:
        """Explicitly open to clients."""
        return "ok"


@pytest.mark.parametrize(
    ("agent_class", "skill_id", "client_allowed"),
    [
        (Payroll, "payslip", False),
        (Payroll, "status", True),
        (StrictPayroll, "status", False),  # the class default applies
        (StrictPayroll, "health", True),
    ],
)
async def test_require_user_refuses_client_credentials_tokens(
    agent_class: type[EchoAgent], skill_id: str, client_allowed: bool
) -> None:
    minter = TokenMinter()
    app = create_app(
        agent_class(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token"),
        verifier=minter.verifier(),
    )
    # RFC 9068 §2.2: a client-credentials token names the client as its subject.
    machine = minter.token(sub="cron-job", client_id="cron-job")
    user = minter.token(sub="alice", client_id="web-app")
    message = rpc("SendMessage", {"message": call_message(skill_id, {})})
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as http:
            as_user = await http.post("/", json=message, headers=_bearer(user))
            as_client = await http.post("/", json=message, headers=_bearer(machine))
    assert as_user.status_code == 200, as_user.text
    assert "result" in as_user.json()
    if client_allowed:
        assert as_client.status_code == 200, as_client.text
    else:
        assert as_client.status_code == 403
        challenge = as_client.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge
        assert "not a client" in challenge


def test_require_user_and_anonymous_contradict() -> None:
    with pytest.raises(ConfigurationError, match="require_user"):
        skill(anonymous=True, require_user=True)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **A2A_HEADERS}
