"""The no-token check the output tests use (tests/leak_support.py)."""

from __future__ import annotations

import pytest
from leak_support import assert_no_token

from keycard_agents.auth import SigningKey


def test_a_token_anywhere_in_a_text_is_caught_without_being_shown() -> None:
    token = SigningKey.generate("ES256").sign({"sub": "alice"}, typ="at+jwt")
    with pytest.raises(AssertionError) as caught:
        assert_no_token(f"log line: got {token} from the caller")
    assert token not in str(caught.value)
    assert token[:20] not in str(caught.value)


def test_a_key_id_holding_eyj_is_no_token() -> None:
    assert_no_token("token key id 'kPkIG7xukfeyJZZxac_xPrT_zbwF72Lws' is not among the keys")
    assert_no_token('{"kid": "eyJabc", "next": ".eyX"}')
