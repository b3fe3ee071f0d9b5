"""Resource URLs that differ only by a trailing ``/`` never mismatch silently.

RFC 8707 resources compare exactly, so ``https://b.example`` is not the registered
``https://b.example/``; every refusal says so and shows both strings.
"""

from __future__ import annotations

import pytest
from sts_support import open_world

from keycard_agents._oauth._urls import redirect_uri_registered

pytestmark = pytest.mark.anyio


async def test_an_exchange_for_the_slashless_form_names_both_strings() -> None:
    async with open_world() as w:
        user = await w.user_token()
        reply = await w.exchange("a", user, "https://b.example")
    assert reply.status_code == 400
    body = reply.json()
    assert body["error"] == "invalid_target"
    description = body["error_description"]
    assert "'https://b.example'" in description
    assert "'https://b.example/'" in description
    assert "compare exactly" in description


async def test_an_unknown_resource_without_a_twin_keeps_the_plain_advice() -> None:
    async with open_world() as w:
        user = await w.user_token()
        reply = await w.exchange("a", user, "https://elsewhere.example/")
    assert "register it under [[agents]] or [[resources]]" in reply.json()["error_description"]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://127.0.0.1/callback", True),  # exactly as registered
        ("http://127.0.0.1:53117/callback", True),  # RFC 8252 §7.3: any port
        ("http://[::1]:8080/cb", True),
        ("http://127.0.0.1:53117/other", False),  # the path still matches exactly
        ("http://127.0.0.1:53117/callback?x=1", False),
        ("https://127.0.0.1:53117/callback", False),
        ("http://localhost:53117/callback", False),  # RFC 8252 §8.3: IPs, not localhost
        ("http://127.0.0.1:99999/callback", False),  # not a port
        ("http://evil@127.0.0.1:1/callback", False),
        ("https://app.example/cb", True),
        ("https://app.example:444/cb", False),  # not loopback: exact match only
    ],
)
def test_loopback_redirect_uris_match_on_any_port(uri: str, expected: bool) -> None:
    registered = ("http://127.0.0.1/callback", "http://[::1]/cb", "https://app.example/cb")
    assert redirect_uri_registered(uri, registered) is expected
