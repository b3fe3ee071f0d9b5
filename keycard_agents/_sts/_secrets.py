"""Hashed client secrets and passwords (RFC 6749 §2.3.1 client passwords).

Two kinds of secret, two hashes, one home:

- **Client secrets** are generated, at least 256 bits of randomness
  (:func:`new_client_secret`; ``keycard-agents sts hash-secret --generate``). A slow KDF
  adds nothing against guessing 2**256 values, only cost on every token request, so they
  are stored as ``sha256$<digest>`` (SHA-256 of the UTF-8 secret, base64url) and checked at
  the speed of a hash lookup, in constant time. :func:`hash_client_secret` refuses a
  secret that does not look like 256 random bits (:func:`secret_strength_problem`).
- **Passwords** people choose (``[[users]]``, and any client secret hashed the old way)
  keep ``scrypt$N$r$p$salt$hash`` (RFC 7914 scrypt), checked off the event loop.

:func:`verify_secret` accepts both; :func:`dummy_hash_like` is what an unknown account is
checked against, so that its answer costs as much as a real one. The plaintext never
leaves this module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
from collections.abc import Iterable

__all__ = [
    "MIN_CLIENT_SECRET_BITS",
    "WeakSecretError",
    "check_password_hash_format",
    "check_secret_hash_format",
    "dummy_hash_like",
    "dummy_is_fast",
    "hash_client_secret",
    "hash_secret",
    "is_fast_hash",
    "new_client_secret",
    "secret_strength_problem",
    "verify_secret",
]

_PREFIX = "scrypt"
_FAST = "sha256"
_DEFAULT_N = 2**14
_MAX_N = 2**20
_R = 8
_P = 1
_DKLEN = 32
#: The least a client secret must carry to be stored with a fast hash.
MIN_CLIENT_SECRET_BITS = 256
_MAX_SECRET = 1024


class WeakSecretError(ValueError):
    """A client secret too guessable to be stored with a fast hash."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_client_secret() -> str:
    """A new client secret: 256 random bits, base64url (43 characters).

    Drawn again in the rare case (about 1 in 10,000) that the draw uses too few kinds of
    character for :func:`secret_strength_problem` to credit it with 256 bits.
    """
    while True:
        secret = secrets.token_urlsafe(32)
        if secret_strength_problem(secret) is None:
            return secret


def _alphabet(secret: str) -> int:
    """The size of the smallest usual alphabet ``secret`` is drawn from."""
    if all(c in "0123456789abcdef" for c in secret) or all(c in "0123456789ABCDEF" for c in secret):
        return 16
    size = 0
    for chars, count in (
        ("abcdefghijklmnopqrstuvwxyz", 26),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 26),
        ("0123456789", 10),
    ):
        if any(c in chars for c in secret):
            size += count
    if any(not c.isascii() for c in secret):
        size += 128
    elif any(not c.isalnum() for c in secret):
        size += 33  # printable ASCII punctuation and space
    return size


def _unit(secret: str) -> int:
    """The length of the unit ``secret`` repeats (``abcabcab``: 3), or its own length.

    The shortest period by the KMP failure function, when the secret holds it at least
    twice; a random string whose end happens to match its start is not a repetition.
    """
    fail = [0] * len(secret)
    k = 0
    for i in range(1, len(secret)):
        while k and secret[i] != secret[k]:
            k = fail[k - 1]
        if secret[i] == secret[k]:
            k += 1
        fail[i] = k
    period = len(secret) - fail[-1] if secret else 0
    return period if 2 * period <= len(secret) else len(secret)


def secret_strength_problem(secret: str) -> str | None:
    """Why ``secret`` cannot be a client secret stored with a fast hash (``None``: it can).

    A conservative estimate, not a proof of randomness: the length of its shortest
    repeating unit times log2 of the alphabet it uses must reach
    :data:`MIN_CLIENT_SECRET_BITS`, and it must use a quarter of that alphabet. It catches
    short, repeated and one-letter secrets; a long phrase of words passes it, which is why
    secrets are best generated (:func:`new_client_secret`).
    """
    if not secret:
        return "the secret is empty"
    if len(secret) > _MAX_SECRET:
        return f"the secret is longer than {_MAX_SECRET} characters"
    alphabet = _alphabet(secret)
    bits = _unit(secret) * math.log2(alphabet)
    distinct = len(set(secret))
    if bits < MIN_CLIENT_SECRET_BITS or distinct < min(alphabet, len(secret)) / 4:
        shown = min(bits, distinct * math.log2(alphabet))
        return (
            f"the secret carries about {shown:.0f} bits of entropy by its length and "
            f"alphabet; a client secret needs at least {MIN_CLIENT_SECRET_BITS} (43 random "
            "base64url characters, or 64 hex digits)"
        )
    return None


