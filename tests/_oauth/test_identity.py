"""Application credentials, environment discovery and issuer resolution."""

from __future__ import annotations

import base64
import os
import stat
import warnings
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import KeySet

from keycard_agents import (
    ApplicationCredential,
    ClientSecret,
    ConfigurationError,
    WebIdentity,
    WorkloadIdentity,
    credential_from_env,
    resolve_issuer,
)
from keycard_agents._oauth._credentials import CLIENT_ASSERTION_TYPE_JWT_BEARER
from keycard_agents.auth import CLIENT_ASSERTION_TYPE

ISSUER = "https://sts.example"
ENDPOINT = "https://sts.example/token"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- ClientSecret


@pytest.mark.anyio
async def test_client_secret_basic_header_is_form_urlencoded() -> None:
    cred = ClientSecret("agent:one", "s3cr+t/=")
    auth = await cred.authenticate(token_endpoint=ENDPOINT, issuer=ISSUER)
    assert auth.form == {}
    scheme, value = auth.headers["Authorization"].split(" ")
    assert scheme == "Basic"
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
    assert base64.b64decode(value).decode() == "agent%3Aone:s3cr%2Bt%2F%3D"


@pytest.mark.anyio
async def test_client_secret_post_puts_credentials_in_form() -> None:
    cred = ClientSecret("agent", "hunter2", method="post")
    auth = await cred.authenticate(token_endpoint=ENDPOINT, issuer=ISSUER)
    assert auth.form == {"client_id": "agent", "client_secret": "hunter2"}
    assert auth.headers == {}


@pytest.mark.anyio
async def test_secrets_never_in_repr() -> None:
    cred = ClientSecret("agent", "hunter2")
    auth = await cred.authenticate(token_endpoint=ENDPOINT, issuer=ISSUER)
    post = await ClientSecret("agent", "hunter2", method="post").authenticate(
        token_endpoint=ENDPOINT, issuer=ISSUER
    )
    for text in (repr(cred), str(cred), repr(auth), repr(post)):
        assert "hunter2" not in text
        assert base64.b64encode(b"agent:hunter2").decode() not in text
    assert "agent" in repr(cred)
    assert "client_secret" in repr(post)


def test_client_secret_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigurationError) as info:
        ClientSecret("agent", "")
    assert info.value.setting == "KEYCARD_CLIENT_SECRET"
    with pytest.raises(ConfigurationError) as info:
        ClientSecret("", "x")
    assert info.value.setting == "KEYCARD_CLIENT_ID"
    with pytest.raises(ConfigurationError) as info:
        ClientSecret("agent", "x", method="jwt")  # type: ignore[arg-type]
    assert info.value.setting == "method"


def test_credentials_satisfy_protocol(tmp_path: Path) -> None:
    token_file = _write(tmp_path / "token", "abc")
    creds: list[ApplicationCredential] = [
        ClientSecret("a", "b"),
        WebIdentity("a", storage_dir=tmp_path / "keys"),
        WorkloadIdentity("a", token_file=token_file),
    ]
    for cred in creds:
        assert isinstance(cred, ApplicationCredential)
        assert cred.client_id == "a"


# --------------------------------------------------------------------------- WebIdentity


def _decode_assertion(assertion: str, identity: WebIdentity) -> Any:
    keys = KeySet.import_key_set(identity.public_jwks())  # type: ignore[arg-type]
    with warnings.catch_warnings():
        # joserfc flags the name "EdDSA" (RFC 9864 renamed it); the signature is Ed25519.
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.decode(assertion, keys, algorithms=[identity.alg])


def _key_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json"))


@pytest.mark.anyio
@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
async def test_web_identity_assertion_claims(tmp_path: Path, alg: str) -> None:
    identity = WebIdentity("planner", storage_dir=tmp_path / "keys", alg=alg, clock=lambda: 1000.0)
    auth = await identity.authenticate(token_endpoint=ENDPOINT, issuer=ISSUER)
    assert auth.headers == {}
    assert auth.form["client_id"] == "planner"
    assert auth.form["client_assertion_type"] == CLIENT_ASSERTION_TYPE_JWT_BEARER
    token = _decode_assertion(auth.form["client_assertion"], identity)
    assert token.header == {"alg": alg, "typ": CLIENT_ASSERTION_TYPE, "kid": identity.kid}
    assert CLIENT_ASSERTION_TYPE == "client-authentication+jwt"
    claims = token.claims
    assert claims["iss"] == claims["sub"] == "planner"
    assert claims["aud"] == ISSUER  # RFC 7523: the issuer identifier, not the endpoint
    assert claims["iat"] == 1000
    assert claims["exp"] == 1060
    assert len(claims["jti"]) == 36
    assert auth.form["client_assertion"] not in repr(auth)


