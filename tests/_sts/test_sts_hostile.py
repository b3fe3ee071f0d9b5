"""Hostile and malformed inputs: each gets its exact OAuth error, none a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from leak_support import assert_no_token
from sts_support import (
    AT,
    EXCHANGE,
    ISSUER,
    JWT_BEARER,
    REDIRECT,
    SECRET_B,
    VERIFIER,
    A,
    B,
    C,
    D,
    World,
    open_world,
)

from keycard_agents import InvalidTokenError
from keycard_agents.auth import SigningKey, StaticKeys, TokenVerifier
from keycard_agents.sts import pkce_challenge

pytestmark = pytest.mark.anyio

#: The one answer to a failed client authentication (unknown client, wrong secret or key).
VAGUE_CLIENT_AUTH = (
    "client authentication failed: unknown client or wrong credentials (check the client "
    "id, its secret or signing key, and its registration under [[agents]])"
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _user_claims(w: World, **over: Any) -> dict[str, Any]:
    now = int(w.clock())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": A,
        "scope": "read write",
        "txn": "txn-1",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(w: World, **over: Any) -> str:
    """Signed with the service's real key (so only the claims are hostile)."""
    return w.service.keys.current.sign(_user_claims(w, **over), typ="at+jwt")


def _forged_signature(w: World) -> str:
    other = SigningKey.generate("ES256")
    header = {"alg": "ES256", "kid": w.service.keys.current.kid, "typ": "at+jwt"}
    return jwt.encode(header, _user_claims(w), other.key)


def _alg_none(w: World) -> str:
    header = {"alg": "none", "kid": w.service.keys.current.kid, "typ": "at+jwt"}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_user_claims(w)).encode())}."


def _hs256_with_public_key(w: World) -> str:
    header = {"alg": "HS256", "kid": w.service.keys.current.kid, "typ": "at+jwt"}
    signing_input = (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_user_claims(w)).encode())}"
    )
    secret = json.dumps(w.service.keys.current.public_jwk()).encode()
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


def _unknown_kid(w: World) -> str:
    other = SigningKey.generate("ES256")
    return other.sign(_user_claims(w), typ="at+jwt")


def _assertion_as_subject(w: World) -> str:
    return w.assertion("a", aud=A)


def _act(depth: int, prefix: str = "x") -> dict[str, Any] | None:
    node: dict[str, Any] | None = None
    for i in range(depth, 0, -1):
        node = {"sub": f"{prefix}{i}", **({"act": node} if node else {})}
    return node


TOKENS: dict[str, tuple[Callable[[World], str], str]] = {
    "forged subject signature": (_forged_signature, "signature"),
    "alg none subject": (_alg_none, "algorithm"),
    "HS256 with the public key": (_hs256_with_public_key, "algorithm"),
    "unknown kid": (_unknown_kid, "unknown_key"),
    "client assertion as subject (typ)": (_assertion_as_subject, "type"),
    "expired subject": (lambda w: _signed(w, exp=int(w.clock()) - 1000), "expired"),
    "subject not yet valid": (lambda w: _signed(w, nbf=int(w.clock()) + 1000), "not_yet_valid"),
    "wrong issuer": (lambda w: _signed(w, iss="https://evil.example"), "issuer"),
    "oversized subject": (lambda w: _signed(w, pad="x" * 9000), "size"),
    "act nested past the limit": (lambda w: _signed(w, act=_act(6)), "depth"),
    "not a JWT at all": (lambda w: "not-a-token", "malformed"),
}


def _token_case(name: str) -> Callable[[World], Awaitable[httpx.Response]]:
    async def run(w: World) -> httpx.Response:
        return await w.exchange("a", TOKENS[name][0](w), B)

    return run


async def _aud_other_agent(w: World) -> httpx.Response:
    token = w.service.issue_user_token("alice", audience=C, scopes=["read"])
    return await w.exchange("a", token, B)


async def _scope_widening(w: World) -> httpx.Response:
    token = w.service.issue_user_token("alice", audience=A, scopes=["read"])
    return await w.exchange("a", token, B, scope="read write")


async def _empty_intersection(w: World) -> httpx.Response:
    token = w.service.issue_user_token("alice", audience=A, scopes=["admin"])
    return await w.exchange("a", token, B)


async def _undeclared_target(w: World) -> httpx.Response:
    return await w.exchange("a", _signed(w), D)


async def _unknown_resource(w: World) -> httpx.Response:
    return await w.exchange("a", _signed(w), "https://unknown.example/")


