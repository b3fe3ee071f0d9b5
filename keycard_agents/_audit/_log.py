"""Append-only stores of audit records: a bounded in-memory log and a JSON Lines file.

One implementation for both halves of the audit trail: the token service's decisions
(``_sts_records.AuditRecord``) and each agent's own records (``_agent_records``). A
record type brings its own ``matches(...)`` for the query filters; records are pydantic
models holding identifiers only, never a token.
"""

from __future__ import annotations

import json
import threading
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import anyio
from pydantic import ValidationError

__all__ = [
    "JsonlRecordLog",
    "MemoryRecordLog",
    "RecordRows",
    "passes_filters",
    "select_records",
]


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


def select_records(
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


class RecordRows(Generic[R]):
    """How records rest in memory: as tuples of their field values (strings, numbers,
    tuples of strings), which the garbage collector stops tracking, so that a full store
    adds nothing to each full collection. 100,000 records kept as models (three tracked
    objects each) paused the event loop for tens of milliseconds per collection, and cost
    about 2 KB each. The first record appended fixes the type and the field order; a
    record of another type rests as it is."""

    def __init__(self) -> None:
        self._type: Any = None
        self._names: tuple[str, ...] = ()
        self._positions: dict[str, int] = {}

    def row(self, record: R) -> Any:
        """What to keep of ``record``."""
        values = vars(record)
        if self._type is None:
            self._type = type(record)
            self._names = tuple(values)
            self._positions = {name: i for i, name in enumerate(self._names)}
        if type(record) is self._type and tuple(values) == self._names:
            return tuple(values.values())
        return record  # another record type in the same store: kept as it is

    def rebuild(self, entry: Any, **changes: Any) -> R:
        """The record a kept ``entry`` stands for, with ``changes`` to its fields."""
        if not isinstance(entry, tuple):
            return entry.model_copy(update=changes) if changes else entry  # type: ignore[no-any-return]
        fields = dict(zip(self._names, entry, strict=True))
        fields.update(changes)
        return self._type.model_construct(**fields)  # type: ignore[no-any-return]

    def passes(
        self,
        entry: Any,
        txn: str | None,
        user: str | None,
        since: float | None,
        until: float | None,
    ) -> bool:
        """The cheap filters on a kept entry (the record's ``matches`` decides)."""
        if not isinstance(entry, tuple):
            return True
        at = self._positions
        if txn is not None and "txn" in at and entry[at["txn"]] != txn:
            return False
        if user is not None and "user" in at and entry[at["user"]] != user:
            return False
        if "time" in at and isinstance(entry[at["time"]], int | float):
            moment = entry[at["time"]]
            if since is not None and moment < since:
                return False
            if until is not None and moment > until:
                return False
        return True

    def select(
        self,
        entries: Iterable[tuple[Any, dict[str, Any] | None]],
        *,
        txn: str | None,
        user: str | None,
        agent: str | None,
        since: float | None,
        until: float | None,
        limit: int,
    ) -> list[R]:
        """The newest ``limit`` records that match the query, oldest first, of ``entries``:
        kept entries, newest first, each with changes to its fields (or ``None``). Records
        are rebuilt only for entries that pass the cheap filters, until ``limit`` match."""
        if limit <= 0:
            return []
        newest: list[R] = []
        for entry, changes in entries:
            if not self.passes(entry, txn, user, since, until):
                continue
            record = self.rebuild(entry, **(changes or {}))
            if record.matches(txn=txn, user=user, agent=agent, since=since, until=until):
                newest.append(record)
                if len(newest) == limit:
                    break
        newest.reverse()
        return newest


class MemoryRecordLog(Generic[R]):
    """In-memory log keeping the newest ``max_records`` records, as
    :class:`RecordRows`; queries filter on the rows and rebuild only the records that
    pass."""

    def __init__(self, *, max_records: int = 100_000) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self._records: deque[Any] = deque(maxlen=max_records)
        self._rows: RecordRows[R] = RecordRows()

    async def append(self, record: R) -> None:
        self._records.append(self._rows.row(record))

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
        return self._rows.select(
            ((entry, None) for entry in reversed(self._records)),
            txn=txn,
            user=user,
            agent=agent,
            since=since,
            until=until,
            limit=limit,
        )

    def __len__(self) -> int:
        return len(self._records)


_CHUNK = 4 * 1024 * 1024
_GAP = 64 * 1024


class _LineIndex:
    """Where the complete lines of a JSON Lines file start and end, and which lines
    belong to each ``txn`` and ``user``.

    Built incrementally: each look reads only the bytes appended since the previous one
    (a file that shrank or was replaced is indexed again from the start). Guarded by
    ``lock``; the lines themselves are read outside it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._reset(None)

    def _reset(self, ident: tuple[int, int] | None) -> None:
        self.ident = ident
        self.end = 0
        self.size = 0
        self.starts: array[int] = array("q")
        self.ends: array[int] = array("q")
        self.by_txn: dict[str, list[int]] = {}
        self.by_user: dict[str, list[int]] = {}

    def catch_up(self, path: Path) -> None:
        try:
            st = path.stat()
        except FileNotFoundError:
            self._reset(None)
            return
        ident = (st.st_dev, st.st_ino)
        if ident != self.ident or st.st_size < self.end:
            self._reset(ident)
        self.size = st.st_size
        if st.st_size == self.end:
            return
        with path.open("rb") as fh:
            fh.seek(self.end)
            pending = b""
            base = self.end
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                data = pending + chunk
                last = data.rfind(b"\n")
                if last < 0:
                    pending = data
                    continue
                self._add_lines(data[: last + 1], base)
                base += last + 1
                pending = data[last + 1 :]
            self.end = base

    def _add_lines(self, data: bytes, base: int) -> None:
        pos = 0
        while pos < len(data):
            nl = data.index(b"\n", pos)
            line = data[pos:nl]
            start = base + pos
            pos = nl + 1
            try:
                fields = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue  # blank, or a line a crash cut short
            if not isinstance(fields, dict):
                continue
            number = len(self.starts)
            self.starts.append(start)
            self.ends.append(start + len(line))
            txn, user = fields.get("txn"), fields.get("user")
            if isinstance(txn, str):
                self.by_txn.setdefault(txn, []).append(number)
            if isinstance(user, str):
                self.by_user.setdefault(user, []).append(number)

    def spans(self, *, txn: str | None, user: str | None) -> list[tuple[int, int]]:
        """(start, end) of the lines that may match, oldest first, plus an unterminated
        last line if there is one (a writer may not have finished it)."""
        if txn is not None:
            numbers: Iterable[int] = self.by_txn.get(txn, ())
            if user is not None:
                of_user = set(self.by_user.get(user, ()))
                numbers = [n for n in numbers if n in of_user]
        elif user is not None:
            numbers = self.by_user.get(user, ())
        else:
            numbers = range(len(self.starts))
        spans = [(self.starts[n], self.ends[n]) for n in numbers]
        if self.size > self.end:
            spans.append((self.end, self.size))
        return spans


def _read_spans(path: Path, spans: list[tuple[int, int]]) -> Iterator[bytes]:
    """The bytes of each span, newest first, reading nearby spans in one go."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return
    with fh:
        index = len(spans) - 1
        while index >= 0:
            first = index
            block_end = spans[index][1]
            while (
                first > 0
                and block_end - spans[first - 1][0] <= _CHUNK
                and spans[first][0] - spans[first - 1][1] <= _GAP
            ):
                first -= 1
            block_start = spans[first][0]
            fh.seek(block_start)
            block = fh.read(block_end - block_start)
            for start, end in reversed(spans[first : index + 1]):
                yield block[start - block_start : end - block_start]
            index = first - 1


class JsonlRecordLog(Generic[R]):
    """Append-only JSON Lines file, one record per line.

    Reading skips lines that do not parse: a crash can leave a truncated last line, and
    the next append starts on a fresh line. File work runs in a worker thread. Queries
    never wait for appends, nor appends for queries: an index of line offsets by ``txn``
    and ``user``, extended with what was appended since the last query, lets a query
    read only the lines it may return (newest first, until ``limit`` match).
    """

    def __init__(self, path: str | Path, *, parse: Callable[[bytes], R]) -> None:
        self.path = Path(path)
        self._parse = parse
        self._lock = anyio.Lock()  # one append at a time
        self._index = _LineIndex()

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
        if limit <= 0:
            return []
        filters = {"txn": txn, "user": user, "agent": agent, "since": since, "until": until}
        return await anyio.to_thread.run_sync(self._query, filters, limit)

    def _query(self, filters: dict[str, Any], limit: int) -> list[R]:
        with self._index.lock:
            self._index.catch_up(self.path)
            spans = self._index.spans(txn=filters["txn"], user=filters["user"])
        found: list[R] = []
        for line in _read_spans(self.path, spans):
            try:
                record = self._parse(line)
            except (ValidationError, json.JSONDecodeError, UnicodeDecodeError):
                continue
            if record.matches(**filters):
                found.append(record)
                if len(found) >= limit:
                    break
        found.reverse()
        return found
