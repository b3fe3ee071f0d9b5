"""The audit page in a real headless browser (Chromium), served by uvicorn on loopback.

Checks the DOM (content, the credential requirement) and a screenshot: the drawn graph
must show the node colours (user blue, allowed hops green, denied hops red). Skipped
only when no Chromium is installed outside CI; in CI (``CI=true``) a missing browser
fails, because the bootstrap installs it (Debian package ``chromium``).
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn
from browser_support import chromium
from sts_support import D, make_config, open_world
from trace_support import ADMIN, ADMIN_TOKEN, run_scenario

from keycard_agents._cli import main
from keycard_agents.sts import TokenService

pytestmark = pytest.mark.slow

COLOURS = {
    "user": (0x25, 0x63, 0xEB),
    "ok": (0x16, 0xA3, 0x4A),
    "failed": (0xEA, 0x58, 0x0C),
    "denied": (0xDC, 0x26, 0x26),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    base: str
    txn: str


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """Record the scenario, then serve its trail from a token service on a loopback port."""

    async def record() -> tuple[str, TokenService]:
        async with open_world() as w:
            s = await run_scenario(w)
            port = _free_port()
            config, _ = make_config(issuer=f"http://127.0.0.1:{port}", admin=ADMIN)
            service = TokenService(config, audit=w.service.audit)
            service.trail.add_agent_store(s.store)
            return s.txn, service

    txn, service = anyio.run(record)
    base = service.issuer
    port = int(base.rsplit(":", 1)[1])
    server = uvicorn.Server(
        uvicorn.Config(service.app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield Served(base=base, txn=txn)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _login_url(served: Served, next_path: str) -> str:
    reply = httpx.post(
        f"{served.base}/audit/login-link",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    return f"{reply.json()['url']}&next={next_path}"


def _browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=45, check=False)


def _server_refuses(url: str, **auth: object) -> None:
    """What the server sends for a page without the right credential: 401, a Basic
    challenge, the sign-in page, and nothing of the trail."""
    reply = httpx.get(url, timeout=10, **auth)  # type: ignore[arg-type]
    assert reply.status_code == 401, (reply.status_code, reply.text[:300])
    assert reply.headers["www-authenticate"].startswith("Basic "), reply.headers
    assert "401: sign-in required" in reply.text


def test_browser_needs_the_admin_credential(served: Served, tmp_path: Path) -> None:
    page = f"{served.base}/audit/txn/{served.txn}"
    wrong = page.replace("http://", "http://admin:wrong-token@")
    made_up = f"{served.base}/audit/login?code=made-up"
    # what the server sends: status, challenge and body, independent of any browser
    _server_refuses(page)
    _server_refuses(page, auth=("admin", "wrong-token"))
    _server_refuses(made_up)
    # what a person sees: Chromium versions differ in how they show a refused Basic
    # challenge (the 401 body, or an empty document), but none may show the trail
    for url in (page, wrong, made_up):
        result = _browser(tmp_path, "--dump-dom", url)
        assert served.txn not in result.stdout, (url, result.stdout[-500:])
        assert "Delegation tree" not in result.stdout
    # the same page with HTTP Basic credentials (user name "admin", the admin token)
    right = page.replace("http://", f"http://admin:{ADMIN_TOKEN}@")
    result = _browser(tmp_path, "--dump-dom", right)
    assert f"Delegation tree of txn <code>{served.txn}</code>" in result.stdout, (
        result.stdout[-500:],
        result.stderr[-2000:],
    )


def test_browser_dom_shows_chains_and_the_tree(served: Served, tmp_path: Path) -> None:
    result = _browser(tmp_path, "--dump-dom", _login_url(served, "/audit"))
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "Recent delegation chains" in dom
    assert f'href="/audit/txn/{served.txn}"' in dom

    result = _browser(tmp_path, "--dump-dom", _login_url(served, f"/audit/txn/{served.txn}"))
    dom = result.stdout
    assert f"Delegation tree of txn <code>{served.txn}</code>" in dom
    assert "DENIED invalid_target" in dom
    assert "DENIED invalid_scope" in dom
    assert f"alice → a → b → {D}" in dom
    assert "may not call" in dom
    assert dom.count('class="node') == 6


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """A tiny PNG reader (8-bit RGB or RGBA, non-interlaced): width, height, RGB rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8, depth
    assert colour_type in (2, 6), colour_type
    assert interlace == 0
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line) if bpp == 3 else bytes(v for j, v in enumerate(line) if j % 4 != 3))
        prev = line
    return width, height, rows


def _count(rows: list[bytes], rgb: tuple[int, int, int], tolerance: int = 6) -> int:
    count = 0
    for row in rows:
        for x in range(0, len(row), 3):
            if all(abs(row[x + k] - rgb[k]) <= tolerance for k in range(3)):
                count += 1
    return count


def test_screenshot_shows_the_drawn_graph(served: Served, tmp_path: Path) -> None:
    shot = tmp_path / "audit.png"
    url = _login_url(served, f"/audit/txn/{served.txn}")
    result = _browser(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", url)
    assert shot.is_file(), result.stderr[-2000:]
    keep = os.environ.get("KEYCARD_AUDIT_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
    width, height, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (1280, 900)
    # boxes of 210 x 56 px in solid fill (minus their text): the user, two completed hops,
    # one whose task failed, two denied; the page has no other large areas in these colours
    box = 210 * 56
    assert _count(rows, COLOURS["user"]) > box * 0.6
    assert _count(rows, COLOURS["ok"]) > box * 0.6 * 2
    assert _count(rows, COLOURS["failed"]) > box * 0.6
    assert _count(rows, COLOURS["denied"]) > box * 0.6 * 2
    assert _count(rows, COLOURS["ok"]) < box * 3  # not everything is green


def test_trace_command_reads_a_running_token_service(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KEYCARD_ADMIN_TOKEN", ADMIN_TOKEN)
    assert main(["trace", served.txn, "--from", served.base]) == 0
    out = capsys.readouterr().out
    assert "5 hops, 2 denied" in out
    assert f"✘ {D}  DENIED invalid_target" in out
    assert main(["trace", "nope", "--from", served.base]) == 1
    assert "has no audit record for txn 'nope'" in capsys.readouterr().err
    monkeypatch.setenv("KEYCARD_ADMIN_TOKEN", "wrong")
    assert main(["trace", served.txn, "--from", served.base]) == 2
    assert "refused the admin token" in capsys.readouterr().err
