"""LineBudget: a line per event up to a limit a second, the rest counted in one line."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from keycard_agents._logs import LineBudget


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lines() -> Iterator[_Lines]:
    handler = _Lines()
    logger = logging.getLogger("tests.budget")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield handler
    logger.removeHandler(handler)


def _budget(per_second: int, now: list[float]) -> LineBudget:
    return LineBudget(
        logging.getLogger("tests.budget"),
        per_second=per_second,
        what="events",
        clock=lambda: now[0],
    )


def test_lines_beyond_the_limit_are_counted_and_reported_with_the_next_allowed(
    lines: _Lines,
) -> None:
    now = [100.2]
    budget = _budget(3, now)
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    assert lines.lines == ["more than 3 events this second: the rest are counted, not logged"]
    now[0] = 100.9  # the same second: still refused, counted
    assert budget.take() is False
    now[0] = 107.0  # seconds later: the count comes first, then a fresh budget
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    assert lines.lines[1:] == [
        "events without a line (over 3 a second): 3; the audit trail has each",
        "more than 3 events this second: the rest are counted, not logged",
    ]
    now[0] = 108.0
    assert budget.take() is True
    assert lines.lines[3:] == [
        "events without a line (over 3 a second): 1; the audit trail has each"
    ]


def test_a_second_within_the_limit_logs_every_line_and_no_count(lines: _Lines) -> None:
    now = [5.0]
    budget = _budget(2, now)
    for second in range(5):
        now[0] = 5.0 + second
        assert [budget.take(), budget.take()] == [True, True]
    assert lines.lines == []


def test_a_zero_budget_logs_only_the_counts(lines: _Lines) -> None:
    now = [1.0]
    budget = _budget(0, now)
    assert not any(budget.take() for _ in range(4))
    assert lines.lines == []
    now[0] = 2.0
    assert budget.take() is False
    assert lines.lines == ["events without a line (over 0 a second): 4; the audit trail has each"]


def test_a_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="0 or more"):
        LineBudget(logging.getLogger("tests.budget"), per_second=-1, what="events")
