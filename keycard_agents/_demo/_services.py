"""Running the demo's servers: uvicorn on 127.0.0.1 in threads, with bounded waits.

Each service gets a socket bound in the calling thread first, so a port that is taken
fails at once with a clear message (nothing half-started is left behind: the caller
stops what already runs). Servers speak HTTP/1.1 (RFC 9112) over loopback only.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from keycard_agents._errors import ConfigurationError

__all__ = ["PortUnavailableError", "RunningServer", "bind_loopback", "start_server"]

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class PortUnavailableError(ConfigurationError):
    """A loopback port the demo needs cannot be bound."""


def bind_loopback(port: int, *, service: str) -> socket.socket:
    """A TCP socket bound to ``127.0.0.1:port`` (``0``: a free port chosen by the system)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            why = "is already in use"
        elif exc.errno == errno.EACCES:
            why = "needs privileges this user does not have"
        else:
            why = f"cannot be bound ({exc.strerror or type(exc).__name__})"
        raise PortUnavailableError(
            f"port {port} on 127.0.0.1 (for the {service}) {why}: pass --port-base with "
            "another first port, or leave it out to use free ports",
            setting="port-base",
        ) from exc
    return sock


@dataclass
class RunningServer:
    """One uvicorn server in its own thread; :meth:`stop` ends it (bounded wait)."""

    name: str
    url: str
    server: Any
    thread: threading.Thread
    sock: socket.socket
    stopped: bool = field(default=False)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.server.should_exit = True
        self.thread.join(STOP_TIMEOUT)
        if self.thread.is_alive():  # connections that would not close: end them now
            self.server.force_exit = True
            self.thread.join(STOP_TIMEOUT)
        self.sock.close()


def _run(server: Any, sock: socket.socket) -> None:
    with contextlib.suppress(SystemExit):  # uvicorn exits when its lifespan fails
        server.run(sockets=[sock])


def start_server(
    app: Any,
    sock: socket.socket,
    *,
    name: str,
    url: str,
    timeout: float = START_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
) -> RunningServer:
    """Serve ``app`` on ``sock`` in a thread and wait (at most ``timeout`` s) until it runs."""

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="none",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=_run, args=(server, sock), name=f"keycard-demo-{name}", daemon=True
    )
    running = RunningServer(name=name, url=url, server=server, thread=thread, sock=sock)
    thread.start()
    deadline = clock() + timeout
    while not server.started:
        if not thread.is_alive() or clock() > deadline:
            running.stop()
            raise ConfigurationError(
                f"the {name} did not start within {timeout:g} s (see the messages above)"
            )
        time.sleep(0.01)
    return running


@contextlib.contextmanager
def stopping(servers: list[RunningServer]) -> Iterator[list[RunningServer]]:
    """Stop every server in ``servers`` on exit, the last started first."""
    try:
        yield servers
    finally:
        for server in reversed(servers):
            server.stop()
