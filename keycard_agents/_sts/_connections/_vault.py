"""The token vault: users' upstream tokens, encrypted at rest.

Each record is one user's grant for one connection, keyed by (the issuer the user came
from, the user's ``sub``, the connection: RFC 9493 ``iss_sub`` identity) and sealed with
AES-256-GCM (NIST SP 800-38D) under the current vault key. The record names its key id;
the associated data binds the ciphertext to its key id and to the (issuer, user,
connection) it belongs to, so a record copied onto another user's, or altered in any
byte, fails authentication. Keys live in ``<key_dir>/vault`` (one file per key, mode
0600, the file ``current`` names the one new records use); rotating adds a key and keeps
the old ones for reading, and a record read under an old key is written back under the
current one. Tokens never appear in logs, errors or reprs: :func:`thumbprint` is what
may be shown.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import anyio.to_thread
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keycard_agents._errors import ConfigurationError, KeycardError
from keycard_agents._json import loads_bounded
from keycard_agents._logs import get_logger

__all__ = [
    "FileVaultStore",
    "MemoryVaultStore",
    "StoredGrant",
    "TokenVault",
    "VaultError",
    "VaultKeyMissingError",
    "VaultKeys",
    "VaultRecordTamperedError",
    "VaultStore",
    "thumbprint",
]

logger = get_logger("keycard_agents.sts.vault")

_VERSION = 1
_NONCE_BYTES = 12
_KEY_BYTES = 32
_MAX_RECORD_BYTES = 64 * 1024
_KID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_CURRENT = "current"


def thumbprint(secret: str) -> str:
    """What may be logged about a token: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()[:12]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class VaultError(KeycardError):
    """A vault record cannot be used (its key is missing, or it fails authentication)."""


class VaultKeyMissingError(VaultError):
    """The record was sealed under a vault key this service does not have."""


class VaultRecordTamperedError(VaultError):
    """The record fails authentication: altered, moved from another user or connection,
    or sealed under a different key that has the same id."""


# ---------------------------------------------------------------------------- grants


@dataclass(frozen=True)
class StoredGrant:
    """What the vault keeps for a user and a connection; the repr hides the secrets."""

    kind: Literal["oauth", "static"]
    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    scopes: tuple[str, ...] = ()
    connected_at: float = 0.0
    refreshed_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at,
            "scopes": list(self.scopes),
            "connected_at": self.connected_at,
            "refreshed_at": self.refreshed_at,
        }

    @classmethod
    def from_json(cls, data: Any) -> StoredGrant:
        if not isinstance(data, dict):
            raise ValueError("not an object")
        kind = data.get("kind")
        token = data.get("access_token")
        refresh = data.get("refresh_token")
        expires_at = data.get("expires_at")
        scopes = data.get("scopes")
        if kind not in ("oauth", "static") or not isinstance(token, str):
            raise ValueError("kind or access_token")
        if refresh is not None and not isinstance(refresh, str):
            raise ValueError("refresh_token")
        if expires_at is not None and not isinstance(expires_at, (int, float)):
            raise ValueError("expires_at")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ValueError("scopes")
        return cls(
            kind=kind,
            access_token=token,
            refresh_token=refresh,
            expires_at=None if expires_at is None else float(expires_at),
            scopes=tuple(scopes),
            connected_at=float(data.get("connected_at") or 0.0),
            refreshed_at=(
                float(data["refreshed_at"])
                if isinstance(data.get("refreshed_at"), (int, float))
                else None
            ),
        )


# ---------------------------------------------------------------------------- stores


@runtime_checkable
class VaultStore(Protocol):
    """Where sealed records are kept, by record id (a hex SHA-256, safe as a file name).

    Records are opaque bytes already encrypted and authenticated; a store only keeps
    them. Implementations must be safe to call concurrently.
    """

    async def get(self, record_id: str) -> bytes | None: ...

    async def put(self, record_id: str, record: bytes) -> None: ...

    async def delete(self, record_id: str) -> bool: ...


