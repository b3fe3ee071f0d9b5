"""What an operator sees in the logs: failed tasks, token service denials and 5xx.

One line per event, with ``txn``, client and reason, never a token; the JSON format
emits the same as structured fields; control characters stay escaped.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from sts_support import ISSUER, B, D, claims_of, open_world

from keycard_agents import Agent, AgentDependency, ClientSecret, Context, RemoteTaskError, skill
from keycard_agents._logs import configure_logging
from keycard_agents.testing import LocalTokenService, open_local_agents

pytestmark = pytest.mark.anyio

CALENDAR = "http://127.0.0.1:8902"


class Calendar(Agent):
    """Knows when the user is free."""

    @skill(scopes=["calendar.read"])
    async def free_slots(self, ctx: Context, day: str) -> list[str]:
        return [f"{day} 09:00"]


class Planner(Agent):
    """Plans meetings."""

    dependencies = [AgentDependency("calendar", url=CALENDAR, scopes=["calendar.read"])]  # noqa: RUF012

    @skill(scopes=["plan"])
    async def plan(self, ctx: Context, day: str) -> str:
        slots = await ctx.dependency("calendar").call("free_slots", day=day)
        return str(slots[0])

    @skill(scopes=["plan"])
    async def ask_nobody(self, ctx: Context) -> str:
        return str(await ctx.dependency("nobody").call("anything"))


def _failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "keycard_agents.runtime" and "failed: skill=" in r.getMessage()
    ]


async def _call_planner(
    caplog: pytest.LogCaptureFixture, skill_id: str, **options: object
) -> tuple[logging.LogRecord, str, str]:
    planner = Planner(url="http://127.0.0.1:8901")
    calendar = Calendar(url=CALENDAR)
    sts = LocalTokenService(agents=[planner, calendar])
    credential = options.pop("credential", None)
    if credential is not None:
        planner.credential = credential  # type: ignore[assignment]
    token = sts.mint_user_token("alice", audience=planner, scopes=["plan", "calendar.read"])
    caplog.set_level(logging.INFO, logger="keycard_agents")
    async with open_local_agents(sts, [planner, calendar], **options) as net:  # type: ignore[arg-type]
        principal = await sts.verifier().verify(token, audience=str(planner.url))
        txn = str(principal.txn)
        async with net.client(planner, token=token) as client:
            with pytest.raises(RemoteTaskError):
                await client.call(skill_id, **({"day": "Monday"} if skill_id == "plan" else {}))
    (line,) = _failures(caplog)
    return line, txn, token


async def test_a_task_failed_by_the_token_service_is_logged_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    line, txn, token = await _call_planner(
        caplog, "plan", credential=ClientSecret("planner", "not-the-secret")
    )
    message = line.getMessage()
    assert line.levelno == logging.WARNING
    assert f"txn={txn}" in message
    assert "skill=plan" in message
    assert "user=alice" in message
    assert "error=invalid_client" in message
    assert token not in message
    assert "not-the-secret" not in message
    assert "\n" not in message


async def test_an_unreachable_token_service_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    line, txn, _ = await _call_planner(
        caplog,
        "plan",
        transports={"http://127.0.0.1:8900": httpx.MockTransport(down)},
        exchange_options={"retries": 0},
    )
    message = line.getMessage()
    assert f"txn={txn}" in message
    assert "error=unreachable" in message
    assert "ConnectError" in message


async def test_an_unknown_dependency_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    line, txn, _ = await _call_planner(caplog, "ask_nobody")
    message = line.getMessage()
    assert f"txn={txn}" in message
    assert "skill=ask_nobody" in message
    assert "nobody" in message


# -- the token service ---------------------------------------------------------------------


def _sts_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The token service's lines about requests (not its start-up warnings)."""
    return [
        r
        for r in caplog.records
        if r.name == "keycard_agents.sts" and r.getMessage().startswith("token request")
    ]


async def test_the_token_service_logs_each_denial_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="keycard_agents")
    async with open_world() as w:
        user = await w.user_token()
        token_b = (await w.exchange("a", user, B)).json()["access_token"]
        caplog.clear()
        denied = await w.exchange("b", token_b, D, scope="read")
        assert denied.status_code == 400
    (line,) = _sts_lines(caplog)
    message = line.getMessage()
    txn = claims_of(user)["txn"]
    assert line.levelno == logging.INFO
    assert "HTTP 400" in message
    assert "client=b" in message
    assert f"txn={txn}" in message
    assert "error=invalid_target" in message
    assert "reason=agent 'b' may not call" in message
    assert token_b not in message
    assert user not in message
    assert line.__dict__["txn"] == txn


class _BrokenAudit:
    async def append(self, record: object) -> None:
        raise RuntimeError("disk full at /secret/path")

    async def query(self, **filters: object) -> list[object]:
        return []


async def test_the_token_service_logs_each_5xx_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="keycard_agents")
    async with open_world(audit=_BrokenAudit()) as w:  # type: ignore[arg-type]
        reply = await w.post_token({"grant_type": "client_credentials", **w.auth("b")})
        assert reply.status_code == 500
    (line,) = _sts_lines(caplog)
    message = line.getMessage()
    assert line.levelno == logging.ERROR
    assert "HTTP 500" in message
    assert "client=b" in message
    assert "error=server_error" in message
    assert "audit store failed (RuntimeError)" in message
    assert "/secret/path" not in message
    assert "/secret/path" not in reply.text


# -- the JSON format -------------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger("keycard_agents")
    saved = root.level
    handler = configure_logging(level="info", fmt="json", stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)


async def test_json_log_lines_carry_the_fields_and_escape_control_characters(
    json_log: io.StringIO,
) -> None:
    async with open_world() as w:
        user = await w.user_token()
        token_b = (await w.exchange("a", user, B)).json()["access_token"]
        await w.exchange("b", token_b, D, scope="read")
        await w.post_token({"grant_type": "evil\ninjected line", **w.auth("b")})
    lines = json_log.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    denials = [r for r in records if r["message"].startswith("token request denied")]
    assert len(denials) == 2, records
    target, evil = denials
    assert target["level"] == "INFO"
    assert target["logger"] == "keycard_agents.sts"
    assert target["client_id"] == "b"
    assert target["error"] == "invalid_target"
    assert target["status"] == 400
    assert len(target["txn"]) == 32
    assert target["reason"].startswith("agent 'b' may not call")
    assert evil["error"] == "unsupported_grant_type"
    assert "\\x0a" in evil["message"]
    assert "\n" not in evil["message"]
    assert not any(token_b in line or user in line for line in lines)
    assert ISSUER  # the same world as the other tests


def test_configure_logging_rejects_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="text or json"):
        configure_logging(fmt="xml", stream=io.StringIO())
