"""Key configuration: every refusal names its setting and reason, every key a JWKS loses
is logged with the reason, and a key store's defaults, modes and rotations are as
documented (details the mutation run found open)."""

from __future__ import annotations

import base64
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from keycard_agents import ConfigurationError
from keycard_agents._jose._keys import VerificationKeys, allowed_algorithms, key_fits_algorithm
from keycard_agents.auth import KeyStore, SigningKey, StaticKeys

ISS = "https://issuer.test"
NOW = 1_700_000_000
SUPPORTED = "ES256, ES384, ES512, Ed25519, EdDSA, PS256, PS384, PS512, RS256, RS384, RS512"


# -- the algorithm allow-list --------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithms", "reason"),
    [
        ("ES256", "algorithms must be a collection of names, not the string 'ES256'"),
        (
            ["ES256", "HS256", "none"],
            f"unsupported token algorithm(s) HS256, none; choose from {SUPPORTED} "
            "(HMAC and 'none' are never allowed)",
        ),
        ([], "the algorithm allow-list is empty"),
    ],
)
def test_an_unusable_allow_list_is_refused_naming_the_setting(algorithms: Any, reason: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        allowed_algorithms(algorithms)
    assert (str(refused.value), refused.value.setting) == (reason, "algorithms")


@pytest.mark.parametrize(
    ("algorithms", "allowed"),
    [
        (["ES256"], {"ES256"}),
        (["RS256", "ES256"], {"RS256", "ES256"}),
        (["EdDSA"], {"EdDSA", "Ed25519"}),
        (["Ed25519", "ES256"], {"ES256", "EdDSA", "Ed25519"}),
    ],
)
def test_eddsa_and_ed25519_imply_each_other_and_nothing_else(
    algorithms: list[str], allowed: set[str]
) -> None:
    assert allowed_algorithms(algorithms) == allowed


def test_a_key_whose_own_alg_names_another_algorithm_fits_no_other() -> None:
    ec = ECKey.generate_key("P-256").as_dict(private=False)
    okp = OKPKey.generate_key("Ed25519").as_dict(private=False)
    assert key_fits_algorithm(ECKey.import_key({**ec, "alg": "ES256"}), "ES256")
    assert not key_fits_algorithm(ECKey.import_key({**ec, "alg": "EdDSA"}), "ES256")
    assert not key_fits_algorithm(OKPKey.import_key({**okp, "alg": "ES256"}), "EdDSA")
    assert key_fits_algorithm(OKPKey.import_key({**okp, "alg": "EdDSA"}), "Ed25519")
    assert key_fits_algorithm(OKPKey.import_key({**okp, "alg": "Ed25519"}), "EdDSA")


# -- what a JWKS loses, and why ------------------------------------------------------------


def b64_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rsa_public(bits: int) -> dict[str, Any]:
    numbers = rsa.generate_private_key(65537, bits).public_key().public_numbers()
    return {"kty": "RSA", "n": b64_int(numbers.n), "e": b64_int(numbers.e)}


@pytest.fixture(scope="module")
def ec_public() -> dict[str, Any]:
    jwk: dict[str, Any] = ECKey.generate_key("P-256").as_dict(private=False)
    return jwk


@pytest.fixture
def key_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="keycard_agents.keys"):
        yield caplog


def test_each_key_a_jwks_skips_is_logged_with_the_reason(
    ec_public: dict[str, Any], key_logs: pytest.LogCaptureFixture
) -> None:
    p384: dict[str, Any] = ECKey.generate_key("P-384").as_dict(private=False)
    members = [
        {**ec_public, "use": "enc"},
        {"kty": "oct", "k": "c2VjcmV0"},
        {**ec_public, "alg": "PS256"},
        rsa_public(1024),
        p384,
        {**ec_public, "use": "sig", "alg": "ES256", "kid": "kept"},
        {**rsa_public(2048), "kid": "rsa-kept"},
    ]
    keys = VerificationKeys.from_jwks({"keys": members}, algorithms=["ES256", "RS256"])
    assert keys.kids() == ("kept", "rsa-kept")
    assert [r.getMessage() for r in key_logs.records] == [
        "skipping JWKS member 0: use 'enc' is not 'sig'",
        "skipping JWKS member 1: key type 'oct' is not EC, RSA or OKP",
        "skipping JWKS member 2: alg 'PS256' is not allowed",
        "skipping JWKS member 3: RSA key shorter than 2048 bits",
        "skipping JWKS member 4: no allowed algorithm fits this key",
    ]
    assert {r.levelno for r in key_logs.records} == {logging.DEBUG}


