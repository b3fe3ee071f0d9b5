"""Edges of the token service's checks that a mutation run showed no test pinned: where a
target is a URI and where a name, how much of a hostile value an answer echoes, the
leeway on actor tokens and the Basic challenge (``dev.py mutation``, docs/testing.md)."""

from __future__ import annotations

import base64
import html
import re
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sts_support import (
    AT,
    EXCHANGE,
    ISSUER,
    JWT_BEARER,
    PASSWORD,
    REDIRECT,
    SECRET_B,
    VERIFIER,
    A,
    B,
    C,
    Clock,
    World,
    claims_of,
    make_config,
    open_world,
)

from keycard_agents import OAuthError
from keycard_agents._sts._authorize import (  # internal: the module's own API
    AuthCode,
    CodeStore,
    _same_password,
)
from keycard_agents._sts._clientauth import ReplayCache  # internal: the module's own API
from keycard_agents.auth import SigningKey
from keycard_agents.sts import TokenService, hash_secret, parse_config, pkce_challenge

pytestmark = pytest.mark.anyio


def _user(w: World, **claims: Any) -> str:
    now = int(w.clock())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": A,
        "scope": "read write",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    return str(w.service.keys.current.sign(base, typ="at+jwt"))


async def _refusal(reply: Any, status: int, error: str) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["error"] == error, body
    return str(body["error_description"])


@pytest.mark.parametrize(
    ("audience", "what"),
    [
        ("urn:example:payroll", "unknown resource 'urn:example:payroll'"),  # a URN is a URI
        ("https://nowhere.example/api", "unknown resource 'https://nowhere.example/api'"),
        ("//b.example/", "unknown audience '//b.example/'"),  # no scheme: a name
        ("mailto:payroll", "unknown audience 'mailto:payroll'"),  # neither host nor URN
        ("payroll", "unknown audience 'payroll'"),
    ],
)
async def test_an_audience_is_a_uri_only_with_a_scheme_and_a_host_or_a_urn(
    audience: str, what: str
) -> None:
    """RFC 8693 §2.1: ``audience`` is an absolute URI or a logical name; only a name is
    looked up among the registered client ids."""
    async with open_world() as w:
        form = {"grant_type": EXCHANGE, "subject_token": _user(w), "subject_token_type": AT}
        reply = await w.post_token({**form, "audience": audience, **w.auth("a")})
        assert what in await _refusal(reply, 400, "invalid_target")


@pytest.mark.parametrize(
    ("length", "shown"),
    [
        (98, "'" + "n" * 98 + "'"),  # a repr of 100 characters is shown whole
        (99, "'" + "n" * 96 + "..."),  # one more, and it is cut to 100 with an ellipsis
        (5000, "'" + "n" * 96 + "..."),
    ],
)
async def test_an_unknown_audience_is_echoed_at_most_100_characters(
    length: int, shown: str
) -> None:
    async with open_world() as w:
        form = {"grant_type": EXCHANGE, "subject_token": _user(w), "subject_token_type": AT}
        reply = await w.post_token({**form, "audience": "n" * length, **w.auth("a")})
        description = await _refusal(reply, 400, "invalid_target")
        assert f"unknown audience {shown}: " in description
        assert "n" * 99 not in description


@pytest.mark.parametrize(
    ("path", "cut"),
    [(74, False), (75, True), (3000, True)],  # the URL's repr is 26 + path characters
)
async def test_an_unknown_resource_is_echoed_at_most_100_characters(path: int, cut: bool) -> None:
    async with open_world() as w:
        target = "https://nowhere.example/" + "p" * path
        description = await _refusal(await w.exchange("a", _user(w), target), 400, "invalid_target")
        shown = repr(target)[:97] + "..." if cut else repr(target)
        assert f"unknown resource {shown}: register it" in description
        assert len(repr(target)) <= 100 or repr(target) not in description


async def test_a_subject_addressed_elsewhere_is_echoed_at_most_100_characters() -> None:
    async with open_world() as w:
        extra = "https://x.example/" + "q" * 200
        subject = _user(w, aud=[A, extra])
        description = await _refusal(await w.exchange("a", subject, B), 400, "invalid_request")
        aud = repr([A, extra])
        assert f"subject_token is addressed to {aud[:97]}..., not to agent 'a'" in description


