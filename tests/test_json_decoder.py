"""``loads_bounded`` decodes what ``json.loads`` decodes, with one decoder made once."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keycard_agents._json import JsonLimitError, loads_bounded


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1, "b": [1.5, "x"]}',
        '{"a": "\\u00e9"}',
        b"\xef\xbb\xbf[1]",  # a UTF-8 BOM in bytes is read past
        '\ufeff{"a": 1}',  # ... in text it is refused
        '{"a": 1}'.encode("utf-16"),
        '{"a": 1}'.encode("utf-32-le"),
        bytearray(b"[true, null]"),
        b"[1,]",
        b"\xff",
        " 7 ",
        "",
    ],
)
def test_loads_bounded_agrees_with_json_loads(data: Any) -> None:
    try:
        expected = json.loads(data)
    except ValueError:
        with pytest.raises(JsonLimitError):
            loads_bounded(data)
        return
    assert loads_bounded(data) == expected


@pytest.mark.parametrize("data", ["[NaN]", "[1e999]", b'{"a": -Infinity}'])
def test_loads_bounded_still_refuses_non_finite_numbers(data: str | bytes) -> None:
    with pytest.raises(JsonLimitError):
        loads_bounded(data)


def test_loads_bounded_refuses_what_is_not_text() -> None:
    with pytest.raises(JsonLimitError):
        loads_bounded(7)  # type: ignore[arg-type]
