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
    "RemoteAuthenticationError",
    "RemoteTaskError",
    "ResourceAccessError",
    "StoreUnavailableError",
    "TraceNotFoundError",
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


class UserRequiredError(InsufficientScopeError):
    """A valid token whose subject is a client, not a user, for an operation that needs a
    user (HTTP 403): a client-credentials token (RFC 9068 §2.2: ``sub`` = the client)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, required=(), missing=())


class OAuthError(KeycardError):
    """An OAuth 2.0 error (RFC 6749 §5.2, RFC 8693 §2.2.2) with its wire fields."""

    def __init__(
        self,
        error: str,
        error_description: str,
        *,
        status_code: int = 400,
        error_uri: str | None = None,
    ) -> None:
        super().__init__(f"{error}: {error_description}")
        self.error = error
        self.error_description = error_description
        self.status_code = status_code
        #: RFC 6749 §5.2 ``error_uri``: a page for the user. For ``consent_required`` from
        #: a token service with connections, it is where the user connects the account.
        self.error_uri = error_uri


class DelegationDeniedError(OAuthError):
    """The token service refused to issue a delegated token (a policy decision).

    Never retried: the same request gets the same answer until the policy, the
    scopes or the subject token change.
    """


class TransportError(KeycardError):
    """A network call failed after its retries (connection, timeout, 5xx)."""


class IssuerUnreachableError(TransportError):
    """The token issuer's metadata or keys could not be fetched."""


class StoreUnavailableError(TransportError):
    """A shared store (Redis) could not be reached or answered with an error.

    Requests that need the store fail closed with it (HTTP 503, retry later); nothing
    that depends on shared state (a replayed assertion, a used code) is ever accepted
    in its absence.
    """


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


class RemoteAuthenticationError(KeycardError):
    """A remote agent or API refused the credential we sent (HTTP 401 or 403).

    ``error`` and ``error_description`` come from its RFC 6750 ``WWW-Authenticate``
    challenge (``invalid_token``, ``insufficient_scope``, or ``None`` when it sent no
    error code); ``resource_metadata`` is the RFC 9728 metadata URL it pointed at.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error: str | None = None,
        error_description: str | None = None,
        resource_metadata: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.error_description = error_description
        self.resource_metadata = resource_metadata


class RemoteTaskError(KeycardError):
    """A remote agent's task did not complete.

    ``state`` is its A2A task state (``TASK_STATE_FAILED``, ``TASK_STATE_REJECTED``,
    ``TASK_STATE_CANCELED``, or an interrupted ``TASK_STATE_INPUT_REQUIRED`` /
    ``TASK_STATE_AUTH_REQUIRED``), ``reason`` the text of the agent's status message,
    ``url`` the page its status message links to (for AUTH_REQUIRED: where the user
    connects an account or consents; then send a message to ``task_id`` to resume).
    """

    def __init__(
        self,
        message: str,
        *,
        state: str,
        task_id: str | None,
        reason: str | None,
        url: str | None = None,
        context_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.state = state
        self.task_id = task_id
        self.reason = reason
        self.url = url
        self.context_id = context_id


class ResourceAccessError(KeycardError):
    """``AccessContext.access(resource)`` for a resource whose token could not be obtained.

    ``error`` is the OAuth error code (or ``transport_error``, ``configuration_error``);
    the original failure is the ``__cause__`` when there was one.
    """

    def __init__(self, message: str, *, resource: str, error: str) -> None:
        super().__init__(message)
        self.resource = resource
        self.error = error


class TraceNotFoundError(KeycardError):
    """No audit record mentions the requested transaction (``txn``).

    Check the id (it is the ``txn`` claim of any token in the chain) and that the audit
    store queried is the one the token service (or the agents) wrote to.
    """
