"""The exchanged-token cache shared by two replicas on a real Redis, encrypted at rest."""

from __future__ import annotations

import secrets

import pytest
from sts_support import ISSUER, SECRET_B, B, open_world

from keycard_agents import ClientSecret
from keycard_agents.auth import TokenExchangeClient
from keycard_agents.redis import RedisSettings, RedisTokenCache, open_redis
from keycard_agents.sts import hash_secret

pytestmark = pytest.mark.anyio

C = "https://c.example/"
#: b may act first here (the shared world's b may not); c is only a target.
AGENTS = [
    {
        "client_id": "b",
        "resource": B,
        "auth": "client_secret",
        "secret_hash": hash_secret(SECRET_B, cost=2**4),
        "scopes": ["read"],
        "dependencies": [C],
    },
    {
        "client_id": "c",
        "resource": C,
        "auth": "client_secret",
        "secret_hash": hash_secret("c-secret-0123456789", cost=2**4),
        "scopes": ["read"],
    },
]


async def test_a_token_exchanged_by_one_replica_is_reused_by_the_other(redis_url: str) -> None:
    key = secrets.token_bytes(32)
    async with open_world(agents=AGENTS) as world:
        subject = world.service.issue_user_token("alice", audience=B, scopes=["read"])

        def replica(cache: RedisTokenCache) -> TokenExchangeClient:
            return TokenExchangeClient(
                issuer=ISSUER,
                credential=ClientSecret("b", SECRET_B),
                http_client=world.client,
                token_endpoint=f"{ISSUER}/token",
                clock=world.clock,
                token_cache=cache,
            )

        one_cache = RedisTokenCache(RedisSettings(redis_url), key=key)
        two_cache = RedisTokenCache(RedisSettings(redis_url), key=key)
        stranger_cache = RedisTokenCache(RedisSettings(redis_url), key=secrets.token_bytes(32))
        async with one_cache.connected(), two_cache.connected(), stranger_cache.connected():
            one, two, stranger = replica(one_cache), replica(two_cache), replica(stranger_cache)
            first = await one.exchange(subject, resource=C)
            second = await two.exchange(subject, resource=C)
            assert second.access_token == first.access_token
            assert (one.stats.exchanges, two.stats.exchanges, two.stats.shared_hits) == (1, 0, 1)
            # Another scope or another subject is another entry: no crossing.
            other = world.service.issue_user_token("bob", audience=B, scopes=["read"])
            bobs = await two.exchange(other, resource=C)
            assert bobs.access_token != first.access_token
            assert two.stats.exchanges == 1
            # Without the key, an entry is unreadable: that replica exchanges itself.
            own = await stranger.exchange(subject, resource=C)
            assert own.access_token != first.access_token
            assert stranger.stats.exchanges == 1
            assert stranger.stats.shared_hits == 0

        # At rest, Redis holds ciphertext under digests: no token, no user, no URL.
        async with open_redis(RedisSettings(redis_url)) as redis:
            client = redis.client
            found = [k async for k in client.scan_iter(match="keycard:token:*")]
            assert found
            for name in found:
                blob = await client.get(name)
                assert first.access_token.encode() not in blob
                assert b"alice" not in blob
                assert b"alice" not in name
                assert b"c.example" not in blob


async def test_the_cache_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from keycard_agents import ConfigurationError

    monkeypatch.setenv("KEYCARD_REDIS_URL", "redis://127.0.0.1:1")
    monkeypatch.setenv("KEYCARD_REDIS_CACHE_KEY", "too-short")
    with pytest.raises(ConfigurationError, match="32 random bytes"):
        RedisTokenCache.from_env()
    monkeypatch.setenv("KEYCARD_REDIS_CACHE_KEY", "A" * 43)
    assert repr(RedisTokenCache.from_env()) == "RedisTokenCache('redis://127.0.0.1:1')"
