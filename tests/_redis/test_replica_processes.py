"""Replicas as separate processes on loopback, sharing one real Redis.

Two token services, two Front agents (one served on asyncio, one on trio) and Echo, each
its own process (tests/replica_processes.py). Requests go to a chosen replica's port, as
a load balancer would send them.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from redis_support import RedisServer
from replica_processes import PASSWORD, REDIRECT, Replicas, start_replicas

from keycard_agents.auth import CLIENT_ASSERTION_TYPE
from keycard_agents.redis import RUNNER_LOST, RedisServiceState, RedisSettings
from keycard_agents.sts import pkce_challenge

#: The replicas serve on asyncio (Front 1) and trio (Front 2); the client side of each
#: test runs once, on the backend named here, so that the processes start only once and
#: the module stays within its time budget (both backends are covered between the tests).
pytestmark = [pytest.mark.slow]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
LOAD_DEADLINE = 240.0


@pytest.fixture(scope="module")
def replicas(
    redis_single: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    redis_single.flush()
    deployment = start_replicas(tmp_path_factory.mktemp("replicas"), redis_single.url)
    yield deployment
    deployment.stop()


def call(skill_id: str, **arguments: Any) -> dict[str, Any]:
    return {"data": {"skill": skill_id, "arguments": arguments}}


async def rpc(
    http: httpx.AsyncClient, url: str, token: str, method: str, params: dict[str, Any]
) -> dict[str, Any]:
    reply = await http.post(
        url + "/",
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
        headers={"A2A-Version": "1.0", "Authorization": f"Bearer {token}"},
        timeout=60,
    )
    body: dict[str, Any] = reply.json()
    return body


async def send(
    http: httpx.AsyncClient, url: str, token: str, part: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "parts": [part], **extra}
    params: dict[str, Any] = {"message": message}
    if extra.pop("immediately", False) or "configuration" in message:
        params["configuration"] = message.pop("configuration")
    body = await rpc(http, url, token, "SendMessage", params)
    assert "result" in body, body
    task: dict[str, Any] = body["result"]["task"]
    return task


async def eventually(
    read: Callable[[], Awaitable[dict[str, Any]]],
    done: Callable[[dict[str, Any]], bool],
    *,
    within: float = 30.0,
) -> dict[str, Any]:
    """Read until ``done`` holds (another process changes what is read), at most ``within``."""
    with anyio.fail_after(within):
        for _ in range(10_000):
            value = await read()
            if done(value):
                return value
            await anyio.sleep(0.1)
    raise AssertionError("unreachable")


async def get_task(http: httpx.AsyncClient, url: str, token: str, task_id: str) -> dict[str, Any]:
    body = await rpc(http, url, token, "GetTask", {"id": task_id})
    assert "result" in body, body
    task: dict[str, Any] = body["result"]
    return task


async def _a_task_on_replica_1_is_read_streamed_and_cancelled_via_replica_2(
    replicas: Replicas,
) -> None:
    one, two = (f.url for f in replicas.fronts)
    token = replicas.user_token("ann")
    async with httpx.AsyncClient() as http:
        task = await send(
            http, one, token, call("slow", steps=60), configuration={"returnImmediately": True}
        )
        await eventually(
            lambda: get_task(http, two, token, task["id"]),
            lambda t: t["status"]["state"] == "TASK_STATE_WORKING",
        )
        events: list[dict[str, Any]] = []
        request = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "SubscribeToTask",
            "params": {"id": task["id"]},
        }
        headers = {"A2A-Version": "1.0", "Authorization": f"Bearer {token}"}
        with anyio.fail_after(60):
            async with http.stream("POST", two + "/", json=request, headers=headers) as stream:
                async for line in stream.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = json.loads(line[5:])
                    assert "result" in data, data
                    events.append(data["result"])
                    artifacts = [e for e in events if "artifactUpdate" in e]
                    if len(artifacts) == 2 and "artifactUpdate" in events[-1]:
                        canceled = await rpc(http, two, token, "CancelTask", {"id": task["id"]})
                        assert "result" in canceled, canceled
                        assert canceled["result"]["status"]["state"] == "TASK_STATE_CANCELED"
        assert "task" in events[0]
        assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_CANCELED"
        final = await get_task(http, one, token, task["id"])
        assert final["status"]["state"] == "TASK_STATE_CANCELED"
        assert len(final["artifacts"]) >= 2


def test_a_task_on_replica_1_is_read_streamed_and_cancelled_via_replica_2(
    replicas: Replicas,
) -> None:
    anyio.run(
        _a_task_on_replica_1_is_read_streamed_and_cancelled_via_replica_2, replicas, backend="trio"
    )


async def _an_interrupted_task_on_replica_1_is_resumed_via_replica_2(
    replicas: Replicas,
) -> None:
    one, two = (f.url for f in replicas.fronts)
    token = replicas.user_token("bea")
    async with httpx.AsyncClient() as http:
        asked = await send(http, one, token, call("ask", topic="lunch"))
        assert asked["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
        done = await send(http, two, token, {"text": "bob"}, taskId=asked["id"])
        assert done["status"]["state"] == "TASK_STATE_COMPLETED"
        assert done["artifacts"][-1]["parts"][0]["text"] == "lunch for bob"
        other = replicas.user_token("eve")
        stranger = await rpc(http, two, other, "GetTask", {"id": asked["id"]})
        assert stranger["error"]["code"] == -32001  # another user's task is not found


def test_an_interrupted_task_on_replica_1_is_resumed_via_replica_2(
    replicas: Replicas,
) -> None:
    anyio.run(
        _an_interrupted_task_on_replica_1_is_resumed_via_replica_2, replicas, backend="asyncio"
    )


async def _an_assertion_or_code_used_on_one_token_service_is_refused_on_the_other(
    replicas: Replicas,
) -> None:
    first, second = (s.url for s in replicas.sts)
    issuer = replicas.sts[0].url
    now = int(time.time())
    claims = {"iss": "prober", "sub": "prober", "aud": issuer, "iat": now, "exp": now + 60}
    assertion = replicas.prober.sign({**claims, "jti": uuid.uuid4().hex}, typ=CLIENT_ASSERTION_TYPE)
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }
    async with httpx.AsyncClient() as http:
        assert (await http.post(first + "/token", data=form)).status_code == 200
        again = await http.post(second + "/token", data=form)
        assert again.status_code == 401
        assert "already used" in again.json()["error_description"]
        params = {
            "response_type": "code",
            "client_id": "app",
            "redirect_uri": REDIRECT,
            "code_challenge": pkce_challenge(VERIFIER),
            "code_challenge_method": "S256",
            "resource": replicas.front_url,
            "scope": "front.use",
            "state": "s",
        }
        login = await http.post(
            first + "/authorize", data={**params, "username": "alice", "password": PASSWORD}
        )
        assert login.status_code == 303, login.text
        code = parse_qs(urlsplit(login.headers["location"]).query)["code"][0]
        redeem = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "app",
            "code_verifier": VERIFIER,
        }
        assert (await http.post(second + "/token", data=redeem)).status_code == 200
        reused = await http.post(first + "/token", data=redeem)
        assert reused.status_code == 400
        assert reused.json()["error"] == "invalid_grant"


def test_an_assertion_or_code_used_on_one_token_service_is_refused_on_the_other(
    replicas: Replicas,
) -> None:
    anyio.run(
        _an_assertion_or_code_used_on_one_token_service_is_refused_on_the_other,
        replicas,
        backend="trio",
    )


async def _a_token_exchanged_by_one_agent_replica_is_reused_by_the_other(
    replicas: Replicas,
) -> None:
    one, two = (f.url for f in replicas.fronts)
    txn = uuid.uuid4().hex
    token = replicas.user_token("cid", txn=txn)
    async with httpx.AsyncClient() as http:
        for url in (one, two, one):
            task = await send(http, url, token, call("relay"))
            assert task["status"]["state"] == "TASK_STATE_COMPLETED", task
            seen = task["artifacts"][0]["parts"][0]["data"]
            assert seen["below"]["sub"] == "cid"
            assert seen["below"]["actors"] == ["front"]
    state = RedisServiceState(RedisSettings(replicas.redis_url))
    async with state.connected():
        records = await state.audit_store(sink=None, max_records=100_000).query(txn=txn)
    exchanges = [r for r in records if r.decision == "issued" and r.target]
    assert len(exchanges) == 1, records  # one exchange, at one token service, for three calls


def test_a_token_exchanged_by_one_agent_replica_is_reused_by_the_other(
    replicas: Replicas,
) -> None:
    anyio.run(
        _a_token_exchanged_by_one_agent_replica_is_reused_by_the_other, replicas, backend="asyncio"
    )


async def _200_concurrent_users_over_two_and_two_replicas_never_cross(
    replicas: Replicas,
) -> None:
    users = [f"load{i:03d}" for i in range(200)]
    tokens = {u: replicas.user_token(u) for u in users}
    urls = [f.url for f in replicas.fronts]
    results: dict[str, dict[str, Any]] = {}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(limits=limits) as http:

        async def one(index: int, user: str) -> None:
            task = await send(http, urls[index % 2], tokens[user], call("relay"))
            assert task["status"]["state"] == "TASK_STATE_COMPLETED", task["status"]
            results[user] = task

        with anyio.move_on_after(LOAD_DEADLINE):
            async with anyio.create_task_group() as group:
                for index, user in enumerate(users):
                    group.start_soon(one, index, user)
    assert len(results) == 200, f"{len(results)} of 200 chains completed"
    for user, task in results.items():
        seen = task["artifacts"][0]["parts"][0]["data"]
        assert seen["here"]["sub"] == seen["below"]["sub"] == user
        assert seen["below"]["actors"] == ["front"]
        history_users = {m.get("taskId") for m in task["history"]}
        assert history_users == {task["id"]}


@pytest.mark.timeout(LOAD_DEADLINE + 60)
def test_200_concurrent_users_over_two_and_two_replicas_never_cross(
    replicas: Replicas,
) -> None:
    anyio.run(_200_concurrent_users_over_two_and_two_replicas_never_cross, replicas, backend="trio")


async def _redis_paused_5s_fails_closed_and_recovers(
    replicas: Replicas, redis_single: RedisServer
) -> None:
    one, two = (f.url for f in replicas.fronts)
    token = replicas.user_token("dan")
    form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER}
    async with httpx.AsyncClient(timeout=30) as http:
        done = await send(http, one, token, call("relay"))
        assert redis_single.process is not None
        redis_single.process.send_signal(signal.SIGSTOP)
        try:
            started = anyio.current_time()
            during = await rpc(http, two, token, "GetTask", {"id": done["id"]})
            assert during["error"]["code"] == -32603, during
            now = int(time.time())
            assertion = replicas.prober.sign(
                {
                    "iss": "prober",
                    "sub": "prober",
                    "aud": replicas.sts[0].url,
                    "iat": now,
                    "exp": now + 60,
                    "jti": uuid.uuid4().hex,
                },
                typ=CLIENT_ASSERTION_TYPE,
            )
            refused = await http.post(
                replicas.sts[1].url + "/token", data={**form, "client_assertion": assertion}
            )
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "temporarily_unavailable"
            await anyio.sleep(max(0.0, 5.0 - (anyio.current_time() - started)))
        finally:
            redis_single.process.send_signal(signal.SIGCONT)
        seen = await eventually(
            lambda: rpc(http, two, token, "GetTask", {"id": done["id"]}), lambda r: "result" in r
        )
        assert seen["result"]["status"]["state"] == "TASK_STATE_COMPLETED"
        # The refused assertion may have reached Redis (it was only paused): it is spent;
        # a fresh one works, once, on either service.
        spent = await http.post(
            replicas.sts[1].url + "/token", data={**form, "client_assertion": assertion}
        )
        assert spent.status_code in (200, 401), spent.text
        fresh = replicas.prober.sign(
            {
                "iss": "prober",
                "sub": "prober",
                "aud": replicas.sts[0].url,
                "iat": now,
                "exp": now + 60,
                "jti": uuid.uuid4().hex,
            },
            typ=CLIENT_ASSERTION_TYPE,
        )
        accepted = await http.post(
            replicas.sts[1].url + "/token", data={**form, "client_assertion": fresh}
        )
        assert accepted.status_code == 200, accepted.text
        replayed = await http.post(
            replicas.sts[0].url + "/token", data={**form, "client_assertion": fresh}
        )
        assert replayed.status_code == 401


def test_redis_paused_5s_fails_closed_and_recovers(
    replicas: Replicas, redis_single: RedisServer
) -> None:
    anyio.run(_redis_paused_5s_fails_closed_and_recovers, replicas, redis_single, backend="asyncio")


async def _killing_replica_1_mid_task_leaves_it_failed_with_its_artifacts(
    replicas: Replicas,
) -> None:
    front1 = replicas.fronts[0]
    one, two = front1.url, replicas.fronts[1].url
    token = replicas.user_token("fay")
    async with httpx.AsyncClient() as http:
        task = await send(
            http, one, token, call("slow", steps=60), configuration={"returnImmediately": True}
        )
        seen = await eventually(
            lambda: get_task(http, two, token, task["id"]),
            lambda t: len(t.get("artifacts", [])) >= 2,
        )
        reported = {a["artifactId"] for a in seen["artifacts"]}
        front1.kill()
        try:
            final = await eventually(
                lambda: get_task(http, two, token, task["id"]),
                lambda t: t["status"]["state"] != "TASK_STATE_WORKING",
            )
            assert final["status"]["state"] == "TASK_STATE_FAILED"
            assert final["status"]["message"]["parts"][0]["text"] == RUNNER_LOST
            assert reported <= {a["artifactId"] for a in final["artifacts"]}
        finally:
            front1.start()
            front1.wait_ready("/.well-known/agent-card.json")


def test_killing_replica_1_mid_task_leaves_it_failed_with_its_artifacts(
    replicas: Replicas,
) -> None:
    anyio.run(
        _killing_replica_1_mid_task_leaves_it_failed_with_its_artifacts, replicas, backend="trio"
    )
