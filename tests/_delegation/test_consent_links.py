"""A consent link from the issuer reaches the user, and the task resumes after consent.

The issuer here stands for a hosted one (Keycard, any RFC 8693 service): it answers the
exchange for Collector with ``consent_required`` and an RFC 6749 §5.2 ``error_uri`` until
the user has consented. Middle's task and then Front's stop in AUTH_REQUIRED with the
link as a ``url`` part; ``auth_required`` gives it to the app; a follow-up message to
Front's task resumes the chain.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
from delegation_support import USER_SCOPES, chain_agents

from keycard_agents import (
    AccessContext,
    Agent,
    ClientSecret,
    Context,
    HttpDependency,
    InteractionRequiredError,
    RemoteTaskError,
    call_message,
    grant,
    skill,
    task_result,
)
from keycard_agents.a2a import Task, TaskState, auth_required
from keycard_agents.auth import TokenExchangeClient
from keycard_agents.testing import LocalTokenService, open_local_agents

pytestmark = pytest.mark.anyio

LINK = "https://zone.keycard.example/consent?request=8f2c"


async def test_hosted_issuer_consent_link_then_resume() -> None:
    agents = chain_agents()
    sts = LocalTokenService(agents=agents.all)
    asgi = httpx.ASGITransport(app=sts.app)
    collector = quote(str(agents.collector.url), safe="").encode()
    consented = False

    async def hosted(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token" and collector in request.content and not consented:
            return httpx.Response(
                400,
                json={
                    "error": "consent_required",
                    "error_description": "approve access to the collector",
                    "error_uri": LINK,
                },
            )
        return await asgi.handle_async_request(request)

    token = sts.mint_user_token("alice", audience=agents.front, scopes=USER_SCOPES)
    async with (
        open_local_agents(
            sts, agents.all, transports={sts.issuer: httpx.MockTransport(hosted)}
        ) as net,
        net.client(agents.front, token=token) as client,
    ):
        task = await client.send(call_message("start"))
        assert isinstance(task, Task)
        needed = auth_required(task)
        assert needed is not None
        assert needed.url == LINK
        assert needed.task_id == task.id
        assert "approve access to the collector" in (needed.reason or "")
        with pytest.raises(RemoteTaskError) as caught:
            task_result(task)
        assert caught.value.url == LINK
        assert caught.value.state == TaskState.AUTH_REQUIRED.value
        consented = True  # the user followed the link
        resumed = await client.send("done", task_id=task.id)
    assert isinstance(resumed, Task)
    assert resumed.status.state is TaskState.COMPLETED
    assert task_result(resumed)["below"]["below"]["sub"] == "alice"
    assert auth_required(resumed) is None


@pytest.mark.parametrize(
    "error_uri",
    ["javascript:alert(1)", "https://x.example/" + "a" * 3000, "https://x.example/a b", 42],
)
async def test_an_unusable_error_uri_is_dropped(error_uri: object) -> None:
    def issuer(request: httpx.Request) -> httpx.Response:
        body = {"error": "consent_required", "error_description": "no", "error_uri": error_uri}
        return httpx.Response(400, json=body)

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(issuer)) as http,
        TokenExchangeClient(
            issuer="https://issuer.example",
            credential=ClientSecret("a", "s"),
            http_client=http,
            token_endpoint="https://issuer.example/token",
        ) as exchange,
    ):
        with pytest.raises(InteractionRequiredError) as caught:
            await exchange.exchange("subject", resource="https://api.example/")
    assert caught.value.error == "consent_required"
    assert caught.value.error_uri is None


CALENDAR = "http://127.0.0.1:9311/cal"
MAIL = "http://127.0.0.1:9312/mail"


class Planner(Agent):
    name = "planner"
    dependencies = (
        HttpDependency("calendar", resource=CALENDAR, scopes=["cal.read"]),
        HttpDependency("mail", resource=MAIL, scopes=["mail.read"]),
    )

    @skill
    @grant("calendar", "mail", on_auth="report")
    async def plan(self, ctx: Context, access: AccessContext) -> dict[str, Any]:
        """Report what the AccessContext says, without throwing."""
        return {
            "status": access.get_status(),
            "ok": access.get_successful_resources(),
            "calendar": access.get_resource_error("calendar"),
        }

    @skill
    @grant("calendar")
    async def strict(self, ctx: Context, access: AccessContext) -> str:
        """The default: consent needed ends the task in AUTH_REQUIRED."""
        return "unreachable"


async def test_access_context_reports_consent_needed_with_the_link() -> None:
    agent = Planner(url="http://127.0.0.1:9310")
    sts = LocalTokenService(agents=[agent])
    asgi = httpx.ASGITransport(app=sts.app)
    calendar = quote(CALENDAR, safe="").encode()

    async def hosted(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token" and calendar in request.content:
            body = {"error": "consent_required", "error_description": "connect", "error_uri": LINK}
            return httpx.Response(400, json=body)
        return await asgi.handle_async_request(request)

    token = sts.mint_user_token("alice", audience=agent, scopes=["cal.read", "mail.read"])
    async with (
        open_local_agents(
            sts, [agent], transports={sts.issuer: httpx.MockTransport(hosted)}
        ) as net,
        net.client(agent, token=token) as client,
    ):
        report = await client.call("plan")
        strict = await client.send(call_message("strict"))
    assert report["status"] == "partial_error"
    assert report["ok"] == ["mail"]
    assert report["calendar"]["error"] == "consent_required"
    assert report["calendar"]["url"] == LINK
    assert isinstance(strict, Task)
    needed = auth_required(strict)
    assert needed is not None
    assert needed.url == LINK