@pytest.mark.anyio
async def test_web_identity_assertions_have_unique_jti(tmp_path: Path) -> None:
    identity = WebIdentity("planner", storage_dir=tmp_path)
    jtis = set()
    for _ in range(20):
        auth = await identity.authenticate(token_endpoint=ENDPOINT, issuer=ISSUER)
        jtis.add(_decode_assertion(auth.form["client_assertion"], identity).claims["jti"])
    assert len(jtis) == 20


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_web_identity_persists_key_owner_only(tmp_path: Path) -> None:
    storage = tmp_path / "nested" / "keys"
    first = WebIdentity("planner", storage_dir=storage)
    assert first.storage_dir == storage
    assert stat.S_IMODE(storage.stat().st_mode) == 0o700
    (key_file,) = _key_files(storage)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.stem == first.kid
    second = WebIdentity("planner", storage_dir=storage)
    assert second.kid == first.kid
    assert second.public_jwks() == first.public_jwks()
    # Only the key file is left behind: no temporary files.
    assert list(storage.iterdir()) == [key_file]


@pytest.mark.anyio
async def test_web_identity_rotation_keeps_old_key_published(tmp_path: Path) -> None:
    identity = WebIdentity("planner", storage_dir=tmp_path)
    old = identity.kid
    new = identity.rotate_key()
    assert new != old
    assert identity.kid == new
    kids = [k["kid"] for k in identity.public_jwks()["keys"]]
    assert kids == [new, old]
    auth = await identity.authenticate(token_endpoint=ENDPOINT, issuer=ISSUER)
    assert _decode_assertion(auth.form["client_assertion"], identity).header["kid"] == new
    # A restart picks the rotated key.
    assert WebIdentity("planner", storage_dir=tmp_path).kid == new


def test_web_identity_public_jwks_has_no_private_part(tmp_path: Path) -> None:
    identity = WebIdentity("planner", storage_dir=tmp_path)
    (jwk,) = identity.public_jwks()["keys"]
    assert jwk["kid"] == identity.kid
    assert jwk["alg"] == "ES256"
    assert jwk["use"] == "sig"
    assert "d" not in jwk
    assert "planner" in repr(identity)
    assert jwk["x"] not in repr(identity)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_web_identity_refuses_readable_key_or_open_directory(tmp_path: Path) -> None:
    WebIdentity("planner", storage_dir=tmp_path / "keys")
    (key_file,) = _key_files(tmp_path / "keys")
    key_file.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600") as info:
        WebIdentity("planner", storage_dir=tmp_path / "keys")
    assert info.value.setting == "KEYCARD_WEB_IDENTITY_DIR"
    key_file.chmod(0o600)
    (tmp_path / "keys").chmod(0o777)
    with pytest.raises(ConfigurationError, match="chmod 700") as info:
        WebIdentity("planner", storage_dir=tmp_path / "keys")
    assert info.value.setting == "KEYCARD_WEB_IDENTITY_DIR"


