"""What replicas of the token service share, behind one Protocol (docs/replicas.md).

A :class:`SharedServiceState` carries the client-assertion replay set (RFC 7523 §3), the
authorization codes (single use, RFC 6749 §4.1.2), the device sign-ins in progress
(RFC 8628, :class:`DeviceBook`), the failed-attempt buckets, the
registered clients (RFC 7591), the vault's sealed records, the audit trail, and every
replica's public signing keys. ``[redis] url`` in the TOML configuration (or
``KEYCARD_REDIS_URL``) selects the Redis implementation. Without one, each replica keeps
its own state in memory, as before.

Keys: each replica signs with its own key set and publishes its public keys through the
shared state; every replica serves all of them at ``/jwks.json`` and verifies tokens
signed by any of them, so a token signed by replica 1 verifies wherever the JWKS comes
from. (Replicas may also share one ``key_dir``: then their keys are simply the same.)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from joserfc.jwk import Key

from keycard_agents._audit._sts_records import AuditStore
from keycard_agents._errors import ConfigurationError, InvalidTokenError, StoreUnavailableError
from keycard_agents._jose._keys import KeyResolver, StaticKeys
from keycard_agents._logs import get_logger
from keycard_agents._sts._client_store import RegisteredClient

if TYPE_CHECKING:
    from keycard_agents._sts._config import TokenServiceConfig

__all__ = [
    "DeviceBook",
    "PeerKeys",
    "SharedClientStore",
    "SharedServiceState",
    "shared_state_from",
]

logger = get_logger("keycard_agents.sts")

#: How often a replica republishes its keys and reads its peers'.
KEY_PUBLISH_INTERVAL = 5.0

#: The least time between two reads of the published keys that unknown ``kid`` values ask for.
UNKNOWN_KID_READ_INTERVAL = 1.0


class SealedRecords(Protocol):
    """The vault's record store (``VaultStore``), as the shared state provides it."""

    async def get(self, record_id: str) -> bytes | None: ...

    async def put(self, record_id: str, record: bytes) -> None: ...

    async def delete(self, record_id: str) -> bool: ...


class DeviceBook(Protocol):
    """The device sign-ins in progress (RFC 8628), by the SHA-256 digest of their device
    code and by their user code: in memory, or shared by the replicas.

    A sign-in is its ``record`` (opaque bytes: client, agent, scopes, user code), its
    expiry, the client that started it, the person's ``decision`` once made (opaque
    bytes) and its polling state (last poll, interval). Each method is one step, whole.
    """

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
        """Keep a new sign-in: ``"ok"``, ``"taken"`` (the user code is in use: draw
        another) or ``"full"`` (``max_pending`` sign-ins are waiting)."""
        ...

    async def device_find(self, user_code: str, *, now: float) -> tuple[str, bytes] | None:
        """The digest and record of the sign-in with ``user_code``, while it is open (not
        expired, no decision yet)."""
        ...

    async def device_decide(self, digest: str, decision: bytes, *, now: float) -> bool:
        """Record the person's decision; ``False`` when the sign-in is gone, expired or
        decided already (the first decision stands)."""
        ...

    async def device_poll(
        self, digest: str, client_id: str, *, now: float
    ) -> tuple[str, bytes, bytes] | None:
        """A poll by ``client_id``: ``None`` for no such sign-in of this client, else
        ``(outcome, record, detail)``: ``"expired"`` (forgotten now), ``"decided"`` (the
        decision as ``detail``, forgotten now: a decision is collected once), ``"slow"``
        (polled within the interval, which grows by 5 s; the new interval as ``detail``)
        or ``"pending"``."""
        ...


class SharedServiceState(DeviceBook, Protocol):
    """The state replicas of one token service share (Redis: ``RedisServiceState``).

    Every method raises :class:`StoreUnavailableError` when the store cannot be reached:
    the service then answers 503 (``temporarily_unavailable``) and accepts nothing.
    """

    def connected(self) -> AbstractAsyncContextManager[None]: ...

    async def first_use(self, client_id: str, jti: str, expires_at: float) -> bool: ...

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
    ) -> bool: ...

    async def take_code(self, digest: str) -> bytes | None: ...

    async def buckets(
        self, buckets: Sequence[tuple[str, int]], *, window: float, now: float, step: str
    ) -> float:
        """One step, taken at once, on the failed-attempt buckets ``(key, limit)`` (each
        ``limit`` attempts a ``window``): ``"wait"`` answers the seconds until every bucket
        has an attempt free (0: each has one now); ``"reserve"`` answers the same and, when
        it is 0, takes one attempt from every bucket (all or none); ``"give_back"`` returns
        one to every bucket."""
        ...

    async def get_value(self, kind: str, name: str) -> bytes | None: ...

    async def put_value(self, kind: str, name: str, value: bytes) -> None: ...

    async def publish_keys(
        self, issuer: str, jwks: list[dict[str, Any]], *, until: float
    ) -> None: ...

    async def published_keys(self, issuer: str, *, now: float) -> list[dict[str, Any]]: ...

    def vault_store(self) -> SealedRecords: ...

    def audit_store(self, *, sink: AuditStore | None, max_records: int) -> AuditStore: ...


