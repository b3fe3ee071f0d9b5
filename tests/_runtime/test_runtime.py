"""The anyio task runtime: lifecycle, streaming, cancellation, interruptions, isolation, bounds."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from keycard_agents import (
    Agent,
    AgentDependency,
    AuthenticationError,
    Caller,
    ConfigurationError,
    Context,
    Dependency,
    InsufficientScopeError,
    Principal,
    skill,
)
from keycard_agents._runtime._runtime import SHUTTING_DOWN, _LiveTask
from keycard_agents.a2a import (
    CancelTaskRequest,
    GetTaskRequest,
    InternalError,
    InvalidParamsError,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskNotCancelableError,
    TaskNotFoundError,
    TaskState,
    UnsupportedOperationError,
)
from keycard_agents.runtime import (
    CapacityExceededError,
    MemoryTaskStore,
    TaskRecord,
    TaskRuntime,
    TaskViewer,
)

pytestmark = pytest.mark.anyio

NOW = 1_750_000_000.0


class Worker(Agent):
    name = "worker"
    dependencies = (AgentDependency("calendar", url="http://127.0.0.1:9002"),)

    def __init__(self) -> None:
        super().__init__(url="http://127.0.0.1:9001")
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.finally_ran = False
        self.completed = False
        self.steps_done = anyio.Event()

    @skill(scopes=["work"])
    async def echo(self, ctx: Context, text: str) -> str:
        return text.upper()

    @skill(scopes=["work"])
    async def steps(self, ctx: Context, n: int) -> dict[str, int]:
        self.started.set()
        await self.release.wait()
        for i in range(n):
            await ctx.update(f"step {i}")
            await ctx.artifact({"i": i}, name=f"part {i}")
        self.steps_done.set()
        return {"n": n}

    @skill(scopes=["work"])
    async def wait(self, ctx: Context) -> str:
        self.started.set()
        try:
            await self.release.wait()
            self.completed = True
        finally:
            self.finally_ran = True
        return "released"

    @skill(scopes=["work"])
    async def ask(self, ctx: Context, topic: str) -> str:
        who = await ctx.ask_input(f"Who is the {topic} for?")
        return f"{topic} for {who}"

    @skill(scopes=["work"])
    async def guarded(self, ctx: Context) -> str:
        await ctx.require_auth("Consent to read your calendar is needed")
        return "authorized"

    @skill(scopes=["work"])
    async def fail(self, ctx: Context, kind: str) -> None:
        if kind == "keycard":
            raise ConfigurationError("the calendar is not configured")
        raise RuntimeError("internal detail that must not leak")

    @skill(scopes=["work"])
    async def delegate(self, ctx: Context) -> Any:
        return ctx.dependency("calendar")

    @skill(anonymous=True)
    async def ping(self) -> str:
        return "pong"

    @skill(scopes=["admin"])
    async def admin(self) -> str:
        return "root"


def caller(user: str | None = "alice", scopes: tuple[str, ...] = ("work",)) -> Caller:
    if user is None:
        return Caller(None)
    principal = Principal(
        user=user, issuer="https://sts.test", audience=("x",), scopes=frozenset(scopes)
    )
    return Caller(principal, token=f"token-of-{user}")


ALICE = caller()
BOB = caller("bob")
ANON = caller(None)


def request(
    skill_id: str | None = None,
    *,
    say: str | None = None,
    task_id: str | None = None,
    context_id: str | None = None,
    return_immediately: bool | None = None,
    history_length: int | None = None,
    **arguments: Any,
) -> SendMessageRequest:
    parts = []
    if skill_id is not None:
        parts.append(Part(data={"skill": skill_id, "arguments": arguments}))
    if say is not None:
        parts.append(Part(text=say))
    config = None
    if return_immediately is not None or history_length is not None:
        config = SendMessageConfiguration(
            return_immediately=return_immediately, history_length=history_length
        )
    message = Message(
        message_id=f"m-{skill_id}-{say}",
        role=Role.USER,
        parts=parts,
        task_id=task_id,
        context_id=context_id,
    )
    return SendMessageRequest(message=message, configuration=config)


async def send(runtime: TaskRuntime, req: SendMessageRequest, who: Caller = ALICE) -> Task:
    result = await runtime.send_message(req, caller=who)
    assert isinstance(result, Task)
    return result


def status_text(task: Task) -> str | None:
    message = task.status.message
    return None if message is None else message.parts[0].text


async def drain(events: AsyncIterator[StreamResponse]) -> list[StreamResponse]:
    return [event async for event in events]


def kinds(events: list[StreamResponse]) -> list[str]:
    out = []
    for e in events:
        if e.task is not None:
            out.append(f"task:{e.task.status.state.name}")
        elif e.status_update is not None:
            out.append(f"status:{e.status_update.status.state.name}")
        elif e.artifact_update is not None:
            out.append(f"artifact:{e.artifact_update.artifact.name}")
    return out


# ----------------------------------------------------------------------- lifecycle


async def test_completed_task_has_artifact_history_and_injected_timestamps() -> None:
    runtime = TaskRuntime(Worker(), clock=lambda: NOW)
    async with runtime.running():
        task = await send(runtime, request("echo", context_id="ctx-1", text="hello"))
        assert task.status.state is TaskState.COMPLETED
        assert task.status.timestamp == datetime.fromtimestamp(NOW, tz=timezone.utc)
        assert task.context_id == "ctx-1"
        (artifact,) = task.artifacts
        assert artifact.parts == [Part(text="HELLO")]
        assert artifact.name == "echo result"
        (inbound,) = task.history
        assert (inbound.task_id, inbound.context_id, inbound.role) == (
            task.id,
            "ctx-1",
            Role.USER,
        )
        assert await runtime.get_task(GetTaskRequest(id=task.id), caller=ALICE) == task


async def test_stream_delivers_events_in_order_to_two_subscribers() -> None:
    agent = Worker()
    runtime = TaskRuntime(agent)
    async with runtime.running():
        first = runtime.stream_message(request("steps", n=2), caller=ALICE)
        opening = await first.__anext__()
        assert opening.task is not None
        assert opening.task.status.state is TaskState.SUBMITTED
        await agent.started.wait()
        second = runtime.subscribe(SubscribeToTaskRequest(id=opening.task.id), caller=ALICE)
        snapshot = await second.__anext__()
        assert snapshot.task is not None
        assert snapshot.task.status.state is TaskState.WORKING
        agent.release.set()
        events_one = await drain(first)
        events_two = await drain(second)
    assert kinds(events_one) == [
        "status:WORKING",
        "status:WORKING",
        "artifact:part 0",
        "status:WORKING",
        "artifact:part 1",
        "artifact:steps result",
        "status:COMPLETED",
    ]
    assert events_two == events_one[1:]  # joined after WORKING; the same events after that
    updates = [e.status_update.status.message for e in events_one[1:4:2] if e.status_update]
    assert [m.parts[0].text for m in updates if m is not None] == ["step 0", "step 1"]


async def test_return_immediately_does_not_wait_for_the_skill() -> None:
    agent = Worker()
    runtime = TaskRuntime(agent)
    async with runtime.running():
        task = await send(runtime, request("wait", return_immediately=True))
        assert task.status.state is TaskState.SUBMITTED
        assert not agent.completed
        events = runtime.subscribe(SubscribeToTaskRequest(id=task.id), caller=ALICE)
        await events.__anext__()
        agent.release.set()
        assert kinds(await drain(events))[-1] == "status:COMPLETED"
        done = await runtime.get_task(GetTaskRequest(id=task.id), caller=ALICE)
    assert done.status.state is TaskState.COMPLETED
    assert done.artifacts[0].parts == [Part(text="released")]


async def test_blocking_send_waits_for_the_skill() -> None:
    agent = Worker()
    runtime = TaskRuntime(agent)
    results: list[Task] = []
    async with runtime.running(), anyio.create_task_group() as tg:

        async def call() -> None:
            results.append(await send(runtime, request("wait")))

        tg.start_soon(call)
        await agent.started.wait()
        assert results == []
        agent.release.set()
    assert results[0].status.state is TaskState.COMPLETED


# -------------------------------------------------------------------- cancellation


async def test_cancel_stops_the_running_skill() -> None:
    agent = Worker()
    runtime = TaskRuntime(agent)
    async with runtime.running():
        task = await send(runtime, request("wait", return_immediately=True))
        await agent.started.wait()
        watcher = runtime.subscribe(SubscribeToTaskRequest(id=task.id), caller=ALICE)
        await watcher.__anext__()
        canceled = await runtime.cancel_task(CancelTaskRequest(id=task.id), caller=ALICE)
        assert canceled.status.state is TaskState.CANCELED
        assert status_text(canceled) == "Task canceled by the client."
        assert agent.finally_ran
        assert not agent.completed
        assert kinds(await drain(watcher)) == ["status:CANCELED"]
        with pytest.raises(TaskNotCancelableError):
            await runtime.cancel_task(CancelTaskRequest(id=task.id), caller=ALICE)
        stored = await runtime.get_task(GetTaskRequest(id=task.id), caller=ALICE)
        assert stored.status.state is TaskState.CANCELED
        assert stored.artifacts == []


async def test_cancel_before_the_skill_starts() -> None:
    agent = Worker()
    runtime = TaskRuntime(agent)
    async with runtime.running():
        task = await send(runtime, request("wait", return_immediately=True))
        canceled = await runtime.cancel_task(CancelTaskRequest(id=task.id), caller=ALICE)
    assert canceled.status.state is TaskState.CANCELED
    assert not agent.completed


async def test_cancel_an_interrupted_task() -> None:
    runtime = TaskRuntime(Worker())
    async with runtime.running():
        task = await send(runtime, request("ask", topic="trip"))
        assert task.status.state is TaskState.INPUT_REQUIRED
        canceled = await runtime.cancel_task(CancelTaskRequest(id=task.id), caller=ALICE)
    assert canceled.status.state is TaskState.CANCELED


async def test_aclose_cancels_running_tasks_and_ends_streams() -> None:
    agent = Worker()
    store = MemoryTaskStore()
    runtime = TaskRuntime(agent, store=store)
    collected: list[StreamResponse] = []
    async with runtime.running():
        stream = runtime.stream_message(request("wait"), caller=ALICE)
        opening = await stream.__anext__()
        assert opening.task is not None
        await agent.started.wait()
    async for event in stream:
        collected.append(event)
    record = await store.get(opening.task.id)
    assert record is not None
    assert record.state is TaskState.CANCELED
    assert status_text(record.task) == SHUTTING_DOWN
    assert agent.finally_ran
    assert kinds(collected) == ["status:WORKING", "status:CANCELED"]
    with pytest.raises(InternalError, match="not running"):
        await send(runtime, request("echo", text="late"))


# ------------------------------------------------------------------- interruptions


async def test_input_required_then_resumed_by_the_reply() -> None:
    runtime = TaskRuntime(Worker())
    async with runtime.running():
        task = await send(runtime, request("ask", topic="trip"))
        assert task.status.state is TaskState.INPUT_REQUIRED
        assert status_text(task) == "Who is the trip for?"
        assert [m.role for m in task.history] == [Role.USER, Role.AGENT]
        # §3.1.6: the subscription stays open through INPUT_REQUIRED until the task ends.
        subscription = runtime.subscribe(SubscribeToTaskRequest(id=task.id), caller=ALICE)
        first = await subscription.__anext__()
        assert kinds([first]) == ["task:INPUT_REQUIRED"]
        with pytest.raises(TaskNotFoundError):
            await send(runtime, request(say="mallory", task_id=task.id), BOB)
        with pytest.raises(InvalidParamsError, match="contextId"):
            await send(runtime, request(say="x", task_id=task.id, context_id="other"))
        done = await send(runtime, request(say="alice", task_id=task.id))
        assert done.id == task.id
        assert done.status.state is TaskState.COMPLETED
        assert done.artifacts[0].parts == [Part(text="trip for alice")]
        assert [m.role for m in done.history] == [Role.USER, Role.AGENT, Role.USER]
        with anyio.fail_after(10):
            rest = await drain(subscription)
        assert kinds(rest) == ["status:WORKING", "artifact:ask result", "status:COMPLETED"]
        with pytest.raises(UnsupportedOperationError, match="does not accept messages"):
            await send(runtime, request(say="again", task_id=task.id))
        with pytest.raises(UnsupportedOperationError):
            await runtime.subscribe(SubscribeToTaskRequest(id=task.id), caller=ALICE).__anext__()


class TwoQuestions(Agent):
    name = "two-questions"

    def __init__(self) -> None:
        super().__init__(url="http://127.0.0.1:9003")

    @skill(scopes=["work"])
    async def plan(self, ctx: Context) -> str:
        who = await ctx.ask_input("Who travels?")
        await ctx.require_auth("Consent to book is needed")
        return f"booked for {who}"


async def test_streams_stay_open_through_every_interruption_until_terminal() -> None:
    runtime = TaskRuntime(TwoQuestions())
    async with runtime.running():
        stream = runtime.stream_message(request("plan"), caller=ALICE)
        seen = [await stream.__anext__(), await stream.__anext__(), await stream.__anext__()]
        assert kinds(seen) == ["task:SUBMITTED", "status:WORKING", "status:INPUT_REQUIRED"]
        assert seen[0].task is not None
        task_id = seen[0].task.id
        watcher = runtime.subscribe(SubscribeToTaskRequest(id=task_id), caller=ALICE)
        assert kinds([await watcher.__anext__()]) == ["task:INPUT_REQUIRED"]
        reply = await send(runtime, request(say="alice", task_id=task_id))
        assert reply.status.state is TaskState.AUTH_REQUIRED
        done = await send(runtime, request(say="granted", task_id=task_id))
        assert done.status.state is TaskState.COMPLETED
        with anyio.fail_after(10):
            rest_of_stream = await drain(stream)
            rest_of_watcher = await drain(watcher)
    after_input = [
        "status:WORKING",
        "status:AUTH_REQUIRED",
        "status:WORKING",
        "artifact:plan result",
        "status:COMPLETED",
    ]
    assert kinds(rest_of_stream) == after_input
    assert kinds(rest_of_watcher) == after_input


async def test_canceling_an_interrupted_task_ends_its_waiting_streams() -> None:
    runtime = TaskRuntime(Worker())
    async with runtime.running():
        task = await send(runtime, request("ask", topic="trip"))
        watcher = runtime.subscribe(SubscribeToTaskRequest(id=task.id), caller=ALICE)
        assert kinds([await watcher.__anext__()]) == ["task:INPUT_REQUIRED"]
        await runtime.cancel_task(CancelTaskRequest(id=task.id), caller=ALICE)
        with anyio.fail_after(10):
            assert kinds(await drain(watcher)) == ["status:CANCELED"]
        other = await send(runtime, request("ask", topic="dinner"))
        parked = runtime.subscribe(SubscribeToTaskRequest(id=other.id), caller=ALICE)
        assert kinds([await parked.__anext__()]) == ["task:INPUT_REQUIRED"]
    with anyio.fail_after(10):  # shutting down ends the streams that still wait
        assert await drain(parked) == []


async def test_auth_required_then_resumed() -> None:
    runtime = TaskRuntime(Worker())
    async with runtime.running():
        task = await send(runtime, request("guarded"))
        assert task.status.state is TaskState.AUTH_REQUIRED
        assert status_text(task) == "Consent to read your calendar is needed"
        events = await drain(
            runtime.stream_message(request(say="done", task_id=task.id), caller=ALICE)
        )
    assert kinds(events) == [
        "task:AUTH_REQUIRED",
        "status:WORKING",
        "artifact:guarded result",
        "status:COMPLETED",
    ]


# ------------------------------------------------------------------------ failures


async def test_keycard_errors_fail_the_task_with_their_message() -> None:
    runtime = TaskRuntime(Worker())
    async with runtime.running():
        task = await send(runtime, request("fail", kind="keycard"))
    assert task.status.state is TaskState.FAILED
    assert status_text(task) == "the calendar is not configured"


async def test_unexpected_errors_fail_with_a_generic_message() -> None:
    runtime = TaskRuntime(Worker())
    async with runtime.running():
        task = await send(runtime, request("fail", kind="other"))
    assert task.status.state is TaskState.FAILED
    assert status_text(task) == "The skill failed with an unexpected error (RuntimeError)."
    assert "internal detail" not in task.model_dump_json()


async def test_dependency_handles_need_a_delegation_provider() -> None:
    runtime = TaskRuntime(Worker())
    async with runtime.running():
        task = await send(runtime, request("delegate"))
    assert task.status.state is TaskState.FAILED
    assert "no delegation configured" in (status_text(task) or "")

    class Provider:
        def handle(self, dependency: Dependency, *, caller: Caller, context: Context) -> Any:
            return {"for": dependency.name, "user": context.user, "has_token": bool(caller.token)}

    runtime = TaskRuntime(Worker(), delegation=Provider())
    async with runtime.running():
        task = await send(runtime, request("delegate"))
    assert task.artifacts[0].parts[0].data == {
        "for": "calendar",
        "user": "alice",
        "has_token": True,
    }


# ------------------------------------------------------------------- authorization


async def test_authentication_and_scopes_are_enforced_before_a_task_exists() -> None:
    store = MemoryTaskStore()
    runtime = TaskRuntime(Worker(), store=store)
    async with runtime.running():
        with pytest.raises(AuthenticationError, match="requires a bearer token"):
            await send(runtime, request("echo", text="hi"), ANON)
        with pytest.raises(InsufficientScopeError) as caught:
            await send(runtime, request("admin"), ALICE)
        assert caught.value.missing == ("admin",)
        with pytest.raises(InvalidParamsError, match="text"):
            await send(runtime, request("echo"), ALICE)
        with pytest.raises(InvalidParamsError, match="unknown skill"):
            await send(runtime, request("nope"), ALICE)
        with pytest.raises(AuthenticationError):
            await runtime.stream_message(request("echo", text="hi"), caller=ANON).__anext__()
        assert len(store) == 0
        pong = await send(runtime, request("ping"), ANON)
        assert pong.artifacts[0].parts == [Part(text="pong")]


async def test_tasks_of_other_users_are_not_found() -> None:
    runtime = TaskRuntime(Worker())
    async with runtime.running():
        mine = await send(runtime, request("ask", topic="trip"))
        anonymous = await send(runtime, request("ping"), ANON)
        for who in (BOB, ANON):
            with pytest.raises(TaskNotFoundError):
                await runtime.get_task(GetTaskRequest(id=mine.id), caller=who)
            with pytest.raises(TaskNotFoundError):
                await runtime.cancel_task(CancelTaskRequest(id=mine.id), caller=who)
            with pytest.raises(TaskNotFoundError):
                await runtime.subscribe(SubscribeToTaskRequest(id=mine.id), caller=who).__anext__()
        listed = await runtime.list_tasks(ListTasksRequest(), caller=BOB)
        assert (listed.tasks, listed.total_size) == ([], 0)
        # An anonymous task is seen by the request that made it, then by nobody.
        for who in (ALICE, ANON):
            with pytest.raises(TaskNotFoundError):
                await runtime.get_task(GetTaskRequest(id=anonymous.id), caller=who)
        listed = await runtime.list_tasks(ListTasksRequest(), caller=ANON)
        assert (listed.tasks, listed.total_size) == ([], 0)
        with pytest.raises(TaskNotFoundError):
            await runtime.get_task(GetTaskRequest(id="no-such-task"), caller=ALICE)
        # the same subject from another issuer is another user
        other_issuer = Principal(
            user="alice", issuer="https://elsewhere.test", audience=(), scopes=frozenset()
        )
        with pytest.raises(TaskNotFoundError):
            await runtime.get_task(GetTaskRequest(id=mine.id), caller=Caller(other_issuer))


# ----------------------------------------------------------------- listing, bounds


async def test_list_tasks_pages_newest_first_with_filters() -> None:
    runtime = TaskRuntime(Worker())
    async with runtime.running():
        ids = []
        for i in range(5):
            task = await send(runtime, request("echo", text=f"t{i}", context_id=f"c{i % 2}"))
            ids.append(task.id)
        await send(runtime, request("echo", text="bob's"), BOB)
        waiting = await send(runtime, request("ask", topic="x", context_id="c0"))

        page = await runtime.list_tasks(ListTasksRequest(page_size=2), caller=ALICE)
        assert [t.id for t in page.tasks] == [waiting.id, ids[4]]
        assert (page.total_size, page.page_size) == (6, 2)
        seen = [t.id for t in page.tasks]
        while page.next_page_token:
            page = await runtime.list_tasks(
                ListTasksRequest(page_size=2, page_token=page.next_page_token), caller=ALICE
            )
            seen += [t.id for t in page.tasks]
        assert seen == [waiting.id, *reversed(ids)]

        first = await runtime.list_tasks(ListTasksRequest(), caller=ALICE)
        assert first.page_size == 50
        assert first.next_page_token == ""
        assert all(t.artifacts == [] for t in first.tasks)  # includeArtifacts defaults to false
        full = await runtime.list_tasks(
            ListTasksRequest(page_size=1000, include_artifacts=True, history_length=0),
            caller=ALICE,
        )
        assert full.page_size == 100
        assert full.tasks[1].artifacts[0].parts == [Part(text="T4")]
        assert all(t.history == [] for t in full.tasks)

        by_context = await runtime.list_tasks(ListTasksRequest(context_id="c0"), caller=ALICE)
        assert [t.id for t in by_context.tasks] == [waiting.id, ids[4], ids[2], ids[0]]
        by_state = await runtime.list_tasks(
            ListTasksRequest(status=TaskState.INPUT_REQUIRED), caller=ALICE
        )
        assert [t.id for t in by_state.tasks] == [waiting.id]
        with pytest.raises(InvalidParamsError, match="pageToken"):
            await runtime.list_tasks(ListTasksRequest(page_token="garbage!"), caller=ALICE)


async def test_list_tasks_by_status_timestamp() -> None:
    now = [100.0]
    runtime = TaskRuntime(Worker(), clock=lambda: now[0])
    async with runtime.running():
        old = await send(runtime, request("echo", text="old"))
        now[0] = 200.0
        new = await send(runtime, request("echo", text="new"))
        after = datetime.fromtimestamp(150, tz=timezone.utc).replace(tzinfo=None)
        listed = await runtime.list_tasks(
            ListTasksRequest(status_timestamp_after=after), caller=ALICE
        )
    assert [t.id for t in listed.tasks] == [new.id]
    assert old.id != new.id


async def test_history_length_limits_returned_history() -> None:
    runtime = TaskRuntime(Worker())
    async with runtime.running():
        task = await send(runtime, request("ask", topic="trip", history_length=1))
        assert [m.role for m in task.history] == [Role.AGENT]
        full = await runtime.get_task(GetTaskRequest(id=task.id), caller=ALICE)
        assert len(full.history) == 2
        none = await runtime.get_task(GetTaskRequest(id=task.id, history_length=0), caller=ALICE)
        assert none.history == []


async def test_store_evicts_oldest_finished_tasks() -> None:
    store = MemoryTaskStore(max_tasks=3)
    runtime = TaskRuntime(Worker(), store=store)
    async with runtime.running():
        waiting = await send(runtime, request("ask", topic="x"))
        ids = [(await send(runtime, request("echo", text=str(i)))).id for i in range(4)]
        assert len(store) == 3
        kept = await runtime.list_tasks(ListTasksRequest(), caller=ALICE)
        # terminal tasks go first; the interrupted one survives while terminal ones remain
        assert [t.id for t in kept.tasks] == [ids[3], ids[2], waiting.id]
        with pytest.raises(TaskNotFoundError):
            await runtime.get_task(GetTaskRequest(id=ids[0]), caller=ALICE)


async def test_store_eviction_skips_running_tasks_and_follows_state_changes() -> None:
    agent = Worker()
    store = MemoryTaskStore(max_tasks=3)
    runtime = TaskRuntime(agent, store=store)
    async with runtime.running():
        running = await send(runtime, request("wait", return_immediately=True))
        asked = await send(runtime, request("ask", topic="x"))
        done = await send(runtime, request("echo", text="a"))
        # Full: the finished task goes first, never the older running one.
        newest = await send(runtime, request("echo", text="b"))
        assert set(store._tasks) == {running.id, asked.id, newest.id}
        # The interrupted task outlives every finished one; the running one is never evicted.
        last = [(await send(runtime, request("echo", text=t))).id for t in "cd"]
        assert set(store._tasks) == {running.id, asked.id, last[1]}
        assert done.id not in store._tasks
        agent.release.set()


async def test_store_full_of_running_tasks_refuses_new_ones() -> None:
    agent = Worker()
    runtime = TaskRuntime(agent, store=MemoryTaskStore(max_tasks=2))
    async with runtime.running():
        for _ in range(2):
            await send(runtime, request("wait", return_immediately=True))
        with pytest.raises(CapacityExceededError) as caught:
            await send(runtime, request("wait", return_immediately=True))
        assert caught.value.http_status == 503
        agent.release.set()
    with pytest.raises(ValueError, match="max_tasks"):
        MemoryTaskStore(max_tasks=0)


async def test_slow_subscriber_is_dropped_instead_of_blocking_the_skill() -> None:
    agent = Worker()
    runtime = TaskRuntime(agent, subscriber_buffer=2)
    async with runtime.running():
        slow = runtime.stream_message(request("steps", n=5), caller=ALICE)
        opening = await slow.__anext__()
        assert opening.task is not None
        agent.release.set()
        await agent.steps_done.wait()  # 11 events were published; the buffer holds 2
        received = [await slow.__anext__(), await slow.__anext__()]
        assert kinds(received) == ["status:WORKING", "status:WORKING"]
        with pytest.raises(InternalError, match="fell more than 2 events behind"):
            await slow.__anext__()


async def test_runtime_requires_running_and_valid_options() -> None:
    runtime = TaskRuntime(Worker())
    with pytest.raises(InternalError, match="not running"):
        await send(runtime, request("echo", text="x"))
    with pytest.raises(ConfigurationError):
        TaskRuntime(Worker(), subscriber_buffer=0)
    async with runtime.running():
        with pytest.raises(ConfigurationError, match="already running"):
            async with runtime.running():
                pass


async def test_errors_in_the_running_body_propagate_unwrapped() -> None:
    runtime = TaskRuntime(Worker())
    with pytest.raises(KeyError, match="boom"):
        async with runtime.running():
            raise KeyError("boom")


async def test_a_client_leaving_a_stream_does_not_stop_the_task() -> None:
    agent = Worker()
    runtime = TaskRuntime(agent)
    async with runtime.running():
        stream = runtime.stream_message(request("steps", n=1), caller=ALICE)
        opening = await stream.__anext__()
        assert opening.task is not None
        await stream.aclose()
        watcher = runtime.subscribe(SubscribeToTaskRequest(id=opening.task.id), caller=ALICE)
        await watcher.__anext__()
        agent.release.set()
        assert kinds(await drain(watcher))[-1] == "status:COMPLETED"


class _SlowStore(MemoryTaskStore):
    def __init__(self) -> None:
        super().__init__()
        self.entered = anyio.Event()
        self.proceed = anyio.Event()

    async def create(self, record: TaskRecord) -> None:
        await super().create(record)
        self.entered.set()
        await self.proceed.wait()


async def test_shutdown_while_a_task_is_being_stored() -> None:
    store = _SlowStore()
    runtime = TaskRuntime(Worker(), store=store)
    failures: list[InternalError] = []

    async def call() -> None:
        try:
            await send(runtime, request("echo", text="x"))
        except InternalError as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tg:
        async with runtime.running():
            tg.start_soon(call)
            await store.entered.wait()
        store.proceed.set()
    assert "shutting down" in str(failures[0])
    page = await store.list(viewer=TaskViewer.of(ALICE.principal))
    assert [r.state for r in page.records] == [TaskState.CANCELED]


class _AwaitingStore(MemoryTaskStore):
    """A store whose save awaits (as a remote one does): saves of a task must not overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.most = 0

    async def save(self, record: TaskRecord) -> None:
        self.active += 1
        self.most = max(self.most, self.active)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        self.active -= 1
        await super().save(record)


