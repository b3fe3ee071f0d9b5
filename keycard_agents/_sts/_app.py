"""The embedded token service: a FastAPI app issuing delegated tokens.

RFC 8414 §2-§3 (authorization server metadata), RFC 7517 §5 (the JWK Set at
``/jwks.json``), RFC 6749 / RFC 8693 / RFC 7636 through the endpoints of
:mod:`._grants` and :mod:`._authorize`. Keys come from a
:class:`~keycard_agents._jose._keys.KeyStore`; a rotation made by another process
(``keycard-agents sts rotate-key``) is picked up on the next request.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from joserfc.jwk import Key
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from keycard_agents._audit._sts_records import AuditStore, JsonlAuditStore, MemoryAuditStore
from keycard_agents._audit._trail import AuditTrail
from keycard_agents._errors import ConfigurationError, InvalidTokenError, StoreUnavailableError
from keycard_agents._jose._keys import KeyResolver, KeyStore, StaticKeys
from keycard_agents._logs import get_logger
from keycard_agents._oauth._jwks import JWKSCache, TrustedIssuer
from keycard_agents._oauth._urls import AUTHORIZATION_SERVER_WELL_KNOWN
from keycard_agents._sts._auditpage import AuditPage
from keycard_agents._sts._authorize import LoginFlow
from keycard_agents._sts._client_store import (
    ClientStore,
    JsonlClientStore,
    MemoryClientStore,
    PublicClients,
)
from keycard_agents._sts._clientauth import ClientAuthenticator
from keycard_agents._sts._config import RegisteredAgent, TokenServiceConfig
from keycard_agents._sts._connections._broker import Connections
from keycard_agents._sts._connections._pages import ConnectionPages
from keycard_agents._sts._connections._vault import (
    FileVaultStore,
    MemoryVaultStore,
    TokenVault,
    VaultKeys,
    VaultStore,
)
from keycard_agents._sts._device import DEVICE_AUTHORIZATION_PATH, GRANT_DEVICE_CODE, DeviceFlow
from keycard_agents._sts._forms import NO_STORE
from keycard_agents._sts._registration import REGISTRATION_PATH, RegistrationEndpoint
from keycard_agents._sts._shared import (
    PeerKeys,
    SharedClientStore,
    SharedServiceState,
    running_shared,
    shared_state_from,
)
from keycard_agents._sts._token_endpoint import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE,
    TokenEndpoint,
    TokenMinter,
    TokenStats,
)

from ._throttle import CredentialGuard

__all__ = ["TokenService"]

logger = get_logger("keycard_agents.sts")

#: Seconds between looks at the key directory for a rotation done by another process.
_KEY_RELOAD_INTERVAL = 1.0


class _ServiceKeys:
    """Resolves keys of this service (its key store) and of trusted external issuers."""

    def __init__(
        self,
        *,
        issuer: str,
        own: Callable[[], KeyResolver],
        external: JWKSCache | None,
        external_issuers: Iterable[str],
    ) -> None:
        self._issuer = issuer
        self._own = own
        self._external = external
        self._external_issuers = frozenset(external_issuers)

    def _pick(self, issuer: str) -> KeyResolver:
        if issuer == self._issuer:
            return self._own()
        if self._external is not None and issuer in self._external_issuers:
            return self._external
        raise InvalidTokenError(f"issuer {issuer[:100]!r} is not trusted here", check="issuer")

    async def resolve(self, *, issuer: str, kid: str | None, alg: str) -> Key:
        return await self._pick(issuer).resolve(issuer=issuer, kid=kid, alg=alg)

    def known(self, *, issuer: str, kid: str | None) -> bool:
        try:
            return self._pick(issuer).known(issuer=issuer, kid=kid)
        except InvalidTokenError:
            return False


class TokenService:
    """An RFC 8693 token service for local development and tests.

    ``app`` is the ASGI application (mount it, serve it with uvicorn or call it
    through ``httpx.ASGITransport``). Its lifespan closes the HTTP clients the
    service opened for fetching keys. ``stats`` counts token requests.
    """

    def __init__(
        self,
        config: TokenServiceConfig,
        *,
        audit: AuditStore | None = None,
        clock: Callable[[], float] = time.time,
        http_client: httpx.AsyncClient | None = None,
        leeway: float = 30.0,
        clients: ClientStore | None = None,
        vault_store: VaultStore | None = None,
        shared: SharedServiceState | None = None,
    ) -> None:
        if config.issuer is None:
            raise ConfigurationError(
                "issuer: the token service needs its issuer URL (e.g. http://127.0.0.1:8900); "
                "`keycard-agents sts` fills it from --host/--port",
                setting="issuer",
            )
        self.config = config
        self.issuer: str = config.issuer
        limits = config.limits
        #: The state replicas share (``[redis]`` / ``KEYCARD_REDIS_URL``), or ``None``.
        self.shared = shared if shared is not None else shared_state_from(config)
        if audit is None and self.shared is not None:
            sink = JsonlAuditStore(config.audit_file) if config.audit_file is not None else None
            audit = self.shared.audit_store(sink=sink, max_records=limits.audit_issued)
        if audit is None:
            audit = (
                JsonlAuditStore(config.audit_file)
                if config.audit_file is not None
                else MemoryAuditStore(
                    max_records=limits.audit_issued,
                    max_denied=limits.audit_denied,
                    max_unauthenticated=limits.audit_unauthenticated,
                )
            )
        self.audit: AuditStore = audit
        #: The audit trail the audit page shows; add agents' stores with
        #: ``trail.add_agent_store(...)`` to merge their records into the trees.
        self.trail = AuditTrail(
            token_service=self.audit,
            names={url: a.client_id for a in config.agents for url in a.all_resources},
        )
        #: Every check of a secret, password or admin token: throttled, off the event loop.
        self.guard = CredentialGuard(limits, clock=clock, shared=self.shared)
        self.audit_page: AuditPage | None = None
        if config.admin is not None:
            self.audit_page = AuditPage(
                trail=self.trail,
                admin=config.admin,
                issuer=config.issuer,
                clock=clock,
                guard=self.guard,
            )
        self._clock = clock
        self._peers = None if self.shared is None else PeerKeys(self.shared, self.issuer, clock)
        self._keys = self._open_keys()
        first = self._keys.current  # generate (and persist) the first key now, not mid-request
        logger.debug("signing key %s", first.kid)
        self._keys_stamp = self._dir_stamp()
        self._keys_checked = clock()
        self._caches: list[JWKSCache] = []
        external: JWKSCache | None = None
        if config.trusted_issuers:
            external = self._cache(
                [
                    TrustedIssuer(t.issuer, jwks_uri=t.jwks_uri, metadata_url=t.metadata_url)
                    for t in config.trusted_issuers
                ],
                http_client,
            )
        self._subject_keys = _ServiceKeys(
            issuer=self.issuer,
            own=self._own_resolver,
            external=external,
            external_issuers=[t.issuer for t in config.trusted_issuers],
        )
        self._agent_keys: dict[str, KeyResolver] = {}
        for agent in config.agents:
            if agent.jwks is not None:
                self._agent_keys[agent.client_id] = StaticKeys({agent.client_id: agent.jwks})
            elif agent.jwks_uri is not None:
                self._agent_keys[agent.client_id] = self._cache(
                    [TrustedIssuer(agent.client_id, jwks_uri=agent.jwks_uri)], http_client
                )
        self.minter = TokenMinter(issuer=self.issuer, keys=lambda: self.keys, clock=clock)
        #: Clients registered at run time (RFC 7591); see ``[registration]``.
        if clients is None and self.shared is not None:
            clients = SharedClientStore(self.shared)
        self.client_store: ClientStore = clients if clients is not None else _client_store(config)
        public = PublicClients(config, self.client_store)
        self.registration: RegistrationEndpoint | None = None
        if config.registration_enabled():
            self.registration = RegistrationEndpoint(
                config=config, store=self.client_store, guard=self.guard, clock=clock
            )
        self.login = LoginFlow(
            config=config,
            issuer=self.issuer,
            clock=clock,
            guard=self.guard,
            clients=public,
            shared=self.shared,
        )
        #: The users' upstream tokens (``None`` when no connections are configured).
        self.connections: Connections | None = None
        self.vault: TokenVault | None = None
        if config.connections:
            if vault_store is None and self.shared is not None:
                vault_store = self.shared.vault_store()
            self.vault = self._open_vault(vault_store)
            self.connections = Connections(
                connections=config.connections,
                vault=self.vault,
                settings=config.vault,
                issuer=self.issuer,
                audit=self.audit,
                http_client=http_client,
                clock=clock,
            )
        self.clients = ClientAuthenticator(
            config=config,
            issuer=self.issuer,
            clock=clock,
            agent_keys=self._keys_for_agent,
            guard=self.guard,
            leeway=leeway,
            clients=public,
            shared=self.shared,
        )
        self.token_endpoint = TokenEndpoint(
            config=config,
            minter=self.minter,
            clients=self.clients,
            login=self.login,
            subject_keys=self._subject_keys,
            own_keys=self._own_resolver,
            audit=self.audit,
            clock=clock,
            leeway=leeway,
            connections=self.connections,
        )
        #: RFC 8628 sign-in for machines without a browser (``login --device``).
        self.device = DeviceFlow(
            config=config,
            issuer=self.issuer,
            clients=self.clients,
            login=self.login,
            guard=self.guard,
            shared=self.shared,
            clock=clock,
        )
        self.token_endpoint.device = self.device
        self.app = self._build_app()

    # -- keys -------------------------------------------------------------------------------

    def _open_keys(self) -> KeyStore:
        return KeyStore(
            self.config.key_dir,
            alg=self.config.alg,
            clock=self._clock,
            retention=self.config.longest_lifetime(),
        )

    def _open_vault(self, store: VaultStore | None) -> TokenVault:
        key_dir = self.config.key_dir
        keys = VaultKeys(None if key_dir is None else key_dir / "vault")
        if store is None:
            vault_dir = self.config.vault.dir
            store = MemoryVaultStore() if vault_dir is None else FileVaultStore(vault_dir)
        return TokenVault(keys=keys, store=store)

    def _dir_stamp(self) -> tuple[tuple[str, int, int, int], ...] | None:
        """What the key files look like now: a change means another process rotated."""
        directory = self.config.key_dir
        if directory is None:
            return None
        try:
            with os.scandir(directory) as entries:
                stamp = []
                for entry in entries:
                    if entry.name.endswith(".json"):
                        st = entry.stat()
                        stamp.append((entry.name, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            return None
        return tuple(sorted(stamp))

    @property
    def keys(self) -> KeyStore:
        """The signing keys; reloaded (within a second) when another process rotated them."""
        now = self._clock()
        if self.config.key_dir is not None and now - self._keys_checked >= _KEY_RELOAD_INTERVAL:
            # Listing the directory costs ~5% of a token request: look at most once a second.
            self._keys_checked = now
            stamp = self._dir_stamp()
            if stamp != self._keys_stamp:
                self._keys = self._open_keys()
                self._keys_stamp = self._dir_stamp()
                logger.info("signing keys reloaded from %s", self.config.key_dir)
        return self._keys

    def _own_resolver(self) -> KeyResolver:
        own = self.keys.resolver(self.issuer)
        return own if self._peers is None else self._peers.resolver(own)

    def public_jwks(self) -> dict[str, Any]:
        """This replica's published keys, and those its peers published (``/jwks.json``)."""
        jwks = self.keys.public_jwks()
        if self._peers is None:
            return jwks
        kids = {k.get("kid") for k in jwks["keys"]}
        return {"keys": [*jwks["keys"], *(k for k in self._peers.jwks if k.get("kid") not in kids)]}

    def _keys_for_agent(self, agent: RegisteredAgent) -> KeyResolver:
        return self._agent_keys[agent.client_id]

    def _cache(
        self, issuers: list[TrustedIssuer], http_client: httpx.AsyncClient | None
    ) -> JWKSCache:
        cache = JWKSCache(issuers=issuers, http_client=http_client)
        self._caches.append(cache)
        return cache

    async def aclose(self) -> None:
        """Close the HTTP clients opened to fetch keys (the app's lifespan calls this)."""
        for cache in self._caches:
            await cache.aclose()
        if self.connections is not None:
            await self.connections.aclose()

    # -- public helpers ---------------------------------------------------------------------

    @property
    def stats(self) -> TokenStats:
        return self.token_endpoint.stats

    def issue_user_token(
        self,
        user: str,
        *,
        audience: str,
        scopes: Iterable[str],
        may_act: str | None = None,
        lifetime: float | None = None,
        client_id: str | None = None,
        txn: str | None = None,
    ) -> str:
        """Sign a user token as the sign-in flow would (for tests, fixtures and demos).

        No policy is applied: the caller picks the audience and scopes.
        """
        token, _ = self.token_endpoint.mint_user_token(
            user=user,
            audience=audience,
            scopes=tuple(dict.fromkeys(scopes)),
            may_act=may_act,
            client_id=client_id,
            txn=txn or uuid.uuid4().hex,
            lifetime=lifetime,
        )
        return token

    def metadata(self) -> dict[str, Any]:
        """The RFC 8414 authorization server metadata document."""
        base = self.issuer.rstrip("/")
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{base}/authorize",
            "device_authorization_endpoint": f"{base}{DEVICE_AUTHORIZATION_PATH}",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks.json",
            "grant_types_supported": [
                GRANT_TOKEN_EXCHANGE,
                GRANT_CLIENT_CREDENTIALS,
                GRANT_AUTHORIZATION_CODE,
                GRANT_DEVICE_CODE,
            ],
            "response_types_supported": ["code"],
            "token_endpoint_auth_methods_supported": [
                "private_key_jwt",
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": sorted(
                {s for a in self.config.agents for s in a.scopes}
                | {s for r in self.config.resources for s in r.scopes}
            ),
            "authorization_response_iss_parameter_supported": True,
            **(
                {"registration_endpoint": f"{base}{REGISTRATION_PATH}"}
                if self.registration is not None
                else {}
            ),
        }

    # -- the ASGI app -----------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            try:
                if self.shared is None or self._peers is None:
                    yield
                else:
                    retention = self.config.longest_lifetime()
                    async with running_shared(
                        self.shared, self._peers, self.keys.public_jwks, retention
                    ):
                        yield
            finally:
                await self.aclose()

        app = _TokenServiceApp(
            title="keycard-agents token service",
            docs_url=None,
            redoc_url=None,
            openapi_url=None,
            lifespan=lifespan,
        )

        async def metadata(request: Request) -> Response:
            return JSONResponse(self.metadata(), headers={"Cache-Control": "max-age=300"})

        async def jwks(request: Request) -> Response:
            return JSONResponse(self.public_jwks(), headers={"Cache-Control": "max-age=60"})

        routes: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
            (AUTHORIZATION_SERVER_WELL_KNOWN, metadata, ["GET"]),
            ("/jwks.json", jwks, ["GET"]),
            ("/token", self.token_endpoint.handle, ["POST"]),
            ("/authorize", self.login.authorize_get, ["GET"]),
            ("/authorize", self.login.authorize_post, ["POST"]),
        ]
        routes.extend(self.device.routes())
        if self.registration is not None:
            routes.append((REGISTRATION_PATH, self.registration.handle, ["POST"]))
        if self.audit_page is not None:
            routes.extend(self.audit_page.routes())
        if self.connections is not None:
            pages = ConnectionPages(
                connections=self.connections,
                login=self.login,
                issuer=self.issuer,
                clock=self._clock,
            )
            routes.extend(pages.routes())
        for path, endpoint, methods in routes:
            app.add_route(path, _guard(endpoint), methods=methods, include_in_schema=False)
        app.token_route = request_response(_guard(self.token_endpoint.handle))
        return app

    def __repr__(self) -> str:
        return f"TokenService(issuer={self.issuer!r}, agents={len(self.config.agents)})"


