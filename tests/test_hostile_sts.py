"""The token service under attack: one table of hostile requests, each with its verdict.

Every row is one request (or a short attack ending in one), sent to the real token
service app over ``httpx.ASGITransport``, with what it must get back: the HTTP status,
the OAuth error code and the *reason*, a piece of the text that names the check that
refused it. Rows cover client authentication, the exchange policy, sign-in
(``/authorize`` and the code redemption), the audit page and its admin credential.
Every row must be refused (nothing is accepted: no token, no code, no audit data) and
nothing may answer 5xx.

A reason names one check, in one layer: where two layers refuse the same request (the
verifier's audience check and the policy's audience chaining), the reason is the first
layer's, and another row reaches the second; so a check dropped from one layer cannot
hide behind the other.

To add an attack, add a :class:`Row`. ``where`` says where the reason must show:

- ``"body"``: the JSON ``error_description`` (and the audit record, for ``/token``);
- ``"audit"``: only the audit record: the answer is deliberately vague (a failed client
  authentication must not tell which clients exist), and the test checks it is;
- ``"redirect"``: the ``error_description`` of the redirect to the client (``/authorize``);
- ``"page"``: the text of an HTML page (sign-in page, audit page).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
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
    PASSWORD,
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
from trace_support import ADMIN, ADMIN_TOKEN

from keycard_agents._jose._keys import SigningKey
from keycard_agents.sts import pkce_challenge

pytestmark = pytest.mark.anyio

#: The one answer to every failed client authentication.
VAGUE = "client authentication failed: unknown client or wrong credentials"
CC = "client_credentials"

Send = Callable[[World], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Row:
    name: str
    send: Send
    status: int
    error: str  # the OAuth error code; "" for an HTML page without one
    reason: str
    where: str = "body"


# -- request builders -----------------------------------------------------------------

Value = str | Callable[[World], str]


def _resolve(w: World, form: Mapping[str, Value]) -> dict[str, str]:
    return {k: v(w) if callable(v) else v for k, v in form.items()}


def token(
    form: Mapping[str, Value],
    *,
    headers: dict[str, str] | None = None,
    basic: tuple[str, str] | None = None,
) -> Send:
    async def send(w: World) -> httpx.Response:
        return await w.client.post(
            "/token",
            data=_resolve(w, form),
            headers=headers or {},
            auth=basic,  # type: ignore[arg-type]
        )

    return send


def raw(content: bytes, content_type: str | None = "application/x-www-form-urlencoded") -> Send:
    async def send(w: World) -> httpx.Response:
        headers = {} if content_type is None else {"content-type": content_type}
        return await w.client.post("/token", content=content, headers=headers)

    return send


def raw_headers(content: bytes, headers: dict[str, str]) -> Send:
    async def send(w: World) -> httpx.Response:
        return await w.client.post("/token", content=content, headers=headers)

    return send


def repeated(times: int, first: Send, then: Send | None = None) -> Send:
    """``first`` ``times`` times (all must fail), then ``then`` (default: ``first``)."""

    async def send(w: World) -> httpx.Response:
        for _ in range(times):
            reply = await first(w)
            assert reply.status_code in (400, 401), reply.text
        return await (then or first)(w)

    return send


def twice(send: Send) -> Send:
    """``send``, which must be accepted, then the very same request again."""

    async def again(w: World) -> httpx.Response:
        first = await send(w)
        assert first.status_code == 200, first.text
        return await send(w)

    return again


def assertion(client_id: str = "a", **options: Any) -> Callable[[World], str]:
    key_name = options.pop("key_name", None)

    def make(w: World) -> str:
        return w.assertion(client_id, key=w.keys[key_name] if key_name else None, **options)

    return make


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _assertion_claims(w: World, client_id: str = "a") -> dict[str, Any]:
    now = int(w.clock())
    return {
        "iss": client_id,
        "sub": client_id,
        "aud": ISSUER,
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(signature)}"


def assertion_alg_none(w: World) -> str:
    header = {"alg": "none", "typ": "client-authentication+jwt"}
    return _unsigned(header, _assertion_claims(w))


def assertion_hs256(w: World) -> str:
    header = {"alg": "HS256", "kid": w.keys["a"].kid, "typ": "client-authentication+jwt"}
    signing_input = _unsigned(header, _assertion_claims(w)).rsplit(".", 1)[0]
    secret = json.dumps(w.keys["a"].public_jwk()).encode()
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


def assertion_forged_with_kid(w: World) -> str:
    header = {"alg": "ES256", "kid": w.keys["a"].kid, "typ": "client-authentication+jwt"}
    return jwt.encode(header, _assertion_claims(w), SigningKey.generate().key)


def assertion_without_jti(w: World) -> str:
    claims = _assertion_claims(w)
    del claims["jti"]
    return w.keys["a"].sign(claims, typ="client-authentication+jwt")


def with_assertion(make: Callable[[World], str], **extra: Value) -> dict[str, Value]:
    return {
        "grant_type": CC,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": make,
        **extra,
    }


def user_token(
    aud: str | list[str] = A, scopes: tuple[str, ...] = ("read", "write"), **extra: Any
) -> Callable[[World], str]:
    def make(w: World) -> str:
        now = int(w.clock())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "alice",
            "aud": aud,
            "scope": " ".join(scopes),
            "txn": "txn-hostile",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        claims.update(extra)
        claims = {k: v for k, v in claims.items() if v is not None}
        return w.service.keys.current.sign(claims, typ="at+jwt")

    return make


def exchange(
    client: str = "a", subject: Value | None = None, resource: str | None = B, **extra: Value
) -> Send:
    async def send(w: World) -> httpx.Response:
        form: dict[str, Value] = {
            "grant_type": EXCHANGE,
            "subject_token": subject if subject is not None else user_token(),
            "subject_token_type": AT,
            **extra,
        }
        if resource is not None:
            form["resource"] = resource
        return await w.post_token({**w.auth(client), **_resolve(w, form)})

    return send


async def two_targets(w: World) -> httpx.Response:
    pairs = [("grant_type", EXCHANGE), *w.auth("a").items(), ("subject_token", user_token()(w))]
    pairs += [("subject_token_type", AT), ("resource", B), ("resource", C)]
    return await w.post_token(pairs)


def forged_subject(w: World) -> str:
    other = SigningKey.generate()
    header = {"alg": "ES256", "kid": w.service.keys.current.kid, "typ": "at+jwt"}
    claims = jwt.decode(user_token()(w), w.service.keys.current.key).claims
    return jwt.encode(header, claims, other.key)


def actor_of(client_id: str) -> Callable[[World], Awaitable[str]]:
    async def get(w: World) -> str:
        reply = await w.post_token({"grant_type": CC, **w.auth(client_id)})
        assert reply.status_code == 200
        return str(reply.json()["access_token"])

    return get


def exchange_with_actor(actor_client: str) -> Send:
    async def send(w: World) -> httpx.Response:
        actor = await actor_of(actor_client)(w)
        return await exchange("a", actor_token=actor, actor_token_type=AT)(w)

    return send


# -- sign-in -------------------------------------------------------------------------


def authorize_params(**over: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": REDIRECT,
        "code_challenge": pkce_challenge(VERIFIER),
        "code_challenge_method": "S256",
        "resource": A,
        "scope": "read",
        "state": "s",
    }
    params.update(over)
    return {k: v for k, v in params.items() if v is not None}


def authorize_get(**over: str | None) -> Send:
    async def send(w: World) -> httpx.Response:
        return await w.client.get("/authorize", params=authorize_params(**over))

    return send


def authorize_query(query: str) -> Send:
    async def send(w: World) -> httpx.Response:
        return await w.client.get(f"/authorize?{query}")

    return send


def sign_in(username: str, password: str, **over: str | None) -> Send:
    async def send(w: World) -> httpx.Response:
        form = {**authorize_params(**over), "username": username, "password": password}
        return await w.client.post("/authorize", data=form)

    return send


def redeem(**over: str | None) -> Send:
    async def send(w: World) -> httpx.Response:
        code = await w.sign_in()
        form: dict[str, str | None] = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "app",
            "code_verifier": VERIFIER,
        }
        form.update(over)
        return await w.post_token({k: v for k, v in form.items() if v is not None})

    return send


def redeem_twice(w: World) -> Awaitable[httpx.Response]:
    async def send() -> httpx.Response:
        code = await w.sign_in()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "app",
            "code_verifier": VERIFIER,
        }
        assert (await w.post_token(form)).status_code == 200
        return await w.post_token(form)

    return send()


# -- the audit page --------------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def audit(path: str, authorization: str | None = None, **headers: str) -> Send:
    async def send(w: World) -> httpx.Response:
        all_headers = dict(headers)
        if authorization is not None:
            all_headers["Authorization"] = authorization
        return await w.client.get(path, headers=all_headers)

    return send


def audit_post(path: str, authorization: str | None = None) -> Send:
    async def send(w: World) -> httpx.Response:
        headers = {} if authorization is None else {"Authorization": authorization}
        return await w.client.post(path, headers=headers)

    return send


ADMIN_OK = f"Bearer {ADMIN_TOKEN}"


# -- the table --------------------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"
B_POST = {"client_id": "b", "client_secret": SECRET_B}
GUESS_B = {"grant_type": CC, "client_id": "b", "client_secret": "guess"}
NOT_UTF8_BASIC = "Basic " + base64.b64encode(b"\xff:\xfe").decode()

# fmt: off
CLIENT_AUTH = [
    Row("no client authentication", token({"grant_type": CC}), 401, "invalid_client",
        "client authentication required"),
    Row("unknown client, secret post",
        token({"grant_type": CC, "client_id": "nobody", "client_secret": "x"}), 401,
        "invalid_client", "unknown client 'nobody'", "audit"),
    Row("wrong secret, post", token({"grant_type": CC, "client_id": "b", "client_secret": "x"}),
        401, "invalid_client", "wrong client secret for 'b'", "audit"),
    Row("wrong secret, basic", token({"grant_type": CC}, basic=("b", "x")), 401, "invalid_client",
        "wrong client secret for 'b'", "audit"),
    Row("secret for a private_key_jwt agent", token({"grant_type": CC}, basic=("a", "x")), 401,
        "invalid_client", "authenticates with private_key_jwt, not a client secret", "audit"),
    Row("secret of b presented as client a",
        token({"grant_type": CC, "client_id": "a", "client_secret": SECRET_B}), 401,
        "invalid_client", "authenticates with private_key_jwt", "audit"),
    Row("empty-looking secret (a space)",
        token({"grant_type": CC, "client_id": "b", "client_secret": " "}), 401, "invalid_client",
        "wrong client secret for 'b'", "audit"),
    Row("basic, not base64", token({"grant_type": CC}, headers={"Authorization": "Basic !!!"}),
        401, "invalid_client", "malformed HTTP Basic credentials"),
    Row("basic without a colon",
        token({"grant_type": CC}, headers={"Authorization": "Basic " + _b64(b"b-only") + "=="}),
        401, "invalid_client", "malformed HTTP Basic credentials"),
    Row("basic, not UTF-8",
        token({"grant_type": CC}, headers={"Authorization": NOT_UTF8_BASIC}),
        401, "invalid_client", "malformed HTTP Basic credentials"),
    Row("bearer at /token", token({"grant_type": CC}, headers={"Authorization": "Bearer x"}), 400,
        "invalid_request", "only HTTP Basic client authentication is accepted"),
    Row("digest at /token", token({"grant_type": CC}, headers={"Authorization": "Digest x"}), 400,
        "invalid_request", "only HTTP Basic client authentication is accepted"),
    Row("basic and post together",
        token({"grant_type": CC, **B_POST}, basic=("b", SECRET_B)),
        400, "invalid_request", "more than one client authentication method"),
    Row("post and assertion together",
        token(with_assertion(assertion(), client_id="b", client_secret=SECRET_B)), 400,
        "invalid_request", "more than one client authentication method"),
    Row("secret post without client_id", token({"grant_type": CC, "client_secret": SECRET_B}), 400,
        "invalid_request", "client_secret_post needs client_id"),
    Row("basic, form client_id differs",
        token({"grant_type": CC, "client_id": "a"}, basic=("b", SECRET_B)), 400, "invalid_request",
        "client_id differs from the Basic credentials"),
    Row("wrong client_assertion_type",
        token({"grant_type": CC, "client_assertion_type": "urn:x",
               "client_assertion": assertion()}),
        400, "invalid_request", "client_assertion_type must be"),
    Row("assertion type without an assertion",
        token({"grant_type": CC, "client_assertion_type": JWT_BEARER}), 400, "invalid_request",
        "missing required parameter 'client_assertion'"),
    Row("oversized assertion", token(with_assertion(lambda w: "e" * 9000)), 401, "invalid_client",
        "client_assertion is too large"),
    Row("garbage assertion", token(with_assertion(lambda w: "x.y.z")), 401, "invalid_client",
        "client_assertion has no 'iss' naming the client"),
    Row("assertion from an unknown client",
        token(with_assertion(assertion("nobody", key_name="a"))), 401, "invalid_client",
        "names unknown client 'nobody'", "audit"),
    Row("assertion from a secret client", token(with_assertion(assertion("b", key_name="a"))), 401,
        "invalid_client", "authenticates with a client secret, not private_key_jwt", "audit"),
    Row("assertion signed by another key", token(with_assertion(assertion(key_name="a-other"))),
        401, "invalid_client", "client_assertion rejected (unknown_key)", "audit"),
    Row("assertion forged under the right kid", token(with_assertion(assertion_forged_with_kid)),
        401, "invalid_client", "client_assertion rejected (signature)", "audit"),
    Row("assertion with alg none", token(with_assertion(assertion_alg_none)), 401,
        "invalid_client", "client_assertion rejected (algorithm)", "audit"),
    Row("assertion HMAC-signed with the public key", token(with_assertion(assertion_hs256)), 401,
        "invalid_client", "client_assertion rejected (algorithm)", "audit"),
    Row("assertion typed as an access token", token(with_assertion(assertion(typ="at+jwt"))), 401,
        "invalid_client", "client_assertion rejected (type)", "audit"),
    Row("assertion whose form client_id differs",
        token(with_assertion(assertion(), client_id="c")), 401, "invalid_client",
        "client_assertion rejected (issuer)", "audit"),
    Row("assertion for the token endpoint URL",
        token(with_assertion(assertion(aud=f"{ISSUER}/token"))), 401, "invalid_client",
        "set aud to the issuer string"),
    Row("assertion living an hour", token(with_assertion(assertion(lifetime=3600))), 401,
        "invalid_client", "client_assertion lives longer than 300 s"),
    Row("assertion without jti", token(with_assertion(assertion_without_jti)), 401,
        "invalid_client", "client_assertion rejected (claims)"),
    Row("assertion sub differs", token(with_assertion(assertion(sub="c"))), 401, "invalid_client",
        "client_assertion 'sub' must equal its 'iss'"),
    Row("replayed assertion",
        twice(token(with_assertion(assertion(jti="j1")))),
        401, "invalid_client", "client_assertion jti 'j1' was already used"),
    Row("public client asks for client_credentials", token({"grant_type": CC, "client_id": "app"}),
        400, "unauthorized_client", "public client 'app' may only use authorization_code"),
    Row("agent asks for authorization_code",
        token({"grant_type": "authorization_code", **B_POST, "code": "x",
               "redirect_uri": REDIRECT}),
        400, "unauthorized_client", "cannot use authorization_code"),
    Row("guessing b's secret, 11th try",
        repeated(10, token({"grant_type": CC, "client_id": "b", "client_secret": "guess"})), 429,
        "temporarily_unavailable", "too many failed attempts"),
    Row("the right secret while b is throttled",
        repeated(10, token(GUESS_B), token({"grant_type": CC, **B_POST})),
        429, "temporarily_unavailable", "too many failed attempts"),
]

REQUESTS = [
    Row("unknown grant type", token({"grant_type": "password", "username": "alice"}), 400,
        "unsupported_grant_type", "grant_type 'password' is not supported"),
    Row("log-forging grant type", token({"grant_type": "x\nINFO issued token jti=1"}), 400,
        "unsupported_grant_type", "is not supported"),
    Row("missing grant type", raw(b"scope=read"), 400, "invalid_request",
        "missing required parameter 'grant_type'"),
    Row("repeated grant type", raw(b"grant_type=client_credentials&grant_type=password"), 400,
        "invalid_request", "parameter 'grant_type' is repeated"),
    Row("JSON body", raw(b'{"grant_type": "client_credentials"}', "application/json"), 400,
        "invalid_request", "send the body as application/x-www-form-urlencoded"),
    Row("no content type", raw(b"grant_type=client_credentials", None), 400, "invalid_request",
        "send the body as application/x-www-form-urlencoded"),
    Row("latin-1 form", raw(b"a=b", "application/x-www-form-urlencoded; charset=latin-1"), 400,
        "invalid_request", "the form must be UTF-8 encoded"),
    Row("empty pair in the form", raw(b"grant_type=client_credentials&&x=1"), 400,
        "invalid_request", "malformed form body"),
    Row("bad percent escape", raw(b"grant_type=%ff%fe"), 400, "invalid_request",
        "malformed form body"),
    Row("raw non-ASCII bytes", raw("grant_type=é".encode()), 400, "invalid_request",
        "malformed form body"),
    Row("65 form fields", raw("&".join(f"f{i}=1" for i in range(65)).encode()), 400,
        "invalid_request", "malformed form body"),
    Row("body over 64 KiB", raw(b"a=" + b"x" * 70_000), 413, "invalid_request",
        "request body larger than 64 KiB"),
    Row("Content-Length of 1 GB",
        raw_headers(b"grant_type=x", {"content-type": FORM, "content-length": "1000000000"}),
        413, "invalid_request", "request body larger than 64 KiB"),
]

EXCHANGES = [
    Row("exchange without a subject token", exchange(subject=""), 400, "invalid_request",
        "missing required parameter 'subject_token'"),
    Row("SAML subject token type",
        exchange(subject_token_type="urn:ietf:params:oauth:token-type:saml2"), 400,
        "invalid_request", "subject_token_type must be"),
    Row("actor token without its type", exchange(actor_token=user_token()), 400, "invalid_request",
        "send actor_token and actor_token_type together"),
    Row("actor token of an unknown type",
        exchange(actor_token=user_token(), actor_token_type="urn:x"), 400, "invalid_request",
        "actor_token_type must be"),
    Row("refresh token requested",
        exchange(requested_token_type="urn:ietf:params:oauth:token-type:refresh_token"), 400,
        "invalid_request", "only requested_token_type="),
    Row("audience naming no registered target", exchange(audience="nobody"), 400,
        "invalid_target", "unknown audience 'nobody'"),
    Row("no resource", exchange(resource=None), 400, "invalid_request", "missing 'resource'"),
    Row("forged subject signature", exchange(subject=forged_subject), 400, "invalid_request",
        "subject_token rejected (signature)"),
    Row("expired subject", exchange(subject=lambda w: user_token(exp=int(w.clock()) - 5)(w)), 400,
        "invalid_request", "subject_token rejected (expired)"),
    Row("subject from an untrusted issuer",
        exchange(subject=user_token(iss="https://evil.example")), 400, "invalid_request",
        "subject_token rejected (issuer)"),
    Row("subject sent to another agent", exchange(subject=user_token(aud=C)), 400,
        "invalid_request", "subject_token rejected (audience)"),
    Row("subject sent to this agent and another",
        exchange(subject=user_token(aud=[A, C])), 400, "invalid_request",
        f"subject_token is addressed to {[A, C]!r}, not to agent 'a'"),
    Row("subject token is a client assertion", exchange(subject=assertion(aud=A)), 400,
        "invalid_request", "subject_token rejected (type)"),
    Row("scope widening", exchange(subject=user_token(scopes=("read",)), scope="read write"), 400,
        "invalid_scope", "scope 'write' exceeds what may be delegated"),
    Row("no scope in common", exchange(subject=user_token(scopes=("admin",))), 400, "invalid_scope",
        "share nothing with what https://b.example/ accepts"),
    Row("scope of only spaces", exchange(scope="   "), 400, "invalid_request", "scope is empty"),
    Row("undeclared target", exchange(resource=D), 400, "invalid_target",
        "agent 'a' may not call 'https://d.example/api'"),
    Row("unknown target", exchange(resource="https://unknown.example/"), 400, "invalid_target",
        "unknown resource 'https://unknown.example/': register it"),
    Row("target differing by a slash", exchange(resource=B.rstrip("/")), 400, "invalid_target",
        f"the registered resource is {B!r}"),
    Row("two targets", two_targets, 400, "invalid_target", "2 resources requested"),
    Row("loop back to an agent",
        exchange(subject=user_token(act={"sub": "b", "act": {"sub": "a"}})), 400, "invalid_request",
        "agent 'a' already acted in this chain"),
    Row("may_act names another agent", exchange(subject=user_token(may_act={"sub": "c"})), 400,
        "invalid_request", "allows only 'c' to act for the user (may_act)"),
    Row("agent that may not act first",
        exchange("b", subject=user_token(aud=B, scopes=("read",)), resource=C), 400,
        "unauthorized_client", "agent 'b' may not act first"),
    Row("actor token of another agent", exchange_with_actor("c"), 400, "invalid_request",
        "actor_token names agent 'c'"),
    Row("user token as actor token", exchange(actor_token=user_token(), actor_token_type=AT), 400,
        "invalid_request", "actor_token rejected (audience)"),
    Row("public client exchanges",
        token({"grant_type": EXCHANGE, "client_id": "app", "subject_token": user_token(),
               "subject_token_type": AT, "resource": B}),
        400, "unauthorized_client", "public client 'app' may only use authorization_code"),
    Row("client_credentials with a scope",
        token({"grant_type": CC, "scope": "read", "client_id": "b", "client_secret": SECRET_B}),
        400, "invalid_scope", "client_credentials tokens carry no scopes here"),
    Row("client_credentials with a resource",
        token({"grant_type": CC, "resource": B, "client_id": "b", "client_secret": SECRET_B}), 400,
        "invalid_target", "omit 'resource'"),
]

SIGN_IN = [
    Row("authorize without client_id", authorize_get(client_id=None), 400, "",
        "the request has no client_id", "page"),
    Row("authorize for an unknown client", authorize_get(client_id="evil"), 400, "",
        "unknown client_id", "page"),
    Row("authorize to an unregistered redirect",
        authorize_get(redirect_uri="https://evil.example/cb"), 400, "",
        "redirect_uri is not registered", "page"),
    Row("redirect differing only by a slash", authorize_get(redirect_uri=REDIRECT + "/"), 400, "",
        "redirect_uri is not registered", "page"),
    Row("authorize query over 8 KiB", authorize_get(state="s" * 9000), 400, "",
        "the authorization request is too long", "page"),
    Row("authorize query with a bad escape", authorize_query("client_id=%ff&x"), 400, "",
        "the authorization request is malformed", "page"),
    Row("implicit flow requested", authorize_get(response_type="token"), 303,
        "unsupported_response_type", "only response_type=code is supported", "redirect"),
    Row("no PKCE", authorize_get(code_challenge=None), 303, "invalid_request",
        "PKCE is required: send code_challenge", "redirect"),
    Row("plain PKCE", authorize_get(code_challenge=VERIFIER, code_challenge_method="plain"), 303,
        "invalid_request", "code_challenge_method must be S256", "redirect"),
    Row("malformed code challenge", authorize_get(code_challenge="short"), 303, "invalid_request",
        "code_challenge is not a base64url SHA-256", "redirect"),
    Row("no resource at sign-in", authorize_get(resource=None), 303, "invalid_target",
        "send exactly one resource", "redirect"),
    Row("unknown resource at sign-in", authorize_get(resource="https://evil.example/"), 303,
        "invalid_target", "resource is not a registered agent", "redirect"),
    Row("sign-in for an agent that may not act first", authorize_get(resource=B), 303,
        "invalid_target", "does not accept user tokens directly", "redirect"),
    Row("sign-in for scopes the agent lacks", authorize_get(scope="root"), 303, "invalid_scope",
        "none of the requested scopes is accepted", "redirect"),
    Row("wrong password", sign_in("alice", "wrong"), 401, "", "Wrong username or password",
        "page"),
    Row("unknown user", sign_in("mallory", PASSWORD), 401, "", "Wrong username or password",
        "page"),
    Row("empty password", sign_in("alice", ""), 401, "", "Wrong username or password", "page"),
    Row("password guessing, 11th try", repeated(10, sign_in("alice", "guess")), 429, "",
        "Too many failed sign-ins", "page"),
    Row("the right password while throttled",
        repeated(10, sign_in("alice", "guess"), sign_in("alice", PASSWORD)), 429, "",
        "Too many failed sign-ins", "page"),
    Row("user holds none of the scopes", sign_in("alice", PASSWORD, scope="admin"), 303,
        "invalid_scope", "holds none of the requested scopes", "redirect"),
    Row("unknown code",
        token({"grant_type": "authorization_code", "client_id": "app", "code": "nope",
               "redirect_uri": REDIRECT, "code_verifier": VERIFIER}),
        400, "invalid_grant", "the code is unknown, expired or already used"),
    Row("PKCE verifier mismatch", redeem(code_verifier="x" * 43), 400, "invalid_grant",
        "code_verifier does not match the code_challenge"),
    Row("no PKCE verifier", redeem(code_verifier=None), 400, "invalid_request",
        "PKCE is required: send code_verifier"),
    Row("redirect_uri differs at redemption", redeem(redirect_uri="http://127.0.0.1:7777/other"),
        400, "invalid_grant", "redirect_uri differs from the one in the authorization request"),
    Row("resource differs at redemption", redeem(resource=B), 400, "invalid_target",
        "resource must be omitted or equal the one signed in for"),
    Row("code redeemed twice", redeem_twice, 400, "invalid_grant",
        "the code is unknown, expired or already used"),
    Row("unknown public client redeems", redeem(client_id="nobody"), 401, "invalid_client",
        "client authentication required"),
]

AUDIT_PAGE = [
    Row("audit page without a credential", audit("/audit"), 401, "", "admin credential", "page"),
    Row("audit API without a credential", audit("/audit/api/records"), 401, "invalid_token",
        "needs the admin credential"),
    Row("audit tree without a credential", audit("/audit/api/tree/txn-1"), 401, "invalid_token",
        "needs the admin credential"),
    Row("audit export without a credential", audit("/audit/txn/x/export"), 401, "",
        "admin credential", "page"),
    Row("wrong admin token", audit("/audit/api/records", "Bearer guess"), 401, "invalid_token",
        "needs the admin credential"),
    Row("empty bearer", audit("/audit/api/records", "Bearer "), 401, "invalid_token",
        "needs the admin credential"),
    Row("basic, wrong user", audit("/audit/api/records", _basic("root", ADMIN_TOKEN)), 401,
        "invalid_token", "needs the admin credential"),
    Row("basic, wrong token", audit("/audit/api/records", _basic("admin", "guess")), 401,
        "invalid_token", "needs the admin credential"),
    Row("admin basic, not base64", audit("/audit/api/records", "Basic !!!"), 401, "invalid_token",
        "needs the admin credential"),
    Row("digest scheme", audit("/audit/api/records", f"Digest {ADMIN_TOKEN}"), 401,
        "invalid_token", "needs the admin credential"),
    Row("forged session cookie", audit("/audit/api/records", Cookie="keycard_audit=forged"), 401,
        "invalid_token", "needs the admin credential"),
    Row("token in the query string", audit(f"/audit/api/records?access_token={ADMIN_TOKEN}"), 401,
        "invalid_token", "needs the admin credential"),
    Row("login link without a credential", audit_post("/audit/login-link"), 401, "invalid_token",
        "needs the admin credential"),
    Row("login link with a wrong token", audit_post("/audit/login-link", "Bearer guess"), 401,
        "invalid_token", "needs the admin credential"),
    Row("login with an unknown code", audit("/audit/login?code=forged"), 401, "",
        "admin credential", "page"),
    Row("admin token guessing, 11th try",
        repeated(10, audit("/audit/api/records", "Bearer guess")), 429, "temporarily_unavailable",
        "too many failed attempts"),
    Row("the admin token while throttled",
        repeated(10, audit("/audit/api/records", "Bearer guess"), audit("/audit", ADMIN_OK)), 429,
        "", "too many attempts", "page"),
    Row("records API with a bad time", audit("/audit/api/records?since=yesterday", ADMIN_OK), 400,
        "invalid_request", "since and until are seconds since the epoch"),
    Row("tree of an unknown txn", audit("/audit/api/tree/nope", ADMIN_OK), 404, "not_found",
        "no audit record for txn 'nope'"),
]
# fmt: on

ROWS = [*CLIENT_AUTH, *REQUESTS, *EXCHANGES, *SIGN_IN, *AUDIT_PAGE]


def test_the_table_is_large_and_names_are_unique() -> None:
    assert len(ROWS) >= 70
    assert len({row.name for row in ROWS}) == len(ROWS)


def names(text: str, reason: str) -> bool:
    """Whether ``text`` holds ``reason`` as a phrase of its own: a reason glued to other
    letters (a mangled message) does not count."""
    before = r"(?<!\w)" if re.match(r"\w", reason) else ""
    after = r"(?!\w)" if re.search(r"\w$", reason) else ""
    return re.search(before + re.escape(reason) + after, text) is not None


def _check(row: Row, reply: httpx.Response) -> None:
    assert reply.status_code < 500, (row.name, reply.text)
    assert reply.status_code == row.status, (row.name, reply.status_code, reply.text[:300])
    if reply.status_code in (429, 503):
        assert int(reply.headers["retry-after"]) >= 1
    if row.where == "redirect":
        location = urlsplit(reply.headers["location"])
        query = parse_qs(location.query)
        assert "code" not in query, row.name  # nothing granted
        assert query["error"] == [row.error]
        assert names(query["error_description"][0], row.reason), query
        assert query["state"] == ["s"]
        assert query["iss"] == [ISSUER]
        return
    if row.where == "page":
        assert "location" not in reply.headers, row.name
        assert names(reply.text, row.reason), reply.text[:300]
        assert ADMIN_TOKEN not in reply.text
        assert "name='code'" not in reply.text
        return
    body = reply.json()
    assert not {"access_token", "records", "url"} & set(body), body
    assert body["error"] == row.error, body
    if row.where == "audit":
        assert body["error_description"].startswith(VAGUE), body
    else:
        assert names(body["error_description"], row.reason), body


async def _check_audit(row: Row, w: World) -> None:
    """A refused ``/token`` request leaves a denial with the reason, and no secret."""
    records = await w.service.audit.query()
    assert w.service.stats.issued == sum(r.repeated for r in records if r.decision == "issued")
    denied = [r for r in records if r.decision == "denied"]
    assert denied, row.name
    assert names(denied[-1].reason or "", row.reason), denied[-1].reason
    dumped = denied[-1].model_dump_json()
    assert SECRET_B not in dumped
    assert ADMIN_TOKEN not in dumped
    assert_no_token(dumped)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_hostile_input_is_refused(row: Row) -> None:
    async with open_world(admin=ADMIN) as w:
        issued_before = w.service.stats.issued
        reply = await row.send(w)
        _check(row, reply)
        if urlsplit(str(reply.request.url)).path == "/token":
            await _check_audit(row, w)
        else:
            assert w.service.stats.issued == issued_before
        assert (await w.client.get("/jwks.json")).status_code == 200  # still serving


async def test_the_whole_campaign_against_one_service() -> None:
    """Every row against one service, each from its own address (as a distributed attacker
    would): nothing accepted, nothing 5xx, the service still answers a real exchange."""
    async with open_world(admin=ADMIN) as w:
        statuses: list[int] = []
        for number, row in enumerate(ROWS):
            transport = httpx.ASGITransport(app=w.service.app, client=(f"10.1.{number}.1", 9))
            async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
                attacker = World(service=w.service, client=client, clock=w.clock, keys=w.keys)
                reply = await row.send(attacker)
            statuses.append(reply.status_code)
            assert reply.status_code < 500, row.name
            assert reply.status_code == row.status or reply.status_code == 429, row.name
            w.clock.advance(60)  # let the per-account buckets refill between rows
        assert not any(s == 200 for s in statuses)
        good = await w.exchange("a", user_token()(w), B)
        assert good.status_code == 200, good.text
