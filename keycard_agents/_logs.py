"""Log lines that a caller cannot forge: control characters are escaped in every value.

A logged value often comes from a request (a ``grant_type``, a client id, a path). A
value holding a line break (``%0A`` once decoded) would otherwise start what looks like
a new, genuine log line (CWE-117, OWASP "Log Injection"). Every logger of the library is
made by :func:`get_logger`, whose filter escapes C0 and C1 control characters, DEL and
the Unicode line and paragraph separators in the message and in each of its arguments,
as ``\\xNN`` / ``\\uNNNN``, before any handler formats the record. The serve paths
install the same filter on the HTTP servers' own loggers (:func:`escape_logger`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["escape_control", "escape_logger", "get_logger"]

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``text`` with every control character written as an escape (one line, always)."""
    return _CONTROL.sub(_escape_char, text)


def _escape_value(value: Any) -> Any:
    if isinstance(value, str):
        return escape_control(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    return escape_control(text) if _CONTROL.search(text) else value


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
