"""OpenTelemetry span attributes for delegation chains, and a small ``span`` helper.

Uses only the OpenTelemetry API (the SDK is the application's choice). Attribute names
live under ``keycard.`` and describe RFC 8693 delegation: the user (``sub``), the actor
chain of §4.1 ``act`` claims (current actor first), the ``txn`` shared by the whole
chain, the RFC 8707 target and the scopes asked for and granted. ``error.type`` follows
the OpenTelemetry semantic conventions. Never put a token in an attribute: a ``jti`` is
enough to correlate with the audit trail.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from keycard_agents._errors import OAuthError
from keycard_agents._principal import Principal

__all__ = [
    "ATTR_ACTORS",
    "ATTR_AGENT",
    "ATTR_CHAIN_DEPTH",
    "ATTR_DECISION",
    "ATTR_ERROR",
    "ATTR_JTI",
    "ATTR_SCOPES_GRANTED",
    "ATTR_SCOPES_REQUESTED",
    "ATTR_SKILL",
    "ATTR_TARGET",
    "ATTR_TASK_ID",
    "ATTR_TXN",
    "ATTR_USER",
    "TRACER_NAME",
    "principal_attributes",
    "span",
]

TRACER_NAME = "keycard_agents"

ATTR_TXN = "keycard.txn"
ATTR_USER = "keycard.user"
ATTR_AGENT = "keycard.agent"
ATTR_ACTORS = "keycard.actors"
ATTR_CHAIN_DEPTH = "keycard.chain.depth"
ATTR_TARGET = "keycard.target"
ATTR_SKILL = "keycard.skill"
ATTR_TASK_ID = "keycard.task.id"
ATTR_SCOPES_REQUESTED = "keycard.scopes.requested"
ATTR_SCOPES_GRANTED = "keycard.scopes.granted"
ATTR_DECISION = "keycard.decision"
ATTR_ERROR = "keycard.error"
ATTR_JTI = "keycard.jti"


def principal_attributes(principal: Principal | None) -> dict[str, AttributeValue]:
    """The attributes describing who a call is for: user, actor chain, ``txn``, ``jti``."""
    if principal is None:
        return {}
    attributes: dict[str, AttributeValue] = {
        ATTR_USER: principal.user,
        ATTR_ACTORS: list(principal.actors.subjects()),
        ATTR_CHAIN_DEPTH: principal.actors.depth,
    }
    if principal.txn is not None:
        attributes[ATTR_TXN] = principal.txn
    if principal.jti is not None:
        attributes[ATTR_JTI] = principal.jti
    return attributes


def _clean(attributes: Mapping[str, object]) -> dict[str, AttributeValue]:
    out: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, (str, bool, int, float)):
            out[key] = value
        elif isinstance(value, Sequence):
            out[key] = [str(v) for v in value]
        else:
            out[key] = str(value)
    return out


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    principal: Principal | None = None,
    attributes: Mapping[str, object] | None = None,
    tracer: Tracer | None = None,
) -> Iterator[Span]:
    """Start a current span with the principal's delegation attributes.

    ``None`` attribute values are dropped and sequences become lists of strings. An
    exception marks the span as an error with ``error.type`` (and ``keycard.error``, the
    OAuth error code, for :class:`~keycard_agents._errors.OAuthError`) but never records
    the message; cancellation (a ``BaseException``) is not an error.
    """
    merged = {**principal_attributes(principal), **_clean(attributes or {})}
    tracer = tracer if tracer is not None else trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        name,
        kind=kind,
        attributes=merged,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except Exception as exc:
            current.set_attribute("error.type", type(exc).__name__)
            if isinstance(exc, OAuthError):
                current.set_attribute(ATTR_ERROR, exc.error)
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
