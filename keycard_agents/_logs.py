"""Log lines that a caller cannot forge: control characters are escaped in every value.

A logged value often comes from a request (a ``grant_type``, a client id, a path). A
value holding a line break (``%0A`` once decoded) would otherwise start what looks like
a new, genuine log line (CWE-117, OWASP "Log Injection"). Every logger of the library is
made by :func:`get_logger`, whose filter escapes C0 and C1 control characters, DEL and
the Unicode line and paragraph separators in the message and in each of its arguments,
as ``\\xNN`` / ``\\uNNNN``, before any handler formats the record. The serve paths
install the same filter on the HTTP servers' own loggers (:func:`escape_logger`).

:func:`configure_logging` is what the command line uses: one handler on the
``keycard_agents`` logger, in text or JSON Lines (one object per line, for log
shippers; JSON escapes control characters too). Levels: ``DEBUG`` detail for
development; ``INFO`` one line per token issued (up to a limit a second: beyond it, one
line with the count, see :class:`LineBudget`) or denied, per failed task; ``WARNING``
what an operator should look at (a task failed by a framework error, an unreachable
token service, an audit store that fails); ``ERROR`` a 5xx answer or an unexpected
exception.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import IO, Any

__all__ = [
    "LOG_FIELDS",
    "JsonLogFormatter",
    "LineBudget",
    "configure_logging",
    "escape_control",
    "escape_logger",
    "get_logger",
    "lean_log_records",
]

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``text`` with every control character written as an escape (one line, always)."""
    # Every character the pattern matches is "non-printable" to ``str.isprintable`` (its
    # Unicode category is Cc, Zl or Zp), so a printable text has none: the usual case, told
    # in one pass in C.
    if text.isprintable():
        return text
    return _CONTROL.sub(_escape_char, text)


def _escape_value(value: Any) -> Any:
    if isinstance(value, str):
        return escape_control(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    if text.isprintable() or _CONTROL.search(text) is None:
        return value
    return escape_control(text)


class _EscapeControl(logging.Filter):
    """Escapes control characters in a record's message and arguments (keeps their shape,
    so formatters that read ``record.args``, like uvicorn's access log, still work)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = escape_control(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_escape_value(a) for a in args)
        elif isinstance(args, Mapping):
            record.args = {k: _escape_value(v) for k, v in args.items()}
        return True


_FILTER = _EscapeControl()


def escape_logger(logger: logging.Logger) -> logging.Logger:
    """Install the escaping filter on ``logger`` (once)."""
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def get_logger(name: str) -> logging.Logger:
    """The logger ``name``, with control characters escaped in everything it logs."""
    return escape_logger(logging.getLogger(name))


#: Structured fields a log call may pass in ``extra=``; the JSON format emits them as keys.
LOG_FIELDS = (
    "txn",
    "client_id",
    "agent",
    "task_id",
    "skill",
    "grant_type",
    "error",
    "reason",
    "status",
    "jti",
    "target",
    "path",
)
LOG_FORMAT_ENV = "KEYCARD_LOG_FORMAT"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, the
    structured fields of :data:`LOG_FIELDS` that the call passed, and ``exception`` (its
    type only: a message or traceback could hold request data)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": escape_control(record.getMessage()),
        }
        for name in LOG_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value if isinstance(value, (int, float, bool)) else str(value)
        if record.exc_info and record.exc_info[0] is not None:
            out["exception"] = record.exc_info[0].__name__
        return json.dumps(out, ensure_ascii=True, separators=(",", ":"))


def configure_logging(
    *, level: str | int = "info", fmt: str | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    """Send the library's logs (logger ``keycard_agents``) to ``stream`` (stderr).

    ``fmt`` is ``text`` or ``json`` (default: ``$KEYCARD_LOG_FORMAT``, else ``text``).
    Replaces a handler this function installed before; returns the new one. Records
    still propagate to the root logger's handlers, when an application has any.
    """
    chosen = (fmt or os.environ.get(LOG_FORMAT_ENV) or "text").lower()
    if chosen not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {chosen!r}")
    handler: logging.StreamHandler[Any] = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.setFormatter(JsonLogFormatter() if chosen == "json" else _TextFormatter(_TEXT_FORMAT))
    handler.set_name("keycard_agents")
    root = get_logger("keycard_agents")
    for old in [h for h in root.handlers if h.get_name() == "keycard_agents"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def lean_log_records() -> None:
    """Stop collecting, for every record of this process, what no format of ours shows:
    the caller's file and line (a walk up the stack per record), the thread and process
    names (the logging HOWTO's "Optimization"). For a process that only logs through
    :func:`configure_logging`, such as ``keycard-agents sts``."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class _TextFormatter(logging.Formatter):
    """The text format, with ``asctime`` formatted once per second (the same text)."""

    _second: tuple[int, str] | None = None

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        msec_format = self.default_msec_format
        if datefmt is not None or self.datefmt is not None or msec_format is None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached = self._second
        if cached is None or cached[0] != second:
            text = time.strftime(self.default_time_format, self.converter(record.created))
            cached = self._second = (second, text)
        return msec_format % (cached[1], record.msecs)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is logged."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


class LineBudget:
    """At most ``per_second`` lines of one kind in each second: a log line per event that
    stays readable when the events come by the thousand.

    Ask :meth:`take` before logging such a line. Past the budget, the first refusal of a
    second logs one line saying so, and the first line asked for in a later second is
    preceded by one with the count of lines not logged. ``per_second=0``: no line per
    event, only the counts. Formatting and writing a line costs a busy token service
    about 7 % of an exchange (benchmarks/NOTES.md); a refused line costs a comparison.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        per_second: int,
        what: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_second < 0:
            raise ValueError("per_second must be 0 or more")
        self._logger = logger
        self._limit = per_second
        self._what = what
        self._clock = clock
        self._second = -1
        self._used = 0
        self._skipped = 0

    def take(self) -> bool:
        """Whether a line may be logged now (counted when not)."""
        second = int(self._clock())
        if second != self._second:
            if self._skipped:
                self._logger.info(
                    "%s without a line (over %d a second): %d; the audit trail has each",
                    self._what,
                    self._limit,
                    self._skipped,
                )
            self._second, self._used, self._skipped = second, 0, 0
        if self._used < self._limit:
            self._used += 1
            return True
        if not self._skipped and self._limit:
            self._logger.info(
                "more than %d %s this second: the rest are counted, not logged",
                self._limit,
                self._what,
            )
        self._skipped += 1
        return False
