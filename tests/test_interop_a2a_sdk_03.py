"""Interop with the official ``a2a-sdk`` 0.3 Python client and server (A2A 0.3 clients).

The 0.3 SDK runs in its own venv (``a2a03_support``) as a subprocess. Its client sends a
message and reads the task, cancels, streams, sets push configs, reads the extended card,
gets a direct Message answer, reassembles a chunked artifact, resubscribes to a task
through input-required, and fetches and verifies our signed 0.3 card against our agent,
served by hypercorn on the test's own event loop (asyncio and trio) on a free loopback port; our
``AgentClient`` detects the 0.3 server from its card and sends, gets, streams and cancels.
"""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from a2a03_support import SCRIPTS, ensure_a2a03_venv
from server_support import ISSUER, EchoAgent, TokenMinter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keycard_agents import Context, WebIdentity, call_message, create_app, open_agent_client, skill
from keycard_agents.a2a import (
    Message,
    Part,
    Role,
    Task,
    TaskNotFoundError,
    TaskState,
    UnsupportedOperationError,
)
from keycard_agents.runtime import PushNotifier

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


class ExtendedEcho(EchoAgent):
    @skill(id="hidden", extended=True)
    async def hidden(self, code: int) -> str:
        """Only on the authenticated extended card."""
        return f"hidden {code}"

    @skill(id="now")
    async def now(self, hour: int) -> Message:
        """Answers at once with a Message, no task."""
        text = f"hour {hour}"
        return Message(message_id=uuid.uuid4().hex, role=Role.AGENT, parts=[Part(text=text)])

    @skill(id="report")
    async def report(self, ctx: Context, sections: int) -> str:
        """Streams a report artifact in chunks."""
        writer = ctx.open_artifact(name="report")
        for i in range(sections):
            await writer.write(f"s{i};", last=i == sections - 1)
        return "done"

    @skill(id="ask")
    async def ask(self, ctx: Context, seats: int) -> str:
        """Asks who it is for (input-required), then answers."""
        who = await ctx.ask_input(f"Who are the {seats} seats for?")
        return f"{seats} seats for {who}"


@pytest.fixture(scope="session")
def python03() -> str:
    return str(ensure_a2a03_venv())


async def _serve(app: Any, sock: socket.socket, stop: anyio.Event, backend: str) -> None:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.graceful_timeout = 2
    config.loglevel = "WARNING"
    if backend == "trio":
        from hypercorn.trio import serve as serve_trio

        await serve_trio(app, config, shutdown_trigger=stop.wait)
    else:
        from hypercorn.asyncio import serve as serve_asyncio

        await serve_asyncio(app, config, shutdown_trigger=stop.wait)


@pytest.fixture
async def our_agent(anyio_backend: str, tmp_path: Path) -> AsyncIterator[tuple[str, TokenMinter]]:
    """Our agent on a real loopback socket, served on the test's backend."""
    minter = TokenMinter()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    identity = WebIdentity("echo03", storage_dir=tmp_path / "keys")  # signs the cards
    agent = ExtendedEcho(
        url=url, issuer=ISSUER, token_endpoint=ISSUER + "/token", credential=identity
    )
    hooks = httpx.AsyncClient(transport=httpx.ASGITransport(app=webhook()))
    push = PushNotifier(allow_loopback=True, http=hooks, resolve=resolve_hooks)
    app = create_app(agent, verifier=minter.verifier(), push=push)
    stop = anyio.Event()
    async with hooks, anyio.create_task_group() as tg:
        tg.start_soon(_serve, app, sock, stop, anyio_backend)
        async with httpx.AsyncClient() as http:
            with anyio.fail_after(20):
                while True:
                    try:
                        card = await http.get(url + "/.well-known/agent-card.json")
                        if card.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.05)
        yield url, minter
        stop.set()


