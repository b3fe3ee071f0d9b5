"""docs/walkthrough.md, run as a reader would: every command in order, from an empty
directory, each service in its own process, and the outputs the page shows compared.

The page's ports (8900-8902) become free ports; the browser step of ``login`` is a
script named by ``$BROWSER`` (Python's ``webbrowser`` runs it with the URL) that opens
the sign-in page, posts alice's password and follows the redirect to the loopback
address ``login`` listens on. Values that differ on every run (ids, times, durations)
are compared as placeholders.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_docs import ROOT, Block, output_after, parse_blocks

pytestmark = pytest.mark.slow

PAGE = ROOT / "docs" / "walkthrough.md"
DOC_PORTS = ("8900", "8901", "8902")
DOC_TXN = "0f3c1d2e4b5a69788796a5b4c3d2e1f0"

BROWSER = textwrap.dedent(
    """
    import sys
    import httpx

    url = sys.argv[1]
    with httpx.Client(timeout=20) as http:
        page = http.get(url)
        assert page.status_code == 200, page.text
        form = dict(httpx.URL(url).params)
        form.update(username="alice", password="wonderland-rabbit-hole")
        answer = http.post(url.split("?")[0], data=form)
        assert answer.status_code == 303, answer.text
        assert http.get(answer.headers["location"]).status_code == 200
    """
)


def _free_ports(count: int) -> list[str]:
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    ports = [str(s.getsockname()[1]) for s in socks]
    for sock in socks:
        sock.close()
    return ports


def normalize(text: str, home: str) -> str:
    """The parts of an output that differ on every run, as placeholders."""
    text = text.replace(home, "~")
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "JTI", text)
    text = re.sub(r"\b[0-9a-f]{32}\b", "TXN", text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "DATE", text)
    text = re.sub(r"\d\d:\d\d:\d\d UTC", "TIME", text)
    text = re.sub(r"\d+(\.\d+)? (ms|s)\b", "N ms", text)
    text = re.sub(r"expires in \d+ min", "expires in N min", text)
    return re.sub(r"(redirect_uri=)\S*", r"\1...", text)


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], list[int]]]:
    """An empty directory, a home of its own, the venv's commands, a scripted browser."""
    work = tmp_path / "work"
    home = tmp_path / "home"
    work.mkdir()
    home.mkdir()
    browser = tmp_path / "browser.py"
    browser.write_text(BROWSER, encoding="utf-8")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KEYCARD_", "XDG_")) and k != "BROWSER"
    }
    env.update(
        HOME=str(home),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        BROWSER=f"{sys.executable} {browser} %s",
        NO_COLOR="1",
    )
    groups: list[int] = []
    try:
        yield work, env, groups
    finally:
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for group in groups:
            while time.monotonic() < deadline:
                try:
                    os.killpg(group, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)


def _wait_for(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not come up within {seconds:g} s")
        time.sleep(0.1)


def test_walkthrough(reader: tuple[Path, dict[str, str], list[int]]) -> None:
    work, env, groups = reader
    home = env["HOME"]
    ports = dict(zip(DOC_PORTS, _free_ports(3), strict=True))

    def localize(text: str) -> str:
        for doc, real in ports.items():
            text = text.replace(f"127.0.0.1:{doc}", f"127.0.0.1:{real}")
            text = text.replace(f"--port {doc}", f"--port {real}")
        return text

    def back(text: str) -> str:
        for doc, real in ports.items():
            text = text.replace(f"127.0.0.1:{real}", f"127.0.0.1:{doc}")
        return text

    blocks: list[Block] = [b for b in parse_blocks(PAGE) if b.lang == "sh"]
    assert len(blocks) == 7, [b.where for b in blocks]
    txn = None
    for block in blocks:
        code = localize(block.code)
        if txn is not None:
            code = code.replace(DOC_TXN, txn)
        if code.rstrip().endswith("&"):  # services: left running, stopped by the fixture
            with (work / f"service-{len(groups)}.log").open("w") as log:
                process = subprocess.Popen(
                    ["bash", "-euo", "pipefail", "-c", code],
                    cwd=work,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    start_new_session=True,
                )
            groups.append(process.pid)
            process.wait(timeout=30)
            for doc, real in ports.items():
                if f"--port {real}" in code:
                    path = "/.well-known/oauth-authorization-server" if doc == "8900" else "/"
                    _wait_for(f"http://127.0.0.1:{real}{path}")
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        logs = "".join(p.read_text() for p in sorted(work.glob("service-*.log")))
        assert done.returncode == 0, f"{block.where}:\n{done.stdout}\n{done.stderr}\n{logs}"
        if "keycard-agents login" in code:
            found = re.search(r"^txn ([0-9a-f]{32})$", done.stderr, re.M)
            assert found, done.stderr
            txn = found.group(1)
            shown = done.stderr
        else:
            shown = done.stdout
        expected = output_after(block)
        if expected is not None:
            assert normalize(back(shown), home) == normalize(expected.code, home), (
                f"{block.where} printed:\n{shown}"
            )
    assert txn is not None
    # the token was cached where the page says, for the reader only, and never printed
    cache = Path(home) / ".cache" / "keycard-agents" / "tokens.json"
    assert cache.stat().st_mode & 0o077 == 0
