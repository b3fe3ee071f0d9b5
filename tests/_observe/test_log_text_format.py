"""The command line's text log format: the same lines as ``logging.Formatter``, cheaper."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keycard_agents._logs import configure_logging, escape_control, get_logger, lean_log_records


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


_CONTROL_CHARS = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.one_of(st.characters(), st.sampled_from(_CONTROL_CHARS))))
def test_escaping_is_the_pattern_substitution_for_any_text(text: str) -> None:
    # escape_control skips the substitution for printable text; the result must be what
    # the substitution alone gives, for every text (including non-printable, non-control
    # characters such as U+00A0 or unassigned code points, which stay as they are).
    expected = re.sub(
        "[\x00-\x1f\x7f-\x9f\u2028\u2029]",
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
        ),
        text,
    )
    assert escape_control(text) == expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Path("/srv/a\nb"), "/srv/a\\x0ab"),
        (Path("/srv/\u00a0plain"), "/srv/\u00a0plain"),
        (ValueError("x\u2028y"), "x\\u2028y"),
        (42, "42"),
    ],
)
def test_non_text_arguments_are_escaped_only_when_they_hold_control_characters(
    value: object, shown: str, configured: Callable[[str], tuple[logging.Handler, io.StringIO]]
) -> None:
    _, stream = configured("text")
    get_logger("keycard_agents.test").info("value %s", value)
    assert stream.getvalue().rstrip("\n").endswith(f": value {shown}")