async def test_an_actor_token_gets_the_services_leeway_not_the_verifiers_default() -> None:
    """The service's leeway is 30 s (a receiving agent's is 60 s): an actor token that
    expired 45 s ago is refused."""
    async with open_world() as w:
        cc = await w.post_token({"grant_type": "client_credentials", **w.auth("a")})
        assert cc.status_code == 200, cc.text
        actor = cc.json()["access_token"]
        lifetime = int(cc.json()["expires_in"])
        w.clock.advance(lifetime + 20)  # expired, within the leeway
        ok = await w.exchange("a", _user(w), B, actor_token=actor, actor_token_type=AT)
        assert ok.status_code == 200, ok.text
        w.clock.advance(25)  # 45 s past exp
        late = await w.exchange("a", _user(w), B, actor_token=actor, actor_token_type=AT)
        assert "actor_token rejected (expired)" in await _refusal(late, 400, "invalid_request")


async def test_only_a_failed_basic_authentication_gets_a_basic_challenge() -> None:
    """RFC 6749 §5.2: ``WWW-Authenticate`` answers a client that tried HTTP Basic, and
    only such a client."""
    async with open_world() as w:
        headers = {"Authorization": "Basic !!!"}
        malformed = await w.client.post("/token", data={"grant_type": "client_credentials"},
                                        headers=headers)  # fmt: skip
        await _refusal(malformed, 401, "invalid_client")
        assert malformed.headers["www-authenticate"].startswith("Basic realm=")
        wrong = await w.post_token({"grant_type": "client_credentials"}, auth=("b", "wrong"))
        await _refusal(wrong, 401, "invalid_client")
        assert wrong.headers["www-authenticate"].startswith("Basic realm=")
        form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER}
        others = [w.assertion("a", sub="c"), w.assertion("a", key=w.keys["a-other"])]
        for assertion in ("x.y.z", "e" * 9000, *others):
            reply = await w.post_token({**form, "client_assertion": assertion})
            await _refusal(reply, 401, "invalid_client")
            assert "www-authenticate" not in reply.headers
        post = await w.post_token(
            {"grant_type": "client_credentials", "client_id": "b", "client_secret": "no"}
        )
        await _refusal(post, 401, "invalid_client")
        assert "www-authenticate" not in post.headers
        good = await w.post_token({"grant_type": "client_credentials"}, auth=("b", SECRET_B))
        assert good.status_code == 200, good.text


# -- sign-in ------------------------------------------------------------------------------

_HIDDEN = re.compile(r"<input type='hidden' name='([^']*)' value='([^']*)'>")
_LOCKED_DOWN = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "content-security-policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def _authorize(**over: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": REDIRECT,
        "code_challenge": pkce_challenge(VERIFIER),
        "code_challenge_method": "S256",
        "resource": A,
        "state": "st&<",
        "scope": "write read",
    }
    params.update(over)
    return params


async def _redeem(w: World, code: str) -> Any:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "app",
        "code_verifier": VERIFIER,
    }
    return await w.post_token(form)


async def test_the_login_form_carries_the_request_in_its_hidden_fields() -> None:
    """The browser posts back only what the page holds: the hidden fields must be the
    authorization request, exactly."""
    async with open_world() as w:
        page = await w.client.get("/authorize", params=_authorize())
        assert page.status_code == 200, page.text
        hidden = {html.unescape(k): html.unescape(v) for k, v in _HIDDEN.findall(page.text)}
        assert hidden == {**_authorize(), "scope": "write read"}
        form = {**hidden, "username": "alice", "password": PASSWORD}
        reply = await w.client.post("/authorize", data=form)
        assert reply.status_code == 303, reply.text
        query = parse_qs(urlsplit(reply.headers["location"]).query)
        assert query["state"] == ["st&<"]
        token = await _redeem(w, query["code"][0])
        assert token.status_code == 200, token.text
        assert sorted(token.json()["scope"].split()) == ["read", "write"]


