"""benchmarks/bench_replicas.py runs in its quick mode and reports every figure.

No figure is asserted (benchmarks are not tests): only that each ran without errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from redis_support import require_redis

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_replica_benchmark_runs_quickly(tmp_path: Path) -> None:
    require_redis()
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_replicas.py", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text(encoding="utf-8"))
    for name in ("A_send_message", "B_exchanges"):
        for store in ("memory", "redis"):
            assert figures[name][store]["requests"] > 0, (name, store)
            assert figures[name][store]["errors"] == 0, (name, store)
    for run in ("one_replica", "two_replicas"):
        assert figures["C_chains"][run]["requests"] > 0
        assert figures["C_chains"][run]["errors"] == 0
