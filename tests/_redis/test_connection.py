"""Connecting to a real Redis (single server and 3-node Cluster), and the settings."""

from __future__ import annotations

import subprocess
import sys

import pytest
from redis_support import free_port

from keycard_agents import ConfigurationError
from keycard_agents.redis import (
    RedisSettings,
    StoreUnavailableError,
    open_redis,
    settings_from_env,
)

pytestmark = pytest.mark.anyio


async def test_open_redis_connects_to_a_server_and_a_cluster(redis_url: str) -> None:
    settings = RedisSettings(url=redis_url, prefix="t")
    async with open_redis(settings) as redis:
        key = redis.key("probe", "tag", "a")
        assert key == "t:probe:{tag}:a"
        await redis.client.set(key, "1")
        assert await redis.client.get(key) == b"1"
    assert settings.cluster is redis_url.startswith("redis+cluster://")


async def test_an_unreachable_redis_at_start_up_is_a_clear_error() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreUnavailableError) as caught:
        async with open_redis(RedisSettings(url=url, timeout=2)):
            pytest.fail("connected to nothing")
    message = str(caught.value)
    assert "cannot connect to Redis at redis://:***@127.0.0.1" in message
    assert "KEYCARD_REDIS_URL" in message
    assert "hunter2" not in message


async def test_errors_raised_inside_the_connection_are_not_wrapped(redis_url: str) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with open_redis(RedisSettings(url=redis_url)):
            raise KeyError("mine")


def test_settings_reject_unknown_schemes_and_braced_prefixes() -> None:
    with pytest.raises(ConfigurationError, match="must start with one of"):
        RedisSettings(url="http://127.0.0.1:6379")
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisSettings(url="redis://127.0.0.1:6379", prefix="a{b}")
    assert RedisSettings(url="redis://u:pw@h:1/0").redacted_url == "redis://u:***@h:1/0"
    cluster = RedisSettings(url="redis+cluster://h:1")
    assert cluster.cluster
    assert cluster.client_url() == "redis://h:1"


def test_settings_come_from_the_environment() -> None:
    assert settings_from_env({}) is None
    settings = settings_from_env(
        {"KEYCARD_REDIS_URL": "redis://127.0.0.1:1/2", "KEYCARD_REDIS_PREFIX": "prod"}
    )
    assert settings == RedisSettings(url="redis://127.0.0.1:1/2", prefix="prod")


def test_importing_the_core_never_imports_coredis() -> None:
    code = (
        "import sys, keycard_agents, keycard_agents.sts, keycard_agents.runtime\n"
        "import keycard_agents.testing, keycard_agents.audit, keycard_agents.auth\n"
        "from keycard_agents.sts import TokenService\n"
        "from keycard_agents import serve, create_app\n"
        "bad = [m for m in ('coredis', 'keycard_agents._redis') if m in sys.modules]\n"
        "print(','.join(bad))\n"
        "import keycard_agents.redis\n"
        "print('coredis' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["True"]
