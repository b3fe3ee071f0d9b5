"""Task storage for the A2A task runtime (A2A 1.0 ``GetTask`` / ``ListTasks`` semantics).

:class:`TaskStore` is the seam (a Redis implementation can follow); :class:`MemoryTaskStore`
is the bounded in-memory default. Records carry their owner (the user with the issuer
it came from, and the actor chain of the caller that created the task) and the scopes
its skill required. Who may see a task is decided in one place, :meth:`TaskViewer.may_see`,
which the runtime uses for every read, cancel, subscribe and resume, and the store for
every listing (docs/security.md, "Task ownership").
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from pydantic import BaseModel

from keycard_agents._a2a.errors import InternalError, InvalidParamsError
from keycard_agents._a2a.types import (
    INTERRUPTED_STATES,
    TERMINAL_STATES,
    Message,
    Task,
    TaskState,
)
from keycard_agents._jose._principal import Principal

__all__ = [
    "CapacityExceededError",
    "MemoryTaskStore",
    "TaskPage",
    "TaskQuotaExceededError",
    "TaskRecord",
    "TaskStore",
    "TaskTooLargeError",
    "TaskViewer",
]


class CapacityExceededError(InternalError):
    """The task store is full of tasks that are still running (HTTP 503)."""

    http_status = 503
    default_message = "Too many tasks in progress; retry later"


class TaskQuotaExceededError(CapacityExceededError):
    """One owner (or all anonymous callers together) reached their share of the store.

    HTTP 429; over JSON-RPC the code stays -32603 with this message.
    """

    http_status = 429
    reason = "RESOURCE_EXHAUSTED"
    default_message = "Too many tasks of this caller in progress; retry later"


class TaskTooLargeError(InvalidParamsError):
    """A message, or a task with what it would hold, is over its size limit (HTTP 400)."""


@dataclass
class TaskRecord:
    """A task plus what the runtime needs to authorize and resume it.

    ``owner`` is :attr:`Principal.task_owner` of the caller who created it (the user with
    its origin issuer, and the actor chain), ``None`` for an anonymous task. ``scopes``
    are the scopes its skill required. ``arguments`` are the validated skill arguments in
    JSON form and ``replies`` the client messages that answered interruptions (for
    replay). ``size`` is the runtime's count of the JSON bytes the task holds.
    ``revision`` counts the writes of a shared store (its compare-and-set token).
    """

    task: Task
    owner: str | None
    skill_id: str
    arguments: dict[str, Any] = field(default_factory=dict)
    replies: list[Message] = field(default_factory=list)
    sequence: int = 0
    scopes: tuple[str, ...] = ()
    size: int = 0
    revision: int = 0

    @property
    def state(self) -> TaskState:
        return self.task.status.state


@dataclass(frozen=True)
class TaskViewer:
    """Who is asking to see tasks: the rule of task visibility, in one place.

    A task is visible only to the principal that created it: the same user from the same
    origin issuer, through the same actor chain, and holding every scope its skill
    required. Anonymous callers see no task after the request that created it.
    """

    owner: str | None
    scopes: frozenset[str] = frozenset()

    @classmethod
    def of(cls, principal: Principal | None) -> TaskViewer:
        if principal is None:
            return cls(owner=None)
        return cls(owner=principal.task_owner, scopes=principal.scopes)

    def may_see(self, record: TaskRecord) -> bool:
        return self.may_see_task_of(record.owner, record.scopes)

    def may_see_task_of(self, owner: str | None, scopes: tuple[str, ...]) -> bool:
        """:meth:`may_see` for a task owned by ``owner`` whose skill required ``scopes``."""
        return (
            self.owner is not None
            and owner == self.owner
            and all(scope in self.scopes for scope in scopes)
        )


@dataclass(frozen=True)
class TaskPage:
    records: list[TaskRecord]
    next_cursor: str | None
    total: int


class TaskStore(Protocol):
    """Where tasks live. Implementations must be safe to call from concurrent tasks."""

    async def create(self, record: TaskRecord) -> None:
        """Store a new task; may evict old finished tasks to stay within bounds."""
        ...

    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def save(self, record: TaskRecord) -> None:
        """Persist the current state of an existing task."""
        ...

    async def list(
        self,
        *,
        viewer: TaskViewer,
        context_id: str | None = None,
        state: TaskState | None = None,
        updated_after: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        """Tasks ``viewer`` may see, newest first. ``cursor`` comes from a previous page."""
        ...


def _encode_cursor(sequence: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{sequence}".encode()).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        prefix, _, number = raw.partition(":")
        if prefix != "v1":
            raise ValueError(prefix)
        return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidParamsError(
            "invalid pageToken: pass the nextPageToken of a previous ListTasks response",
            data={"errors": [{"field": "pageToken", "message": "not a valid page token"}]},
        ) from exc


def _updated_after(entry: TaskRecord | _Finished, moment: datetime) -> bool:
    stamp = entry.timestamp if isinstance(entry, _Finished) else entry.task.status.timestamp
    return stamp is not None and stamp > moment


def _context_of(entry: TaskRecord | _Finished) -> str:
    return entry.context_id if isinstance(entry, _Finished) else entry.task.context_id


class _Body(BaseModel):
    """What a finished task holds beyond what listings filter on, for its JSON form."""

    task: Task
    arguments: dict[str, Any]
    replies: list[Message]


class _Finished(NamedTuple):
    """A finished task at rest: its JSON and the few fields listings and eviction use.

    One object of atoms instead of the two dozen a live ``Task`` is made of: the garbage
    collector has almost nothing to walk in a store full of finished tasks (full
    collections over 10,000 live tasks paused the event loop for tens of milliseconds,
    the agent's p99 under load), and a finished task holds a fraction of the memory.
    """

    owner: str | None
    scopes: tuple[str, ...]
    skill_id: str
    sequence: int
    size: int
    state: str
    context_id: str
    timestamp: datetime | None
    body: bytes


def _freeze(record: TaskRecord) -> _Finished:
    task = record.task
    body = _Body.model_construct(task=task, arguments=record.arguments, replies=record.replies)
    return _Finished(
        owner=record.owner,
        scopes=tuple(record.scopes),
        skill_id=record.skill_id,
        sequence=record.sequence,
        size=record.size,
        state=record.state.value,
        context_id=task.context_id,
        timestamp=task.status.timestamp,
        body=body.model_dump_json().encode(),
    )


def _thaw(entry: _Finished) -> TaskRecord:
    body = _Body.model_validate_json(entry.body)
    return TaskRecord(
        task=body.task,
        owner=entry.owner,
        skill_id=entry.skill_id,
        arguments=body.arguments,
        replies=body.replies,
        sequence=entry.sequence,
        scopes=entry.scopes,
        size=entry.size,
    )


def _state_of(entry: TaskRecord | _Finished) -> TaskState:
    return TaskState(entry.state) if isinstance(entry, _Finished) else entry.state


@dataclass
class _Book:
    """One owner's share of the store: its tasks and their size, by eviction order."""

    count: int = 0
    size: int = 0
    finished: OrderedDict[str, None] = field(default_factory=OrderedDict)
    interrupted: OrderedDict[str, None] = field(default_factory=OrderedDict)


class MemoryTaskStore:
    """In-process task store, bounded in count and bytes, overall and per owner.

    Limits (defaults in parentheses; see docs/security.md):

    - ``max_tasks`` (10,000) and ``max_bytes`` (256 MiB) for the whole store;
    - ``max_tasks_per_owner`` (1,000) and ``max_bytes_per_owner`` (16 MiB) per owner
      (a user through one actor chain);
    - ``max_anonymous_tasks`` (100): anonymous tasks running at once, all anonymous
      callers together. An anonymous task is dropped as soon as it stops running:
      nobody can read it afterwards (see :class:`TaskViewer`).

    Eviction is fair: an owner over its own share makes room by evicting its own oldest
    finished task, then its own oldest interrupted one (INPUT_REQUIRED / AUTH_REQUIRED);
    when the whole store is full, the oldest finished task of the owner holding the most
    tasks goes first (on a tie, of the owner that has held tasks the longest without a
    break), then the requester's own interrupted tasks. One owner's tasks never
    evict another owner's interrupted or running task: when nothing may go, creation
    fails with :class:`TaskQuotaExceededError` (HTTP 429, the owner's share) or
    :class:`CapacityExceededError` (HTTP 503, the whole store).
    """

    def __init__(
        self,
        *,
        max_tasks: int = 10_000,
        max_tasks_per_owner: int = 1_000,
        max_bytes: int = 256 * 1024 * 1024,
        max_bytes_per_owner: int = 16 * 1024 * 1024,
        max_anonymous_tasks: int = 100,
    ) -> None:
        limits = {
            "max_tasks": max_tasks,
            "max_tasks_per_owner": max_tasks_per_owner,
            "max_bytes": max_bytes,
            "max_bytes_per_owner": max_bytes_per_owner,
            "max_anonymous_tasks": max_anonymous_tasks,
        }
        for name, value in limits.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1")
        self.max_tasks = max_tasks
        self.max_tasks_per_owner = max_tasks_per_owner
        self.max_bytes = max_bytes
        self.max_bytes_per_owner = max_bytes_per_owner
        self.max_anonymous_tasks = max_anonymous_tasks
        # Running and interrupted tasks as live records; finished ones as _Finished.
        self._tasks: OrderedDict[str, TaskRecord | _Finished] = OrderedDict()
        # Per owner, eviction candidates in the order they finished (or were interrupted),
        # so making room costs O(evicted + owners), not a scan of every task.
        self._books: dict[str | None, _Book] = {}
        self._sizes: dict[str, int] = {}
        self._bytes = 0
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def bytes(self) -> int:
        """The JSON bytes the stored tasks hold, as counted by the runtime."""
        return self._bytes

    async def create(self, record: TaskRecord) -> None:
        # No await from here to the end: on one event loop the admission checks, the
        # evictions and the insertion are atomic without a lock (a lock cost an event-loop
        # round trip per task and about a tenth of the server's time under load).
        if record.task.id in self._tasks:
            raise InternalError(f"task id {record.task.id} already exists")
        size = max(record.size, 0)
        if record.owner is None:
            self._admit_anonymous()
        else:
            self._admit_owner(record.owner, size)
        self._admit_store(record.owner, size)
        self._sequence += 1
        record.sequence = self._sequence
        self._tasks[record.task.id] = record
        book = self._books.setdefault(record.owner, _Book())
        book.count += 1
        self._resize(record, size)
        self._index(record)

    def _admit_anonymous(self) -> None:
        book = self._books.get(None)
        if book is not None and book.count >= self.max_anonymous_tasks:
            raise TaskQuotaExceededError(
                f"{self.max_anonymous_tasks} anonymous tasks are already running, the limit "
                "for all anonymous callers together; retry later or send a bearer token"
            )

    def _admit_owner(self, owner: str, size: int) -> None:
        if size > self.max_bytes_per_owner:
            raise TaskTooLargeError(
                f"the task holds {size} bytes, over the limit of {self.max_bytes_per_owner} "
                "bytes per caller"
            )
        book = self._books.get(owner)
        while book is not None and (
            book.count >= self.max_tasks_per_owner or book.size + size > self.max_bytes_per_owner
        ):
            if not self._evict_own(owner):
                raise TaskQuotaExceededError(
                    f"this caller already has {book.count} tasks ({book.size} bytes) running; "
                    f"the limits per caller are {self.max_tasks_per_owner} tasks and "
                    f"{self.max_bytes_per_owner} bytes: wait for some to finish, or cancel them"
                )

    def _admit_store(self, owner: str | None, size: int) -> None:
        while len(self._tasks) >= self.max_tasks or self._bytes + size > self.max_bytes:
            if self._evict_finished_of_heaviest():
                continue
            if owner is not None and self._evict_own(owner):  # none finished left: a waiting one
                continue
            raise CapacityExceededError(
                f"the task store holds {len(self._tasks)} tasks ({self._bytes} bytes) that "
                f"are running or waiting for their users (limits: {self.max_tasks} tasks, "
                f"{self.max_bytes} bytes); retry later or raise max_tasks / max_bytes"
            )

    def _evict_own(self, owner: str) -> bool:
        """Evict ``owner``'s oldest finished task, else its oldest interrupted one."""
        book = self._books.get(owner)
        if book is None:
            return False
        if self._pop_oldest(book.finished, TERMINAL_STATES):
            return True
        return self._pop_oldest(book.interrupted, INTERRUPTED_STATES)

    def _evict_finished_of_heaviest(self) -> bool:
        candidates = [(b.count, o) for o, b in self._books.items() if b.finished]
        while candidates:
            _, owner = max(candidates, key=lambda c: c[0])
            if self._pop_oldest(self._books[owner].finished, TERMINAL_STATES):
                return True
            candidates = [(b.count, o) for o, b in self._books.items() if b.finished]
        return False

    def _pop_oldest(self, queue: OrderedDict[str, None], states: frozenset[TaskState]) -> bool:
        while queue:
            task_id, _ = queue.popitem(last=False)
            entry = self._tasks.get(task_id)
            if entry is not None and _state_of(entry) in states:
                self._remove(task_id, entry.owner)
                return True
        return False

    def _remove(self, task_id: str, owner: str | None) -> None:
        del self._tasks[task_id]
        size = self._sizes.pop(task_id)
        self._bytes -= size
        book = self._books[owner]
        book.count -= 1
        book.size -= size
        book.finished.pop(task_id, None)
        book.interrupted.pop(task_id, None)
        if book.count <= 0:
            del self._books[owner]

    def _resize(self, record: TaskRecord, size: int) -> None:
        task_id = record.task.id
        old = self._sizes.get(task_id, 0)
        self._sizes[task_id] = size
        self._bytes += size - old
        self._books[record.owner].size += size - old

    def _index(self, record: TaskRecord) -> None:
        task_id = record.task.id
        book = self._books[record.owner]
        if record.state in TERMINAL_STATES:
            book.interrupted.pop(task_id, None)
            book.finished.setdefault(task_id)
        elif record.state in INTERRUPTED_STATES:
            book.interrupted.setdefault(task_id)
        else:  # submitted or working again (a resumed conversation)
            book.interrupted.pop(task_id, None)

    async def get(self, task_id: str) -> TaskRecord | None:
        entry = self._tasks.get(task_id)
        return _thaw(entry) if isinstance(entry, _Finished) else entry

    async def save(self, record: TaskRecord) -> None:
        # Eviction only removes tasks that are not running, so an evicted record is never
        # saved again; a record that is gone stays gone.
        if record.task.id not in self._tasks:
            return
        self._tasks[record.task.id] = record
        if record.owner is None and (record.state.is_terminal or record.state.is_interrupted):
            self._remove(record.task.id, None)  # nobody may read an anonymous task once it stops
            return
        self._resize(record, max(record.size, 0))
        self._index(record)
        if record.state.is_terminal:  # it changes no more: keep it at rest
            self._tasks[record.task.id] = _freeze(record)

    async def list(
        self,
        *,
        viewer: TaskViewer,
        context_id: str | None = None,
        state: TaskState | None = None,
        updated_after: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        before = _decode_cursor(cursor) if cursor else None
        matching = [
            entry
            for entry in reversed(self._tasks.values())
            if viewer.may_see_task_of(entry.owner, entry.scopes)
            and (context_id is None or _context_of(entry) == context_id)
            and (state is None or _state_of(entry) is state)
            and (updated_after is None or _updated_after(entry, updated_after))
        ]
        page_from = [e for e in matching if before is None or e.sequence < before]
        page = [_thaw(e) if isinstance(e, _Finished) else e for e in page_from[:limit]]
        next_cursor = _encode_cursor(page[-1].sequence) if len(page_from) > limit and page else None
        return TaskPage(records=page, next_cursor=next_cursor, total=len(matching))
