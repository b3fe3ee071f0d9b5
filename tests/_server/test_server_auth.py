"""Inbound authentication: 401 / 403 answers and their RFC 6750 / RFC 9728 challenges."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from server_support import (
    A2A_HEADERS,
    AGENT_URL,
    ISSUER,
    EchoAgent,
    TokenMinter,
    bearer,
    call_message,
    rpc,
    text_message,
)
from starlette.applications import Starlette

from keycard_agents import (
    Agent,
    AuthenticationError,
    InsufficientScopeError,
    InvalidTokenError,
    IssuerUnreachableError,
    KeycardError,
    Principal,
    UserRequiredError,
    create_app,
    skill,
)
from keycard_agents._oauth._resource_server import (
    AuthFailure,
    BearerAuthenticator,
    MissingCredentialsError,
    auth_failure,
    bearer_token,
)
from keycard_agents.a2a import build_agent_card

pytestmark = pytest.mark.anyio

MINTER = TokenMinter()
METADATA = f"{AGENT_URL}/.well-known/oauth-protected-resource"
MISSING_CHALLENGE = f'Bearer resource_metadata="{METADATA}"'


def invalid_challenge(check: str) -> str:
    return (
        f'Bearer error="invalid_token", error_description="the access token failed the '
        f'{check} check", resource_metadata="{METADATA}"'
    )


class PrivateAgent(Agent):
    """No anonymous skill: every A2A request needs a token."""

    @skill
    async def hello(self, text: str) -> str:
        return text


def make_app(verifier: Any = None) -> Starlette:
    agent = EchoAgent(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    return create_app(agent, verifier=verifier or MINTER.verifier())


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    application = make_app()
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as c:
            yield c


def send(text: str = "hi") -> dict[str, Any]:
    return rpc("SendMessage", {"message": text_message(text)})


# ------------------------------------------------------------------ missing token


async def test_missing_token_jsonrpc(client: httpx.AsyncClient) -> None:
    response = await client.post("/", json=send(), headers=A2A_HEADERS)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == MISSING_CHALLENGE
    assert "error=" not in response.headers["www-authenticate"]
    body = response.json()
    assert body["error"]["code"] == -32600
    assert body["error"]["data"][0]["reason"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/message:send"),
        ("POST", "/message:stream"),
        ("GET", "/tasks"),
        ("GET", "/tasks/t1"),
        ("POST", "/tasks/t1:cancel"),
        ("POST", "/tasks/t1:subscribe"),
        ("GET", "/extendedAgentCard"),
    ],
)
async def test_missing_token_rest(method: str, path: str) -> None:
    kwargs: dict[str, Any] = {"headers": A2A_HEADERS}
    if method == "POST":
        kwargs["json"] = {"message": text_message("x")} if "message" in path else {}
    application = create_app(PrivateAgent(url=AGENT_URL), verifier=MINTER.verifier())
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            response = await client.request(method, path, **kwargs)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == MISSING_CHALLENGE
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"


async def test_other_scheme_counts_as_missing(client: httpx.AsyncClient) -> None:
    headers = {**A2A_HEADERS, "Authorization": "Basic YWxpY2U6cHc="}
    response = await client.post("/", json=send(), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == MISSING_CHALLENGE


async def test_card_and_metadata_need_no_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/.well-known/agent-card.json")).status_code == 200
    metadata = await client.get("/.well-known/oauth-protected-resource")
    assert metadata.status_code == 200
    assert metadata.json()["resource"] == AGENT_URL


# ------------------------------------------------------------------ invalid token


@pytest.mark.parametrize(
    ("mint", "check"),
    [
        (lambda: MINTER.token(aud="http://other-agent.test"), "audience"),
        (lambda: MINTER.token(lifetime=-3600), "expired"),
        (lambda: MINTER.token(typ="JWT"), "type"),
        (lambda: TokenMinter(kid="test-key").token(), "signature"),
        (lambda: TokenMinter("https://evil.test").token(), "issuer"),
        (lambda: "not-a-jwt", "malformed"),
    ],
)
async def test_invalid_token(
    client: httpx.AsyncClient, mint: Callable[[], str], check: str
) -> None:
    token = mint()
    for request in (
        client.build_request("POST", "/", json=send(), headers=bearer(token)),
        client.build_request("GET", "/tasks", headers=bearer(token)),
    ):
        response = await client.send(request)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == invalid_challenge(check)
        assert token not in response.text
        assert token not in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    "value",
    [b"Bearer", b"Bearer ", b"Bearer a b", "Bearer ä".encode()],
    ids=["bare", "empty", "two-parts", "non-ascii"],  # node ids a tool can pass back
)
async def test_malformed_authorization_header(client: httpx.AsyncClient, value: bytes) -> None:
    headers: dict[str, Any] = {**A2A_HEADERS, "Authorization": value}
    response = await client.post("/", json=send(), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == invalid_challenge("malformed")


def test_bearer_token_parsing() -> None:
    assert bearer_token({}) is None
    assert bearer_token({"authorization": "Basic abc"}) is None
    assert bearer_token({"authorization": "bearer abc.def-_~+/=="}) == "abc.def-_~+/=="
    assert bearer_token({"authorization": "  Bearer   tok  "}) == "tok"
    with pytest.raises(InvalidTokenError) as info:
        bearer_token({"authorization": "Bearer " + "a" * 20_000})
    assert info.value.check == "malformed"


async def test_issuer_unreachable_is_503_without_challenge() -> None:
    class Unreachable:
        async def verify(self, token: str, *, audience: str, required_scopes: Any = ()) -> Any:
            raise IssuerUnreachableError("keys could not be fetched")

    application = make_app(Unreachable())
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            response = await client.post("/", json=send(), headers=bearer(MINTER.token()))
            rest = await client.get("/tasks", headers=bearer(MINTER.token()))
    assert response.status_code == 503
    assert "www-authenticate" not in response.headers
    assert response.json()["error"]["code"] == -32603
    assert rest.status_code == 503
    assert rest.json()["error"]["status"] == "UNAVAILABLE"


async def test_verifier_sees_the_agent_url_as_audience() -> None:
    audiences: list[str] = []

    class Recording:
        async def verify(self, token: str, *, audience: str, required_scopes: Any = ()) -> Any:
            audiences.append(audience)
            return Principal(user="u", issuer=ISSUER, audience=(audience,), scopes=frozenset())

    application = make_app(Recording())
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            response = await client.post("/", json=send(), headers=bearer("opaque"))
    assert response.status_code == 200
    assert audiences == [AGENT_URL]


# -------------------------------------------------------- scopes and anonymous skills


async def test_insufficient_scope_jsonrpc(client: httpx.AsyncClient) -> None:
    payload = rpc("SendMessage", {"message": call_message("admin", {"action": 1})})
    response = await client.post("/", json=payload, headers=bearer(MINTER.token()))
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope", scope="admin"')
    assert challenge.endswith(f'resource_metadata="{METADATA}"')
    assert "admin" in response.json()["error"]["message"]


async def test_insufficient_scope_rest(client: httpx.AsyncClient) -> None:
    body = {"message": call_message("admin", {"action": 1})}
    response = await client.post("/message:send", json=body, headers=bearer(MINTER.token()))
    assert response.status_code == 403
    assert response.headers["www-authenticate"].startswith(
        'Bearer error="insufficient_scope", scope="admin"'
    )
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"


async def test_insufficient_scope_stream(client: httpx.AsyncClient) -> None:
    payload = rpc("SendStreamingMessage", {"message": call_message("admin", {"action": 1})})
    response = await client.post("/", json=payload, headers=bearer(MINTER.token()))
    assert response.status_code == 403
    assert "insufficient_scope" in response.headers["www-authenticate"]


async def test_scope_granted(client: httpx.AsyncClient) -> None:
    payload = rpc("SendMessage", {"message": call_message("admin", {"action": 2})})
    token = MINTER.token(scopes=("admin",))
    response = await client.post("/", json=payload, headers=bearer(token))
    assert response.status_code == 200
    assert response.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_anonymous_skill_without_token(client: httpx.AsyncClient) -> None:
    payload = rpc("SendMessage", {"message": call_message("ping", {"count": 3})})
    response = await client.post("/", json=payload, headers=A2A_HEADERS)
    assert response.status_code == 200
    task = response.json()["result"]["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_anonymous_skill_with_invalid_token_is_refused(client: httpx.AsyncClient) -> None:
    payload = rpc("SendMessage", {"message": call_message("ping", {"count": 3})})
    token = MINTER.token(aud="http://other-agent.test")
    response = await client.post("/", json=payload, headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == invalid_challenge("audience")


async def test_non_anonymous_skill_without_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/", json=send(), headers=A2A_HEADERS)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == MISSING_CHALLENGE


async def test_anonymous_caller_lists_no_task_and_cannot_read_extended_card() -> None:
    application = create_app(
        EchoAgent(url=AGENT_URL),
        verifier=MINTER.verifier(),
        extended_card=lambda c: build_agent_card(EchoAgent(url=AGENT_URL)),
    )
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            # The card allows anonymous calls (EchoAgent has an anonymous skill): listing
            # is answered, with no task, since no task is visible to anonymous callers.
            listed = await client.post("/", json=rpc("ListTasks", {}), headers=A2A_HEADERS)
            assert listed.status_code == 200
            assert listed.json()["result"].get("tasks", []) == []
            response = await client.post(
                "/", json=rpc("GetExtendedAgentCard", {}), headers=A2A_HEADERS
            )
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == MISSING_CHALLENGE


async def test_agent_without_anonymous_skills_refuses_before_parsing() -> None:
    application = create_app(PrivateAgent(url=AGENT_URL), verifier=MINTER.verifier())
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            response = await client.post("/", json=rpc("NoSuchMethod"), headers=A2A_HEADERS)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == MISSING_CHALLENGE


async def test_tokens_from_the_embedded_token_service(tmp_path: Any) -> None:
    from keycard_agents.auth import TokenVerifier
    from keycard_agents.sts import TokenService, TokenServiceConfig

    service = TokenService(TokenServiceConfig(issuer="https://sts.test", key_dir=tmp_path))
    verifier = TokenVerifier(issuers=[service.issuer], keys=service.keys.resolver(service.issuer))
    agent = EchoAgent(url=AGENT_URL, issuer=service.issuer, token_endpoint="https://sts.test/token")
    application = create_app(agent, verifier=verifier)
    good = service.issue_user_token("carol", audience=AGENT_URL, scopes=["admin"])
    other = service.issue_user_token("carol", audience="http://other.test", scopes=["admin"])
    payload = rpc("SendMessage", {"message": call_message("admin", {"action": 4})})
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            ok = await client.post("/", json=payload, headers=bearer(good))
            refused = await client.post("/", json=payload, headers=bearer(other))
            metadata = (await client.get("/.well-known/oauth-protected-resource")).json()
    assert ok.status_code == 200
    assert ok.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == invalid_challenge("audience")
    assert metadata["authorization_servers"] == ["https://sts.test"]


# -- every authentication failure, as answered (the module's own API) ---------------------

_META = "https://agent.test/.well-known/oauth-protected-resource"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            UserRequiredError("a client"),
            AuthFailure(
                403,
                'Bearer error="insufficient_scope", error_description="this operation needs '
                'a token issued for a user, not a client", '
                f'resource_metadata="{_META}"',
                "The access token's subject is a client, not a user: this operation needs a "
                "token issued for a user, not a client.",
                "insufficient_scope",
            ),
        ),
        (
            InsufficientScopeError("short", required=("a", "b"), missing=("b",)),
            AuthFailure(
                403,
                'Bearer error="insufficient_scope", scope="a b", '
                f'error_description="missing scopes: b", resource_metadata="{_META}"',
                "The access token lacks the required scopes: b.",
                "insufficient_scope",
            ),
        ),
        (
            InsufficientScopeError("short", required=(), missing=("c", "d")),
            AuthFailure(
                403,
                'Bearer error="insufficient_scope", scope="c d", '
                f'error_description="missing scopes: c d", resource_metadata="{_META}"',
                "The access token lacks the required scopes: c d.",
                "insufficient_scope",
            ),
        ),
        (
            InvalidTokenError("bad", check="expired"),
            AuthFailure(
                401,
                'Bearer error="invalid_token", error_description="the access token failed '
                f'the expired check", resource_metadata="{_META}"',
                "The access token was rejected: it failed the expired check.",
                "invalid_token",
            ),
        ),
        (
            IssuerUnreachableError("down"),
            AuthFailure(
                503,
                None,
                "The token issuer could not be reached to verify the token; retry later.",
            ),
        ),
        (
            MissingCredentialsError("none"),
            AuthFailure(
                401,
                f'Bearer resource_metadata="{_META}"',
                "Authentication required: send 'Authorization: Bearer <token>' with a token "
                "issued for this agent (see the resource_metadata URL).",
            ),
        ),
    ],
    ids=["user-required", "scopes", "scopes-missing-only", "invalid", "unreachable", "missing"],
)
def test_each_authentication_failure_has_its_status_challenge_and_message(
    error: KeycardError, expected: AuthFailure
) -> None:
    assert auth_failure(error, resource_metadata_url=_META) == expected


# -- the authenticator on its own (edges a mutation run found unpinned) -----------------


class _Verifier:
    """A token layer that answers every token with one principal, or one error."""

    def __init__(self, outcome: Principal | Exception) -> None:
        self.outcome = outcome
        self.audiences: list[str] = []

    async def verify(self, token: str, *, audience: str, required_scopes: Any = ()) -> Principal:
        self.audiences.append(audience)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


ALICE = Principal(user="alice", issuer=ISSUER, audience=(AGENT_URL,), scopes=frozenset())


def test_the_authorization_header_may_be_16_kib_long_and_no_longer() -> None:
    token = "a" * (16 * 1024 - len("Bearer "))
    assert bearer_token({"authorization": "Bearer " + token}) == token
    with pytest.raises(InvalidTokenError) as info:
        bearer_token({"authorization": "Bearer " + token + "a"})
    assert info.value.check == "malformed"


async def test_the_authenticator_wants_a_token_unless_anonymous_calls_are_allowed() -> None:
    verifier = _Verifier(ALICE)
    strict = BearerAuthenticator(
        verifier=verifier, audience=AGENT_URL, resource_metadata_url=METADATA
    )
    with pytest.raises(MissingCredentialsError):
        await strict.caller({})
    lenient = BearerAuthenticator(
        verifier=verifier,
        audience=AGENT_URL,
        resource_metadata_url=METADATA,
        anonymous_allowed=True,
    )
    anonymous = await lenient.caller({"authorization": "Basic dXNlcjpwdw=="})
    assert (anonymous.principal, anonymous.token, anonymous.owner) == (None, None, None)
    assert verifier.audiences == []


async def test_a_verified_caller_keeps_its_token_for_the_exchange() -> None:
    verifier = _Verifier(ALICE)
    auth = BearerAuthenticator(
        verifier=verifier, audience=AGENT_URL, resource_metadata_url=METADATA
    )
    caller = await auth.caller({"authorization": "Bearer abc.def"})
    assert caller.principal is ALICE
    assert caller.token == "abc.def"
    assert caller.owner == ALICE.task_owner
    assert verifier.audiences == [AGENT_URL]


async def test_any_other_authentication_failure_is_an_invalid_token_never_anonymous() -> None:
    """Issue 21, survivor 4: a custom verifier's plain AuthenticationError."""
    refused = AuthenticationError("the custom check said no")
    auth = BearerAuthenticator(
        verifier=_Verifier(refused),
        audience=AGENT_URL,
        resource_metadata_url=METADATA,
        anonymous_allowed=True,
    )
    with pytest.raises(InvalidTokenError) as info:
        await auth.caller({"authorization": "Bearer abc"})
    assert info.value.check == "claims"
    assert info.value.__cause__ is refused
    failure = auth.failure(info.value)
    assert (failure.status_code, failure.error) == (401, "invalid_token")
    assert failure.www_authenticate == invalid_challenge("claims")