def webhook() -> Starlette:
    """Where pushes for hooks.test go (in process): accepted and dropped."""

    async def receive(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    return Starlette(routes=[Route("/a2a", receive, methods=["POST"])])


async def resolve_hooks(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]  # hooks.test, allowed as loopback for these tests only


@pytest.mark.timeout(420)
async def test_official_03_client_against_our_server(
    python03: str, our_agent: tuple[str, TokenMinter]
) -> None:
    url, minter = our_agent
    with anyio.fail_after(120):
        result = await anyio.run_process(
            [python03, str(SCRIPTS / "client03.py"), url + "/", minter.token(aud=url)],
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()[-4000:]
    out = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert out["send"] == {"state": "completed", "texts": ["echo: hello from 0.3"]}
    assert out["roles"][0] == "user"
    assert out["get"] == {"id_matches": True, "state": "completed"}
    assert out["missing"] == -32001
    assert out["running"] in ("submitted", "working")
    assert out["canceled"] == "canceled"
    assert out["push"] == {"set": "https://hooks.test/a2a", "get": "https://hooks.test/a2a"}
    assert out["cancel_again"] == -32002
    stream = out["stream"]
    assert stream["kinds"][0] == "task"
    assert "artifact-update" in stream["kinds"]
    assert stream["kinds"][-1] == "status-update"
    assert stream["state"] == "completed"
    assert stream["texts"] == ["echo: stream from 0.3"]
    assert out["anonymous"] is not None
    assert "401" in out["anonymous"]
    extended = out["extended"]
    assert extended["protocolVersion"].startswith("0.3")
    assert extended["url"] == url
    assert "hidden" in extended["skills"]
    # A direct Message answer: one Message from the agent, no task behind it.
    assert out["direct"] == [
        {"kind": "message", "role": "agent", "task_id": None, "texts": ["hour 7"]}
    ]
    # Chunked artifacts: one artifact id, append/lastChunk as sent, joined by their client.
    chunks = out["chunks"]
    assert chunks["flags"] == [[False, False], [True, False], [True, True]]
    assert chunks["ids"] == 1
    report = [a for a in chunks["artifacts"] if a["name"] == "report"]
    assert len(report) == 1
    assert "".join(report[0]["texts"]) == "s0;s1;s2;"
    # tasks/resubscribe on a task in input-required stays open through the reply.
    again = out["resubscribe"]
    assert again["asked"] == "input-required"
    assert again["first"] == "input-required"
    assert again["reply"] == "completed"
    assert again["texts"] == ["2 seats for alice"]
    assert "working" in again["states"]
    assert again["states"][-1] == "completed"
    # Our card in 0.3 form at its own path: read and signature-checked by the 0.3 SDK.
    assert out["signed"] == {
        "protocolVersion": "0.3.0",
        "url": url,
        "jku": url + "/.well-known/jwks.json",
        "texts": ["echo: via the fetched card"],
        "tampered": "InvalidSignaturesError",
    }


@pytest.fixture(scope="module")
def their_server(python03: str) -> Iterator[str]:
    """The official 0.3 server (a2a-sdk's Starlette app under uvicorn), its base URL."""
    with subprocess.Popen(
        [python03, str(SCRIPTS / "server03.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("PORT "), (line, process.stderr and process.stderr.read())
            yield f"http://127.0.0.1:{int(line.split()[1])}"
        finally:
            process.terminate()
            process.wait(timeout=15)


def texts(task: Task) -> list[str]:
    return [p.text for a in task.artifacts for p in a.parts if p.text is not None]


@pytest.mark.timeout(420)
async def test_our_client_against_the_official_03_server(their_server: str) -> None:
    async with open_agent_client(their_server, timeout=20) as client:
        assert await client.protocol_version() == "0.3"
        sent = await client.send("hello")
        assert isinstance(sent, Task)
        assert sent.status.state == TaskState.COMPLETED
        assert texts(sent) == ["0.3 echo: hello"]

        got = await client.get_task(sent.id)
        assert got.id == sent.id
        assert got.status.state == TaskState.COMPLETED
        assert got.history
        assert got.history[0].parts[0].text == "hello"

        events = [e async for e in client.stream("streamed")]
        assert events[0].task is not None
        assert any(e.artifact_update is not None for e in events)
        last = events[-1].status_update
        assert last is not None
        assert last.status.state == TaskState.COMPLETED

        waiting = await client.send("wait", return_immediately=True)
        assert isinstance(waiting, Task)
        canceled = await client.cancel_task(waiting.id)
        assert canceled.status.state == TaskState.CANCELED

        with pytest.raises(TaskNotFoundError):
            await client.get_task("no-such-task")
        with pytest.raises(UnsupportedOperationError):  # 0.3 has no ListTasks
            await client.list_tasks()


async def test_our_client_speaks_03_to_our_server_when_told(
    our_agent: tuple[str, TokenMinter],
) -> None:
    url, minter = our_agent
    async with open_agent_client(url, token=minter.token(aud=url), protocol="0.3") as client:
        assert await client.protocol_version() == "0.3"
        sent = await client.send("over 0.3")
        assert isinstance(sent, Task)
        assert texts(sent) == ["echo: over 0.3"]
        assert (await client.get_task(sent.id)).status.state == TaskState.COMPLETED
        events = [e async for e in client.stream("streamed over 0.3")]
        last = events[-1].status_update
        assert last is not None
        assert last.status.state == TaskState.COMPLETED
        assert not isinstance(sent, Message)

        # tasks/resubscribe: the task now, then its events until the final one.
        waiting = await client.send(call_message("wait", {"label": 4}), return_immediately=True)
        assert isinstance(waiting, Task)
        states: list[TaskState] = []
        with anyio.fail_after(30):
            subscription = client.subscribe(waiting.id)
            first = await anext(subscription)
            assert first.task is not None
            assert first.task.id == waiting.id
            canceled = await client.cancel_task(waiting.id)
            assert canceled.status.state == TaskState.CANCELED
            async for event in subscription:
                if event.status_update is not None:
                    states.append(event.status_update.status.state)
        assert states[-1] == TaskState.CANCELED
