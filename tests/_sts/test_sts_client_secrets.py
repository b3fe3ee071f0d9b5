"""Client secrets at hash-lookup speed: sha256$ hashes of generated secrets, checked in line
and in constant time; scrypt kept for passwords; legacy scrypt client hashes upgraded in
memory on their first success (docs/security.md, "Client secrets")."""

from __future__ import annotations

import base64
import hashlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from keycard_agents._sts._throttle import DummyHash, TooManyAttemptsError
from keycard_agents.sts import (
    TokenService,
    WeakSecretError,
    hash_client_secret,
    hash_secret,
    new_client_secret,
    parse_config,
    verify_secret,
)

pytestmark = pytest.mark.anyio

ISSUER = "https://sts.example"
B = "https://b.example/"


# -- the hashes --------------------------------------------------------------------------


def test_a_generated_secret_is_stored_as_its_sha256() -> None:
    secret = new_client_secret()
    stored = hash_client_secret(secret)
    digest = base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()).rstrip(b"=")
    assert stored == "sha256$" + digest.decode()
    assert verify_secret(secret, stored)
    assert not verify_secret(secret[:-1], stored)
    assert not verify_secret(secret + "x", stored)
    assert not verify_secret("", stored)
    assert not verify_secret("\ud800", stored)  # not encodable: a mismatch, not a crash


def test_secrets_made_by_common_generators_are_accepted() -> None:
    import secrets

    for _ in range(200):
        hash_client_secret(new_client_secret())
        hash_client_secret(secrets.token_hex(32))
        hash_client_secret(secrets.token_hex(32).upper())


@pytest.mark.parametrize(
    ("weak", "bits"),
    [
        ("hunter2", "about 36 bits"),
        ("a" * 300, "about 4 bits"),
        ("ab" * 100, "about 8 bits"),
        ("Tr0ub4dor&3" * 8, "about 66 bits"),
        ("0123456789abcdef" * 2, "about 64 bits"),
    ],
)
def test_guessable_client_secrets_are_refused_with_the_reason(weak: str, bits: str) -> None:
    with pytest.raises(WeakSecretError) as caught:
        hash_client_secret(weak)
    message = str(caught.value)
    assert bits in message
    assert "at least 256" in message
    assert weak not in message


def test_empty_and_oversized_secrets_are_refused() -> None:
    with pytest.raises(WeakSecretError, match="empty"):
        hash_client_secret("")
    with pytest.raises(WeakSecretError, match="longer than 1024"):
        hash_client_secret(new_client_secret() * 30)


@pytest.mark.parametrize(
    "stored",
    [
        "sha256$",
        "sha256$abc",
        "sha256$" + "A" * 44,
        "sha256$" + "!" * 43,
        "sha256$" + base64.urlsafe_b64encode(b"x" * 32).decode(),  # padded
        "md5$" + "A" * 22,
    ],
)
def test_malformed_fast_hashes_are_refused_in_the_configuration(stored: str) -> None:
    agent = {"client_id": "b", "resource": B, "auth": "client_secret", "secret_hash": stored}
    with pytest.raises(Exception, match=r"agents\[b\]\.secret_hash: .*(sha256|scrypt)\$"):
        parse_config({"issuer": ISSUER, "agents": [agent]})


def test_passwords_need_scrypt() -> None:
    fast = hash_client_secret(new_client_secret())
    user = {"username": "alice", "password_hash": fast, "scopes": []}
    with pytest.raises(Exception, match="a password needs a scrypt hash") as caught:
        parse_config({"issuer": ISSUER, "users": [user]})
    assert "hash-secret --password" in str(caught.value)
    user["password_hash"] = hash_secret("wonderland", cost=16)
    assert parse_config({"issuer": ISSUER, "users": [user]}).users[0].username == "alice"


# -- the token endpoint ------------------------------------------------------------------


class Spy:
    """Records each stored hash a secret is checked against, and on which thread."""

    def __init__(self) -> None:
        from keycard_agents._sts import _secrets

        self.real: Callable[[str, str], bool] = _secrets.verify_secret
        self.calls: list[tuple[str, bool]] = []
        #: Seconds the first check takes longer (a worker thread's slow hash, drawn out).
        self.first_delay = 0.0

    def __call__(self, secret: str, stored: str) -> bool:
        if not self.calls and self.first_delay:
            time.sleep(self.first_delay)
        on_loop = threading.current_thread() is threading.main_thread()
        self.calls.append((stored.split("$", 1)[0], on_loop))
        return self.real(secret, stored)


def _spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy()
    for name, module in list(sys.modules.items()):
        if name.startswith("keycard_agents._sts") and hasattr(module, "verify_secret"):
            monkeypatch.setattr(module, "verify_secret", spy)
    return spy


def _service(secret_hash: str, **limits: int) -> TokenService:
    config = parse_config(
        {
            "issuer": ISSUER,
            "agents": [
                {
                    "client_id": "b",
                    "resource": B,
                    "auth": "client_secret",
                    "secret_hash": secret_hash,
                    "scopes": ["read"],
                }
            ],
            "limits": {"throttle_delay": 0, **limits},
        }
    )
    return TokenService(config)