async def test_every_sign_in_page_forbids_framing_caching_and_scripts() -> None:
    async with open_world() as w:
        login = await w.client.get("/authorize", params=_authorize())
        refused = await w.client.get("/authorize", params=_authorize(client_id="evil"))
        wrong = await w.client.post(
            "/authorize", data={**_authorize(), "username": "alice", "password": "no"}
        )
        assert [login.status_code, refused.status_code, wrong.status_code] == [200, 400, 401]
        for page in (login, refused, wrong):
            assert {k: page.headers.get(k) for k in _LOCKED_DOWN} == _LOCKED_DOWN
        assert "<title>Sign-in request rejected</title>" in refused.text


async def test_a_code_is_dead_at_its_expiry_second() -> None:
    async with open_world() as w:
        lifetime = w.service.config.lifetimes.auth_code
        code = await w.sign_in()
        w.clock.advance(lifetime - 1)
        assert (await _redeem(w, code)).status_code == 200
        code = await w.sign_in()
        w.clock.advance(lifetime)
        late = await _redeem(w, code)
        assert "the code is unknown, expired or already used" in await _refusal(
            late, 400, "invalid_grant"
        )


async def test_the_authorization_request_may_be_8_kib_long() -> None:
    async with open_world() as w:
        base = urlencode(_authorize(state=""))
        longest = base + "x" * (8192 - len(base))
        assert len(longest) == 8192
        assert (await w.client.get(f"/authorize?{longest}")).status_code == 200
        too_long = await w.client.get(f"/authorize?{longest}x")
        assert too_long.status_code == 400
        assert "the authorization request is too long" in too_long.text


async def test_a_sign_in_is_audited_with_who_for_what_and_which_token() -> None:
    async with open_world() as w:
        code = await w.sign_in(scope="write read")
        reply = await _redeem(w, code)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == w.service.config.lifetimes.user_token
        claims = claims_of(body["access_token"])
        [record] = [r for r in await w.service.audit.query() if r.decision == "issued"]
        assert record.grant_type == "authorization_code"
        assert (record.user, record.user_issuer, record.client_id) == ("alice", ISSUER, "app")
        assert record.target == A
        assert set(record.scopes_requested or ()) == {"read", "write"}
        assert record.scopes_granted == record.scopes_requested
        assert (record.jti, record.txn) == (claims["jti"], claims["txn"])


def _visible_text(page: str) -> str:
    """The words a user sees (tags, the style sheet and hidden fields stripped)."""
    page = re.sub(r"<style>.*?</style>|<title>.*?</title>", "", page)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


async def test_the_sign_in_page_says_who_asks_and_only_that() -> None:
    async with open_world() as w:
        page = await w.client.get("/authorize", params=_authorize())
        assert "<title>Sign in</title>" in page.text
        form = page.text[page.text.index("<form") : page.text.index("<label>")]
        assert re.fullmatch(r"<form [^>]*>(<input type='hidden' [^>]*>){8}", form), form
        assert _visible_text(page.text) == (
            "Sign in Sign in to let a act for you (client app ). Username Password Sign in"
        )
        wrong = await w.client.post(
            "/authorize", data={**_authorize(), "username": "alice", "password": "no"}
        )
        assert "Wrong username or password" in _visible_text(wrong.text)


# -- password guessing is throttled per account and per source ----------------------------


def _users(hashed: bool) -> list[dict[str, Any]]:
    """Four users with plain passwords, or with scrypt hashes of them."""
    users: list[dict[str, Any]] = []
    for name in ("alice", "bob", "carol", "dave"):
        secret = f"{name}-pw-0123"
        if hashed:
            users.append({"username": name, "password_hash": hash_secret(secret, cost=2**4)})
        else:
            users.append({"username": name, "password": secret})
        users[-1]["scopes"] = ["read"]
    return users


async def _sign_in(w: World, username: str, password: str) -> int:
    form = {**_authorize(scope="read"), "username": username, "password": password}
    return (await w.client.post("/authorize", data=form)).status_code


