"""JWS signing and verification with cached ``cryptography`` keys: the same tokens and
the same refusals as joserfc's own ``jwt.encode`` / ``jws.validate_compact``."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any

import pytest
from jose_support import OneKey
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from keycard_agents import ConfigurationError, InvalidTokenError
from keycard_agents._jose._keys import jws_registry
from keycard_agents.auth import ALGORITHMS, KeyStore, SigningKey, StaticKeys, verify_jwt

ISS = "https://issuer.test"
AUD = "https://calendar.test"
NOW = 1_700_000_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def claims(**extra: Any) -> dict[str, Any]:
    return {
        "iss": ISS,
        "sub": "alice",
        "aud": AUD,
        "exp": NOW + 300,
        "iat": NOW,
        "jti": "j",
        **extra,
    }


async def check_of(token: str, keys: Any, **options: Any) -> str:
    options.setdefault("token_types", ["at+jwt"])
    with pytest.raises(InvalidTokenError) as info:
        await verify_jwt(
            token, keys=keys, issuers=[ISS], audience=AUD, clock=lambda: NOW, **options
        )
    return info.value.check


@pytest.fixture(scope="module")
def signing_keys() -> dict[str, SigningKey]:
    return {alg: SigningKey.generate(alg, clock=lambda: NOW) for alg in ALGORITHMS}


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_sign_matches_joserfc_byte_for_byte(alg: str, signing_keys: dict[str, SigningKey]) -> None:
    key = signing_keys[alg]
    body = claims(name="Zoë ✓", exp=datetime.fromtimestamp(NOW + 60, tz=timezone.utc))
    ours = key.sign(body, typ="at+jwt").split(".")
    reference = jwt.encode(
        {"alg": alg, "kid": key.kid, "typ": "at+jwt"},
        dict(body),
        key.key,
        registry=jws_registry((alg,)),
    ).split(".")
    assert ours[:2] == reference[:2]
    if alg != "ES256":  # EdDSA and RSASSA-PKCS1-v1_5 signatures are deterministic
        assert ours[2] == reference[2]
    decoded = jwt.decode(".".join(ours), key.key, registry=jws_registry((alg,)))
    assert decoded.claims["exp"] == NOW + 60
    assert decoded.header == {"typ": "at+jwt", "alg": alg, "kid": key.kid}
    assert body["exp"] != NOW + 60  # the caller's claims are not changed


def test_sign_with_two_types_and_a_refused_type(signing_keys: dict[str, SigningKey]) -> None:
    key = signing_keys["ES256"]
    first = jwt.decode(key.sign(claims(), typ="at+jwt"), key.key, registry=jws_registry(("ES256",)))
    other = key.sign(claims(), typ="client-authentication+jwt")
    second = jwt.decode(other, key.key, registry=jws_registry(("ES256",)))
    assert (first.header["typ"], second.header["typ"]) == ("at+jwt", "client-authentication+jwt")
    with pytest.raises(JoseError):
        key.sign(claims(), typ=5)  # type: ignore[arg-type]


def test_a_key_joserfc_refuses_for_signing_is_still_refused() -> None:
    data = {**ECKey.generate_key("P-256").as_dict(private=True), "key_ops": ["verify"]}
    key = SigningKey.from_jwk(data, alg="ES256")
    for _ in range(2):  # the refusal is not remembered as a usable signer
        with pytest.raises(JoseError):
            key.sign(claims(), typ="at+jwt")


@pytest.mark.anyio
@pytest.mark.parametrize("alg", ALGORITHMS)
async def test_a_good_signature_is_no_pass_for_a_tampered_token(
    alg: str, signing_keys: dict[str, SigningKey]
) -> None:
    key = signing_keys[alg]
    keys = StaticKeys({ISS: {"keys": [key.public_jwk()]}})
    good = key.sign(claims(), typ="at+jwt")
    header, _, signature = good.split(".")
    tampered = f"{header}.{b64json(claims(sub='mallory'))}.{signature}"
    for _ in range(2):  # a prepared (cached) key checks every signature again
        verified = await verify_jwt(
            good, keys=keys, issuers=[ISS], audience=AUD, token_types=["at+jwt"], clock=lambda: NOW
        )
        assert verified["sub"] == "alice"
        assert await check_of(tampered, keys) == "signature"


@pytest.mark.anyio
async def test_signature_segment_that_is_not_base64url_fails_the_signature(
    signing_keys: dict[str, SigningKey],
) -> None:
    key = signing_keys["ES256"]
    keys = StaticKeys({ISS: {"keys": [key.public_jwk()]}})
    header, payload, signature = key.sign(claims(), typ="at+jwt").split(".")
    assert await check_of(f"{header}.{payload}.AAAAA", keys) == "signature"
    assert await check_of(f"{header}.{payload}.{signature[:-2]}", keys) == "signature"
    assert await check_of(f"{header}.{payload}.{signature}AAAA", keys) == "signature"


@pytest.mark.anyio
async def test_oversized_segments_are_malformed(signing_keys: dict[str, SigningKey]) -> None:
    key = signing_keys["ES256"]
    keys = StaticKeys({ISS: {"keys": [key.public_jwk()]}})
    header = {"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}
    big_header = b64json({**header, "x": "a" * 1600})
    assert len(big_header) > 2048
    assert await check_of(f"{big_header}.{b64json(claims())}.AAAA", keys) == "malformed"
    big_payload = b64json(claims(x="a" * 96_000))
    assert len(big_payload) > 128_000
    assert await check_of(f"{b64json(header)}.{big_payload}.AAAA", keys, max_bytes=200_000) == (
        "malformed"
    )
    signing_input = f"{b64json(header)}.{b64json(claims())}"
    assert await check_of(f"{signing_input}.{'A' * 1025}", keys) == "malformed"
    assert await check_of(f"{b64json(header)}.{'A' * 5}.AAAA", keys) == "malformed"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "member", [{"use": "enc"}, {"key_ops": ["sign"]}, {"alg": "ES384"}], ids=str
)
async def test_keys_joserfc_would_not_verify_with_are_refused(
    member: dict[str, Any], signing_keys: dict[str, SigningKey]
) -> None:
    signer = signing_keys["ES256"]
    public = ECKey.import_key({**signer.public_jwk(), **member})
    token = signer.sign(claims(), typ="at+jwt")
    for _ in range(2):
        assert await check_of(token, OneKey(public)) in {"signature", "algorithm"}
    assert await check_of(token, OneKey(public)) == (
        "algorithm" if "alg" in member else "signature"
    )


@pytest.mark.anyio
async def test_ill_typed_registered_header_is_malformed_after_the_key_is_known(
    signing_keys: dict[str, SigningKey],
) -> None:
    signer = signing_keys["ES256"]
    header = {"alg": "ES256", "kid": signer.kid, "typ": "at+jwt", "x5c": "not a list"}
    signing_input = f"{b64json(header)}.{b64json(claims())}"
    signature = jws_registry(("ES256",)).get_alg("ES256").sign(signing_input.encode(), signer.key)
    token = f"{signing_input}.{b64(signature)}"
    keys = StaticKeys({ISS: {"keys": [signer.public_jwk()]}})
    assert await check_of(token, keys) == "malformed"


def test_key_store_verification_keys_follow_rotation() -> None:
    clock = [float(NOW)]
    store = KeyStore(None, alg="ES256", clock=lambda: clock[0], retention=100)
    first = store.verification_keys()
    assert store.verification_keys() is first
    assert first.kids() == (store.current.kid,)
    old = store.current.kid
    clock[0] += 10
    new = store.rotate().kid
    rotated = store.verification_keys()
    assert set(rotated.kids()) == {old, new}
    clock[0] += 200  # the retired key is past retention: no longer served
    assert store.verification_keys().kids() == (new,)


@pytest.mark.anyio
async def test_options_and_key_fit_are_checked_on_every_call(
    signing_keys: dict[str, SigningKey],
) -> None:
    es256, rs256 = signing_keys["ES256"], signing_keys["RS256"]
    keys = StaticKeys({ISS: {"keys": [es256.public_jwk()]}})
    token = es256.sign(claims(), typ="at+jwt")
    for _ in range(2):
        with pytest.raises(ConfigurationError):
            await check_of(token, keys, algorithms="ES256")
        assert await check_of(token, keys, algorithms=["RS256"]) == "algorithm"
        assert await check_of(token, keys, algorithms=("RS256",)) == "algorithm"
        assert await check_of(token, keys, token_types=("jwt",)) == "type"
    # an RSA key named by an ES256 header does not fit it, every time
    forged = (
        f"{b64json({'alg': 'ES256', 'kid': rs256.kid, 'typ': 'at+jwt'})}.{b64json(claims())}.AA"
    )
    for _ in range(2):
        assert await check_of(forged, OneKey(rs256.key)) == "algorithm"


def test_key_store_hands_out_one_resolver_per_issuer() -> None:
    store = KeyStore(None, alg="ES256")
    assert store.resolver(ISS) is store.resolver(ISS)
    assert store.resolver("https://other.test") is not store.resolver(ISS)


@pytest.mark.anyio
async def test_a_known_header_is_no_pass_for_a_bad_token(
    signing_keys: dict[str, SigningKey],
) -> None:
    """Headers are remembered by their exact bytes: a token with a header seen before still
    has its own payload and signature checked, and any other header bytes are parsed anew."""
    key = signing_keys["ES256"]
    keys = StaticKeys({ISS: {"keys": [key.public_jwk()]}})
    header, payload, signature = key.sign(claims(), typ="at+jwt").split(".")
    for _ in range(2):
        assert await check_of(f"{header}.{payload}.{signature[:-4]}AAAA", keys) == "signature"
        assert await check_of(f"{header}.{'A' * 128_001}.{signature}", keys, max_bytes=200_000) == (
            "malformed"
        )
        assert await check_of(f"{header}.{payload}.{'A' * 1025}", keys) == "malformed"
    crit = b64json({"alg": "ES256", "kid": key.kid, "typ": "at+jwt", "crit": ["exp"]})
    for _ in range(2):
        assert await check_of(f"{crit}.{payload}.{signature}", keys) == "malformed"
