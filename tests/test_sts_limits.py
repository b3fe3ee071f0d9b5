"""Abuse limits of the token service (issue #13, findings 5, 6 and 7).

Credential checks run off the event loop in a bounded pool; failed attempts are
throttled per source address and per account with 429 + Retry-After; unknown accounts
cost what real ones cost; one user's sign-ins cannot block another's; and the in-memory
audit store keeps the evidence when junk floods in.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.to_thread
import httpx
import pytest
from sts_support import (
    ISSUER,
    PASSWORD,
    REDIRECT,
    SECRET_B,
    VERIFIER,
    World,
    open_world,
)
from trace_support import ADMIN, ADMIN_TOKEN

from keycard_agents.sts import (
    MemoryAuditStore,
    TokenService,
    hash_secret,
    parse_config,
    pkce_challenge,
)

pytestmark = pytest.mark.anyio

BAD_SECRET = {"grant_type": "client_credentials", "client_id": "b", "client_secret": "nope"}


def _real_verify() -> Callable[[str, str], bool]:
    from keycard_agents._sts import _secrets

    return _secrets.verify_secret


def _patch_verify(monkeypatch: pytest.MonkeyPatch, fake: Callable[[str, str], bool]) -> None:
    """Replace the hash check wherever the token service's modules hold it."""
    for name, module in list(sys.modules.items()):
        if name.startswith("keycard_agents._sts") and hasattr(module, "verify_secret"):
            monkeypatch.setattr(module, "verify_secret", fake)


class Gate:
    """A hash check that waits (in its thread) until the test opens the gate."""

    def __init__(self) -> None:
        self.real = _real_verify()
        self.entered = threading.Event()
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.opened_in_time: list[bool] = []

    def __call__(self, secret: str, stored: str) -> bool:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.entered.set()
        in_time = self.open.wait(timeout=10)  # a safety bound, never reached when fixed
        with self.lock:
            self.active -= 1
            self.opened_in_time.append(in_time)
        return self.real(secret, stored)


class Spy:
    """Records the cost (scrypt N) of every stored hash a secret is checked against."""

    def __init__(self) -> None:
        self.real = _real_verify()
        self.costs: list[int] = []

    def __call__(self, secret: str, stored: str) -> bool:
        self.costs.append(int(stored.split("$")[1]))
        return self.real(secret, stored)


async def _until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 (the counters belong to threads)
            await anyio.sleep(0.001)


@asynccontextmanager
async def _client_from(w: World, host: str) -> AsyncIterator[httpx.AsyncClient]:
    """Another client of the same service, from another source address."""
    transport = httpx.ASGITransport(app=w.service.app, client=(host, 4000))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield client


def _authorize_params(state: str = "s") -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": REDIRECT,
        "code_challenge": pkce_challenge(VERIFIER),
        "code_challenge_method": "S256",
        "resource": "https://a.example/",
        "scope": "read",
        "state": state,
    }


