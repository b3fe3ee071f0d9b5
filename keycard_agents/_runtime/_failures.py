"""One log line per failed task, with the reason an operator needs to act on it.

A task that fails on a framework error (the token service refused the exchange with an
RFC 6749 §5.2 / RFC 8693 §2.2.2 ``error`` such as ``invalid_client`` or
``invalid_target``, the token service or a dependency could not be reached, a dependency
the agent never declared) or on an exception of the skill itself is logged once, at
``WARNING``: task id, skill, ``txn``, the calling user and actor, the error code and a
short reason. Never a token; the message of an unexpected exception is left out too (it
may hold request data): only its type.
"""

from __future__ import annotations

from keycard_agents._errors import (
    ConfigurationError,
    KeycardError,
    OAuthError,
    TransportError,
)
from keycard_agents._jose._principal import Principal
from keycard_agents._logs import get_logger

__all__ = ["failure_code", "log_failed_task"]

logger = get_logger("keycard_agents.runtime")
_MAX_REASON = 300


def failure_code(exc: BaseException) -> str:
    """A short, stable name for what went wrong: the OAuth ``error`` when there is one."""
    if isinstance(exc, OAuthError):
        return exc.error
    if isinstance(exc, TransportError):
        return "unreachable"
    if isinstance(exc, ConfigurationError):
        return "configuration_error"
    return type(exc).__name__


def log_failed_task(
    principal: Principal | None, task_id: str, skill: str, exc: BaseException
) -> None:
    """Log the failure of ``task_id`` on one line (``WARNING``)."""
    code = failure_code(exc)
    reason = str(exc) if isinstance(exc, KeycardError) else f"unexpected {type(exc).__name__}"
    if len(reason) > _MAX_REASON:
        reason = reason[: _MAX_REASON - 3] + "..."
    txn = principal.txn if principal is not None else None
    user = principal.user if principal is not None else None
    # who called: the current actor (RFC 8693 §4.1), else the client the user signed in with
    chain = principal.chain if principal is not None else ()
    actor = chain[-1] if len(chain) > 1 else (principal.client_id if principal else None)
    logger.warning(
        "task %s failed: skill=%s txn=%s user=%s caller=%s error=%s reason=%s",
        task_id,
        skill,
        txn,
        user,
        actor,
        code,
        reason,
        extra={
            "task_id": task_id,
            "skill": skill,
            "txn": txn,
            "agent": actor,
            "error": code,
            "reason": reason,
        },
    )
