#!/usr/bin/env python3
"""Bootstrap and run keycard-agents from a fresh clone.

    python3 scripts/dev.py demo      # the local delegation demo
    python3 scripts/dev.py test      # lint (ruff, ruff format, mypy --strict), then the suite
    python3 scripts/dev.py lint      # only the lint steps

Creates ``.venv`` beside this repository, installs the package with its test
dependencies (again only when ``pyproject.toml`` changed), installs the system
packages the tests use when they are missing, then runs the command.
Extra arguments are passed through (``dev.py test -k sts``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".keycard-installed"
EXTRAS = "dev,mcp,redis,trio"
# Programs the test suite drives, and the Debian package that provides each.
SYSTEM_PACKAGES = {
    "chromium": "chromium",
    "wrk": "wrk",
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
}
# JavaScript the interop tests run (the A2A JS client, an independent OAuth server): each
# directory pins exact versions in package.json and package-lock.json.
NODE_PROJECTS = ("tests/interop_js", "tests/interop_oidc")


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def run(*args: str | os.PathLike[str], **kwargs: object) -> None:
    subprocess.run([str(a) for a in args], check=True, **kwargs)  # type: ignore[call-overload]


def ensure_venv() -> None:
    if sys.version_info < (3, 10):  # noqa: UP036 (the bootstrap may run on an old Python)
        sys.exit(f"keycard-agents needs Python 3.10 or newer; this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        say(f"creating virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True, upgrade_deps=False).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest() + EXTRAS
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    say("installing keycard-agents and its dependencies (first run takes a minute)")
    run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[{EXTRAS}]")
    STAMP.write_text(wanted)


def ensure_system_packages() -> None:
    missing = sorted({pkg for exe, pkg in SYSTEM_PACKAGES.items() if shutil.which(exe) is None})
    if not missing:
        return
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        say(
            f"missing system packages {', '.join(missing)}: install them (apt-get install -y "
            f"{' '.join(missing)}) or the tests that need them fail in CI and skip elsewhere"
        )
        return
    say(f"installing system packages: {', '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "env": env}
    # Refresh the index first: a stale one installs an old browser that the tests reject.
    run(apt, "update", **quiet)
    run(apt, "install", "-y", "--no-install-recommends", *missing, **quiet)


#: The lint gate, in order: each must pass before the test suite runs.
LINT_STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ruff check", ("-m", "ruff", "check", ".")),
    ("ruff format --check", ("-m", "ruff", "format", "--check", ".")),
    ("mypy --strict keycard_agents tests", ("-m", "mypy", "--strict", "keycard_agents", "tests")),
)


def lint(env: dict[str, str]) -> int:
    """Run every lint step (all of them, so one run shows every problem); 0 when all pass."""
    failed = []
    for name, args in LINT_STEPS:
        say(f"lint: {name}")
        if subprocess.call([str(PYTHON), *args], cwd=ROOT, env=env) != 0:
            failed.append(name)
    if failed:
        say(f"lint FAILED: {', '.join(failed)}; fix these before the tests run")
        return 1
    say("lint passed")
    return 0


def ensure_node_packages() -> None:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        say("node and npm are missing: the JavaScript interop tests will skip")
        return
    for project in NODE_PROJECTS:
        directory = ROOT / project
        if (directory / "node_modules").is_dir():
            continue
        say(f"installing the pinned npm packages of {project}")
        quiet = ["--no-audit", "--no-fund", "--loglevel=error"]
        run(npm, "ci", *quiet, cwd=directory, stdout=subprocess.DEVNULL, timeout=300)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "lint", "install"}:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_venv()
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    if command == "install":
        return 0
    if command == "demo":
        exe = BIN / "keycard-agents"
        return subprocess.call([str(exe), "demo", *rest], cwd=ROOT, env=env)
    status = lint(env)
    if command == "lint" or status != 0:
        return status
    ensure_system_packages()
    ensure_node_packages()
    say("tests: pytest")
    # Coverage of the library is measured on every run and reported above pytest's summary.
    coverage = ["--cov=keycard_agents", "--cov-report=term:skip-covered"]
    # The 20 slowest tests close the report, so a slow test shows up where it is added.
    report = ["--durations=20"]
    pytest = [str(PYTHON), "-m", "pytest", *coverage, *report, *rest]
    return subprocess.call(pytest, cwd=ROOT, env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
