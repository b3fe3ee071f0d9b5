"""What replicas of the token service share on Redis (RFC 7523 §3, RFC 6749 §4.1.2).

- the client-assertion replay set: ``P:replay:{client}:jti-digest``, set only if absent
  (``SET NX``) until the assertion expires: of two replicas seeing one ``jti``, one wins;
- authorization codes: ``P:code:{digest}``, taken with ``GETDEL`` (single use across
  replicas), with per-user and per-client books of pending codes;
- failed-attempt buckets (the rate limiters): ``P:throttle:{key}``, one script per step;
- registered clients and vault records: plain keys, the values opaque to Redis;
- the audit trail: the stream ``P:audit`` plus per-txn and per-user indexes;
- the published public keys of every replica: ``P:jwks:{issuer}`` (kid → JWK, expiring).

Every call raises :class:`~keycard_agents._errors.StoreUnavailableError` when Redis is
away: the service answers 503 and accepts nothing it cannot check.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from coredis import PureToken

from keycard_agents._audit._log import select_records
from keycard_agents._audit._sts_records import AuditRecord, AuditStore
from keycard_agents._errors import StoreUnavailableError
from keycard_agents._logs import get_logger
from keycard_agents._redis._connection import RedisConnection, RedisSettings, open_redis

__all__ = ["RedisAuditStore", "RedisServiceState", "RedisVaultStore"]

logger = get_logger("keycard_agents.redis")

_BUCKET = """
local limit = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local level = limit
local found = redis.call('HMGET', KEYS[1], 'tokens', 'at')
if found[1] then
  level = math.min(limit, tonumber(found[1]) + math.max(0, now - tonumber(found[2])) * rate)
end
if level < 1 and ARGV[4] ~= 'give_back' then return tostring((1 - level) / rate) end
if ARGV[4] == 'wait' then return '0' end
if ARGV[4] == 'reserve' then
  level = level - 1
else
  level = level + 1
end
if level >= limit then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'tokens', tostring(level), 'at', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(limit / rate * 1000) + 1000)
end
return '0'
"""

# KEYS: the book (zset code digest -> expiry ms). ARGV: now ms, digest, expiry ms, limit,
# evict (1: drop the oldest to make room; 0: refuse). Returns the evicted digests, or
# false when full and not allowed to evict.
_BOOK = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local evicted = {}
while redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) do
  if ARGV[5] ~= '1' then return false end
  local oldest = redis.call('ZPOPMIN', KEYS[1])
  table.insert(evicted, oldest[1])
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return evicted
"""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


class RedisServiceState:
    """The token service's shared state on Redis (``TokenService(shared=...)``)."""

    def __init__(self, settings: RedisSettings | str) -> None:
        self.settings = settings if isinstance(settings, RedisSettings) else RedisSettings(settings)
        self._redis: RedisConnection | None = None
        self._scripts: dict[str, Any] = {}

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        async with open_redis(self.settings) as redis:
            self._redis = redis
            self._scripts = {
                "bucket": redis.client.register_script(_BUCKET),
                "book": redis.client.register_script(_BOOK),
            }
            try:
                yield
            finally:
                self._redis = None

    @property
    def redis(self) -> RedisConnection:
        if self._redis is None:
            raise StoreUnavailableError(
                "the token service's Redis is not connected (it connects in the app's lifespan)"
            )
        return self._redis

    # -- client assertions (RFC 7523 §3: a jti is used once) -------------------------------

    async def first_use(self, client_id: str, jti: str, expires_at: float) -> bool:
        """``True`` the first time (over all replicas) ``client_id`` presents ``jti``."""
        redis = self.redis
        key = redis.key("replay", _digest(client_id)[:32], _digest(jti))
        with redis.errors("checking a client assertion for replay"):
            return bool(
                await redis.client.set(
                    key, b"1", condition=PureToken.NX, pxat=int(expires_at * 1000) + 1
                )
            )

    # -- authorization codes (RFC 6749 §4.1.2: single use) ----------------------------------

    async def put_code(
        self,
        digest: str,
        value: bytes,
        *,
        expires_at: float,
        now: float,
        user: str,
        per_user: int,
        client: str,
        per_client: int,
    ) -> bool:
        """Keep a code; ``False`` when ``client`` has ``per_client`` pending already.

        A user over ``per_user`` pending codes loses the oldest (as in memory)."""
        redis = self.redis
        at, until = int(now * 1000), int(expires_at * 1000)
        with redis.errors("issuing an authorization code"):
            client_book = redis.key("code-client", _digest(client)[:32])
            if await self._scripts["book"](
                keys=[client_book], args=[at, digest, until, per_client, 0]
            ) in (None, False):
                return False
            user_book = redis.key("code-user", _digest(user)[:32])
            evicted = await self._scripts["book"](
                keys=[user_book], args=[at, digest, until, per_user, 1]
            )
            for old in evicted or ():
                old_digest = old.decode() if isinstance(old, bytes) else str(old)
                await redis.client.delete([redis.key("code", old_digest)])
            await redis.client.set(redis.key("code", digest), value, pxat=until + 1)
        return True

    async def take_code(self, digest: str) -> bytes | None:
        """The code's value, removed in the same step (one replica gets it, once)."""
        redis = self.redis
        with redis.errors("redeeming an authorization code"):
            value = await redis.client.getdel(redis.key("code", digest))
        return None if value is None else bytes(value)

    # -- failed-attempt buckets (the rate limiters) -----------------------------------------

    async def bucket(self, key: str, *, limit: int, window: float, now: float, step: str) -> float:
        """``step`` ``wait`` (the seconds until ``key`` may try, 0 now), ``reserve`` (the
        same, and take one attempt when it may) or ``give_back`` (return one)."""
        redis = self.redis
        with redis.errors("checking the rate limits"):
            answer = await self._scripts["bucket"](
                keys=[redis.key("throttle", _digest(key)[:32])],
                args=[limit, limit / window, now, step],
            )
        return float(answer.decode() if isinstance(answer, bytes) else answer)

    # -- opaque values (registered clients) -----------------------------------------------

    async def get_value(self, kind: str, name: str) -> bytes | None:
        redis = self.redis
        with redis.errors(f"reading a {kind}"):
            value = await redis.client.get(redis.key(kind, _digest(name)[:32]))
        return None if value is None else bytes(value)

    async def put_value(self, kind: str, name: str, value: bytes) -> None:
        redis = self.redis
        with redis.errors(f"writing a {kind}"):
            await redis.client.set(redis.key(kind, _digest(name)[:32]), value)

    # -- keys: every replica publishes its public keys -------------------------------------

    async def publish_keys(self, issuer: str, jwks: list[dict[str, Any]], *, until: float) -> None:
        redis = self.redis
        key = redis.key("jwks", _digest(issuer)[:32])
        with redis.errors("publishing the signing keys"):
            for jwk in jwks:
                kid = str(jwk.get("kid", ""))
                await redis.client.hset(
                    key, {kid: json.dumps({"jwk": jwk, "until": until}, separators=(",", ":"))}
                )

    async def published_keys(self, issuer: str, *, now: float) -> list[dict[str, Any]]:
        redis = self.redis
        key = redis.key("jwks", _digest(issuer)[:32])
        with redis.errors("reading the signing keys"):
            entries = await redis.client.hgetall(key)
        keys: list[dict[str, Any]] = []
        stale: list[Any] = []
        for kid, raw in entries.items():
            entry = json.loads(raw)
            if float(entry["until"]) <= now:
                stale.append(kid)
            elif isinstance(entry.get("jwk"), dict):
                keys.append(entry["jwk"])
        if stale:
            with redis.errors("forgetting retired signing keys"):
                await redis.client.hdel(key, stale)
        return keys

    def vault_store(self) -> RedisVaultStore:
        return RedisVaultStore(self)

    def audit_store(self, *, sink: AuditStore | None, max_records: int) -> RedisAuditStore:
        return RedisAuditStore(self, sink=sink, max_records=max_records)

    def __repr__(self) -> str:
        return f"RedisServiceState({self.settings.redacted_url!r})"


