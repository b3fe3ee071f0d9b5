"""Running an agent as an HTTP server: uvicorn on asyncio, hypercorn on trio.

Graceful shutdown (on SIGINT / SIGTERM): the server stops accepting connections, the task
runtime cancels the running tasks and marks them (so clients see a final status), which
ends every open event stream; then the remaining connections finish and the lifespan
exits. uvicorn runs on asyncio only; ``backend="trio"`` serves with hypercorn on trio
(install the ``trio`` extra: ``pip install 'keycard-agents[trio]'``).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import anyio
import uvicorn

from keycard_agents._errors import ConfigurationError
from keycard_agents._logs import get_logger
from keycard_agents._server._app import create_app
from keycard_agents._server._dispatch import ManagedRuntime
from keycard_agents._server._heap import freeze_startup_heap
from keycard_agents._server._timeouts import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    BodyDeadline,
    ServerTimeouts,
    apply_to_hypercorn,
    escape_server_logs,
    uvicorn_options,
)

if TYPE_CHECKING:
    import socket

    from starlette.applications import Starlette

    from keycard_agents._agent._agent import Agent

__all__ = ["default_url", "serve"]

logger = get_logger("keycard_agents.server")

#: How long shutdown waits for the runtime to cancel and mark tasks, then for connections.
SHUTDOWN_GRACE_SECONDS = 10.0


def default_url(host: str, port: int) -> str:
    """The URL an agent served on ``host:port`` is reached at when none is configured."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - display only
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    if shown == "[::]":
        shown = "[::1]"
    return f"http://{shown}:{port}"


def _close_runtime(app: Starlette) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        runtime = app.state.keycard_runtime  # set by create_app
        if not isinstance(runtime, ManagedRuntime):
            return
        with anyio.move_on_after(SHUTDOWN_GRACE_SECONDS, shield=True):
            try:
                await runtime.aclose()
            except Exception:
                logger.exception("the task runtime failed to shut down cleanly")

    return close


def serve(
    agent: Agent,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    backend: Literal["asyncio", "trio"] = "asyncio",
    log_level: str = "info",
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT,
    **app_options: Any,
) -> None:
    """Serve ``agent`` until interrupted (blocking).

    When the agent has no ``url``, it gets ``http://{host}:{port}``; behind a proxy or on
    a public interface, construct the agent with the URL clients use. ``app_options`` go to
    :func:`~keycard_agents._server._app.create_app` (``verifier``, ``max_body_size``,
    ``allow_missing_version``, ...). ``header_timeout`` is how long a request's headers
    may take to arrive, ``body_timeout`` its body after them (then 408) and
    ``keep_alive_timeout`` how long an idle connection stays open (seconds; see
    ``keycard_agents._server._timeouts``).
    """
    timeouts = ServerTimeouts(
        header=header_timeout, body=body_timeout, keep_alive=keep_alive_timeout
    )
    if not agent.url:
        agent.url = default_url(host, port)
    app = create_app(agent, **app_options)
    escape_server_logs()
    freeze_startup_heap()
    if backend == "asyncio":
        _serve_uvicorn(app, host=host, port=port, log_level=log_level, timeouts=timeouts)
    elif backend == "trio":
        _serve_hypercorn_trio(app, host=host, port=port, timeouts=timeouts)
    else:
        raise ConfigurationError(
            f"unknown backend {backend!r}: use 'asyncio' (uvicorn) or 'trio' (hypercorn)",
            setting="backend",
        )


def _serve_uvicorn(
    app: Starlette, *, host: str, port: int, log_level: str, timeouts: ServerTimeouts
) -> None:

    close_runtime = _close_runtime(app)

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # Stop accepting first, then end tasks and streams so connections can finish.
            for server in self.servers:
                server.close()
            await close_runtime()
            await super().shutdown(sockets=sockets)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=int(SHUTDOWN_GRACE_SECONDS),
        **uvicorn_options(timeouts),
    )
    # uvicorn re-raises the captured SIGINT once it has shut down gracefully; the
    # shutdown is complete by then, so Ctrl-C ends serve() normally.
    with contextlib.suppress(KeyboardInterrupt):
        _Server(config).run()


def _serve_hypercorn_trio(
    app: Starlette, *, host: str, port: int, timeouts: ServerTimeouts
) -> None:
    try:  # the optional ``trio`` extra, imported only when serving on trio
        import trio
        from hypercorn.config import Config
        from hypercorn.trio import serve as hypercorn_serve
    except ImportError as exc:
        raise ConfigurationError(
            "serving on trio needs hypercorn and trio: pip install 'keycard-agents[trio]'",
            setting="backend",
        ) from exc
    close_runtime = _close_runtime(app)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = SHUTDOWN_GRACE_SECONDS
    apply_to_hypercorn(config, timeouts)
    served = BodyDeadline(app, seconds=timeouts.body)

    async def shutdown_trigger() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        await close_runtime()

    async def main() -> None:
        await hypercorn_serve(served, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]

    trio.run(main)
