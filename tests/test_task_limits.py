"""Task store limits (issue 13, finding 6): sizes, per-owner quotas, fair eviction."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from keycard_agents import Agent, Caller, Context, Principal, skill
from keycard_agents.a2a import (
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    TaskNotFoundError,
    TaskState,
)
from keycard_agents.runtime import (
    CapacityExceededError,
    MemoryTaskStore,
    TaskQuotaExceededError,
    TaskRuntime,
    TaskTooLargeError,
)

pytestmark = pytest.mark.anyio


class Notes(Agent):
    def __init__(self) -> None:
        super().__init__(url="http://127.0.0.1:9301")
        self.release = anyio.Event()

    @skill(scopes=["notes"])
    async def ask(self, ctx: Context) -> str:
        answers = [await ctx.ask_input(f"Question {i}?") for i in range(10)]
        return " ".join(answers)

    @skill(scopes=["notes"])
    async def echo(self, ctx: Context, text: str) -> str:
        return text

    @skill(scopes=["notes"])
    async def wait(self, ctx: Context) -> str:
        await self.release.wait()
        return "done"

    @skill(scopes=["notes"])
    async def dump(self, ctx: Context, size: int) -> str:
        return "x" * size

    @skill(anonymous=True)
    async def ping(self, ctx: Context, text: str = "") -> str:
        return "pong"

    @skill(anonymous=True)
    async def hold(self, ctx: Context) -> str:
        await self.release.wait()
        return "held"


def caller(user: str | None) -> Caller:
    if user is None:
        return Caller(None)
    principal = Principal(
        user=user, issuer="https://sts.test", audience=("x",), scopes=frozenset({"notes"})
    )
    return Caller(principal, token="t")


def request(
    skill_id: str, *, task_id: str | None = None, background: bool = False, **arguments: Any
) -> SendMessageRequest:
    parts = [Part(data={"skill": skill_id, "arguments": arguments})]
    if task_id is not None:
        parts = [Part(text=str(arguments.get("text", "an answer")))]
    config = SendMessageConfiguration(return_immediately=True) if background else None
    message = Message(message_id=f"m-{id(parts)}", role=Role.USER, parts=parts, task_id=task_id)
    return SendMessageRequest(message=message, configuration=config)


async def send(runtime: TaskRuntime, req: SendMessageRequest, who: Caller) -> Any:
    return await runtime.send_message(req, caller=who)


ALICE, BOB, ANON = caller("alice"), caller("bob"), caller(None)


async def test_one_users_tasks_never_evict_another_users_waiting_task() -> None:
    store = MemoryTaskStore(max_tasks=3)
    runtime = TaskRuntime(Notes(), store=store)
    async with runtime.running():
        mine = await send(runtime, request("ask"), ALICE)
        assert mine.status.state is TaskState.INPUT_REQUIRED
        for _ in range(10):  # bob keeps leaving questions unanswered
            await send(runtime, request("ask"), BOB)
        kept = await runtime.get_task(GetTaskRequest(id=mine.id), caller=ALICE)
        assert kept.status.state is TaskState.INPUT_REQUIRED
        assert len(store) == 3  # bob's newest two and alice's


async def test_finished_tasks_of_the_heaviest_owner_go_first() -> None:
    store = MemoryTaskStore(max_tasks=4)
    runtime = TaskRuntime(Notes(), store=store)
    async with runtime.running():
        alice_done = await send(runtime, request("echo", text="a"), ALICE)
        bob_done = [await send(runtime, request("echo", text="b"), BOB) for _ in range(3)]
        await send(runtime, request("echo", text="c"), ALICE)  # full: bob holds the most
        with pytest.raises(TaskNotFoundError):
            await runtime.get_task(GetTaskRequest(id=bob_done[0].id), caller=BOB)
        await runtime.get_task(GetTaskRequest(id=alice_done.id), caller=ALICE)


async def test_each_owner_has_a_quota_of_tasks() -> None:
    agent = Notes()
    store = MemoryTaskStore(max_tasks_per_owner=2)
    runtime = TaskRuntime(agent, store=store)
    async with runtime.running():
        for _ in range(2):
            await send(runtime, request("wait", background=True), BOB)
        with pytest.raises(TaskQuotaExceededError) as caught:
            await send(runtime, request("wait", background=True), BOB)
        assert caught.value.http_status == 429
        assert "limits per caller are 2 tasks" in str(caught.value)
        first = await send(runtime, request("echo", text="1"), ALICE)  # others unaffected
        await send(runtime, request("echo", text="2"), ALICE)
        # the owner's finished tasks make room for the owner's next one
        await send(runtime, request("echo", text="3"), ALICE)
        with pytest.raises(TaskNotFoundError):
            await runtime.get_task(GetTaskRequest(id=first.id), caller=ALICE)
        agent.release.set()


async def test_each_owner_has_a_quota_of_bytes() -> None:
    store = MemoryTaskStore(max_bytes_per_owner=40_000)
    runtime = TaskRuntime(Notes(), store=store)
    async with runtime.running():
        first = await send(runtime, request("echo", text="x" * 15_000), BOB)
        for _ in range(3):
            await send(runtime, request("echo", text="x" * 15_000), BOB)
        assert store.bytes < 40_000 + 20_000
        with pytest.raises(TaskNotFoundError):  # bob's oldest made room for bob's newest
            await runtime.get_task(GetTaskRequest(id=first.id), caller=BOB)


async def test_anonymous_callers_cannot_grow_the_store() -> None:
    agent = Notes()
    store = MemoryTaskStore(max_anonymous_tasks=3)
    runtime = TaskRuntime(agent, store=store)
    async with runtime.running():
        for _ in range(40):
            done = await send(runtime, request("ping", text="y" * 100_000), ANON)
            assert done.status.state is TaskState.COMPLETED  # the request still gets it
        assert (len(store), store.bytes) == (0, 0)
        for _ in range(3):
            await send(runtime, request("hold", background=True), ANON)
        with pytest.raises(TaskQuotaExceededError, match="anonymous"):
            await send(runtime, request("hold", background=True), ANON)
        agent.release.set()


async def test_messages_and_tasks_have_size_limits() -> None:
    runtime = TaskRuntime(Notes(), max_message_bytes=10_000, max_task_bytes=30_000)
    async with runtime.running():
        with pytest.raises(TaskTooLargeError, match="limit of 10000 bytes"):
            await send(runtime, request("echo", text="x" * 20_000), ALICE)
        failed = await send(runtime, request("dump", size=50_000), ALICE)
        assert failed.status.state is TaskState.FAILED
        assert "limit of 30000 bytes" in str(failed.status.message.parts[0].text)
        waiting = await send(runtime, request("ask"), ALICE)
        answer = request("ask", task_id=waiting.id, text="y" * 9000)
        waiting = await send(runtime, answer, ALICE)  # kept twice: in history and replies
        assert waiting.status.state is TaskState.INPUT_REQUIRED
        with pytest.raises(TaskTooLargeError, match="would make task"):
            await send(runtime, request("ask", task_id=waiting.id, text="y" * 9000), ALICE)


async def test_the_store_refuses_when_everything_is_running_or_waiting() -> None:
    agent = Notes()
    store = MemoryTaskStore(max_tasks=2)
    runtime = TaskRuntime(agent, store=store)
    async with runtime.running():
        await send(runtime, request("wait", background=True), ALICE)
        await send(runtime, request("ask"), BOB)
        with pytest.raises(CapacityExceededError) as caught:  # alice has nothing to give up
            await send(runtime, request("wait", background=True), ALICE)
        assert caught.value.http_status == 503
        agent.release.set()


def test_limits_must_be_positive() -> None:
    for name in ("max_tasks", "max_tasks_per_owner", "max_bytes", "max_bytes_per_owner",
                 "max_anonymous_tasks"):  # fmt: skip
        with pytest.raises(ValueError, match=name):
            MemoryTaskStore(**{name: 0})