@pytest.mark.parametrize("hashed", [False, True], ids=["plain", "hashed"])
async def test_failed_sign_ins_are_charged_to_their_own_account(hashed: bool) -> None:
    async with open_world(users=_users(hashed)) as w:
        assert [await _sign_in(w, "alice", "guess") for _ in range(10)] == [401] * 10
        assert await _sign_in(w, "alice", "alice-pw-0123") == 429
        assert await _sign_in(w, "bob", "bob-pw-0123") == 303  # bob is not alice
        assert [await _sign_in(w, "mallory", "guess") for _ in range(10)] == [401] * 10
        assert await _sign_in(w, "mallory", "guess") == 429
        assert await _sign_in(w, "eve", "guess") == 401  # eve is not mallory


@pytest.mark.parametrize("hashed", [False, True], ids=["plain", "hashed"])
@pytest.mark.parametrize("known", [True, False], ids=["known", "unknown"])
async def test_failed_sign_ins_are_charged_to_their_source(hashed: bool, known: bool) -> None:
    """30 failures from one address, spread over accounts, and that address waits."""
    names = ["alice", "bob", "carol", "dave"] if known else ["u1", "u2", "u3", "u4"]
    async with open_world(users=_users(hashed)) as w:
        statuses = [await _sign_in(w, names[i % 4], "guess") for i in range(30)]
        assert statuses == [401] * 30
        assert await _sign_in(w, "carol" if known else "u5", "guess") == 429


# -- the code store ----------------------------------------------------------------------


def _grant(user: str, client: str = "app", expires_at: float = 100.0) -> AuthCode:
    return AuthCode(client, REDIRECT, "challenge", A, ("read",), user, expires_at)


def test_the_code_store_caps_all_pending_codes_until_one_expires() -> None:
    now = [0.0]
    store = CodeStore(clock=lambda: now[0], max_codes=3, per_user=5, per_client=5)
    codes = [store.issue(_grant(user, client)) for user, client in [("u1", "a"), ("u2", "b")]]
    codes.append(store.issue(_grant("u3", "c", expires_at=50.0)))
    with pytest.raises(OAuthError) as info:
        store.issue(_grant("u4", "d"))
    assert (info.value.error, info.value.status_code) == ("temporarily_unavailable", 503)
    assert info.value.error_description == "too many pending sign-ins: retry later"
    now[0] = 50.0  # u3's code is dead at its expiry second, and makes room
    store.issue(_grant("u4", "d"))
    assert len(store) == 3
    assert all(len(code) == 43 for code in codes)  # 256 bits, base64url


def test_codes_and_passwords_that_utf_8_cannot_encode_never_match() -> None:
    store = CodeStore(clock=lambda: 0.0)
    store.issue(_grant("u1"))
    assert store.consume("\udc80") is None
    assert _same_password("\udc80", "secret") is False


# -- redemption ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "error", "reason"),
    [
        ({"client_id": "other"}, "invalid_grant", "the code was issued to another client"),
        (
            {"redirect_uri": REDIRECT + "/x"},
            "invalid_grant",
            "redirect_uri differs from the one in the authorization request",
        ),
        ({"code_verifier": None}, "invalid_request", "PKCE is required: send code_verifier"),
        (
            {"code_verifier": "x" * 43},
            "invalid_grant",
            "code_verifier does not match the code_challenge",
        ),
        (
            {"resource": B},
            "invalid_target",
            "resource must be omitted or equal the one signed in for",
        ),
        (
            {"resource": [A, A]},
            "invalid_target",
            "resource must be omitted or equal the one signed in for",
        ),
        ({"code": "forged"}, "invalid_grant", "the code is unknown, expired or already used"),
    ],
    ids=["client", "redirect", "no-verifier", "verifier", "resource", "two-resources", "code"],
)
async def test_a_refused_redemption_says_exactly_why(
    over: dict[str, Any], error: str, reason: str
) -> None:
    clients = [
        {"client_id": "app", "redirect_uris": [REDIRECT]},
        {"client_id": "other", "redirect_uris": [REDIRECT]},
    ]
    async with open_world(clients=clients) as w:
        code = await w.sign_in()
        form: dict[str, Any] = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "app",
            "code_verifier": VERIFIER,
            **over,
        }
        pairs = [
            (k, item)
            for k, v in form.items()
            if v is not None
            for item in (v if isinstance(v, list) else [v])
        ]
        description = await _refusal(await w.post_token(pairs), 400, error)
        assert description.startswith(reason), description


