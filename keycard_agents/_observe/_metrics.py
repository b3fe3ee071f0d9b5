"""OpenTelemetry metrics of delegation: exchanges, denials, verification, latency, caches.

Uses only the OpenTelemetry metrics API (the SDK and its exporters are the
application's choice): without an SDK every instrument is the API's no-op, so recording
costs a function call. Instruments are made on first use from the global meter
provider, under the meter ``keycard_agents``. Attribute values are identifiers and
OAuth error codes (RFC 6749 §5.2, RFC 8693 §2.2.2), never a token or a user name, so
their cardinality stays bounded.

Instruments (units per the OpenTelemetry semantic conventions: seconds for durations):

- ``keycard.token_service.requests`` (counter): token endpoint decisions, by
  ``keycard.grant_type`` (``token-exchange``, ``authorization_code``,
  ``client_credentials``, ``other``), ``keycard.decision`` (``issued`` / ``denied``) and
  ``error.type`` (the OAuth ``error`` of a denial);
- ``keycard.token_service.request.duration`` (histogram, s): the same requests' latency;
- ``keycard.token.verification.failures`` (counter): refused tokens, by
  ``keycard.check`` (``signature``, ``audience``, ``expired``...) and ``keycard.verifier``
  (``agent`` or ``token_service``);
- ``keycard.token.verification.duration`` (histogram, s): an agent's verification;
- ``keycard.exchange.duration`` (histogram, s): an agent's token requests to the token
  service, by ``keycard.outcome`` (``ok`` / ``error``);
- ``keycard.cache.lookups`` (counter): cache lookups by ``keycard.cache``
  (``exchange``: exchanged tokens; ``verification``: verified inbound tokens) and
  ``keycard.cache.result`` (``hit``, ``miss``, ``coalesced``); a cache's hit ratio is
  its ``hit`` over all its lookups;
- ``keycard.skill.duration`` (histogram, s): skill runs by ``keycard.skill`` and
  ``keycard.task.state``;
- ``keycard.tasks.stored`` (observable gauge): tasks held by each agent's task store,
  by ``keycard.agent``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation

from keycard_agents._version import __version__

__all__ = [
    "METER_NAME",
    "record_cache_lookup",
    "record_exchange",
    "record_skill",
    "record_token_request",
    "record_verification",
    "record_verification_failure",
    "watch_task_store",
]

METER_NAME = "keycard_agents"
#: Histogram buckets in seconds: a verification takes ~0.1 ms, an exchange a few ms,
#: a skill anything up to minutes.
_SECONDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip


@dataclass
class _Instruments:
    requests: Counter
    request_duration: Histogram
    verification_failures: Counter
    verification_duration: Histogram
    exchange_duration: Histogram
    cache_lookups: Counter
    skill_duration: Histogram


_instruments: _Instruments | None = None
_stores: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _observe_stores(options: CallbackOptions) -> Iterable[Observation]:
    for store, agent in list(_stores.items()):
        try:
            size = len(store)
        except Exception:  # noqa: S112 - a failing store must not break the export
            continue
        yield Observation(size, {"keycard.agent": agent})


def _get() -> _Instruments:
    global _instruments
    if _instruments is None:
        meter = metrics.get_meter(METER_NAME, __version__)
        _instruments = _Instruments(
            requests=meter.create_counter(
                "keycard.token_service.requests",
                unit="{request}",
                description="Token endpoint requests decided, by grant, decision and error",
            ),
            request_duration=meter.create_histogram(
                "keycard.token_service.request.duration",
                unit="s",
                explicit_bucket_boundaries_advisory=_SECONDS,
                description="Time the token service took to decide a token request",
            ),
            verification_failures=meter.create_counter(
                "keycard.token.verification.failures",
                unit="{token}",
                description="Tokens refused, by the check that refused them",
            ),
            verification_duration=meter.create_histogram(
                "keycard.token.verification.duration",
                unit="s",
                explicit_bucket_boundaries_advisory=_SECONDS,
                description="Time an agent took to verify an inbound token",
            ),
            exchange_duration=meter.create_histogram(
                "keycard.exchange.duration",
                unit="s",
                explicit_bucket_boundaries_advisory=_SECONDS,
                description="Time an agent's token request to the token service took",
            ),
            cache_lookups=meter.create_counter(
                "keycard.cache.lookups",
                unit="{lookup}",
                description="Cache lookups (exchanged and verified tokens): hit, miss, coalesced",
            ),
            skill_duration=meter.create_histogram(
                "keycard.skill.duration",
                unit="s",
                explicit_bucket_boundaries_advisory=_SECONDS,
                description="Time a skill ran, by skill and final task state",
            ),
        )
        meter.create_observable_gauge(
            "keycard.tasks.stored",
            callbacks=[_observe_stores],
            unit="{task}",
            description="Tasks held by each agent's task store",
        )
    return _instruments


def record_token_request(grant: str, decision: str, error: str | None, seconds: float) -> None:
    """One decision of the token endpoint."""
    attributes = {"keycard.grant_type": grant, "keycard.decision": decision}
    if error is not None:
        attributes["error.type"] = error
    instruments = _get()
    instruments.requests.add(1, attributes)
    instruments.request_duration.record(max(seconds, 0.0), attributes)


def record_verification(seconds: float, *, ok: bool) -> None:
    """An agent's verification of an inbound token (latency)."""
    _get().verification_duration.record(
        max(seconds, 0.0), {"keycard.outcome": "ok" if ok else "error"}
    )


def record_verification_failure(check: str, verifier: str) -> None:
    """A token refused by ``check``, at an ``agent`` or the ``token_service``."""
    _get().verification_failures.add(1, {"keycard.check": check, "keycard.verifier": verifier})


def record_exchange(seconds: float, *, grant: str, ok: bool) -> None:
    """One token request an agent sent to the token service."""
    _get().exchange_duration.record(
        max(seconds, 0.0), {"keycard.grant_type": grant, "keycard.outcome": "ok" if ok else "error"}
    )


def record_cache_lookup(result: str, *, cache: str = "exchange") -> None:
    """``hit``, ``miss`` or ``coalesced`` (waited for an identical request in flight) in
    the ``exchange`` or ``verification`` cache."""
    _get().cache_lookups.add(1, {"keycard.cache": cache, "keycard.cache.result": result})


def record_skill(skill: str, state: str, seconds: float) -> None:
    """One run of a skill and the task state it ended in."""
    _get().skill_duration.record(
        max(seconds, 0.0), {"keycard.skill": skill, "keycard.task.state": state}
    )


def watch_task_store(store: object, agent: str) -> None:
    """Report ``len(store)`` as ``keycard.tasks.stored`` while the store lives."""
    _get()
    if hasattr(type(store), "__len__"):
        _stores[store] = agent
