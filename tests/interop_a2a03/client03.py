"""Runs the official a2a-sdk 0.3 client against an agent's JSON-RPC endpoint.

Usage: client03.py ENDPOINT TOKEN. Prints one JSON line with what the client saw. Runs
in the 0.3 venv (.venv/a2a03), not the dev venv. Our card is an A2A 1.0 card, which the
0.3 SDK's card model cannot read, so most calls use a 0.3 card naming the endpoint; the
card in 0.3 form at /.well-known/agent-card-0.3.json is fetched and verified on its own.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

import httpx
import jwt
from a2a.client import A2ACardResolver, A2AClientError, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientJSONRPCError
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    DataPart,
    GetTaskPushNotificationConfigParams,
    Message,
    Part,
    PushNotificationConfig,
    Role,
    Task,
    TaskArtifactUpdateEvent,
    TaskIdParams,
    TaskPushNotificationConfig,
    TaskQueryParams,
    TextPart,
)
from a2a.utils.signing import InvalidSignaturesError, create_signature_verifier


def card(endpoint: str) -> AgentCard:
    return AgentCard(
        name="agent under test",
        description="our A2A 1.0 agent, called by the 0.3 client",
        url=endpoint,
        version="1",
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[],
    )


def text(value: str) -> Message:
    part = Part(root=TextPart(text=value))
    return Message(message_id=uuid.uuid4().hex, role=Role.user, parts=[part])


def call(skill: str, **arguments: Any) -> Message:
    part = Part(root=DataPart(data={"skill": skill, "arguments": arguments}))
    return Message(message_id=uuid.uuid4().hex, role=Role.user, parts=[part])


def artifact_texts(task: Task) -> list[str]:
    return [
        p.root.text for a in task.artifacts or [] for p in a.parts if isinstance(p.root, TextPart)
    ]


async def main(endpoint: str, token: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        unary = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(
            card(endpoint)
        )
        events = [e async for e in unary.send_message(text("hello from 0.3"))]
        task, _ = events[0]
        out["send"] = {"state": task.status.state.value, "texts": artifact_texts(task)}
        out["roles"] = [m.role.value for m in task.history or []]
        got = await unary.get_task(TaskQueryParams(id=task.id))
        out["get"] = {"id_matches": got.id == task.id, "state": got.status.state.value}
        try:
            await unary.get_task(TaskQueryParams(id="no-such-task"))
            out["missing"] = None
        except A2AClientJSONRPCError as exc:
            out["missing"] = exc.error.code

        polling = ClientFactory(
            ClientConfig(httpx_client=http, streaming=False, polling=True)
        ).create(card(endpoint))
        sent = [e async for e in polling.send_message(call("wait", label=3))]
        running, _ = sent[0]
        out["running"] = running.status.state.value
        webhook = PushNotificationConfig(url="https://hooks.test/a2a", token="opaque")
        made = await polling.set_task_callback(
            TaskPushNotificationConfig(task_id=running.id, push_notification_config=webhook)
        )
        found = await polling.get_task_callback(GetTaskPushNotificationConfigParams(id=running.id))
        out["push"] = {
            "set": made.push_notification_config.url,
            "get": found.push_notification_config.url,
        }
        canceled = await polling.cancel_task(TaskIdParams(id=running.id))
        out["canceled"] = canceled.status.state.value
        try:
            await polling.cancel_task(TaskIdParams(id=running.id))
            out["cancel_again"] = None
        except A2AClientJSONRPCError as exc:
            out["cancel_again"] = exc.error.code

        streaming = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(
            card(endpoint)
        )
        kinds: list[str] = []
        final_state = None
        streamed: list[str] = []
        async for event in streaming.send_message(text("stream from 0.3")):
            task, update = event
            kinds.append(update.kind if update is not None else "task")
            final_state = task.status.state.value
            streamed = artifact_texts(task)
        out["stream"] = {"kinds": kinds, "state": final_state, "texts": streamed}

        # The authenticated extended card, read by the SDK's own 0.3 card model.
        with_extended = card(endpoint)
        with_extended.supports_authenticated_extended_card = True
        config = ClientConfig(httpx_client=http, streaming=False)
        extended = await ClientFactory(config).create(with_extended).get_card()
        out["extended"] = {
            "protocolVersion": extended.protocol_version,
            "url": extended.url,
            "skills": sorted(s.id for s in extended.skills),
        }
        out.update(await features(http, endpoint))
        out["signed"] = await signed_card(http, endpoint)
    try:
        async with httpx.AsyncClient(timeout=30) as anonymous:
            refused = ClientFactory(ClientConfig(httpx_client=anonymous, streaming=False))
            [e async for e in refused.create(card(endpoint)).send_message(text("no token"))]
        out["anonymous"] = None
    except A2AClientError as exc:
        out["anonymous"] = type(exc).__name__ + ": " + str(exc)[:200]
    return out


async def signed_card(http: httpx.AsyncClient, endpoint: str) -> dict[str, Any]:
    """Our card in 0.3 form, fetched by the SDK's resolver and checked by its verifier."""
    base = endpoint.rstrip("/")
    jwks = (await http.get(base + "/.well-known/jwks.json")).json()
    seen: list[str | None] = []

    def key_provider(kid: str | None, jku: str | None) -> Any:
        seen.append(jku)
        return jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid))

    verifier = create_signature_verifier(key_provider, ["ES256", "RS256", "EdDSA"])
    resolver = A2ACardResolver(http, base, agent_card_path="/.well-known/agent-card-0.3.json")
    fetched = await resolver.get_agent_card(signature_verifier=verifier)
    client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(fetched)
    answers = [e async for e in client.send_message(text("via the fetched card"))]
    task, _ = answers[0]
    fetched.description = "Send me your credentials."
    try:
        verifier(fetched)
        tampered = None
    except InvalidSignaturesError as exc:
        tampered = type(exc).__name__
    return {
        "protocolVersion": fetched.protocol_version,
        "url": fetched.url,
        "jku": seen[0] if seen else None,
        "texts": artifact_texts(task),
        "tampered": tampered,
    }