@pytest.mark.parametrize("store_type", [MemoryTaskStore, _AwaitingStore])
async def test_saves_of_one_task_are_ordered_when_the_store_awaits(
    store_type: type[MemoryTaskStore],
) -> None:
    store = store_type()
    runtime = TaskRuntime(Worker(), store=store)
    async with runtime.running():
        done = await send(runtime, request("echo", text="x"))
        record = await store.get(done.id)
        assert record is not None
        live = _LiveTask(record=record)
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(runtime._persist, live)
    if isinstance(store, _AwaitingStore):
        assert store.most == 1  # one save at a time, through the task's lock
        assert live.save_lock is not None
    else:  # the memory store's save never awaits: no lock is made for it
        assert live.save_lock is None


# ------------------------------------------------ snapshots and finished tasks at rest


async def test_a_view_does_not_change_when_the_task_does() -> None:
    agent = Worker()
    runtime = TaskRuntime(agent)
    async with runtime.running():
        asked = await send(runtime, request("ask", topic="lunch"))
        assert asked.status.state is TaskState.INPUT_REQUIRED
        before = await runtime.get_task(GetTaskRequest(id=asked.id), caller=ALICE)
        history, status = len(before.history), before.status
        done = await send(runtime, request(say="Bob", task_id=asked.id))
        assert done.status.state is TaskState.COMPLETED
        # The earlier views kept their history, status and (no) artifacts.
        for view in (asked, before):
            assert len(view.history) == history
            assert view.status == status
            assert view.artifacts == []
        assert len(done.history) > history
        assert done.artifacts
        # A view handed out is the client's: changing it changes nothing stored.
        done.history.clear()
        done.artifacts.clear()
        again = await runtime.get_task(GetTaskRequest(id=asked.id), caller=ALICE)
        assert len(again.history) > history
        assert again.artifacts


