"""The check that a text shows no token: ``assert_no_token(text)``.

A token in our output is a compact JWS: a base64url JSON header, a dot, a base64url JSON
payload, both starting ``eyJ`` (``{"``). A bare ``"eyJ" not in text`` also trips on key
ids (RFC 7638 thumbprints, 43 random base64url characters) that happen to hold those
three letters, about once in 6,000 keys; audit records, logs and error messages name
key ids, so the check looks for the shape of a token instead.
"""

from __future__ import annotations

import re

__all__ = ["JWS_SHAPE", "assert_no_token"]

#: A compact JWS or JWT: a JSON header segment, a dot, a JSON payload segment.
JWS_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]*\.eyJ")


def assert_no_token(text: str) -> None:
    """Fail, without showing it, when ``text`` holds something shaped like a token."""
    found = JWS_SHAPE.search(text)
    if found is not None:
        raise AssertionError(
            f"a token-shaped value at offset {found.start()} of a {len(text)}-character text"
        )
