"""Two replicas of the token service sharing a real Redis (single server and Cluster).

Each replica has its own signing keys (no shared key directory), its own memory, and
the same configuration; what one accepted, the other must know.
"""

from __future__ import annotations

import itertools
import json
import secrets
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from redis_support import RedisServer
from sts_support import (
    AT,
    EXCHANGE,
    ISSUER,
    JWT_BEARER,
    PASSWORD,
    REDIRECT,
    VERIFIER,
    A,
    B,
    Clock,
    World,
    claims_of,
    make_config,
)

from keycard_agents._sts import _device as device_module
from keycard_agents.auth import SigningKey
from keycard_agents.redis import RedisServiceState, RedisSettings, StoreUnavailableError
from keycard_agents.sts import (
    TokenService,
    hash_client_secret,
    new_client_secret,
    pkce_challenge,
)

pytestmark = pytest.mark.anyio

DEVICE = "urn:ietf:params:oauth:grant-type:device_code"


@asynccontextmanager
async def two_replicas(
    url: str, *, wait: float = 5.0, **overrides: Any
) -> AsyncIterator[tuple[World, World]]:
    """Two services, one configuration, one Redis (``wait``: its command timeout)."""
    config, keys = make_config(**overrides)
    clock = Clock()
    settings = RedisSettings(url, timeout=wait)
    one, two = (TokenService(config, clock=clock, shared=RedisServiceState(settings)) for _ in "12")
    async with (
        one.app.router.lifespan_context(one.app),
        two.app.router.lifespan_context(two.app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=one.app), base_url=ISSUER) as c1,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=two.app), base_url=ISSUER) as c2,
    ):
        yield (
            World(service=one, client=c1, clock=clock, keys=keys),
            World(service=two, client=c2, clock=clock, keys=keys),
        )


def exchange_form(world: World, subject: str, assertion: str) -> dict[str, str]:
    return {
        "grant_type": EXCHANGE,
        "subject_token": subject,
        "subject_token_type": AT,
        "resource": B,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }


async def test_an_assertion_used_on_one_replica_is_refused_on_the_other(redis_url: str) -> None:
    async with two_replicas(redis_url) as (one, two):
        subject = one.service.issue_user_token("alice", audience=A, scopes=["read"], may_act="a")
        assertion = one.assertion("a")
        first = await one.post_token(exchange_form(one, subject, assertion))
        assert first.status_code == 200, first.text
        again = await two.post_token(exchange_form(two, subject, assertion))
        assert again.status_code == 401
        assert "already used" in again.json()["error_description"]
        # A fresh assertion is fine on either; the subject signed by replica 1 verifies
        # on replica 2 (its keys are published to every replica).
        fresh = await two.post_token(exchange_form(two, subject, two.assertion("a")))
        assert fresh.status_code == 200, fresh.text
        kids = {k["kid"] for k in (await two.client.get("/jwks.json")).json()["keys"]}
        assert one.service.keys.current.kid in kids
        assert two.service.keys.current.kid in kids
        assert one.service.keys.current.kid != two.service.keys.current.kid


async def test_an_assertion_replayed_inside_the_leeway_is_refused_on_the_other_replica(
    redis_url: str,
) -> None:
    """Issue 21, survivor 2 at the shared replay store: the jti must be remembered until
    ``exp + leeway`` (while the assertion is accepted), not ``exp - leeway``. Redis expires
    the jti on its own (wall) clock, so the services' clock follows the wall clock here."""
    async with two_replicas(redis_url) as (one, two):
        assert one.clock is two.clock
        one.clock.now = time.time() - 65
        assertion = one.assertion("a", lifetime=60)  # expired 5 s ago, inside the 30 s leeway
        one.clock.now = time.time()
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion,
        }
        first = await one.post_token(form)
        assert first.status_code == 200, first.text
        again = await two.post_token(form)
        assert again.status_code == 401, again.text
        assert "already used" in again.json()["error_description"]


async def test_an_authorization_code_is_used_once_across_replicas(redis_url: str) -> None:
    async with two_replicas(redis_url) as (one, two):
        code = await one.sign_in()
        redeem = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "app",
            "code_verifier": VERIFIER,
        }
        first = await two.post_token(redeem)
        assert first.status_code == 200, first.text
        assert claims_of(first.json()["access_token"])["sub"] == "alice"
        replayed = await one.post_token(redeem)
        assert replayed.status_code == 400
        assert replayed.json()["error"] == "invalid_grant"


