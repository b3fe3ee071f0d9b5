"""The same agent code against a hosted issuer (a Keycard zone) or a local token service.

Configuration comes from the environment, the way hosted Keycard does it:

    KEYCARD_ZONE_ID=acme                  # issuer https://acme.keycard.cloud
    KEYCARD_ZONE_URL=https://...          # or the zone's URL
    KEYCARD_BASE_URL=https://...          # (optional, with KEYCARD_ZONE_ID) another root
    KEYCARD_CLIENT_ID=assistant           # the agent's application credential
    KEYCARD_CLIENT_SECRET=...
    EXAMPLE_USER_TOKEN=...                # a token your zone issued to alice for the agent
    EXAMPLE_AGENT_PORT=8931               # ports registered in the zone as resources:
    EXAMPLE_API_PORT=8932                 #   http://127.0.0.1:8931 and :8932

Without a zone it starts a local token service and runs the same code against it.

    python examples/hosted_issuer/main.py                 # local token service
    python examples/hosted_issuer/main.py --print-config  # what the environment selects
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keycard_agents import (
    Agent,
    ApplicationCredential,
    Context,
    HttpDependency,
    KeycardError,
    credential_from_env,
    open_agent_client,
    resolve_issuer,
    skill,
)
from keycard_agents.auth import TokenVerifier
from keycard_agents.testing import LocalTokenService, serve_on_loopback

ZONE_VARIABLES = ("KEYCARD_ZONE_ID", "KEYCARD_ZONE_URL")

# ---------------------------------------------------------------- the code that never changes


def assistant_class(notes_api: str) -> type[Agent]:
    class Assistant(Agent):
        """Reads the user's notes through the notes API."""

        name = "assistant"
        dependencies = (HttpDependency("notes", resource=notes_api, scopes=["notes.read"]),)

        @skill(scopes=["notes.read"])
        async def latest_note(self, ctx: Context) -> dict[str, Any]:
            """The user's latest note."""
            reply = await ctx.dependency("notes").get("notes")  # with a token for the API
            reply.raise_for_status()
            return dict(reply.json())

    return Assistant


def notes_api(*, resource: str, issuer: str) -> Starlette:
    """The HTTP API: accepts tokens of ``issuer`` issued for ``resource`` only."""
    verifier = TokenVerifier(issuers=[issuer])

    async def notes(request: Request) -> JSONResponse:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            principal = await verifier.verify(token, audience=resource)
        except KeycardError as exc:
            return JSONResponse({"error": str(exc)}, status_code=401)
        return JSONResponse(
            {
                "note": "buy oat milk",
                "user": principal.user,
                "via": list(principal.actors.subjects()),
                "issuer": principal.issuer,
            }
        )

    return Starlette(routes=[Route("/notes", notes)])


# ------------------------------------------------------------------ what the environment picks


@dataclass
class Setup:
    issuer: str
    token_endpoint: str
    credential: ApplicationCredential | None
    source: str


def hosted_setup() -> Setup:
    """Issuer from KEYCARD_ZONE_ID / KEYCARD_ZONE_URL, credential from KEYCARD_CLIENT_*."""
    issuer = resolve_issuer()
    source = next(v for v in ZONE_VARIABLES if os.environ.get(v))
    credential = credential_from_env()
    # RFC 8414: the token endpoint is whatever the issuer's metadata says.
    metadata = httpx.get(f"{issuer.rstrip('/')}/.well-known/oauth-authorization-server", timeout=10)
    metadata.raise_for_status()
    return Setup(issuer, metadata.json()["token_endpoint"], credential, source)


def print_config() -> None:
    issuer = resolve_issuer()
    credential = credential_from_env()
    print(f"issuer {issuer}")
    print(f"credential {type(credential).__name__} for client {credential.client_id}")


def run(setup: Setup, agent_port: int, api_port: int, user_token: str | None, sts: Any) -> None:
    agent_url = f"http://127.0.0.1:{agent_port}"
    api_url = f"http://127.0.0.1:{api_port}"
    assistant = assistant_class(api_url)(
        url=agent_url,
        issuer=setup.issuer,
        token_endpoint=setup.token_endpoint,
        credential=setup.credential,
    )
    print(f"issuer {setup.issuer} (from {setup.source})")
    with ExitStack() as stack:
        if sts is not None:  # local mode: register the agent and serve the token service
            sts_sock, _ = sts
            local = LocalTokenService(agents=[assistant], issuer=setup.issuer)
            stack.enter_context(serve_on_loopback(local.app, sts_sock))
            user_token = local.mint_user_token("alice", audience=assistant, scopes=["notes.read"])
        stack.enter_context(serve_on_loopback(assistant.asgi_app(), _bind(agent_port)))
        api = notes_api(resource=api_url, issuer=setup.issuer)
        stack.enter_context(serve_on_loopback(api, _bind(api_port)))
        assert user_token is not None
        note = anyio.run(ask, agent_url, user_token)
    print(f"latest note: {note['note']!r}")
    print(f"the notes API saw: {' → '.join([note['user'], *reversed(note['via'])])} → notes")


async def ask(url: str, token: str) -> Any:
    async with open_agent_client(url, token=token) as client:
        return await client.call("latest_note")


def _bind(port: int) -> Any:
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def main() -> int:
    if "--print-config" in sys.argv:
        print_config()
        return 0
    agent_port = int(os.environ.get("EXAMPLE_AGENT_PORT", "0"))
    api_port = int(os.environ.get("EXAMPLE_API_PORT", "0"))
    if any(os.environ.get(v) for v in ZONE_VARIABLES):
        token = os.environ.get("EXAMPLE_USER_TOKEN")
        if not token:
            print("set EXAMPLE_USER_TOKEN to a token your zone issued to a user for the agent")
            return 2
        run(hosted_setup(), agent_port or 8931, api_port or 8932, token, None)
        return 0
    # No zone configured: a local token service stands in for it, on a free port.
    from keycard_agents.testing import free_loopback_socket

    sts_sock, sts_url = free_loopback_socket()
    setup = Setup(sts_url, f"{sts_url}/token", None, "a local token service: no zone set")
    agent_port = agent_port or _free_port()
    api_port = api_port or _free_port()
    run(setup, agent_port, api_port, None, (sts_sock, sts_url))
    return 0


def _free_port() -> int:
    sock = _bind(0)
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
