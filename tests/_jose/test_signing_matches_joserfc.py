"""``SigningKey.sign`` produces what ``joserfc.jwt.encode`` produces, byte for byte.

The signer builds the compact JWS itself (a cached header segment, the claims' JSON and
the ``cryptography`` signature); tokens must stay exactly what joserfc would issue, so
every verifier that accepted them before still does.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.errors import InvalidHeaderValueError

from keycard_agents._jose._keys import jws_registry
from keycard_agents.auth import SigningKey

NOW = 1_700_000_000
CLAIMS: list[dict[str, Any]] = [
    {"iss": "https://sts.test", "sub": "alice", "exp": NOW + 60, "scope": "a b"},
    {"sub": "zoë", "note": "naïve ✓", "n": [1, 2.5, None, True], "act": {"sub": "b"}},
    {"exp": datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "iat": NOW, "nbf": NOW},
    {
        "iat": datetime(2029, 12, 31, 23, 0, tzinfo=timezone.utc),
        "nbf": datetime(2029, 12, 31, 23, 1, tzinfo=timezone.utc),
    },
    {},
]


def reference(key: SigningKey, claims: dict[str, Any], typ: str) -> str:
    header = {"alg": key.alg, "kid": key.kid, "typ": typ}
    return jwt.encode(header, dict(claims), key.key, registry=jws_registry((key.alg,)))


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
def test_deterministic_signatures_equal_joserfcs(alg: str) -> None:
    key = SigningKey.generate(alg, clock=lambda: NOW)
    for typ in ("at+jwt", "client-authentication+jwt", "JWT", "jwt-\u00e4"):
        for claims in CLAIMS:
            assert key.sign(claims, typ=typ) == reference(key, claims, typ)


def test_es256_tokens_equal_joserfcs_but_for_the_random_signature() -> None:
    key = SigningKey.generate("ES256", clock=lambda: NOW)
    for typ in ("at+jwt", "JWT"):
        for claims in CLAIMS:
            token = key.sign(claims, typ=typ)
            head, body, signature = token.split(".")
            ref_head, ref_body, _ = reference(key, claims, typ).split(".")
            assert (head, body) == (ref_head, ref_body)
            raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
            assert len(raw) == 64  # R || S, 32 bytes each (RFC 7518 §3.4)
            jws.deserialize_compact(token, key.key, registry=jws_registry(("ES256",)))


def test_many_token_types_each_get_their_own_header() -> None:
    key = SigningKey.generate("EdDSA", clock=lambda: NOW)
    claims = CLAIMS[0]
    for index in range(20):
        typ = f"t{index}+jwt"
        assert key.sign(claims, typ=typ) == reference(key, claims, typ)
    # The first ones again, after the header cache is full.
    for index in range(3):
        typ = f"t{index}+jwt"
        assert key.sign(claims, typ=typ) == reference(key, claims, typ)


def test_segments_ending_in_x_are_kept_whole() -> None:
    # base64url has no padding to strip from an RS256 signature (384 bytes): its last
    # character may be any of the 64, "X" among them.
    key = SigningKey.generate("RS256", clock=lambda: NOW)
    for n in range(3000):
        token = key.sign({"n": n}, typ="at+jwt")
        if token.endswith("X"):
            break
    else:
        pytest.fail("no signature ended in X")
    assert token == reference(key, {"n": n}, "at+jwt")
    assert len(token.split(".")[2]) == 512


@pytest.mark.parametrize("typ", [["at+jwt"], 5, None])
def test_a_token_type_that_is_not_a_string_is_refused_as_joserfc_refuses_it(typ: Any) -> None:
    key = SigningKey.generate("EdDSA", clock=lambda: NOW)
    with pytest.raises(InvalidHeaderValueError, match="'typ' in header must be a str"):
        key.sign({"sub": "a"}, typ=typ)
