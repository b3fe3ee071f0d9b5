"""Interrupting a running task: the signal a skill raises to stop in an interrupted state.

A2A 1.0 §4.1.3: a task stops in ``TASK_STATE_INPUT_REQUIRED`` when the agent needs the
client's input and in ``TASK_STATE_AUTH_REQUIRED`` when it needs a credential or consent;
the client's next message on the task resumes it. A skill that declines the task ends
it in the terminal ``TASK_STATE_REJECTED`` the same way.
"""

from __future__ import annotations

from keycard_agents._a2a.types import TaskState

__all__ = ["TaskInterrupt"]


class TaskInterrupt(BaseException):
    """Raised by :meth:`Context.ask_input`, :meth:`Context.require_auth` and
    :meth:`Context.reject`.

    A ``BaseException`` so a skill's ``except Exception`` does not swallow it; the
    runtime catches it and ends the run in ``state`` with ``message`` as the status.
    """

    def __init__(self, state: TaskState, text: str, *, url: str | None = None) -> None:
        super().__init__(state.value)
        self.state = state
        self.text = text
        #: Where the user acts (AUTH_REQUIRED: the page that grants the authorization);
        #: sent as a ``url`` part of the status message, after the text.
        self.url = url
