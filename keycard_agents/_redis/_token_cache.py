"""The exchanged-token cache on Redis, shared by the replicas of one agent, encrypted.

Each entry is ``P:token:{K}`` where ``K`` is the exchange client's digest of the issuer,
client, grant, subject token, target and scopes (no token appears in a key). The value
is AES-256-GCM ciphertext of the token and its metadata under the operator's cache key
(``KEYCARD_REDIS_CACHE_KEY``), with ``K`` as associated data, so an entry cannot be
read without the key nor moved to another key; it expires when the token must be
refreshed. Coalescing of identical exchanges is per replica: replicas missing the same
token at the same instant each exchange once, and the later write wins.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keycard_agents._errors import ConfigurationError
from keycard_agents._logs import get_logger
from keycard_agents._oauth._exchange import ExchangedToken
from keycard_agents._redis._connection import (
    RedisConnection,
    RedisSettings,
    open_redis,
    settings_from_env,
)

__all__ = ["CACHE_KEY_ENV", "RedisTokenCache"]

logger = get_logger("keycard_agents.redis")

#: The environment variable holding the cache's encryption key (32 bytes, base64url).
CACHE_KEY_ENV = "KEYCARD_REDIS_CACHE_KEY"


def _decode_key(text: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigurationError(
            f"{CACHE_KEY_ENV} must be 32 random bytes in base64url, e.g. the output of: "
            'python -c "import base64, secrets; '
            'print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"',
            setting=CACHE_KEY_ENV,
        )
    return key


class RedisTokenCache:
    """A ``SharedTokenCache`` on Redis: ``TokenExchangeClient(token_cache=...)``.

    ``key`` is the 32-byte AES-256-GCM key every replica of the agent shares (from
    :meth:`from_env`: ``KEYCARD_REDIS_CACHE_KEY``). Entries it cannot decrypt (another
    key, tampering) are ignored: the replica exchanges instead.
    """

    def __init__(self, settings: RedisSettings | str, *, key: bytes) -> None:
        self.settings = settings if isinstance(settings, RedisSettings) else RedisSettings(settings)
        if len(key) != 32:
            raise ConfigurationError("the token cache key must be 32 bytes", setting=CACHE_KEY_ENV)
        self._aead = AESGCM(key)
        self._redis: RedisConnection | None = None

    @classmethod
    def from_env(cls) -> RedisTokenCache:
        settings = settings_from_env()
        if settings is None:
            raise ConfigurationError("KEYCARD_REDIS_URL is not set", setting="KEYCARD_REDIS_URL")
        return cls(settings, key=_decode_key(os.environ.get(CACHE_KEY_ENV, "")))

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        async with open_redis(self.settings) as redis:
            self._redis = redis
            try:
                yield
            finally:
                self._redis = None

    def _key(self, key: str) -> str:
        assert self._redis is not None
        return self._redis.key("token", key)

    async def get(self, key: str) -> ExchangedToken | None:
        if self._redis is None:
            return None
        with self._redis.errors("reading the token cache"):
            blob = await self._redis.client.get(self._key(key))
        if not blob or len(blob) < 13:
            return None
        try:
            plain = self._aead.decrypt(blob[:12], blob[12:], key.encode())
        except InvalidTag:
            logger.warning("a cached token could not be decrypted (another key?); ignored")
            return None
        data = json.loads(plain)
        return ExchangedToken(
            access_token=data["t"],
            expires_at=float(data["e"]),
            scopes=tuple(data["s"]),
            resource=data["r"],
            issued_token_type=data["i"],
            token_type=data["y"],
            expires_in=data["n"],
        )

    async def put(self, key: str, token: ExchangedToken, *, ttl: float) -> None:
        if self._redis is None or ttl <= 0:
            return
        plain = json.dumps(
            {
                "t": token.access_token,
                "e": token.expires_at,
                "s": list(token.scopes),
                "r": token.resource,
                "i": token.issued_token_type,
                "y": token.token_type,
                "n": token.expires_in,
            },
            separators=(",", ":"),
        ).encode()
        nonce = secrets.token_bytes(12)
        blob = nonce + self._aead.encrypt(nonce, plain, key.encode())
        with self._redis.errors("writing the token cache"):
            await self._redis.client.set(self._key(key), blob, px=max(int(ttl * 1000), 1))

    def __repr__(self) -> str:
        return f"RedisTokenCache({self.settings.redacted_url!r})"