async def _sign_in(client: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    form = {**_authorize_params(), "username": user, "password": password}
    return await client.post("/authorize", data=form)


def _code(reply: httpx.Response) -> str:
    assert reply.status_code == 303, reply.text
    return parse_qs(urlsplit(reply.headers["location"]).query)["code"][0]


# -- finding 5: hash checks off the event loop, in a bounded pool --------------------------


async def test_admin_token_check_does_not_block_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_world(admin=ADMIN) as w:
        gate = Gate()
        _patch_verify(monkeypatch, gate)
        replies: list[httpx.Response] = []

        async def attempt() -> None:
            replies.append(await w.client.get("/audit", headers={"Authorization": "Bearer x"}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(attempt)
            await anyio.to_thread.run_sync(gate.entered.wait, 10)
            # the hash check is stuck in its thread: the service answers everything else
            jwks = await w.client.get("/jwks.json")
            assert jwks.status_code == 200
            gate.open.set()
        assert gate.opened_in_time == [True]
        assert replies[0].status_code == 401


async def test_client_secret_checks_share_a_bounded_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_world(limits={"hash_workers": 1, "hash_queue": 1}) as w:
        gate = Gate()
        _patch_verify(monkeypatch, gate)
        replies: list[httpx.Response] = []

        # Different wrong secrets: checks of one secret at once share one hash.
        async def attempt(guess: str) -> None:
            replies.append(await w.post_token({**BAD_SECRET, "client_secret": guess}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(attempt, "guess-1")
            tg.start_soon(attempt, "guess-2")
            await _until(lambda: w.service.guard.running == 1 and w.service.guard.waiting == 1)
            # one check runs, one waits, the queue is full: the next is refused at once
            busy = await w.post_token({**BAD_SECRET, "client_secret": "guess-3"})
            assert busy.status_code == 503
            assert busy.json()["error"] == "temporarily_unavailable"
            assert busy.headers["retry-after"] == "1"
            gate.open.set()
        assert gate.max_active == 1
        assert [r.status_code for r in replies] == [401, 401]


# -- findings 5 and 7: failed attempts are throttled ------------------------------------


async def test_wrong_client_secrets_are_throttled_per_client() -> None:
    async with open_world(limits={"failed_auth_per_account": 3, "failed_auth_window": 60}) as w:
        for _ in range(3):
            assert (await w.post_token(BAD_SECRET)).status_code == 401
        throttled = await w.post_token(BAD_SECRET)
        assert throttled.status_code == 429
        assert throttled.json()["error"] == "temporarily_unavailable"
        assert throttled.headers["retry-after"] == "20"  # one attempt back every 60/3 s
        assert throttled.headers["cache-control"] == "no-store"
        # the right secret is not even checked while the client is throttled
        right = {**BAD_SECRET, "client_secret": SECRET_B}
        assert (await w.post_token(right)).status_code == 429
        # other clients are not affected
        other = {**BAD_SECRET, "client_id": "zz"}
        assert (await w.post_token(other)).status_code == 401
        w.clock.advance(20)
        assert (await w.post_token(right)).status_code == 200
        # identical unauthenticated denials are kept once, with a count
        records = await w.service.audit.query()
        assert [(r.error, r.repeated) for r in records] == [
            ("invalid_client", 3),
            ("temporarily_unavailable", 2),
            ("invalid_client", 1),
            (None, 1),
        ]


async def test_failed_client_auth_is_throttled_per_source_address() -> None:
    limits = {"failed_auth_per_source": 4, "failed_auth_per_account": 100}
    async with open_world(limits=limits) as w:
        for i in range(4):
            form = {**BAD_SECRET, "client_id": f"guess-{i}"}
            assert (await w.post_token(form)).status_code == 401
        again = await w.post_token({**BAD_SECRET, "client_id": "guess-9"})
        assert again.status_code == 429
        assert int(again.headers["retry-after"]) >= 1
        async with _client_from(w, "192.0.2.7") as elsewhere:
            reply = await elsewhere.post("/token", data={**BAD_SECRET, "client_id": "guess-9"})
            assert reply.status_code == 401
            right = {**BAD_SECRET, "client_secret": SECRET_B}
            assert (await elsewhere.post("/token", data=right)).status_code == 200


async def test_wrong_passwords_at_sign_in_are_throttled() -> None:
    async with open_world(limits={"failed_auth_per_account": 3}) as w:
        for _ in range(3):
            reply = await _sign_in(w.client, "alice", "wrong")
            assert reply.status_code == 401
            assert "Wrong username or password" in reply.text
        throttled = await _sign_in(w.client, "alice", "wrong")
        assert throttled.status_code == 429
        assert throttled.headers["retry-after"] == "20"
        assert "Too many failed sign-ins" in throttled.text
        assert (await _sign_in(w.client, "alice", PASSWORD)).status_code == 429
        w.clock.advance(20)
        assert (await _sign_in(w.client, "alice", PASSWORD)).status_code == 303


async def test_guessing_the_admin_token_is_throttled() -> None:
    async with open_world(admin=ADMIN, limits={"failed_auth_per_account": 2}) as w:
        wrong = {"Authorization": "Bearer guess"}
        right = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        for _ in range(2):
            assert (await w.client.get("/audit/api/records", headers=wrong)).status_code == 401
        api = await w.client.get("/audit/api/records", headers=wrong)
        assert api.status_code == 429
        assert api.json()["error"] == "temporarily_unavailable"
        assert api.headers["retry-after"] == "30"
        page = await w.client.get("/audit", headers=right)
        assert page.status_code == 429
        assert "too many attempts" in page.text
        assert ADMIN_TOKEN not in page.text
        link = await w.client.post("/audit/login-link", headers=right)
        assert link.status_code == 429
        w.clock.advance(30)
        assert (await w.client.get("/audit/api/records", headers=right)).status_code == 200


async def test_throttled_answers_are_sent_late() -> None:
    limits = {"failed_auth_per_account": 1, "throttle_delay": 60}
    async with open_world(limits=limits) as w:
        assert (await w.post_token(BAD_SECRET)).status_code == 401
        replies: list[httpx.Response] = []

        async def attempt() -> None:
            replies.append(await w.post_token(BAD_SECRET))

        async with anyio.create_task_group() as tg:
            tg.start_soon(attempt)
            await anyio.wait_all_tasks_blocked()
            assert replies == []  # the throttled attempt waits, costing nothing meanwhile
            assert (await w.client.get("/jwks.json")).status_code == 200
            tg.cancel_scope.cancel()
        assert replies == []


# -- finding 7: unknown accounts cost what real ones cost -------------------------------


async def test_unknown_user_names_are_checked_against_an_equally_costly_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    users = [
        {
            "username": "alice",
            "password_hash": hash_secret(PASSWORD, cost=2**5),
            "scopes": ["read"],
        }
    ]
    async with open_world(users=users) as w:
        spy = Spy()
        _patch_verify(monkeypatch, spy)
        assert (await _sign_in(w.client, "alice", "wrong")).status_code == 401
        assert (await _sign_in(w.client, "mallory", "wrong")).status_code == 401
        assert spy.costs == [2**5, 2**5]


async def test_unknown_clients_are_checked_against_an_equally_costly_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_world() as w:  # client "b" has a hash of cost 2**4
        spy = Spy()
        _patch_verify(monkeypatch, spy)
        unknown = await w.post_token({**BAD_SECRET, "client_id": "nobody"})
        known = await w.post_token(BAD_SECRET)
        assert spy.costs == [2**4, 2**4]
        assert unknown.json() == known.json()


async def test_plaintext_dev_passwords_cost_the_same_for_unknown_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_world() as w:  # alice has a dev-only plaintext password
        spy = Spy()
        _patch_verify(monkeypatch, spy)
        assert (await _sign_in(w.client, "mallory", "wrong")).status_code == 401
        assert (await _sign_in(w.client, "alice", "wrong")).status_code == 401
        assert spy.costs == []  # neither computes a hash: both compare digests in a thread


# -- finding 6 (token service): fair sign-in limits, audit retention ---------------------


async def test_one_users_pending_sign_ins_do_not_block_another_user() -> None:
    users = [
        {"username": "alice", "password": PASSWORD, "scopes": ["read"]},
        {"username": "bob", "password": "builder", "scopes": ["read"]},
    ]
    async with open_world(users=users, limits={"pending_signins_per_user": 3}) as w:
        codes = [_code(await _sign_in(w.client, "alice", PASSWORD)) for _ in range(6)]
        assert len(w.service.login.codes) == 3
        bob = _code(await _sign_in(w.client, "bob", "builder"))
        for code, status in ((codes[0], 400), (codes[-1], 200), (bob, 200)):
            form = {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "client_id": "app",
                "code_verifier": VERIFIER,
            }
            assert (await w.post_token(form)).status_code == status


async def test_a_client_has_its_own_cap_on_pending_sign_ins() -> None:
    users = [{"username": f"u{i}", "password": PASSWORD, "scopes": ["read"]} for i in range(3)]
    async with open_world(users=users, limits={"pending_signins_per_client": 2}) as w:
        for user in ("u0", "u1"):
            _code(await _sign_in(w.client, user, PASSWORD))
        full = await _sign_in(w.client, "u2", PASSWORD)
        assert full.status_code == 303
        query = parse_qs(urlsplit(full.headers["location"]).query)
        assert query["error"] == ["temporarily_unavailable"]
        assert "'app'" in query["error_description"][0]


async def test_junk_requests_do_not_evict_the_evidence() -> None:
    async with open_world(audit=MemoryAuditStore(max_records=100)) as w:
        token = w.service.issue_user_token("alice", audience="https://a.example/", scopes=["read"])
        assert (await w.exchange("a", token, "https://b.example/")).status_code == 200
        denied = await w.exchange("a", token, "https://d.example/api")  # not a dependency
        assert denied.status_code == 400
        assert (await w.post_token(BAD_SECRET)).status_code == 401
        for _ in range(120):
            junk = await w.post_token({"grant_type": "password", "username": "x"})
            assert junk.status_code == 400
        records = await w.service.audit.query(limit=10_000)
        kinds = [(r.decision, r.error, r.repeated) for r in records]
        assert kinds == [
            ("issued", None, 1),
            ("denied", "invalid_target", 1),
            ("denied", "invalid_client", 1),
            ("denied", "unsupported_grant_type", 120),
        ]
        assert records[-1].last_time is not None


async def test_audit_bounds_are_separate_per_kind() -> None:
    store = MemoryAuditStore(max_records=2, max_denied=2, max_unauthenticated=2)
    config = parse_config(
        {
            "issuer": ISSUER,
            "agents": [
                {
                    "client_id": "b",
                    "resource": "https://b.example/",
                    "auth": "client_secret",
                    "secret_hash": hash_secret(SECRET_B, cost=2**4),
                }
            ],
        }
    )
    service = TokenService(config, audit=store)
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        for i in range(5):
            await client.post("/token", data={"grant_type": f"junk-{i}"})
        for _ in range(3):
            ok = {"grant_type": "client_credentials", "client_id": "b", "client_secret": SECRET_B}
            assert (await client.post("/token", data=ok)).status_code == 200
        for client_id in ("b", "x", "y"):
            wrong = {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": "?",
            }
            assert (await client.post("/token", data=wrong)).status_code == 401
    records = await store.query()
    assert len(store) == 6
    assert [r.decision for r in records].count("issued") == 2
    assert [r.error for r in records].count("invalid_client") == 2
    assert [r.grant_type for r in records if r.error == "unsupported_grant_type"] == [
        "junk-3",
        "junk-4",
    ]


def test_limits_are_configurable_and_validated() -> None:
    from keycard_agents.sts import Limits

    config = parse_config(
        {"issuer": ISSUER, "limits": {"failed_auth_per_account": 5, "header_timeout": 2.5}}
    )
    assert config.limits.failed_auth_per_account == 5
    assert config.limits.header_timeout == 2.5
    assert config.limits.failed_auth_per_source == Limits().failed_auth_per_source
    from keycard_agents import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"limits\.hash_workers"):
        parse_config({"issuer": ISSUER, "limits": {"hash_workers": 0}})
    with pytest.raises(ConfigurationError, match=r"limits\.bogus"):
        parse_config({"issuer": ISSUER, "limits": {"bogus": 1}})
    with pytest.raises(ConfigurationError, match=r"limits\.log_issued_per_second"):
        parse_config({"issuer": ISSUER, "limits": {"log_issued_per_second": -1}})
