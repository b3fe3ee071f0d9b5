"""The task runtime records every task it serves through an AuditRecorder."""

from __future__ import annotations

from typing import Any

import pytest

from keycard_agents import Actor, ActorChain, Agent, Caller, Context, Principal, skill
from keycard_agents.a2a import Message, Part, Role, SendMessageRequest, Task, TaskState
from keycard_agents.audit import AgentAuditRecord, AuditRecorder, AuditTrail, MemoryAgentAuditStore
from keycard_agents.runtime import TaskRuntime

pytestmark = pytest.mark.anyio


class Planner(Agent):
    name = "planner"

    def __init__(self) -> None:
        super().__init__(url="http://127.0.0.1:9101")

    @skill(scopes=["plan"])
    async def plan(self, ctx: Context, day: str) -> str:
        return f"planned {day}"

    @skill(scopes=["plan"])
    async def broken(self, ctx: Context) -> None:
        raise RuntimeError("secret internals")

    @skill(scopes=["plan"])
    async def consent(self, ctx: Context) -> str:
        await ctx.require_auth("consent needed for the calendar")
        return "never"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def _caller() -> Caller:
    principal = Principal(
        user="alice",
        issuer="https://sts.test",
        audience=("http://127.0.0.1:9101",),
        scopes=frozenset({"plan"}),
        actors=ActorChain([Actor("frontend")]),
        txn="txn-1",
        jti="jti-1",
    )
    return Caller(principal, token="not-logged")


def _request(skill_id: str, **arguments: Any) -> SendMessageRequest:
    message = Message(
        message_id=f"m-{skill_id}",
        role=Role.USER,
        parts=[Part(data={"skill": skill_id, "arguments": arguments})],
    )
    return SendMessageRequest(message=message)


async def _run(recorder: AuditRecorder | None, skill_id: str, **arguments: Any) -> Task:
    runtime = TaskRuntime(Planner(), clock=Clock(), recorder=recorder)
    async with runtime.running():
        result = await runtime.send_message(_request(skill_id, **arguments), caller=_caller())
    assert isinstance(result, Task)
    return result


async def test_completed_failed_and_interrupted_tasks_are_recorded() -> None:
    store = MemoryAgentAuditStore()
    recorder = AuditRecorder(agent="planner", resource="http://127.0.0.1:9101/", store=store)
    done = await _run(recorder, "plan", day="monday")
    failed = await _run(recorder, "broken")
    waiting = await _run(recorder, "consent")
    assert waiting.status.state == TaskState.AUTH_REQUIRED

    records = await store.query(txn="txn-1")
    assert [(r.task_id, r.skill, r.outcome) for r in records] == [
        (done.id, "plan", "completed"),
        (failed.id, "broken", "failed"),
        (waiting.id, "consent", "auth_required"),
    ]
    first = records[0]
    assert (first.kind, first.agent, first.user, first.actors) == (
        "served",
        "planner",
        "alice",
        ("frontend",),
    )
    assert first.jti == "jti-1"
    assert first.reason is None
    assert first.ended is not None
    assert first.ended > first.time
    assert records[1].reason == "The skill failed with an unexpected error (RuntimeError)."
    assert records[2].reason == "consent needed for the calendar"
    assert "not-logged" not in str([r.model_dump() for r in records])

    tree = await AuditTrail(agents=[store]).tree("txn-1")
    assert [h.path for h in tree.walk()] == [
        ("alice", "frontend"),
        ("alice", "frontend", "planner"),
    ]
    assert tree.hops[0].status == "unknown"  # frontend's own records are not in this trail
    planner = tree.hops[0].children[0]
    assert planner.outcome == "auth_required"  # the latest task
    assert planner.status == "failed"  # one of its tasks failed
    assert [e.task_id for e in planner.entries] == [done.id, failed.id, waiting.id]


async def test_a_broken_audit_store_never_fails_the_task(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def append(self, record: AgentAuditRecord) -> None:
            raise OSError("disk full")

        async def query(self, **kwargs: object) -> list[AgentAuditRecord]:
            return []

    task = await _run(AuditRecorder(agent="planner", store=Broken()), "plan", day="friday")
    assert task.status.state == TaskState.COMPLETED
    assert "could not record task" in caplog.text
    assert "OSError" in caplog.text


async def test_no_recorder_no_records() -> None:
    task = await _run(None, "plan", day="sunday")
    assert task.status.state == TaskState.COMPLETED
