"""An agent and helpers for the replica tests (tasks shared through Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio

from keycard_agents import Agent, Caller, Context, Principal, skill
from keycard_agents.a2a import (
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    Task,
)
from keycard_agents.runtime import TaskRuntime


class Worker(Agent):
    name = "worker"

    def __init__(self, url: str = "http://127.0.0.1:9001") -> None:
        super().__init__(url=url)
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.finally_ran = False
        self.completed = False

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


def caller(user: str = "alice", scopes: tuple[str, ...] = ("work",)) -> Caller:
    principal = Principal(
        user=user, issuer="https://sts.test", audience=("x",), scopes=frozenset(scopes)
    )
    return Caller(principal, token=f"token-of-{user}")


ALICE = caller()
BOB = caller("bob")


def request(
    skill_id: str | None = None,
    *,
    say: str | None = None,
    task_id: str | None = None,
    return_immediately: bool | None = None,
    **arguments: Any,
) -> SendMessageRequest:
    parts = []
    if skill_id is not None:
        parts.append(Part(data={"skill": skill_id, "arguments": arguments}))
    if say is not None:
        parts.append(Part(text=say))
    config = None
    if return_immediately is not None:
        config = SendMessageConfiguration(return_immediately=return_immediately)
    message = Message(
        message_id=f"m-{skill_id}-{say}", role=Role.USER, parts=parts, task_id=task_id
    )
    return SendMessageRequest(message=message, configuration=config)


async def send(runtime: TaskRuntime, req: SendMessageRequest, who: Caller = ALICE) -> Task:
    result = await runtime.send_message(req, caller=who)
    assert isinstance(result, Task)
    return result


def status_text(task: Task) -> str | None:
    message = task.status.message
    return None if message is None else message.parts[0].text


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


async def collect(events: AsyncIterator[StreamResponse]) -> list[StreamResponse]:
    with anyio.fail_after(30):
        return [event async for event in events]