class RedisVaultStore:
    """Sealed vault records on Redis (a ``VaultStore``): opaque, already encrypted."""

    def __init__(self, state: RedisServiceState) -> None:
        self._state = state

    def _key(self, record_id: str) -> str:
        return self._state.redis.key("vault", record_id)

    async def get(self, record_id: str) -> bytes | None:
        redis = self._state.redis
        with redis.errors("reading the token vault"):
            value = await redis.client.get(self._key(record_id))
        return None if value is None else bytes(value)

    async def put(self, record_id: str, record: bytes) -> None:
        redis = self._state.redis
        with redis.errors("writing the token vault"):
            await redis.client.set(self._key(record_id), record)

    async def delete(self, record_id: str) -> bool:
        redis = self._state.redis
        with redis.errors("writing the token vault"):
            return bool(await redis.client.delete([self._key(record_id)]))


class RedisAuditStore:
    """The token service's audit trail as a Redis stream, shared by its replicas.

    ``P:audit`` holds the newest ``max_records`` records (approximately: ``MAXLEN ~``);
    ``P:audit-txn:{txn}`` and ``P:audit-user:{user}`` list the entries of one chain and
    one user. ``sink`` (a ``JsonlAuditStore``), when given, receives every record too: the
    long-term copy.
    """

    def __init__(
        self, state: RedisServiceState, *, sink: AuditStore | None, max_records: int
    ) -> None:
        self._state = state
        self._sink = sink
        self._max = max_records

    async def append(self, record: AuditRecord) -> None:
        redis = self._state.redis
        raw = record.model_dump_json(exclude_none=True)
        with redis.errors("writing the audit trail"):
            entry = await redis.client.xadd(
                redis.key("audit", "trail"),
                {"r": raw},
                trim_strategy=PureToken.MAXLEN,
                threshold=self._max,
                trim_operator=PureToken.APPROXIMATELY,
            )
            for kind, value in (("audit-txn", record.txn), ("audit-user", record.user)):
                if value:
                    index = redis.key(kind, _digest(value)[:32])
                    await redis.client.rpush(index, [entry])
                    await redis.client.ltrim(index, -self._max, -1)
        if self._sink is not None:
            await self._sink.append(record)

    async def query(
        self,
        *,
        txn: str | None = None,
        user: str | None = None,
        agent: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        redis = self._state.redis
        stream = redis.key("audit", "trail")
        with redis.errors("reading the audit trail"):
            if txn is not None or user is not None:
                kind, value = ("audit-txn", txn) if txn is not None else ("audit-user", user)
                assert value is not None
                ids = await redis.client.lrange(redis.key(kind, _digest(value)[:32]), 0, -1)
                entries = []
                for entry_id in ids:
                    entries.extend(await redis.client.xrange(stream, entry_id, entry_id))
            else:
                entries = list(await redis.client.xrange(stream, "-", "+"))
        records = [AuditRecord.model_validate_json(e.field_values[b"r"]) for e in entries]
        return select_records(
            records, txn=txn, user=user, agent=agent, since=since, until=until, limit=limit
        )
