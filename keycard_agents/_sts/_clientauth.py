"""Client authentication at the token endpoint.

RFC 6749 §2.3.1 (``client_secret_basic`` / ``client_secret_post``; exactly one
method per request, §2.3), RFC 7521 §4.2 and RFC 7523 §2.2 / §3
(``private_key_jwt``: ``iss`` = ``sub`` = client_id, ``aud`` = the issuer string,
``exp`` and a single-use ``jti`` required), RFC 8725 §3.11 (explicit ``typ``).
Public clients (``none``) only identify themselves for the authorization code grant.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request

from keycard_agents._errors import (
    ConfigurationError,
    InvalidTokenError,
    IssuerUnreachableError,
    OAuthError,
)
from keycard_agents._jose._jwt import CLIENT_ASSERTION_TYPE, verify_jwt
from keycard_agents._jose._keys import KeyResolver
from keycard_agents._json import loads_bounded
from keycard_agents._logs import get_logger
from keycard_agents._sts._client_store import PublicClients
from keycard_agents._sts._config import RegisteredAgent, TokenServiceConfig
from keycard_agents._sts._forms import ClientAuthError, Form
from keycard_agents._sts._secrets import WeakSecretError, hash_client_secret, is_fast_hash
from keycard_agents._sts._shared import SharedServiceState
from keycard_agents._sts._throttle import CredentialGuard, DummyHash, request_source

__all__ = [
    "ASSERTION_TYPE",
    "BAD_CLIENT_CREDENTIALS",
    "AuthenticatedClient",
    "ClientAuthenticator",
    "ReplayCache",
]

logger = get_logger("keycard_agents.sts")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_TYPS = frozenset({CLIENT_ASSERTION_TYPE, "JWT"})
_MAX_ASSERTION = 8192
#: The one answer for an unknown client, a wrong secret or key, and a client that uses
#: another authentication method: the answer must not tell which client ids exist. The
#: precise reason goes to the audit record and the log (``ClientAuthError.detail``).
BAD_CLIENT_CREDENTIALS = (
    "client authentication failed: unknown client or wrong credentials (check the client "
    "id, its secret or signing key, and its registration under [[agents]])"
)
#: Checks a client assertion can fail before its signature is known to be good: their
#: details would tell an unauthenticated caller that the client exists.
_PRE_SIGNATURE_CHECKS = frozenset(
    {"malformed", "size", "algorithm", "type", "issuer", "unknown_key", "signature"}
)


@dataclass(frozen=True)
class AuthenticatedClient:
    """Who is calling the token endpoint, and how they proved it."""

    client_id: str
    method: str
    agent: RegisteredAgent | None


def _invalid_client(description: str, *, basic: bool = False) -> ClientAuthError:
    return ClientAuthError(description, basic=basic)


def _bad_credentials(detail: str, *, basic: bool = False) -> ClientAuthError:
    return ClientAuthError(BAD_CLIENT_CREDENTIALS, basic=basic, detail=detail)


class ReplayCache:
    """Seen client-assertion ``jti`` values, remembered until the assertion expires."""

    def __init__(self, *, clock: Callable[[], float], max_entries: int = 1_000_000) -> None:
        self._clock = clock
        self._max = max_entries
        self._seen: dict[tuple[str, str], float] = {}
        self._next_sweep = 0.0

    def _sweep(self, now: float) -> None:
        if now >= self._next_sweep or len(self._seen) >= self._max:
            self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
            self._next_sweep = now + 30.0

    def check_and_remember(self, client_id: str, jti: str, expires_at: float) -> bool:
        """``True`` the first time a (client, jti) pair is seen before it expires."""
        now = self._clock()
        self._sweep(now)
        key = (client_id, jti)
        if key in self._seen and self._seen[key] > now:
            return False
        if len(self._seen) >= self._max:
            raise OAuthError(
                "temporarily_unavailable",
                "too many client assertions in flight: retry shortly",
                status_code=503,
            )
        self._seen[key] = expires_at
        return True


def _unverified_claims(assertion: str) -> Mapping[str, Any]:
    """Peek at the payload only to find which client's keys to verify with."""
    try:
        _, payload, _ = assertion.split(".")
        data = loads_bounded(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):  # JsonLimitError is a ValueError
        return {}
    return data if isinstance(data, dict) else {}


