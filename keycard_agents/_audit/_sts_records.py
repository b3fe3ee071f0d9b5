"""The token service's audit trail (protocols/delegation-profile.md §5: one record per request).

One :class:`AuditRecord` per issuance and per denial at the token endpoint:
who (user), through which agents (RFC 8693 §4.1 ``act`` chain, current first),
for which target (RFC 8707 resource), with which scopes, and why. Records hold
identifiers only (a ``jti``, never a token).

The in-memory store keeps what matters for security when it must forget: issued tokens,
denials, and unauthenticated junk each have their own bound, so a flood of junk requests
cannot push out the evidence of a refused exchange or of a failed client authentication,
and repeated identical unauthenticated denials are kept as one record with a count.
"""

from __future__ import annotations

import heapq
from collections import deque
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from keycard_agents._audit._log import JsonlRecordLog, RecordRows, passes_filters

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
    resource: str | None = None
    """The requesting agent's own resource URL (RFC 8707), when the client is an agent:
    what names the agent in a tree drawn from this file alone."""
    target: str | None = None
    scopes_requested: tuple[str, ...] | None = None
    scopes_granted: tuple[str, ...] | None = None
    error: str | None = None
    reason: str | None = None
    jti: str | None = None
    connection: str | None = None
    """For an exchange answered with a user's third-party token: the connection's name
    (``jti`` is then the upstream token's ``sha256:`` thumbprint, not one of ours)."""
    repeated: int = 1
    """How many identical denials this record stands for (unauthenticated denials that
    repeat within the in-memory store's coalescing window are kept once)."""
    last_time: float | None = None
    """When the last of the ``repeated`` denials happened (``None`` for a single one)."""

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


#: Errors that record an attempt to authenticate (a wrong secret, throttled guessing):
#: evidence worth keeping even when no client was authenticated.
_CREDENTIAL_ERRORS = frozenset({"invalid_client", "temporarily_unavailable"})
_MAX_COALESCING = 4096


class _Repeats:
    """How many identical denials a kept record stands for, and when the last came."""

    __slots__ = ("count", "last")

    def __init__(self, at: float) -> None:
        self.count = 1
        self.last = at


class MemoryAuditStore:
    """In-memory audit store with a separate bound for each kind of record.

    - ``max_records``: records of issued tokens (the newest are kept);
    - ``max_denied``: denials of an authenticated client, and failed or throttled client
      authentications (default: ``max_records``);
    - ``max_unauthenticated``: other denials of requests that named no client (malformed
      requests, unsupported grants).

    An unauthenticated denial identical to one kept less than ``coalesce_window`` seconds
    before (all fields but the time) is not stored again: the kept record's ``repeated``
    count and ``last_time`` grow instead. Records rest as rows the garbage collector does
    not track (:class:`~keycard_agents._audit._log.RecordRows`), each with its place in
    the order of appends.
    """

    def __init__(
        self,
        *,
        max_records: int = 100_000,
        max_denied: int | None = None,
        max_unauthenticated: int = 10_000,
        coalesce_window: float = 60.0,
    ) -> None:
        bounds = (max_records, max_denied or max_records, max_unauthenticated)
        if min(bounds) < 1:
            raise ValueError("max_records, max_denied and max_unauthenticated must be >= 1")
        self._bounds = {"issued": bounds[0], "denied": bounds[1], "unauthenticated": bounds[2]}
        # Per kind, oldest first: the rows, and each one's place in the order of appends.
        self._kept: dict[str, deque[Any]] = {kind: deque() for kind in self._bounds}
        self._places: dict[str, deque[int]] = {kind: deque() for kind in self._bounds}
        self._rows: RecordRows[AuditRecord] = RecordRows()
        self._window = coalesce_window
        # Denials that identical ones may join, while kept: their places by their fields
        # but the time, and their counts by their places.
        self._recent: dict[str, int] = {}
        self._repeats: dict[int, _Repeats] = {}
        self._seq = 0

    @staticmethod
    def _kind(record: AuditRecord) -> str:
        if record.decision == "issued":
            return "issued"
        if record.client_id is not None or record.error in _CREDENTIAL_ERRORS:
            return "denied"
        return "unauthenticated"

    async def append(self, record: AuditRecord) -> None:
        kind = self._kind(record)
        key = None
        if record.decision == "denied" and record.client_id is None:
            key = record.model_dump_json(exclude={"time", "repeated", "last_time"})
            seen = self._repeats.get(self._recent.get(key, 0))
            if seen is not None and record.time - seen.last <= self._window:
                seen.count += 1
                seen.last = max(seen.last, record.time)
                return
        self._seq += 1
        kept, places = self._kept[kind], self._places[kind]
        if len(kept) >= self._bounds[kind]:
            kept.popleft()
            self._repeats.pop(places.popleft(), None)
        kept.append(self._rows.row(record))
        places.append(self._seq)
        if key is not None:
            if len(self._recent) >= _MAX_COALESCING:
                self._recent = {
                    k: place
                    for k, place in self._recent.items()
                    if (r := self._repeats.get(place)) is not None
                    and record.time - r.last <= self._window
                }
                if len(self._recent) >= _MAX_COALESCING:
                    self._recent.clear()
            self._recent[key] = self._seq
            self._repeats[self._seq] = _Repeats(record.time)

    async def query(
        self,
        *,
        txn: str | None = None,
        user: str | None = None,
        agent: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[AuditRecord]:
        by_kind = (
            zip(reversed(self._places[kind]), reversed(kept), strict=True)
            for kind, kept in self._kept.items()
        )
        newest_first = heapq.merge(*by_kind, key=itemgetter(0), reverse=True)
        return self._rows.select(
            ((row, self._changes(seq)) for seq, row in newest_first),
            txn=txn,
            user=user,
            agent=agent,
            since=since,
            until=until,
            limit=limit,
        )

    def _changes(self, seq: int) -> dict[str, Any] | None:
        """The count of identical denials the record ``seq`` stands for, if more than one."""
        repeats = self._repeats.get(seq)
        if repeats is None or repeats.count == 1:
            return None
        return {"repeated": repeats.count, "last_time": repeats.last}

    def __len__(self) -> int:
        return sum(len(kept) for kept in self._kept.values())


class JsonlAuditStore(JsonlRecordLog[AuditRecord]):
    """Append-only JSON Lines file, one record per line.

    Reading skips lines that do not parse (a crash can leave a truncated last line).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, parse=AuditRecord.model_validate_json)
