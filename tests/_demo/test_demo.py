"""``keycard-agents demo``: the whole chain on loopback, its failure modes and --keep-running."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from leak_support import assert_no_token

from keycard_agents import ConfigurationError
from keycard_agents._cli import main
from keycard_agents._demo import _run
from keycard_agents._demo._services import start_server

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "import sys; from keycard_agents._cli import main; sys.exit(main())"]


def _demo_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("keycard-demo-")]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}


def _assert_full_story(out: str) -> None:
    assert "alice → planner → travel → travel-tools" in out
    assert "alice → planner → weather → calendar" in out
    # The third-party hop: the task stops for alice's calendar, she connects, it resumes.
    assert "TASK_STATE_AUTH_REQUIRED" in out
    assert "/connections/calendar/connect?txn=" in out
    assert "sealed in the vault" in out
    assert "calendar busy Tue 10:00 dentist" in out
    assert "[third-party API, connection calendar]" in out
    assert "Trip to Lisbon" in out
    assert "TP 571 from Berlin" in out  # from the MCP tool's table
    assert "sunny, 16–24 °C" in out  # from the weather agent
    assert "Delegation tree (from the audit trail)" in out
    # the tree: root user, planner under it, travel-tools under travel, narrowing scopes
    assert "└─ ✔ planner" in out
    assert "✔ travel-tools" in out
    assert "[flights.read hotels.read]" in out
    assert "/.well-known/agent-card.json" in out
    assert "/audit" in out
    assert_no_token(out)


@pytest.mark.slow
def test_demo_in_process_runs_the_chain_and_stops_everything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    _assert_full_story(out)
    assert "admin login" not in out  # the admin credential only with --keep-running
    assert "stopping services ... done" in out
    assert _demo_threads() == []


@pytest.mark.slow
def test_demo_answers_another_request(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--request", "plan a trip to Tokyo"]) == 0
    out = capsys.readouterr().out
    assert 'Request: "plan a trip to Tokyo"' in out
    assert "NH 224 from Frankfurt" in out


def _taken_port_block() -> Iterator[tuple[int, socket.socket]]:
    """A listening socket on a free port P whose block P-2..P+2 looks usable."""
    for _ in range(20):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = int(sock.getsockname()[1])
        if 1024 + 2 <= port <= 65000:
            yield port - 2, sock
            return
        sock.close()
    raise AssertionError("no usable port block")


def test_demo_fails_clearly_when_a_port_is_taken(capsys: pytest.CaptureFixture[str]) -> None:
    for base, sock in _taken_port_block():
        with sock:
            assert main(["demo", "--port-base", str(base)]) == 2
    err = capsys.readouterr().err
    assert "error: port" in err
    assert "is already in use" in err or "cannot be bound" in err
    assert "--port-base" in err
    assert _demo_threads() == []


def test_demo_refuses_a_port_base_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--port-base", "80"]) == 2
    assert "--port-base 80" in capsys.readouterr().err


def test_demo_names_a_missing_dependency(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)  # import mcp now raises ImportError
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "needs the 'mcp' package" in err
    assert "pip install 'keycard-agents[mcp]'" in err
    assert _demo_threads() == []


@pytest.mark.slow
def test_a_failure_midway_stops_the_services_already_started(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = start_server

    def failing(app: Any, sock: socket.socket, *, name: str, url: str) -> Any:
        if name == "travel":
            sock.close()
            raise ConfigurationError("the travel did not start (injected)")
        return real(app, sock, name=name, url=url)

    monkeypatch.setattr(_run, "start_server", failing)
    assert main(["demo"]) == 2
    assert "injected" in capsys.readouterr().err
    assert _demo_threads() == []


@pytest.mark.slow
def test_demo_subprocess_exits_zero_with_the_story() -> None:
    done = subprocess.run(
        [*CLI, "demo"], capture_output=True, text=True, timeout=60, check=False, env=_env()
    )
    assert done.returncode == 0, done.stderr
    _assert_full_story(done.stdout)
    assert "\x1b[" not in done.stdout  # no colour when not a terminal
    assert_no_token(done.stderr)


class _Lines:
    """Lines of a process's stdout, read by a thread, waited for with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, text: str, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} not printed in time: {''.join(self.seen)}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"output ended before {text!r}: {''.join(self.seen)}")
            self.seen.append(line)
            if text in line:
                return self.seen

    def rest(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
        return "".join(self.seen)


def _field(lines: list[str], label: str) -> str:
    line = next(x for x in lines if x.strip().startswith(label))
    return line.strip()[len(label) :].split()[0]


@pytest.mark.slow
def test_keep_running_serves_until_interrupted() -> None:
    proc = subprocess.Popen(
        [*CLI, "demo", "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        out = _Lines(proc)
        lines = out.until("Press Ctrl-C", timeout=30)
        card_url = _field(lines, "planner card")
        audit_url = _field(lines, "audit page")
        admin_line = next(x for x in lines if "admin login" in x)
        admin_password = admin_line.split("password", 1)[1].split()[0]
        card = httpx.get(card_url, timeout=5)
        assert card.status_code == 200
        assert card.json()["name"] == "planner"
        page = httpx.get(audit_url, auth=("admin", admin_password), timeout=5)
        assert page.status_code == 200
        assert "planner" in page.text
        assert httpx.get(audit_url, timeout=5).status_code == 401
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        rest = out.rest(timeout=5)
        assert "stopping services ... done" in rest
        with pytest.raises(httpx.TransportError):
            httpx.get(card_url, timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