def test_static_keys_log_a_skipped_key_under_its_issuer(
    ec_public: dict[str, Any], key_logs: pytest.LogCaptureFixture
) -> None:
    StaticKeys({ISS: {"keys": [{**ec_public, "use": "enc"}, {**ec_public, "kid": "k"}]}})
    assert [r.getMessage() for r in key_logs.records] == [
        f"skipping JWKS of issuer {ISS!r} member 0: use 'enc' is not 'sig'"
    ]


def test_a_malformed_key_is_refused_naming_the_member() -> None:
    with pytest.raises(ValueError, match=r"^JWKS member 0 is not a valid EC key: ") as refused:
        VerificationKeys.from_jwks({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA"}]})
    assert refused.value.__cause__ is not None
    with pytest.raises(ValueError) as missing:  # noqa: PT011 (the message is asserted)
        VerificationKeys.from_jwks({})
    assert str(missing.value) == "JWKS has no 'keys' array"


def test_a_key_set_that_is_no_mapping_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as refused:
        StaticKeys({ISS: [{"kty": "EC"}]})  # type: ignore[dict-item]
    assert str(refused.value) == f"JWKS of issuer {ISS!r} has no 'keys' array"


def test_a_joserfc_key_set_of_public_keys_is_accepted(ec_public: dict[str, Any]) -> None:
    keys = VerificationKeys.from_jwks(KeySet([ECKey.import_key({**ec_public, "kid": "pub"})]))
    assert keys.kids() == ("pub",)


# -- signing keys ----------------------------------------------------------------------------


def test_signing_keys_refuse_what_cannot_sign_with_the_reason() -> None:
    with pytest.raises(ConfigurationError) as refused:
        SigningKey.generate("PS256")
    assert (str(refused.value), refused.value.setting) == (
        "cannot sign with 'PS256'; choose one of ES256, EdDSA, RS256",
        "alg",
    )
    private = ECKey.generate_key("P-256")
    with pytest.raises(ConfigurationError) as refused:
        SigningKey(private, alg="PS256", created_at=0)
    assert refused.value.setting == "alg"
    assert str(refused.value) == "cannot sign with 'PS256'; choose one of ES256, EdDSA, RS256"
    public = ECKey.import_key(private.as_dict(private=False))
    with pytest.raises(ConfigurationError) as refused:
        SigningKey(public, alg="ES256", created_at=0)
    assert str(refused.value) == "a signing key needs the private key, got a public one"
    with pytest.raises(ConfigurationError) as refused:
        SigningKey(private, alg="RS256", created_at=0)
    assert str(refused.value) == "a EC key cannot sign RS256 tokens"


def test_generated_keys_are_of_the_documented_kinds() -> None:
    default = SigningKey.generate(clock=lambda: NOW)
    assert (default.alg, default.created_at, default.retired_at) == ("ES256", NOW, None)
    assert isinstance(default.key, ECKey)
    assert default.key.curve_name == "P-256"
    eddsa = SigningKey.generate("EdDSA")
    assert isinstance(eddsa.key, OKPKey)
    assert eddsa.key.curve_name == "Ed25519"
    rs256 = SigningKey.generate("RS256")
    assert isinstance(rs256.key, RSAKey)
    assert rs256.key.public_key.key_size == 3072


def test_a_signing_key_keeps_the_kid_its_jwk_names(ec_public: dict[str, Any]) -> None:
    private = ECKey.generate_key("P-256").as_dict(private=True)
    named = SigningKey.from_jwk({**private, "kid": "named-1"}, alg="ES256")
    assert named.kid == "named-1"
    assert named.public_jwk()["kid"] == "named-1"
    unnamed = SigningKey.from_jwk(private, alg="ES256")
    assert unnamed.kid == unnamed.thumbprint()
    jwk = unnamed.public_jwk()
    assert (jwk["use"], jwk["alg"], jwk["kid"]) == ("sig", "ES256", unnamed.kid)
    assert "d" not in jwk


# -- key stores -------------------------------------------------------------------------------


def test_a_key_store_refuses_bad_settings_naming_them() -> None:
    with pytest.raises(ConfigurationError) as refused:
        KeyStore(None, alg="PS256")
    assert (str(refused.value), refused.value.setting) == (
        "cannot sign with 'PS256'; choose one of ES256, EdDSA, RS256",
        "alg",
    )
    with pytest.raises(ConfigurationError) as refused:
        KeyStore(None, retention=-0.5)
    assert (str(refused.value), refused.value.setting) == (
        "retention must be >= 0 seconds",
        "retention",
    )


def test_a_key_store_defaults_to_es256_and_an_hour_and_takes_zero_retention() -> None:
    store = KeyStore(None)
    assert (store.directory, store.retention, store.current.alg) == (None, 3600.0, "ES256")
    assert KeyStore(None, retention=0).retention == 0
    assert KeyStore(None, retention=0.5).retention == 0.5


def test_key_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    old = os.umask(0o277)  # would leave a new file read-only for its owner
    try:
        store = KeyStore(directory, clock=lambda: NOW)
        kid = store.current.kid
    finally:
        os.umask(old)
    path = directory / f"{kid}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == [f"{kid}.json"]


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


def test_a_rotation_is_logged_and_the_retired_key_is_saved_retired(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = KeyStore(tmp_path / "keys", clock=clock)
    first = store.current
    clock.now += 90
    with caplog.at_level(logging.INFO, logger="keycard_agents.keys"):
        caplog.clear()  # the first key's line, when an earlier test left INFO on
        second = store.rotate()
    assert [r.getMessage() for r in caplog.records] == [
        f"signing key {second.kid} (ES256) is now current"
    ]
    assert (first.retired_at, second.retired_at) == (NOW + 90, None)
    reloaded = KeyStore(tmp_path / "keys", clock=clock)
    assert reloaded.current.kid == second.kid
    assert {k.kid: k.retired_at for k in reloaded.published()} == {
        first.kid: NOW + 90,
        second.kid: None,
    }


def test_a_key_store_reopened_for_another_algorithm_signs_with_a_new_key(
    tmp_path: Path,
) -> None:
    es256 = KeyStore(tmp_path / "keys", clock=lambda: NOW).current
    reopened = KeyStore(tmp_path / "keys", alg="EdDSA", clock=lambda: NOW + 1)
    current = reopened.current
    assert (current.alg, current.created_at) == ("EdDSA", NOW + 1)
    assert current.kid != es256.kid
    assert es256.kid in {k.kid for k in reopened.published()}


def test_a_signing_key_remembers_the_headers_of_16_token_types() -> None:
    key = SigningKey.generate(clock=lambda: NOW)
    claims = {"iss": ISS, "sub": "alice", "exp": NOW + 60}
    tokens = [key.sign(claims, typ=f"type-{n}+jwt") for n in range(20)]
    assert len(key._headers) == 16  # a bounded cache: later types are encoded each time
    again = [key.sign(claims, typ=f"type-{n}+jwt") for n in range(20)]
    assert [t.split(".")[0] for t in again] == [t.split(".")[0] for t in tokens]


def test_no_key_fits_an_unknown_algorithm_and_short_rsa_keys_fit_none() -> None:
    ec = ECKey.generate_key("P-256")
    assert not key_fits_algorithm(ec, "HS256")
    assert not key_fits_algorithm(ec, "none")
    with pytest.warns(SecurityWarning):
        short = RSAKey.import_key(rsa_public(1024))
    assert not key_fits_algorithm(short, "RS256")
    assert key_fits_algorithm(RSAKey.import_key(rsa_public(2048)), "RS256")


def test_every_key_type_of_a_jwks_is_kept() -> None:
    members = [
        {**OKPKey.generate_key("Ed25519").as_dict(private=False), "kid": "okp"},
        {**ECKey.generate_key("P-256").as_dict(private=False), "kid": "ec"},
        {**rsa_public(2048), "kid": "rsa"},
    ]
    assert VerificationKeys.from_jwks({"keys": members}).kids() == ("okp", "ec", "rsa")
