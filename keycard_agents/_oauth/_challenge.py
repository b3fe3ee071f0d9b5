"""The ``WWW-Authenticate: Bearer`` challenge, read and written in one place.

Implements the challenge syntax of RFC 9110 §11.2 / §11.6.1 (``auth-scheme``, then a
``token68`` or comma-separated ``auth-param``s whose values are a ``token`` or a
``quoted-string`` with ``quoted-pair`` escapes, §5.6.4; several challenges may share one
header) as RFC 6750 §3 uses it for bearer tokens (``realm``, ``scope``, ``error``,
``error_description``, ``error_uri``) and RFC 9728 §5.1 extends it (``resource_metadata``).
"""

from __future__ import annotations

import re

__all__ = ["bearer_challenge", "parse_challenges", "quote"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SPACE = " \t"


def quote(value: str) -> str:
    """``value`` as an RFC 9110 §5.6.4 ``quoted-string`` (``"`` and ``\\`` escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _skip(header: str, i: int, chars: str) -> int:
    while i < len(header) and header[i] in chars:
        i += 1
    return i


def _quoted(header: str, i: int) -> tuple[str, int]:
    """A quoted-string starting at ``header[i] == '"'``: its unescaped value, next index."""
    out: list[str] = []
    i += 1
    while i < len(header):
        char = header[i]
        if char == "\\" and i + 1 < len(header):
            out.append(header[i + 1])
            i += 2
            continue
        if char == '"':
            return "".join(out), i + 1
        out.append(char)
        i += 1
    return "".join(out), i  # unterminated: take what there is


def _param(header: str, i: int) -> tuple[str, str, int] | None:
    """An ``auth-param`` at ``i`` (``name BWS = BWS value``), or ``None`` if there is none."""
    name = _TOKEN.match(header, i)
    if name is None:
        return None
    j = _skip(header, name.end(), _SPACE)
    if j >= len(header) or header[j] != "=":
        return None
    j = _skip(header, j + 1, _SPACE)
    if j < len(header) and header[j] == '"':
        value, j = _quoted(header, j)
    else:
        token = _TOKEN.match(header, j)
        if token is None:
            return None
        value, j = token.group(), token.end()
    return name.group().lower(), value, j


def parse_challenges(header: str | None) -> list[tuple[str, dict[str, str]]]:
    """Every challenge of a ``WWW-Authenticate`` value: ``[(scheme, params), ...]``.

    Schemes and parameter names are lower-cased (both are case-insensitive, RFC 9110
    §11.1 and §11.2); a ``token68`` credential is kept under the name ``""``. Text that
    follows no rule is skipped rather than guessed at.
    """
    challenges: list[tuple[str, dict[str, str]]] = []
    if not header:
        return challenges
    i = 0
    while i < len(header):
        i = _skip(header, i, _SPACE + ",")
        scheme = _TOKEN.match(header, i)
        if scheme is None:
            i += 1
            continue
        params: dict[str, str] = {}
        challenges.append((scheme.group().lower(), params))
        i = _skip(header, scheme.end(), _SPACE)
        first = _param(header, i)
        if first is None:
            token68 = _TOKEN68.match(header, i)
            if token68 is not None and (header[i - 1 : i] in _SPACE):
                params[""] = token68.group()
                i = token68.end()
            continue
        while True:
            found = _param(header, i)
            if found is None:
                break  # the next challenge (a scheme, not a name=value) or the end
            name, value, i = found
            params.setdefault(name, value)
            i = _skip(header, i, _SPACE)
            if i < len(header) and header[i] == ",":
                after = _skip(header, i + 1, _SPACE + ",")
                if _param(header, after) is None:
                    break
                i = after
            else:
                break
    return challenges


def bearer_challenge(header: str | None) -> dict[str, str]:
    """The parameters of the ``Bearer`` challenge in a ``WWW-Authenticate`` value (RFC
    6750 §3), ``{}`` when there is none. Parameters of other schemes are not mixed in."""
    for scheme, params in parse_challenges(header):
        if scheme == "bearer":
            return {k: v for k, v in params.items() if k}
    return {}
