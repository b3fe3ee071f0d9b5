"""Every refusal of ``verify_jwt``, with its check and the exact reason it gives.

The reason is what an operator reads in the logs and what a caller gets back in the
``WWW-Authenticate`` error description: it must name the failed check's particulars (the
algorithm, type, issuer, key or claim) and never the token.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import OKPKey

from keycard_agents import InvalidTokenError
from keycard_agents._jose._keys import jws_registry
from keycard_agents.auth import SigningKey, StaticKeys, TokenProfile, verify_jwt

ISS = "https://issuer.test"
AUD = "https://calendar.test"
NOW = 1_700_000_000


@pytest.fixture(scope="module")
def es256() -> SigningKey:
    return SigningKey.generate("ES256", clock=lambda: NOW)


@pytest.fixture(scope="module")
def eddsa() -> SigningKey:
    return SigningKey.generate("EdDSA", clock=lambda: NOW)


@pytest.fixture
def keys(es256: SigningKey, eddsa: SigningKey) -> StaticKeys:
    return StaticKeys({ISS: {"keys": [es256.public_jwk(), eddsa.public_jwk()]}})


def b64json(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"iss": ISS, "sub": "alice", "aud": AUD, "exp": NOW + 300, "iat": NOW, "jti": "1"}
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def unsigned(header: Any, payload: Any = None) -> str:
    """A token refused before its signature is looked at."""
    return f"{b64json(header)}.{b64json(claims() if payload is None else payload)}.c2ln"


async def reason(token: str, keys: StaticKeys, **options: Any) -> tuple[str, str]:
    options.setdefault("issuers", [ISS])
    options.setdefault("audience", AUD)
    options.setdefault("token_types", ["at+jwt"])
    with pytest.raises(InvalidTokenError) as refused:
        await verify_jwt(token, keys=keys, clock=lambda: NOW, **options)
    return refused.value.check, str(refused.value)


STRUCTURE = [
    ("", "no token: expected a compact JWS (three base64url segments)"),
    ("a.b.cé", "token contains characters outside base64url"),
    ("a.b", "token has 2 segments; a compact JWS has three (header.payload.signature)"),
    ("a.b.c.d", "token has 4 segments; a compact JWS has three (header.payload.signature)"),
    ("a.b.c!", "token contains characters outside base64url"),
    (".b.c", "token has an empty header or payload segment"),
    (f"{b64json({'alg': 'ES256'})}..c", "token has an empty header or payload segment"),
    (unsigned([1]), "token header is not a JSON object with a string 'alg'"),
    (unsigned({"alg": 1}), "token header is not a JSON object with a string 'alg'"),
    (unsigned({"typ": "at+jwt"}), "token header is not a JSON object with a string 'alg'"),
    (
        unsigned({"alg": "ES256", "pad": "x" * 1600}),
        "token has a header segment too large",
    ),
    (
        unsigned({"alg": "ES256", "crit": ["exp"]}),
        "token header uses JWS extensions (crit/b64) we do not accept",
    ),
    (
        unsigned({"alg": "ES256", "b64": False}),
        "token header uses JWS extensions (crit/b64) we do not accept",
    ),
    (unsigned({"alg": "ES256", "kid": 5}), "token header 'kid' is not a string"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("token", "text"), STRUCTURE)
async def test_structure_refusals(token: str, text: str, keys: StaticKeys) -> None:
    assert await reason(token, keys) == ("malformed", text)


@pytest.mark.anyio
async def test_size_refusal_names_both_sizes(keys: StaticKeys) -> None:
    assert await reason("a" * 8193, keys) == (
        "size",
        "token is 8193 bytes, over the limit of 8192 bytes",
    )
    assert await reason("a.b.c" + "d" * 96, keys, max_bytes=100) == (
        "size",
        "token is 101 bytes, over the limit of 100 bytes",
    )


@pytest.mark.anyio
async def test_segment_limits_hold_under_a_larger_token_limit(keys: StaticKeys) -> None:
    header = b64json({"alg": "ES256"})
    big_payload = f"{header}.{'A' * 128_001}.c2ln"
    big_signature = f"{header}.{b64json(claims())}.{'A' * 1025}"
    for token in (big_payload, big_signature):
        assert await reason(token, keys, max_bytes=200_000) == (
            "malformed",
            "token has a payload or signature segment too large",
        )


@pytest.mark.anyio
async def test_algorithm_and_type_refusals(es256: SigningKey, keys: StaticKeys) -> None:
    assert await reason(unsigned({"alg": "HS256", "typ": "at+jwt"}), keys) == (
        "algorithm",
        "token algorithm 'HS256' is not allowed; accepted: ES256, Ed25519, EdDSA, RS256",
    )
    assert await reason(unsigned({"alg": "EdDSA"}), keys, algorithms=["ES256"]) == (
        "algorithm",
        "token algorithm 'EdDSA' is not allowed; accepted: ES256",
    )
    assert await reason(unsigned({"alg": "ES256", "typ": "JWT"}), keys) == (
        "type",
        "token has type 'JWT'; expected 'at+jwt'",
    )
    assert await reason(
        unsigned({"alg": "ES256"}), keys, token_types=["client-authentication+jwt", "at+jwt"]
    ) == ("type", "token has no 'typ' header; expected 'at+jwt' or 'client-authentication+jwt'")
    assert await reason(unsigned({"alg": "ES256", "typ": 7}), keys) == (
        "type",
        "token has type 7; expected 'at+jwt'",
    )


@pytest.mark.anyio
async def test_issuer_refusals(es256: SigningKey, keys: StaticKeys) -> None:
    header = {"alg": "ES256", "typ": "at+jwt", "kid": es256.kid}
    assert await reason(unsigned(header, [1]), keys) == (
        "malformed",
        "token payload is not a JSON object",
    )
    assert await reason(unsigned(header, claims(iss=None)), keys) == (
        "claims",
        "token has no string 'iss' claim",
    )
    evil = unsigned(header, claims(iss="https://evil.test"))
    assert await reason(evil, keys, issuers=[ISS, "https://b.test"]) == (
        "issuer",
        "token issuer 'https://evil.test' is not trusted here; trusted: "
        "'https://issuer.test', 'https://b.test'",
    )
    assert await reason(evil, keys, issuers=[]) == (
        "issuer",
        "token issuer 'https://evil.test' is not trusted here; trusted: none",
    )


@pytest.mark.anyio
async def test_profile_type_refusals(es256: SigningKey) -> None:
    other = "https://keycloak.test"
    keys = StaticKeys({ISS: {"keys": [es256.public_jwk()]}, other: {"keys": [es256.public_jwk()]}})
    profiles = {other: TokenProfile(token_types=("JWT",), require_jti=False)}
    options: dict[str, Any] = {"issuers": [ISS, other], "profiles": profiles}
    # A type only the other issuer uses is refused for ours...
    ours = unsigned({"alg": "ES256", "typ": "JWT", "kid": es256.kid})
    assert await reason(ours, keys, **options) == (
        "type",
        "token has type 'JWT'; issuer 'https://issuer.test' issues 'at+jwt'",
    )
    # ...and ours for the other.
    theirs = unsigned({"alg": "ES256", "typ": "at+jwt", "kid": es256.kid}, claims(iss=other))
    assert await reason(theirs, keys, **options) == (
        "type",
        "token has type 'at+jwt'; issuer 'https://keycloak.test' issues 'jwt'",
    )
    # Its own type, without jti, verifies.
    token = es256.sign(claims(iss=other, jti=None), typ="JWT")
    verified = await verify_jwt(
        token, keys=keys, audience=AUD, token_types=["at+jwt"], clock=lambda: NOW, **options
    )
    assert "jti" not in verified


@pytest.mark.anyio
async def test_key_and_signature_refusals(
    es256: SigningKey, eddsa: SigningKey, keys: StaticKeys
) -> None:
    wrong_key = unsigned({"alg": "ES256", "typ": "at+jwt", "kid": eddsa.kid})
    assert await reason(wrong_key, keys) == (
        "algorithm",
        f"token algorithm ES256 does not fit its key {eddsa.kid!r} (OKP, alg EdDSA)",
    )
    no_alg = {k: v for k, v in eddsa.public_jwk().items() if k != "alg"}
    bare = StaticKeys({ISS: {"keys": [no_alg]}})
    assert await reason(wrong_key, bare) == (
        "algorithm",
        f"token algorithm ES256 does not fit its key {eddsa.kid!r} (OKP)",
    )
    header, payload, _ = es256.sign(claims(), typ="at+jwt").split(".")
    forged = f"{header}.{payload}.{'A' * 86}"
    assert await reason(forged, keys) == (
        "signature",
        f"token signature does not verify with key {es256.kid!r} of issuer 'https://issuer.test'",
    )


CLAIMS = [
    ({"exp": None, "jti": None}, "token lacks required claim(s): exp, jti"),
    (
        {"exp": "soon"},
        "token claim 'exp' must be a NumericDate: a finite number of seconds since the "
        "epoch, at most 253402300799 (RFC 7519 §2)",
    ),
    (
        {"nbf": True},
        "token claim 'nbf' must be a NumericDate: a finite number of seconds since the "
        "epoch, at most 253402300799 (RFC 7519 §2)",
    ),
    ({"scope": ["a"]}, "token claim 'scope' must be a string"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("overrides", "text"), CLAIMS)
async def test_claim_refusals(
    overrides: dict[str, Any], text: str, es256: SigningKey, keys: StaticKeys
) -> None:
    assert await reason(es256.sign(claims(**overrides), typ="at+jwt"), keys) == ("claims", text)


@pytest.mark.anyio
async def test_audience_refusals_show_what_the_token_names(
    es256: SigningKey, keys: StaticKeys
) -> None:
    other = es256.sign(claims(aud=["https://a.test", "https://b.test"]), typ="at+jwt")
    assert await reason(other, keys) == (
        "audience",
        "token audience ['https://a.test', 'https://b.test'] is not this resource "
        "'https://calendar.test'",
    )
    slash = es256.sign(claims(aud=AUD + "/"), typ="at+jwt")
    assert await reason(slash, keys) == (
        "audience",
        "token audience 'https://calendar.test/' is not this resource 'https://calendar.test' "
        "(they differ only by a trailing '/': register the resource at the issuer exactly as "
        "the agent's url, or set the url to the registered form)",
    )
    none = es256.sign(claims(aud=None), typ="at+jwt")
    assert await reason(none, keys, required_claims=("iss", "sub")) == (
        "audience",
        "token audience '' is not this resource 'https://calendar.test'",
    )


@pytest.mark.anyio
async def test_time_and_depth_refusals(es256: SigningKey, keys: StaticKeys) -> None:
    future = es256.sign(claims(iat=NOW + 600), typ="at+jwt")
    assert await reason(future, keys) == (
        "issued_in_future",
        "token was issued in the future (2023-11-14T22:23:20Z, 600 s from now, leeway 60 s); "
        "check the clocks of issuer and receiver",
    )
    expired = es256.sign(claims(exp=NOW - 100), typ="at+jwt")
    assert await reason(expired, keys, leeway=2.5) == (
        "expired",
        "token expired at 2023-11-14T22:11:40Z (100 s ago, leeway 2.5 s); get a new token",
    )
    early = es256.sign(claims(nbf=NOW + 90), typ="at+jwt")
    assert await reason(early, keys, leeway=30) == (
        "not_yet_valid",
        "token is not valid before 2023-11-14T22:14:50Z (90 s from now, leeway 30 s); "
        "check the clocks of issuer and receiver",
    )
    act: dict[str, Any] = {"sub": "a3", "act": {"sub": "a2", "act": {"sub": "a1"}}}
    deep = es256.sign(claims(act=act), typ="at+jwt")
    assert await reason(deep, keys, max_actor_depth=2) == (
        "depth",
        "token delegation chain is deeper than the limit of 2 actors",
    )


@pytest.mark.anyio
async def test_header_decoding_refusals_name_the_header(keys: StaticKeys) -> None:
    assert await reason("A.eyJ9.c2ln", keys) == ("malformed", "token header is not base64url")
    not_json = base64.urlsafe_b64encode(b"{bad").rstrip(b"=").decode()
    check, text = await reason(f"{not_json}.eyJ9.c2ln", keys)
    assert check == "malformed"
    assert text.startswith("token header is not acceptable JSON: ")


@pytest.mark.anyio
async def test_a_header_segment_of_exactly_2048_characters_is_read(keys: StaticKeys) -> None:
    def token_with_header_of(size: int) -> str:
        base = {"alg": "ES256", "typ": "JWT", "pad": ""}
        pad = (size * 3 // 4) - len(json.dumps(base, separators=(",", ":")))
        head = b64json({**base, "pad": "x" * pad})
        assert len(head) == size
        return f"{head}.{b64json(claims())}.c2ln"

    assert await reason(token_with_header_of(2048), keys) == (
        "type",
        "token has type 'JWT'; expected 'at+jwt'",
    )
    assert await reason(token_with_header_of(2052), keys) == (
        "malformed",
        "token has a header segment too large",
    )


@pytest.mark.anyio
@pytest.mark.parametrize(("key_alg", "header_alg"), [("EdDSA", "Ed25519"), ("Ed25519", "EdDSA")])
async def test_either_eddsa_name_verifies_with_a_key_of_the_other(
    key_alg: str, header_alg: str, eddsa: SigningKey
) -> None:
    public = {**eddsa.public_jwk(), "alg": key_alg}
    keys = StaticKeys({ISS: {"keys": [public]}})
    signer = {k: v for k, v in eddsa.key.as_dict(private=True).items() if k != "alg"}
    header = {"alg": header_alg, "kid": eddsa.kid, "typ": "at+jwt"}
    token = jwt.encode(
        header, claims(), OKPKey.import_key(signer), registry=jws_registry((header_alg,))
    )
    verified = await verify_jwt(
        token, keys=keys, issuers=[ISS], audience=AUD, token_types=["at+jwt"], clock=lambda: NOW
    )
    assert verified == claims()


@pytest.mark.anyio
async def test_the_trailing_slash_hint_only_for_a_trailing_slash(
    es256: SigningKey, keys: StaticKeys
) -> None:
    hint = (
        " (they differ only by a trailing '/': register the resource at the issuer exactly as "
        "the agent's url, or set the url to the registered form)"
    )
    bare = es256.sign(claims(aud="https://box.test"), typ="at+jwt")
    assert await reason(bare, keys, audience="https://box.test/") == (
        "audience",
        "token audience 'https://box.test' is not this resource 'https://box.test/'" + hint,
    )
    other_letter = es256.sign(claims(aud="https://box.test/"), typ="at+jwt")
    assert await reason(other_letter, keys, audience="https://box.test/X") == (
        "audience",
        "token audience 'https://box.test/' is not this resource 'https://box.test/X'",
    )
    longer = es256.sign(claims(aud="https://box.testX"), typ="at+jwt")
    assert await reason(longer, keys, audience="https://box.test") == (
        "audience",
        "token audience 'https://box.testX' is not this resource 'https://box.test'",
    )


@pytest.mark.anyio
async def test_the_leeway_bounds_are_inclusive(es256: SigningKey, keys: StaticKeys) -> None:
    async def accepted(**overrides: Any) -> bool:
        token = es256.sign(claims(**overrides), typ="at+jwt")
        try:
            await verify_jwt(
                token,
                keys=keys,
                issuers=[ISS],
                audience=AUD,
                token_types=["at+jwt"],
                clock=lambda: NOW,
                leeway=60,
            )
        except InvalidTokenError:
            return False
        return True

    assert await accepted(exp=NOW - 60)
    assert not await accepted(exp=NOW - 61)
    assert await accepted(nbf=NOW + 60)
    assert not await accepted(nbf=NOW + 61)
    assert await accepted(iat=NOW + 60)
    assert not await accepted(iat=NOW + 61)


@pytest.mark.anyio
async def test_size_limits_are_inclusive(keys: StaticKeys) -> None:
    header = b64json({"alg": "ES256"})
    at_limit = f"{header}.{'A' * 128_000}.c2ln"
    check, _ = await reason(at_limit, keys, max_bytes=200_000)
    assert check == "type"  # read past the size checks
    exactly = "a.b.c" + "d" * 95
    assert len(exactly) == 100
    check, _ = await reason(exactly, keys, max_bytes=100)
    assert check == "malformed"


@pytest.mark.anyio
async def test_a_signature_segment_of_exactly_1024_characters_is_read(keys: StaticKeys) -> None:
    header = b64json({"alg": "ES256"})
    check, _ = await reason(f"{header}.{b64json(claims())}.{'A' * 1024}", keys)
    assert check == "type"  # read past the size checks
