"""The token service's audit trail (DESIGN §4 step 7).

One :class:`AuditRecord` per issuance and per denial at the token endpoint:
who (user), through which agents (RFC 8693 §4.1 ``act`` chain, current first),
for which target (RFC 8707 resource), with which scopes, and why. Records hold
identifiers only (a ``jti``, never a token).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["AuditRecord", "AuditStore", "JsonlAuditStore", "MemoryAuditStore"]


class AuditRecord(BaseModel):
    """One decision of the token service.

    Fields the service could not know when it denied a request (for example the
    user, when the subject token did not verify) are ``None``.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    time: float
    grant_type: str | None = None
    decision: Literal["issued", "denied"]
    txn: str | None = None
    user: str | None = None
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
        if txn is not None and self.txn != txn:
            return False
        if user is not None and self.user != user:
            return False
        if agent is not None and self.client_id != agent and agent not in (self.actors or ()):
            return False
        if since is not None and self.time < since:
            return False
        return not (until is not None and self.time > until)


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


class MemoryAuditStore:
    """In-memory audit store keeping the newest ``max_records`` records."""

    def __init__(self, *, max_records: int = 100_000) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self._records: deque[AuditRecord] = deque(maxlen=max_records)

    async def append(self, record: AuditRecord) -> None:
        self._records.append(record)

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
        return _select(self._records, txn, user, agent, since, until, limit)

    def __len__(self) -> int:
        return len(self._records)


class JsonlAuditStore:
    """Append-only JSON Lines file, one record per line.

    Reading skips lines that do not parse (a crash can leave a truncated last line).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = anyio.Lock()

    async def append(self, record: AuditRecord) -> None:
        line = record.model_dump_json() + "\n"
        async with self._lock:
            await anyio.to_thread.run_sync(self._write, line)

    def _write(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            # A previous crash may have left a partial line: start on a fresh one.
            if fh.tell() > 0 and not self._ends_with_newline():
                fh.write("\n")
            fh.write(line)
            fh.flush()

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, 2)
            return fh.read(1) == b"\n"

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
        async with self._lock:
            records = await anyio.to_thread.run_sync(self._read)
        return _select(records, txn, user, agent, since, until, limit)

    def _read(self) -> list[AuditRecord]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        records: list[AuditRecord] = []
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                records.append(AuditRecord.model_validate_json(line))
            except (ValidationError, json.JSONDecodeError, UnicodeDecodeError):
                continue
        return records


def _select(
    records: Sequence[AuditRecord] | deque[AuditRecord],
    txn: str | None,
    user: str | None,
    agent: str | None,
    since: float | None,
    until: float | None,
    limit: int,
) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    for record in records:
        if record.matches(txn=txn, user=user, agent=agent, since=since, until=until):
            out.append(record)
    return out[-limit:] if limit > 0 else []