async def test_the_redirect_keeps_the_clients_query_adds_no_fragment_and_is_not_cached() -> None:
    registered = REDIRECT + "?tenant=7"
    clients = [{"client_id": "app", "redirect_uris": [registered]}]
    async with open_world(clients=clients) as w:
        params = _authorize(redirect_uri=registered)
        reply = await w.client.post(
            "/authorize", data={**params, "username": "alice", "password": PASSWORD}
        )
        assert reply.status_code == 303, reply.text
        location = reply.headers["location"]
        assert location.startswith(registered + "&code="), location
        assert "#" not in location
        assert reply.headers["cache-control"] == "no-store"


# -- HTTP Basic client authentication ------------------------------------------------------


async def test_basic_credentials_with_characters_outside_base64_are_malformed() -> None:
    async with open_world() as w:
        good = base64.b64encode(f"b:{SECRET_B}".encode()).decode()
        ok = await w.client.post(
            "/token", data={"grant_type": "client_credentials"}, headers=_basic_header(good)
        )
        assert ok.status_code == 200, ok.text
        for junk in (good[:4] + "*" + good[4:], good + "!", good[:4] + " " + good[4:]):
            reply = await w.client.post(
                "/token", data={"grant_type": "client_credentials"}, headers=_basic_header(junk)
            )
            description = await _refusal(reply, 401, "invalid_client")
            assert description.startswith("malformed HTTP Basic credentials")


def _basic_header(credentials: str) -> dict[str, str]:
    return {"Authorization": f"Basic {credentials}"}


async def test_the_client_id_ends_at_the_first_colon_of_basic_credentials() -> None:
    """RFC 7617 §2: the user-id cannot contain a colon; the password may."""
    async with open_world() as w:
        reply = await w.post_token({"grant_type": "client_credentials"}, auth=("b", "x:y"))
        await _refusal(reply, 401, "invalid_client")
        [denied] = [r for r in await w.service.audit.query() if r.decision == "denied"]
        assert denied.reason == "wrong client secret for 'b'"


# -- client credentials and client assertions -------------------------------------------


async def test_a_public_client_asking_for_client_credentials_is_told_which_grant_it_has() -> None:
    async with open_world() as w:
        reply = await w.post_token({"grant_type": "client_credentials", "client_id": "app"})
        description = await _refusal(reply, 400, "unauthorized_client")
        assert description == (
            "public client 'app' may only use authorization_code; client_credentials is for "
            "registered agents"
        )


@pytest.mark.parametrize("name", ["resource", "audience"])
async def test_an_agents_own_token_names_no_target(name: str) -> None:
    async with open_world() as w:
        form = {"grant_type": "client_credentials", name: "b", **w.auth("b")}
        description = await _refusal(await w.post_token(form), 400, "invalid_target")
        assert description.startswith(f"omit {name!r}: ")


async def test_an_agents_own_token_is_audited_for_this_service() -> None:
    async with open_world() as w:
        reply = await w.post_token({"grant_type": "client_credentials", **w.auth("b")})
        assert reply.status_code == 200, reply.text
        assert reply.json()["token_type"] == "Bearer"
        [record] = [r for r in await w.service.audit.query() if r.decision == "issued"]
        assert (record.client_id, record.resource, record.target) == ("b", B, ISSUER)
        assert record.jti == claims_of(reply.json()["access_token"])["jti"]


@pytest.mark.parametrize("payload", ["W10", "Im5vIg", "MQ"], ids=["array", "string", "number"])
async def test_an_assertion_whose_payload_is_no_object_names_no_client(payload: str) -> None:
    async with open_world() as w:
        form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER}
        reply = await w.post_token(
            {**form, "client_assertion": f"eyJhbGciOiJFUzI1NiJ9.{payload}.x"}
        )
        description = await _refusal(reply, 401, "invalid_client")
        assert description == "client_assertion has no 'iss' naming the client"


