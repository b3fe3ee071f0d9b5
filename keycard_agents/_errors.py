"""The exception hierarchy: one root, a family per kind of failure.

Messages say what happened and what to do about it. None ever carries a token, a
secret or a private key; a ``jti`` or key thumbprint is enough to correlate.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "DelegationDeniedError",
    "InsufficientScopeError",
    "InteractionRequiredError",
    "InvalidTokenError",
    "InvalidTokenResponseError",
    "IssuerUnreachableError",
    "KeycardError",
    "OAuthError",
    "TransportError",
]


class KeycardError(Exception):
    """Root of every error keycard-agents raises."""


class ConfigurationError(KeycardError):
    """A setting is missing, malformed, or contradicts another one.

    ``setting`` names the offending setting (a field path, argument or environment
    variable) so the message can point the operator at it.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class AuthenticationError(KeycardError):
    """An inbound credential was rejected."""


class InvalidTokenError(AuthenticationError):
    """A token failed verification.

    ``check`` names the check that failed, one of: ``malformed``, ``size``,
    ``algorithm``, ``type``, ``unknown_key``, ``signature``, ``issuer``,
    ``audience``, ``expired``, ``not_yet_valid``, ``issued_in_future``,
    ``claims``, ``depth``.
    """

    def __init__(self, message: str, *, check: str) -> None:
        super().__init__(message)
        self.check = check


class InsufficientScopeError(AuthenticationError):
    """A valid token lacks scopes the operation requires (HTTP 403)."""

    def __init__(self, message: str, *, required: tuple[str, ...], missing: tuple[str, ...]):
        super().__init__(message)
        self.required = required
        self.missing = missing


class OAuthError(KeycardError):
    """An OAuth 2.0 error (RFC 6749 §5.2, RFC 8693 §2.2.2) with its wire fields."""

    def __init__(self, error: str, error_description: str, *, status_code: int = 400) -> None:
        super().__init__(f"{error}: {error_description}")
        self.error = error
        self.error_description = error_description
        self.status_code = status_code


class DelegationDeniedError(OAuthError):
    """The token service refused to issue a delegated token (a policy decision).

    Never retried: the same request gets the same answer until the policy, the
    scopes or the subject token change.
    """


class TransportError(KeycardError):
    """A network call failed after its retries (connection, timeout, 5xx)."""


class IssuerUnreachableError(TransportError):
    """The token issuer's metadata or keys could not be fetched."""


class InteractionRequiredError(DelegationDeniedError):
    """The token service needs the user first: consent or sign-in (``error`` is
    ``interaction_required`` or ``consent_required``).

    The agent runtime reports this as ``TASK_STATE_AUTH_REQUIRED``; it is a signal to
    the user's client, never a grant.
    """


class InvalidTokenResponseError(TransportError):
    """The token service answered, but its answer is not a usable token response.

    Examples: a body that is not JSON, a missing ``access_token``, a wrong
    ``issued_token_type`` or ``token_type``, a missing or non-positive ``expires_in``.
    Not retried: the token service or the issuer configuration needs fixing.
    ``status_code`` is the HTTP status of the answer.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
