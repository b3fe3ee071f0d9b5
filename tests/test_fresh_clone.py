"""The README's two commands, from a fresh clone: the demo completes and the test command
sets itself up and runs.

This clones the repository's committed HEAD into a temporary directory and runs
``python3 scripts/dev.py demo`` there (which creates the clone's own virtual environment,
exactly as a newcomer's first command does), then ``python3 scripts/dev.py test`` on a
small smoke subset: the whole suite is what the outer test command is already running, so
running it again here would only double the time and count every failure twice. The inner
run sets ``KEYCARD_INNER_CLONE`` so that it does not clone again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INNER = "KEYCARD_INNER_CLONE"
# a few fast files that import the whole package, build agents and run a chain in process
SMOKE = (
    "tests/test_public_api.py",
    "tests/_agent/test_agent.py",
    "tests/_delegation/test_delegation_chain.py",
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get(INNER) == "1", reason="already inside the fresh-clone run"),
]


def _environment(**extra: str) -> dict[str, str]:
    """The caller's environment without this checkout's virtual environment."""
    environment = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    path = environment.get("PATH", "").split(os.pathsep)
    environment["PATH"] = os.pathsep.join(p for p in path if not p.startswith(str(ROOT)))
    environment.update(extra)
    return environment


@pytest.mark.timeout(1200)
def test_readme_commands_work_from_a_fresh_clone(tmp_path: Path) -> None:
    git = shutil.which("git")
    assert git is not None, "git is needed to clone the repository"
    assert (ROOT / ".git").exists(), "the fresh-clone check needs a git checkout"
    clone = tmp_path / "fresh"
    subprocess.run([git, "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    outside = _environment()
    python3 = shutil.which("python3", path=outside["PATH"])
    assert python3 is not None, "the README's commands need python3 on PATH"

    demo = subprocess.run(
        [python3, "scripts/dev.py", "demo"],
        cwd=clone,
        env=outside,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
    assert "alice → planner" in demo.stdout
    assert "Delegation tree" in demo.stdout
    assert (clone / ".venv").is_dir()

    suite = subprocess.run(
        [python3, "scripts/dev.py", "test", *SMOKE, "-q", "-p", "no:cacheprovider"],
        cwd=clone,
        env=_environment(**{INNER: "1"}),
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = suite.stdout[-4000:] + suite.stderr[-2000:]
    assert suite.returncode == 0, tail
    assert " passed" in suite.stdout, tail
    assert " failed" not in suite.stdout, tail
    assert "slowest" in suite.stdout, tail  # the test command reports its slowest tests
