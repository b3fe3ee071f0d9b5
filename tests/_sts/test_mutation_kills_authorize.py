"""User sign-in (``_authorize``): the edges a mutation run showed no test pinned
(``dev.py mutation sts``, docs/testing.md)."""

from __future__ import annotations

import json
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from sts_support import ISSUER, PASSWORD, REDIRECT, VERIFIER, A, C, Clock, make_config, open_world

from keycard_agents import OAuthError
from keycard_agents._sts._authorize import AuthCode, CodeStore, LoginFlow  # internal: own API
from keycard_agents._sts._forms import Form
from keycard_agents._sts._shared import SharedServiceState
from keycard_agents.sts import pkce_challenge

pytestmark = pytest.mark.anyio

OTHER = "http://127.0.0.1:7777/other"


async def test_password_guesses_on_the_device_page_are_charged_to_their_source() -> None:
    """The device page checks passwords with the same throttle as ``/authorize``: 30
    failures from one address, spread over accounts so that none reaches its own
    limit, and that address waits, even for an account it has not tried yet."""
    async with open_world(limits={"failed_auth_per_source": 30}) as w:
        start = await w.client.post(
            "/device_authorization", data={"client_id": "app", "resource": A}
        )
        user_code = start.json()["user_code"]

        async def guess(username: str) -> int:
            form = {"user_code": user_code, "username": username, "password": "guess"}
            return (await w.client.post("/device", data={**form, "action": "allow"})).status_code

        names = ["alice", "bob", "carol", "dave"]
        assert [await guess(names[i % 4]) for i in range(30)] == [401] * 30
        assert await guess("erin") == 429


# -- codes kept in the replicas' shared state ----------------------------------------------


class _SharedCodes:
    """The code half of a shared state (what Redis does, in a dict): ``take_code`` hands
    a code out once."""

    def __init__(self) -> None:
        self.codes: dict[str, bytes] = {}
        self.calls: list[dict[str, Any]] = []

    async def put_code(self, digest: str, value: bytes, **limits: Any) -> bool:
        self.calls.append(limits)
        self.codes[digest] = value
        return True

    async def take_code(self, digest: str) -> bytes | None:
        return self.codes.pop(digest, None)


def _flow(
    clock: Clock, *, store: _SharedCodes | None = None, **overrides: Any
) -> tuple[LoginFlow, httpx.AsyncClient, _SharedCodes]:
    config, _ = make_config(**overrides)
    shared = store if store is not None else _SharedCodes()
    flow = LoginFlow(
        config=config, issuer=ISSUER, clock=clock, shared=cast(SharedServiceState, shared)
    )
    app = Starlette(routes=[Route("/authorize", flow.authorize_post, methods=["POST"])])
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)
    return flow, client, shared


def _params() -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": REDIRECT,
        "code_challenge": pkce_challenge(VERIFIER),
        "code_challenge_method": "S256",
        "resource": A,
        "scope": "read write",
    }


async def _shared_code(client: httpx.AsyncClient) -> str:
    form = {**_params(), "username": "alice", "password": PASSWORD}
    reply = await client.post("/authorize", data=form)
    assert reply.status_code == 303, reply.text
    return parse_qs(urlsplit(reply.headers["location"]).query)["code"][0]


