"""``keycard-agents demo --replicas N --redis URL``: the demo with replicas sharing Redis.

The token service and the planner each run ``N`` times (replica 1 keeps the URLs the
others use, where a load balancer would be); every replica shares the Redis at ``URL``
(docs/replicas.md). After alice's request, the demo shows the other replicas at work:
the planner's task read through planner replica 2, and the keys every token service
replica serves (each signs with its own and publishes the public ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from keycard_agents._demo._services import RunningServer, bind_loopback, start_server
from keycard_agents._errors import ConfigurationError
from keycard_agents._redis._connection import RedisSettings
from keycard_agents._redis._sts_state import RedisServiceState
from keycard_agents._redis._tasks import RedisTaskStore

__all__ = ["ReplicaPlan", "replica_plan"]

MAX_REPLICAS = 4


@dataclass(frozen=True)
class ReplicaPlan:
    """How many replicas of the token service and the planner, sharing which Redis."""

    replicas: int
    settings: RedisSettings

    def task_store(self, *, namespace: str) -> RedisTaskStore:
        return RedisTaskStore(self.settings, namespace=namespace)

    def service_state(self) -> RedisServiceState:
        return RedisServiceState(self.settings)


def replica_plan(replicas: int, redis: str | None) -> ReplicaPlan | None:
    """The plan for ``--replicas`` / ``--redis`` (``None``: the plain in-memory demo)."""
    if replicas < 1 or replicas > MAX_REPLICAS:
        raise ConfigurationError(
            f"--replicas {replicas}: use 1 to {MAX_REPLICAS}", setting="replicas"
        )
    if redis is None:
        if replicas > 1:
            raise ConfigurationError(
                "--replicas needs --redis URL (or KEYCARD_REDIS_URL): replicas share Redis",
                setting="redis",
            )
        return None
    return ReplicaPlan(replicas=replicas, settings=RedisSettings(url=redis))


def start_replica(app: Any, *, name: str) -> RunningServer:
    """Serve one more replica on a free loopback port."""
    sock = bind_loopback(0, service=name)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    return start_server(app, sock, name=name, url=url)


async def show_replicas(
    say: Any,
    *,
    planners: list[str],
    services: list[str],
    task_id: str,
    token: str,
) -> None:
    """Read alice's task through every planner replica; list every service's keys."""
    async with httpx.AsyncClient(timeout=10.0) as http:
        for index, url in enumerate(planners, start=1):
            reply = await http.post(
                url + "/",
                json={"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": task_id}},
                headers={"A2A-Version": "1.0", "Authorization": f"Bearer {token}"},
            )
            state = reply.json().get("result", {}).get("status", {}).get("state", "?")
            say(f"  planner replica {index} ({url}) reads task {task_id[:8]}…: {state}")
        for index, url in enumerate(services, start=1):
            keys = (await http.get(url + "/jwks.json")).json()["keys"]
            say(f"  token service replica {index} ({url}) serves {len(keys)} signing keys")
