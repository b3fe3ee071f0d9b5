"""Calling HTTP APIs with the ``grant`` pattern and ``AccessContext``.

``@grant("calendar", "mail")`` exchanges the caller's token for one token per API, at
the same time, before the skill runs. The skill receives an ``AccessContext`` that never
raises: each API has either a token or an error. Here alice's token lacks ``mail.send``,
so the calendar works and the mail API is refused (``invalid_scope``): a partial result.

    python examples/grant_http_api/main.py
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keycard_agents import (
    AccessContext,
    Agent,
    Context,
    HttpDependency,
    KeycardError,
    grant,
    open_agent_client,
    skill,
)
from keycard_agents.auth import TokenVerifier
from keycard_agents.testing import LocalTokenService, free_loopback_socket, serve_on_loopback


def calendar_api(*, resource: str, issuer: str) -> Starlette:
    """An HTTP API that accepts only tokens issued for it (audience = its resource)."""
    verifier = TokenVerifier(issuers=[issuer])

    async def events(request: Request) -> JSONResponse:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            principal = await verifier.verify(token, audience=resource)
        except KeycardError as exc:
            return JSONResponse({"error": "invalid_token", "detail": str(exc)}, status_code=401)
        return JSONResponse(
            {
                "user": principal.user,
                "via": list(principal.actors.subjects()),
                "events": ["09:00 stand-up", "12:30 lunch with Sam"],
            }
        )

    return Starlette(routes=[Route("/events", events)])


def assistant_class(calendar: str, mail: str) -> type[Agent]:
    class Assistant(Agent):
        """Plans the day with the calendar and mail APIs."""

        name = "assistant"
        dependencies = (
            HttpDependency("calendar", resource=calendar, scopes=["calendar.read"]),
            HttpDependency("mail", resource=mail, scopes=["mail.send"]),
        )

        @skill(scopes=["assistant"])
        @grant("calendar", "mail")
        async def plan_day(self, ctx: Context, access: AccessContext) -> dict[str, Any]:
            """Today's events, and a summary mail when allowed."""
            report: dict[str, Any] = {
                "status": access.get_status(),
                "granted": access.get_successful_resources(),
                "refused": access.get_errors()["resources"],
            }
            if not access.has_resource_error("calendar"):
                token = access.access("calendar").access_token
                async with httpx.AsyncClient() as http:
                    reply = await http.get(
                        f"{calendar}/events", headers={"Authorization": f"Bearer {token}"}
                    )
                report["calendar"] = reply.json()
            return report

    return Assistant


async def ask(url: str, token: str) -> Any:
    async with open_agent_client(url, token=token) as client:
        return await client.call("plan_day")


def main() -> None:
    (sts_sock, sts_url), (a_sock, a_url), (cal_sock, cal_url) = (
        free_loopback_socket() for _ in range(3)
    )
    mail_url = "http://127.0.0.1:9/mail"  # never reached: the exchange is refused first
    assistant = assistant_class(cal_url, mail_url)(url=a_url)
    sts = LocalTokenService(agents=[assistant], issuer=sts_url)
    with ExitStack() as stack:
        stack.enter_context(serve_on_loopback(sts.app, sts_sock))
        stack.enter_context(
            serve_on_loopback(calendar_api(resource=cal_url, issuer=sts_url), cal_sock)
        )
        stack.enter_context(serve_on_loopback(assistant.asgi_app(), a_sock))
        # alice may read her calendar but has not allowed sending mail.
        token = sts.mint_user_token(
            "alice", audience=assistant, scopes=["assistant", "calendar.read"]
        )
        report = anyio.run(ask, a_url, token)
    print(f"access status: {report['status']}")
    print(f"granted: {', '.join(report['granted'])}")
    for resource, error in report["refused"].items():
        print(f"refused: {resource}: {error['error']}")
    calendar = report["calendar"]
    print(f"calendar API saw user {calendar['user']} via {' → '.join(calendar['via'])}")
    for event in calendar["events"]:
        print(f"  {event}")


if __name__ == "__main__":
    main()
