"""RFC 8785 canonical JSON: the examples of the RFC and ECMAScript number formatting."""

from __future__ import annotations

import math

import pytest

from keycard_agents._jose._jcs import canonicalize

# RFC 8785 Appendix B: IEEE 754 values and their ECMAScript / JCS forms.
NUMBERS = [
    (0.0, "0"),
    (-0.0, "0"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (9007199254740992.0, "9007199254740992"),
    (-9007199254740992.0, "-9007199254740992"),
    (295147905179352830000.0, "295147905179352830000"),
    (1e21, "1e+21"),
    (1e20, "100000000000000000000"),
    (1e-7, "1e-7"),
    (1e-6, "0.000001"),
    (333333333.3333333, "333333333.3333333"),
    (0.000001234, "0.000001234"),
    (1.5e-7, "1.5e-7"),
    (4.5, "4.5"),
    (0.002, "0.002"),
    (1e23, "1e+23"),
    (-1.25e-10, "-1.25e-10"),
    # Each bound of ECMAScript's Number::toString, from both sides.
    (0.5, "0.5"),
    (-0.25, "-0.25"),
    (4.0, "4"),
    (12.5, "12.5"),
    (123456789012345680000.0, "123456789012345680000"),
    (1.2345678901234568e21, "1.2345678901234568e+21"),
    (0.0000015, "0.0000015"),
    (1.5e300, "1.5e+300"),
]


@pytest.mark.parametrize(("value", "expected"), NUMBERS)
def test_numbers_as_ecmascript_prints_them(value: float, expected: str) -> None:
    assert canonicalize(value) == expected.encode()


def test_members_sort_by_utf16_code_units_and_strings_escape_minimally() -> None:
    # RFC 8785 §3.2.3 sorting example, and §3.2.2.2 string escaping.
    data = {"\u20ac": "Euro", "\r": "CR", "\ufb33": "Hebrew", "1": "One", "\U0001f600": "Smiley"}
    data |= {"\u0080": "Control", "\u00f6": "Latin"}
    out = canonicalize(data).decode()
    expected_order = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    positions = [out.index('"\\r"') if k == "\r" else out.index(f'"{k}"') for k in expected_order]
    assert positions == sorted(positions)
    assert canonicalize({"s": 'a\u000fb"\\/\u2028'}) == '{"s":"a\\u000fb\\"\\\\/\u2028"}'.encode()
    assert canonicalize([True, None, {"b": 1, "a": [1, 2.5]}]) == b'[true,null,{"a":[1,2.5],"b":1}]'


def test_literals_and_integers() -> None:
    assert canonicalize([False, True, None, 0, -7, 10**30]) == (
        b"[false,true,null,0,-7,1000000000000000000000000000000]"
    )
    assert canonicalize({"\u00e9": "\u00fc", "": [], "e": {}}) == (
        '{"":[],"e":{},"\u00e9":"\u00fc"}'.encode()
    )


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match=r"^NaN and Infinity") as refused:
        canonicalize({"x": [value]})
    assert str(refused.value) == "NaN and Infinity are not JSON (RFC 8785 §3.2.2.3)"


def test_values_that_are_not_json_are_refused() -> None:
    with pytest.raises(TypeError) as refused:
        canonicalize({"when": object()})
    assert str(refused.value) == "object is not JSON"
    with pytest.raises(TypeError) as refused:
        canonicalize([{1, 2}])
    assert str(refused.value) == "set is not JSON"
    for names in ({1: "a"}, {"a": 1, 2: "b"}, {b"a": 1}):
        with pytest.raises(TypeError) as refused:
            canonicalize(names)
        assert str(refused.value) == "JSON object member names are strings"
