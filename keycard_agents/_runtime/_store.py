"""Task storage for the A2A task runtime (A2A 1.0 ``GetTask`` / ``ListTasks`` semantics).

:class:`TaskStore` is the seam (a Redis implementation can follow); :class:`MemoryTaskStore`
is the bounded in-memory default. Records carry the owner (issuer and subject of the
caller) so that the runtime can hide other users' tasks; the store itself filters
listings by owner, newest first, with an opaque cursor.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import anyio

from keycard_agents._a2a.errors import InternalError, InvalidParamsError
from keycard_agents._a2a.types import (
    INTERRUPTED_STATES,
    TERMINAL_STATES,
    Message,
    Task,
    TaskState,
)

__all__ = [
    "CapacityExceededError",
    "MemoryTaskStore",
    "TaskPage",
    "TaskRecord",
    "TaskStore",
]


class CapacityExceededError(InternalError):
    """The task store is full of tasks that are still running (HTTP 503)."""

    http_status = 503
    default_message = "Too many tasks in progress; retry later"


@dataclass
class TaskRecord:
    """A task plus what the runtime needs to authorize and resume it.

    ``owner`` is ``"<issuer> <subject>"`` of the user who created it, ``None`` for an
    anonymous task. ``arguments`` are the validated skill arguments in JSON form and
    ``replies`` the client messages that answered interruptions (for replay).
    """

    task: Task
    owner: str | None
    skill_id: str
    arguments: dict[str, Any] = field(default_factory=dict)
    replies: list[Message] = field(default_factory=list)
    sequence: int = 0

    @property
    def state(self) -> TaskState:
        return self.task.status.state


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
        owner: str | None,
        context_id: str | None = None,
        state: TaskState | None = None,
        updated_after: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        """Tasks of ``owner``, newest first. ``cursor`` comes from a previous page."""
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


def _updated_after(record: TaskRecord, moment: datetime) -> bool:
    stamp = record.task.status.timestamp
    return stamp is not None and stamp > moment


class MemoryTaskStore:
    """In-process task store holding at most ``max_tasks`` tasks.

    When full, creating a task evicts the oldest terminal tasks first, then the oldest
    interrupted ones (INPUT_REQUIRED / AUTH_REQUIRED: conversations the client may have
    abandoned). If every stored task is still submitted or working, creation fails
    with :class:`CapacityExceededError` instead of growing without limit.
    """

    def __init__(self, *, max_tasks: int = 10_000) -> None:
        if max_tasks < 1:
            raise ValueError("max_tasks must be at least 1")
        self.max_tasks = max_tasks
        self._tasks: OrderedDict[str, TaskRecord] = OrderedDict()
        # Eviction candidates in the order they finished (or were interrupted), so that
        # making room costs O(evicted), not a scan of the whole store per new task.
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._interrupted: OrderedDict[str, None] = OrderedDict()
        self._sequence = 0
        self._lock = anyio.Lock()

    def __len__(self) -> int:
        return len(self._tasks)

    async def create(self, record: TaskRecord) -> None:
        async with self._lock:
            if record.task.id in self._tasks:
                raise InternalError(f"task id {record.task.id} already exists")
            if len(self._tasks) >= self.max_tasks:
                self._evict(len(self._tasks) - self.max_tasks + 1)
            self._sequence += 1
            record.sequence = self._sequence
            self._tasks[record.task.id] = record
            self._index(record)

    def _index(self, record: TaskRecord) -> None:
        task_id = record.task.id
        if record.state in TERMINAL_STATES:
            self._interrupted.pop(task_id, None)
            self._finished.setdefault(task_id)
        elif record.state in INTERRUPTED_STATES:
            self._interrupted.setdefault(task_id)
        else:  # submitted or working again (a resumed conversation)
            self._interrupted.pop(task_id, None)

    def _evict(self, count: int) -> None:
        for candidates, states in (
            (self._finished, TERMINAL_STATES),
            (self._interrupted, INTERRUPTED_STATES),
        ):
            while count > 0 and candidates:
                task_id, _ = candidates.popitem(last=False)
                record = self._tasks.get(task_id)
                if record is not None and record.state in states:
                    del self._tasks[task_id]
                    count -= 1
            if count <= 0:
                return
        raise CapacityExceededError(
            f"the task store holds {self.max_tasks} tasks that are all still running; "
            "retry later or raise max_tasks"
        )

    async def get(self, task_id: str) -> TaskRecord | None:
        return self._tasks.get(task_id)

    async def save(self, record: TaskRecord) -> None:
        # Eviction only removes finished tasks, so an evicted record is never saved again;
        # a record that is gone stays gone.
        if record.task.id in self._tasks:
            self._tasks[record.task.id] = record
            self._index(record)

    async def list(
        self,
        *,
        owner: str | None,
        context_id: str | None = None,
        state: TaskState | None = None,
        updated_after: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        before = _decode_cursor(cursor) if cursor else None
        matching = [
            rec
            for rec in reversed(self._tasks.values())
            if rec.owner == owner
            and (context_id is None or rec.task.context_id == context_id)
            and (state is None or rec.state is state)
            and (updated_after is None or _updated_after(rec, updated_after))
        ]
        page_from = [r for r in matching if before is None or r.sequence < before]
        page = page_from[:limit]
        next_cursor = _encode_cursor(page[-1].sequence) if len(page_from) > limit and page else None
        return TaskPage(records=page, next_cursor=next_cursor, total=len(matching))