async def test_an_unknown_client_id_is_audited_at_most_100_characters() -> None:
    async with open_world() as w:
        caller = "n" * 150
        form = {"grant_type": "client_credentials", "client_id": caller, "client_secret": "x"}
        await _refusal(await w.post_token(form), 401, "invalid_client")
        [denied] = [r for r in await w.service.audit.query() if r.decision == "denied"]
        assert denied.reason == f"unknown client {'n' * 100!r}"


# -- the replay cache (the module's own API) ----------------------------------------------


def test_a_full_replay_cache_refuses_new_assertions_until_some_expire() -> None:
    now = [0.0]
    cache = ReplayCache(clock=lambda: now[0], max_entries=2)
    assert cache.check_and_remember("a", "j1", 5.0)
    assert cache.check_and_remember("a", "j2", 100.0)
    now[0] = 1.0
    with pytest.raises(OAuthError) as info:
        cache.check_and_remember("a", "j3", 100.0)
    assert (info.value.error, info.value.status_code) == ("temporarily_unavailable", 503)
    assert info.value.error_description == "too many client assertions in flight: retry shortly"
    now[0] = 5.0  # j1 is dead at its expiry second: a full cache sweeps it at once
    assert cache.check_and_remember("a", "j3", 100.0)


def test_a_jti_is_remembered_until_its_expiry_second() -> None:
    now = [0.0]
    cache = ReplayCache(clock=lambda: now[0])
    assert cache.check_and_remember("a", "j", 10.0)
    now[0] = 9.0
    assert not cache.check_and_remember("a", "j", 10.0)
    now[0] = 10.0
    assert cache.check_and_remember("a", "j", 20.0)


def _assertion(w: World, **claims: Any) -> str:
    """A client assertion of agent a, signed with its key, with ``claims`` changed."""
    now = int(w.clock())
    base: dict[str, Any] = {
        "iss": "a",
        "sub": "a",
        "aud": ISSUER,
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    kept = {k: v for k, v in base.items() if v is not None}
    return w.keys["a"].sign(kept, typ="client-authentication+jwt")


async def _present(w: World, assertion: str) -> Any:
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER}
    return await w.post_token({**form, "client_assertion": assertion})


async def test_an_assertion_may_live_300_s_plus_the_leeway_and_not_a_second_more() -> None:
    async with open_world() as w:
        now = int(w.clock())
        assert (await _present(w, _assertion(w, exp=now + 330))).status_code == 200
        longer = await _present(w, _assertion(w, exp=now + 331))
        description = await _refusal(longer, 401, "invalid_client")
        assert description == "client_assertion lives longer than 300 s: make exp closer to iat"
        # a backdated iat does not hide a long life: exp - iat counts too
        backdated = await _present(w, _assertion(w, iat=now - 1000, exp=now + 60))
        assert "lives longer than 300 s" in await _refusal(backdated, 401, "invalid_client")
        # without iat the life is counted from now (RFC 7523 §3: iat is optional)
        assert (await _present(w, _assertion(w, iat=None, exp=now + 330))).status_code == 200
        no_iat = await _present(w, _assertion(w, iat=None, exp=now + 331))
        assert "lives longer than 300 s" in await _refusal(no_iat, 401, "invalid_client")


async def test_an_assertion_with_an_empty_jti_is_refused() -> None:
    async with open_world() as w:
        reply = await _present(w, _assertion(w, jti=""))
        description = await _refusal(reply, 401, "invalid_client")
        assert description == "client_assertion 'jti' must be a non-empty string"


async def test_an_assertion_with_an_empty_iss_names_no_client() -> None:
    async with open_world() as w:
        reply = await _present(w, _assertion(w, iss=""))
        description = await _refusal(reply, 401, "invalid_client")
        assert description == "client_assertion has no 'iss' naming the client"


