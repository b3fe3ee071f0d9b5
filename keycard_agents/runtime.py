"""The task runtime behind an agent and where its tasks are stored (A2A 1.0 tasks).

:func:`keycard_agents.create_app` builds a :class:`TaskRuntime` with a
:class:`MemoryTaskStore` by default; pass ``runtime=TaskRuntime(agent, store=...)`` to
choose the store (any :class:`TaskStore`) or other options.
"""

from __future__ import annotations

from keycard_agents._runtime._push import PushNotifier as PushNotifier
from keycard_agents._runtime._push import UnsafeWebhookError as UnsafeWebhookError
from keycard_agents._runtime._runtime import TaskRuntime as TaskRuntime
from keycard_agents._runtime._shared import SharedTaskStore as SharedTaskStore
from keycard_agents._runtime._shared import TaskConflictError as TaskConflictError
from keycard_agents._runtime._shared import TaskWatch as TaskWatch
from keycard_agents._runtime._store import CapacityExceededError as CapacityExceededError
from keycard_agents._runtime._store import MemoryTaskStore as MemoryTaskStore
from keycard_agents._runtime._store import TaskPage as TaskPage
from keycard_agents._runtime._store import TaskQuotaExceededError as TaskQuotaExceededError
from keycard_agents._runtime._store import TaskRecord as TaskRecord
from keycard_agents._runtime._store import TaskStore as TaskStore
from keycard_agents._runtime._store import TaskTooLargeError as TaskTooLargeError
from keycard_agents._runtime._store import TaskViewer as TaskViewer
from keycard_agents._server._dispatch import A2ARuntime as A2ARuntime
from keycard_agents._server._dispatch import ManagedRuntime as ManagedRuntime

__all__ = [
    "A2ARuntime",
    "CapacityExceededError",
    "ManagedRuntime",
    "MemoryTaskStore",
    "PushNotifier",
    "SharedTaskStore",
    "TaskConflictError",
    "TaskPage",
    "TaskQuotaExceededError",
    "TaskRecord",
    "TaskRuntime",
    "TaskStore",
    "TaskTooLargeError",
    "TaskViewer",
    "TaskWatch",
    "UnsafeWebhookError",
]
