"""The server test helpers themselves: minted tokens verify."""

from __future__ import annotations

import anyio
from server_support import AGENT_URL, TokenMinter


def test_minted_token_verifies() -> None:
    minter = TokenMinter()

    async def main() -> None:
        principal = await minter.verifier().verify(minter.token(scopes=("a",)), audience=AGENT_URL)
        assert principal.user == "alice"
        assert principal.scopes == frozenset({"a"})

    anyio.run(main)
