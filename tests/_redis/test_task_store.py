"""Two replicas of one agent share tasks on a real Redis (a single server and a Cluster).

Each replica is its own ``TaskRuntime`` with its own ``RedisTaskStore`` (its own
connections, event subscription and leases), as two processes would have.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from redis_support import RedisServer
from replica_support import ALICE, BOB, Worker, collect, kinds, request, send, status_text

from keycard_agents.a2a import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    SubscribeToTaskRequest,
    TaskNotCancelableError,
    TaskNotFoundError,
    TaskState,
    UnsupportedOperationError,
)
from keycard_agents.redis import (
    RUNNER_LOST,
    RedisSettings,
    RedisTaskStore,
    TaskStoreUnavailableError,
)
from keycard_agents.runtime import TaskConflictError, TaskQuotaExceededError, TaskRuntime

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def replicas(
    url: str, **options: Any
) -> AsyncIterator[tuple[Worker, TaskRuntime, Worker, TaskRuntime]]:
    one, two = Worker(), Worker()
    first = TaskRuntime(one, store=RedisTaskStore(RedisSettings(url), **options))
    second = TaskRuntime(two, store=RedisTaskStore(RedisSettings(url), **options))
    async with first.running(), second.running():
        yield one, first, two, second


async def test_a_task_running_on_one_replica_is_read_streamed_and_cancelled_on_the_other(
    redis_url: str,
) -> None:
    async with replicas(redis_url) as (one, first, _, second):
        task = await send(first, request("wait", return_immediately=True))
        await one.started.wait()
        seen = await second.get_task(GetTaskRequest(id=task.id), caller=ALICE)
        assert seen.status.state is TaskState.WORKING
        with pytest.raises(TaskNotFoundError):
            await second.get_task(GetTaskRequest(id=task.id), caller=BOB)
        stream = second.subscribe(SubscribeToTaskRequest(id=task.id), caller=ALICE)
        snapshot = await stream.__anext__()
        assert snapshot.task is not None
        assert snapshot.task.status.state is TaskState.WORKING
        canceled = await second.cancel_task(CancelTaskRequest(id=task.id), caller=ALICE)
        assert canceled.status.state is TaskState.CANCELED
        assert one.finally_ran  # the skill on replica 1 was stopped
        assert not one.completed
        assert kinds(await collect(stream)) == ["status:CANCELED"]
        with pytest.raises(TaskNotCancelableError):
            await second.cancel_task(CancelTaskRequest(id=task.id), caller=ALICE)
        final = await first.get_task(GetTaskRequest(id=task.id), caller=ALICE)
        assert final.status.state is TaskState.CANCELED


async def test_events_of_a_task_on_one_replica_stream_on_the_other(redis_url: str) -> None:
    async with replicas(redis_url) as (one, first, _, second):
        task = await send(first, request("steps", n=2, return_immediately=True))
        await one.started.wait()
        stream = second.subscribe(SubscribeToTaskRequest(id=task.id), caller=ALICE)
        snapshot = await stream.__anext__()
        assert snapshot.task is not None
        one.release.set()
        assert kinds(await collect(stream)) == [
            "status:WORKING",
            "artifact:part 0",
            "status:WORKING",
            "artifact:part 1",
            "artifact:steps result",
            "status:COMPLETED",
        ]
        # The runner's own stream goes through Redis too: same events, same order.
        local = first.stream_message(request("echo", text="hi"), caller=ALICE)
        assert kinds(await collect(local)) == [
            "task:SUBMITTED",
            "status:WORKING",
            "artifact:echo result",
            "status:COMPLETED",
        ]


async def test_an_interrupted_task_is_resumed_on_the_other_replica(redis_url: str) -> None:
    async with replicas(redis_url) as (_, first, _, second):
        asked = await send(first, request("ask", topic="lunch"))
        assert asked.status.state is TaskState.INPUT_REQUIRED
        stream = first.subscribe(SubscribeToTaskRequest(id=asked.id), caller=ALICE)
        assert (await stream.__anext__()).task is not None
        done = await send(second, request(say="bob", task_id=asked.id))
        assert done.status.state is TaskState.COMPLETED
        assert done.artifacts[-1].parts[0].text == "lunch for bob"
        # The stream opened on replica 1 followed the run replica 2 started, to its end.
        assert kinds(await collect(stream))[-1] == "status:COMPLETED"
        with pytest.raises(UnsupportedOperationError):
            await send(first, request(say="again", task_id=asked.id))


async def test_two_replicas_racing_to_resume_one_task_resume_it_once(redis_url: str) -> None:
    async with replicas(redis_url) as (_, first, _, second):
        asked = await send(first, request("ask", topic="tea"))
        outcomes: list[str] = []

        async def resume(runtime: TaskRuntime, who: str) -> None:
            try:
                await send(runtime, request(say=who, task_id=asked.id))
                outcomes.append("resumed")
            except (TaskConflictError, UnsupportedOperationError):
                outcomes.append("refused")

        async with anyio.create_task_group() as group:
            group.start_soon(resume, first, "ann")
            group.start_soon(resume, second, "ben")
        assert sorted(outcomes) == ["refused", "resumed"]
        final = await second.get_task(GetTaskRequest(id=asked.id), caller=ALICE)
        assert final.status.state is TaskState.COMPLETED
        assert len([m for m in final.history if m.role.name == "USER"]) == 2


async def test_tasks_of_one_owner_are_listed_on_every_replica_and_bounded(
    redis_url: str,
) -> None:
    async with replicas(redis_url, max_tasks_per_owner=3) as (one, first, _, second):
        made = [(await send(first, request("echo", text=str(i)))).id for i in range(4)]
        page = await second.list_tasks(ListTasksRequest(page_size=2), caller=ALICE)
        # Three fit; the fourth evicted the oldest finished one, newest first.
        assert [t.id for t in page.tasks] == made[:0:-1][:2]
        assert page.total_size == 3
        rest = await second.list_tasks(
            ListTasksRequest(page_size=2, page_token=page.next_page_token), caller=ALICE
        )
        assert [t.id for t in rest.tasks] == [made[1]]
        assert (await second.list_tasks(ListTasksRequest(), caller=BOB)).tasks == []
        # Three running tasks fill Alice's share: the next one is refused (HTTP 429).
        for _ in range(3):
            await send(first, request("wait", return_immediately=True))
        with pytest.raises(TaskQuotaExceededError):
            await send(second, request("wait", return_immediately=True))
        one.release.set()


async def test_a_task_whose_replica_stopped_ends_failed_for_the_others(redis_url: str) -> None:
    settings = RedisSettings(redis_url)
    survivor = TaskRuntime(Worker(), store=RedisTaskStore(settings, lease=0.5))
    lost = RedisTaskStore(settings, lease=0.5)
    runner = Worker()
    async with survivor.running(), TaskRuntime(runner, store=lost).running() as dying:
        task = await send(dying, request("wait", return_immediately=True))
        await runner.started.wait()
        lost._running.clear()  # the replica hangs: its leases are no longer renewed
        await anyio.sleep(0.8)
        seen = await survivor.get_task(GetTaskRequest(id=task.id), caller=ALICE)
        assert seen.status.state is TaskState.FAILED
        assert status_text(seen) == RUNNER_LOST
        # When it comes back, its late writes are refused: the task stays FAILED.
        runner.release.set()
        await anyio.sleep(0.5)  # its skill ends and it tries to save COMPLETED
        again = await survivor.get_task(GetTaskRequest(id=task.id), caller=ALICE)
        assert again.status.state is TaskState.FAILED


async def test_redis_lost_mid_flight_fails_closed_and_recovers(redis_server: RedisServer) -> None:
    store = RedisTaskStore(RedisSettings(redis_server.url, timeout=1))
    runtime = TaskRuntime(Worker(), store=store)
    async with runtime.running():
        done = await send(runtime, request("echo", text="before"))
        redis_server.stop()
        with pytest.raises(TaskStoreUnavailableError) as caught:
            await runtime.get_task(GetTaskRequest(id=done.id), caller=ALICE)
        assert caught.value.http_status == 503
        with pytest.raises(TaskStoreUnavailableError):
            await send(runtime, request("echo", text="during"))
        redis_server.start()
        with anyio.fail_after(20):
            while True:
                try:
                    after = await send(runtime, request("echo", text="after"))
                    break
                except TaskStoreUnavailableError:
                    await anyio.sleep(0.2)
        assert after.status.state is TaskState.COMPLETED


async def test_two_agents_sharing_one_redis_never_see_each_others_tasks(redis_url: str) -> None:
    settings = RedisSettings(redis_url)
    planner = TaskRuntime(Worker(), store=RedisTaskStore(settings, namespace="http://planner"))
    travel = TaskRuntime(Worker(), store=RedisTaskStore(settings, namespace="http://travel"))
    async with planner.running(), travel.running():
        task = await send(planner, request("echo", text="mine"))
        with pytest.raises(TaskNotFoundError):
            await travel.get_task(GetTaskRequest(id=task.id), caller=ALICE)
        assert (await travel.list_tasks(ListTasksRequest(), caller=ALICE)).tasks == []
        assert len((await planner.list_tasks(ListTasksRequest(), caller=ALICE)).tasks) == 1
