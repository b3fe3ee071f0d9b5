"""The token endpoint (``_token_endpoint``): the edges a mutation run showed no test
pinned. What a device sign-in issues and audits, who may use that grant, and the
endpoint's own 500 when the audit store fails (``dev.py mutation sts``, docs/testing.md).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import pytest
from sts_support import (
    EXCHANGE,
    ISSUER,
    PASSWORD,
    REDIRECT,
    VERIFIER,
    A,
    B,
    Clock,
    World,
    claims_of,
    make_config,
    open_world,
)

from keycard_agents._audit._sts_records import AuditRecord
from keycard_agents._errors import StoreUnavailableError
from keycard_agents._sts._authorize import AuthCode  # internal: the code store's own API
from keycard_agents._sts._shared import SharedServiceState  # internal: the replicas' protocol
from keycard_agents.sts import MemoryAuditStore, TokenService, pkce_challenge

pytestmark = pytest.mark.anyio

DEVICE = "urn:ietf:params:oauth:grant-type:device_code"


async def _approved_device_code(w: World, *, scope: str = "read") -> str:
    """A device sign-in the user approved; returns the device code."""
    start = await w.client.post(
        "/device_authorization", data={"client_id": "app", "resource": A, "scope": scope}
    )
    assert start.status_code == 200, start.text
    body = start.json()
    form = {"user_code": body["user_code"], "username": "alice", "password": PASSWORD}
    approved = await w.client.post("/device", data={**form, "action": "allow"})
    assert "Device signed in" in approved.text
    return str(body["device_code"])


async def test_a_device_sign_in_issues_a_bearer_user_token_and_audits_it() -> None:
    async with open_world() as w:
        device_code = await _approved_device_code(w, scope="read write")
        reply = await w.post_token(
            {"grant_type": DEVICE, "device_code": device_code, "client_id": "app"}
        )
        records = await w.service.audit.query()
    assert reply.status_code == 200, reply.text
    body = reply.json()
    claims = claims_of(body["access_token"])
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "read write" == claims["scope"]
    assert body["expires_in"] == 3600 == claims["exp"] - claims["iat"]
    # the token names the client that signed the user in, and the agent that may act first
    assert (claims["sub"], claims["aud"], claims["client_id"]) == ("alice", A, "app")
    assert claims["may_act"] == {"sub": "a"}
    (record,) = [r for r in records if r.grant_type == DEVICE]
    assert (record.decision, record.client_id, record.user) == ("issued", "app", "alice")
    assert (record.user_issuer, record.target) == (ISSUER, A)
    assert (record.scopes_requested, record.scopes_granted) == (("read", "write"),) * 2
    # one transaction id, in the token and in its audit record
    assert record.txn == claims["txn"]
    assert len(claims["txn"]) == 32
    assert record.jti == claims["jti"]


async def test_an_agent_may_not_redeem_a_device_code() -> None:
    """RFC 8628 is for public clients signing users in: an authenticated agent is
    refused before the code is even looked at, and the refusal names the agent."""
    async with open_world() as w:
        device_code = await _approved_device_code(w)
        form = {"grant_type": DEVICE, "device_code": device_code}
        refused = await w.post_token({**form, **w.auth("a")})
        still_good = await w.post_token({**form, "client_id": "app"})
        records = await w.service.audit.query()
    assert refused.status_code == 400
    assert refused.json()["error"] == "unauthorized_client"
    assert "agent 'a' cannot use the device grant" in refused.json()["error_description"]
    assert still_good.status_code == 200  # the agent's attempt did not use the code up
    denied = [r for r in records if r.decision == "denied"]
    assert [(r.client_id, r.error) for r in denied] == [("a", "unauthorized_client")]


class _BrokenAudit:
    async def append(self, record: AuditRecord) -> None:
        raise RuntimeError("disk full")

    async def query(self, **kwargs: Any) -> list[AuditRecord]:
        return []


async def test_a_refusal_the_audit_store_cannot_take_is_the_endpoints_own_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No evidence, no answer: the token endpoint turns the refusal into its own
    ``server_error`` (not the app's last-resort one with an incident number) and logs
    the refusal with the audit failure."""
    config, _ = make_config()
    service = TokenService(config, audit=_BrokenAudit(), clock=Clock())
    transport = httpx.ASGITransport(app=service.app)
    with caplog.at_level(logging.INFO, logger="keycard_agents.sts"):
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
            reply = await client.post("/token", data={"grant_type": "password"})
    assert reply.status_code == 500
    assert reply.json() == {
        "error": "server_error",
        "error_description": "internal error; see the token service log",
    }
    (denial,) = [r for r in caplog.records if "token request denied" in r.getMessage()]
    assert denial.levelno == logging.ERROR
    line = denial.getMessage()
    assert "HTTP 500" in line
    assert "error=server_error" in line
    assert "then the audit store failed: RuntimeError" in line


