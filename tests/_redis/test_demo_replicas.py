"""``keycard-agents demo --replicas 2 --redis URL`` against a real Redis."""

from __future__ import annotations

import pytest
from redis_support import RedisServer

from keycard_agents._cli import main


def test_the_demo_runs_two_replicas_sharing_redis(
    redis_single: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_single.flush()
    assert main(["demo", "--replicas", "2", "--redis", redis_single.url]) == 0
    out = capsys.readouterr().out
    assert "Replicas sharing Redis" in out
    # alice's task, run by planner replica 1, is read through replica 2 as well.
    assert out.count("reads task") == 2
    assert out.count(": TASK_STATE_COMPLETED") >= 2
    # Each token service replica serves both replicas' keys.
    assert out.count("serves 2 signing keys") == 2


def test_replicas_need_redis(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KEYCARD_REDIS_URL", raising=False)
    assert main(["demo", "--replicas", "2"]) == 2
    assert "--replicas needs --redis URL" in capsys.readouterr().err
    assert main(["demo", "--replicas", "9", "--redis", "redis://127.0.0.1:1"]) == 2
    assert "use 1 to 4" in capsys.readouterr().err
