"""Parsing untrusted JSON with bounds: the one parser for everything a peer sends us.

RFC 8259 §9 lets a parser limit the size of texts, the depth of nesting and the range
and precision of numbers; §6 has no ``NaN`` or ``Infinity``. Python's ``json`` module
accepts ``NaN``/``Infinity``, turns ``1e999`` into ``inf`` and only stops deep nesting
with a ``RecursionError`` (about 1,000 levels, less on a deep stack), so every parser of
input from outside the process (token headers and payloads, A2A request bodies of both
bindings, answers of other agents and issuers) goes through :func:`loads_bounded`,
which raises one documented error, :class:`JsonLimitError`, for all of these.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

__all__ = ["DEFAULT_MAX_DEPTH", "JsonLimitError", "loads_bounded"]

#: Deepest nesting of arrays and objects accepted (the top-level value is level 1).
DEFAULT_MAX_DEPTH = 64

Problem = Literal["syntax", "size", "depth", "number"]


class JsonLimitError(ValueError):
    """The text is not JSON, or is JSON beyond a limit.

    ``problem`` says which: ``syntax`` (not JSON, including ``NaN``/``Infinity``),
    ``size`` (more bytes than allowed), ``depth`` (nested deeper than allowed) or
    ``number`` (a number no finite double can hold). The message never quotes the input.
    """

    def __init__(self, message: str, *, problem: Problem) -> None:
        super().__init__(message)
        self.problem: Problem = problem


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonLimitError("a number is too large to represent (RFC 8259 §6)", problem="number")
    return value


def _no_constant(name: str) -> Any:
    raise JsonLimitError(f"{name} is not a JSON value (RFC 8259 §6)", problem="syntax")


def _too_deep(max_depth: int) -> JsonLimitError:
    return JsonLimitError(
        f"JSON nested deeper than {max_depth} levels of arrays and objects", problem="depth"
    )


def _check_depth(value: Any, max_depth: int) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise _too_deep(max_depth)
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def _check_strings(value: Any) -> None:
    """A lone surrogate (``"\\ud800"``) parses but cannot be encoded back to UTF-8."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise JsonLimitError(
                    "a string holds an unpaired UTF-16 surrogate (RFC 8259 §8.2)",
                    problem="syntax",
                ) from None
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _has_surrogate_escape(data: bytes | str) -> bool:
    if isinstance(data, str):
        return _SURROGATE_ESCAPE.search(data) is not None
    return _SURROGATE_ESCAPE_BYTES.search(data) is not None


def _openers(data: bytes | str) -> int:
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return data.count(b"[") + data.count(b"{")


def _no_bom(text: str) -> str:
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return text


_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant)


def _loads(data: bytes | str) -> Any:
    """``json.loads(data, parse_float=..., parse_constant=...)`` with one decoder made
    once (``json.loads`` makes a new one per call when given options)."""
    if isinstance(data, str):
        text = _no_bom(data)
    elif isinstance(data, (bytes, bytearray)):
        text = data.decode(json.detect_encoding(data), "surrogatepass")
    else:
        raise TypeError(f"the JSON object must be str or bytes, not {type(data).__name__}")
    return _DECODER.decode(text)


def loads_bounded(
    data: bytes | str, *, max_bytes: int | None = None, max_depth: int = DEFAULT_MAX_DEPTH
) -> Any:
    """Parse ``data`` (UTF-8 bytes or text) as strict JSON within the given bounds.

    Raises :class:`JsonLimitError` and nothing else: never ``RecursionError``, never a
    non-finite float, never ``NaN``/``Infinity``.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise JsonLimitError(f"JSON text over the limit of {max_bytes} bytes", problem="size")
    try:
        value = _loads(data)
    except JsonLimitError:
        raise
    except RecursionError:
        raise _too_deep(max_depth) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise JsonLimitError(f"not valid JSON: {exc.msg} at {where}", problem="syntax") from None
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError, an integer of 4,300+ digits
        raise JsonLimitError(f"not valid JSON ({type(exc).__name__})", problem="syntax") from None
    if isinstance(value, (dict, list)) and _openers(data) > max_depth:
        _check_depth(value, max_depth)
    if _has_surrogate_escape(data):
        _check_strings(value)
    return value
