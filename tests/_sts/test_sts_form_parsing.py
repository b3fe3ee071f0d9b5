"""The token endpoint's form parser reads and refuses exactly what ``parse_qsl`` (strict,
UTF-8, at most 64 fields, blank values kept) reads and refuses."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keycard_agents._sts._forms import MAX_FIELDS, parse_form


def reference(text: str) -> list[tuple[str, str]] | None:
    try:
        return parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except ValueError:
        return None


def ours(text: str) -> list[tuple[str, str]] | None:
    try:
        return parse_form(text)
    except ValueError:
        return None


PIECES = [
    "a",
    "b",
    "=",
    "&",
    "+",
    "%",
    "%2",
    "%3A",
    "%2F",
    "%20",
    "%C3%A9",
    "%C3",
    "%FF",
    "%zz",
    "x",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12))
def test_parse_form_agrees_with_parse_qsl(pieces: list[str]) -> None:
    text = "".join(pieces)
    for _ in range(2):  # the second time from the remembered decodings
        assert ours(text) == reference(text), text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&resource=https%3A%2F%2Fb",
        "a=1&a=2&b=",
        "a=b=c",
        "&a=1",
        "a=1&",
        "a",
        "=",
        "a=%C3%A9+%2B",
        "a=%E9",
        "&".join(f"f{i}=v" for i in range(MAX_FIELDS)),
        "&".join(f"f{i}=v" for i in range(MAX_FIELDS + 1)),
        "a=" + "%41" * 300,
    ],
)
def test_parse_form_agrees_with_parse_qsl_on_known_cases(text: str) -> None:
    assert ours(text) == reference(text)
    assert ours(text) == reference(text)
