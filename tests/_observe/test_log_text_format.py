"""The command line's text log format: the same lines as ``logging.Formatter``, cheaper."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator

import pytest

from keycard_agents._logs import configure_logging, get_logger, lean_log_records


@pytest.fixture
def configured() -> Iterator[Callable[[str], tuple[logging.Handler, io.StringIO]]]:
    root = logging.getLogger("keycard_agents")
    saved = root.level
    handlers: list[logging.Handler] = []

    def configure(fmt: str) -> tuple[logging.Handler, io.StringIO]:
        stream = io.StringIO()
        handlers.append(configure_logging(level="info", fmt=fmt, stream=stream))
        return handlers[-1], stream

    try:
        yield configure
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(saved)


@pytest.mark.parametrize(
    "created", [1_700_000_000.0, 1_700_000_000.9996, 1_700_000_001.0004, 0.5, 1_733_460_000.25]
)
def test_text_lines_match_the_standard_formatter(
    created: float, configured: Callable[[str], tuple[logging.Handler, io.StringIO]]
) -> None:
    handler, _ = configured("text")
    reference = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for when in (created, created, created + 1):  # the cached second, then the next
        record = logging.LogRecord("keycard_agents.sts", logging.INFO, "f", 1, "m %s", ("a",), None)
        record.created = when
        record.msecs = (when - int(when)) * 1000
        assert handler.format(record) == reference.format(record)


def test_lean_records_still_log_every_line(
    configured: Callable[[str], tuple[logging.Handler, io.StringIO]],
) -> None:
    saved = (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    _, stream = configured("json")
    try:
        lean_log_records()
        get_logger("keycard_agents.sts").info("issued token jti=%s", "j-1", extra={"jti": "j-1"})
    finally:
        logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing = (
            saved
        )
    assert '"jti":"j-1"' in stream.getvalue()
    assert "issued token jti=j-1" in stream.getvalue()
