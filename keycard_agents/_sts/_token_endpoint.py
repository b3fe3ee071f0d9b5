"""The token endpoint: grant dispatch, token exchange, minting, audit.

RFC 6749 §4.1.3 / §4.4 / §5.1 / §5.2 (authorization code, client credentials,
responses and errors), RFC 8693 §2.1-§2.2 (token exchange request, response and
errors: an invalid or unacceptable subject or actor token is ``invalid_request``,
§2.2.2; ``act`` per §4.1), RFC 8707 §2 (``resource``), RFC 9068 §2 (``at+jwt``
access token claims). The exchange checks run in the order of
protocols/delegation-profile.md §5; each request, issued or denied, leaves exactly one
audit record.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import INVALID_SPAN, Status, StatusCode
from starlette.requests import Request
from starlette.responses import Response

from keycard_agents._a2a.types import new_id
from keycard_agents._audit._sts_records import AuditRecord, AuditStore
from keycard_agents._errors import (
    ConfigurationError,
    InvalidTokenError,
    IssuerUnreachableError,
    OAuthError,
    StoreUnavailableError,
)
from keycard_agents._jose._jwt import ACCESS_TOKEN_TYPE, verify_jwt
from keycard_agents._jose._keys import KeyResolver, KeyStore
from keycard_agents._jose._principal import ActorChain
from keycard_agents._logs import LineBudget, get_logger
from keycard_agents._oauth._inspect import decode_unverified
from keycard_agents._observe._metrics import record_token_request, record_verification_failure
from keycard_agents._observe._tracing import (
    ATTR_ACTORS,
    ATTR_AGENT,
    ATTR_DECISION,
    ATTR_JTI,
    ATTR_SCOPES_GRANTED,
    ATTR_TARGET,
    ATTR_TXN,
    ATTR_USER,
    request_span,
    set_attributes,
    span,
    tracing_configured,
)
from keycard_agents._sts._authorize import LoginFlow
from keycard_agents._sts._clientauth import AuthenticatedClient, ClientAuthenticator
from keycard_agents._sts._config import RegisteredAgent, TokenServiceConfig
from keycard_agents._sts._connections._broker import Connections, UserRef
from keycard_agents._sts._device import GRANT_DEVICE_CODE, DeviceFlow
from keycard_agents._sts._forms import (
    Form,
    audit_reason,
    oauth_error_response,
    read_form,
    token_response,
)
from keycard_agents._sts._policy import (
    check_audience,
    check_chain,
    check_first_hop,
    check_target,
    narrow_scopes,
    parse_scope,
    subject_audience,
    subject_identifier,
)
from keycard_agents._sts._throttle import TooManyAttemptsError

from ._targets import requested_targets

__all__ = [
    "GRANT_AUTHORIZATION_CODE",
    "GRANT_CLIENT_CREDENTIALS",
    "GRANT_TOKEN_EXCHANGE",
    "TOKEN_TYPE_ACCESS_TOKEN",
    "TokenEndpoint",
    "TokenMinter",
    "TokenStats",
]

logger = get_logger("keycard_agents.sts")

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_AUTHORIZATION_CODE = "authorization_code"
TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105
_GRANTS = frozenset(
    {GRANT_TOKEN_EXCHANGE, GRANT_CLIENT_CREDENTIALS, GRANT_AUTHORIZATION_CODE, GRANT_DEVICE_CODE}
)
#: Answers a polling device client gets until the user acts (RFC 8628 §3.5): not denials
#: worth an audit record each.
_POLLING = frozenset({"authorization_pending", "slow_down"})
_ACTOR_TOKEN_TYPES = frozenset({TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT})
_MAX_TOKEN_BYTES = 8192
#: The span of a block when no OpenTelemetry SDK is configured (it records nothing).
_UNTRACED = nullcontext(INVALID_SPAN)


@dataclass
class TokenStats:
    """Counters for tests and operators (requests to ``POST /token``)."""

    requests: int = 0
    issued: int = 0
    denied: int = 0
    exchanges: int = 0
    """Token-exchange requests received (issued or denied)."""
    by_grant: dict[str, int] = field(default_factory=dict)
    """Requests per grant type (unsupported ones counted as ``"other"``)."""


class TokenMinter:
    """Builds and signs the service's ``at+jwt`` tokens with the current key."""

    def __init__(self, *, issuer: str, keys: Callable[[], KeyStore], clock: Callable[[], float]):
        self.issuer = issuer
        self._keys = keys
        self._clock = clock

    def mint(
        self,
        *,
        sub: str,
        aud: str,
        lifetime: float,
        not_after: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Sign a token; ``exp`` = min(now + lifetime, not_after). Returns (token, claims)."""
        now = int(self._clock())
        exp = int(now + lifetime)
        if not_after is not None:
            exp = min(exp, int(not_after))
        claims: dict[str, Any] = {"iss": self.issuer, "sub": sub, "aud": aud}
        claims.update(extra or {})
        claims.update(iat=now, nbf=now, exp=exp, jti=new_id())
        return self._keys().current.sign(claims, typ=ACCESS_TOKEN_TYPE), claims


@dataclass
class _Trail:
    """What is known about a request so far; becomes its audit record."""

    grant_type: str | None = None
    client_id: str | None = None
    resource: str | None = None
    connection: str | None = None
    user: str | None = None
    user_issuer: str | None = None
    actors: tuple[str, ...] | None = None
    txn: str | None = None
    target: str | None = None
    scopes_requested: tuple[str, ...] | None = None
    scopes_granted: tuple[str, ...] | None = None
    jti: str | None = None
    timer: float = field(default_factory=time.perf_counter)

    def grant_kind(self) -> str:
        """The grant as a metric attribute (bounded: unknown grants are ``other``)."""
        if self.grant_type == GRANT_TOKEN_EXCHANGE:
            return "token-exchange"
        return self.grant_type if self.grant_type in _GRANTS else "other"

    def measure(self, decision: str, error: str | None) -> None:
        record_token_request(self.grant_kind(), decision, error, time.perf_counter() - self.timer)

    def record(self, now: float, *, error: OAuthError | None) -> AuditRecord:
        return AuditRecord(
            time=now,
            grant_type=self.grant_type,
            decision="denied" if error is not None else "issued",
            txn=self.txn,
            user=self.user,
            user_issuer=self.user_issuer,
            actors=self.actors,
            client_id=self.client_id,
            resource=self.resource,
            connection=self.connection,
            target=self.target,
            scopes_requested=self.scopes_requested,
            scopes_granted=self.scopes_granted if error is None else None,
            error=None if error is None else error.error,
            reason=None if error is None else audit_reason(error),
            jti=self.jti if error is None else None,
        )


def _internal_error() -> OAuthError:
    return OAuthError("server_error", "internal error; see the token service log", status_code=500)


class _AuditFailed(Exception):
    """The audit store could not take a record (its exception is the cause)."""


def _short(value: str, limit: int = 100) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


class TokenEndpoint:
    """``POST /token``: authenticates, decides, issues, audits."""

    def __init__(
        self,
        *,
        config: TokenServiceConfig,
        minter: TokenMinter,
        clients: ClientAuthenticator,
        login: LoginFlow,
        subject_keys: KeyResolver,
        own_keys: Callable[[], KeyResolver],
        audit: AuditStore,
        clock: Callable[[], float] = time.time,
        leeway: float = 30.0,
        connections: Connections | None = None,
    ) -> None:
        self._config = config
        self._connections = connections
        self._minter = minter
        self._issuer = minter.issuer
        self._clients = clients
        self._login = login
        self._subject_keys = subject_keys
        self._own_keys = own_keys
        self._audit = audit
        self._clock = clock
        self._leeway = leeway
        self._trusted = (self._issuer, *(t.issuer for t in config.trusted_issuers))
        # What each trusted issuer's tokens look like; our own stay strict RFC 9068.
        self._profiles = {t.issuer: t.profile() for t in config.trusted_issuers}
        self.stats = TokenStats()
        self._issued_lines = LineBudget(
            logger,
            per_second=config.limits.log_issued_per_second,
            what="issued tokens",
            clock=clock,
        )
        #: The RFC 8628 device flow (set by the service; ``None``: the grant is unsupported).
        self.device: DeviceFlow | None = None

    async def handle(self, request: Request) -> Response:
        """``POST /token`` in a span of the caller's trace (``traceparent``)."""
        with request_span(request.headers, name="token service POST /token") as current:
            trail = _Trail()
            response = await self._handle(request, trail)
            if current.is_recording():
                current.update_name(f"token service {trail.grant_kind()}")
                set_attributes(
                    current,
                    {
                        ATTR_AGENT: trail.client_id,
                        ATTR_TARGET: trail.target,
                        ATTR_TXN: trail.txn,
                        ATTR_USER: trail.user,
                        ATTR_ACTORS: trail.actors,
                        ATTR_SCOPES_GRANTED: trail.scopes_granted,
                        ATTR_JTI: trail.jti,
                        ATTR_DECISION: "issued" if response.status_code == 200 else "denied",
                        "http.response.status_code": response.status_code,
                    },
                )
                if response.status_code >= 500:
                    current.set_status(Status(StatusCode.ERROR, "server_error"))
            return response

    async def _handle(self, request: Request, trail: _Trail) -> Response:
        self.stats.requests += 1
        try:
            form = await read_form(request)
            grant_type = form.require("grant_type")
            trail.grant_type = _short(grant_type)
            known = grant_type in _GRANTS
            counted = grant_type if known else "other"
            self.stats.by_grant[counted] = self.stats.by_grant.get(counted, 0) + 1
            if grant_type == GRANT_TOKEN_EXCHANGE:
                self.stats.exchanges += 1
                payload = await self._token_exchange(request, form, trail)
            elif grant_type == GRANT_CLIENT_CREDENTIALS:
                payload = await self._client_credentials(request, form, trail)
            elif grant_type == GRANT_AUTHORIZATION_CODE:
                payload = await self._authorization_code(request, form, trail)
            elif grant_type == GRANT_DEVICE_CODE and self.device is not None:
                payload = await self._device_code(request, form, trail)
            else:
                raise OAuthError(
                    "unsupported_grant_type",
                    f"grant_type {_short(grant_type)!r} is not supported; use "
                    f"{GRANT_TOKEN_EXCHANGE}, {GRANT_CLIENT_CREDENTIALS} or "
                    f"{GRANT_AUTHORIZATION_CODE}",
                )
        except OAuthError as exc:
            return await self._deny(trail, exc, audit=exc.error not in _POLLING)
        except StoreUnavailableError as exc:  # replicas' shared state away: fail closed, 503
            unavailable = TooManyAttemptsError(
                "the token service's shared store is unavailable; retry shortly",
                retry_after=1,
                status_code=503,
            )
            return await self._deny(trail, unavailable, audit=False, why=str(exc))
        except Exception as exc:  # a bug or a failing store: one line and a plain 500
            why = f"internal error: {type(exc).__name__}"
            audit = not isinstance(exc, _AuditFailed)
            return await self._deny(trail, _internal_error(), audit=audit, why=why)
        self.stats.issued += 1
        try:
            await self._append(trail.record(self._clock(), error=None))
        except _AuditFailed as failed:  # no evidence, no token
            why = f"the audit store failed ({failed}); no token was issued"
            self.stats.issued -= 1
            return await self._deny(trail, _internal_error(), audit=False, why=why)
        trail.measure("issued", None)
        if self._issued_lines.take():
            logger.info(
                "issued token jti=%s grant=%s client=%s txn=%s target=%s",
                trail.jti,
                trail.grant_type,
                trail.client_id,
                trail.txn,
                trail.target,
                extra={
                    "jti": trail.jti,
                    "grant_type": trail.grant_type,
                    "client_id": trail.client_id,
                    "txn": trail.txn,
                    "target": trail.target,
                },
            )
        return token_response(payload)

    async def _deny(
        self, trail: _Trail, exc: OAuthError, *, audit: bool, why: str | None = None
    ) -> Response:
        """Audit and log a refusal: one line with status, grant, client, txn, error, reason.

        A refusal that cannot be audited becomes a 500 (no evidence, no answer).
        """
        self.stats.denied += 1
        reason = _short(why or audit_reason(exc), 300)
        if audit:
            try:
                await self._append(trail.record(self._clock(), error=exc))
            except _AuditFailed as failed:
                reason = f"{reason} (then the audit store failed: {failed})"
                exc = _internal_error()
        trail.measure("denied", exc.error)
        logger.log(
            logging.ERROR if exc.status_code >= 500 else logging.INFO,
            "token request denied: HTTP %s grant=%s client=%s txn=%s error=%s reason=%s",
            exc.status_code,
            trail.grant_type,
            trail.client_id,
            trail.txn,
            exc.error,
            reason,
            extra={
                "status": exc.status_code,
                "grant_type": trail.grant_type,
                "client_id": trail.client_id,
                "txn": trail.txn,
                "error": exc.error,
                "reason": reason,
            },
        )
        return oauth_error_response(exc)

    async def _append(self, record: AuditRecord) -> None:
        try:
            await self._audit.append(record)
        except StoreUnavailableError:
            raise  # the shared store is away: the service answers 503 (fail closed)
        except Exception as exc:
            raise _AuditFailed(type(exc).__name__) from exc

    # -- grants ----------------------------------------------------------------------------

    async def _agent_client(
        self, request: Request, form: Form, trail: _Trail, grant: str
    ) -> AuthenticatedClient:
        client = await self._clients.authenticate(request, form)
        trail.client_id = client.client_id
        trail.resource = None if client.agent is None else client.agent.resource
        if client.agent is None:
            raise OAuthError(
                "unauthorized_client",
                f"public client {client.client_id!r} may only use {GRANT_AUTHORIZATION_CODE}; "
                f"{grant} is for registered agents",
            )
        return client

    async def _client_credentials(
        self, request: Request, form: Form, trail: _Trail
    ) -> dict[str, Any]:
        client = await self._agent_client(request, form, trail, GRANT_CLIENT_CREDENTIALS)
        trail.target = self._issuer
        if form.get("scope") is not None:
            raise OAuthError(
                "invalid_scope",
                "client_credentials tokens carry no scopes here: omit 'scope' (the token only "
                "proves the agent's identity, e.g. as an actor_token)",
            )
        for name in ("resource", "audience"):
            if name in form:
                raise OAuthError(
                    "invalid_target",
                    f"omit {name!r}: an agent's own token is always for this token service",
                )
        lifetime = self._config.lifetimes.actor_token
        token, claims = self._minter.mint(
            sub=client.client_id,
            aud=self._issuer,
            lifetime=lifetime,
            extra={"client_id": client.client_id},
        )
        trail.jti = claims["jti"]
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": claims["exp"] - claims["iat"],
        }

    async def _authorization_code(
        self, request: Request, form: Form, trail: _Trail
    ) -> dict[str, Any]:
        client = await self._clients.authenticate(request, form)
        trail.client_id = client.client_id
        if client.method != "none":
            raise OAuthError(
                "unauthorized_client",
                f"agent {client.client_id!r} cannot use {GRANT_AUTHORIZATION_CODE}: only public "
                "clients listed under [[clients]] sign users in",
            )
        grant = await self._login.redeem(form)
        trail.user = grant.username
        trail.user_issuer = self._issuer
        trail.target = grant.resource
        trail.scopes_requested = grant.scopes
        agent = self._config.agent_for_resource(grant.resource)
        if agent is None:  # a replica with another configuration issued the shared code
            raise OAuthError("invalid_target", "the signed-in resource is no longer registered")
        txn = uuid.uuid4().hex
        trail.txn = txn
        token, claims = self.mint_user_token(
            user=grant.username,
            audience=grant.resource,
            scopes=grant.scopes,
            may_act=agent.client_id,
            client_id=client.client_id,
            txn=txn,
        )
        trail.scopes_granted = grant.scopes
        trail.jti = claims["jti"]
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": claims["exp"] - claims["iat"],
            "scope": claims["scope"],
        }

    async def _device_code(self, request: Request, form: Form, trail: _Trail) -> dict[str, Any]:
        """RFC 8628 §3.4: a public client redeems an approved device code."""
        assert self.device is not None
        client = await self._clients.authenticate(request, form)
        trail.client_id = client.client_id
        if client.method != "none":
            raise OAuthError(
                "unauthorized_client",
                f"agent {client.client_id!r} cannot use the device grant: only public clients",
            )
        grant = await self.device.redeem(form, client.client_id)
        trail.user, trail.user_issuer = grant.username, self._issuer
        trail.target, trail.scopes_requested = grant.resource, grant.scopes
        trail.txn = uuid.uuid4().hex
        token, claims = self.mint_user_token(
            user=grant.username,
            audience=grant.resource,
            scopes=grant.scopes,
            may_act=grant.agent,
            client_id=client.client_id,
            txn=trail.txn,
        )
        trail.scopes_granted, trail.jti = grant.scopes, claims["jti"]
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": claims["exp"] - claims["iat"],
            "scope": claims["scope"],
        }

    def mint_user_token(
        self,
        *,
        user: str,
        audience: str,
        scopes: tuple[str, ...],
        may_act: str | None,
        client_id: str | None,
        txn: str | None = None,
        lifetime: float | None = None,
    ) -> tuple[str, dict[str, Any]]:
        extra: dict[str, Any] = {}
        if client_id is not None:
            extra["client_id"] = client_id
        extra["scope"] = " ".join(scopes)
        extra["txn"] = txn or uuid.uuid4().hex
        if may_act is not None:
            extra["may_act"] = {"sub": may_act}
        return self._minter.mint(
            sub=user,
            aud=audience,
            lifetime=lifetime if lifetime is not None else self._config.lifetimes.user_token,
            extra=extra,
        )

    async def _token_exchange(self, request: Request, form: Form, trail: _Trail) -> dict[str, Any]:
        # 1. client authentication, then the request's shape.
        client = await self._agent_client(request, form, trail, "token exchange")
        agent = client.agent
        assert agent is not None
        subject_token = form.require("subject_token")
        subject_type = form.require("subject_token_type")
        actor_token = form.get("actor_token")
        actor_type = form.get("actor_token_type")
        requested_type = form.get("requested_token_type")
        requested_scope = form.get("scope")
        resources = form.all("resource")
        audiences = form.all("audience")
        if len(resources) + len(audiences) == 1:
            trail.target = _short([*resources, *audiences][0])
        if requested_scope is not None:
            trail.scopes_requested = parse_scope(requested_scope)
        if subject_type != TOKEN_TYPE_ACCESS_TOKEN:
            raise OAuthError(
                "invalid_request", f"subject_token_type must be {TOKEN_TYPE_ACCESS_TOKEN}"
            )
        if (actor_token is None) != (actor_type is None):
            raise OAuthError(
                "invalid_request",
                "send actor_token and actor_token_type together, or neither (RFC 8693 §2.1)",
            )
        if actor_type is not None and actor_type not in _ACTOR_TOKEN_TYPES:
            raise OAuthError(
                "invalid_request", f"actor_token_type must be {TOKEN_TYPE_ACCESS_TOKEN}"
            )
        if requested_type is not None and requested_type != TOKEN_TYPE_ACCESS_TOKEN:
            raise OAuthError(
                "invalid_request",
                f"only requested_token_type={TOKEN_TYPE_ACCESS_TOKEN} can be issued",
            )
        if actor_token is not None:
            await self._check_actor_token(actor_token, client.client_id)

        # 2. subject token: signature, type, issuer, lifetime (and act shape).
        claims = await self._verify_subject(subject_token, _audience_of(subject_token, agent))
        trail.user = claims["sub"]
        trail.txn = claims.get("txn")
        # ... and where its user came from (RFC 9493 iss_sub), copied into every hop.
        sub_id = subject_identifier(claims, self._issuer)
        trail.user_issuer = sub_id["iss"]
        traced = tracing_configured()  # without an SDK, no span context managers at all
        with span("token service policy", principal=None) if traced else _UNTRACED:
            target, accepted, chain = self._decide(claims, agent, resources, audiences, trail)
            connection = self._config.connection_for_resource(target)
            if connection is not None and self._connections is not None:
                # 6-7 for a third-party API: the user's own upstream token (_connections).
                trail.txn = claims.get("txn")
                user = UserRef(issuer=sub_id["iss"], sub=sub_id["sub"])
                issue = await self._connections.issue(
                    connection, user=user, requested_scope=requested_scope, txn=trail.txn
                )
                trail.scopes_granted, trail.jti = issue.scopes, f"sha256:{issue.thumbprint}"
                trail.connection = connection.name
                return issue.payload
            # 6. scope narrowing.
            scopes = parse_scope(claims.get("scope"))
            granted = narrow_scopes(requested_scope, scopes, accepted, target)
        # 7. issue.
        txn = claims.get("txn") or uuid.uuid4().hex
        trail.txn = txn
        act = chain.to_act_claim()
        with span("token service sign", principal=None) if traced else _UNTRACED as signing:
            token, issued = self._minter.mint(
                sub=claims["sub"],
                aud=target,
                lifetime=self._config.lifetimes.delegated_token,
                not_after=float(claims["exp"]),
                extra={
                    "client_id": agent.client_id,
                    "scope": " ".join(granted),
                    "act": act,
                    "txn": txn,
                    "sub_id": sub_id,
                },
            )
            if signing.is_recording():
                signing.set_attribute(ATTR_JTI, issued["jti"])
        trail.scopes_granted = granted
        trail.jti = issued["jti"]
        return {
            "access_token": token,
            "issued_token_type": TOKEN_TYPE_ACCESS_TOKEN,
            "token_type": "Bearer",
            "expires_in": max(0, issued["exp"] - issued["iat"]),
            "scope": issued["scope"],
        }

    def _decide(
        self,
        claims: dict[str, Any],
        agent: RegisteredAgent,
        resources: list[str],
        audiences: list[str],
        trail: _Trail,
    ) -> tuple[str, tuple[str, ...], ActorChain]:
        """Checks 3 to 5: audience chaining, first hop, policy; returns the target, the
        scopes it accepts and the resulting actor chain."""
        # 3. audience chaining.
        check_audience(claims, agent)
        if isinstance(claims["aud"], str):  # which of the agent's resources it was sent to
            trail.resource = claims["aud"]
        # 4. first hop: may_act.
        check_first_hop(claims, agent)
        # 5. policy: declared dependency, chain depth, repeated agents.
        targets = requested_targets(self._config, resources, audiences)
        target, accepted = check_target(self._config, agent, targets)
        trail.target = target
        chain = check_chain(self._config, claims, agent, self._issuer, target=target)
        trail.actors = chain.subjects()
        return target, accepted, chain

    async def _check_actor_token(self, actor_token: str, client_id: str) -> None:
        try:
            claims = await verify_jwt(
                actor_token,
                keys=self._own_keys(),
                issuers=(self._issuer,),
                audience=self._issuer,
                token_types=(ACCESS_TOKEN_TYPE,),
                leeway=self._leeway,
                max_bytes=_MAX_TOKEN_BYTES,
                max_actor_depth=0,
                clock=self._clock,
            )
        except InvalidTokenError as exc:
            raise OAuthError(
                "invalid_request",
                f"actor_token rejected ({exc.check}): {exc}; get a fresh one with "
                f"grant_type={GRANT_CLIENT_CREDENTIALS}",
            ) from exc
        if claims["sub"] != client_id or claims.get("client_id") != client_id:
            raise OAuthError(
                "invalid_request",
                f"actor_token names agent {_short(str(claims['sub']))!r}, but the authenticated "
                f"client is {client_id!r}: send your own client-credentials token",
            )

    async def _verify_subject(self, token: str, audience: str) -> dict[str, Any]:
        claims = await self._verify_subject_signature(token, audience)
        # The leeway absorbs clock skew for receivers; it never stretches a delegation:
        # a subject that has expired, even within the leeway, yields nothing (CL-8, TS-3).
        if float(claims["exp"]) <= self._clock():
            record_verification_failure("expired", "token_service")
            raise OAuthError(
                "invalid_request",
                "subject_token rejected (expired): it has already expired, so no token "
                "can be delegated from it; exchange subject tokens before they expire",
            )
        return claims

    async def _verify_subject_signature(self, token: str, audience: str) -> dict[str, Any]:
        try:
            return await verify_jwt(
                token,
                keys=self._subject_keys,
                issuers=self._trusted,
                audience=audience,
                token_types=(ACCESS_TOKEN_TYPE,),
                leeway=self._leeway,
                max_bytes=_MAX_TOKEN_BYTES,
                max_actor_depth=self._config.max_chain_depth,
                clock=self._clock,
                required_claims=("iss", "sub", "aud", "exp", "iat", "jti"),
                profiles=self._profiles,
            )
        except InvalidTokenError as exc:
            record_verification_failure(exc.check, "token_service")
            hint = ""
            if exc.check == "audience":
                hint = " (an agent may only exchange tokens that were sent to it)"
            raise OAuthError(
                "invalid_request", f"subject_token rejected ({exc.check}): {exc}{hint}"
            ) from exc
        except IssuerUnreachableError as exc:
            raise OAuthError(
                "temporarily_unavailable",
                f"cannot fetch the subject token issuer's keys: {exc}; retry later",
                status_code=503,
            ) from exc
        except ConfigurationError as exc:
            raise OAuthError(
                "server_error",
                f"the token service cannot use the subject token issuer's keys: {exc}",
                status_code=500,
            ) from exc


def _audience_of(subject_token: str, agent: RegisteredAgent) -> str:
    """The agent resource the subject token is checked against (it may have several)."""
    if not agent.resources:  # one resource: nothing to pick, no payload to decode
        return agent.resource
    try:
        _, unverified = decode_unverified(subject_token)
    except InvalidTokenError:
        unverified = {}  # the verification names what is wrong with it
    return subject_audience(unverified, agent)