class _TokenServiceApp(FastAPI):
    """The service's FastAPI app with ``POST /token`` answered in front of everything else.

    The exchange is the hot path; FastAPI's per-request work (its own telemetry's check
    for configured providers, which reads the environment each time), its middleware stack
    (server-error, exception and exit-stack layers) and the route search are not needed by
    it: the endpoint reads its own bounded form, traces itself (``request_span``) and,
    through ``_guard``, answers every exception itself. Skipping them saves about 5 % of an
    exchange's CPU time (benchmarks/NOTES.md). Every other path (and any other method on
    ``/token``, which the router answers 405) goes through FastAPI in full, and so does
    everything once middleware is added to the app.
    """

    token_route: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token_route = self.token_route
        if (
            token_route is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and not self.user_middleware
        ):
            if self.root_path:
                scope["root_path"] = self.root_path
            if scope["path"] == scope.get("root_path", "") + "/token":
                scope["app"] = self
                await token_route(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _client_store(config: TokenServiceConfig) -> ClientStore:
    reg = config.registration
    if reg.clients_file is not None:
        return JsonlClientStore(reg.clients_file, max_clients=reg.max_clients)
    return MemoryClientStore(max_clients=reg.max_clients)


def _guard(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """No input may produce an unhandled error: answer ``server_error`` without internals."""

    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except StoreUnavailableError as exc:
            # Fail closed: without the shared state nothing can be checked (a replayed
            # assertion, a used code), so nothing is accepted; retry shortly.
            logger.warning(
                "shared state unavailable in %s %s: %s", request.method, request.url.path, exc
            )
            return JSONResponse(
                {
                    "error": "temporarily_unavailable",
                    "error_description": "the token service's shared store is unavailable; "
                    "retry shortly",
                },
                status_code=503,
                headers={**NO_STORE, "Retry-After": "1"},
            )
        except Exception as exc:
            incident = uuid.uuid4().hex[:12]
            logger.error(
                "internal error %s in %s %s: HTTP 500 error=server_error reason=%s",
                incident,
                request.method,
                request.url.path,
                type(exc).__name__,
                extra={
                    "status": 500,
                    "error": "server_error",
                    "reason": type(exc).__name__,
                    "path": request.url.path,
                },
            )
            return JSONResponse(
                {
                    "error": "server_error",
                    "error_description": f"internal error (incident {incident}); see the "
                    "token service log",
                },
                status_code=500,
                headers=dict(NO_STORE),
            )

    return guarded
