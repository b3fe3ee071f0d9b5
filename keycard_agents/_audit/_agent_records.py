"""Each agent's own audit record of the calls it served and made.

The agent-side half of the audit trail. A *served* record is one inbound A2A task
(A2A 1.0 §4.1: task id, skill, outcome) with the verified caller: user, RFC 8693 §4.1
actor chain (current actor first) and ``txn``. A *call* record is one outbound call to a
declared dependency (its RFC 8707 resource URL) with the scopes asked for and granted.
Records hold identifiers only, never a token. The store query matches the token
service's :class:`~keycard_agents._audit._sts_records.AuditStore` so both merge in one trail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from keycard_agents._audit._log import JsonlRecordLog, MemoryRecordLog, passes_filters
from keycard_agents._jose._principal import Principal

__all__ = [
    "AgentAuditRecord",
    "AgentAuditStore",
    "AuditRecorder",
    "JsonlAgentAuditStore",
    "MemoryAgentAuditStore",
]


class AgentAuditRecord(BaseModel):
    """One call an agent served (``kind="served"``) or made (``kind="call"``).

    ``agent`` is the recording agent's client id and ``resource`` its own URL (so that
    token service records, which name targets by URL, join up with it). ``actors`` is the
    inbound token's actor chain, current first. ``time`` is when the call started,
    ``ended`` when it finished (``None`` when it was recorded before finishing).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["served", "call"]
    agent: str
    resource: str | None = None
    time: float
    ended: float | None = None
    txn: str | None = None
    user: str | None = None
    user_issuer: str | None = None  # where the user came from (RFC 9493 iss_sub)
    actors: tuple[str, ...] = ()
    task_id: str | None = None
    skill: str | None = None
    target: str | None = None
    dependency: str | None = None
    scopes_requested: tuple[str, ...] | None = None
    scopes_granted: tuple[str, ...] | None = None
    outcome: str
    error: str | None = None
    reason: str | None = None
    jti: str | None = None

    def matches(
        self,
        *,
        txn: str | None = None,
        user: str | None = None,
        agent: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> bool:
        """Whether this record passes a query's filters (``agent`` = recorder or any actor)."""
        return passes_filters(
            self,
            involves=lambda a: a == self.agent or a in self.actors,
            txn=txn,
            user=user,
            agent=agent,
            since=since,
            until=until,
        )


@runtime_checkable
class AgentAuditStore(Protocol):
    """Where an agent's audit records go. Implementations must be safe to call concurrently."""

    async def append(self, record: AgentAuditRecord) -> None: ...

    async def query(
        self,
        *,
        txn: str | None = None,
        user: str | None = None,
        agent: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[AgentAuditRecord]: ...


class MemoryAgentAuditStore(MemoryRecordLog[AgentAuditRecord]):
    """In-memory store keeping the newest ``max_records`` records."""


class JsonlAgentAuditStore(JsonlRecordLog[AgentAuditRecord]):
    """Append-only JSON Lines file; lines that do not parse are skipped on reading."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, parse=AgentAuditRecord.model_validate_json)


def _scopes(values: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(dict.fromkeys(values))


class AuditRecorder:
    """What the runtime and the delegation layer call to record an agent's calls.

    ``agent`` is this agent's client id, ``resource`` its own resource URL. Pass the
    verified :class:`~keycard_agents._jose._principal.Principal` of the inbound call (``None``
    for an anonymous one); the recorder keeps its user, actor chain, ``txn`` and ``jti``.
    Times are seconds since the epoch from ``clock`` unless given.
    """

    def __init__(
        self,
        *,
        agent: str,
        store: AgentAuditStore | None = None,
        resource: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent = agent
        self.resource = resource
        self.store: AgentAuditStore = store if store is not None else MemoryAgentAuditStore()
        self._clock = clock

    def now(self) -> float:
        """The recorder's clock, for callers that time a call themselves."""
        return self._clock()

    async def record_served(
        self,
        *,
        principal: Principal | None,
        task_id: str,
        skill: str,
        outcome: str,
        started: float,
        ended: float | None = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> AgentAuditRecord:
        """Record one inbound task: ``outcome`` is e.g. ``completed``, ``failed``, ``canceled``."""
        record = AgentAuditRecord(
            kind="served",
            agent=self.agent,
            resource=self.resource,
            time=started,
            ended=self._clock() if ended is None else ended,
            txn=None if principal is None else principal.txn,
            user=None if principal is None else principal.user,
            user_issuer=None if principal is None else principal.origin,
            actors=() if principal is None else principal.actors.subjects(),
            task_id=task_id,
            skill=skill,
            outcome=outcome,
            error=error,
            reason=reason,
            jti=None if principal is None else principal.jti,
        )
        await self.store.append(record)
        return record

    async def record_call(
        self,
        *,
        principal: Principal | None,
        target: str,
        outcome: str,
        started: float,
        ended: float | None = None,
        dependency: str | None = None,
        scopes_requested: Sequence[str] | None = None,
        scopes_granted: Sequence[str] | None = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> AgentAuditRecord:
        """Record one outbound call on behalf of ``principal`` to the resource ``target``.

        ``outcome`` is e.g. ``completed``, ``failed``, or ``denied`` when the token service
        refused the exchange (then ``error`` is the OAuth error code and ``reason`` its
        ``error_description``).
        """
        record = AgentAuditRecord(
            kind="call",
            agent=self.agent,
            resource=self.resource,
            time=started,
            ended=self._clock() if ended is None else ended,
            txn=None if principal is None else principal.txn,
            user=None if principal is None else principal.user,
            user_issuer=None if principal is None else principal.origin,
            actors=() if principal is None else principal.actors.subjects(),
            target=target,
            dependency=dependency,
            scopes_requested=_scopes(scopes_requested),
            scopes_granted=_scopes(scopes_granted),
            outcome=outcome,
            error=error,
            reason=reason,
        )
        await self.store.append(record)
        return record

    def __repr__(self) -> str:
        return f"AuditRecorder(agent={self.agent!r}, store={type(self.store).__name__})"
