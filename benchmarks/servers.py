"""The servers the benchmarks load, each run as its own process (uvicorn, one worker).

    python benchmarks/servers.py KIND --port PORT --work DIR

KIND is one of:

* ``keycard``         our A2A server, bearer authentication on (TokenVerifier, static keys)
* ``keycard-noauth``  the same server and skill, the skill declared anonymous, no token sent
* ``a2a-sdk``         the official a2a-sdk 1.3.0 server with an echo AgentExecutor, no auth
* ``a2a-sdk-bearer``  the same behind a static bearer-token check (constant-time compare)
* ``fastapi``         a bare FastAPI JSON-RPC echo endpoint (the ceiling)
* ``fastapi-jwt``     the same with a joserfc ES256 verify + claims check on every request

DIR holds ``jwks.json`` (the user-token issuer's public keys) and ``static-token.txt``.
Only 127.0.0.1 is ever bound.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoint annotations at runtime.
import argparse
import gc
import hmac
import json
import sys
from pathlib import Path
from typing import Any

ISSUER = "https://issuer.bench.example"
HOST = "127.0.0.1"


def agent_url(port: int) -> str:
    return f"http://{HOST}:{port}"


# ----------------------------------------------------------------------------- keycard


def keycard_app(port: int, work: Path, *, auth: bool) -> Any:
    from keycard_agents import Agent, create_app, skill
    from keycard_agents.auth import StaticKeys, TokenVerifier

    class BenchEcho(Agent):
        name = "Bench echo"
        description = "Echoes text back."
        version = "1.0.0"

        @skill(id="echo")
        async def echo(self, text: str) -> str:
            """Say it back."""
            return text

    class OpenBenchEcho(Agent):
        name = "Bench echo (no auth)"
        description = "Echoes text back to anyone."
        version = "1.0.0"

        @skill(id="echo", anonymous=True)
        async def echo(self, text: str) -> str:
            """Say it back."""
            return text

    jwks = json.loads((work / "jwks.json").read_text())
    verifier = TokenVerifier(issuers=[ISSUER], keys=StaticKeys({ISSUER: jwks}))
    agent = (BenchEcho if auth else OpenBenchEcho)(url=agent_url(port))
    return create_app(agent, verifier=verifier)


# ----------------------------------------------------------------------------- a2a-sdk


def a2a_sdk_app(port: int, work: Path, *, bearer: bool) -> Any:
    from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_part
    from a2a.server.agent_execution import AgentExecutor, RequestContext
    from a2a.server.events.event_queue_v2 import EventQueue
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
    from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
    from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
    from starlette.applications import Starlette

    class EchoExecutor(AgentExecutor):
        """Echo as a task, like our skill: task created, artifact added, completed."""

        async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
            message = context.message
            assert message is not None
            text = "\n".join(p.text for p in message.parts if p.HasField("text"))
            task = context.current_task
            if task is None:
                task = new_task_from_user_message(message)
                await event_queue.enqueue_event(task)
            updater = TaskUpdater(event_queue, task.id, task.context_id)
            await updater.add_artifact([new_text_part(text)], name="result")
            await updater.complete()

        async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
            raise RuntimeError("echo cannot be cancelled")

    card = AgentCard(
        name="a2a-sdk echo",
        description="Echoes text back.",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=agent_url(port), protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="echo", description="Say it back.", tags=["text"])],
    )
    handler = DefaultRequestHandler(
        agent_executor=EchoExecutor(), task_store=InMemoryTaskStore(), agent_card=card
    )
    routes = [*create_agent_card_routes(card), *create_jsonrpc_routes(handler, rpc_url="/")]
    app: Any = Starlette(routes=routes)
    if bearer:
        expected = ("Bearer " + (work / "static-token.txt").read_text().strip()).encode()
        app = StaticBearer(app, expected)
    return app


class StaticBearer:
    """ASGI middleware: POSTs need ``Authorization`` equal to one static bearer value."""

    def __init__(self, app: Any, expected: bytes) -> None:
        self.app = app
        self.expected = expected

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            got = b""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    got = value
                    break
            if not hmac.compare_digest(got, self.expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"www-authenticate", b"Bearer"), (b"content-length", b"0")],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)


# ----------------------------------------------------------------------------- fastapi


def fastapi_app(port: int, work: Path, *, jwt_check: bool) -> Any:
    from fastapi import FastAPI, HTTPException, Request
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    keys = KeySet.import_key_set(json.loads((work / "jwks.json").read_text()))
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": agent_url(port)},
        sub={"essential": True},
        exp={"essential": True},
        leeway=60,
    )

    def check(request: Request) -> str:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise HTTPException(401)
        try:
            token = jwt.decode(header[7:], keys, algorithms=["ES256"])
            if token.header.get("typ") != "at+jwt":
                raise HTTPException(401)
            registry.validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise HTTPException(401) from exc
        return str(token.claims["sub"])

    @app.post("/")
    async def echo(request: Request) -> dict[str, Any]:
        if jwt_check:
            check(request)
        body = await request.json()
        text = body["params"]["message"]["parts"][0]["text"]
        return {
            "jsonrpc": "2.0",
            "id": body.get("id"),
            "result": {
                "task": {
                    "id": "t",
                    "contextId": "c",
                    "status": {"state": "TASK_STATE_COMPLETED"},
                    "artifacts": [{"artifactId": "a", "parts": [{"text": text}]}],
                }
            },
        }

    @app.get("/")
    async def health() -> dict[str, str]:
        return {"ok": "yes"}

    return app


# ----------------------------------------------------------------------------- main

KINDS = ("keycard", "keycard-noauth", "a2a-sdk", "a2a-sdk-bearer", "fastapi", "fastapi-jwt")


def build(kind: str, port: int, work: Path) -> Any:
    if kind == "keycard":
        return keycard_app(port, work, auth=True)
    if kind == "keycard-noauth":
        return keycard_app(port, work, auth=False)
    if kind == "a2a-sdk":
        return a2a_sdk_app(port, work, bearer=False)
    if kind == "a2a-sdk-bearer":
        return a2a_sdk_app(port, work, bearer=True)
    if kind == "fastapi":
        return fastapi_app(port, work, jwt_check=False)
    if kind == "fastapi-jwt":
        return fastapi_app(port, work, jwt_check=True)
    raise SystemExit(f"unknown server kind {kind!r}; one of {', '.join(KINDS)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args(argv)
    import uvicorn

    app = build(args.kind, args.port, args.work)
    # Every server, ours and the others alike, freezes its start-up heap as
    # keycard_agents.serve() does: full collections then skip the objects that live as
    # long as the process (benchmarks/NOTES.md, issue 20).
    gc.collect()
    gc.freeze()
    options: dict[str, Any] = {}
    if args.kind.startswith("keycard"):
        # Ours with the HTTP protocol serve() installs (httptools with read deadlines);
        # the others with uvicorn's defaults (httptools when installed, as here).
        from keycard_agents._server._timeouts import ServerTimeouts, uvicorn_options

        options = uvicorn_options(ServerTimeouts())
    uvicorn.run(app, host=HOST, port=args.port, log_level="warning", access_log=False, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
