"""Direct Message answers, REJECTED tasks and chunked artifacts, over both bindings.

A2A 1.0 §3.1.1 (SendMessage answers a Task or a Message), §4.1.3 (REJECTED is terminal),
§4.2 (TaskArtifactUpdateEvent ``append`` / ``lastChunk``); our client's typed answers
and its reassembly of chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from server_support import AGENT_URL, ISSUER, TokenMinter, bearer, call_message, rpc
from wire_support import BINDINGS, Refusal, Wire

import keycard_agents
from keycard_agents import (
    Agent,
    AgentClient,
    ArtifactAssembler,
    Context,
    RemoteTaskError,
    create_app,
    skill,
    task_result,
)
from keycard_agents.a2a import Message, Part, Role, StreamResponse, Task
from keycard_agents.runtime import MemoryTaskStore

pytestmark = pytest.mark.anyio

MINTER = TokenMinter()


class Answers(Agent):
    name = "Answers"
    description = "Answers at once, declines, or writes long reports in pieces."

    @skill(id="time")
    async def time(self, ctx: Context, zone: str) -> Message:
        """Answer at once, with no task."""
        return Message(message_id="answer-1", role=Role.AGENT, parts=[Part(text=f"noon in {zone}")])

    @skill(id="chatty")
    async def chatty(self, ctx: Context, zone: str) -> Message:
        """A mistake: a direct answer cannot report progress."""
        await ctx.update("thinking")
        return Message(message_id="never", role=Role.AGENT, parts=[Part(text="x")])

    @skill(id="risky")
    async def risky(self, ctx: Context, amount: int) -> str:
        """Declines what it will not do."""
        if amount > 100:
            await ctx.reject(f"{amount} is over the limit of 100")
        return f"paid {amount}"

    @skill(id="report")
    async def report(self, ctx: Context, sections: int) -> str:
        """Writes a report section by section."""
        writer = ctx.open_artifact(name="report")
        for i in range(sections):
            await writer.write(f"section {i};", last=i == sections - 1)
        return "done"


@pytest.fixture(params=BINDINGS)
async def wire(request: pytest.FixtureRequest) -> AsyncIterator[Wire]:
    app = create_app(
        Answers(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token"),
        verifier=MINTER.verifier(),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            yield Wire(str(request.param), app, client, bearer(MINTER.token(sub="alice")))


async def collect(wire: Wire, message: dict[str, Any]) -> list[dict[str, Any]]:
    with anyio.fail_after(10):
        async with wire.stream(message) as events:
            return [e async for e in events]


async def test_a_skill_answers_with_a_message_and_no_task(wire: Wire) -> None:
    answer = await wire.send(call_message("time", {"zone": "UTC"}))
    assert not isinstance(answer, Refusal), answer
    assert set(answer) == {"message"}
    assert answer["message"]["role"] == "ROLE_AGENT"
    assert answer["message"]["parts"] == [{"text": "noon in UTC"}]
    assert "taskId" not in answer["message"]
    listed, _ = await wire.call("ListTasks", {})
    assert listed.get("tasks", []) == []  # no task was created
    events = await collect(wire, call_message("time", {"zone": "CET"}))
    assert [set(e) for e in events] == [{"message"}]
    assert events[0]["message"]["parts"] == [{"text": "noon in CET"}]


async def test_a_direct_answer_cannot_report_progress(wire: Wire) -> None:
    refused = await wire.send(call_message("chatty", {"zone": "UTC"}))
    assert isinstance(refused, Refusal)
    assert refused.reason == "INVALID_AGENT_RESPONSE"
    assert "has no task" in refused.message


async def test_a_skill_rejects_a_task(wire: Wire) -> None:
    result = await wire.send(call_message("risky", {"amount": 500}))
    task = result["task"]
    assert task["status"]["state"] == "TASK_STATE_REJECTED"
    assert task["status"]["message"]["parts"] == [{"text": "500 is over the limit of 100"}]
    again, _ = await wire.call("CancelTask", {"id": task["id"]})
    assert isinstance(again, Refusal)  # REJECTED is terminal
    assert again.reason == "TASK_NOT_CANCELABLE"


async def test_chunked_artifacts_stream_with_one_id_and_reassemble(wire: Wire) -> None:
    events = await collect(wire, call_message("report", {"sections": 3}))
    chunks = [e["artifactUpdate"] for e in events if "artifactUpdate" in e]
    report = [c for c in chunks if c["artifact"].get("name") == "report"]
    assert len(report) == 3
    assert len({c["artifact"]["artifactId"] for c in report}) == 1
    assert [c.get("append", False) for c in report] == [False, True, True]
    assert [c.get("lastChunk", False) for c in report] == [False, False, True]
    assembler = ArtifactAssembler()
    completed = [assembler.add(StreamResponse.model_validate(e)) for e in events]
    whole = [a for a in completed if a is not None and a.name == "report"]
    assert len(whole) == 1
    assert [p.text for p in whole[0].parts] == ["section 0;", "section 1;", "section 2;"]
    # The task holds the whole artifact too.
    task_id = events[0]["task"]["id"]
    got, _ = await wire.call("GetTask", {"id": task_id})
    held = [a for a in got["artifacts"] if a.get("name") == "report"]
    assert [p["text"] for p in held[0]["parts"]] == ["section 0;", "section 1;", "section 2;"]


@asynccontextmanager
async def agent_client() -> AsyncIterator[AgentClient]:
    app = create_app(
        Answers(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token"),
        verifier=MINTER.verifier(),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport) as http:
            yield AgentClient(AGENT_URL, token=MINTER.token(sub="alice"), http_client=http)


async def test_our_client_types_messages_rejections_and_chunks() -> None:
    async with agent_client() as client:
        answer = await client.send(keycard_agents.call_message("time", {"zone": "UTC"}))
        assert isinstance(answer, Message)
        assert task_result(answer) == "noon in UTC"
        assert await client.call("time", zone="PST") == "noon in PST"
        with pytest.raises(RemoteTaskError, match="ended rejected: 101 is over") as caught:
            await client.call("risky", amount=101)
        assert caught.value.state == "TASK_STATE_REJECTED"
        assembler = ArtifactAssembler()
        async for event in client.stream_call("report", sections=2):
            assembler.add(event)
        report = next(a for a in assembler.artifacts if a.name == "report")
        assert assembler.is_complete(report.artifact_id)
        assert [p.text for p in report.parts] == ["section 0;", "section 1;"]


def test_assembler_refuses_an_append_before_the_start() -> None:
    from keycard_agents.a2a import Artifact, InvalidAgentResponseError, TaskArtifactUpdateEvent

    orphan = StreamResponse(
        artifact_update=TaskArtifactUpdateEvent(
            task_id="t",
            context_id="c",
            artifact=Artifact(artifact_id="a", parts=[Part(text="x")]),
            append=True,
        )
    )
    with pytest.raises(InvalidAgentResponseError, match="before the artifact started"):
        ArtifactAssembler().add(orphan)
    snapshot = Task.model_validate(
        {
            "id": "t",
            "contextId": "c",
            "status": {"state": "TASK_STATE_WORKING"},
            "artifacts": [{"artifactId": "a", "parts": [{"text": "x"}]}],
        }
    )
    assembler = ArtifactAssembler()
    assembler.add(StreamResponse(task=snapshot))
    assert assembler.add(orphan) is not None
    assert [p.text for p in assembler.artifacts[0].parts] == ["x", "x"]


async def test_the_app_runs_its_tasks_in_the_store_it_is_given_even_an_empty_one() -> None:
    store = MemoryTaskStore(max_tasks_per_owner=1)
    assert not store  # empty, so falsy: it must still be the store the app uses
    app = create_app(
        Answers(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token"),
        verifier=MINTER.verifier(),
        store=store,
    )
    headers = bearer(MINTER.token(sub="alice"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
            for amount in (5, 6):
                message = call_message("risky", {"amount": amount})
                reply = await client.post(
                    "/", json=rpc("SendMessage", {"message": message}), headers=headers
                )
                assert reply.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    # The store holds alice's last task only: its limit of one per owner made room.
    assert len(store) == 1