def _redemption(code: str) -> Form:
    return Form(
        [
            ("client_id", "app"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ]
    )


async def test_a_shared_code_is_redeemed_once_for_what_was_signed_in() -> None:
    clock = Clock()
    flow, client, shared = _flow(clock)
    async with client:
        code = await _shared_code(client)
    (digest,) = shared.codes
    assert code not in digest  # kept by its digest only
    grant = await flow.redeem(_redemption(code))
    assert (grant.client_id, grant.resource, grant.username) == ("app", A, "alice")
    assert grant.scopes == ("read", "write")
    with pytest.raises(OAuthError) as again:
        await flow.redeem(_redemption(code))
    assert again.value.error == "invalid_grant"


@pytest.mark.parametrize(("age", "redeemed"), [(59, True), (60, False)])
async def test_a_shared_code_is_dead_at_its_expiry_second(age: int, redeemed: bool) -> None:
    clock = Clock()
    flow, client, _ = _flow(clock)
    async with client:
        code = await _shared_code(client)
    clock.advance(age)  # codes live lifetimes.auth_code = 60 s
    if redeemed:
        assert (await flow.redeem(_redemption(code))).username == "alice"
        return
    with pytest.raises(OAuthError) as late:
        await flow.redeem(_redemption(code))
    assert late.value.error == "invalid_grant"


async def test_redeeming_checks_that_the_public_client_exists() -> None:
    """The module's own check (the token endpoint authenticates the client first)."""
    flow, client, _ = _flow(Clock())
    await client.aclose()
    with pytest.raises(OAuthError) as unknown:
        await flow.redeem(Form([("client_id", "nobody"), ("code", "x")]))
    assert (unknown.value.error, unknown.value.status_code) == ("invalid_client", 401)


class _FullSharedCodes(_SharedCodes):
    """A shared state that keeps no more codes: every client is at its limit."""

    async def put_code(self, digest: str, value: bytes, **limits: Any) -> bool:
        self.calls.append(limits)
        return False


async def test_a_shared_code_carries_the_grant_and_the_fair_limits() -> None:
    """What the replicas' store gets: a 256-bit code's digest, the grant, when it
    expires, and the per-user and per-client limits of sts.toml to enforce."""
    clock = Clock()
    _, client, shared = _flow(clock, limits={"pending_signins_per_user": 3})
    async with client:
        code = await _shared_code(client)
    assert len(code) == 43  # 32 random bytes, base64url
    (value,) = shared.codes.values()
    assert json.loads(value) == {
        "client_id": "app",
        "redirect_uri": REDIRECT,
        "code_challenge": pkce_challenge(VERIFIER),
        "resource": A,
        "scopes": ["read", "write"],
        "username": "alice",
        "expires_at": clock() + 60,
    }
    assert shared.calls == [
        {
            "expires_at": clock() + 60,
            "now": clock(),
            "user": "alice",
            "per_user": 3,
            "client": "app",
            "per_client": 1000,
        }
    ]


async def test_a_sign_in_the_shared_store_cannot_keep_is_sent_back_to_retry() -> None:
    _, client, shared = _flow(Clock(), store=_FullSharedCodes())
    async with client:
        params = _params()
        reply = await client.post(
            "/authorize", data={**params, "username": "alice", "password": PASSWORD}
        )
    assert reply.status_code == 303
    query = parse_qs(urlsplit(reply.headers["location"]).query)
    assert query["error"] == ["temporarily_unavailable"]
    assert "too many pending sign-ins for client 'app'" in query["error_description"][0]
    assert "code" not in query
    assert not shared.codes


def test_the_code_store_refuses_a_client_at_its_cap_as_temporarily_unavailable() -> None:
    store = CodeStore(clock=lambda: 0.0, per_client=2)
    for user in ("u1", "u2"):
        store.issue(AuthCode("app", REDIRECT, "challenge", A, ("read",), user, 100.0))
    with pytest.raises(OAuthError) as full:
        store.issue(AuthCode("app", REDIRECT, "challenge", A, ("read",), "u3", 100.0))
    assert (full.value.error, full.value.status_code) == ("temporarily_unavailable", 503)
    store.issue(AuthCode("other", REDIRECT, "challenge", A, ("read",), "u3", 100.0))
    assert len(store) == 3


def _grant(user: str, client: str = "app") -> AuthCode:
    return AuthCode(client, REDIRECT, "challenge", A, ("read",), user, 100.0)


def test_a_code_store_keeps_10_pending_sign_ins_per_user_by_default() -> None:
    """The eleventh sign-in of one user makes room by dropping that user's oldest."""
    store = CodeStore(clock=lambda: 0.0)
    codes = [store.issue(_grant("alice")) for _ in range(11)]
    assert len(store) == 10
    assert store.consume(codes[0]) is None
    assert store.consume(codes[1]) == _grant("alice")


def test_a_code_store_keeps_1000_pending_sign_ins_per_client_by_default() -> None:
    store = CodeStore(clock=lambda: 0.0)
    for i in range(1000):
        store.issue(_grant(f"user-{i}"))
    with pytest.raises(OAuthError) as full:
        store.issue(_grant("one-more"))
    assert (full.value.error, full.value.status_code) == ("temporarily_unavailable", 503)
    assert len(store) == 1000


# -- the authorization endpoint -----------------------------------------------------------


def _authorize(**changes: str | None) -> list[tuple[str, str]]:
    params: dict[str, str | None] = {**_params(), "state": "st-1", **changes}
    return [(k, v) for k, v in params.items() if v is not None]


def _redirected(reply: httpx.Response) -> dict[str, list[str]]:
    assert reply.status_code == 303, reply.text
    location = reply.headers["location"]
    assert location.startswith(REDIRECT + "?")
    return parse_qs(urlsplit(location).query)


async def test_a_repeated_client_id_is_refused_on_the_page() -> None:
    """The redirect URI cannot be trusted yet, so the page itself says what is wrong."""
    async with open_world() as w:
        page = await w.client.get("/authorize", params=[*_authorize(), ("client_id", "app")])
    assert page.status_code == 400
    assert "parameter &#x27;client_id&#x27; is repeated" in page.text


async def test_a_repeated_resource_is_an_invalid_request_not_two_targets() -> None:
    async with open_world() as w:
        reply = await w.client.get("/authorize", params=[*_authorize(), ("resource", A)])
    query = _redirected(reply)
    assert query["error"] == ["invalid_request"]
    assert query["error_description"] == ["parameter 'resource' is repeated: send it exactly once"]
    # an OAuth error redirect still carries the state and the issuer (RFC 9207)
    assert (query["state"], query["iss"]) == (["st-1"], [ISSUER])


async def test_a_missing_resource_is_invalid_target() -> None:
    async with open_world() as w:
        query = _redirected(
            await w.client.get("/authorize", params=tuple(_authorize(resource=None)))
        )
    assert query["error"] == ["invalid_target"]
    assert query["error_description"] == ["send exactly one resource: the agent's URL"]


async def test_a_resource_differing_by_a_slash_names_the_registered_one_at_sign_in() -> None:
    async with open_world() as w:
        reply = await w.client.get("/authorize", params=tuple(_authorize(resource=A.rstrip("/"))))
    (description,) = _redirected(reply)["error_description"]
    assert description.startswith("resource 'https://a.example' is not a registered agent: ")
    assert "sts.toml registers 'https://a.example/'" in description


@pytest.mark.parametrize("scope", ["read write", None])
async def test_a_sign_in_grants_only_scopes_the_agent_accepts(scope: str | None) -> None:
    """alice holds read and write; agent c accepts only read."""
    async with open_world() as w:
        form = [*_authorize(resource=C, scope=scope), ("username", "alice")]
        reply = await w.client.post("/authorize", data=dict([*form, ("password", PASSWORD)]))
        code = _redirected(reply)["code"][0]
        token = await w.post_token(
            {
                "grant_type": "authorization_code",
                "client_id": "app",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": VERIFIER,
            }
        )
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == "read"


async def test_a_missing_password_is_no_failed_attempt() -> None:
    """An empty form signs no one in and charges nothing: the throttle counts guesses."""
    async with open_world() as w:
        for _ in range(12):
            reply = await w.client.post(
                "/authorize", data=dict([*_authorize(), ("username", "alice")])
            )
            assert reply.status_code == 401
        form = [*_authorize(), ("username", "alice"), ("password", PASSWORD)]
        assert "code" in _redirected(await w.client.post("/authorize", data=dict(form)))


@pytest.mark.parametrize(("registered", "status"), [([REDIRECT], 200), ([REDIRECT, OTHER], 400)])
async def test_redirect_uri_may_be_omitted_only_for_a_client_with_one(
    registered: list[str], status: int
) -> None:
    clients = [{"client_id": "app", "redirect_uris": registered}]
    async with open_world(clients=clients) as w:
        page = await w.client.get("/authorize", params=tuple(_authorize(redirect_uri=None)))
        assert page.status_code == status
        if status == 400:
            assert "<p>redirect_uri is required for this client</p>" in page.text
            return
        form = [*_authorize(redirect_uri=None), ("username", "alice"), ("password", PASSWORD)]
        assert "code" in _redirected(await w.client.post("/authorize", data=dict(form)))


@pytest.mark.parametrize("name", ["alice", "XXXX", "user"])
async def test_a_form_without_a_username_signs_no_one_in(name: str) -> None:
    """An omitted user name is the empty one, which names no user: not even a user
    whose name looks like a placeholder, with that user's own password."""
    users = [{"username": name, "password": PASSWORD, "scopes": ["read", "write"]}]
    async with open_world(users=users) as w:
        nameless = await w.client.post(
            "/authorize", data=dict([*_authorize(), ("password", PASSWORD)])
        )
        form = [*_authorize(), ("username", name), ("password", PASSWORD)]
        named = await w.client.post("/authorize", data=dict(form))
    assert nameless.status_code == 401
    assert "Wrong username or password." in nameless.text
    assert "code" in _redirected(named)


async def test_a_sign_in_form_over_8_kib_is_refused_on_the_page_with_413() -> None:
    """The sign-in form is small: 8 KiB, not the token endpoint's 64 KiB. A body that
    cannot be read is refused on the page itself (the redirect URI is not known yet),
    with the reason and its own status."""
    async with open_world() as w:
        form = [*_authorize(), ("username", "alice"), ("password", PASSWORD)]
        padded = [*form, ("pad", "p" * 9000)]
        too_large = await w.client.post("/authorize", data=dict(padded))
        not_a_form = await w.client.post("/authorize", json=dict(form))
        fits = await w.client.post("/authorize", data=dict([*form, ("pad", "p" * 7000)]))
    assert too_large.status_code == 413
    assert "Sign-in request rejected" in too_large.text
    assert "<p>request body larger than 8 KiB</p>" in too_large.text
    assert not_a_form.status_code == 400
    assert "send the body as application/x-www-form-urlencoded" in not_a_form.text
    assert "code" in _redirected(fits)
