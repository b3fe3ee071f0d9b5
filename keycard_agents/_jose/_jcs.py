"""The JSON Canonicalization Scheme (RFC 8785), what agent card signatures are computed over.

RFC 8785 §3.2: no whitespace; object members sorted by their names as UTF-16 code units
(§3.2.3); strings escaped as ECMAScript's ``JSON.stringify`` does (§3.2.2.2: only ``"``,
``\\``, and control characters, the latter as ``\\b \\t \\n \\f \\r`` or ``\\u00xx``);
numbers as ECMAScript's ``Number.prototype.toString`` (§3.2.2.3: the shortest digits that
round-trip, plain notation for exponents from -7 to 20, else ``d.ddde±x``). NaN and the
infinities are not JSON and are refused.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

__all__ = ["canonicalize"]


def _number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise ValueError("NaN and Infinity are not JSON (RFC 8785 §3.2.2.3)")
    sign = "-" if value < 0 else ""  # -0 prints as 0
    # repr gives the shortest round-tripping digits; rewrite them the ECMAScript way
    # (ECMA-262 Number::toString): the value is 0.DIGITS times 10 ** point, DIGITS k long.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    k = len(digits)
    point = k + int(exponent)
    if point > 21 or point <= -6:
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        return f"{sign}{mantissa}e{point - 1:+d}"
    if point >= k:
        return sign + digits + "0" * (point - k)
    if point > 0:
        return sign + digits[:point] + "." + digits[point:]
    return sign + "0." + "0" * (-point) + digits


def _serialize(value: Any, out: list[str]) -> None:
    if value is None or value is True or value is False:
        out.append(json.dumps(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, dict):
        out.append("{")
        if not all(isinstance(name, str) for name in value):
            raise TypeError("JSON object member names are strings")
        members = sorted(value.items(), key=lambda item: item[0].encode("utf-16-be"))
        for index, (name, member) in enumerate(members):
            if index:
                out.append(",")
            out.append(json.dumps(name, ensure_ascii=False))
            out.append(":")
            _serialize(member, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _serialize(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not JSON")


def canonicalize(value: Any) -> bytes:
    """``value`` (JSON data: dict, list, str, int, float, bool, None) as RFC 8785 UTF-8."""
    out: list[str] = []
    _serialize(value, out)
    return "".join(out).encode("utf-8")