async def _token(service: TokenService, client_id: str, secret: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        return await client.post(
            "/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
        )


async def test_a_fast_hash_is_checked_on_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = new_client_secret()
    service = _service(hash_client_secret(secret))
    spy = _spy(monkeypatch)
    assert (await _token(service, "b", secret)).status_code == 200
    wrong = await _token(service, "b", new_client_secret())
    unknown = await _token(service, "nobody", secret)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()  # an unknown client answers like a wrong secret
    # All three are one SHA-256 in line (the unknown client's against a fast dummy):
    # no worker thread, no scrypt.
    assert spy.calls == [("sha256", True)] * 3


async def test_a_strong_secret_with_a_legacy_scrypt_hash_is_upgraded_on_first_success(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = new_client_secret()
    service = _service(hash_secret(secret, cost=2**4))
    spy = _spy(monkeypatch)
    wrong = await _token(service, "b", new_client_secret())
    assert wrong.status_code == 401
    with caplog.at_level(logging.WARNING, logger="keycard_agents.sts"):
        for _ in range(3):
            assert (await _token(service, "b", secret)).status_code == 200
    # A failure upgrades nothing; the first success pays scrypt once, in a worker thread.
    assert spy.calls == [("scrypt", False), ("scrypt", False), ("sha256", True), ("sha256", True)]
    assert (await _token(service, "b", new_client_secret())).status_code == 401
    upgrades = [r.getMessage() for r in caplog.records if "scrypt hash" in r.getMessage()]
    assert len(upgrades) == 1
    assert "'b'" in upgrades[0]
    assert "hash-secret" in upgrades[0]
    assert secret not in caplog.text


async def test_concurrent_requests_with_one_slow_secret_share_one_hash_and_are_not_throttled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A weak legacy secret stays on scrypt: a busy agent sends it many times at once. Each
    # check used to reserve an attempt while its hash ran, so the agent's own burst beyond
    # failed_auth_per_account was answered 429.
    service = _service(hash_secret("b-secret", cost=2**4), failed_auth_per_account=3)
    spy = _spy(monkeypatch)
    spy.first_delay = 1.0  # a real scrypt's 40 ms, drawn out: the others arrive meanwhile
    statuses: list[int] = []

    async def one(secret: str) -> None:
        statuses.append((await _token(service, "b", secret)).status_code)

    async with anyio.create_task_group() as group:
        for _ in range(12):
            group.start_soon(one, "b-secret")
    assert statuses == [200] * 12
    assert 1 <= len(spy.calls) < 12  # checks of the same secret at once share one hash
    # Different wrong secrets are still each a guess, charged to the account.
    spy.calls.clear()
    statuses.clear()
    async with anyio.create_task_group() as group:
        for n in range(6):
            group.start_soon(one, f"guess-{n}")
    assert sorted(statuses) == [401] * 3 + [429] * 3
    assert len(spy.calls) == 3


async def test_checks_waiting_for_a_refused_slow_check_are_refused_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The account is locked (3 failures): identical slow checks at once share the refusal
    # of the one that ran (each answered after one throttle delay, not one after another).
    # A refused check is answered after throttle_delay: meanwhile the others join it.
    service = _service(
        hash_secret("b-secret", cost=2**4), failed_auth_per_account=3, throttle_delay=1
    )
    for n in range(3):
        assert (await _token(service, "b", f"guess-{n}")).status_code == 401
    checks: list[str] = []
    check = service.guard.check

    async def counted(*args: Any, **kwargs: Any) -> bool:
        checks.append(kwargs["account"])
        return await check(*args, **kwargs)

    monkeypatch.setattr(service.guard, "check", counted)
    statuses: list[int] = []

    async def one() -> None:
        reply = await _token(service, "b", "b-secret")
        statuses.append(reply.status_code)
        assert int(reply.headers["retry-after"]) >= 1

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(one)
    assert statuses == [429] * 5
    assert 1 <= len(checks) < 5


async def test_a_check_that_waited_for_a_cancelled_one_asks_again() -> None:
    stored = hash_secret("b-secret", cost=2**4)
    service = _service(stored, failed_auth_per_account=1, throttle_delay=1)
    assert (await _token(service, "b", "wrong")).status_code == 401  # the account is locked
    answers: list[object] = []

    async def ask() -> None:
        try:
            answers.append(
                await service.guard.check_hash(
                    "b-secret", stored, account="client:b", source=None, dummy=DummyHash([stored])
                )
            )
        except TooManyAttemptsError as refused:
            answers.append(refused.status_code)

    first = anyio.CancelScope()

    async def cancelled() -> None:
        with first:
            await ask()

    async with anyio.create_task_group() as group:
        group.start_soon(cancelled)
        await anyio.wait_all_tasks_blocked()  # the first sleeps before its refusal
        group.start_soon(ask)
        await anyio.wait_all_tasks_blocked()  # the second waits for the first's answer
        first.cancel()
    # The first ended without an answer; the second then made its own check.
    assert answers == [429]


async def test_a_weak_legacy_secret_stays_on_scrypt_and_is_reported_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    service = _service(hash_secret("b-secret", cost=2**4))
    spy = _spy(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="keycard_agents.sts"):
        for _ in range(2):
            assert (await _token(service, "b", "b-secret")).status_code == 200
    assert spy.calls == [("scrypt", False), ("scrypt", False)]
    weak = [r.getMessage() for r in caplog.records if "could be guessed" in r.getMessage()]
    assert len(weak) == 1
    # it names the agent and says why its secret is weak
    assert weak[0].startswith("agent 'b' authenticates with a client secret that could be")
    assert "(the secret carries about 41 bits of entropy" in weak[0]
    assert "--generate FILE" in weak[0]
    assert "b-secret" not in caplog.text
