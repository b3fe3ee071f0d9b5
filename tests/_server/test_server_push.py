"""Push notifications over both bindings (A2A 1.0 §3.1.7-§3.1.10, §4.3).

A webhook receiver (a Starlette app reached through the notifier's HTTP client, its host
resolving to loopback, which these tests allow explicitly) records what the agent POSTs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from server_support import AGENT_URL, ISSUER, TokenMinter, bearer, call_message
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from wire_support import BINDINGS, Refusal, Wire

from keycard_agents import Agent, Context, create_app, skill
from keycard_agents.runtime import PushNotifier, UnsafeWebhookError

pytestmark = pytest.mark.anyio

MINTER = TokenMinter()
HOOK = "http://hooks.test/cb"


class Gated(Agent):
    name = "Gated"
    description = "Works until released."

    gate: anyio.Event

    @skill(id="work")
    async def work(self, ctx: Context, label: int) -> str:
        """Wait for the gate, then finish."""
        await self.gate.wait()
        return f"done {label}"


@dataclass
class Hooks:
    """What the webhook received; the first ``fail`` requests answer 503."""

    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    fail: int = 0
    attempts: int = 0
    completed: anyio.Event = field(default_factory=anyio.Event)

    def app(self) -> Starlette:
        async def receive(request: Request) -> JSONResponse:
            self.attempts += 1
            if self.fail > 0:
                self.fail -= 1
                return JSONResponse({}, status_code=503)
            body = await request.json()
            self.received.append((dict(request.headers), body))
            state = body.get("statusUpdate", {}).get("status", {}).get("state")
            if state == "TASK_STATE_COMPLETED":
                self.completed.set()
            return JSONResponse({})

        return Starlette(routes=[Route("/cb", receive, methods=["POST"])])


async def resolve(host: str, port: int) -> list[str]:
    if host == "hooks.test":
        return ["127.0.0.1"]
    if host == "intranet.test":
        return ["10.1.2.3"]
    return ["93.184.216.34"]


@dataclass
class World:
    wire: Wire
    agent: Gated
    hooks: Hooks


@pytest.fixture(params=BINDINGS)
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    hooks = Hooks(fail=2)
    agent = Gated(url=AGENT_URL, issuer=ISSUER, token_endpoint=ISSUER + "/token")
    agent.gate = anyio.Event()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hooks.app())) as hook_http:
        notifier = PushNotifier(
            allow_loopback=True, http=hook_http, resolve=resolve, backoff=0.01, max_backoff=0.05
        )
        app = create_app(agent, verifier=MINTER.verifier(), push=notifier)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=AGENT_URL) as client:
                wire = Wire(str(request.param), app, client, bearer(MINTER.token(sub="alice")))
                yield World(wire, agent, hooks)
            agent.gate.set()


async def call(wire: Wire, method: str, params: dict[str, Any]) -> Any:
    if wire.binding == "JSONRPC":
        result, _ = await wire.call(method, params)
        return result
    task_id = params["taskId"]
    base = f"/tasks/{task_id}/pushNotificationConfigs"
    if method == "CreateTaskPushNotificationConfig":
        body = {k: v for k, v in params.items() if k != "taskId"}
        response = await wire.client.post(base, json=body, headers=wire.headers)
    elif method == "ListTaskPushNotificationConfigs":
        response = await wire.client.get(base, headers=wire.headers)
    elif method == "GetTaskPushNotificationConfig":
        response = await wire.client.get(f"{base}/{params['id']}", headers=wire.headers)
    else:
        response = await wire.client.delete(f"{base}/{params['id']}", headers=wire.headers)
    if response.status_code >= 400:
        error = response.json()["error"]
        return Refusal(wire.binding, response.status_code, None, error["details"][0]["reason"], "")
    return response.json()


def states(hooks: Hooks) -> list[str]:
    out = []
    for _, body in hooks.received:
        if "statusUpdate" in body:
            out.append(body["statusUpdate"]["status"]["state"].removeprefix("TASK_STATE_"))
        elif "artifactUpdate" in body:
            out.append("artifact")
    return out


async def test_configs_are_kept_per_task_and_events_delivered_with_retries(world: World) -> None:
    wire, hooks = world.wire, world.hooks
    card = (await wire.client.get("/.well-known/agent-card.json")).json()
    assert card["capabilities"]["pushNotifications"] is True
    sent = await wire.send(call_message("work", {"label": 1}), returnImmediately=True)
    task_id = sent["task"]["id"]
    config = {
        "taskId": task_id,
        "url": HOOK,
        "token": "notification-token-1",
        "authentication": {"scheme": "Bearer", "credentials": "webhook-credential"},
    }
    created = await call(wire, "CreateTaskPushNotificationConfig", config)
    assert not isinstance(created, Refusal), created
    assert created["taskId"] == task_id
    assert created["url"] == HOOK
    config_id = created["id"]
    got = await call(wire, "GetTaskPushNotificationConfig", {"taskId": task_id, "id": config_id})
    assert got["id"] == config_id
    listed = await call(wire, "ListTaskPushNotificationConfigs", {"taskId": task_id})
    assert [c["id"] for c in listed["configs"]] == [config_id]
    # Another user sees neither the task nor its configs.
    bob = Wire(wire.binding, wire.app, wire.client, bearer(MINTER.token(sub="bob")))
    hidden = await call(bob, "ListTaskPushNotificationConfigs", {"taskId": task_id})
    assert isinstance(hidden, Refusal)
    assert hidden.reason == "TASK_NOT_FOUND"
    stolen = await call(bob, "CreateTaskPushNotificationConfig", {**config, "url": HOOK + "?b"})
    assert isinstance(stolen, Refusal)
    assert stolen.reason == "TASK_NOT_FOUND"

    world.agent.gate.set()
    with anyio.fail_after(10):
        await hooks.completed.wait()
    # Every event from the registration on (the skill may or may not have started before).
    assert states(hooks)[-2:] == ["artifact", "COMPLETED"]
    assert set(states(hooks)[:-2]) <= {"WORKING"}
    assert hooks.attempts == len(hooks.received) + 2  # two 503s, retried with backoff
    headers, body = hooks.received[-1]
    assert headers["x-a2a-notification-token"] == "notification-token-1"
    assert headers["authorization"] == "Bearer webhook-credential"
    assert body["statusUpdate"]["taskId"] == task_id

    deleted = await call(
        wire, "DeleteTaskPushNotificationConfig", {"taskId": task_id, "id": config_id}
    )
    assert deleted == {}
    listed = await call(wire, "ListTaskPushNotificationConfigs", {"taskId": task_id})
    assert listed.get("configs", []) == []


async def test_a_config_in_send_message_gets_every_event_of_the_new_task(world: World) -> None:
    wire, hooks = world.wire, world.hooks
    world.agent.gate.set()
    hooks.fail = 0
    result = await wire.send(
        call_message("work", {"label": 2}),
        taskPushNotificationConfig={"url": HOOK, "token": "t2"},
    )
    assert result["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    with anyio.fail_after(10):
        await hooks.completed.wait()
    assert states(hooks) == ["WORKING", "artifact", "COMPLETED"]


async def test_webhooks_on_private_or_loopback_addresses_are_refused(world: World) -> None:
    wire = world.wire
    sent = await wire.send(call_message("work", {"label": 3}), returnImmediately=True)
    task_id = sent["task"]["id"]
    for url in ("http://intranet.test/cb", "ftp://hooks.test/cb", "http://u:p@hooks.test/cb"):
        refused = await call(
            wire, "CreateTaskPushNotificationConfig", {"taskId": task_id, "url": url}
        )
        assert isinstance(refused, Refusal), url
        assert refused.reason == "INVALID_PARAMS"
    in_send = await wire.send(
        call_message("work", {"label": 4}),
        taskPushNotificationConfig={"url": "http://intranet.test/"},
    )
    assert isinstance(in_send, Refusal)
    assert in_send.reason == "INVALID_PARAMS"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1/x", False),
        ("http://[::1]/x", False),
        ("http://10.0.0.8/x", False),
        ("http://192.168.1.1/x", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://100.64.0.1/x", False),
        ("http://[::ffff:127.0.0.1]/x", False),
        ("http://0.0.0.0/x", False),
        ("http://224.0.0.1/x", False),
        ("https://93.184.216.34/x", True),
    ],
)
async def test_the_default_notifier_only_calls_public_addresses(url: str, allowed: bool) -> None:
    notifier = PushNotifier()
    if allowed:
        await notifier.check_url(url)
    else:
        with pytest.raises(UnsafeWebhookError):
            await notifier.check_url(url)
    loopback_ok = PushNotifier(allow_loopback=True)
    if "127.0.0.1" in url or "::1" in url:
        await loopback_ok.check_url(url)
