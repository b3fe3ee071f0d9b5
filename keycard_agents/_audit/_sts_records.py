"""The token service's audit trail (protocols/delegation-profile.md §5: one record per request).

One :class:`AuditRecord` per issuance and per denial at the token endpoint:
who (user), through which agents (RFC 8693 §4.1 ``act`` chain, current first),
for which target (RFC 8707 resource), with which scopes, and why. Records hold
identifiers only (a ``jti``, never a token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from keycard_agents._audit._log import JsonlRecordLog, MemoryRecordLog, passes_filters

__all__ = ["AuditRecord", "AuditStore", "JsonlAuditStore", "MemoryAuditStore"]


class AuditRecord(BaseModel):
    """One decision of the token service.

    Fields the service could not know when it denied a request (for example the
    user, when the subject token did not verify) are ``None``. ``user_issuer`` is the
    issuer the user came from (RFC 9493 ``iss_sub``): ``user`` alone is not unique
    across identity providers.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    time: float
    grant_type: str | None = None
    decision: Literal["issued", "denied"]
    txn: str | None = None
    user: str | None = None
    user_issuer: str | None = None
    actors: tuple[str, ...] | None = None
    client_id: str | None = None
    target: str | None = None
    scopes_requested: tuple[str, ...] | None = None
    scopes_granted: tuple[str, ...] | None = None
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
        """Whether this record passes a query's filters (``agent`` = client or any actor)."""
        return passes_filters(
            self,
            involves=lambda a: a == self.client_id or a in (self.actors or ()),
            txn=txn,
            user=user,
            agent=agent,
            since=since,
            until=until,
        )


@runtime_checkable
class AuditStore(Protocol):
    """Where audit records go. Implementations must be safe to call concurrently."""

    async def append(self, record: AuditRecord) -> None: ...

    async def query(
        self,
        *,
        txn: str | None = None,
        user: str | None = None,
        agent: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[AuditRecord]: ...


class MemoryAuditStore(MemoryRecordLog[AuditRecord]):
    """In-memory audit store keeping the newest ``max_records`` records."""


class JsonlAuditStore(JsonlRecordLog[AuditRecord]):
    """Append-only JSON Lines file, one record per line.

    Reading skips lines that do not parse (a crash can leave a truncated last line).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, parse=AuditRecord.model_validate_json)
