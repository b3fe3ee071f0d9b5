"""Hashed client secrets and dev passwords (RFC 6749 §2.3.1 client passwords).

Secrets are stored as ``scrypt$N$r$p$salt$hash`` (RFC 7914 scrypt, base64url
fields) and compared in constant time. The plaintext never leaves this module.

This module is the one place that knows the hash: :func:`hash_secret`,
:func:`verify_secret` and :func:`dummy_hash_like` (what an unknown account is checked
against, so that its answer costs as much as a real one). Swapping the algorithm means
changing these three functions; callers (``._throttle.CredentialGuard``) only call them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

__all__ = ["check_secret_hash_format", "dummy_hash_like", "hash_secret", "verify_secret"]

_PREFIX = "scrypt"
_DEFAULT_N = 2**14
_MAX_N = 2**20
_R = 8
_P = 1
_DKLEN = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str, *, cost: int = _DEFAULT_N) -> str:
    """Hash a client secret or password for the token service configuration.

    ``cost`` is scrypt's N (a power of two). The result is safe to store in a
    config file: ``scrypt$16384$8$1$<salt>$<hash>``.
    """
    if not secret:
        raise ValueError("the secret is empty")
    if cost < 2 or cost > _MAX_N or cost & (cost - 1):
        raise ValueError(f"cost must be a power of two between 2 and {_MAX_N}")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=cost, r=_R, p=_P, dklen=_DKLEN, maxmem=2**27
    )
    return f"{_PREFIX}${cost}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _PREFIX:
        raise ValueError(
            "expected 'scrypt$N$r$p$salt$hash' as made by `keycard-agents sts hash-secret`"
        )
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError as exc:
        raise ValueError(
            "malformed secret hash: re-create it with `keycard-agents sts hash-secret`"
        ) from exc
    if n < 2 or n > _MAX_N or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError("secret hash parameters out of range")
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("secret hash salt or digest too short")
    return n, r, p, salt, digest


def check_secret_hash_format(stored: str) -> str:
    """Validate a stored hash's shape (used by the configuration models)."""
    _parse(stored)
    return stored


def verify_secret(secret: str, stored: str) -> bool:
    """Constant-time check of ``secret`` against a stored ``scrypt$...`` hash."""
    n, r, p, salt, digest = _parse(stored)
    try:
        candidate = hashlib.scrypt(
            secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=2**27
        )
    except (ValueError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(candidate, digest)


def dummy_hash_like(stored: Iterable[str]) -> str:
    """A hash of a random secret that costs as much to verify as the costliest of ``stored``.

    Checked against when the account is unknown (or has no secret of this kind), so that
    the answer takes as long as for a real account: response times do not tell which
    client ids or user names exist. With no stored hash, the default cost is used.
    """
    costs = [_parse(h)[0] for h in stored]
    return hash_secret(secrets.token_urlsafe(16), cost=max(costs, default=_DEFAULT_N))
