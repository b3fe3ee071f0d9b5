"""Helpers shared by the token verification tests."""

from __future__ import annotations

from joserfc.jwk import Key


class OneKey:
    """A custom key resolver (the ``KeyResolver`` protocol) that hands out one joserfc key,
    whatever the token names."""

    def __init__(self, key: Key) -> None:
        self.key = key

    async def resolve(self, *, issuer: str, kid: str | None, alg: str) -> Key:
        return self.key

    def known(self, *, issuer: str, kid: str | None) -> bool:
        return True