def test_web_identity_refuses_corrupt_key(tmp_path: Path) -> None:
    WebIdentity("planner", storage_dir=tmp_path)
    (key_file,) = _key_files(tmp_path)
    key_file.write_text('{"jwk": "not a key"}', encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        WebIdentity("planner", storage_dir=tmp_path)
    assert info.value.setting == "KEYCARD_WEB_IDENTITY_DIR"
    assert "not a key" not in str(info.value)


def test_web_identity_rejects_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        WebIdentity("planner", storage_dir=tmp_path, alg="HS256")
    assert info.value.setting == "alg"
    with pytest.raises(ConfigurationError) as info:
        WebIdentity("planner", storage_dir=tmp_path, assertion_lifetime=3600)
    assert info.value.setting == "assertion_lifetime"
    with pytest.raises(ConfigurationError) as info:
        WebIdentity("", storage_dir=tmp_path)
    assert info.value.setting == "KEYCARD_CLIENT_ID"
    not_a_dir = _write(tmp_path / "file", "x")
    with pytest.raises(ConfigurationError) as info:
        WebIdentity("planner", storage_dir=not_a_dir)
    assert info.value.setting == "KEYCARD_WEB_IDENTITY_DIR"


# --------------------------------------------------------------------------- WorkloadIdentity


@pytest.mark.anyio
async def test_workload_identity_sends_token_and_rereads_changes(tmp_path: Path) -> None:
    token_file = _write(tmp_path / "token", "first-token\n")
    identity = WorkloadIdentity("planner", token_file=token_file)
    auth = await identity.authenticate(token_endpoint=ENDPOINT, issuer=ISSUER)
    assert auth.form == {
        "client_id": "planner",
        "client_assertion_type": CLIENT_ASSERTION_TYPE_JWT_BEARER,
        "client_assertion": "first-token",
    }
    # Rotation in place (new content, later mtime).
    _write(token_file, "second-token-longer")
    st = token_file.stat()
    os.utime(token_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    auth = await identity.authenticate(token_endpoint=ENDPOINT, issuer=ISSUER)
    assert auth.form["client_assertion"] == "second-token-longer"
    # Rotation by replacing the file (Kubernetes swaps a symlink): a new inode.
    replacement = _write(tmp_path / "token.new", "third")
    replacement.replace(token_file)
    auth = await identity.authenticate(token_endpoint=ENDPOINT, issuer=ISSUER)
    assert auth.form["client_assertion"] == "third"
    assert "third" not in repr(identity)


def test_workload_identity_reads_only_on_change(tmp_path: Path) -> None:
    token_file = _write(tmp_path / "token", "abc")
    identity = WorkloadIdentity("planner", token_file=token_file)
    assert identity.read_token() == "abc"
    st = token_file.stat()
    # Same size and mtime: the cached value is used (no re-read).
    token_file.write_text("xyz", encoding="utf-8")
    os.utime(token_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert identity.read_token() == "abc"


def test_workload_identity_errors_name_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        WorkloadIdentity("planner", token_file=tmp_path / "missing")
    assert info.value.setting == "KEYCARD_WORKLOAD_TOKEN_FILE"
    token_file = _write(tmp_path / "token", "  \n")
    identity = WorkloadIdentity("planner", token_file=token_file)
    with pytest.raises(ConfigurationError, match="empty") as info:
        identity.read_token()
    assert info.value.setting == "KEYCARD_WORKLOAD_TOKEN_FILE"
    token_file.unlink()
    with pytest.raises(ConfigurationError, match="cannot read"):
        identity.read_token()


@pytest.mark.anyio
async def test_workload_identity_custom_assertion_type(tmp_path: Path) -> None:
    token_file = _write(tmp_path / "token", "abc")
    identity = WorkloadIdentity(
        "planner", token_file=token_file, assertion_type="urn:example:k8s-sa"
    )
    auth = await identity.authenticate(token_endpoint=ENDPOINT, issuer=ISSUER)
    assert auth.form["client_assertion_type"] == "urn:example:k8s-sa"


# --------------------------------------------------------------------------- discovery


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    return {
        "dir": str(tmp_path / "keys"),
        "token": str(_write(tmp_path / "token", "workload")),
        "aws": str(_write(tmp_path / "aws-token", "aws")),
    }


@pytest.mark.parametrize(
    ("env", "kwargs", "expected"),
    [
        # env only: the one configured credential is used
        ({"KEYCARD_CLIENT_ID": "a", "KEYCARD_CLIENT_SECRET": "s"}, {}, ClientSecret),
        ({"KEYCARD_CLIENT_ID": "a", "KEYCARD_WEB_IDENTITY_DIR": "{dir}"}, {}, WebIdentity),
        (
            {"KEYCARD_CLIENT_ID": "a", "KEYCARD_WORKLOAD_TOKEN_FILE": "{token}"},
            {},
            WorkloadIdentity,
        ),
        ({"KEYCARD_CLIENT_ID": "a", "AWS_WEB_IDENTITY_TOKEN_FILE": "{aws}"}, {}, WorkloadIdentity),
        # the AWS fallback never competes with a configured credential
        (
            {
                "KEYCARD_CLIENT_ID": "a",
                "KEYCARD_CLIENT_SECRET": "s",
                "AWS_WEB_IDENTITY_TOKEN_FILE": "{aws}",
            },
            {},
            ClientSecret,
        ),
        # an explicit type selects among several
        (
            {
                "KEYCARD_CLIENT_ID": "a",
                "KEYCARD_APPLICATION_CREDENTIAL_TYPE": "workload_identity",
                "AWS_WEB_IDENTITY_TOKEN_FILE": "{aws}",
            },
            {},
            WorkloadIdentity,
        ),
        # explicit arguments beat the environment
        (
            {"KEYCARD_CLIENT_ID": "a", "KEYCARD_WEB_IDENTITY_DIR": "{dir}"},
            {"client_secret": "s"},
            ClientSecret,
        ),
        (
            {"KEYCARD_CLIENT_ID": "a", "KEYCARD_CLIENT_SECRET": "s"},
            {"credential_type": "web_identity", "web_identity_dir": "{dir}"},
            WebIdentity,
        ),
        (
            {"KEYCARD_APPLICATION_CREDENTIAL_TYPE": "client_secret", "KEYCARD_CLIENT_SECRET": "s"},
            {"client_id": "a", "credential_type": "workload_identity"},
            None,  # no token file: error (checked below)
        ),
        # explicit type, material from the environment
        (
            {"KEYCARD_CLIENT_ID": "a", "KEYCARD_WEB_IDENTITY_DIR": "{dir}"},
            {"credential_type": "web_identity"},
            WebIdentity,
        ),
    ],
)
def test_credential_precedence(
    files: dict[str, str],
    env: dict[str, str],
    kwargs: dict[str, str],
    expected: type | None,
) -> None:
    env = {k: v.format(**files) for k, v in env.items()}
    kwargs = {k: v.format(**files) for k, v in kwargs.items()}
    if expected is None:
        with pytest.raises(ConfigurationError) as info:
            credential_from_env(env, **kwargs)  # type: ignore[arg-type]
        assert info.value.setting == "KEYCARD_WORKLOAD_TOKEN_FILE"
        return
    cred = credential_from_env(env, **kwargs)  # type: ignore[arg-type]
    assert type(cred) is expected
    assert cred.client_id == "a"


def test_explicit_client_id_beats_env() -> None:
    cred = credential_from_env(
        {"KEYCARD_CLIENT_ID": "env-id", "KEYCARD_CLIENT_SECRET": "s"}, client_id="arg-id"
    )
    assert cred.client_id == "arg-id"


@pytest.mark.anyio
async def test_env_secret_value_and_method_are_used() -> None:
    cred = credential_from_env(
        {"KEYCARD_CLIENT_ID": "a", "KEYCARD_CLIENT_SECRET": "from-env"},
        client_secret_method="post",
    )
    auth = await cred.authenticate(token_endpoint=ENDPOINT, issuer=ISSUER)
    assert auth.form == {"client_id": "a", "client_secret": "from-env"}


def test_workload_prefers_keycard_file_over_aws(files: dict[str, str]) -> None:
    cred = credential_from_env(
        {
            "KEYCARD_CLIENT_ID": "a",
            "KEYCARD_WORKLOAD_TOKEN_FILE": files["token"],
            "AWS_WEB_IDENTITY_TOKEN_FILE": files["aws"],
        }
    )
    assert isinstance(cred, WorkloadIdentity)
    assert str(cred.token_file) == files["token"]


@pytest.mark.parametrize(
    ("env", "kwargs", "setting", "phrase"),
    [
        ({}, {}, "KEYCARD_APPLICATION_CREDENTIAL_TYPE", "no application credential"),
        ({"KEYCARD_CLIENT_SECRET": "s"}, {}, "KEYCARD_CLIENT_ID", "no client id"),
        (
            {"KEYCARD_CLIENT_ID": "a", "KEYCARD_APPLICATION_CREDENTIAL_TYPE": "password"},
            {},
            "KEYCARD_APPLICATION_CREDENTIAL_TYPE",
            "use one of",
        ),
        (
            {"KEYCARD_CLIENT_ID": "a"},
            {"credential_type": "password"},
            "credential_type",
            "use one of",
        ),
        (
            {"KEYCARD_CLIENT_ID": "a", "KEYCARD_APPLICATION_CREDENTIAL_TYPE": "client_secret"},
            {},
            "KEYCARD_CLIENT_SECRET",
            "needs a secret",
        ),
        (
            {
                "KEYCARD_CLIENT_ID": "a",
                "KEYCARD_WEB_IDENTITY_DIR": "{dir}",
                "KEYCARD_WEB_IDENTITY_KEY_STORAGE_DIR": "/elsewhere",
            },
            {},
            "KEYCARD_WEB_IDENTITY_KEY_STORAGE_DIR",
            "different directories",
        ),
        (
            {
                "KEYCARD_CLIENT_ID": "a",
                "KEYCARD_APPLICATION_CREDENTIAL_TYPE": "workload_identity",
            },
            {},
            "KEYCARD_WORKLOAD_TOKEN_FILE",
            "needs a token file",
        ),
        (
            {
                "KEYCARD_CLIENT_ID": "a",
                "KEYCARD_CLIENT_SECRET": "s",
                "KEYCARD_WEB_IDENTITY_DIR": "{dir}",
            },
            {},
            "KEYCARD_APPLICATION_CREDENTIAL_TYPE",
            "KEYCARD_CLIENT_SECRET and KEYCARD_WEB_IDENTITY_DIR are both set",
        ),
        (
            {"KEYCARD_CLIENT_ID": "a"},
            {"client_secret": "s", "workload_token_file": "{token}"},
            "KEYCARD_APPLICATION_CREDENTIAL_TYPE",
            "client_secret argument and workload_token_file argument are both set",
        ),
        (
            {
                "KEYCARD_CLIENT_ID": "a",
                "KEYCARD_APPLICATION_CREDENTIAL_TYPE": "web_identity",
                "KEYCARD_WEB_IDENTITY_DIR": "{dir}",
                "KEYCARD_CLIENT_SECRET": "s",
            },
            {},
            "KEYCARD_CLIENT_SECRET",
            "KEYCARD_CLIENT_SECRET is set but KEYCARD_APPLICATION_CREDENTIAL_TYPE",
        ),
        (
            {
                "KEYCARD_CLIENT_ID": "a",
                "KEYCARD_APPLICATION_CREDENTIAL_TYPE": "client_secret",
                "KEYCARD_CLIENT_SECRET": "s",
            },
            {"web_identity_dir": "{dir}"},
            "web_identity_dir",
            "web_identity_dir argument is set",
        ),
        (
            {"KEYCARD_CLIENT_ID": "a"},
            {"credential_type": "client_secret", "client_secret": "s", "web_identity_dir": "{dir}"},
            "web_identity_dir",
            "is set but credential_type argument is 'client_secret'",
        ),
        (
            {"KEYCARD_CLIENT_ID": "a", "KEYCARD_WORKLOAD_TOKEN_FILE": "/nonexistent/token"},
            {},
            "KEYCARD_WORKLOAD_TOKEN_FILE",
            "does not exist",
        ),
    ],
)
def test_invalid_combinations_name_their_setting(
    files: dict[str, str],
    env: dict[str, str],
    kwargs: dict[str, str],
    setting: str,
    phrase: str,
) -> None:
    env = {k: v.format(**files) for k, v in env.items()}
    kwargs = {k: v.format(**files) for k, v in kwargs.items()}
    with pytest.raises(ConfigurationError) as info:
        credential_from_env(env, **kwargs)  # type: ignore[arg-type]
    assert info.value.setting == setting
    assert phrase in str(info.value)
    assert "s3cret" not in str(info.value)


def test_secret_value_never_in_configuration_errors() -> None:
    with pytest.raises(ConfigurationError) as info:
        credential_from_env(
            {
                "KEYCARD_CLIENT_ID": "a",
                "KEYCARD_CLIENT_SECRET": "s3cret-value",
                "KEYCARD_APPLICATION_CREDENTIAL_TYPE": "web_identity",
                "KEYCARD_WEB_IDENTITY_DIR": "/tmp/x",
            }
        )
    assert "s3cret-value" not in str(info.value)


def test_default_env_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KEYCARD_") or name == "AWS_WEB_IDENTITY_TOKEN_FILE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEYCARD_CLIENT_ID", "from-os")
    monkeypatch.setenv("KEYCARD_CLIENT_SECRET", "x")
    monkeypatch.setenv("KEYCARD_ZONE_ID", "acme")
    assert credential_from_env().client_id == "from-os"
    assert resolve_issuer() == "https://acme.keycard.cloud"


# --------------------------------------------------------------------------- issuer


@pytest.mark.parametrize(
    ("kwargs", "env", "expected"),
    [
        ({"zone_id": "acme"}, {}, "https://acme.keycard.cloud"),
        (
            {"zone_id": "acme", "base_url": "https://keycard.example"},
            {},
            "https://acme.keycard.example",
        ),
        (
            {"zone_id": "acme"},
            {"KEYCARD_BASE_URL": "http://localhost:8080"},
            "http://acme.localhost:8080",
        ),
        # identifiers are kept exactly: an issuer ending in "/" is another string
        ({"zone_url": "https://acme.keycard.cloud/"}, {}, "https://acme.keycard.cloud/"),
        ({}, {"KEYCARD_ZONE_URL": "https://z.example/"}, "https://z.example/"),
        ({"issuer": "https://sts.example/tenant/"}, {}, "https://sts.example/tenant/"),
        ({"issuer": "http://127.0.0.1:9000"}, {}, "http://127.0.0.1:9000"),
        ({}, {"KEYCARD_ZONE_ID": "z1"}, "https://z1.keycard.cloud"),
        ({}, {"KEYCARD_ZONE_URL": "https://z.example"}, "https://z.example"),
        (
            {},
            {"KEYCARD_ZONE_ID": "z1", "KEYCARD_BASE_URL": "https://kc.example"},
            "https://z1.kc.example",
        ),
        # explicit arguments first: the environment's zone and base URL are ignored
        (
            {"issuer": "https://sts.example"},
            {"KEYCARD_ZONE_ID": "z1", "KEYCARD_BASE_URL": "https://kc.example"},
            "https://sts.example",
        ),
        ({"zone_url": "https://z.example"}, {"KEYCARD_ZONE_ID": "z1"}, "https://z.example"),
        # Keycard's precedence: a zone URL beats a zone id, wherever each comes from, and a
        # base URL only matters for a zone id
        ({"zone_id": "a", "zone_url": "https://a.example"}, {}, "https://a.example"),
        ({"zone_id": "a"}, {"KEYCARD_ZONE_URL": "https://u.example"}, "https://u.example"),
        (
            {},
            {"KEYCARD_ZONE_ID": "a", "KEYCARD_ZONE_URL": "https://a.example"},
            "https://a.example",
        ),
        (
            {"zone_url": "https://a.example", "base_url": "https://b.example"},
            {},
            "https://a.example",
        ),
        (
            {},
            {"KEYCARD_ZONE_URL": "https://a.example", "KEYCARD_BASE_URL": "https://b"},
            "https://a.example",
        ),
    ],
)
def test_resolve_issuer(kwargs: dict[str, str], env: dict[str, str], expected: str) -> None:
    assert resolve_issuer(env=env, **kwargs) == expected


@pytest.mark.parametrize(
    ("kwargs", "env", "setting"),
    [
        ({}, {}, "KEYCARD_ZONE_ID"),
        ({"issuer": "https://a.example", "zone_id": "a"}, {}, "zone_id"),
        ({"issuer": "https://a.example", "zone_url": "https://a.example"}, {}, "zone_url"),
        ({"zone_id": "Not_Valid"}, {}, "zone_id"),
        ({}, {"KEYCARD_ZONE_ID": "a.b"}, "KEYCARD_ZONE_ID"),
        ({"issuer": "http://sts.example"}, {}, "issuer"),
        ({"issuer": "https://sts.example?x=1"}, {}, "issuer"),
        ({"issuer": "sts.example"}, {}, "issuer"),
        ({}, {"KEYCARD_ZONE_URL": "ftp://a.example"}, "KEYCARD_ZONE_URL"),
        ({"zone_id": "a", "base_url": "keycard.cloud"}, {}, "base_url"),
        ({"zone_id": "a", "base_url": "https://keycard.cloud/path"}, {}, "base_url"),
    ],
)
def test_resolve_issuer_invalid_names_setting(
    kwargs: dict[str, str], env: dict[str, str], setting: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_issuer(env=env, **kwargs)
    assert info.value.setting == setting
