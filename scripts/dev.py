#!/usr/bin/env python3
"""Bootstrap and run keycard-agents from a fresh clone.

    python3 scripts/dev.py demo      # the local delegation demo
    python3 scripts/dev.py test      # lint (ruff, ruff format, mypy --strict), then the suite
    python3 scripts/dev.py lint      # only the lint steps
    python3 scripts/dev.py mutation  # mutation testing of the security core (not in CI)

Creates ``.venv`` beside this repository, installs the package with its test
dependencies (again only when ``pyproject.toml`` changed), installs the system
packages the tests use when they are missing, then runs the command.
Extra arguments are passed through (``dev.py test -k sts``). ``mutation`` takes area
names (``dev.py mutation sts jwks``; all areas by default) and ``--resume`` to keep the
results of an earlier run and test only the mutants without one (docs/testing.md).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
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


def ensure_a2a03_venv(env: dict[str, str]) -> None:
    """The official a2a-sdk 0.3 in its own venv (the 0.3 interop tests run it)."""
    say("preparing the a2a-sdk 0.3 venv for the 0.3 interop tests")
    run(
        PYTHON, ROOT / "tests" / "a2a03_support.py", env=env, stdout=subprocess.DEVNULL, timeout=600
    )


# -- mutation testing -------------------------------------------------------------------

#: The mutation tool, pinned: the ``mutation`` extra of pyproject.toml.
MUTATION_TOOL = "mutmut"
#: The security core by area, as mutant-name patterns (module paths; the files are listed
#: in ``[tool.mutmut] only_mutate`` of pyproject.toml).
MUTATION_AREAS: dict[str, tuple[str, ...]] = {
    "jose": ("keycard_agents._jose.*",),
    "sts": ("keycard_agents._sts.*",),
    "jwks": ("keycard_agents._oauth._jwks.*",),
    "bearer": ("keycard_agents._oauth._resource_server.*",),
    "tasks": ("keycard_agents._runtime._store.*",),
}
#: Where the equivalent mutants are listed, one ``- `name`: reason`` line each.
EQUIVALENTS_DOC = ROOT / "docs" / "testing.md"
_EQUIVALENT_LINE = re.compile(r"^- `(keycard_agents\.[\w.]+__mutmut_\d+)`: \S")
#: mutmut's exit codes per mutant, as outcomes (anything else counts as suspicious).
_OUTCOMES = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests"}
_OUTCOMES.update(dict.fromkeys((36, 24, -24, 152, 255), "timeout"))


def equivalent_mutants(doc: Path = EQUIVALENTS_DOC) -> set[str]:
    """The mutants docs/testing.md lists as equivalent (no test can tell them apart)."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    return {m.group(1) for m in map(_EQUIVALENT_LINE.match, lines) if m}


def _mutant_codes(mutants: Path) -> Iterator[tuple[Path, dict[str, int | None]]]:
    """Each ``.py.meta`` file mutmut wrote under ``mutants``, with its exit codes by mutant."""
    for meta in sorted(mutants.rglob("*.py.meta")):
        yield meta, json.loads(meta.read_text(encoding="utf-8")).get("exit_code_by_key", {})


def mutation_results(mutants: Path | None = None) -> dict[str, str]:
    """Every mutant mutmut has made under ``mutants/``, with its outcome."""
    results: dict[str, str] = {}
    for _, codes in _mutant_codes(mutants or ROOT / "mutants"):
        for name, code in codes.items():
            results[name] = "not checked" if code is None else _OUTCOMES.get(code, "suspicious")
    return results


