"""The token vault: AES-GCM records bound to their user and connection, key rotation, and
the precise errors for tampered records and missing keys; connection configuration."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from sts_support import ISSUER, A, Clock, World, make_config

from keycard_agents import ConfigurationError
from keycard_agents.sts import (
    ConnectionConfig,
    FileVaultStore,
    MemoryVaultStore,
    StoredGrant,
    TokenService,
    TokenVault,
    VaultKeyMissingError,
    VaultKeys,
    VaultRecordTamperedError,
    load_config,
    parse_config,
)

pytestmark = pytest.mark.anyio

GRANT = StoredGrant(
    kind="oauth",
    access_token="upstream-access-0123456789",
    refresh_token="upstream-refresh-0123456789",
    expires_at=2_000_000_000.0,
    scopes=("repo",),
    connected_at=1.0,
)


def _vault(tmp_path: Path) -> TokenVault:
    return TokenVault(keys=VaultKeys(tmp_path / "keys"), store=FileVaultStore(tmp_path / "store"))


async def test_round_trip_and_the_file_holds_no_token(tmp_path: Path) -> None:
    vault = _vault(tmp_path)
    await vault.put("https://iss", "alice", "github", GRANT)
    assert await vault.get("https://iss", "alice", "github") == GRANT
    assert await vault.get("https://iss", "bob", "github") is None
    (record,) = (tmp_path / "store").iterdir()
    text = record.read_text()
    assert "upstream" not in text
    assert "alice" not in text
    assert "github" not in text
    assert json.loads(text)["kid"] == vault.keys.current_kid
    assert oct(record.stat().st_mode & 0o777) == "0o600"
    assert "upstream" not in repr(GRANT)
    assert await vault.delete("https://iss", "alice", "github") is True
    assert await vault.get("https://iss", "alice", "github") is None


async def test_a_tampered_record_is_refused(tmp_path: Path) -> None:
    vault = _vault(tmp_path)
    await vault.put("https://iss", "alice", "github", GRANT)
    (path,) = (tmp_path / "store").iterdir()
    record = json.loads(path.read_text())
    ct = bytearray(record["ct"].encode())
    ct[5] = ord("A") if ct[5] != ord("A") else ord("B")
    path.write_text(json.dumps({**record, "ct": ct.decode()}))
    with pytest.raises(VaultRecordTamperedError, match="fails authentication"):
        await vault.get("https://iss", "alice", "github")
    path.write_text("not json at all")
    with pytest.raises(VaultRecordTamperedError):
        await vault.get("https://iss", "alice", "github")


async def test_a_record_copied_to_another_user_is_refused(tmp_path: Path) -> None:
    vault = _vault(tmp_path)
    await vault.put("https://iss", "mallory", "github", GRANT)
    mallory = vault.store
    sealed = await mallory.get(TokenVault.record_id("https://iss", "mallory", "github"))
    assert sealed is not None
    await mallory.put(TokenVault.record_id("https://iss", "alice", "github"), sealed)
    with pytest.raises(VaultRecordTamperedError, match="copied from another user"):
        await vault.get("https://iss", "alice", "github")
    # The same user at another issuer is another user.
    await mallory.put(TokenVault.record_id("https://other", "mallory", "github"), sealed)
    with pytest.raises(VaultRecordTamperedError):
        await vault.get("https://other", "mallory", "github")


async def test_a_wrong_or_missing_key_is_named(tmp_path: Path) -> None:
    vault = _vault(tmp_path)
    await vault.put("https://iss", "alice", "github", GRANT)
    kid = vault.keys.current_kid
    # Another key under the same id: authentication fails.
    key_file = tmp_path / "keys" / f"{kid}.key"
    key_file.write_text("A" * 43)
    other = TokenVault(keys=VaultKeys(tmp_path / "keys"), store=vault.store)
    with pytest.raises(VaultRecordTamperedError, match="different key"):
        await other.get("https://iss", "alice", "github")
    # The key is gone: the error names it.
    os.unlink(key_file)
    (tmp_path / "keys" / "current").unlink()
    fresh = TokenVault(keys=VaultKeys(tmp_path / "keys"), store=vault.store)
    with pytest.raises(VaultKeyMissingError, match=kid):
        await fresh.get("https://iss", "alice", "github")


async def test_rotation_keeps_old_records_readable_and_moves_them(tmp_path: Path) -> None:
    vault = _vault(tmp_path)
    await vault.put("https://iss", "alice", "github", GRANT)
    old = vault.keys.current_kid
    new = vault.rotate_key()
    assert new != old
    reopened = _vault(tmp_path)  # another process sees the rotation
    assert reopened.keys.current_kid == new
    assert await reopened.get("https://iss", "alice", "github") == GRANT
    (path,) = (tmp_path / "store").iterdir()
    assert json.loads(path.read_text())["kid"] == new  # re-sealed under the current key


async def test_memory_store_and_in_memory_keys() -> None:
    vault = TokenVault(keys=VaultKeys(None), store=MemoryVaultStore())
    await vault.put("i", "u", "c", GRANT)
    assert await vault.get("i", "u", "c") == GRANT


def _connection(**fields: Any) -> dict[str, Any]:
    return {
        "name": "github",
        "resources": ["https://api.github.example/"],
        "authorization_endpoint": "https://gh.example/authorize",
        "token_endpoint": "https://gh.example/token",
        "client_id": "keycard",
        "client_secret_env": "GH_SECRET",
        **fields,
    }


def test_connection_configuration_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="client_secret"):
        parse_config({"connections": [_connection(client_secret="in clear")]})
    with pytest.raises(ConfigurationError, match="needs client_secret_env or client_secret_file"):
        parse_config({"connections": [_connection(client_secret_env=None)]})
    with pytest.raises(ConfigurationError, match="needs issuer"):
        parse_config({"connections": [_connection(token_endpoint=None)]})
    with pytest.raises(ConfigurationError, match="only for kind = 'oauth'"):
        parse_config({"connections": [_connection(kind="static")]})
    with pytest.raises(ConfigurationError, match="appears twice"):
        parse_config(
            {
                "resources": [{"resource": "https://api.github.example/"}],
                "connections": [_connection()],
            }
        )
    with pytest.raises(ConfigurationError, match=r"vault\.dir needs key_dir"):
        parse_config({"connections": [_connection()], "vault": {"dir": "v"}})
    config = parse_config({"connections": [_connection()]})
    assert config.connection_for_resource("https://api.github.example/") == ConnectionConfig(
        **_connection()
    )
    with pytest.raises(ConfigurationError, match="GH_SECRET"):
        config.connections[0].client_secret()
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    toml = tmp_path / "sts.toml"
    toml.write_text(
        'key_dir = "keys"\n[vault]\ndir = "vault"\n[[connections]]\nname = "gh"\n'
        'resources = ["https://api.github.example/"]\nissuer = "https://gh.example"\n'
        f'client_id = "k"\nclient_secret_file = "{secret_file}"\n'
    )
    loaded = load_config(toml)
    assert loaded.vault.dir == (tmp_path / "vault").resolve()
    assert loaded.connections[0].client_secret() == "from-a-file"


# -- the exchange with a vault record it cannot use -----------------------------------------


API = "https://api.github.example/"


async def test_exchange_with_a_tampered_record_is_a_precise_server_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GH_SECRET", "s3cret-upstream")
    config, keys = make_config()
    data = config.model_dump(mode="json", exclude_none=True)
    data["agents"][0]["dependencies"].append(API)
    data["connections"] = [_connection()]
    store = MemoryVaultStore()
    clock = Clock()
    service = TokenService(parse_config(data), clock=clock, vault_store=store)
    assert service.vault is not None
    await service.vault.put(ISSUER, "alice", "github", GRANT)
    user = service.issue_user_token("alice", audience=A, scopes=["read"])
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        w = World(service=service, client=client, clock=clock, keys=keys)
        ok = await w.exchange("a", user, API)
        assert ok.status_code == 200, ok.text
        assert ok.json()["access_token"] == GRANT.access_token
        assert ok.json()["expires_in"] == int(GRANT.expires_at or 0) - int(clock())
        record_id = TokenVault.record_id(ISSUER, "alice", "github")
        sealed = await store.get(record_id)
        assert sealed is not None
        await store.put(record_id, sealed.replace(b'"ct":"', b'"ct":"A'))
        bad = await w.exchange("a", user, API)
    assert bad.status_code == 500
    assert bad.json()["error"] == "server_error"
    assert "VaultRecordTamperedError" in bad.json()["error_description"]
    assert GRANT.access_token not in bad.text


async def test_file_vault_survives_a_restart_and_a_rotation_from_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from keycard_agents._cli import main

    monkeypatch.setenv("GH_SECRET", "s3cret-upstream")
    toml = tmp_path / "sts.toml"
    toml.write_text(
        'issuer = "https://sts.example"\nkey_dir = "keys"\n[vault]\ndir = "vault"\n'
        '[[connections]]\nname = "github"\nresources = ["https://api.github.example/"]\n'
        'authorization_endpoint = "https://gh.example/authorize"\n'
        'token_endpoint = "https://gh.example/token"\nclient_id = "k"\n'
        'client_secret_env = "GH_SECRET"\n'
    )
    first = TokenService(load_config(toml))
    assert first.vault is not None
    await first.vault.put("https://sts.example", "alice", "github", GRANT)
    old = first.vault.keys.current_kid
    assert main(["sts", "rotate-vault-key", "--config", str(toml)]) == 0
    assert "new vault key" in capsys.readouterr().out
    # The running service seals its next record under the rotated key ...
    await first.vault.put("https://sts.example", "bob", "github", GRANT)
    assert first.vault.keys.current_kid != old
    # ... and a restarted one reads both (the signing keys beside the vault are unharmed).
    again = TokenService(load_config(toml))
    assert again.vault is not None
    assert await again.vault.get("https://sts.example", "alice", "github") == GRANT
    assert await again.vault.get("https://sts.example", "bob", "github") == GRANT
    assert again.keys.current.kid == first.keys.current.kid
