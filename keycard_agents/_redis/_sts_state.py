"""What replicas of the token service share on Redis (RFC 7523 §3, RFC 6749 §4.1.2).

- the client-assertion replay set: ``P:replay:{client}:jti-digest``, set only if absent
  (``SET NX``) until the assertion expires: of two replicas seeing one ``jti``, one wins;
- authorization codes: ``P:code:{digest}``, taken with ``GETDEL`` (single use across
  replicas), with per-user and per-client books of pending codes;
- device sign-ins (RFC 8628): ``P:device:{devices}:digest`` (a hash: the record, expiry,
  client, polling state and, once made, the person's decision), ``P:device-user:{devices}:
  user-code`` and the bounded set ``P:device-pending:{devices}``; starting, deciding and
  polling are one script each;
- failed-attempt buckets (the rate limiters): ``P:throttle:{buckets}:key-digest``, all
  the buckets of one check in one script (one round trip, all or none);
- registered clients and vault records: plain keys, the values opaque to Redis;
- the audit trail: the stream ``P:audit:{trail}`` plus per-txn and per-user index lists
  (``P:audit-txn:{trail}:digest``), written by one script;
- the published public keys of every replica: ``P:jwks:{issuer}`` (kid → JWK, expiring).

Every call raises :class:`~keycard_agents._errors.StoreUnavailableError` when Redis is
away: the service answers 503 and accepts nothing it cannot check.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Sequence
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

# KEYS: the buckets (hash: tokens, at). ARGV: step, now, window, then each bucket's limit.
# ``wait`` answers the longest wait ('0': every bucket has an attempt free); ``reserve``
# answers the same and, when it is '0', takes one attempt from every bucket (all or none);
# ``give_back`` returns one to every bucket.
_BUCKETS = """
local step = ARGV[1]
local now = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local levels = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 + i])
  local level = limit
  local found = redis.call('HMGET', key, 'tokens', 'at')
  if found[1] then
    local refill = math.max(0, now - tonumber(found[2])) * limit / window
    level = math.min(limit, tonumber(found[1]) + refill)
  end
  levels[i] = level
  if level < 1 then wait = math.max(wait, (1 - level) * window / limit) end
end
if step == 'wait' or (step == 'reserve' and wait > 0) then return tostring(wait) end
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 + i])
  local level = levels[i] + 1
  if step == 'reserve' then level = levels[i] - 1 end
  if level >= limit then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 'tokens', tostring(level), 'at', tostring(now))
    redis.call('PEXPIRE', key, math.ceil(window * 1000) + 1000)
  end
end
return '0'
"""

# KEYS: the audit stream, then the index lists of the record's chain and user. ARGV: the
# record (JSON), the number of records kept. Returns the stream entry's id.
_AUDIT = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'r', ARGV[1])
for i = 2, #KEYS do
  redis.call('RPUSH', KEYS[i], id)
  redis.call('LTRIM', KEYS[i], -tonumber(ARGV[2]), -1)
end
return id
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

# The device sign-ins (RFC 8628), every key tagged ``{devices}`` (one Cluster slot).
# KEYS: the zset of pending digests by expiry, the sign-in's hash, its user-code key.
# ARGV: now ms, expiry ms, most pending, digest, record, client, interval.
_DEVICE_START = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 'full' end
if not redis.call('SET', KEYS[3], ARGV[4], 'NX', 'PXAT', ARGV[2]) then return 'taken' end
redis.call('HSET', KEYS[2], 'p', ARGV[5], 'e', ARGV[2], 'c', ARGV[6], 'i', ARGV[7])
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])  -- the newest sign-in ends last (one lifetime)
return 'ok'
"""

# KEYS: the sign-in's hash. ARGV: now ms, the decision. 1 when recorded (first one only).
_DEVICE_DECIDE = """
local found = redis.call('HMGET', KEYS[1], 'e', 'd')
if not found[1] or tonumber(found[1]) <= tonumber(ARGV[1]) or found[2] then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[2])
return 1
"""

# KEYS: the sign-in's hash, the zset of pending digests. ARGV: now ms, client, digest.
# Returns false (none of this client's), or {outcome, record, detail}.
_DEVICE_POLL = """
local f = redis.call('HMGET', KEYS[1], 'p', 'e', 'c', 'd', 'l', 'i')
if not f[1] or f[3] ~= ARGV[2] then return false end
local now = tonumber(ARGV[1])
if tonumber(f[2]) <= now then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {'expired', f[1], ''}
end
if f[4] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {'decided', f[1], f[4]}
end
local interval = tonumber(f[6])
redis.call('HSET', KEYS[1], 'l', ARGV[1])
if f[5] and now - tonumber(f[5]) < interval * 1000 then
  interval = interval + 5
  redis.call('HSET', KEYS[1], 'i', tostring(interval))
  return {'slow', f[1], tostring(interval)}
end
return {'pending', f[1], ''}
"""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def _indexed(record: AuditRecord) -> list[tuple[str, str]]:
    """The indexes that list ``record``: its chain's and its user's, when it has them."""
    return [
        (kind, value)
        for kind, value in (("audit-txn", record.txn), ("audit-user", record.user))
        if value
    ]