async def test_a_code_for_a_resource_not_registered_here_yields_no_token() -> None:
    """Replicas share their codes (docs/replicas.md): a code signed in for a resource
    that this replica's configuration does not register (one replica with a newer
    sts.toml) is refused as ``invalid_target`` and audited, not minted for."""
    gone = "https://gone.example/"
    async with open_world() as w:
        code = w.service.login.codes.issue(
            AuthCode(
                client_id="app",
                redirect_uri=REDIRECT,
                code_challenge=pkce_challenge(VERIFIER),
                resource=gone,
                scopes=("read",),
                username="alice",
                expires_at=w.clock() + 60,
            )
        )
        form = {"code": code, "redirect_uri": REDIRECT, "code_verifier": VERIFIER}
        reply = await w.post_token({"grant_type": "authorization_code", "client_id": "app", **form})
        records = await w.service.audit.query()
    assert reply.status_code == 400
    assert reply.json() == {
        "error": "invalid_target",
        "error_description": "the signed-in resource is no longer registered",
    }
    (record,) = records
    assert (record.decision, record.client_id, record.user, record.target) == (
        "denied",
        "app",
        "alice",
        gone,
    )
    assert record.jti is None


async def test_issued_token_lines_are_limited_per_second_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past ``log_issued_per_second`` in one second of the service's clock, issued tokens
    get no line of their own: one line says the limit was reached, the next second's first
    one is preceded by the count; refusals keep a line each and every token is audited."""
    with caplog.at_level(logging.INFO, logger="keycard_agents.sts"):
        async with open_world(limits={"log_issued_per_second": 2}) as w:
            user = await w.user_token(scope="read")
            w.clock.advance(1.0)  # a second of its own, whatever the sign-in took
            caplog.clear()
            for _ in range(5):
                assert (await w.exchange("a", user, B)).status_code == 200
            assert (await w.exchange("a", user, "https://d.example/api")).status_code == 400
            w.clock.advance(1.0)
            assert (await w.exchange("a", user, B)).status_code == 200
            records = await w.service.audit.query(agent="a")
    lines = [r.getMessage() for r in caplog.records if r.name == "keycard_agents.sts"]
    kinds = [line.split(" jti=")[0].split(": HTTP")[0] for line in lines]
    assert kinds == [
        "issued token",
        "issued token",
        "more than 2 issued tokens this second: the rest are counted, not logged",
        "token request denied",
        "issued tokens without a line (over 2 a second): 3; the audit trail has each",
        "issued token",
    ]
    assert [r.decision for r in records] == ["issued"] * 5 + ["denied", "issued"]


async def test_each_token_request_leaves_one_structured_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The log is the operator's view (the JSON format emits the ``extra`` fields as
    keys): an issued token names its jti, grant, client, txn and target at INFO; a
    refusal its status, grant, client, txn, error and the audit reason, at INFO below
    500."""
    with caplog.at_level(logging.INFO, logger="keycard_agents.sts"):
        async with open_world() as w:
            user = await w.user_token(scope="read")
            caplog.clear()
            issued = await w.exchange("a", user, B)
            refused = await w.exchange("a", user, "https://d.example/api")
    assert issued.status_code == 200
    assert refused.status_code == 400
    claims = claims_of(issued.json()["access_token"])
    lines = [r for r in caplog.records if r.name == "keycard_agents.sts"]
    ok, denied = lines
    assert ok.levelno == logging.INFO
    assert ok.getMessage().startswith(f"issued token jti={claims['jti']} grant={EXCHANGE} ")
    assert {k: getattr(ok, k) for k in ("jti", "grant_type", "client_id", "txn", "target")} == {
        "jti": claims["jti"],
        "grant_type": EXCHANGE,
        "client_id": "a",
        "txn": claims["txn"],
        "target": B,
    }
    assert denied.levelno == logging.INFO
    assert denied.getMessage().startswith(
        f"token request denied: HTTP 400 grant={EXCHANGE} client=a txn={claims['txn']} "
        "error=invalid_target reason="
    )
    reason = str(getattr(denied, "reason", ""))
    fields = ("status", "grant_type", "client_id", "txn", "error", "reason")
    assert {k: getattr(denied, k) for k in fields} == {
        "status": 400,
        "grant_type": EXCHANGE,
        "client_id": "a",
        "txn": claims["txn"],
        "error": "invalid_target",
        "reason": reason,
    }
    assert reason.startswith("agent 'a' may not call 'https://d.example/api'")


async def test_the_endpoint_counts_requests_by_outcome_and_grant() -> None:
    async with open_world() as w:
        user = await w.user_token(scope="read")  # one authorization_code request, issued
        assert (await w.exchange("a", user, B)).status_code == 200
        assert (await w.exchange("a", user, "https://d.example/api")).status_code == 400
        assert (await w.post_token({"grant_type": "password"})).status_code == 400
        stats = w.service.token_endpoint.stats
    assert (stats.requests, stats.issued, stats.denied, stats.exchanges) == (4, 2, 2, 2)
    assert stats.by_grant == {"authorization_code": 1, EXCHANGE: 2, "other": 1}