class MemoryVaultStore:
    """Sealed records in a dict: for one process, lost on restart."""

    def __init__(self) -> None:
        self._records: dict[str, bytes] = {}

    async def get(self, record_id: str) -> bytes | None:
        return self._records.get(record_id)

    async def put(self, record_id: str, record: bytes) -> None:
        self._records[record_id] = record

    async def delete(self, record_id: str) -> bool:
        return self._records.pop(record_id, None) is not None

    def __len__(self) -> int:
        return len(self._records)


def _check_record_id(record_id: str) -> str:
    if len(record_id) != 64 or any(c not in "0123456789abcdef" for c in record_id):
        raise ValueError("a vault record id is a lower-case hex SHA-256")
    return record_id


class FileVaultStore:
    """One file per sealed record in ``directory`` (created with mode 0700).

    Writes go to a temporary file that replaces the record atomically; files are 0600.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, record_id: str) -> Path:
        return self.directory / f"{_check_record_id(record_id)}.json"

    async def get(self, record_id: str) -> bytes | None:
        path = self.path(record_id)

        def read() -> bytes | None:
            try:
                with path.open("rb") as handle:
                    return handle.read(_MAX_RECORD_BYTES + 1)
            except FileNotFoundError:
                return None

        return await anyio.to_thread.run_sync(read)

    async def put(self, record_id: str, record: bytes) -> None:
        path = self.path(record_id)
        await anyio.to_thread.run_sync(_write_atomically, path, record)

    async def delete(self, record_id: str) -> bool:
        path = self.path(record_id)

        def remove() -> bool:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            return True

        return await anyio.to_thread.run_sync(remove)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------- keys


class VaultKeys:
    """The vault's AES-256 keys: in ``directory`` (``<key_dir>/vault``), or in memory.

    In memory (``directory=None``) there is one random key for the life of the object:
    records sealed under it cannot outlive the process, so a file store needs a directory.
    """

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = None if directory is None else Path(directory)
        self._keys: dict[str, bytes] = {}
        self._current = ""
        if self.directory is None:
            self._current = _new_kid()
            self._keys[self._current] = secrets.token_bytes(_KEY_BYTES)
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._load()
        if not self._current:
            self.rotate()

    @property
    def current_kid(self) -> str:
        return self._current

    def current(self) -> tuple[str, bytes]:
        """The key new records are sealed under; a rotation by another process (``keycard-
        agents sts rotate-vault-key``) is picked up here (sealing is rare: connect, refresh)."""
        if self.directory is not None:
            try:
                named = (self.directory / _CURRENT).read_text(encoding="ascii").strip()
            except (OSError, UnicodeDecodeError):
                named = self._current
            if named != self._current:
                self._load()
        return self._current, self._keys[self._current]

    def get(self, kid: str) -> bytes | None:
        key = self._keys.get(kid)
        if key is None and self.directory is not None:
            self._load()  # another process may have rotated
            key = self._keys.get(kid)
        return key

    def rotate(self) -> str:
        """Make a new key the current one (older keys stay, for reading); returns its id."""
        kid = _new_kid()
        key = secrets.token_bytes(_KEY_BYTES)
        if self.directory is not None:
            _write_atomically(self.directory / f"{kid}.key", _b64(key).encode("ascii"))
            _write_atomically(self.directory / _CURRENT, kid.encode("ascii"))
        self._keys[kid] = key
        self._current = kid
        logger.info("vault key %s is now current", kid)
        return kid

    def _load(self) -> None:
        assert self.directory is not None
        for path in self.directory.glob("*.key"):
            kid = path.stem
            if kid in self._keys or not set(kid) <= _KID_CHARS:
                continue
            try:
                key = _unb64(path.read_text(encoding="ascii").strip())
            except (OSError, ValueError, binascii.Error) as exc:
                raise ConfigurationError(
                    f"vault key file {path} is unreadable ({type(exc).__name__})",
                    setting="key_dir",
                ) from exc
            if len(key) != _KEY_BYTES:
                raise ConfigurationError(
                    f"vault key file {path} does not hold a 256-bit key", setting="key_dir"
                )
            self._keys[kid] = key
        try:
            current = (self.directory / _CURRENT).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            current = ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"{self.directory / _CURRENT} is unreadable ({type(exc).__name__})",
                setting="key_dir",
            ) from exc
        if current and current not in self._keys:
            raise ConfigurationError(
                f"{self.directory / _CURRENT} names vault key {current!r}, which has no "
                f"{current}.key file: restore it, or remove 'current' to start a new key "
                "(records sealed under the missing key stay unreadable)",
                setting="key_dir",
            )
        self._current = current


def _new_kid() -> str:
    return "v" + secrets.token_hex(6)


# ---------------------------------------------------------------------------- vault


class TokenVault:
    """Seal, open, replace and forget users' grants for connections."""

    def __init__(self, *, keys: VaultKeys, store: VaultStore) -> None:
        self.keys = keys
        self.store = store

    @staticmethod
    def record_id(user_issuer: str, user: str, connection: str) -> str:
        canonical = json.dumps([user_issuer, user, connection], separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def rotate_key(self) -> str:
        """A new current vault key; records move to it as they are next read or written."""
        return self.keys.rotate()

    async def put(self, user_issuer: str, user: str, connection: str, grant: StoredGrant) -> None:
        record_id = self.record_id(user_issuer, user, connection)
        await self.store.put(record_id, self._seal(record_id, grant))

    async def get(self, user_issuer: str, user: str, connection: str) -> StoredGrant | None:
        """The user's grant, or ``None``; raises :class:`VaultError` for an unusable record."""
        record_id = self.record_id(user_issuer, user, connection)
        sealed = await self.store.get(record_id)
        if sealed is None:
            return None
        where = f"connection {connection!r} of user {user!r} (issuer {user_issuer})"
        grant, kid = self._open(record_id, sealed, where)
        if kid != self.keys.current_kid:
            await self.store.put(record_id, self._seal(record_id, grant))
            logger.info("vault record %s moved from key %s to the current key", record_id[:12], kid)
        return grant

    async def delete(self, user_issuer: str, user: str, connection: str) -> bool:
        return await self.store.delete(self.record_id(user_issuer, user, connection))

    def _seal(self, record_id: str, grant: StoredGrant) -> bytes:
        kid, key = self.keys.current()
        nonce = secrets.token_bytes(_NONCE_BYTES)
        plaintext = json.dumps(grant.to_json(), separators=(",", ":")).encode("utf-8")
        ciphertext = AESGCM(key).encrypt(nonce, plaintext, _aad(record_id, kid))
        record = {"v": _VERSION, "kid": kid, "nonce": _b64(nonce), "ct": _b64(ciphertext)}
        return json.dumps(record, separators=(",", ":")).encode("ascii")

    def _open(self, record_id: str, sealed: bytes, where: str) -> tuple[StoredGrant, str]:
        tampered = VaultRecordTamperedError(
            f"the vault record for {where} fails authentication: it was altered, copied from "
            "another user or connection, or sealed under a different key with the same id; "
            "it is not used (the user must connect again)"
        )
        try:
            if len(sealed) > _MAX_RECORD_BYTES:
                raise ValueError("too large")
            record = loads_bounded(sealed, max_depth=4)
            if not isinstance(record, dict) or record.get("v") != _VERSION:
                raise ValueError("not a version 1 record")
            kid, nonce_text, ct_text = record.get("kid"), record.get("nonce"), record.get("ct")
            if not (
                isinstance(kid, str) and isinstance(nonce_text, str) and isinstance(ct_text, str)
            ):
                raise ValueError("fields")
            nonce, ciphertext = _unb64(nonce_text), _unb64(ct_text)
        except (ValueError, binascii.Error):
            raise tampered from None
        if len(nonce) != _NONCE_BYTES:
            raise tampered
        key = self.keys.get(kid) if set(kid) <= _KID_CHARS else None
        if key is None:
            raise VaultKeyMissingError(
                f"the vault record for {where} is sealed under vault key {kid[:20]!r}, which "
                "is not in the key directory: restore that key file, or the user must "
                "connect again"
            )
        try:
            plaintext = AESGCM(key).decrypt(nonce, ciphertext, _aad(record_id, kid))
            grant = StoredGrant.from_json(loads_bounded(plaintext, max_depth=4))
        except (InvalidTag, ValueError):
            raise tampered from None
        return grant, kid


def _aad(record_id: str, kid: str) -> bytes:
    return f"keycard-agents vault v{_VERSION}\x00{record_id}\x00{kid}".encode("ascii")
