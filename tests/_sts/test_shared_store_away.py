"""A token request whose shared state (the replicas' Redis) cannot be reached mid-grant:
503 ``temporarily_unavailable`` with ``Retry-After: 1``, nothing audited, one log line that
names the store's failure (fail closed: nothing is accepted without the shared checks)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sts_support import open_world

from keycard_agents._errors import StoreUnavailableError

pytestmark = pytest.mark.anyio


async def test_a_store_away_during_a_grant_answers_503_and_audits_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="keycard_agents")
    async with open_world() as w:
        user = await w.user_token()

        async def away(*_: Any, **__: Any) -> Any:
            raise StoreUnavailableError("shared store: connection refused")

        monkeypatch.setattr(w.service.token_endpoint._clients, "authenticate", away)
        before = len(await w.service.audit.query())
        reply = await w.exchange("a", user, "https://b.example/")
        after = len(await w.service.audit.query())
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"] == "temporarily_unavailable"
    assert reply.headers["retry-after"] == "1"
    assert reply.headers["cache-control"] == "no-store"
    assert after == before  # an unreachable store is no decision worth a record
    denials = [r for r in caplog.records if r.getMessage().startswith("token request denied")]
    assert len(denials) == 1
    line = denials[0]
    assert line.levelno == logging.ERROR
    assert line.__dict__["status"] == 503
    assert line.__dict__["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
    assert line.__dict__["reason"] == "shared store: connection refused"
