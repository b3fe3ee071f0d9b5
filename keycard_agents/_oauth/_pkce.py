"""Proof Key for Code Exchange (RFC 7636), used by the sign-in flow and its clients."""

from __future__ import annotations

import base64
import hashlib

__all__ = ["pkce_challenge"]


def pkce_challenge(verifier: str) -> str:
    """The RFC 7636 §4.2 ``S256`` code challenge of ``verifier``:
    ``BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))``, without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
