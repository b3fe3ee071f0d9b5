"""Shared test setup: every async test runs on asyncio and on trio, and no test module
signs a token at import time (see ``import_time_guard``)."""

from __future__ import annotations

import pytest
from import_time_guard import pytest_collection as pytest_collection
from import_time_guard import pytest_configure as pytest_configure

#: Real Redis servers (single and Cluster) for the tests that ask for them; the logs of
#: replica processes in the report of a test that fails with them.
pytest_plugins = ["redis_support", "replica_logs"]


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