def _index_key(redis: RedisConnection, kind: str, value: str) -> str:
    """An index list of the audit trail: tagged ``{trail}`` like the stream, so that one
    script appends to the stream and both indexes on one Cluster slot."""
    return redis.key(kind, "trail", _digest(value)[:32])


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
                "buckets": redis.client.register_script(_BUCKETS),
                "audit": redis.client.register_script(_AUDIT),
                "book": redis.client.register_script(_BOOK),
                "device_start": redis.client.register_script(_DEVICE_START),
                "device_decide": redis.client.register_script(_DEVICE_DECIDE),
                "device_poll": redis.client.register_script(_DEVICE_POLL),
            }
            try:
                yield
            finally:
                self._redis = None

    def script(self, name: str) -> Any:
        """The registered script ``name`` (``StoreUnavailableError`` when not connected)."""
        _ = self.redis  # not connected: the error that explains it
        return self._scripts[name]

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
            if await self.script("book")(
                keys=[client_book], args=[at, digest, until, per_client, 0]
            ) in (None, False):
                return False
            user_book = redis.key("code-user", _digest(user)[:32])
            evicted = await self.script("book")(
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

    # -- device sign-ins (RFC 8628), every key on the slot {devices} ------------------------

    def _pending_key(self) -> str:
        return self.redis.key("device-pending", "devices")

    def _device_key(self, digest: str) -> str:
        return self.redis.key("device", "devices", digest)

    def _user_code_key(self, user_code: str) -> str:
        return self.redis.key("device-user", "devices", user_code)

    async def device_start(
        self,
        digest: str,
        user_code: str,
        client_id: str,
        record: bytes,
        *,
        expires_at: float,
        now: float,
        interval: float,
        max_pending: int,
    ) -> str:
        with self.redis.errors("starting a device sign-in"):
            answer = await self.script("device_start")(
                keys=[
                    self._pending_key(),
                    self._device_key(digest),
                    self._user_code_key(user_code),
                ],
                args=[
                    int(now * 1000),
                    int(expires_at * 1000),
                    max_pending,
                    digest,
                    record,
                    client_id,
                    repr(float(interval)),
                ],
            )
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    async def device_find(self, user_code: str, *, now: float) -> tuple[str, bytes] | None:
        redis = self.redis
        with redis.errors("reading a device sign-in"):
            digest = await redis.client.get(self._user_code_key(user_code))
            if digest is None:
                return None
            text = digest.decode() if isinstance(digest, bytes) else str(digest)
            found = await redis.client.hmget(self._device_key(text), ["p", "e", "d"])
        record, expires, decision = found
        if record is None or expires is None or int(expires) <= now * 1000 or decision:
            return None
        return text, bytes(record)

    async def device_decide(self, digest: str, decision: bytes, *, now: float) -> bool:
        with self.redis.errors("recording a device sign-in"):
            answer = await self.script("device_decide")(
                keys=[self._device_key(digest)], args=[int(now * 1000), decision]
            )
        return bool(int(answer))

    async def device_poll(
        self, digest: str, client_id: str, *, now: float
    ) -> tuple[str, bytes, bytes] | None:
        with self.redis.errors("polling a device sign-in"):
            answer = await self.script("device_poll")(
                keys=[self._device_key(digest), self._pending_key()],
                args=[int(now * 1000), client_id, digest],
            )
        if not answer:
            return None
        outcome, record, detail = (
            bytes(part) if isinstance(part, bytes) else str(part).encode() for part in answer
        )
        return outcome.decode(), record, detail

    # -- failed-attempt buckets (the rate limiters) -----------------------------------------

    async def buckets(
        self, buckets: Sequence[tuple[str, int]], *, window: float, now: float, step: str
    ) -> float:
        """One ``step`` on the buckets ``(key, limit)``, in one script (see
        :meth:`SharedServiceState.buckets`); every bucket key has the hash tag
        ``{buckets}``, so the script runs on one Cluster slot."""
        redis = self.redis
        with redis.errors("checking the rate limits"):
            answer = await self.script("buckets")(
                keys=[redis.key("throttle", "buckets", _digest(key)[:32]) for key, _ in buckets],
                args=[step, now, window, *(limit for _, limit in buckets)],
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
        indexes = [_index_key(redis, kind, value) for kind, value in _indexed(record)]
        with redis.errors("writing the audit trail"):
            await self._state.script("audit")(
                keys=[redis.key("audit", "trail"), *indexes], args=[raw, self._max]
            )
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
                ids = await redis.client.lrange(_index_key(redis, kind, value), 0, -1)
                entries = []
                for entry_id in ids:
                    entries.extend(await redis.client.xrange(stream, entry_id, entry_id))
            else:
                entries = list(await redis.client.xrange(stream, "-", "+"))
        records = [AuditRecord.model_validate_json(e.field_values[b"r"]) for e in entries]
        return select_records(
            records, txn=txn, user=user, agent=agent, since=since, until=until, limit=limit
        )
