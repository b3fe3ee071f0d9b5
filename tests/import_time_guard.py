"""A pytest plugin: no token may be signed while test modules are imported.

A token signed at import (a module-level ``ALICE = bearer(minter.token(...))``) starts its
lifetime when pytest collects the suite, not when the test runs; on a busy machine, or
after a slow test before it, it has expired by then. Every JWT and JWS in this suite is
signed by joserfc, so while pytest collects (which is when test modules are imported),
``joserfc.jwt.encode`` and ``joserfc.jws.serialize_compact`` refuse to sign and name the
module at fault. Mint tokens in fixtures or in the test itself.

Registered by ``tests/conftest.py``; ``tests/test_import_time_guard.py`` checks that it
catches the mistake.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable, Generator
from typing import Any

import joserfc.jws
import joserfc.jwt
import pytest

_collecting = False
_PATCHED = "_keycard_import_guard"


class ImportTimeTokenError(RuntimeError):
    """A token was signed while a test module was being imported."""


def _guard(sign: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(sign, _PATCHED, False):
        return sign

    @functools.wraps(sign)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if _collecting:
            modules = [f for f in traceback.extract_stack()[:-1] if f.name == "<module>"]
            where = f"{modules[-1].filename}:{modules[-1].lineno}" if modules else "an import"
            raise ImportTimeTokenError(
                f"a token was signed at import time ({where}); it would expire before its "
                "test runs on a slow machine: mint it in a fixture or inside the test"
            )
        return sign(*args, **kwargs)

    setattr(guarded, _PATCHED, True)
    return guarded


def pytest_configure(config: pytest.Config) -> None:
    joserfc.jwt.encode = _guard(joserfc.jwt.encode)
    joserfc.jws.serialize_compact = _guard(joserfc.jws.serialize_compact)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, object, object]:
    global _collecting
    _collecting = True
    try:
        return (yield)
    finally:
        _collecting = False