async def test_the_log_line_keeps_300_characters_of_a_long_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scopes = " ".join(f"scope-{i:03d}" for i in range(100))  # each refused: a long reason
    async with open_world() as w:
        user = await w.user_token(scope="read")
        with caplog.at_level(logging.INFO, logger="keycard_agents.sts"):
            refused = await w.exchange("a", user, B, scope=scopes)
    assert refused.json()["error"] == "invalid_scope"
    assert len(refused.json()["error_description"]) > 1000
    (denial,) = [r for r in caplog.records if "token request denied" in r.getMessage()]
    reason = str(getattr(denial, "reason", ""))
    assert len(reason) == 300
    assert reason.endswith("...")
    assert refused.json()["error_description"].startswith(reason[:-3])


async def test_every_issued_token_has_its_own_jti_and_is_valid_from_its_issue() -> None:
    async with open_world() as w:
        first = claims_of(await w.user_token(scope="read"))
        second = claims_of(await w.user_token(scope="read"))
    for claims in (first, second):
        assert claims["nbf"] == claims["iat"] == int(w.clock())
        assert str(uuid.UUID(claims["jti"])) == claims["jti"]
    assert first["jti"] != second["jti"]


# -- failures below the grants: the shared store, a bug, the audit of an issued token ------


class _FailingReplay:
    """A shared state whose replay check fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def first_use(self, client_id: str, jti: str, expires_at: float) -> bool:
        raise self.error


@asynccontextmanager
async def _service(*, shared: object | None = None, audit: Any = None) -> AsyncIterator[World]:
    config, keys = make_config()
    clock = Clock()
    service = TokenService(
        config,
        clock=clock,
        audit=audit if audit is not None else MemoryAuditStore(),
        shared=cast(SharedServiceState, shared),
    )
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield World(service=service, client=client, clock=clock, keys=keys)


def _denials(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "token request denied" in r.getMessage()]


async def test_a_shared_store_that_is_away_is_a_503_to_retry_in_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fail closed: nothing that needs the replicas' state is accepted without it; the
    answer says when to retry, and the refusal (a passing outage, not a decision) is
    logged with the store's own words but not audited."""
    store = _FailingReplay(StoreUnavailableError("redis: connection refused"))
    with caplog.at_level(logging.INFO, logger="keycard_agents.sts"):
        async with _service(shared=store) as w:
            reply = await w.post_token({"grant_type": "client_credentials", **w.auth("a")})
            records = await w.service.audit.query()
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "1"
    assert reply.json() == {
        "error": "temporarily_unavailable",
        "error_description": "the token service's shared store is unavailable; retry shortly",
    }
    assert records == []
    (denial,) = _denials(caplog)
    assert denial.levelno == logging.ERROR
    assert getattr(denial, "reason", None) == "redis: connection refused"


async def test_a_bug_below_a_grant_is_a_plain_500_that_is_audited_and_named_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _FailingReplay(RuntimeError("an unexpected bug, with /internal/details"))
    with caplog.at_level(logging.INFO, logger="keycard_agents.sts"):
        async with _service(shared=store) as w:
            reply = await w.post_token({"grant_type": "client_credentials", **w.auth("a")})
            (record,) = await w.service.audit.query()
    assert reply.status_code == 500
    assert reply.json() == {
        "error": "server_error",
        "error_description": "internal error; see the token service log",
    }
    assert (record.decision, record.error, record.client_id) == ("denied", "server_error", None)
    (denial,) = _denials(caplog)
    assert getattr(denial, "reason", None) == "internal error: RuntimeError"
    assert "/internal/details" not in denial.getMessage()


class _RefusesIssued(MemoryAuditStore):
    """An audit store that takes refusals but fails on every issued token."""

    async def append(self, record: AuditRecord) -> None:
        if record.decision == "issued":
            raise RuntimeError("disk full")
        await super().append(record)


async def test_an_issued_token_the_audit_cannot_record_is_not_handed_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No evidence, no token: a 500 instead, counted as a denial, not as issued."""
    with caplog.at_level(logging.INFO, logger="keycard_agents.sts"):
        async with _service(audit=_RefusesIssued()) as w:
            reply = await w.post_token({"grant_type": "client_credentials", **w.auth("b")})
            stats = w.service.token_endpoint.stats
            records = await w.service.audit.query()
    assert reply.status_code == 500
    assert reply.json()["error"] == "server_error"
    assert "access_token" not in reply.text
    assert (stats.requests, stats.issued, stats.denied) == (1, 0, 1)
    assert records == []  # the denial is not audited either: the store just failed
    (denial,) = _denials(caplog)
    assert getattr(denial, "reason", None) == (
        "the audit store failed (RuntimeError); no token was issued"
    )


async def test_the_issued_log_line_names_client_txn_and_target(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_world() as w:
        user = await w.user_token(scope="read")
        with caplog.at_level(logging.INFO, logger="keycard_agents.sts"):
            caplog.clear()  # the user's sign-in line, when an earlier test left INFO on
            reply = await w.exchange("a", user, B)
    claims = claims_of(reply.json()["access_token"])
    (line,) = [r for r in caplog.records if r.getMessage().startswith("issued token")]
    assert line.getMessage() == (
        f"issued token jti={claims['jti']} grant={EXCHANGE} client=a txn={claims['txn']} target={B}"
    )
