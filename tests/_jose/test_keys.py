"""SigningKey and KeyStore: generation, signing, persistence, permissions, rotation."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from keycard_agents import ConfigurationError, InvalidTokenError
from keycard_agents._jose._keys import VerificationKeys, allowed_algorithms, key_fits_algorithm
from keycard_agents.auth import ALGORITHMS, KeyStore, SigningKey, StaticKeys, verify_jwt

ISS = "https://sts.test"
NOW = 1_700_000_000
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def token_claims(exp: int = NOW + 3600) -> dict[str, Any]:
    return {"iss": ISS, "sub": "alice", "aud": "https://r.test", "exp": exp, "iat": NOW, "jti": "1"}


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_generate_sign_and_public_jwk(alg: str) -> None:
    key = SigningKey.generate(alg, clock=lambda: NOW)
    assert key.alg == alg
    assert key.created_at == NOW
    assert key.retired_at is None
    assert key.kid == key.thumbprint()
    jwk = key.public_jwk()
    assert jwk["kid"] == key.kid
    assert jwk["alg"] == alg
    assert jwk["use"] == "sig"
    assert not {"d", "p", "q", "dp", "dq", "qi"} & jwk.keys()
    token = key.sign({"sub": "alice"}, typ="at+jwt")
    obj = jws.extract_compact(token.encode())
    assert obj.headers() == {"alg": alg, "kid": key.kid, "typ": "at+jwt"}
    assert json.loads(obj.payload) == {"sub": "alice"}


def test_repr_never_shows_key_material() -> None:
    key = SigningKey.generate("ES256")
    d = key.to_json()["jwk"]["d"]
    assert d not in repr(key)
    assert d not in str(key)
    store = KeyStore(None)
    assert store.current.to_json()["jwk"]["d"] not in repr(store)


def test_rsa_keys_are_at_least_3072_bits() -> None:
    key = SigningKey.generate("RS256")
    assert isinstance(key.key, RSAKey)
    assert key.key.public_key.key_size == 3072


def test_generate_refuses_other_algorithms() -> None:
    for alg in ("HS256", "none", "ES384"):
        with pytest.raises(ConfigurationError):
            SigningKey.generate(alg)


def test_from_jwk_round_trip_and_refusals() -> None:
    key = SigningKey.generate("EdDSA")
    copy = SigningKey.from_jwk(key.to_json()["jwk"], alg="EdDSA", created_at=5)
    assert copy.kid == key.kid
    assert copy.created_at == 5
    with pytest.raises(ConfigurationError):
        SigningKey.from_jwk(key.public_jwk())  # public only
    with pytest.raises(ConfigurationError):
        SigningKey.from_jwk(key.to_json()["jwk"])  # no alg
    with pytest.raises(ConfigurationError):
        SigningKey.from_jwk(key.to_json()["jwk"], alg="ES256")  # OKP cannot sign ES256
    with pytest.raises(ConfigurationError):
        SigningKey.from_jwk({"kty": "oct", "k": "c2VjcmV0"}, alg="ES256")
    with pytest.raises(ConfigurationError):
        SigningKey.from_jwk({"kty": "EC", "crv": "P-256", "x": "bad"}, alg="ES256")


def test_key_fits_algorithm_matrix() -> None:
    ec = ECKey.generate_key("P-256")
    ec384 = ECKey.generate_key("P-384")
    rsa = RSAKey.generate_key(2048)
    with pytest.warns(SecurityWarning):
        small_rsa = RSAKey.generate_key(1024)
    okp = OKPKey.generate_key("Ed25519")
    oct_key = OctKey.generate_key(256)
    assert key_fits_algorithm(ec, "ES256")
    assert not key_fits_algorithm(ec, "RS256")
    assert not key_fits_algorithm(ec384, "ES256")
    assert key_fits_algorithm(ec384, "ES384")
    assert key_fits_algorithm(rsa, "RS256")
    assert key_fits_algorithm(rsa, "PS256")
    assert not key_fits_algorithm(rsa, "ES256")
    assert not key_fits_algorithm(small_rsa, "RS256")
    assert key_fits_algorithm(okp, "EdDSA")
    assert key_fits_algorithm(okp, "Ed25519")
    for alg in ("HS256", "none", "ES256"):
        assert not key_fits_algorithm(oct_key, alg)
    assert not key_fits_algorithm(rsa, "HS256")
    # A key's own alg must agree with the header; EdDSA and Ed25519 are one signature.
    rs_only = RSAKey.import_key({**rsa.as_dict(), "alg": "RS256"})
    assert not key_fits_algorithm(rs_only, "PS256")
    ed = OKPKey.import_key({**okp.as_dict(), "alg": "EdDSA"})
    assert key_fits_algorithm(ed, "Ed25519")


def test_allowed_algorithms() -> None:
    assert allowed_algorithms(["EdDSA"]) == {"EdDSA", "Ed25519"}
    assert allowed_algorithms(["Ed25519"]) == {"EdDSA", "Ed25519"}
    for bad in (["HS256"], ["none"], [], "ES256"):
        with pytest.raises(ConfigurationError):
            allowed_algorithms(bad)


def test_verification_keys_filter_the_jwks() -> None:
    es = SigningKey.generate("ES256")
    with pytest.warns(SecurityWarning):
        rsa_small = RSAKey.generate_key(1024).as_dict()
    jwks = {
        "keys": [
            es.public_jwk(),
            {**SigningKey.generate("ES256").public_jwk(), "use": "enc", "kid": "enc"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {**rsa_small, "kid": "small"},
            {**SigningKey.generate("RS256").public_jwk(), "alg": "RS512", "kid": "rs512"},
            {**es.to_json()["jwk"], "kid": "leaked-private"},
        ]
    }
    keys = VerificationKeys.from_jwks(jwks)
    assert set(keys.kids()) == {es.kid, "leaked-private"}
    leaked = keys.find(issuer=ISS, kid="leaked-private", alg="ES256")
    assert not leaked.is_private
    with pytest.raises(ValueError, match="no 'keys' array"):
        VerificationKeys.from_jwks({"nope": []})
    with pytest.raises(ValueError, match="not a JSON object"):
        VerificationKeys.from_jwks({"keys": ["x"]})
    with pytest.raises(ValueError, match="not a valid EC key"):
        VerificationKeys.from_jwks({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA"}]})
    with pytest.raises(ConfigurationError):
        StaticKeys({ISS: {"keys": "x"}})


# -- KeyStore ----------------------------------------------------------------------


def test_memory_store_generates_current_on_first_use() -> None:
    store = KeyStore(None, alg="EdDSA")
    assert store.directory is None
    current = store.current
    assert current.alg == "EdDSA"
    assert store.current is current
    assert store.public_jwks() == {"keys": [current.public_jwk()]}


@posix_only
def test_store_creates_private_directory_and_files(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "keys"
    store = KeyStore(directory)
    key = store.current
    assert mode(directory) == 0o700
    path = directory / f"{key.kid}.json"
    assert mode(path) == 0o600
    assert json.loads(path.read_text())["kid"] == key.kid
    assert not list(directory.glob("*.tmp"))


def test_store_persists_across_instances(tmp_path: Path) -> None:
    first = KeyStore(tmp_path / "keys", alg="RS256")
    kid = first.current.kid
    token = first.current.sign({"sub": "a"}, typ="at+jwt")
    second = KeyStore(tmp_path / "keys", alg="RS256")
    assert second.current.kid == kid
    assert second.current.sign({"sub": "a"}, typ="at+jwt").split(".")[0] == token.split(".")[0]


@posix_only
def test_store_refuses_group_readable_key_file(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    path = tmp_path / "keys" / f"{store.current.kid}.json"
    path.chmod(0o640)
    with pytest.raises(ConfigurationError) as info:
        KeyStore(tmp_path / "keys")
    assert str(path) in str(info.value)
    assert f"chmod 600 {path}" in str(info.value)
    path.chmod(0o604)
    with pytest.raises(ConfigurationError):
        KeyStore(tmp_path / "keys")
    path.chmod(0o600)
    assert KeyStore(tmp_path / "keys").current.kid == store.current.kid


@posix_only
def test_store_refuses_world_writable_directory(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.raises(ConfigurationError) as info:
        KeyStore(directory)
    assert f"chmod 700 {directory}" in str(info.value)


def test_store_refuses_corrupt_or_misnamed_files(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    KeyStore(directory).current  # noqa: B018 (creates the directory and a key)
    bad = directory / "broken.json"
    bad.write_text("{not json")
    bad.chmod(0o600)
    with pytest.raises(ConfigurationError, match=r"broken\.json"):
        KeyStore(directory)
    good = next(p for p in directory.glob("*.json") if p != bad)
    bad.write_text(good.read_text())
    with pytest.raises(ConfigurationError, match="not the one its name says"):
        KeyStore(directory)


def test_store_path_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("")
    with pytest.raises(ConfigurationError, match="not a directory"):
        KeyStore(path)


def test_store_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        KeyStore(None, alg="HS256")
    with pytest.raises(ConfigurationError):
        KeyStore(None, retention=-1)


def test_rotation_publishes_old_key_until_retention_then_prunes(tmp_path: Path) -> None:
    clock = Clock()
    directory = tmp_path / "keys"
    store = KeyStore(directory, clock=clock, retention=600)
    old = store.current
    clock.now = NOW + 100
    new = store.rotate()
    assert new.kid != old.kid
    assert store.current is new
    assert old.retired_at == NOW + 100
    assert [k["kid"] for k in store.public_jwks()["keys"]] == [new.kid, old.kid]
    # The retirement is persisted.
    reloaded = KeyStore(directory, clock=clock, retention=600)
    assert reloaded.current.kid == new.kid
    assert {k["kid"] for k in reloaded.public_jwks()["keys"]} == {new.kid, old.kid}
    clock.now = NOW + 100 + 600
    assert [k["kid"] for k in store.public_jwks()["keys"]] == [new.kid]
    assert (directory / f"{old.kid}.json").exists()
    store.prune()
    assert not (directory / f"{old.kid}.json").exists()
    assert (directory / f"{new.kid}.json").exists()
    assert [k.kid for k in KeyStore(directory, clock=clock).published()] == [new.kid]


def test_changing_alg_rotates_on_first_use(tmp_path: Path) -> None:
    es = KeyStore(tmp_path / "keys", alg="ES256").current
    ed_store = KeyStore(tmp_path / "keys", alg="EdDSA")
    ed = ed_store.current
    assert ed.alg == "EdDSA"
    assert {k.kid for k in ed_store.published()} == {es.kid, ed.kid}


@pytest.mark.anyio
async def test_rotation_old_token_verifies_until_retention_then_unknown_key(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = KeyStore(tmp_path / "keys", clock=clock, retention=3600)
    resolver = store.resolver(ISS)
    old_token = store.current.sign(token_claims(exp=NOW + 7200), typ="at+jwt")
    old_kid = store.current.kid
    store.rotate()
    new_token = store.current.sign(token_claims(exp=NOW + 7200), typ="at+jwt")
    assert jws.extract_compact(new_token.encode()).headers()["kid"] == store.current.kid

    async def check(token: str) -> dict[str, Any]:
        return await verify_jwt(
            token,
            keys=resolver,
            issuers=[ISS],
            audience="https://r.test",
            token_types=["at+jwt"],
            clock=clock,
        )

    assert (await check(old_token))["sub"] == "alice"
    assert resolver.known(issuer=ISS, kid=old_kid)
    clock.now = NOW + 3599
    assert (await check(old_token))["sub"] == "alice"
    clock.now = NOW + 3601
    store.prune()
    with pytest.raises(InvalidTokenError) as info:
        await check(old_token)
    assert info.value.check == "unknown_key"
    assert not resolver.known(issuer=ISS, kid=old_kid)
    assert (await check(new_token))["sub"] == "alice"


@pytest.mark.anyio
async def test_store_resolver_serves_only_its_issuer() -> None:
    store = KeyStore(None)
    resolver = store.resolver(ISS)
    kid = store.current.kid
    with pytest.raises(InvalidTokenError) as info:
        await resolver.resolve(issuer="https://other.test", kid=kid, alg="ES256")
    assert info.value.check == "issuer"
    assert not resolver.known(issuer="https://other.test", kid=kid)
    assert not resolver.known(issuer=ISS, kid=None)
    assert (await resolver.resolve(issuer=ISS, kid=None, alg="ES256")).kid == kid