def shared_state_from(config: TokenServiceConfig) -> SharedServiceState | None:
    """The Redis state named by ``[redis] url``, else by ``KEYCARD_REDIS_URL``, else none."""
    url = config.redis.url if config.redis is not None else None
    prefix = config.redis.prefix if config.redis is not None else None
    if url is None:
        url = os.environ.get("KEYCARD_REDIS_URL", "").strip() or None
        prefix = os.environ.get("KEYCARD_REDIS_PREFIX", "").strip() or None
    if url is None:
        return None
    try:  # the redis extra, imported only when Redis is configured
        from keycard_agents._redis._connection import RedisSettings
        from keycard_agents._redis._sts_state import RedisServiceState
    except ImportError as exc:
        raise ConfigurationError(
            "Redis is configured but coredis is not installed: install keycard-agents[redis]",
            setting="redis.url",
        ) from exc
    timeout = config.redis.timeout if config.redis is not None else 5.0
    return RedisServiceState(RedisSettings(url=url, prefix=prefix or "keycard", timeout=timeout))


class SharedClientStore:
    """Registered clients (RFC 7591) in the shared state: a ``ClientStore``."""

    def __init__(self, state: SharedServiceState) -> None:
        self._state = state

    async def add(self, client: RegisteredClient) -> None:
        raw = json.dumps(client.to_dict(), separators=(",", ":")).encode()
        await self._state.put_value("client", client.client_id, raw)

    async def get(self, client_id: str) -> RegisteredClient | None:
        raw = await self._state.get_value("client", client_id)
        if raw is None:
            return None
        return RegisteredClient.from_dict(json.loads(raw))


class PeerKeys:
    """The public keys the other replicas publish, as a :class:`KeyResolver` fallback.

    ``refresh`` reads them (the service does every few seconds). A token whose ``kid`` is
    unknown waits for a read that started after it arrived: one read at a time, at most
    one a second (:data:`UNKNOWN_KID_READ_INTERVAL`), shared by every token waiting for
    it. So a key a peer published before the token came is trusted, however many such
    tokens arrive together, and tokens with made-up ``kid`` values cost Redis one read a
    second.
    """

    def __init__(self, state: SharedServiceState, issuer: str, clock: Any) -> None:
        self._state = state
        self._issuer = issuer
        self._clock = clock
        self._jwks: list[dict[str, Any]] = []
        self._resolver = StaticKeys({issuer: {"keys": []}})
        self._reading = anyio.Lock()
        self._read_started = -math.inf  # anyio.current_time() when the last read began
        self._read_failed: str | None = None  # why that read failed, if it did

    @property
    def jwks(self) -> list[dict[str, Any]]:
        return list(self._jwks)

    async def refresh(self) -> None:
        """Read the keys the replicas published now (after any read in progress)."""
        async with self._reading:
            await self._read()

    async def _read(self) -> None:
        started = anyio.current_time()
        try:
            jwks = await self._state.published_keys(self._issuer, now=self._clock())
        except StoreUnavailableError as exc:
            self._read_started, self._read_failed = started, str(exc)
            raise
        self._read_started, self._read_failed = started, None
        if jwks != self._jwks:
            try:
                self._resolver = StaticKeys({self._issuer: {"keys": jwks}})
            except ConfigurationError:
                logger.warning("a replica published an unusable key set; ignored")
                return
            self._jwks = jwks

    def resolver(self, own: KeyResolver) -> KeyResolver:
        return _WithPeers(own, self)

    async def publishing(self, own_jwks: Any, retention: float) -> None:
        """Publish ``own_jwks()`` and read the peers' keys, every few seconds, forever."""
        while True:
            try:
                keys = list(own_jwks()["keys"])
                await self._state.publish_keys(
                    self._issuer, keys, until=self._clock() + retention + 2 * KEY_PUBLISH_INTERVAL
                )
                await self.refresh()
            except StoreUnavailableError:
                logger.warning("could not publish or read the replicas' keys (Redis away)")
            await anyio.sleep(KEY_PUBLISH_INTERVAL)

    async def _resolve(self, *, issuer: str, kid: str | None, alg: str) -> Key:
        if not self._resolver.known(issuer=issuer, kid=kid):
            await self._read_after(anyio.current_time())
        return await self._resolver.resolve(issuer=issuer, kid=kid, alg=alg)

    async def _read_after(self, asked: float) -> None:
        """Return once a read that started at or after ``asked`` has finished."""
        async with self._reading:
            if self._read_started >= asked:  # a read began after this caller asked
                if self._read_failed is not None:
                    raise StoreUnavailableError(self._read_failed)
                return
            wait = self._read_started + UNKNOWN_KID_READ_INTERVAL - anyio.current_time()
            await anyio.sleep(max(0.0, wait))
            await self._read()

    def _known(self, *, issuer: str, kid: str | None) -> bool:
        return self._resolver.known(issuer=issuer, kid=kid)


class _WithPeers:
    """This replica's own keys first, then those its peers published."""

    def __init__(self, own: KeyResolver, peers: PeerKeys) -> None:
        self._own = own
        self._peers = peers

    async def resolve(self, *, issuer: str, kid: str | None, alg: str) -> Key:
        if self._own.known(issuer=issuer, kid=kid):
            return await self._own.resolve(issuer=issuer, kid=kid, alg=alg)
        try:
            return await self._peers._resolve(issuer=issuer, kid=kid, alg=alg)
        except InvalidTokenError:
            return await self._own.resolve(issuer=issuer, kid=kid, alg=alg)

    def known(self, *, issuer: str, kid: str | None) -> bool:
        return self._own.known(issuer=issuer, kid=kid) or self._peers._known(issuer=issuer, kid=kid)


@asynccontextmanager
async def running_shared(
    state: SharedServiceState, peers: PeerKeys, own_jwks: Any, retention: float
) -> AsyncIterator[None]:
    """Connect the shared state and keep the replicas' keys published while it runs."""
    async with state.connected(), anyio.create_task_group() as group:
        await peers.refresh()
        group.start_soon(peers.publishing, own_jwks, retention)
        try:
            yield
        finally:
            group.cancel_scope.cancel()