def hash_client_secret(secret: str) -> str:
    """Hash a generated client secret for ``secret_hash``: ``sha256$<digest>``.

    Raises :class:`WeakSecretError` when the secret is too guessable for a fast hash
    (:func:`secret_strength_problem`): generate one with :func:`new_client_secret`, or
    hash a chosen password with :func:`hash_secret` (scrypt).
    """
    problem = secret_strength_problem(secret)
    if problem is not None:
        raise WeakSecretError(problem)
    return f"{_FAST}${_b64(hashlib.sha256(secret.encode('utf-8')).digest())}"


def is_fast_hash(stored: str) -> bool:
    """Whether ``stored`` is a fast ``sha256$`` client-secret hash (else scrypt)."""
    return stored.startswith(_FAST + "$")


def hash_secret(secret: str, *, cost: int = _DEFAULT_N) -> str:
    """Hash a password (or a secret people chose) with scrypt, for the configuration.

    ``cost`` is scrypt's N (a power of two). The result is safe to store in a
    config file: ``scrypt$16384$8$1$<salt>$<hash>``. Generated client secrets use
    :func:`hash_client_secret` instead.
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
            "expected 'sha256$<digest>' or 'scrypt$N$r$p$salt$hash' as made by "
            "`keycard-agents sts hash-secret`"
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


def _parse_fast(stored: str) -> bytes:
    prefix, _, text = stored.partition("$")
    try:
        digest = _unb64(text)
    except ValueError as exc:
        raise ValueError(
            "malformed secret hash: re-create it with `keycard-agents sts hash-secret`"
        ) from exc
    if prefix != _FAST or len(digest) != 32 or _b64(digest) != text:
        raise ValueError(
            "malformed sha256$ hash: expected 43 base64url characters after 'sha256$', as "
            "made by `keycard-agents sts hash-secret`"
        )
    return digest


def check_secret_hash_format(stored: str) -> str:
    """Validate the shape of a stored client-secret or token hash (fast or scrypt)."""
    if is_fast_hash(stored):
        _parse_fast(stored)
    else:
        _parse(stored)
    return stored


def check_password_hash_format(stored: str) -> str:
    """Validate a stored password hash: scrypt only (people choose passwords)."""
    if is_fast_hash(stored):
        raise ValueError(
            "a password needs a scrypt hash (people choose passwords): make one with "
            "`keycard-agents sts hash-secret --password`; sha256$ hashes are for generated "
            "client secrets"
        )
    _parse(stored)
    return stored


def verify_secret(secret: str, stored: str) -> bool:
    """Constant-time check of ``secret`` against a stored ``sha256$`` or ``scrypt$`` hash."""
    if is_fast_hash(stored):
        expected = _parse_fast(stored)
        try:
            candidate = hashlib.sha256(secret.encode("utf-8")).digest()
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(candidate, expected)
    n, r, p, salt, digest = _parse(stored)
    try:
        candidate = hashlib.scrypt(
            secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=2**27
        )
    except (ValueError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(candidate, digest)


def dummy_is_fast(stored: Iterable[str]) -> bool:
    """Whether :func:`dummy_hash_like` of ``stored`` is a fast hash (see there)."""
    return any(is_fast_hash(h) for h in stored)


def dummy_hash_like(stored: Iterable[str]) -> str:
    """A hash of a random secret that costs as much to verify as a real one of ``stored``.

    Checked against when the account is unknown (or has no secret of this kind), so that
    the answer takes as long as for a real account: response times do not tell which
    client ids or user names exist. When any of ``stored`` is a fast client-secret hash,
    the dummy is fast too (unknown clients answer like the generated-secret clients, and a
    flood of unknown ids costs no scrypt); else it costs as much as the costliest scrypt
    hash (the default cost with none).
    """
    hashes = list(stored)
    if dummy_is_fast(hashes):
        return hash_client_secret(new_client_secret())
    costs = [_parse(h)[0] for h in hashes]
    return hash_secret(secrets.token_urlsafe(16), cost=max(costs, default=_DEFAULT_N))
