"""The official a2a-sdk 0.3 in its own virtual environment, for the 0.3 interop tests.

The dev venv holds a2a-sdk 1.x, so the 0.3 SDK lives in ``.venv/a2a03`` (created once,
reinstalled when ``interop_a2a03/requirements.txt`` changes) and its client and server
run as subprocesses. ``scripts/dev.py test`` prepares it too, so a fresh clone's test run
does not pay for it inside a test's time limit.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "interop_a2a03"
REQUIREMENTS = SCRIPTS / "requirements.txt"
VENV = ROOT / ".venv" / "a2a03"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / "installed-requirements.sha256"


def ensure_a2a03_venv(*, timeout: float = 300) -> Path:
    """The 0.3 venv's Python, creating the venv and installing the SDK when needed."""
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return PYTHON
    if not PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=timeout)
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
        check=True,
        timeout=timeout,
    )
    STAMP.write_text(wanted)
    return PYTHON


if __name__ == "__main__":
    print(ensure_a2a03_venv())