async def _repeated_agent(w: World) -> httpx.Response:
    token = _signed(w, act={"sub": "b", "act": {"sub": "a"}})
    return await w.exchange("a", token, B)


async def _depth_exceeded(w: World) -> httpx.Response:
    token = _signed(w, aud=B, act=_act(5), scope="read")
    return await w.exchange("b", token, C)


async def _may_act_mismatch(w: World) -> httpx.Response:
    token = w.service.issue_user_token("alice", audience=A, scopes=["read"], may_act="c")
    return await w.exchange("a", token, B)


async def _may_act_first_false(w: World) -> httpx.Response:
    token = w.service.issue_user_token("alice", audience=B, scopes=["read"])
    return await w.exchange("b", token, C)


async def _actor_without_type(w: World) -> httpx.Response:
    return await w.exchange("a", _signed(w), B, actor_token=_signed(w))


async def _actor_of_other_agent(w: World) -> httpx.Response:
    cc = await w.post_token({"grant_type": "client_credentials", **w.auth("c")})
    assert cc.status_code == 200
    return await w.exchange(
        "a", _signed(w), B, actor_token=cc.json()["access_token"], actor_token_type=AT
    )


async def _user_token_as_actor(w: World) -> httpx.Response:
    return await w.exchange("a", _signed(w), B, actor_token=_signed(w), actor_token_type=AT)


async def _replayed_jti(w: World) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER}
    form["client_assertion"] = w.assertion("a", jti="once")
    first = await w.post_token(form)
    assert first.status_code == 200
    return await w.post_token(form)


async def _assertion_wrong_aud(w: World) -> httpx.Response:
    assertion = w.assertion("a", aud=f"{ISSUER}/token")
    return await w.post_token(
        {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion,
        }
    )


async def _assertion_expired(w: World) -> httpx.Response:
    assertion = w.assertion("a", lifetime=60)
    w.clock.advance(200)
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER}
    return await w.post_token({**form, "client_assertion": assertion})


async def _assertion_too_long_lived(w: World) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER}
    return await w.post_token({**form, "client_assertion": w.assertion("a", lifetime=3600)})


async def _assertion_other_key(w: World) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER}
    bad = w.assertion("a", key=w.keys["a-other"])
    return await w.post_token({**form, "client_assertion": bad})


async def _wrong_secret(w: World) -> httpx.Response:
    reply = await w.client.post(
        "/token", data={"grant_type": "client_credentials"}, auth=("b", "wrong")
    )
    assert reply.headers["www-authenticate"].startswith("Basic")
    return reply


async def _no_client_auth(w: World) -> httpx.Response:
    return await w.post_token({"grant_type": "client_credentials"})


async def _two_methods(w: World) -> httpx.Response:
    return await w.client.post(
        "/token",
        data={"grant_type": "client_credentials", **w.auth("a")},
        auth=("b", SECRET_B),
    )


async def _public_client_exchange(w: World) -> httpx.Response:
    form = {"grant_type": EXCHANGE, "client_id": "app", "subject_token": _signed(w)}
    return await w.post_token({**form, "subject_token_type": AT, "resource": B})


def _redeem_form(code: str, verifier: str = VERIFIER) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "app",
        "code_verifier": verifier,
    }


async def _pkce_mismatch(w: World) -> httpx.Response:
    code = await w.sign_in()
    return await w.post_token(_redeem_form(code, "x" * 43))


async def _reused_code(w: World) -> httpx.Response:
    code = await w.sign_in()
    assert (await w.post_token(_redeem_form(code))).status_code == 200
    return await w.post_token(_redeem_form(code))


async def _plain_pkce(w: World) -> httpx.Response:
    params = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": REDIRECT,
        "code_challenge": VERIFIER,
        "code_challenge_method": "plain",
        "resource": A,
        "state": "s",
    }
    return await w.client.get("/authorize", params=params)


async def _authorize_unknown_redirect(w: World) -> httpx.Response:
    params = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": "https://evil.example/cb",
        "code_challenge": pkce_challenge(VERIFIER),
        "code_challenge_method": "S256",
        "resource": A,
    }
    return await w.client.get("/authorize", params=params)


def _raw(
    content: bytes, content_type: str = "application/x-www-form-urlencoded"
) -> Callable[[World], Awaitable[httpx.Response]]:
    async def run(w: World) -> httpx.Response:
        return await w.client.post(
            "/token", content=content, headers={"content-type": content_type}
        )

    return run


async def _json_body(w: World) -> httpx.Response:
    return await w.client.post("/token", json={"grant_type": "client_credentials"})


