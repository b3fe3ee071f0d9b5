"""The documented default caps of the token service's in-memory stores (a live client
assertion per ``jti``; pending sign-in codes). Their effect is tested with small caps
elsewhere; reaching the defaults would take a million assertions or 10,000 codes, so the
defaults themselves are pinned here."""

from __future__ import annotations

from keycard_agents._sts._authorize import CodeStore
from keycard_agents._sts._clientauth import ReplayCache


def test_the_replay_cache_holds_a_million_live_assertions_by_default() -> None:
    assert ReplayCache(clock=lambda: 0.0)._max == 1_000_000


def test_the_code_store_holds_ten_thousand_pending_sign_ins_by_default() -> None:
    assert CodeStore(clock=lambda: 0.0)._max == 10_000
