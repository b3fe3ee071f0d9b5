"""Users' upstream tokens for connections: issue, refresh, connect, disconnect, audit.

RFC 8693 §2.2.1 (the exchange response: the upstream access token, ``issued_token_type``
access_token, ``token_type`` Bearer, ``expires_in``), RFC 6749 §6 (refresh before expiry;
with RFC 9700 §4.14.2 rotation the new refresh token replaces the old one, so at most one
refresh per user and connection may run at a time), §5.2 (``error_uri``: where the user
connects when consent is needed; OpenID Connect Core §3.1.2.6 ``consent_required``),
RFC 7009 (revocation on disconnect). Every step leaves an audit record with identifiers
and a token thumbprint only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx

from keycard_agents._audit._sts_records import AuditRecord, AuditStore
from keycard_agents._errors import DelegationDeniedError, OAuthError
from keycard_agents._logs import get_logger
from keycard_agents._sts._connection_config import ConnectionConfig, VaultConfig
from keycard_agents._sts._policy import parse_scope

from ._upstream import UpstreamError, UpstreamProvider, UpstreamTokens
from ._vault import StoredGrant, TokenVault, VaultError, thumbprint

__all__ = ["ConnectionIssue", "ConnectionStats", "Connections", "ConsentRequiredError"]

logger = get_logger("keycard_agents.sts.connections")

TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
#: ``grant_type`` of the audit records that are not token requests.
EVENT_CONNECT = "connection:connect"
EVENT_DISCONNECT = "connection:disconnect"
EVENT_REFRESH = "connection:refresh"
#: ``expires_in`` when the provider sent none (RFC 6749 §5.1 makes it optional).
_UNKNOWN_LIFETIME = 300.0


class ConsentRequiredError(DelegationDeniedError):
    """The user has not connected the account (or must connect it again): the answer
    carries the connect page in ``error_uri``."""

    def __init__(self, description: str, *, connect_url: str) -> None:
        super().__init__("consent_required", description, error_uri=connect_url)


@dataclass
class ConnectionStats:
    """Counters for tests, benchmarks and operators."""

    issued: int = 0
    refreshes: int = 0
    refresh_failures: int = 0
    connects: int = 0
    disconnects: int = 0
    revocations: int = 0


@dataclass(frozen=True)
class ConnectionIssue:
    """What an exchange for a connection produced: the response and what to audit."""

    payload: dict[str, Any]
    scopes: tuple[str, ...]
    thumbprint: str


@dataclass(frozen=True)
class UserRef:
    """A user as the vault knows them: (issuer they came from, ``sub``) (RFC 9493)."""

    issuer: str
    sub: str


class Connections:
    """The connections of one token service, their providers, and the vault."""

    def __init__(
        self,
        *,
        connections: tuple[ConnectionConfig, ...],
        vault: TokenVault,
        settings: VaultConfig,
        issuer: str,
        audit: AuditStore,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vault = vault
        self.settings = settings
        self.issuer = issuer
        self._base = issuer.rstrip("/")
        self._audit = audit
        self._clock = clock
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()
        self.by_name = {c.name: c for c in connections}
        self.providers: dict[str, UpstreamProvider] = {
            c.name: UpstreamProvider(c, http=self._http, client_secret=c.client_secret())
            for c in connections
            if c.kind == "oauth"
        }
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}
        self.stats = ConnectionStats()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # -- URLs ------------------------------------------------------------------------------

    @property
    def callback_url(self) -> str:
        return f"{self._base}/connections/callback"

    def connect_url(self, connection: ConnectionConfig, *, txn: str | None = None) -> str:
        """The page where a signed-in user connects ``connection`` (``txn`` joins the
        connect audit record to the chain that needed it)."""
        url = f"{self._base}/connections/{connection.name}/connect"
        return f"{url}?{urlencode({'txn': txn})}" if txn else url

    # -- token exchange --------------------------------------------------------------------

    async def issue(
        self,
        connection: ConnectionConfig,
        *,
        user: UserRef,
        requested_scope: str | None,
        txn: str | None,
    ) -> ConnectionIssue:
        """The user's upstream access token for an exchange already allowed by policy."""
        grant = await self._grant(connection, user, txn)
        if grant is None:
            raise self._consent(connection, txn, "has not connected")
        granted = self._narrow(connection, grant, requested_scope)
        if grant.kind == "oauth" and self._needs_refresh(grant):
            grant = await self._refresh(connection, user, txn)
            granted = self._narrow(connection, grant, requested_scope)
        now = self._clock()
        if grant.kind == "static" or grant.expires_at is None:
            expires_in = int(connection.static_lifetime)
        else:
            expires_in = max(1, int(grant.expires_at - now))
        self.stats.issued += 1
        payload = {
            "access_token": grant.access_token,
            "issued_token_type": TOKEN_TYPE_ACCESS_TOKEN,
            "token_type": "Bearer",
            "expires_in": expires_in,
        }
        if granted:
            payload["scope"] = " ".join(granted)
        return ConnectionIssue(payload, granted, thumbprint(grant.access_token))

    def _consent(
        self, connection: ConnectionConfig, txn: str | None, why: str
    ) -> ConsentRequiredError:
        url = self.connect_url(connection, txn=txn)
        return ConsentRequiredError(
            f"the user {why} their {connection.title} account (connection "
            f"{connection.name!r}): send them to {url} to connect it, then retry",
            connect_url=url,
        )

    async def _grant(
        self, connection: ConnectionConfig, user: UserRef, txn: str | None
    ) -> StoredGrant | None:
        try:
            return await self.vault.get(user.issuer, user.sub, connection.name)
        except VaultError as exc:
            logger.error("vault record unusable: %s", exc)
            raise OAuthError(
                "server_error",
                f"the stored grant for connection {connection.name!r} cannot be opened "
                f"({type(exc).__name__}); see the token service log",
                status_code=500,
            ) from exc

    @staticmethod
    def _narrow(
        connection: ConnectionConfig, grant: StoredGrant, requested: str | None
    ) -> tuple[str, ...]:
        """requested ⊆ (what the user granted ∩ what the connection lets agents use)."""
        allowed = tuple(s for s in grant.scopes if not connection.scopes or s in connection.scopes)
        if requested is None:
            return allowed
        wanted = parse_scope(requested)
        if not wanted:
            raise OAuthError("invalid_request", "scope is empty: omit it or name at least one")
        extra = [s for s in wanted if s not in allowed]
        if extra:
            raise DelegationDeniedError(
                "invalid_scope",
                f"scope {' '.join(extra)!r} exceeds what the user granted for connection "
                f"{connection.name!r} ({' '.join(allowed) or 'none'}): request only those, or "
                "have the user connect again with more scopes",
            )
        return wanted

    def _needs_refresh(self, grant: StoredGrant) -> bool:
        if grant.expires_at is None:
            return False
        return grant.expires_at - self._clock() <= self.settings.refresh_margin

    def _lock(self, record_id: str) -> anyio.Lock:
        lock, users = self._locks.get(record_id, (None, 0))
        if lock is None:
            lock = anyio.Lock()
        self._locks[record_id] = (lock, users + 1)
        return lock

    def _release(self, record_id: str) -> None:
        lock, users = self._locks[record_id]
        if users <= 1:
            del self._locks[record_id]
        else:
            self._locks[record_id] = (lock, users - 1)

    async def _refresh(
        self, connection: ConnectionConfig, user: UserRef, txn: str | None
    ) -> StoredGrant:
        """One refresh at a time per (user, connection): the others wait for its result."""
        record_id = TokenVault.record_id(user.issuer, user.sub, connection.name)
        lock = self._lock(record_id)
        try:
            async with lock:
                grant = await self._grant(connection, user, txn)
                if grant is None:
                    raise self._consent(connection, txn, "has not connected")
                if not self._needs_refresh(grant):
                    return grant  # refreshed by the caller that held the lock before us
                return await self._refresh_now(connection, user, grant, txn)
        finally:
            self._release(record_id)

    async def _refresh_now(
        self, connection: ConnectionConfig, user: UserRef, grant: StoredGrant, txn: str | None
    ) -> StoredGrant:
        resource = connection.resources[0]
        if grant.refresh_token is None:
            await self.vault.delete(user.issuer, user.sub, connection.name)
            await self._record(
                EVENT_REFRESH,
                user,
                resource,
                txn,
                error="consent_required",
                reason="the access token expired and the provider issued no refresh token",
            )
            raise self._consent(connection, txn, "must reconnect (the access expired) to")
        provider = self.providers[connection.name]
        try:
            tokens = await provider.refresh(grant.refresh_token, scopes=grant.scopes)
        except UpstreamError as exc:
            self.stats.refresh_failures += 1
            if exc.grant_is_gone:
                await self.vault.delete(user.issuer, user.sub, connection.name)
                await self._record(
                    EVENT_REFRESH, user, resource, txn, error="consent_required", reason=str(exc)
                )
                raise self._consent(
                    connection,
                    txn,
                    "must reconnect (the provider revoked or expired the grant) to",
                ) from None
            await self._record(EVENT_REFRESH, user, resource, txn, error=exc.error, reason=str(exc))
            raise OAuthError(
                "temporarily_unavailable",
                f"cannot refresh the user's {connection.title} token: {exc}; retry later",
                status_code=503,
            ) from None
        now = self._clock()
        fresh = replace(
            grant,
            access_token=tokens.access_token,
            # RFC 6749 §6: a provider that sends no new refresh token keeps the old one valid.
            refresh_token=tokens.refresh_token or grant.refresh_token,
            expires_at=None if tokens.expires_in is None else now + tokens.expires_in,
            scopes=tokens.scopes or grant.scopes,
            refreshed_at=now,
        )
        await self.vault.put(user.issuer, user.sub, connection.name, fresh)
        self.stats.refreshes += 1
        await self._record(
            EVENT_REFRESH,
            user,
            resource,
            txn,
            scopes=fresh.scopes,
            jti=f"sha256:{thumbprint(fresh.access_token)}",
        )
        logger.info(
            "refreshed %s token of user %s: %s",
            connection.name,
            user.sub,
            thumbprint(fresh.access_token),
        )
        return fresh

    # -- connect / disconnect ----------------------------------------------------------------

    async def connected(
        self, connection: ConnectionConfig, user: UserRef, tokens: UpstreamTokens, txn: str | None
    ) -> None:
        now = self._clock()
        grant = StoredGrant(
            kind="oauth",
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            expires_at=None if tokens.expires_in is None else now + tokens.expires_in,
            scopes=tokens.scopes,
            connected_at=now,
        )
        await self.vault.put(user.issuer, user.sub, connection.name, grant)
        self.stats.connects += 1
        await self._record(
            EVENT_CONNECT,
            user,
            connection.resources[0],
            txn,
            scopes=tokens.scopes,
            jti=f"sha256:{thumbprint(tokens.access_token)}",
        )

    async def connected_static(
        self, connection: ConnectionConfig, user: UserRef, key: str, txn: str | None
    ) -> None:
        grant = StoredGrant(
            kind="static", access_token=key, scopes=connection.scopes, connected_at=self._clock()
        )
        await self.vault.put(user.issuer, user.sub, connection.name, grant)
        self.stats.connects += 1
        await self._record(
            EVENT_CONNECT,
            user,
            connection.resources[0],
            txn,
            scopes=connection.scopes,
            jti=f"sha256:{thumbprint(key)}",
        )

    async def status(self, connection: ConnectionConfig, user: UserRef) -> StoredGrant | None:
        """The user's grant for the connections page (``None``: not connected or unusable)."""
        try:
            return await self.vault.get(user.issuer, user.sub, connection.name)
        except VaultError as exc:
            logger.error("vault record unusable: %s", exc)
            return None

    async def disconnect(self, connection: ConnectionConfig, user: UserRef) -> str:
        """Revoke upstream (RFC 7009; refresh token first: it ends the whole grant), then
        forget. Returns what happened, for the page."""
        try:
            grant = await self.vault.get(user.issuer, user.sub, connection.name)
        except VaultError:
            grant = None  # unusable: nothing to revoke, forget it anyway
        outcome = "not connected"
        resource = connection.resources[0]
        if grant is not None and grant.kind == "oauth":
            provider = self.providers[connection.name]
            outcome = "disconnected (the provider has no revocation endpoint)"
            try:
                revoked = False
                if grant.refresh_token is not None:
                    revoked = await provider.revoke(grant.refresh_token, hint="refresh_token")
                try:
                    revoked = await provider.revoke(grant.access_token, hint="access_token") or (
                        revoked
                    )
                except UpstreamError as exc:
                    # RFC 7009 §2.2.1: a provider may not revoke self-contained access
                    # tokens; revoking the refresh token ended the grant.
                    if not (revoked and exc.error == "unsupported_token_type"):
                        raise
                if revoked:
                    self.stats.revocations += 1
                    outcome = "disconnected and revoked at the provider"
            except UpstreamError as exc:
                outcome = f"disconnected here; revocation at the provider failed ({exc.error})"
                await self._record(
                    EVENT_DISCONNECT, user, resource, None, error=exc.error, reason=str(exc)
                )
        elif grant is not None:
            outcome = "disconnected (the key is forgotten)"
        deleted = await self.vault.delete(user.issuer, user.sub, connection.name)
        if deleted:
            self.stats.disconnects += 1
            await self._record(EVENT_DISCONNECT, user, resource, None, reason=outcome)
        return outcome

    async def _record(
        self,
        event: str,
        user: UserRef,
        target: str,
        txn: str | None,
        *,
        error: str | None = None,
        reason: str | None = None,
        scopes: tuple[str, ...] | None = None,
        jti: str | None = None,
    ) -> None:
        await self._audit.append(
            AuditRecord(
                time=self._clock(),
                grant_type=event,
                decision="denied" if error is not None else "issued",
                txn=txn,
                user=user.sub,
                user_issuer=user.issuer,
                target=target,
                scopes_granted=scopes if error is None else None,
                error=error,
                reason=reason,
                jti=jti if error is None else None,
            )
        )
