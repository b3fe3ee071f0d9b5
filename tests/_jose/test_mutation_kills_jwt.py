"""Token verification details: times in messages are UTC, token profiles refuse bad
configurations with a reason."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwt
from joserfc.jwk import ECKey

from keycard_agents import InvalidTokenError
from keycard_agents._jose._keys import jws_registry
from keycard_agents.auth import SigningKey, StaticKeys, TokenProfile, verify_jwt

ISS = "https://issuer.test"
AUD = "https://calendar.test"
NOW = 1_700_000_000  # 2023-11-14T22:13:20Z


@pytest.fixture(scope="module")
def es256() -> SigningKey:
    return SigningKey.generate("ES256", clock=lambda: NOW)


@pytest.fixture
def keys(es256: SigningKey) -> StaticKeys:
    return StaticKeys({ISS: {"keys": [es256.public_jwk()]}})


@pytest.fixture
def local_time_far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process runs in a time zone five hours behind UTC."""
    monkeypatch.setenv("TZ", "EST5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"iss": ISS, "sub": "alice", "aud": AUD, "exp": NOW + 300, "iat": NOW, "jti": "1"}
    return {**base, **overrides}


async def refusal(token: str, keys: StaticKeys, now: float) -> InvalidTokenError:
    with pytest.raises(InvalidTokenError) as refused:
        await verify_jwt(
            token, keys=keys, issuers=[ISS], audience=AUD, token_types=["at+jwt"], clock=lambda: now
        )
    return refused.value


@pytest.mark.anyio
@pytest.mark.usefixtures("local_time_far_from_utc")
async def test_times_in_refusals_are_utc_whatever_the_local_zone(
    es256: SigningKey, keys: StaticKeys
) -> None:
    expired = await refusal(es256.sign(claims(exp=NOW), typ="at+jwt"), keys, NOW + 120)
    assert expired.check == "expired"
    assert str(expired).startswith("token expired at 2023-11-14T22:13:20Z (120 s ago")
    early = es256.sign(claims(nbf=NOW + 600), typ="at+jwt")
    not_yet = await refusal(early, keys, NOW)
    assert not_yet.check == "not_yet_valid"
    assert str(not_yet).startswith("token is not valid before 2023-11-14T22:23:20Z (600 s")


def test_profiles_refuse_bad_configurations_with_the_reason() -> None:
    for types in ((), "at+jwt"):
        with pytest.raises(ValueError) as refused:  # noqa: PT011 (the message is asserted)
            TokenProfile(token_types=types)  # type: ignore[arg-type]
        assert str(refused.value) == (
            "token_types must be a non-empty sequence of typ values (or None)"
        )
    with pytest.raises(ValueError) as refused:  # noqa: PT011 (the message is asserted)
        TokenProfile(client_claim="")
    assert str(refused.value) == "client_claim must name a claim"
    assert TokenProfile(token_types=(None,)).accepts_typ(None)
    assert not TokenProfile(token_types=(None,)).accepts_typ("at+jwt")


# Each claims refusal, with the exact reason an operator reads.
CLAIM_REFUSALS = [
    (
        {"act": {"sub": "a", "act": {"sub": "b", "client_id": 7}}},
        "token 'act' level 2 has a non-string 'client_id'",
    ),
    ({"act": {"sub": "a", "iss": ["x"]}}, "token 'act' level 1 has a non-string 'iss'"),
    (
        {"act": {"sub": "a", "act": {"client_id": "b"}}},
        "token 'act' claim level 2 is not an object with a string 'sub'",
    ),
    ({"sub_id": "alice"}, "token claim 'sub_id' must be an object with a string 'format'"),
    ({"sub_id": {"format": 1}}, "token claim 'sub_id' must be an object with a string 'format'"),
    (
        {"sub_id": {"format": "iss_sub", "iss": "", "sub": "alice"}},
        "token claim 'sub_id' of format iss_sub needs string 'iss' and 'sub'",
    ),
    (
        {"sub_id": {"format": "iss_sub", "iss": ISS}},
        "token claim 'sub_id' of format iss_sub needs string 'iss' and 'sub'",
    ),
    (
        {"sub_id": {"format": "iss_sub", "iss": ISS, "sub": "bob"}},
        "token claim 'sub_id' names another subject than 'sub': the two must identify the "
        "same user (RFC 9493 §4)",
    ),
    ({"sub": ""}, "token claim 'sub' is empty"),
    ({"azp": 5}, "token claim 'azp' must be a string"),
    ({"aud": [AUD, 5]}, "token claim 'aud' must be a string or a list of strings"),
    ({"jti": None}, "token claim 'jti' must be a string"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("overrides", "reason"), CLAIM_REFUSALS)
async def test_each_claims_refusal_gives_its_reason(
    overrides: dict[str, Any], reason: str, es256: SigningKey, keys: StaticKeys
) -> None:
    refused = await refusal(es256.sign(claims(**overrides), typ="at+jwt"), keys, NOW)
    assert (refused.check, str(refused)) == ("claims", reason)


@pytest.mark.anyio
async def test_a_subject_identifier_of_another_format_is_not_checked(
    es256: SigningKey, keys: StaticKeys
) -> None:
    sub_id = {"format": "opaque", "id": "x"}
    token = es256.sign(claims(sub_id=sub_id), typ="at+jwt")
    verified = await verify_jwt(
        token, keys=keys, issuers=[ISS], audience=AUD, token_types=["at+jwt"], clock=lambda: NOW
    )
    assert verified["sub_id"] == sub_id


def raw_es_token(key: ECKey, alg: str, kid: str) -> str:
    header = {"alg": alg, "kid": kid, "typ": "at+jwt"}
    return jwt.encode(header, claims(), key, registry=jws_registry((alg,)))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("alg", "curve"), [("ES256", "P-256"), ("ES384", "P-384"), ("ES512", "P-521")]
)
async def test_ecdsa_signatures_of_each_curve_verify_and_refuse_any_change(
    alg: str, curve: str
) -> None:
    private = ECKey.generate_key(curve, parameters={"kid": f"k-{alg}"})
    public = {**private.as_dict(private=False), "alg": alg, "use": "sig"}
    keys = StaticKeys({ISS: {"keys": [public]}}, algorithms=[alg])
    token = raw_es_token(private, alg, f"k-{alg}")

    async def check(candidate: str) -> dict[str, Any]:
        return await verify_jwt(
            candidate,
            keys=keys,
            issuers=[ISS],
            audience=AUD,
            token_types=["at+jwt"],
            algorithms=[alg],
            clock=lambda: NOW,
        )

    assert await check(token) == claims()
    head, body, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    size = len(raw) // 2
    assert size == {"P-256": 32, "P-384": 48, "P-521": 66}[curve]

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    r, s = raw[:size], raw[size:]
    r_int, s_int = int.from_bytes(r, "big"), int.from_bytes(s, "big")
    der = encode_dss_signature(r_int, s_int)
    for forged in (s + r, raw + b"\x00", raw[:-1], b"\x00" + raw[:-1], der, bytes(len(raw))):
        with pytest.raises(InvalidTokenError) as refused:
            await check(f"{head}.{body}.{b64(forged)}")
        assert refused.value.check == "signature"
    tampered = json.dumps(claims(sub="mallory")).encode()
    other = f"{head}.{b64(tampered)}.{signature}"
    with pytest.raises(InvalidTokenError) as refused:
        await check(other)
    assert refused.value.check == "signature"


@pytest.mark.anyio
async def test_one_key_fits_one_algorithm_whatever_was_asked_before(
    es256: SigningKey, keys: StaticKeys
) -> None:
    # The same key object first meets a header it does not fit, then one it does, and
    # the other way round: each answer is for its own algorithm.
    rs256_header = {"alg": "RS256", "kid": es256.kid, "typ": "at+jwt"}
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
    head = base64.urlsafe_b64encode(json.dumps(rs256_header).encode()).rstrip(b"=").decode()
    mismatched = f"{head}.{body}.c2ln"
    for _ in range(2):
        refused = await refusal(mismatched, keys, NOW)
        assert refused.check == "algorithm"
        verified = await verify_jwt(
            es256.sign(claims(), typ="at+jwt"),
            keys=keys,
            issuers=[ISS],
            audience=AUD,
            token_types=["at+jwt"],
            clock=lambda: NOW,
        )
        assert verified == claims()