async def test_failed_attempts_count_across_replicas_and_audit_is_shared(redis_url: str) -> None:
    limits = {"failed_auth_per_account": 3, "failed_auth_per_source": 1000}
    async with two_replicas(redis_url, limits=limits) as (one, two):
        bad = {"grant_type": "client_credentials", "client_id": "b", "client_secret": "nope"}
        for world in (one, two, one):
            assert (await world.post_token(bad)).status_code == 401
        throttled = await two.post_token(bad)
        assert throttled.status_code == 429
        assert throttled.json()["error"] == "temporarily_unavailable"
        # Both replicas' records are in one trail, queryable by user and txn on either.
        subject = one.service.issue_user_token(
            "alice", audience=A, scopes=["read"], may_act="a", txn="txn-shared"
        )
        ok = await two.post_token(exchange_form(two, subject, two.assertion("a")))
        assert ok.status_code == 200, ok.text
        by_txn = await one.service.audit.query(txn="txn-shared")
        assert [r.decision for r in by_txn] == ["issued"]
        assert by_txn[0].user == "alice"
        assert [r.txn for r in await one.service.audit.query(user="alice")] == ["txn-shared"]
        everything = await two.service.audit.query()
        assert [r.decision for r in everything].count("denied") == 4


async def test_wrong_user_codes_count_against_the_address_at_every_replica(
    redis_url: str,
) -> None:
    limits = {"failed_auth_per_source": 2, "failed_auth_per_account": 1000, "throttle_delay": 0}
    async with two_replicas(redis_url, limits=limits) as (one, two):
        for world in (one, two):
            guess = await world.client.post("/device", data={"user_code": "BCDF-GHJK"})
            assert guess.status_code == 400
        stopped = await one.client.post("/device", data={"user_code": "BCDF-GHJL"})
        assert stopped.status_code == 429
        assert "Too many wrong codes" in stopped.text


async def test_a_device_sign_in_started_at_one_replica_goes_on_at_any(redis_url: str) -> None:
    async with two_replicas(redis_url) as (one, two):
        started = await one.client.post(
            "/device_authorization", data={"client_id": "app", "resource": A, "scope": "read"}
        )
        assert started.status_code == 200, started.text
        start = started.json()
        poll = {"grant_type": DEVICE, "device_code": start["device_code"], "client_id": "app"}
        pending = await two.post_token(poll)  # the client's first poll lands elsewhere
        assert pending.json()["error"] == "authorization_pending"
        assert start["user_code"] in pending.json()["error_description"]
        hurried = await one.post_token(poll)  # the polling interval is shared too
        assert hurried.json()["error"] == "slow_down"
        assert "every 10 seconds" in hurried.json()["error_description"]
        made_up = {**poll, "device_code": secrets.token_urlsafe(32)}
        assert (await one.post_token(made_up)).json()["error"] == "invalid_grant"
        page = {"user_code": start["user_code"], "username": "alice", "password": PASSWORD}
        ok = await two.client.post("/device", data={**page, "action": "allow"})
        assert "Device signed in" in ok.text
        late = await one.client.post("/device", data={**page, "action": "deny"})
        assert late.status_code == 400  # decided already: the first decision stands
        one.clock.advance(20)
        issued = await one.post_token(poll)
        assert issued.status_code == 200, issued.text
        again = await two.post_token(poll)  # collected once, whichever replica is asked
        assert again.json()["error"] == "invalid_grant"
        refused_start = (
            await two.client.post("/device_authorization", data={"client_id": "app", "resource": A})
        ).json()
        refused = await one.client.post(
            "/device", data={"user_code": refused_start["user_code"], "action": "deny"}
        )
        assert "Sign-in refused" in refused.text
        denied_poll = {**poll, "device_code": refused_start["device_code"]}
        assert (await two.post_token(denied_poll)).json()["error"] == "access_denied"
        late_start = (
            await one.client.post("/device_authorization", data={"client_id": "app", "resource": A})
        ).json()
        one.clock.advance(601)
        expired = await two.post_token({**poll, "device_code": late_start["device_code"]})
        assert expired.json()["error"] == "expired_token"
    assert claims_of(issued.json()["access_token"])["sub"] == "alice"
    assert claims_of(issued.json()["access_token"])["scope"] == "read"