async def _duplicate_params(w: World) -> httpx.Response:
    pairs = [("grant_type", EXCHANGE), *w.auth("a").items(), ("subject_token", _signed(w))]
    pairs += [("subject_token", _signed(w)), ("subject_token_type", AT), ("resource", B)]
    return await w.post_token(pairs)


async def _multiple_resources(w: World) -> httpx.Response:
    pairs = [("grant_type", EXCHANGE), *w.auth("a").items(), ("subject_token", _signed(w))]
    pairs += [("subject_token_type", AT), ("resource", B), ("resource", C)]
    return await w.post_token(pairs)


async def _wrong_subject_type(w: World) -> httpx.Response:
    form = {"grant_type": EXCHANGE, **w.auth("a"), "subject_token": _signed(w)}
    return await w.post_token({**form, "subject_token_type": "urn:x:saml", "resource": B})


async def _refresh_token_requested(w: World) -> httpx.Response:
    return await w.exchange(
        "a",
        _signed(w),
        B,
        requested_token_type="urn:ietf:params:oauth:token-type:refresh_token",
    )


async def _malformed_may_act(w: World) -> httpx.Response:
    return await w.exchange("a", _signed(w, may_act="a"), B)


async def _two_audiences(w: World) -> httpx.Response:
    return await w.exchange("a", _signed(w, aud=[A, C]), B)


async def _missing_resource(w: World) -> httpx.Response:
    form = {"grant_type": EXCHANGE, **w.auth("a"), "subject_token": _signed(w)}
    return await w.post_token({**form, "subject_token_type": AT})


async def _audience_names_another_target(w: World) -> httpx.Response:
    return await w.exchange("a", _signed(w), B, audience="c")


async def _unknown_audience_name(w: World) -> httpx.Response:
    form = {"grant_type": EXCHANGE, "subject_token": _signed(w), "subject_token_type": AT}
    return await w.post_token({**form, "audience": "nobody", **w.auth("a")})


async def _resource_without_its_slash(w: World) -> httpx.Response:
    return await w.exchange("a", _signed(w), B.rstrip("/"))


async def _blank_scope(w: World) -> httpx.Response:
    return await w.exchange("a", _signed(w), B, scope="   ")


async def _bearer_header(w: World) -> httpx.Response:
    headers = {"authorization": "Bearer abc"}
    return await w.client.post("/token", data={"grant_type": "client_credentials"}, headers=headers)


async def _malformed_basic(w: World) -> httpx.Response:
    headers = {"authorization": "Basic !!!notbase64"}
    return await w.client.post("/token", data={"grant_type": "client_credentials"}, headers=headers)


async def _wrong_assertion_type(w: World) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_assertion_type": "urn:x:saml2"}
    return await w.post_token({**form, "client_assertion": w.assertion("a")})


async def _assertion_sub_differs(w: World) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER}
    return await w.post_token({**form, "client_assertion": w.assertion("a", sub="c")})


async def _assertion_garbage(w: World) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER}
    return await w.post_token({**form, "client_assertion": "x.y.z"})


async def _client_credentials_with_scope(w: World) -> httpx.Response:
    return await w.post_token({"grant_type": "client_credentials", "scope": "read", **w.auth("a")})


async def _unknown_grant(w: World) -> httpx.Response:
    return await w.post_token({"grant_type": "password", "username": "alice"})


