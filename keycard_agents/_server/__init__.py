"""The A2A 1.0 HTTP server: JSON-RPC and HTTP+JSON bindings, well-known routes, serving.

See ``_app.py`` (the ASGI app), ``_jsonrpc.py`` / ``_rest.py`` (the bindings, A2A 1.0 §9 and
§11), ``_auth.py`` (RFC 6750 / RFC 9728 bearer authentication), ``_sse.py`` (event streams)
and ``_serve.py`` (uvicorn / hypercorn).
"""

from __future__ import annotations

from keycard_agents._server._app import AgentMount, create_app
from keycard_agents._server._command import add_serve_arguments, run_serve
from keycard_agents._server._serve import serve

__all__ = ["AgentMount", "add_serve_arguments", "create_app", "run_serve", "serve"]
