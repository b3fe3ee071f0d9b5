"""An agent built with Keycard's own SDK (keycardai-a2a), run in its own process.

    python tests/keycard_relay.py        # settings from the environment (see main)

It is composed the way keycardai-a2a documents it: a2a-sdk's request handler and agent
card, the JSON-RPC mount behind keycardai-starlette's KeycardAuthBackend, and an executor
that calls the next agent with keycardai-a2a's DelegationClient. It runs in a child
process so that Keycard's code runs exactly as in production (asyncio, its own event
loop) and its leftovers (it does not close every HTTP client it opens) stay there.
"""

from __future__ import annotations

import os
import socket

import uvicorn
from a2a.helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from keycardai.a2a import (
    AgentServiceConfig,
    DelegationClient,
    KeycardServerCallContextBuilder,
    build_agent_card_from_config,
    keycard_user,
)
from keycardai.oauth.server import TokenVerifier
from keycardai.starlette import protected_router
from starlette.applications import Starlette


def keycard_relay_app(
    *, identity_url: str, issuer: str, client_secret: str, collector: str
) -> Starlette:
    """An agent service composed as keycardai-a2a documents it: a2a-sdk's handler, the
    agent card, and the JSON-RPC mount behind KeycardAuthBackend."""
    config = AgentServiceConfig(
        service_name="Keycard relay",
        client_id="keycard-relay",
        client_secret=client_secret,
        identity_url=identity_url,
        zone_id="local",
        authorization_server_url=issuer,
        description="Relays a request to the collector on the user's behalf",
        capabilities=["relay"],
    )

    class RelayExecutor(AgentExecutor):
        async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
            caller = keycard_user(context)
            if caller is None:
                raise PermissionError("unauthenticated")
            async with DelegationClient(config) as delegation:
                answer = await delegation.invoke_service(
                    collector, context.get_user_input(), subject_token=caller.access_token
                )
            await event_queue.enqueue_event(new_text_message(answer["result"]))

        async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
            raise NotImplementedError

    card = build_agent_card_from_config(config)
    handler = DefaultRequestHandler(
        agent_executor=RelayExecutor(), task_store=InMemoryTaskStore(), agent_card=card
    )
    verifier = TokenVerifier(issuer=issuer, audience=identity_url + "/")
    jsonrpc = Starlette(
        routes=create_jsonrpc_routes(
            handler, rpc_url="/a2a/jsonrpc", context_builder=KeycardServerCallContextBuilder()
        )
    )
    return Starlette(
        routes=[
            *create_agent_card_routes(card),
            *protected_router(
                issuer=issuer, app=jsonrpc, verifier=verifier, require_authentication=True
            ),
        ]
    )


def main() -> None:
    """Serve on the listening socket inherited as ``KEYCARD_RELAY_FD``."""
    sock = socket.socket(fileno=int(os.environ["KEYCARD_RELAY_FD"]))
    app = keycard_relay_app(
        identity_url=os.environ["KEYCARD_RELAY_URL"],
        issuer=os.environ["KEYCARD_RELAY_ISSUER"],
        client_secret=os.environ["KEYCARD_RELAY_SECRET"],
        collector=os.environ["KEYCARD_RELAY_COLLECTOR"],
    )
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
