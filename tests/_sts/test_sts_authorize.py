"""The sign-in flow: login page, password check, code binding, error redirects."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sts_support import (
    PASSWORD,
    REDIRECT,
    VERIFIER,
    A,
    B,
    World,
    claims_of,
    open_world,
)

from keycard_agents.sts import hash_secret, pkce_challenge

pytestmark = pytest.mark.anyio


def _params(**over: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": REDIRECT,
        "code_challenge": pkce_challenge(VERIFIER),
        "code_challenge_method": "S256",
        "resource": A,
        "state": "st",
    }
    params.update(over)
    return {k: v for k, v in params.items() if v}


def _redirect_query(location: str) -> dict[str, list[str]]:
    assert location.startswith(REDIRECT + "?")
    return parse_qs(urlsplit(location).query)


async def _redeem(w: World, code: str, **over: str) -> Any:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "app",
        "code_verifier": VERIFIER,
    }
    form.update(over)
    return await w.post_token(form)


async def test_login_page_escapes_and_is_locked_down() -> None:
    async with open_world() as w:
        page = await w.client.get("/authorize", params=_params(state="<script>x</script>"))
        assert page.status_code == 200
        assert "<script>x" not in page.text
        assert "&lt;script&gt;x&lt;/script&gt;" in page.text
        assert "name='password'" in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"


async def test_wrong_password_stays_on_the_page() -> None:
    async with open_world() as w:
        for username, password in (("alice", "nope"), ("mallory", PASSWORD), ("alice", "")):
            form = {**_params(), "username": username, "password": password}
            reply = await w.client.post("/authorize", data=form)
            assert reply.status_code == 401
            assert "location" not in reply.headers
            assert "Wrong username or password" in reply.text


@pytest.mark.parametrize(
    ("over", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"resource": "https://d.example/api"}, "invalid_target"),
        ({"resource": ""}, "invalid_target"),
        ({"resource": B}, "invalid_target"),  # b may not act first
        ({"scope": "delete"}, "invalid_scope"),
    ],
)
async def test_authorization_errors_redirect_with_state(over: dict[str, str], error: str) -> None:
    async with open_world() as w:
        reply = await w.client.get("/authorize", params=_params(**over))
        assert reply.status_code == 303
        query = _redirect_query(reply.headers["location"])
        assert query["error"] == [error]
        assert query["state"] == ["st"]
        assert query["error_description"]


@pytest.mark.parametrize(
    ("over", "text"),
    [
        ({"client_id": "nobody"}, "unknown client_id"),
        ({"client_id": ""}, "no client_id"),
        ({"redirect_uri": "http://127.0.0.1:7777/other"}, "redirect_uri is not registered"),
    ],
)
async def test_untrusted_client_never_redirects(over: dict[str, str], text: str) -> None:
    async with open_world() as w:
        reply = await w.client.get("/authorize", params=_params(**over))
        assert reply.status_code == 400
        assert "location" not in reply.headers
        assert text in reply.text


async def test_default_scope_is_user_and_resource_intersection() -> None:
    async with open_world() as w:
        token = await w.user_token(scope=None)
        # a accepts read write admin, alice holds read write
        assert claims_of(token)["scope"] == "read write"


async def test_user_without_the_scopes_is_refused() -> None:
    users = [
        {"username": "alice", "password_hash": hash_secret(PASSWORD, cost=16), "scopes": []},
    ]
    async with open_world(users=users) as w:
        form = {**_params(scope="read"), "username": "alice", "password": PASSWORD}
        reply = await w.client.post("/authorize", data=form)
        assert reply.status_code == 303
        assert _redirect_query(reply.headers["location"])["error"] == ["invalid_scope"]


async def test_password_hash_users_sign_in() -> None:
    users = [
        {"username": "alice", "password_hash": hash_secret(PASSWORD, cost=16), "scopes": ["read"]}
    ]
    async with open_world(users=users) as w:
        token = await w.user_token(scope="read write")
        assert claims_of(token)["scope"] == "read"


async def test_code_binding_and_expiry() -> None:
    clients = [
        {"client_id": "app", "redirect_uris": [REDIRECT]},
        {"client_id": "other", "redirect_uris": [REDIRECT]},
    ]
    async with open_world(clients=clients) as w:
        code = await w.sign_in()
        reply = await _redeem(w, code, client_id="other")
        assert reply.json()["error"] == "invalid_grant"
        # a failed redemption consumed the code
        assert (await _redeem(w, code)).json()["error"] == "invalid_grant"

        code = await w.sign_in()
        reply = await _redeem(w, code, redirect_uri="http://127.0.0.1:7777/x")
        assert reply.json()["error"] == "invalid_grant"

        code = await w.sign_in()
        reply = await _redeem(w, code, resource=B)
        assert reply.json()["error"] == "invalid_target"

        code = await w.sign_in()
        w.clock.advance(61)
        reply = await _redeem(w, code)
        assert reply.json()["error"] == "invalid_grant"

        code = await w.sign_in()
        reply = await w.post_token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "client_id": "app",
            }
        )
        assert reply.json()["error"] == "invalid_request"

        code = await w.sign_in()
        reply = await _redeem(w, code, resource=A)
        assert reply.status_code == 200


async def test_agents_cannot_redeem_codes() -> None:
    async with open_world() as w:
        code = await w.sign_in()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
        reply = await w.post_token({**form, "code_verifier": VERIFIER, **w.auth("a")})
        assert reply.status_code == 400
        assert reply.json()["error"] == "unauthorized_client"


async def test_repeated_authorize_parameter_is_rejected() -> None:
    async with open_world() as w:
        query = "&".join(f"{k}={v}" for k, v in _params().items()) + "&scope=read&scope=write"
        reply = await w.client.get(f"/authorize?{query}")
        assert reply.status_code == 303
        assert _redirect_query(reply.headers["location"])["error"] == ["invalid_request"]