async def test_replicas_keep_at_most_so_many_device_sign_ins_waiting(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device_module, "_MAX_PENDING", 2)
    async with two_replicas(redis_url) as (one, two):
        form = {"client_id": "app", "resource": A}
        # The set of waiting sign-ins outlives a test: start from an empty one.
        state = one.service.shared
        assert isinstance(state, RedisServiceState)
        await state.redis.client.delete([state.redis.key("device-pending", "devices")])
        answers = [await w.client.post("/device_authorization", data=form) for w in (one, two)]
        assert [a.status_code for a in answers] == [200, 200]
        full = await one.client.post("/device_authorization", data=form)
        assert full.status_code == 429
        assert full.json()["error"] == "slow_down"
        # A sign-in collected makes room at once.
        one.clock.advance(6)
        refused = answers[0].json()
        await two.client.post("/device", data={"user_code": refused["user_code"], "action": "deny"})
        collected = await one.post_token(
            {"grant_type": DEVICE, "device_code": refused["device_code"], "client_id": "app"}
        )
        assert collected.json()["error"] == "access_denied"
        assert (await two.client.post("/device_authorization", data=form)).status_code == 200


async def test_a_client_registered_on_one_replica_signs_in_on_the_other(redis_url: str) -> None:
    callback = "http://127.0.0.1:45123/callback"
    policy: dict[str, Any] = {
        "registration": {"allowed_redirect_uris": ["http://127.0.0.1/callback"]}
    }
    async with two_replicas(redis_url, **policy) as (one, two):
        reply = await one.client.post(
            "/register",
            content=json.dumps({"redirect_uris": [callback], "token_endpoint_auth_method": "none"}),
            headers={"content-type": "application/json"},
        )
        assert reply.status_code == 201, reply.text
        client_id = reply.json()["client_id"]
        page = await two.client.get(
            "/authorize",
            params={
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": callback,
                "code_challenge": pkce_challenge(VERIFIER),
                "code_challenge_method": "S256",
                "resource": A,
                "scope": "read",
            },
        )
        assert page.status_code == 200, page.text
        assert "password" in page.text.lower()


async def test_redis_lost_mid_flight_fails_closed_then_recovers(redis_server: RedisServer) -> None:
    async with two_replicas(redis_server.url, wait=0.5) as (one, two):
        subject = one.service.issue_user_token("alice", audience=A, scopes=["read"], may_act="a")
        used = one.assertion("a")
        assert (await one.post_token(exchange_form(one, subject, used))).status_code == 200
        code = await one.sign_in()
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)  # Redis stops answering
        try:
            with anyio.fail_after(30):
                for world in (one, two):
                    fresh = await world.post_token(
                        exchange_form(world, subject, world.assertion("a"))
                    )
                    assert fresh.status_code == 503, fresh.text
                    assert fresh.json()["error"] == "temporarily_unavailable"
                    assert fresh.headers["retry-after"] == "1"
                    replayed = await world.post_token(exchange_form(world, subject, used))
                    assert replayed.status_code == 503
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        with anyio.fail_after(30):
            while True:
                fresh = await two.post_token(exchange_form(two, subject, two.assertion("a")))
                if fresh.status_code != 503:
                    break
                await anyio.sleep(0.2)
        assert fresh.status_code == 200, fresh.text
        replayed = await two.post_token(exchange_form(two, subject, used))
        assert replayed.status_code == 401  # still remembered: nothing was forgotten
        redeem = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "app",
            "code_verifier": VERIFIER,
        }
        assert (await two.post_token(redeem)).status_code == 200
        assert (await one.post_token(redeem)).status_code == 400


async def count_key_reads(world: World) -> list[tuple[float, float]]:
    """Spy on ``world``'s reads of the keys the replicas published: (start, end) times.

    Returns once its first publishing round has read them (with an empty list), so that
    what the test does next meets a replica that has just read the keys.
    """
    shared: Any = world.service.shared
    read = shared.published_keys
    reads: list[tuple[float, float]] = []
    first = anyio.Event()

    async def counted(issuer: str, *, now: float) -> list[dict[str, Any]]:
        started = anyio.current_time()
        keys = list(await read(issuer, now=now))
        reads.append((started, anyio.current_time()))
        first.set()
        return keys

    shared.published_keys = counted
    with anyio.fail_after(30):
        await first.wait()
    reads.clear()
    return reads


