"""Inbound authentication of A2A calls with OAuth 2.0 bearer tokens.

Implements RFC 6750 §2.1 (the ``Authorization: Bearer`` request header) and §3 / §3.1 (the
``WWW-Authenticate`` challenge and its ``error`` codes: none when no credentials were sent,
``invalid_token`` for a rejected token, ``insufficient_scope`` with ``scope`` for a token
that lacks scopes), and RFC 9728 §5.1 (the ``resource_metadata`` challenge parameter that
points clients at the protected resource metadata).

Tokens are verified by the token layer (one call that checks signature, issuer, audience,
lifetime and type); this module only extracts the token, calls it with the agent's
canonical URL as audience, and turns each outcome into the right status and challenge.
Challenges and messages never contain the token; only the name of the failed check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from keycard_agents._errors import (
    AuthenticationError,
    InsufficientScopeError,
    InvalidTokenError,
    IssuerUnreachableError,
    KeycardError,
    UserRequiredError,
)
from keycard_agents._jose._principal import Principal
from keycard_agents._oauth._challenge import quote as _quote

__all__ = [
    "AuthFailure",
    "BearerAuthenticator",
    "BearerVerifier",
    "Caller",
    "MissingCredentialsError",
    "auth_failure",
    "bearer_token",
]

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Generous upper bound on the header; the token layer applies its own token size limit.
_MAX_AUTHORIZATION = 16 * 1024


@dataclass(frozen=True)
class Caller:
    """Who is calling, as established by the server after verifying the bearer token.

    ``principal`` is ``None`` for an anonymous call (allowed only for skills declared
    ``anonymous=True``). ``token`` is the inbound bearer token, kept for token exchange by
    the delegation layer; it is never shown in a repr, a log line or an error.
    ``extensions`` are the URIs of the A2A extensions the request activated (its
    ``A2A-Extensions`` service parameter, A2A 1.0 §3.3.4, among those the agent supports).
    """

    principal: Principal | None
    token: str | None = field(default=None, repr=False)
    extensions: frozenset[str] = frozenset()

    @property
    def owner(self) -> str | None:
        """The key that tasks of this caller are stored under: the user (origin issuer and
        subject) and the actor chain; ``None`` when anonymous."""
        if self.principal is None:
            return None
        return self.principal.task_owner


class BearerVerifier(Protocol):
    """What the server needs from the token layer (``keycard_agents._jose._jwt.TokenVerifier``)."""

    async def verify(
        self, token: str, *, audience: str, required_scopes: Sequence[str] = ()
    ) -> Principal: ...


class MissingCredentialsError(AuthenticationError):
    """The request carried no bearer token (RFC 6750 §3.1: no ``error`` in the challenge)."""


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The bearer token of an ``Authorization`` header, or ``None`` when there is none.

    Another scheme (``Basic ...``) counts as no bearer credentials. A ``Bearer`` header
    whose token is empty or not RFC 6750 ``b64token`` syntax raises InvalidTokenError
    with check ``malformed``.
    """
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.strip()
    if not token or len(value) > _MAX_AUTHORIZATION or not _B64TOKEN.fullmatch(token):
        raise InvalidTokenError(
            "The Authorization header is not 'Bearer <token>' with a single token.",
            check="malformed",
        )
    return token


@dataclass(frozen=True)
class AuthFailure:
    """How to answer a failed authentication: status, challenge and a safe message."""

    status_code: int
    www_authenticate: str | None
    message: str
    error: str | None = None


def auth_failure(exc: KeycardError, *, resource_metadata_url: str) -> AuthFailure:
    """Map an authentication error to its HTTP answer (RFC 6750 §3, RFC 9728 §5.1)."""
    metadata = f"resource_metadata={_quote(resource_metadata_url)}"
    if isinstance(exc, UserRequiredError):
        description = "this operation needs a token issued for a user, not a client"
        return AuthFailure(
            status_code=403,
            www_authenticate=(
                f'Bearer error="insufficient_scope", error_description={_quote(description)}, '
                f"{metadata}"
            ),
            message="The access token's subject is a client, not a user: " + description + ".",
            error="insufficient_scope",
        )
    if isinstance(exc, InsufficientScopeError):
        missing = " ".join(exc.missing or exc.required)
        scope = " ".join(exc.required or exc.missing)
        return AuthFailure(
            status_code=403,
            www_authenticate=(
                f'Bearer error="insufficient_scope", scope={_quote(scope)}, '
                f"error_description={_quote('missing scopes: ' + missing)}, {metadata}"
            ),
            message=f"The access token lacks the required scopes: {missing}.",
            error="insufficient_scope",
        )
    if isinstance(exc, InvalidTokenError):
        description = f"the access token failed the {exc.check} check"
        return AuthFailure(
            status_code=401,
            www_authenticate=(
                f'Bearer error="invalid_token", error_description={_quote(description)}, {metadata}'
            ),
            message=f"The access token was rejected: it failed the {exc.check} check.",
            error="invalid_token",
        )
    if isinstance(exc, IssuerUnreachableError):
        return AuthFailure(
            status_code=503,
            www_authenticate=None,
            message="The token issuer could not be reached to verify the token; retry later.",
        )
    # Missing credentials, or a skill that needs a user while the caller is anonymous.
    return AuthFailure(
        status_code=401,
        www_authenticate=f"Bearer {metadata}",
        message=(
            "Authentication required: send 'Authorization: Bearer <token>' with a token "
            "issued for this agent (see the resource_metadata URL)."
        ),
    )


class BearerAuthenticator:
    """Establishes the caller of a request to one agent from its bearer token.

    ``audience`` is the agent's canonical URL: a token is accepted only when it was issued
    for it. When ``anonymous_allowed`` is false (no skill of the agent is anonymous), a
    request without a token is refused here; otherwise it goes on with an anonymous caller
    and the runtime refuses it for any skill that is not anonymous. A token that is sent
    is always verified: an invalid token is never downgraded to an anonymous call.
    """

    def __init__(
        self,
        *,
        verifier: BearerVerifier,
        audience: str,
        resource_metadata_url: str,
        anonymous_allowed: bool = False,
    ) -> None:
        self._verifier = verifier
        self.audience = audience
        self.resource_metadata_url = resource_metadata_url
        self.anonymous_allowed = anonymous_allowed

    async def caller(self, headers: Mapping[str, str]) -> Caller:
        """The verified caller; raises MissingCredentialsError, InvalidTokenError, ..."""
        token = bearer_token(headers)
        if token is None:
            if not self.anonymous_allowed:
                raise MissingCredentialsError(
                    "This agent requires a bearer token.",  # not shown: see auth_failure
                )
            return Caller(principal=None)
        try:
            principal = await self._verifier.verify(token, audience=self.audience)
        except (InvalidTokenError, InsufficientScopeError, IssuerUnreachableError):
            raise
        except AuthenticationError as exc:
            raise InvalidTokenError(
                "The access token was rejected.",  # not shown: see auth_failure
                check="claims",
            ) from exc
        return Caller(principal=principal, token=token)

    def failure(self, exc: KeycardError) -> AuthFailure:
        return auth_failure(exc, resource_metadata_url=self.resource_metadata_url)
