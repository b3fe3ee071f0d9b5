"""Signing keys and key sets: details the broader key tests leave open.

RSA keys of any length from 2048 bits up are usable whatever their base64url padding,
private JWS header parameters do not make a token unverifiable, retired keys are pruned
only after their retention, and the reprs name the key without its material.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import RSAKey

from keycard_agents import ConfigurationError
from keycard_agents._jose._keys import VerificationKeys, jws_registry, show_untrusted
from keycard_agents.auth import KeyStore, SigningKey, StaticKeys, verify_jwt

ISS = "https://sts.test"
AUD = "https://r.test"
NOW = 1_700_000_000


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rsa_jwk(bits: int) -> dict[str, Any]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    jwk = RSAKey.import_key(private.public_key()).as_dict(private=False)
    return {**jwk, "kid": f"rsa-{bits}", "use": "sig"}


@pytest.mark.parametrize("bits", [2048, 2096])
def test_rsa_keys_from_2048_bits_are_kept_whatever_their_padding(bits: int) -> None:
    # 2048 and 2096-bit moduli are 342 and 350 base64url characters: two '=' short.
    jwk = rsa_jwk(bits)
    assert len(jwk["n"]) % 4 == 2
    keys = VerificationKeys.from_jwks({"keys": [jwk]})
    assert keys.kids() == (f"rsa-{bits}",)


@pytest.mark.anyio
async def test_a_private_header_parameter_does_not_stop_verification() -> None:
    key = SigningKey.generate("ES256", clock=lambda: NOW)
    claims = {"iss": ISS, "sub": "a", "aud": AUD, "exp": NOW + 60, "iat": NOW, "jti": "1"}
    header = {"alg": "ES256", "kid": key.kid, "typ": "at+jwt", "x-tenant": "blue"}
    token = jwt.encode(header, claims, key.key, registry=jws_registry(("ES256",)))
    keys = StaticKeys({ISS: {"keys": [key.public_jwk()]}})
    verified = await verify_jwt(
        token, keys=keys, issuers=[ISS], audience=AUD, token_types=["at+jwt"], clock=lambda: NOW
    )
    assert verified == claims


def test_prune_keeps_retired_keys_within_retention(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = KeyStore(tmp_path / "keys", clock=clock, retention=600)
    old = store.current
    clock.now = NOW + 1000
    new = store.rotate()
    clock.now = NOW + 1000 + 599
    store.prune()
    assert [k.kid for k in store.published()] == [old.kid, new.kid]
    assert (tmp_path / "keys" / f"{old.kid}.json").exists()
    # Past retention it goes, even when its file is already gone.
    (tmp_path / "keys" / f"{old.kid}.json").unlink()
    clock.now = NOW + 1000 + 600
    with caplog.at_level(logging.INFO, logger="keycard_agents.keys"):
        store.prune()
    assert [k.kid for k in store.published()] == [new.kid]
    assert [r.getMessage() for r in caplog.records if "pruned" in r.getMessage()] == [
        f"pruned retired signing key {old.kid}"
    ]


def test_reprs_name_the_key_and_store_without_material(tmp_path: Path) -> None:
    key = SigningKey.generate("EdDSA", clock=lambda: NOW)
    assert repr(key) == f"SigningKey(kid={key.kid!r}, alg='EdDSA', created_at={NOW})"
    key.retired_at = NOW + 5
    assert repr(key) == (
        f"SigningKey(kid={key.kid!r}, alg='EdDSA', created_at={NOW}, retired_at={NOW + 5})"
    )
    memory = KeyStore(None, alg="EdDSA")
    assert repr(memory) == "KeyStore(memory, alg='EdDSA', keys=0)"
    memory.current  # noqa: B018 (generates the first key)
    assert repr(memory) == "KeyStore(memory, alg='EdDSA', keys=1)"
    directory = tmp_path / "keys"
    assert repr(KeyStore(directory)) == f"KeyStore({directory}, alg='ES256', keys=0)"


def test_from_jwk_takes_the_jwks_own_alg_and_explains_refusals() -> None:
    key = SigningKey.generate("EdDSA")
    private = key.to_json()["jwk"]
    imported = SigningKey.from_jwk({**private, "alg": "EdDSA"})
    assert (imported.alg, imported.kid, imported.created_at) == ("EdDSA", key.kid, 0)
    with pytest.raises(ConfigurationError) as refused:
        SigningKey.from_jwk(private)
    assert str(refused.value) == "the JWK has no 'alg'; pass alg="
    with pytest.raises(ConfigurationError) as refused:
        SigningKey.from_jwk({"kty": "oct", "k": "c2VjcmV0"}, alg="ES256")
    assert str(refused.value) == "unsupported private key type 'oct'; use EC, OKP or RSA"
    with pytest.raises(ConfigurationError) as refused:
        SigningKey.from_jwk({"kty": "EC", "crv": "P-256", "x": "bad"}, alg="ES256")
    assert str(refused.value) == "invalid private EC JWK: KeyParameterError"


def test_a_reloaded_store_keeps_each_keys_dates(tmp_path: Path) -> None:
    clock = Clock()
    store = KeyStore(tmp_path / "keys", clock=clock, retention=600)
    old = store.current
    clock.now = NOW + 100
    new = store.rotate()
    reloaded = KeyStore(tmp_path / "keys", clock=clock, retention=600)
    dates = {k.kid: (k.created_at, k.retired_at) for k in reloaded.published()}
    assert dates == {old.kid: (NOW, NOW + 100), new.kid: (NOW + 100, None)}


def test_unreadable_key_files_name_the_directory_setting(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    KeyStore(directory).current  # noqa: B018 (creates the directory and a key)
    bad = directory / "broken.json"
    bad.write_text("{not json")
    bad.chmod(0o600)
    with pytest.raises(ConfigurationError) as refused:
        KeyStore(directory)
    assert refused.value.setting == "directory"
    assert str(refused.value) == (
        f"key file {bad} is unreadable or corrupt (JSONDecodeError); "
        "move it away to let a new key be generated"
    )
    good = next(p for p in directory.glob("*.json") if p != bad)
    bad.write_text(good.read_text())
    with pytest.raises(ConfigurationError) as refused:
        KeyStore(directory)
    assert refused.value.setting == "directory"
    assert str(refused.value) == (
        f"key file {bad} holds key {good.stem!r}, not the one its name says; rename or remove it"
    )


def test_untrusted_values_are_quoted_and_cut_at_the_limit() -> None:
    assert show_untrusted("a" * 78) == "'" + "a" * 78 + "'"  # 80 characters: whole
    assert show_untrusted("a" * 79) == "'" + "a" * 76 + "..."  # 81: cut to 80
    assert len(show_untrusted("x" * 1000)) == 80
    assert show_untrusted(["x"] * 3, limit=10) == "['x', '..."
    assert show_untrusted(None) == "None"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_permission_refusals_say_whether_the_directory_or_a_file_is_open(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "keys"
    key = KeyStore(directory).current
    directory.chmod(0o750)
    with pytest.raises(ConfigurationError) as refused:
        KeyStore(directory)
    assert str(refused.value) == (
        f"key directory {directory} is open to other users (mode 750); run: chmod 700 {directory}"
    )
    assert refused.value.setting == "directory"
    directory.chmod(0o700)
    path = directory / f"{key.kid}.json"
    path.chmod(0o640)
    with pytest.raises(ConfigurationError) as refused:
        KeyStore(directory)
    assert str(refused.value) == (
        f"key file {path} is readable or writable to other users (mode 640); run: chmod 600 {path}"
    )


@pytest.mark.skipif(os.name != "posix", reason="POSIX ownership and links")
def test_a_linked_or_foreign_key_file_or_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    key = KeyStore(directory).current
    path = directory / f"{key.kid}.json"
    elsewhere = tmp_path / "elsewhere.json"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    with pytest.raises(ConfigurationError) as refused:
        KeyStore(directory)
    assert str(refused.value) == (
        f"key file {path} is a symbolic link; replace it with the file itself"
    )
    assert refused.value.setting == "directory"
    path.unlink()
    elsewhere.rename(path)
    if os.geteuid() != 0:
        return  # only root can give a file away
    uid = os.geteuid()
    os.chown(directory, uid + 4242, -1)
    with pytest.raises(ConfigurationError) as refused:
        KeyStore(directory)
    assert str(refused.value) == (
        f"key directory {directory} belongs to user id {uid + 4242}, not to the user running "
        f"this process (id {uid}); run: chown {uid} {directory} (or run as its owner)"
    )
    assert refused.value.setting == "directory"
    os.chown(directory, uid, -1)
    os.chown(path, uid + 4242, -1)
    with pytest.raises(ConfigurationError, match=r"^key file .* belongs to user id") as refused:
        KeyStore(directory)
    assert refused.value.setting == "directory"


def test_a_key_store_path_that_is_a_file_names_the_directory_setting(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("")
    with pytest.raises(ConfigurationError) as refused:
        KeyStore(path)
    assert str(refused.value) == f"key store path {path} is not a directory"
    assert refused.value.setting == "directory"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_the_key_directory_is_created_closed_not_opened_then_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the chmod that follows, the directory is 0700 from its creation on: there
    # is no moment in which another user could list or fill it.
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    directory = tmp_path / "keys"
    KeyStore(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


@pytest.mark.skipif(os.name != "posix", reason="POSIX links")
def test_a_key_directory_reached_through_a_link_is_judged_by_the_directory(
    tmp_path: Path,
) -> None:
    # Deployments often mount keys elsewhere and link to them: the directory's own mode
    # and owner count, not the link's (whose mode is always 777).
    real = tmp_path / "real"
    key = KeyStore(real).current
    link = tmp_path / "keys"
    link.symlink_to(real)
    assert KeyStore(link).current.kid == key.kid