def outcomes(replies: list[httpx.Response]) -> list[tuple[int, str]]:
    """Status and OAuth error of each reply (never the body: it may carry a token)."""
    return [(r.status_code, r.json().get("error", "")) for r in replies]


async def exchange_at_once(world: World, subjects: list[str]) -> list[httpx.Response]:
    """Each subject token exchanged by agent a at ``world``, all at the same time."""
    replies: list[httpx.Response] = []

    async def exchange(subject: str) -> None:
        form = exchange_form(world, subject, world.assertion("a"))
        replies.append(await world.post_token(form))

    async with anyio.create_task_group() as group:
        for subject in subjects:
            group.start_soon(exchange, subject)
    return replies


async def publish_now(world: World) -> None:
    """What ``world``'s next publishing round does (every few seconds)."""
    await world.service.shared.publish_keys(  # type: ignore[union-attr]
        world.service.issuer, world.service.keys.public_jwks()["keys"], until=world.clock() + 3600
    )


async def test_a_key_a_peer_just_published_verifies_for_every_token_that_arrives_together(
    redis_url: str,
) -> None:
    async with two_replicas(redis_url) as (one, two):
        reads = await count_key_reads(two)
        # Replica 2 read its peers' keys just now; then replica 1 rotates and publishes,
        # and the tokens signed with its new key all arrive at once.
        old = one.service.keys.current.kid
        new = one.service.keys.rotate().kid
        assert new != old
        await publish_now(one)
        subjects = [
            one.service.issue_user_token(f"user{i}", audience=A, scopes=["read"], may_act="a")
            for i in range(20)
        ]
        replies = await exchange_at_once(two, subjects)
        assert outcomes(replies) == [(200, "")] * 20
        assert 1 <= len(reads) <= 2, reads  # the waiting tokens share a read
        kids = {k["kid"] for k in (await two.client.get("/jwks.json")).json()["keys"]}
        assert {old, new} <= kids


async def test_made_up_key_ids_cost_one_read_of_the_published_keys_a_second(
    redis_url: str,
) -> None:
    limits = {"failed_auth_per_account": 1000, "failed_auth_per_source": 1000}
    async with two_replicas(redis_url, limits=limits) as (one, two):
        reads = await count_key_reads(two)
        forged = SigningKey.generate("ES256")
        claims = claims_of(
            one.service.issue_user_token("mallory", audience=A, scopes=["read"], may_act="a")
        )
        subjects = [forged.sign(claims, typ="at+jwt") for _ in range(30)]
        began = anyio.current_time()
        replies = await exchange_at_once(two, subjects)
        took = anyio.current_time() - began
        assert [r.status_code for r in replies] == [400] * 30
        # Reads start at least a second apart, however many made-up key ids are waiting.
        assert 1 <= len(reads) <= took + 1, (reads, took)
        starts = [start for start, _ in reads]
        assert all(b - a >= 0.99 for a, b in itertools.pairwise(starts)), reads


async def test_a_failed_read_of_the_published_keys_fails_every_waiting_token_closed(
    redis_url: str,
) -> None:
    async with two_replicas(redis_url) as (one, two):
        await count_key_reads(two)
        one.service.keys.rotate()
        await publish_now(one)
        shared: Any = two.service.shared

        async def away(issuer: str, *, now: float) -> list[dict[str, Any]]:
            raise StoreUnavailableError("reading the signing keys: Redis is away")

        shared.published_keys = away
        subject = one.service.issue_user_token("alice", audience=A, scopes=["read"], may_act="a")
        replies = await exchange_at_once(two, [subject] * 5)
        assert outcomes(replies) == [(503, "temporarily_unavailable")] * 5


def count_bucket_steps(world: World) -> list[tuple[tuple[str, ...], str]]:
    """Spy on ``world``'s steps on the shared failed-attempt buckets: (buckets, step)."""
    shared: Any = world.service.shared
    step = shared.buckets
    steps: list[tuple[tuple[str, ...], str]] = []

    async def counted(buckets: list[tuple[str, int]], **kwargs: Any) -> float:
        steps.append((tuple(key.split(":", 1)[0] for key, _ in buckets), kwargs["step"]))
        return float(await step(buckets, **kwargs))

    shared.buckets = counted
    return steps


