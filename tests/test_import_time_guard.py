"""The import-time guard refuses a token signed at import and lets a fixture sign one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent

AT_IMPORT = """
from joserfc import jwt
from joserfc.jwk import OctKey

KEY = OctKey.generate_key(256)
TOKEN = jwt.encode({"alg": "HS256"}, {"sub": "alice"}, KEY)


def test_uses_the_token() -> None:
    assert TOKEN
"""

IN_FIXTURE = """
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

KEY = OctKey.generate_key(256)


@pytest.fixture
def token() -> str:
    return jwt.encode({"alg": "HS256"}, {"sub": "alice"}, KEY)


def test_uses_the_token(token: str) -> None:
    assert token.count(".") == 2
"""


def _pytest(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_module.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    command = [sys.executable, "-m", "pytest", "-p", "import_time_guard", "-q", "-p", "no:cov"]
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_token_signed_at_import_fails_collection(tmp_path: Path) -> None:
    result = _pytest(tmp_path, AT_IMPORT)
    assert result.returncode != 0, result.stdout
    assert "ImportTimeTokenError" in result.stdout
    assert "test_module.py:6" in result.stdout
    assert "mint it in a fixture or inside the test" in result.stdout


def test_a_token_signed_in_a_fixture_passes(tmp_path: Path) -> None:
    result = _pytest(tmp_path, IN_FIXTURE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
