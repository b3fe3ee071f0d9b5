"""The seam for a task store that several replicas of an agent share (A2A 1.0 §3.1.6).

A :class:`SharedTaskStore` is a :class:`~keycard_agents._runtime._store.TaskStore` that
also carries each task's events between replicas, and requests to cancel a task to the
replica running it. With one, the runtime streams every task through the store (so
``SubscribeToTask`` on any replica follows a task running on any other), and every
write is a compare-and-set on the record's ``revision`` (two replicas racing to resume
or finish a task: one wins, the other gets :class:`TaskConflictError`). The Redis
implementation is ``keycard_agents.redis.RedisTaskStore``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from keycard_agents._a2a.errors import UnsupportedOperationError
from keycard_agents._a2a.types import StreamResponse
from keycard_agents._runtime._store import TaskRecord, TaskStore

__all__ = ["SharedTaskStore", "TaskConflictError", "TaskWatch"]


class TaskConflictError(UnsupportedOperationError):
    """Another replica changed the task at the same moment (it resumed, finished or
    canceled it first); read the task again."""

    default_message = "The task was changed by another replica at the same time; read it again"


class TaskWatch(Protocol):
    """The events of one task, as any replica publishes them, in order.

    Registered when created (no event after that is missed); ``start_after(revision)``
    drops the events a snapshot at ``revision`` already shows. Iteration ends after the
    first terminal status update (or when the store finds the task ended without one).
    """

    def start_after(self, revision: int) -> None: ...

    def events(self) -> AsyncIterator[StreamResponse]: ...

    def close(self) -> None: ...


@runtime_checkable
class SharedTaskStore(TaskStore, Protocol):
    """A task store shared by replicas: events and cancel requests travel through it."""

    def attach(self, cancel: Callable[[str], None]) -> AbstractAsyncContextManager[None]:
        """Run while the runtime runs: deliver cancel requests for tasks (``cancel(id)``),
        keep the leases of the tasks running here alive."""
        ...

    async def save_event(self, record: TaskRecord, event: StreamResponse | None) -> None:
        """Persist ``record`` (compare-and-set on ``record.revision``, which it advances)
        and publish ``event`` to every replica, atomically."""
        ...

    def watch(self, task_id: str) -> TaskWatch:
        """Start receiving the task's events (synchronously registered)."""
        ...

    async def request_cancel(self, task_id: str) -> None:
        """Ask the replica running the task to cancel it."""
        ...
