"""Headless Chromium driven over the DevTools protocol on a pipe (no extra package).

``--remote-debugging-pipe`` makes Chromium read protocol commands from file descriptor 3
and write answers to file descriptor 4, each message JSON ended by a NUL byte. That is
enough to open a page, measure its layout (``Runtime.evaluate``: DevTools evaluation is
not subject to the page's Content-Security-Policy, so a page that forbids scripts can
still be measured) and take a screenshot. Skipped when no Chromium is installed outside
CI, failed in CI, as the other browser tests do.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

__all__ = ["BrowserPage", "chromium", "open_browser_page"]

_TIMEOUT = 45.0


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    message = "Chromium not found: install the Debian package 'chromium' (apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " — CI must have it", pytrace=False)
    pytest.skip(message)


class BrowserPage:
    """One page of a headless Chromium, commanded over the DevTools pipe."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self._write = write_fd
        self._read = read_fd
        self._buffer = b""
        self._next_id = 0
        self._session: str | None = None

    def _send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self._session is not None:
            message["sessionId"] = self._session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + _TIMEOUT
        while True:
            while b"\0" in self._buffer:
                raw, _, self._buffer = self._buffer.partition(b"\0")
                answer = json.loads(raw)
                if answer.get("id") == self._next_id:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    result: dict[str, Any] = answer.get("result", {})
                    return result
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"Chromium did not answer {method}")
            ready, _, _ = select.select([self._read], [], [], left)
            if ready:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buffer += chunk

    def attach(self, width: int, height: int) -> None:
        targets = self._send("Target.getTargets")["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        if page is None:
            target_id = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        else:
            target_id = page["targetId"]
        attached = self._send("Target.attachToTarget", {"targetId": target_id, "flatten": True})
        self._session = attached["sessionId"]
        self._send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression evaluated in the page."""
        result = self._send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def goto(self, url: str, *, until: str = "document.readyState === 'complete'") -> None:
        """Open ``url`` and wait (bounded) until ``until`` holds in the loaded page."""
        self._send("Page.navigate", {"url": url})
        deadline = time.monotonic() + _TIMEOUT
        while True:
            try:
                if self.evaluate(f"location.href !== 'about:blank' && ({until})"):
                    return
            except RuntimeError:
                pass  # the document is being replaced (a redirect): ask again
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page {url} did not load")
            time.sleep(0.05)

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(self._send("Page.captureScreenshot", {"format": "png"})["data"])
        path.write_bytes(data)
        return data


@contextmanager
def open_browser_page(
    tmp_path: Path, *, width: int = 1280, height: int = 900
) -> Iterator[BrowserPage]:
    """A fresh headless Chromium (own profile) with one page of ``width`` x ``height``."""
    binary = chromium()
    profile = tmp_path / "cdp-profile"
    profile.mkdir(exist_ok=True)
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    flags = [
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
        "--remote-debugging-pipe",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    # file descriptors 3 and 4 are where --remote-debugging-pipe expects its pipe
    command = [
        "bash",  # (dash cannot redirect descriptors above 9)
        "-c",
        f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}',
        binary,
        *flags,
    ]
    process = subprocess.Popen(
        command,
        pass_fds=(to_browser_r, from_browser_w),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_browser_r)
    os.close(from_browser_w)
    try:
        page = BrowserPage(to_browser_w, from_browser_r)
        page.attach(width, height)
        yield page
    finally:
        os.close(to_browser_w)
        os.close(from_browser_r)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
