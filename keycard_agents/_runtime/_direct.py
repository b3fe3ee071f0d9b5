"""Skills that answer with a Message instead of a task (A2A 1.0 §3.1.1, §4.1 ``Message``).

``SendMessage`` may answer with a Message when the agent finishes at once and keeps no
task. A skill annotated ``-> Message`` is such a skill: it runs within the request, no
task is created or stored, ``SendMessage`` answers ``{"message": ...}`` and
``SendStreamingMessage`` one ``message`` event. It has no task to report progress to,
stream artifacts into or interrupt: doing so is a mistake in the skill, answered as
InvalidAgentResponse.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from keycard_agents._a2a.errors import InvalidAgentResponseError
from keycard_agents._a2a.interrupt import TaskInterrupt
from keycard_agents._a2a.types import Message, Part, Role, new_id
from keycard_agents._agent._agent import Agent, Skill
from keycard_agents._agent._context import Context, DelegationProvider
from keycard_agents._audit._agent_records import AuditRecorder
from keycard_agents._audit._calls import recording
from keycard_agents._logs import get_logger
from keycard_agents._oauth._resource_server import Caller
from keycard_agents._observe._tracing import ATTR_SKILL, acting_for, mark_error, span

__all__ = ["answer_directly"]

logger = get_logger("keycard_agents.runtime")


class _NoTask:
    """The sink of a skill that answers with a Message: there is no task to write to."""

    def __init__(self, skill_id: str) -> None:
        self._skill_id = skill_id

    def _refuse(self, what: str) -> InvalidAgentResponseError:
        return InvalidAgentResponseError(
            f"skill {self._skill_id!r} answers with a Message and has no task to {what}: "
            "return a task result instead (annotate another return type)"
        )

    async def status_update(self, message: Message) -> None:
        raise self._refuse("send status updates to")

    async def add_artifact(
        self,
        parts: Sequence[Part],
        *,
        name: str | None,
        description: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        raise self._refuse("add artifacts to")

    async def append_artifact(
        self,
        artifact_id: str,
        parts: Sequence[Part],
        *,
        name: str | None,
        description: str | None,
        metadata: Mapping[str, Any] | None,
        append: bool,
        last_chunk: bool,
    ) -> None:
        raise self._refuse("stream artifacts into")


async def answer_directly(
    agent: Agent,
    skill: Skill,
    arguments: dict[str, Any],
    message: Message,
    *,
    caller: Caller,
    delegation: DelegationProvider | None,
    recorder: AuditRecorder | None,
    max_bytes: int,
) -> Message:
    """Run ``skill`` within the request and return its Message, as the agent's answer."""
    context_id = message.context_id or new_id()
    ctx = Context(
        caller=caller,
        task_id="",
        context_id=context_id,
        skill_id=skill.id,
        message=message,
        sink=_NoTask(skill.id),
        dependencies=agent.dependency_map,
        delegation=delegation,
    )
    principal = caller.principal
    started = time.time()
    outcome, reason = "failed", None
    try:
        with (
            acting_for(principal),
            recording(recorder),
            span(
                f"skill {skill.id}", principal=principal, attributes={ATTR_SKILL: skill.id}
            ) as current,
        ):
            try:
                result = await agent.call_skill(skill, ctx, arguments)
            except TaskInterrupt as interrupt:
                error = InvalidAgentResponseError(
                    f"skill {skill.id!r} answers with a Message and cannot stop in "
                    f"{interrupt.state.value}: it has no task to resume"
                )
                mark_error(current, error)
                raise error from None
            except Exception as exc:
                mark_error(current, exc)
                raise
        if not isinstance(result, Message):
            raise InvalidAgentResponseError(
                f"skill {skill.id!r} is annotated to return a Message and returned a "
                f"{type(result).__name__}"
            )
        answer = result.model_copy(
            update={"role": Role.AGENT, "context_id": result.context_id or context_id}
        )
        size = len(answer.model_dump_json(exclude_none=True, by_alias=True))
        if size > max_bytes:
            raise InvalidAgentResponseError(
                f"skill {skill.id!r} answered with {size} bytes, over this agent's limit of "
                f"{max_bytes} bytes"
            )
        outcome = "completed"
        return answer
    except Exception as exc:
        reason = type(exc).__name__
        raise
    finally:
        if recorder is not None:
            try:
                await recorder.record_served(
                    principal=principal,
                    task_id=f"message:{message.message_id[:128]}",
                    skill=skill.id,
                    outcome=outcome,
                    started=started,
                    ended=time.time(),
                    reason=reason,
                )
            except Exception as exc:
                logger.warning(
                    "could not record the answer of skill %s (%s)", skill.id, type(exc).__name__
                )