async def test_finished_tasks_read_back_exactly_as_they_were_returned() -> None:
    store = MemoryTaskStore()
    runtime = TaskRuntime(Worker(), store=store, clock=lambda: NOW)
    async with runtime.running():
        returned = [
            await send(runtime, request("echo", context_id="ctx", text=f"t{i}")) for i in range(3)
        ]
        asked = await send(runtime, request("ask", topic="x"))
        for task in returned:
            got = await runtime.get_task(GetTaskRequest(id=task.id), caller=ALICE)
            assert got == task
            record = await store.get(task.id)
            assert record is not None
            assert record.skill_id == "echo"
            assert record.scopes == ("work",)
            assert record.arguments == {"text": task.history[0].parts[0].data["arguments"]["text"]}
        listed = await runtime.list_tasks(
            ListTasksRequest(context_id="ctx", include_artifacts=True), caller=ALICE
        )
        assert listed.tasks == returned[::-1]
        completed = await runtime.list_tasks(
            ListTasksRequest(status=TaskState.COMPLETED), caller=ALICE
        )
        assert [t.id for t in completed.tasks] == [t.id for t in returned[::-1]]
        waiting = await store.list(viewer=TaskViewer.of(ALICE.principal), state=asked.status.state)
        assert [r.task.id for r in waiting.records] == [asked.id]
        later = datetime.fromtimestamp(NOW + 1, tz=timezone.utc)
        assert (
            await store.list(viewer=TaskViewer.of(ALICE.principal), updated_after=later)
        ).total == 0
        assert (await store.list(viewer=TaskViewer.of(BOB.principal))).total == 0
        assert await runtime.list_tasks(ListTasksRequest(), caller=BOB) is not None


async def test_finished_tasks_leave_almost_nothing_for_the_garbage_collector() -> None:
    store = MemoryTaskStore()
    runtime = TaskRuntime(Worker(), store=store)
    async with runtime.running():
        for i in range(50):
            await send(runtime, request("echo", text=f"t{i}"))
        gc.collect()
        entries = list(store._tasks.values())
        assert len(entries) == 50
        # A finished task at rest holds only atoms (strings, numbers, bytes, tuples of
        # strings): nothing the collector walks on every full collection.
        for entry in entries:
            for part in gc.get_referents(entry):
                assert part is type(entry) or not gc.is_tracked(part), type(part)
