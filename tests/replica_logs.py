"""A pytest plugin (tests/conftest.py): when a test that drives replica processes fails,
its report carries their logs.

The processes log to files in the test's temporary directory, which later runs delete;
a failure seen under load (an agent answering -32603, say) is only diagnosable with the
server-side traceback, so the tail of every process's log goes into the failure report.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from typing import Any

import pytest

#: How much of each process's log the report keeps (the end, where a failure is).
LOG_TAIL_CHARS = 4000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    deployment = getattr(item, "funcargs", {}).get("replicas")
    processes = sys.modules.get("replica_processes")  # imported by the tests that use it
    if report.failed and processes is not None and isinstance(deployment, processes.Replicas):
        for process in deployment.all():
            text = process.log.read_text(errors="replace") if process.log.exists() else ""
            report.sections.append((f"log of {process.name}", text[-LOG_TAIL_CHARS:]))