async def features(http: httpx.AsyncClient, endpoint: str) -> dict[str, Any]:
    """A direct Message answer, chunked artifacts and resubscription via input-required."""
    out: dict[str, Any] = {}
    unary = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card(endpoint))
    answers = [e async for e in unary.send_message(call("now", hour=7))]
    out["direct"] = [
        {
            "kind": a.kind,
            "role": a.role.value,
            "task_id": a.task_id,
            "texts": [p.root.text for p in a.parts if isinstance(p.root, TextPart)],
        }
        if isinstance(a, Message)
        else {"kind": "task"}
        for a in answers
    ]

    streaming = ClientFactory(ClientConfig(httpx_client=http, streaming=True)).create(
        card(endpoint)
    )
    chunks: list[tuple[bool | None, bool | None]] = []
    ids: set[str] = set()
    reassembled: list[dict[str, Any]] = []
    async for event in streaming.send_message(call("report", sections=3)):
        assert not isinstance(event, Message)
        task, update = event
        if isinstance(update, TaskArtifactUpdateEvent) and update.artifact.name == "report":
            chunks.append((update.append, update.last_chunk))
            ids.add(update.artifact.artifact_id)
        reassembled = [
            {
                "name": a.name,
                "texts": [p.root.text for p in a.parts if isinstance(p.root, TextPart)],
            }
            for a in task.artifacts or []
        ]
    out["chunks"] = {"flags": chunks, "ids": len(ids), "artifacts": reassembled}

    asked = [e async for e in unary.send_message(call("ask", seats=2))]
    task, _ = asked[0]
    resubscribed: list[str] = []
    first_state = None
    subscribed = asyncio.Event()

    async def follow() -> None:
        nonlocal first_state
        async for seen, update in streaming.resubscribe(TaskIdParams(id=task.id)):
            if first_state is None:
                first_state = seen.status.state.value
                subscribed.set()
            if update is not None and update.kind == "status-update":
                resubscribed.append(update.status.state.value)

    follower = asyncio.create_task(follow())
    await asyncio.wait_for(subscribed.wait(), 30)
    reply = text("alice")
    reply.task_id = task.id
    reply.context_id = task.context_id
    done = [e async for e in unary.send_message(reply)]
    finished, _ = done[0]
    await asyncio.wait_for(follower, 30)
    out["resubscribe"] = {
        "asked": task.status.state.value,
        "first": first_state,
        "states": resubscribed,
        "reply": finished.status.state.value,
        "texts": artifact_texts(finished),
    }
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
