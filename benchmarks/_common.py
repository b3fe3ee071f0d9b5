"""Shared plumbing for the benchmarks: statistics, loopback servers, the wrk driver.

Every server is a separate process on a free 127.0.0.1 port; every wait and every load run
is bounded in time. Nothing here talks to anything but loopback.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
LUA_SCRIPT = BENCH_DIR / "wrk_post.lua"
HOST = "127.0.0.1"


# ----------------------------------------------------------------------------- statistics


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median over repeated runs with its spread (min, max) and every run's value."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "runs": vals,
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# ----------------------------------------------------------------------------- processes


def user_token(store: Any, *, issuer: str, audience: str, client_id: str) -> str:
    """A user token for the benchmarks' token services, signed with their own key store,
    valid for an hour and naming ``client_id`` as the agent that may act first."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": "alice",
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
        "scope": "read write",
        "txn": uuid.uuid4().hex,
        "may_act": {"sub": client_id},
    }
    return str(store.current.sign(claims, typ="at+jwt"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


#: How long a server may take to answer after its process starts. Figures start up to 11
#: processes at once; on a loaded two-core machine (load 15 seen in a full test run) their
#: imports alone took over 30 s, so the bound is generous: it only catches a hung start.
START_TIMEOUT = 120.0


def wait_until_up(
    url: str, process: subprocess.Popen[bytes], *, timeout: float = START_TIMEOUT
) -> None:
    """Poll ``url`` (GET) until the server answers at all; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server process exited with code {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not come up within {timeout:.0f} s")


@dataclass
class ServerSpec:
    name: str
    argv: Sequence[str]
    port: int
    probe: str = "/"


@contextmanager
def running_servers(specs: Sequence[ServerSpec], *, log_dir: Path) -> Iterator[dict[str, Server]]:
    """Start every server at once, wait until each answers, stop them all afterwards."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    servers: dict[str, Server] = {}
    try:
        for spec in specs:
            log = log_dir / f"server-{spec.name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    list(spec.argv), stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env
                )
            servers[spec.name] = Server(name=spec.name, port=spec.port, process=process, log=log)
        for spec in specs:
            server = servers[spec.name]
            try:
                wait_until_up(server.url + spec.probe, server.process)
            except RuntimeError as exc:
                tail = server.log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{spec.name}: {exc}\n{tail}") from exc
        yield servers
    finally:
        for server in servers.values():
            server.process.terminate()
        for server in servers.values():
            try:
                server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(timeout=10)


@contextmanager
def running_server(
    name: str, argv: Sequence[str], *, port: int, log_dir: Path, probe: str = "/"
) -> Iterator[Server]:
    """Start one server (see :func:`running_servers`)."""
    with running_servers([ServerSpec(name, argv, port, probe)], log_dir=log_dir) as servers:
        yield servers[name]


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line")


# ----------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    requests_per_sec: float
    requests: int
    errors: int
    non_2xx: int
    reused: int
    p50_ms: float
    p99_ms: float
    duration_s: float
    p90_ms: float = 0.0
    max_ms: float = 0.0
    loadavg: tuple[float, float] = (0.0, 0.0)
    #: Server CPU time (user + system) per request, when the server's pid was given: a
    #: figure that other work on the machine disturbs far less than throughput.
    server_cpu_us: float | None = None
    raw: str = field(repr=False, default="")

    def describe(self) -> str:
        """One log line: throughput, p50/p90/p99/max and the load average around the run."""
        return (
            f"{self.requests_per_sec:8.0f}/s p50 {self.p50_ms:6.2f} p90 {self.p90_ms:6.2f} "
            f"p99 {self.p99_ms:6.2f} max {self.max_ms:7.2f} ms "
            f"bad {self.non_2xx + self.errors} load {self.loadavg[0]:.2f}->{self.loadavg[1]:.2f}"
            + ("" if self.server_cpu_us is None else f" cpu/req {self.server_cpu_us:.0f} us")
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests_per_sec": self.requests_per_sec,
            "requests": self.requests,
            "errors": self.errors,
            "non_2xx": self.non_2xx,
            "reused": self.reused,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "p90_ms": self.p90_ms,
            "max_ms": self.max_ms,
            "duration_s": self.duration_s,
            "loadavg_1min": list(self.loadavg),
            "server_cpu_us_per_request": self.server_cpu_us,
        }


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Read wrk's ``--latency`` report (and our Lua ``done`` line)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    p90 = re.search(r"^\s+90%\s+(\S+)", output, re.MULTILINE)
    latency = re.search(r"^[ \t]+Latency[ \t]+\S+[ \t]+\S+[ \t]+(\S+)", output, re.MULTILINE)
    if not (rps and total and p50 and p99):
        raise RuntimeError("unexpected wrk output:\n" + output[-2000:])
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    lua_bad = re.search(r"^bench-status-errors (\d+)", output, re.MULTILINE)
    lua_reused = re.search(r"^bench-reused (\d+)", output, re.MULTILINE)
    n_errors = sum(int(g) for g in errors.groups()) if errors else 0
    bad = int(non_2xx.group(1)) if non_2xx else 0
    if lua_bad:
        bad = max(bad, int(lua_bad.group(1)))
    return WrkResult(
        requests_per_sec=float(rps.group(1)),
        requests=int(total.group(1)),
        errors=n_errors,
        non_2xx=bad,
        reused=int(lua_reused.group(1)) if lua_reused else 0,
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        p90_ms=_ms(p90.group(1)) if p90 else 0.0,
        max_ms=_ms(latency.group(1)) if latency else 0.0,
        duration_s=_ms(total.group(2) + total.group(3)) / 1e3,
        raw=output,
    )


def wrk(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int = 1,
    body_file: Path | None = None,
    bodies_file: Path | None = None,
    auth: str | None = None,
    auth_file: Path | None = None,
    content_type: str = "application/json",
    extra_headers: dict[str, str] | None = None,
    expect: str | None = None,
    pid: int | None = None,
) -> WrkResult:
    """Run wrk against ``url`` for ``duration`` seconds with the POST Lua script.

    ``body_file``: one body for every request. ``bodies_file``: one body per line, each used
    once (requests that need a fresh value: a client assertion, a never-seen token).
    ``auth`` or ``auth_file`` (one Authorization value per line, each used once) set the
    Authorization header. ``pid``: the server's process, to measure its CPU time per
    request.
    """
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed (benchmarks/run.py installs it)")
    env = {**os.environ, "BENCH_CONTENT_TYPE": content_type}
    if body_file is not None:
        env["BENCH_BODY_FILE"] = str(body_file)
    if bodies_file is not None:
        env["BENCH_BODIES_FILE"] = str(bodies_file)
    if auth is not None:
        env["BENCH_AUTH"] = auth
    if auth_file is not None:
        env["BENCH_AUTH_FILE"] = str(auth_file)
    env["BENCH_HEADERS"] = json.dumps(extra_headers or {})
    env["BENCH_EXPECT"] = expect or ""
    env["BENCH_THREADS"] = str(threads)
    argv = [
        exe,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    load_before = loadavg()
    cpu_before = cpu_seconds(pid) if pid is not None else None
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=duration + 30, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr[-1000:]}")
    result = parse_wrk(proc.stdout)
    result.loadavg = (load_before, loadavg())
    if pid is not None and cpu_before is not None and result.requests:
        used = (cpu_seconds(pid) or cpu_before) - cpu_before
        result.server_cpu_us = 1e6 * used / result.requests
    return result


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc), else ``None``."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> float:
    """The 1-minute load average (0.0 where the system does not report one)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


# ----------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _wrk_version() -> str | None:
    exe = shutil.which("wrk")
    if exe is None:
        return None
    proc = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (proc.stdout or proc.stderr).strip().splitlines()
    return first[0] if first else None


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and the versions of everything measured."""
    packages = [
        "keycard-agents",
        "a2a-sdk",
        "fastapi",
        "starlette",
        "uvicorn",
        "httpx",
        "pydantic",
        "joserfc",
        "cryptography",
        "anyio",
        "matplotlib",
    ]
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": _mem_total(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": {p: _version(p) for p in packages},
        "wrk": _wrk_version(),
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


# ----------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """How much to measure: ``--quick`` shrinks every count and duration."""

    quick: bool
    work: Path
    out: Path
    reps: int
    duration: float
    warmup: float
    connections: int = 32

    @classmethod
    def make(cls, *, quick: bool, work: Path, out: Path) -> Plan:
        if quick:
            return cls(quick=True, work=work, out=out, reps=1, duration=1.0, warmup=0.0)
        return cls(quick=False, work=work, out=out, reps=3, duration=5.0, warmup=1.0)

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def py_spy() -> str | None:
    """The py-spy binary of this environment (a benchmark-only dependency), if installed."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def profile_under_load(pid: int, seconds: float, out: Path, load: Any) -> dict[str, Any] | None:
    """Sample ``pid`` with py-spy while ``load()`` runs; the summarized top frames."""
    exe = py_spy()
    if exe is None:
        return None
    from _profile import summarize_profile

    argv = [exe, "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", "200"]
    argv += ["-f", "raw", "-o", str(out), "--nonblocking"]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        load()
    finally:
        try:
            spy.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(timeout=10)
    if not out.exists():
        return None
    return summarize_profile(out, top=20)
