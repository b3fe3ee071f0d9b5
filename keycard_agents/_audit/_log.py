"""Append-only stores of audit records: a bounded in-memory log and a JSON Lines file.

One implementation for both halves of the audit trail: the token service's decisions
(``_sts_records.AuditRecord``) and each agent's own records (``_agent_records``). A
record type brings its own ``matches(...)`` for the query filters; records are pydantic
models holding identifiers only, never a token.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import anyio
from pydantic import ValidationError

__all__ = ["JsonlRecordLog", "MemoryRecordLog", "passes_filters"]


class _Record(Protocol):
    def matches(
        self,
        *,
        txn: str | None = None,
        user: str | None = None,
        agent: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> bool: ...

    def model_dump_json(self) -> str: ...


R = TypeVar("R", bound=_Record)


class _Stamped(Protocol):
    @property
    def txn(self) -> str | None: ...
    @property
    def user(self) -> str | None: ...
    @property
    def time(self) -> float: ...


def passes_filters(
    record: _Stamped,
    *,
    involves: Callable[[str], bool],
    txn: str | None,
    user: str | None,
    agent: str | None,
    since: float | None,
    until: float | None,
) -> bool:
    """The query filters shared by every audit record; ``involves(agent)`` is the record's
    own notion of which agents it concerns."""
    if txn is not None and record.txn != txn:
        return False
    if user is not None and record.user != user:
        return False
    if agent is not None and not involves(agent):
        return False
    if since is not None and record.time < since:
        return False
    return not (until is not None and record.time > until)


def _select(
    records: Iterable[R],
    *,
    txn: str | None,
    user: str | None,
    agent: str | None,
    since: float | None,
    until: float | None,
    limit: int,
) -> list[R]:
    """Matching records, oldest first, the newest ``limit`` of them."""
    out = [
        r for r in records if r.matches(txn=txn, user=user, agent=agent, since=since, until=until)
    ]
    return out[-limit:] if limit > 0 else []


class MemoryRecordLog(Generic[R]):
    """In-memory log keeping the newest ``max_records`` records."""

    def __init__(self, *, max_records: int = 100_000) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self._records: deque[R] = deque(maxlen=max_records)

    async def append(self, record: R) -> None:
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
    ) -> list[R]:
        return _select(
            self._records, txn=txn, user=user, agent=agent, since=since, until=until, limit=limit
        )

    def __len__(self) -> int:
        return len(self._records)


class JsonlRecordLog(Generic[R]):
    """Append-only JSON Lines file, one record per line.

    Reading skips lines that do not parse: a crash can leave a truncated last line, and
    the next append starts on a fresh line. File work runs in a worker thread.
    """

    def __init__(self, path: str | Path, *, parse: Callable[[bytes], R]) -> None:
        self.path = Path(path)
        self._parse = parse
        self._lock = anyio.Lock()

    async def append(self, record: R) -> None:
        line = record.model_dump_json() + "\n"
        async with self._lock:
            await anyio.to_thread.run_sync(self._write, line)

    def _write(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as fh:
            fh.seek(0, 2)
            if fh.tell() > 0:
                fh.seek(-1, 2)
                if fh.read(1) != b"\n":  # a crash left a partial line: start a fresh one
                    fh.write(b"\n")
            fh.write(line.encode("utf-8"))

    async def query(
        self,
        *,
        txn: str | None = None,
        user: str | None = None,
        agent: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[R]:
        async with self._lock:
            records = await anyio.to_thread.run_sync(self._read)
        return _select(
            records, txn=txn, user=user, agent=agent, since=since, until=until, limit=limit
        )

    def _read(self) -> list[R]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        records: list[R] = []
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                records.append(self._parse(line))
            except (ValidationError, json.JSONDecodeError, UnicodeDecodeError):
                continue
        return records