def _in_area(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def mutation_summary(areas: list[str], results: dict[str, str], equivalents: set[str]) -> int:
    """Print killed/survived/timeout per area and the score; 0 when every area is ≥ 95 %."""
    rows, failing, survivors = [], [], []
    totals = {"killed": 0, "timeout": 0, "survived": 0, "other": 0, "equivalent": 0}
    for area in areas:
        names = [n for n in results if _in_area(n, MUTATION_AREAS[area])]
        count = {key: 0 for key in totals}
        for name in names:
            outcome = results[name]
            if name in equivalents:
                key = "equivalent"
            elif outcome in ("killed", "timeout", "survived"):
                key = outcome
            else:
                key = "other"
            count[key] += 1
            if key in ("survived", "other"):
                survivors.append(f"{name} ({outcome})")
        for key in totals:
            totals[key] += count[key]
        rows.append((area, count))
    say("mutation results (equivalent mutants listed in docs/testing.md are left out)")
    for area, count in [*rows, ("total", totals)]:
        counted = count["killed"] + count["timeout"] + count["survived"] + count["other"]
        score = 100.0 * (count["killed"] + count["timeout"]) / counted if counted else 0.0
        if area != "total" and score < 95.0:
            failing.append(area)
        print(
            f"  {area:<7} killed {count['killed']:>5}  timeout {count['timeout']:>3}  "
            f"survived {count['survived']:>4}  untested/suspicious {count['other']:>3}  "
            f"equivalent {count['equivalent']:>3}  score {score:5.1f} %",
            flush=True,
        )
    for line in survivors:
        print(f"  survived: {line}")
    if survivors:
        say("see one with: .venv/bin/mutmut show NAME (run from the repository root)")
    return 1 if failing else 0


def _unchecked(patterns: tuple[str, ...]) -> set[str]:
    """The area's mutants without an outcome (never run, or forgotten after an edit)."""
    return {
        n
        for n, outcome in mutation_results().items()
        if outcome == "not checked" and _in_area(n, patterns)
    }


def edited_since_mutated(patterns: tuple[str, ...]) -> list[str]:
    """One mutant name of each module in the area edited since mutmut made its mutants."""
    names = []
    mutants = ROOT / "mutants"
    for meta, codes in _mutant_codes(mutants):
        copy = meta.with_suffix("")
        source = ROOT / copy.relative_to(mutants)
        ours = sorted(n for n in codes if _in_area(n, patterns))
        if ours and (not source.exists() or source.stat().st_mtime >= copy.stat().st_mtime):
            names.append(ours[0])
    return names


def resume_area(command: list[str], patterns: tuple[str, ...], env: dict[str, str]) -> int:
    """Run, by name, the area's mutants that have no outcome yet.

    mutmut runs again every mutant a name pattern matches, whatever its outcome, so
    ``--resume`` names the mutants instead. A module edited since its mutants were made
    gets one of its mutants named too: that run remakes its mutants and forgets the
    outcomes of the functions that changed, and a second run takes those.
    """
    first = sorted(_unchecked(patterns) | set(edited_since_mutated(patterns)))
    if not first:
        say("nothing left to run in this area")
        return 0
    status = subprocess.call([*command, *first], cwd=ROOT, env=env)
    if status != 0:
        return status
    again = sorted(_unchecked(patterns) - set(first))
    if not again:
        return 0
    return subprocess.call([*command, *again], cwd=ROOT, env=env)


def ensure_mutation_tool(env: dict[str, str]) -> None:
    probe = [str(PYTHON), "-c", f"import {MUTATION_TOOL}"]
    if subprocess.call(probe, stderr=subprocess.DEVNULL, env=env) == 0:
        return
    say("installing the mutation tool (the 'mutation' extra)")
    run(PYTHON, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[{EXTRAS},mutation]")


def mutation(args: list[str], env: dict[str, str]) -> int:
    """Run mutmut over the security core, area by area, then print the summary."""
    resume = "--resume" in args
    areas = [a for a in args if a != "--resume"] or list(MUTATION_AREAS)
    unknown = [a for a in areas if a not in MUTATION_AREAS]
    if unknown:
        say(f"unknown area {', '.join(unknown)}; the areas are {', '.join(MUTATION_AREAS)}")
        return 2
    ensure_mutation_tool(env)
    if not resume:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    # The machine is shared: mutants run at low priority, one per core.
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    jobs = str(max(1, min(2, os.cpu_count() or 1)))
    for area in areas:
        say(f"mutation: {area} ({', '.join(MUTATION_AREAS[area])})")
        command = [*nice, str(BIN / "mutmut"), "run", "--max-children", jobs]
        if resume:
            status = resume_area(command, MUTATION_AREAS[area], env)
        else:
            status = subprocess.call([*command, *MUTATION_AREAS[area]], cwd=ROOT, env=env)
        if status != 0:
            say(f"mutmut stopped with status {status} in area {area}")
            return status
    return mutation_summary(areas, mutation_results(), equivalent_mutants())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "lint", "install", "mutation"}:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_venv()
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    if command == "install":
        return 0
    if command == "mutation":
        return mutation(rest, env)
    if command == "demo":
        exe = BIN / "keycard-agents"
        return subprocess.call([str(exe), "demo", *rest], cwd=ROOT, env=env)
    status = lint(env)
    if command == "lint" or status != 0:
        return status
    ensure_system_packages()
    ensure_node_packages()
    ensure_a2a03_venv(env)
    say("tests: pytest")
    # Coverage of the library is measured on every run and reported above pytest's summary.
    coverage = ["--cov=keycard_agents", "--cov-report=term:skip-covered"]
    # The 20 slowest tests close the report, so a slow test shows up where it is added.
    report = ["--durations=20"]
    pytest = [str(PYTHON), "-m", "pytest", *coverage, *report, *rest]
    return subprocess.call(pytest, cwd=ROOT, env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
