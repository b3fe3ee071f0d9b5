"""Agent Card signatures in the form A2A 0.3 clients verify (a2a-sdk 0.3.x).

A 0.3 verifier rebuilds the signed content from its own card model, not from the bytes it
received: the card without ``signatures``, members at the 0.3 schema's defaults left out
(``protocolVersion`` "0.3.0", ``preferredTransport`` "JSONRPC", and each security scheme's
``type``, which the schema fixes per scheme), empty strings, lists and objects removed,
then keys sorted and serialized compactly with non-ASCII characters escaped (``\\uXXXX``).
For an ASCII card that is the RFC 8785 form; for others it is what the 0.3 SDK checks, so
the 0.3 card is signed over exactly that. The JWS is the same detached-payload form as the
1.0 card's (RFC 7515 Appendix F). The 1.0 card and its signature are untouched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from keycard_agents._jose._card_signature import _without_empty, detached_signature
from keycard_agents._jose._keys import SigningKey

__all__ = ["sign_card_v03", "signed_content_v03"]

_DEFAULTS = {"protocolVersion": "0.3.0", "preferredTransport": "JSONRPC"}


def signed_content_v03(card: Mapping[str, Any]) -> bytes:
    """What a 0.3 client's verifier checks a signature of ``card`` (0.3 JSON) against."""
    body = {
        k: v
        for k, v in card.items()
        if k != "signatures" and not (k in _DEFAULTS and v == _DEFAULTS[k])
    }
    schemes = body.get("securitySchemes")
    if isinstance(schemes, dict):
        body["securitySchemes"] = {
            name: {k: v for k, v in s.items() if k != "type"} if isinstance(s, dict) else s
            for name, s in schemes.items()
        }
    text = json.dumps(_without_empty(body) or {}, separators=(",", ":"), sort_keys=True)
    return text.encode("ascii")


def sign_card_v03(
    card: Mapping[str, Any], key: SigningKey, *, jku: str | None = None
) -> dict[str, Any]:
    """``card`` (0.3 JSON) with its signature by ``key`` in ``signatures``."""
    return {**card, "signatures": [detached_signature(signed_content_v03(card), key, jku=jku)]}