#: One row per hostile input: (name, request, HTTP status, OAuth error code, reason). The
#: reason is the check that refused it: it must appear in the audit record's reason and,
#: unless the answer is deliberately vague (client authentication: the answer must not
#: tell which clients exist), in the ``error_description`` sent back.
CASES: list[tuple[str, Callable[[World], Awaitable[httpx.Response]], int, str, str]] = [
    *[
        (name, _token_case(name), 400, "invalid_request", f"subject_token rejected ({check})")
        for name, (_, check) in TOKENS.items()
    ],
    (
        "subject aud is another agent",
        _aud_other_agent,
        400,
        "invalid_request",
        "subject_token rejected (audience)",
    ),
    (
        "scope widening",
        _scope_widening,
        400,
        "invalid_scope",
        "scope 'write' exceeds what may be delegated",
    ),
    (
        "empty scope intersection",
        _empty_intersection,
        400,
        "invalid_scope",
        "share nothing with what https://b.example/ accepts",
    ),
    (
        "undeclared target",
        _undeclared_target,
        400,
        "invalid_target",
        "agent 'a' may not call 'https://d.example/api'",
    ),
    (
        "unknown resource",
        _unknown_resource,
        400,
        "invalid_target",
        "unknown resource 'https://unknown.example/'",
    ),
    ("multiple resources", _multiple_resources, 400, "invalid_target", "2 resources requested"),
    (
        "repeated agent in the chain",
        _repeated_agent,
        400,
        "invalid_request",
        "agent 'a' already acted in this chain",
    ),
    (
        "depth limit exceeded",
        _depth_exceeded,
        400,
        "invalid_request",
        "would be 6 agents deep; max_chain_depth is 5",
    ),
    (
        "may_act names another agent",
        _may_act_mismatch,
        400,
        "invalid_request",
        "allows only 'c' to act for the user (may_act)",
    ),
    (
        "agent may not act first",
        _may_act_first_false,
        400,
        "unauthorized_client",
        "agent 'b' may not act first",
    ),
    (
        "actor_token without its type",
        _actor_without_type,
        400,
        "invalid_request",
        "send actor_token and actor_token_type together",
    ),
    (
        "actor token of another agent",
        _actor_of_other_agent,
        400,
        "invalid_request",
        "actor_token names agent 'c'",
    ),
    (
        "user token as actor token",
        _user_token_as_actor,
        400,
        "invalid_request",
        "actor_token rejected (audience)",
    ),
    (
        "replayed client assertion jti",
        _replayed_jti,
        401,
        "invalid_client",
        "client_assertion jti 'once' was already used",
    ),
    (
        "client assertion with wrong aud",
        _assertion_wrong_aud,
        401,
        "invalid_client",
        "client_assertion rejected (audience)",
    ),
    (
        "expired client assertion",
        _assertion_expired,
        401,
        "invalid_client",
        "client_assertion rejected (expired)",
    ),
    (
        "client assertion lives too long",
        _assertion_too_long_lived,
        401,
        "invalid_client",
        "client_assertion lives longer than 300 s",
    ),
    (
        "client assertion signed by another key",
        _assertion_other_key,
        401,
        "invalid_client",
        "client_assertion rejected (unknown_key)",
    ),
    ("wrong client secret", _wrong_secret, 401, "invalid_client", "wrong client secret for 'b'"),
    (
        "no client authentication",
        _no_client_auth,
        401,
        "invalid_client",
        "client authentication required",
    ),
    (
        "two client auth methods",
        _two_methods,
        400,
        "invalid_request",
        "more than one client authentication method",
    ),
    (
        "public client tries token exchange",
        _public_client_exchange,
        400,
        "unauthorized_client",
        "public client 'app' may only use authorization_code",
    ),
    (
        "PKCE verifier mismatch",
        _pkce_mismatch,
        400,
        "invalid_grant",
        "code_verifier does not match the code_challenge",
    ),
    (
        "reused auth code",
        _reused_code,
        400,
        "invalid_grant",
        "the code is unknown, expired or already used",
    ),
    (
        "plain PKCE refused at /authorize",
        _plain_pkce,
        303,
        "invalid_request",
        "code_challenge_method must be S256",
    ),
    (
        "unregistered redirect_uri",
        _authorize_unknown_redirect,
        400,
        "page",
        "redirect_uri is not registered",
    ),
    (
        "unknown grant type",
        _unknown_grant,
        400,
        "unsupported_grant_type",
        "grant_type 'password' is not supported",
    ),
    (
        "missing grant type",
        _raw(b"scope=read"),
        400,
        "invalid_request",
        "missing required parameter 'grant_type'",
    ),
    (
        "malformed form body",
        _raw(b"grant_type=client_credentials&&junk"),
        400,
        "invalid_request",
        "malformed form body",
    ),
    (
        "non-UTF-8 percent escapes",
        _raw(b"grant_type=%ff%fe"),
        400,
        "invalid_request",
        "malformed form body",
    ),
    (
        "raw non-ASCII bytes",
        _raw(b"grant_type=\xff\xfe"),
        400,
        "invalid_request",
        "malformed form body",
    ),
    (
        "latin-1 charset",
        _raw(b"a=b", "application/x-www-form-urlencoded; charset=latin-1"),
        400,
        "invalid_request",
        "the form must be UTF-8 encoded",
    ),
    (
        "JSON body",
        _json_body,
        400,
        "invalid_request",
        "send the body as application/x-www-form-urlencoded",
    ),
    (
        "huge body",
        _raw(b"a=" + b"x" * 100_000),
        413,
        "invalid_request",
        "request body larger than 64 KiB",
    ),
    (
        "duplicate parameters",
        _duplicate_params,
        400,
        "invalid_request",
        "parameter 'subject_token' is repeated",
    ),
    (
        "wrong subject_token_type",
        _wrong_subject_type,
        400,
        "invalid_request",
        "subject_token_type must be",
    ),
    (
        "refresh token requested",
        _refresh_token_requested,
        400,
        "invalid_request",
        "only requested_token_type=",
    ),
    ("malformed may_act", _malformed_may_act, 400, "invalid_request", "malformed 'may_act' claim"),
    (
        "subject addressed to two audiences",
        _two_audiences,
        400,
        "invalid_request",
        "subject_token is addressed to [",
    ),
    ("missing resource", _missing_resource, 400, "invalid_request", "missing 'resource'"),
    ("scope of only spaces", _blank_scope, 400, "invalid_request", "scope is empty"),
    (
        "Bearer credentials at /token",
        _bearer_header,
        400,
        "invalid_request",
        "only HTTP Basic client authentication is accepted",
    ),
    (
        "malformed Basic credentials",
        _malformed_basic,
        401,
        "invalid_client",
        "malformed HTTP Basic credentials",
    ),
    (
        "wrong client_assertion_type",
        _wrong_assertion_type,
        400,
        "invalid_request",
        "client_assertion_type must be",
    ),
    (
        "client assertion sub differs from iss",
        _assertion_sub_differs,
        401,
        "invalid_client",
        "client_assertion 'sub' must equal its 'iss'",
    ),
    (
        "client assertion is garbage",
        _assertion_garbage,
        401,
        "invalid_client",
        "client_assertion has no 'iss' naming the client",
    ),
    (
        "client_credentials with a scope",
        _client_credentials_with_scope,
        400,
        "invalid_scope",
        "client_credentials tokens carry no scopes here",
    ),
    (
        "audience naming another target",
        _audience_names_another_target,
        400,
        "invalid_target",
        "2 resources requested",
    ),
    (
        "unknown audience name",
        _unknown_audience_name,
        400,
        "invalid_target",
        "unknown audience 'nobody'",
    ),
    (
        "resource differing by a slash",
        _resource_without_its_slash,
        400,
        "invalid_target",
        "the registered resource is 'https://b.example/'",
    ),
]