async def test_two_agents_may_use_the_same_jti() -> None:
    """RFC 7523 §3: a ``jti`` is unique per issuer: replay is tracked per client."""
    async with open_world() as w:
        now = int(w.clock())
        claims = {"aud": ISSUER, "iat": now, "exp": now + 60, "jti": "shared"}
        first = w.keys["a"].sign(
            {"iss": "a", "sub": "a", **claims}, typ="client-authentication+jwt"
        )
        other = w.keys["c"].sign(
            {"iss": "c", "sub": "c", **claims}, typ="client-authentication+jwt"
        )
        assert (await _present(w, first)).status_code == 200
        assert (await _present(w, other)).status_code == 200
        assert (await _present(w, first)).status_code == 401


async def test_an_assertion_naming_an_unknown_client_is_audited_at_most_100_characters() -> None:
    async with open_world() as w:
        await _refusal(await _present(w, _assertion(w, iss="i" * 150)), 401, "invalid_client")
        [denied] = [r for r in await w.service.audit.query() if r.decision == "denied"]
        assert denied.reason == f"client_assertion names unknown client {'i' * 100!r}"


async def test_an_expired_assertion_is_refused_with_the_verifiers_words_only() -> None:
    async with open_world() as w:
        assertion = _assertion(w)
        expired_at = datetime.fromtimestamp(int(w.clock()) + 60, tz=timezone.utc)
        w.clock.advance(60 + 31)
        description = await _refusal(await _present(w, assertion), 401, "invalid_client")
        assert description == (
            f"client_assertion rejected (expired): token expired at "
            f"{expired_at:%Y-%m-%dT%H:%M:%SZ} (31 s ago, leeway 30 s); get a new token"
        )


# -- targets, chains and where a user comes from -------------------------------------------


async def test_two_audiences_are_two_targets() -> None:
    async with open_world() as w:
        pairs = [("grant_type", EXCHANGE), ("subject_token", _user(w)), ("subject_token_type", AT)]
        pairs += [("audience", "https://b.example/"), ("audience", "c"), *w.auth("a").items()]
        description = await _refusal(await w.post_token(pairs), 400, "invalid_target")
        assert description.startswith("2 resources requested")


@pytest.mark.parametrize(
    ("target", "near"),
    [
        ("https://d.example/api/", "https://d.example/api"),  # an extra '/'
        ("https://c.example", "https://c.example/"),  # a missing '/'
        ("https://b.exampleX/", None),  # another host is no near miss
        ("https://x.example/api", None),  # nor is a shorter path
    ],
)
async def test_a_resource_differing_from_a_registered_one_only_by_a_slash_is_named(
    target: str, near: str | None
) -> None:
    resources = [
        {"resource": "https://d.example/api", "scopes": ["read"]},
        {"resource": "https://x.example/apiX", "scopes": ["read"]},
    ]
    async with open_world(resources=resources) as w:
        pairs = [("grant_type", EXCHANGE), ("subject_token", _user(w)), ("subject_token_type", AT)]
        pairs += [("resource", B), ("resource", target), *w.auth("a").items()]
        description = await _refusal(await w.post_token(pairs), 400, "invalid_target")
        if near is None:
            assert description.startswith("2 resources requested"), description
        else:
            assert description == (
                f"unknown resource {target!r}: the registered resource is {near!r}; resources "
                "compare exactly, so request it in that form"
            )


async def test_a_chain_may_be_exactly_max_chain_depth_agents_deep() -> None:
    async with open_world(max_chain_depth=2) as w:
        subject = _user(w, aud=B, scope="read", act={"sub": "a", "iss": ISSUER})
        ok = await w.exchange("b", subject, C)
        assert ok.status_code == 200, ok.text
        assert claims_of(ok.json()["access_token"])["act"]["act"]["sub"] == "a"
        deeper = _user(w, aud=B, scope="read", act={"sub": "a", "act": {"sub": "x"}})
        description = await _refusal(await w.exchange("b", deeper, C), 400, "invalid_request")
        assert "would be 3 agents deep; max_chain_depth is 2" in description