async def test_a_fast_secret_check_looks_at_the_buckets_once_and_charges_only_a_failure(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = new_client_secret()
    async with two_replicas(redis_url, secret_hash_b=hash_client_secret(secret)) as (_, two):
        steps = count_bucket_steps(two)

        async def no_thread(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a fast hash is checked on the event loop")

        monkeypatch.setattr(anyio.to_thread, "run_sync", no_thread)
        form = {"grant_type": "client_credentials", "client_id": "b", "client_secret": secret}
        await two.post_token(form)  # whatever the grant's answer, the secret was right
        assert steps == [(("account", "source"), "wait")]  # one look, nothing taken
        steps.clear()
        wrong = await two.post_token({**form, "client_secret": new_client_secret()})
        assert wrong.status_code == 401
        assert steps == [(("account", "source"), "reserve")]  # charged in the same step


async def test_a_reserve_takes_from_every_bucket_or_from_none(redis_url: str) -> None:
    async with two_replicas(redis_url) as (one, _):
        shared: Any = one.service.shared
        roomy, tight = (f"account:{secrets.token_hex(4)}", 3), (f"source:{secrets.token_hex(4)}", 1)

        async def step(buckets: list[tuple[str, int]], what: str) -> float:
            return float(await shared.buckets(buckets, window=60.0, now=1000.0, step=what))

        assert await step([roomy, tight], "reserve") == 0  # one taken from each
        assert await step([roomy, tight], "wait") == pytest.approx(60.0)  # tight is empty
        assert await step([roomy, tight], "reserve") == pytest.approx(60.0)  # refused...
        # ... and roomy kept both of its attempts: the refused step took nothing.
        assert [await step([roomy], "reserve") for _ in range(3)] == [0, 0, pytest.approx(20.0)]
        assert await step([roomy, tight], "give_back") == 0  # one back to each
        assert await step([tight], "reserve") == 0
        assert await step([roomy], "wait") == 0


async def guess_at_once(
    worlds: list[World], form: dict[str, str], *, guesses: bool = False
) -> list[int]:
    """``form`` posted to the token endpoints of ``worlds`` all at the same time; with
    ``guesses``, each with a different ``client_secret`` (a check of one secret at once
    is shared at a replica, so only different secrets are each a guess)."""
    statuses: list[int] = []

    async def post(world: World, n: int) -> None:
        sent = {**form, "client_secret": f"{form['client_secret']}-{n}"} if guesses else form
        statuses.append((await world.post_token(sent)).status_code)

    async with anyio.create_task_group() as group:
        for n, world in enumerate(worlds):
            group.start_soon(post, world, n)
    return sorted(statuses)


@pytest.mark.parametrize("fast", [False, True], ids=["scrypt", "sha256"])
async def test_concurrent_wrong_secrets_at_two_replicas_get_no_more_checks_than_the_limit(
    redis_url: str, fast: bool
) -> None:
    limits = {"failed_auth_per_account": 3, "failed_auth_per_source": 1000}
    hashed = hash_client_secret(new_client_secret()) if fast else None
    async with two_replicas(redis_url, limits=limits, secret_hash_b=hashed) as (one, two):
        bad = {"grant_type": "client_credentials", "client_id": "b", "client_secret": "nope"}
        # Each failure is charged in the step that reads the bucket: 3 answered, 7 refused.
        assert await guess_at_once([one, two] * 5, bad, guesses=True) == [401] * 3 + [429] * 7


async def test_concurrent_right_secrets_beyond_the_limit_all_pass_at_two_replicas(
    redis_url: str,
) -> None:
    limits = {"failed_auth_per_account": 3, "failed_auth_per_source": 3}
    secret = new_client_secret()
    hashed = hash_client_secret(secret)
    async with two_replicas(redis_url, limits=limits, secret_hash_b=hashed) as (one, two):
        form = {"grant_type": "client_credentials", "client_id": "b", "client_secret": secret}
        statuses = await guess_at_once([one, two] * 10, form)
        # A busy client's requests take nothing from its buckets: none is throttled.
        assert statuses == [200] * 20
