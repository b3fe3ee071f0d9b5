"""Client secret hashes of the token service (scrypt, compared in constant time)."""

from __future__ import annotations

import pytest

from keycard_agents.sts import hash_secret, verify_secret

# -- unit tests of the small pieces ------------------------------------------------------


def test_secret_hash_round_trip() -> None:
    stored = hash_secret("s3cret", cost=2**4)
    assert stored.startswith("scrypt$16$8$1$")
    assert verify_secret("s3cret", stored)
    assert not verify_secret("s3cret ", stored)
    assert "s3cret" not in stored


@pytest.mark.parametrize(
    "stored",
    ["", "bcrypt$x", "scrypt$3$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "scrypt$16$8$1$$"],
)
def test_bad_secret_hash_is_rejected(stored: str) -> None:
    with pytest.raises(ValueError, match=r"secret hash|scrypt"):
        verify_secret("x", stored)
