"""Run every keycard-agents benchmark and write JSON results, a Markdown report and charts.

    python3 benchmarks/run.py            # full run, under 10 minutes on 2 cores
    python3 benchmarks/run.py --quick    # smoke run, under 1 minute

Bootstraps what it needs: a virtualenv (the repository's ``.venv`` when it exists, else
``.venv-bench``) with keycard-agents, its dev extras and the benchmark-only packages
(matplotlib, py-spy), and ``wrk`` from the system packages (``apt-get install -y wrk``).
Then it re-runs itself inside that environment. ``--no-bootstrap`` skips all of this:
what is missing is reported as skipped (wrk) or left out (charts without matplotlib).

Every server binds 127.0.0.1 on a free port; every load run lasts a fixed time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BENCH_PACKAGES = ["matplotlib>=3.7", "py-spy>=0.3"]
FIGURES = ("verify", "http", "sts", "chain", "memory", "abuse", "connections")


# ----------------------------------------------------------------------------- bootstrap


def _venv_python() -> Path:
    for name in (".venv", ".venv-bench"):
        python = REPO / name / "bin" / "python"
        if python.exists():
            return python
    target = REPO / ".venv-bench"
    print(f"creating {target} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    return target / "bin" / "python"


def _has(python: Path, module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(python), "-c", probe], check=False).returncode == 0


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "-q", *args], check=True)


def _ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    apt = shutil.which("apt-get")
    if apt is None:
        print("wrk is missing and apt-get is not available: install wrk yourself", flush=True)
        return
    print("installing wrk (apt-get install -y wrk) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run([apt, "install", "-y", "wrk"], env=env, check=False).returncode != 0:
        subprocess.run([apt, "update"], env=env, check=False)
        subprocess.run([apt, "install", "-y", "wrk"], env=env, check=False)


def bootstrap(argv: list[str]) -> int:
    python = _venv_python()
    if not _has(python, "keycard_agents") or not _has(python, "a2a"):
        print("installing keycard-agents with its dev extras ...", flush=True)
        _pip(python, "-e", f"{REPO}[dev]")
    missing = []
    if not _has(python, "matplotlib"):
        missing.append(BENCH_PACKAGES[0])
    if not (python.parent / "py-spy").exists():
        missing.append(BENCH_PACKAGES[1])
    if missing:
        print(f"installing benchmark-only packages: {', '.join(missing)} ...", flush=True)
        _pip(python, *missing)
    _ensure_wrk()
    command = [str(python), str(Path(__file__).resolve()), "--no-bootstrap", *argv]
    return subprocess.run(command, check=False).returncode


# ----------------------------------------------------------------------------- running


def _run_figures(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH_DIR))
    from _common import Plan, machine_info
    from _issuer import BenchIssuer

    work = Path(tempfile.mkdtemp(prefix="keycard-bench-"))
    plan = Plan.make(quick=args.quick, work=work, out=out)
    started = time.monotonic()
    results: dict[str, Any] = {
        "command": "python3 benchmarks/run.py"
        + (" --quick" if args.quick else "")
        + (" --provisional" if args.provisional else ""),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "provisional": args.provisional,
        "machine": machine_info(),
        "plan": {
            "repetitions": plan.reps,
            "load_seconds_per_run": plan.duration,
            "connections": plan.connections,
        },
        "figures": {},
        "skipped": {},
        "errors": {},
    }
    wanted = [f for f in FIGURES if not args.only or f in args.only]
    has_wrk = shutil.which("wrk") is not None
    issuer = BenchIssuer()
    for name in wanted:
        if name in ("http", "sts") and not has_wrk:
            results["skipped"][name] = "wrk is not installed (run without --no-bootstrap)"
            plan.log(f"{name}: skipped, wrk is not installed")
            continue
        plan.log(f"figure {name} ...")
        t0 = time.monotonic()
        try:
            module = __import__(f"bench_{name}")
            if name in ("verify", "http"):
                results["figures"][name] = module.run(plan, issuer)
            else:
                results["figures"][name] = module.run(plan)
        except Exception as exc:
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
            plan.log(f"{name} FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        plan.log(f"figure {name} took {time.monotonic() - t0:.0f} s")
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: benchmarks/results; a temporary directory with --quick)",
    )
    parser.add_argument("--no-bootstrap", action="store_true", help="use this interpreter as is")
    parser.add_argument(
        "--only", nargs="*", choices=FIGURES, help="run only these figures (default: all)"
    )
    parser.add_argument(
        "--provisional",
        action="store_true",
        help="mark the report provisional (figures taken on a busy machine)",
    )
    args = parser.parse_args(argv)
    if not args.no_bootstrap:
        return bootstrap(argv)
    default = Path(tempfile.gettempdir()) / "keycard-bench-quick" if args.quick else None
    out: Path = args.out or default or BENCH_DIR / "results"
    out.mkdir(parents=True, exist_ok=True)
    results = _run_figures(args, out)
    if args.only:
        results["command"] += " --only " + " ".join(args.only)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    sys.path.insert(0, str(BENCH_DIR))
    from report import write_report

    report = write_report(results, out)
    print(f"wrote {out / 'results.json'} and {report} in {results['wall_seconds']:.0f} s")
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed: the report has no charts", flush=True)
    print(f"command: {results['command']}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