def names(text: str, reason: str) -> bool:
    """Whether ``text`` holds ``reason`` as a phrase of its own (not glued to letters)."""
    before = r"(?<!\w)" if re.match(r"\w", reason) else ""
    after = r"(?!\w)" if re.search(r"\w$", reason) else ""
    return re.search(before + re.escape(reason) + after, text) is not None


@pytest.mark.parametrize(
    ("name", "case", "status", "error", "reason"), CASES, ids=[c[0] for c in CASES]
)
async def test_hostile_token_request(
    name: str,
    case: Callable[[World], Awaitable[httpx.Response]],
    status: int,
    error: str,
    reason: str,
) -> None:
    async with open_world() as w:
        reply = await case(w)
        assert reply.status_code == status, reply.text
        if status == 303:
            query = parse_qs(urlsplit(reply.headers["location"]).query)
            assert query["error"] == [error]
            assert names(query["error_description"][0], reason), query
            assert query["state"] == ["s"]
            assert "code" not in query
            return
        if error == "page":
            assert names(reply.text, reason), reply.text[:300]
            assert "location" not in reply.headers
            return
        body = reply.json()
        assert body["error"] == error, body
        assert body["error_description"]
        assert reply.headers["cache-control"] == "no-store"
        # a denial is audited with the reason, and no token or secret leaks into the record
        records = await w.service.audit.query()
        denied = [r for r in records if r.decision == "denied"]
        assert denied, name
        assert names(denied[-1].reason or "", reason), denied[-1].reason
        if body["error_description"] != VAGUE_CLIENT_AUTH:
            assert names(body["error_description"], reason), body
        dumped = denied[-1].model_dump_json()
        assert SECRET_B not in dumped
        assert_no_token(dumped)
        assert_no_token(body["error_description"])
        assert w.service.stats.issued == sum(1 for r in records if r.decision == "issued")


@pytest.mark.parametrize("name", list(TOKENS))
async def test_hostile_token_at_the_verifier(name: str) -> None:
    """The same hostile subject tokens fail at a receiving agent, with the named check."""
    async with open_world() as w:
        token = TOKENS[name][0](w)
        verifier = TokenVerifier(
            issuers=[ISSUER],
            keys=StaticKeys({ISSUER: w.service.keys.public_jwks()}),
            clock=w.clock,
            leeway=30,
        )
        with pytest.raises(InvalidTokenError) as info:
            await verifier.verify(token, audience=A)
        assert info.value.check == TOKENS[name][1]
