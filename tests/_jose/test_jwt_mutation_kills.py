"""Token verification details the broader tests leave open (found by the mutation run).

NumericDates at both ends of their range and with fractions, the reasons given for a
payload that is not base64url or not JSON, for an invalid registered header and for a
key a custom resolver hands out for the wrong use, the ``typ`` refusals when an issuer's
profile accepts tokens without ``typ``, the issuer named in unknown-key refusals, and the
bounds of the caches keyed by what a token carries.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import pytest
from jose_support import OneKey
from joserfc import jws
from joserfc.jwk import ECKey

from keycard_agents import InvalidTokenError
from keycard_agents._jose import _jwt
from keycard_agents._jose._jwt import MAX_NUMERIC_DATE, is_numeric_date
from keycard_agents._jose._keys import jws_registry
from keycard_agents._json import JsonLimitError, loads_bounded
from keycard_agents.auth import KeyStore, SigningKey, StaticKeys, TokenProfile, verify_jwt

ISS = "https://issuer.test"
OTHER = "https://other-issuer.test"
AUD = "https://calendar.test"
NOW = 1_700_000_000  # 2023-11-14T22:13:20Z


@pytest.fixture(scope="module")
def es256() -> SigningKey:
    return SigningKey.generate("ES256", clock=lambda: NOW)


@pytest.fixture
def keys(es256: SigningKey) -> StaticKeys:
    return StaticKeys({ISS: {"keys": [es256.public_jwk()]}})


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"iss": ISS, "sub": "alice", "aud": AUD, "exp": NOW + 300, "iat": NOW, "jti": "1"}
    return {**base, **overrides}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: bytes) -> str:
    """A token with ``header`` and raw ``payload``, its signature bytes of no key."""
    return f"{b64(json.dumps(header).encode())}.{b64(payload)}.{b64(bytes(64))}"


async def verify(token: str, keys: Any, **options: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "keys": keys,
        "issuers": [ISS],
        "audience": AUD,
        "token_types": ["at+jwt"],
        "clock": lambda: NOW,
    }
    return await verify_jwt(token, **{**arguments, **options})


async def refusal(token: str, keys: Any, **options: Any) -> InvalidTokenError:
    with pytest.raises(InvalidTokenError) as refused:
        await verify(token, keys, **options)
    return refused.value


# -- NumericDate (RFC 7519 §2) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "numeric"),
    [
        (0, True),
        (0.0, True),
        (0.5, True),
        (NOW, True),
        (NOW + 0.25, True),
        (MAX_NUMERIC_DATE, True),
        (float(MAX_NUMERIC_DATE), True),
        (-1, False),
        (-0.5, False),
        (MAX_NUMERIC_DATE + 1, False),
        (MAX_NUMERIC_DATE + 0.5, False),
        (math.nan, False),
        (math.inf, False),
        (-math.inf, False),
        (True, False),
        ("1700000000", False),
        (None, False),
    ],
)
def test_a_numeric_date_is_a_finite_number_from_the_epoch_to_year_9999(
    value: object, numeric: bool
) -> None:
    assert is_numeric_date(value) is numeric


@pytest.mark.anyio
async def test_numeric_dates_at_both_ends_of_the_range_are_accepted(
    es256: SigningKey, keys: StaticKeys
) -> None:
    # The epoch itself (iat, nbf) and the last second of year 9999 (exp) are NumericDates.
    edge = claims(iat=0, nbf=0, exp=MAX_NUMERIC_DATE)
    assert await verify(es256.sign(edge, typ="at+jwt"), keys) == edge
    beyond = claims(exp=MAX_NUMERIC_DATE + 1)
    refused = await refusal(es256.sign(beyond, typ="at+jwt"), keys)
    assert refused.check == "claims"
    assert str(refused).startswith("token claim 'exp' must be a NumericDate")


@pytest.mark.anyio
async def test_numeric_dates_with_fractions_of_a_second_are_accepted(
    es256: SigningKey, keys: StaticKeys
) -> None:
    fractional = claims(iat=NOW - 0.25, nbf=NOW - 0.5, exp=NOW + 300.5)
    assert await verify(es256.sign(fractional, typ="at+jwt"), keys) == fractional


# -- the reasons of structural refusals ----------------------------------------------------


@pytest.mark.anyio
async def test_a_payload_that_is_not_base64url_is_refused_with_the_reason(
    es256: SigningKey, keys: StaticKeys
) -> None:
    head = b64(json.dumps({"alg": "ES256", "kid": es256.kid, "typ": "at+jwt"}).encode())
    # Five characters of the alphabet: one more than a multiple of four is no base64.
    with pytest.raises(binascii.Error) as cause:
        base64.urlsafe_b64decode(b"abcde===")
    refused = await refusal(f"{head}.abcde.{b64(bytes(64))}", keys)
    assert refused.check == "malformed"
    assert str(refused) == f"token payload is not base64url ({cause.value})"


@pytest.mark.anyio
async def test_a_payload_that_is_not_json_is_refused_with_the_reason(
    es256: SigningKey, keys: StaticKeys
) -> None:
    payload = b'{"iss": NaN}'
    with pytest.raises(JsonLimitError) as cause:
        loads_bounded(payload)
    header = {"alg": "ES256", "kid": es256.kid, "typ": "at+jwt"}
    refused = await refusal(unsigned(header, payload), keys)
    assert refused.check == "malformed"
    assert str(refused) == f"token payload is not acceptable JSON: {cause.value}"


@pytest.mark.anyio
async def test_an_ill_typed_registered_header_parameter_is_refused_with_the_reason(
    es256: SigningKey, keys: StaticKeys
) -> None:
    header = {"alg": "ES256", "kid": es256.kid, "typ": "at+jwt", "cty": 5}
    refused = await refusal(unsigned(header, json.dumps(claims()).encode()), keys)
    assert refused.check == "malformed"
    assert str(refused).startswith("token header is invalid: ")
    assert "'cty' in header must be a str" in str(refused)


@pytest.mark.anyio
async def test_a_resolved_key_for_encryption_is_refused_with_the_reason() -> None:
    private = ECKey.generate_key("P-256", parameters={"kid": "enc-1"})
    public = ECKey.import_key({**private.as_dict(private=False), "use": "enc"})
    token = jws.serialize_compact(
        {"alg": "ES256", "kid": "enc-1", "typ": "at+jwt"},
        json.dumps(claims()).encode(),
        private,
        registry=jws_registry(("ES256",)),
    )
    refused = await refusal(token, OneKey(public))
    assert refused.check == "signature"
    assert str(refused).startswith("token signature could not be checked: ")
    assert "designed to be used for 'enc'" in str(refused)


# -- typ when a profile accepts tokens without one -----------------------------------------


@pytest.fixture(scope="module")
def ec_private() -> ECKey:
    key: ECKey = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    return key


@pytest.fixture
def ec_keys(ec_private: ECKey) -> StaticKeys:
    jwks = {"keys": [{**ec_private.as_dict(private=False), "alg": "ES256", "use": "sig"}]}
    return StaticKeys({ISS: jwks, OTHER: jwks})


def signed(private: ECKey, header: dict[str, Any], body: dict[str, Any]) -> str:
    return jws.serialize_compact(
        {"alg": "ES256", "kid": "k1", **header},
        json.dumps(body).encode(),
        private,
        registry=jws_registry(("ES256",)),
    )


@pytest.mark.anyio
async def test_a_token_without_typ_is_accepted_from_an_issuer_whose_profile_allows_it(
    ec_private: ECKey, ec_keys: StaticKeys
) -> None:
    profiles = {ISS: TokenProfile(token_types=(None,))}
    token = signed(ec_private, {}, claims())
    assert await verify(token, ec_keys, profiles=profiles) == claims()


@pytest.mark.anyio
async def test_a_type_nobody_issues_is_refused_listing_no_typ_first(
    ec_private: ECKey, ec_keys: StaticKeys
) -> None:
    # "no 'typ'" comes first, even before a type that sorts before capital letters.
    profiles = {ISS: TokenProfile(token_types=(None, "0+jwt"))}
    token = signed(ec_private, {"typ": "JWT"}, claims())
    refused = await refusal(token, ec_keys, profiles=profiles)
    assert refused.check == "type"
    assert str(refused) == "token has type 'JWT'; expected no 'typ' or '0+jwt' or 'at+jwt'"


@pytest.mark.anyio
async def test_an_issuer_without_profile_is_held_to_every_configured_type(
    ec_private: ECKey, ec_keys: StaticKeys
) -> None:
    # OTHER's profile lets "JWT" past the first check; ISS has no profile of its own.
    profiles = {OTHER: TokenProfile(token_types=("JWT",))}
    token = signed(ec_private, {"typ": "JWT"}, claims())
    refused = await refusal(
        token,
        ec_keys,
        issuers=[ISS, OTHER],
        token_types=["at+jwt", "secevent+jwt"],
        profiles=profiles,
    )
    assert refused.check == "type"
    assert str(refused) == (
        f"token has type 'JWT'; issuer {ISS!r} issues 'at+jwt' or 'secevent+jwt'"
    )


# -- unknown keys name the issuer ----------------------------------------------------------


@pytest.mark.anyio
async def test_static_keys_name_the_issuer_that_lacks_the_key(
    es256: SigningKey, keys: StaticKeys
) -> None:
    stranger = es256.sign(claims(iss=OTHER), typ="at+jwt")
    refused = await refusal(stranger, keys, issuers=[ISS, OTHER])
    assert (refused.check, str(refused)) == (
        "unknown_key",
        f"issuer {OTHER!r} has no configured keys",
    )
    header = {"alg": "ES256", "kid": "gone", "typ": "at+jwt"}
    refused = await refusal(unsigned(header, json.dumps(claims()).encode()), keys)
    assert (refused.check, str(refused)) == (
        "unknown_key",
        f"token key id 'gone' is not among the keys of issuer {ISS!r} (known: {es256.kid}); "
        "the issuer may have rotated its keys, or the token was not issued by it",
    )


@pytest.mark.anyio
async def test_a_key_store_names_the_issuer_that_lacks_the_key() -> None:
    store = KeyStore(None, clock=lambda: NOW)
    kid = store.current.kid
    header = {"alg": "ES256", "kid": "gone", "typ": "at+jwt"}
    refused = await refusal(unsigned(header, json.dumps(claims()).encode()), store.resolver(ISS))
    assert (refused.check, str(refused)) == (
        "unknown_key",
        f"token key id 'gone' is not among the keys of issuer {ISS!r} (known: {kid}); "
        "the issuer may have rotated its keys, or the token was not issued by it",
    )


@pytest.mark.anyio
async def test_a_key_store_remembers_the_resolvers_of_its_first_eight_issuers() -> None:
    store = KeyStore(None, clock=lambda: NOW)
    issuers = [f"https://issuer-{n}.test" for n in range(10)]
    first = [store.resolver(issuer) for issuer in issuers]
    again = [store.resolver(issuer) for issuer in issuers]
    assert [a is b for a, b in zip(first, again, strict=True)] == [True] * 8 + [False] * 2
    for issuer, resolver in zip(issuers, again, strict=True):  # each serves its own issuer
        token = store.current.sign(claims(iss=issuer), typ="at+jwt")
        assert (await verify(token, resolver, issuers=[issuer]))["iss"] == issuer


# -- the caches keyed by what tokens and callers bring are bounded -------------------------


def test_the_header_cache_is_cleared_when_it_holds_256_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The key is the token's header segment, chosen by whoever sends the token.
    cache: dict[bytes, dict[str, Any]] = {}
    monkeypatch.setattr(_jwt, "_HEADERS", cache)
    sizes = []
    for n in range(300):
        header = {"alg": "ES256", "kid": f"k{n}", "typ": "at+jwt"}
        _, parsed = _jwt._parse(unsigned(header, b"{}"), 8192)
        assert parsed == header
        sizes.append(len(cache))
    assert max(sizes) == 256
    assert sizes[255:258] == [256, 1, 2]


def test_the_key_cache_is_cleared_when_it_holds_1024_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The key is a resolved key and the token's alg (any string before the allow-list).
    cache: dict[tuple[int, str], Any] = {}
    monkeypatch.setattr(_jwt, "_PREPARED", cache)
    key = ECKey.generate_key("P-256")
    sizes = []
    for n in range(1100):
        entry = _jwt._prepared(key, f"X{n}")
        assert entry.key is key
        assert not entry.fits
        sizes.append(len(cache))
    assert max(sizes) == 1024
    assert sizes[1023:1026] == [1024, 1, 2]
    assert _jwt._prepared(key, "ES256").fits


@pytest.mark.anyio
async def test_constant_options_are_remembered_and_give_the_same_answer(
    monkeypatch: pytest.MonkeyPatch, es256: SigningKey, keys: StaticKeys
) -> None:
    monkeypatch.setattr(_jwt, "_OPTIONS", {})
    token = es256.sign(claims(), typ="at+jwt")
    for _ in range(3):  # the first call remembers the options, the next ones reuse them
        verified = await verify(token, keys, algorithms=("ES256",), token_types=("AT+JWT",))
        assert verified == claims()
    with pytest.raises(InvalidTokenError) as refused:
        await verify(token, keys, algorithms=("ES256",), token_types=("jwt",))
    assert refused.value.check == "type"


def test_the_options_cache_keeps_64_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    cache: dict[Any, Any] = {}
    monkeypatch.setattr(_jwt, "_OPTIONS", cache)
    for n in range(70):
        allowed, types = _jwt._options(("ES256",), (f"T{n}+JWT",))
        assert (allowed, types) == (frozenset({"ES256"}), frozenset({f"t{n}+jwt"}))
    assert len(cache) == 64