class ClientAuthenticator:
    """Authenticates the agent (or public client) behind a token request."""

    def __init__(
        self,
        *,
        config: TokenServiceConfig,
        issuer: str,
        clock: Callable[[], float],
        agent_keys: Callable[[RegisteredAgent], KeyResolver],
        guard: CredentialGuard | None = None,
        leeway: float = 30.0,
        clients: PublicClients | None = None,
        shared: SharedServiceState | None = None,
    ) -> None:
        self._config = config
        self._shared = shared
        self._public = clients if clients is not None else PublicClients(config)
        self._issuer = issuer
        self._clock = clock
        self._agent_keys = agent_keys
        self._leeway = leeway
        self._guard = guard if guard is not None else CredentialGuard(config.limits, clock=clock)
        self._dummy = DummyHash(a.secret_hash for a in config.agents if a.secret_hash)
        self.replay = ReplayCache(clock=clock)
        # Fast hashes of client secrets configured with a legacy scrypt hash, made on their
        # first successful check (docs/security.md, "Client secrets"). At most one per
        # configured agent; the configuration file itself is never written.
        self._upgraded: dict[str, str] = {}
        self._weak: set[str] = set()

    async def authenticate(self, request: Request, form: Form) -> AuthenticatedClient:
        """Authenticate the caller; ``invalid_request`` / ``invalid_client`` on failure."""
        header = request.headers.get("authorization")
        basic = header is not None and header[:6].lower() == "basic "
        if header is not None and not basic:
            raise OAuthError(
                "invalid_request",
                "only HTTP Basic client authentication is accepted in the Authorization header",
            )
        post = "client_secret" in form
        assertion = "client_assertion" in form or "client_assertion_type" in form
        methods = sum((basic, post, assertion))
        if methods > 1:
            raise OAuthError(
                "invalid_request",
                "more than one client authentication method in one request: use exactly one",
            )
        source = request_source(request)
        if basic:
            assert header is not None
            return await self._basic(header[6:].strip(), form, source)
        if post:
            client_id = form.get("client_id")
            if client_id is None:
                raise OAuthError("invalid_request", "client_secret_post needs client_id")
            secret = form.require("client_secret")
            return await self._secret(client_id, secret, method="post", source=source)
        if assertion:
            return await self._assertion(form)
        client_id = form.get("client_id")
        if client_id is not None and await self._public.get(client_id) is not None:
            return AuthenticatedClient(client_id=client_id, method="none", agent=None)
        raise _invalid_client(
            "client authentication required: use private_key_jwt, client_secret_basic or "
            "client_secret_post"
        )

    async def _basic(self, credentials: str, form: Form, source: str | None) -> AuthenticatedClient:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            raw_id, sep, raw_secret = decoded.partition(":")
            if not sep:
                raise ValueError("no colon")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise _invalid_client(
                "malformed HTTP Basic credentials: send base64(client_id:client_secret)",
                basic=True,
            ) from None
        # RFC 6749 §2.3.1: both halves are form-urlencoded before base64.
        client_id, secret = unquote(raw_id.replace("+", " ")), unquote(raw_secret.replace("+", " "))
        form_id = form.get("client_id")
        if form_id is not None and form_id != client_id:
            raise OAuthError("invalid_request", "client_id differs from the Basic credentials")
        return await self._secret(client_id, secret, method="basic", source=source)

    async def _secret(
        self, client_id: str, secret: str, *, method: str, source: str | None
    ) -> AuthenticatedClient:
        basic = method == "basic"
        agent = self._config.agent(client_id)
        stored = agent.secret_hash if agent is not None else None
        if stored is not None:
            stored = self._upgraded.get(client_id, stored)
        ok = await self._guard.check_hash(
            secret, stored, account=f"client:{client_id[:200]}", source=source, dummy=self._dummy
        )
        if ok and stored is not None and not is_fast_hash(stored):
            self._upgrade(client_id, secret)
        if not ok:
            shown = repr(client_id[:100])
            if agent is None:
                detail = f"unknown client {shown}"
            elif stored is None:
                detail = f"agent {shown} authenticates with private_key_jwt, not a client secret"
            else:
                detail = f"wrong client secret for {shown}"
            raise _bad_credentials(detail, basic=basic)
        return AuthenticatedClient(
            client_id=client_id, method=f"client_secret_{method}", agent=agent
        )

    def _upgrade(self, client_id: str, secret: str) -> None:
        """After a client secret matched its legacy scrypt hash: check it with a fast hash
        from now on, if it is strong enough to be stored with one."""
        try:
            self._upgraded[client_id] = hash_client_secret(secret)
        except WeakSecretError as exc:
            if client_id not in self._weak:
                self._weak.add(client_id)
                logger.warning(
                    "agent %r authenticates with a client secret that could be guessed (%s); "
                    "it stays checked with scrypt, about 40 ms of CPU per token request. "
                    "Give the agent a generated secret: keycard-agents sts hash-secret "
                    "--generate FILE",
                    client_id,
                    exc,
                )
            return
        logger.warning(
            "agent %r: its secret_hash is a scrypt hash; this process now checks the secret "
            "with a fast SHA-256 hash. To skip the slow first check after a restart, replace "
            "secret_hash with the output of: printf %%s SECRET | keycard-agents sts hash-secret",
            client_id,
        )

    async def _assertion(self, form: Form) -> AuthenticatedClient:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError(
                "invalid_request", f"client_assertion_type must be {ASSERTION_TYPE} (RFC 7523 §2.2)"
            )
        assertion = form.require("client_assertion")
        if len(assertion) > _MAX_ASSERTION:
            raise _invalid_client("client_assertion is too large")
        claims = _unverified_claims(assertion)
        client_id = form.get("client_id") or claims.get("iss")
        if not isinstance(client_id, str) or not client_id:
            raise _invalid_client("client_assertion has no 'iss' naming the client")
        agent = self._config.agent(client_id)
        if agent is None:
            raise _bad_credentials(f"client_assertion names unknown client {client_id[:100]!r}")
        if agent.auth != "private_key_jwt":
            raise _bad_credentials(
                f"agent {client_id!r} authenticates with a client secret, not private_key_jwt"
            )
        try:
            verified = await verify_jwt(
                assertion,
                keys=self._agent_keys(agent),
                issuers=(client_id,),
                audience=self._issuer,
                token_types=ASSERTION_TYPS,
                leeway=self._leeway,
                max_bytes=_MAX_ASSERTION,
                clock=self._clock,
                required_claims=("iss", "sub", "aud", "exp", "jti"),
            )
        except InvalidTokenError as exc:
            if exc.check in _PRE_SIGNATURE_CHECKS:
                raise _bad_credentials(f"client_assertion rejected ({exc.check}): {exc}") from exc
            hint = ""
            if exc.check == "audience":
                hint = f"; set aud to the issuer string {self._issuer!r} exactly (RFC 7523 §3)"
            raise _invalid_client(f"client_assertion rejected ({exc.check}): {exc}{hint}") from exc
        except (IssuerUnreachableError, ConfigurationError) as exc:
            raise _bad_credentials(
                f"cannot fetch the keys of agent {client_id!r} from its jwks_uri: {exc}"
            ) from exc
        if verified.get("sub") != client_id:
            raise _invalid_client("client_assertion 'sub' must equal its 'iss' (the client_id)")
        exp = float(verified["exp"])
        start = float(verified.get("iat", self._clock()))
        limit = self._config.client_assertion_max_lifetime
        if exp - start > limit + self._leeway or exp - self._clock() > limit + self._leeway:
            raise _invalid_client(
                f"client_assertion lives longer than {limit:g} s: make exp closer to iat"
            )
        jti = verified["jti"]
        if not isinstance(jti, str) or not jti:
            raise _invalid_client("client_assertion 'jti' must be a non-empty string")
        if self._shared is not None:  # one jti, once, over all replicas
            fresh = await self._shared.first_use(client_id, jti, exp + self._leeway)
        else:
            fresh = self.replay.check_and_remember(client_id, jti, exp + self._leeway)
        if not fresh:
            raise _invalid_client(
                f"client_assertion jti {jti[:64]!r} was already used: "
                "sign a fresh assertion (new jti) for every request"
            )
        return AuthenticatedClient(client_id=client_id, method="private_key_jwt", agent=agent)