async def test_a_user_of_this_service_is_named_by_issuer_and_subject() -> None:
    """RFC 9493 §3.2.5: the delegated token's ``sub_id`` is ``iss_sub`` of this service."""
    async with open_world() as w:
        reply = await w.exchange("a", _user(w), B)
        assert reply.status_code == 200, reply.text
        sub_id = claims_of(reply.json()["access_token"])["sub_id"]
        assert sub_id == {"format": "iss_sub", "iss": ISSUER, "sub": "alice"}


async def test_an_external_issuer_may_name_its_own_user_in_sub_id() -> None:
    idp = "https://idp.example"
    idp_key = SigningKey.generate("ES256")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"keys": [idp_key.public_jwk()]})

    config, keys = make_config()
    data = config.model_dump(mode="json")
    data["trusted_issuers"] = [{"issuer": idp, "jwks_uri": f"{idp}/jwks"}]
    clock = Clock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        service = TokenService(parse_config(data), clock=clock, http_client=http)
        async with service.app.router.lifespan_context(service.app):
            transport = httpx.ASGITransport(app=service.app)
            async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
                w = World(service=service, client=client, clock=clock, keys=keys)
                now = int(clock())
                own = {"format": "iss_sub", "iss": idp, "sub": "carol"}
                external = idp_key.sign(
                    {"iss": idp, "sub": "carol", "sub_id": own, "aud": A, "scope": "read",
                     "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex},
                    typ="at+jwt",
                )  # fmt: skip
                reply = await w.exchange("a", external, B)
                assert reply.status_code == 200, reply.text
                assert claims_of(reply.json()["access_token"])["sub_id"] == own


# -- the subject token at the token service ---------------------------------------------


async def test_a_subject_not_yet_valid_gets_the_services_30_s_leeway() -> None:
    async with open_world() as w:
        now = int(w.clock())
        ok = await w.exchange("a", _user(w, nbf=now + 25), B)
        assert ok.status_code == 200, ok.text
        early = await w.exchange("a", _user(w, nbf=now + 45), B)
        description = await _refusal(early, 400, "invalid_request")
        assert description.startswith("subject_token rejected (not_yet_valid): ")


async def test_a_subject_deeper_than_max_chain_depth_fails_its_verification() -> None:
    async with open_world(max_chain_depth=2) as w:
        act = {"sub": "a", "act": {"sub": "x", "act": {"sub": "y"}}}
        description = await _refusal(
            await w.exchange("b", _user(w, aud=B, act=act), C), 400, "invalid_request"
        )
        assert description.startswith("subject_token rejected (depth): ")


async def test_only_an_audience_refusal_explains_audience_chaining() -> None:
    hint = " (an agent may only exchange tokens that were sent to it)"
    async with open_world() as w:
        elsewhere = await w.exchange("a", _user(w, aud=C), B)
        description = await _refusal(elsewhere, 400, "invalid_request")
        assert description.startswith("subject_token rejected (audience): ")
        assert description.endswith(hint)
        expired = await w.exchange("a", _user(w, exp=int(w.clock()) - 100), B)
        description = await _refusal(expired, 400, "invalid_request")
        assert description.startswith("subject_token rejected (expired): ")
        assert description.endswith("get a new token"), description


async def test_a_public_client_asking_for_an_exchange_is_told_which_grant_it_has() -> None:
    async with open_world() as w:
        form = {"grant_type": EXCHANGE, "client_id": "app", "subject_token": _user(w)}
        reply = await w.post_token({**form, "subject_token_type": AT, "resource": B})
        description = await _refusal(reply, 400, "unauthorized_client")
        assert description == (
            "public client 'app' may only use authorization_code; token exchange is for "
            "registered agents"
        )


async def test_an_exchange_is_audited_with_its_target_and_the_users_issuer() -> None:
    async with open_world() as w:
        assert (await w.exchange("a", _user(w), B)).status_code == 200
        form = {"grant_type": EXCHANGE, "subject_token": _user(w), "subject_token_type": AT}
        await _refusal(
            await w.post_token({**form, "audience": "nobody", **w.auth("a")}), 400, "invalid_target"
        )
        issued, denied = await w.service.audit.query()
        assert (issued.decision, issued.target, issued.user_issuer) == ("issued", B, ISSUER)
        assert (denied.decision, denied.target) == ("denied", "nobody")
