"""A ``client_assertion`` alone (no ``client_assertion_type``) is an assertion attempt: it
is refused for its missing type (400 ``invalid_request``), and with a posted secret beside
it, for using two methods; it is never read as no authentication at all."""

from __future__ import annotations

import pytest
from sts_support import open_world

pytestmark = pytest.mark.anyio

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


async def test_an_assertion_without_its_type_is_refused_for_the_type() -> None:
    async with open_world() as w:
        form = {
            "grant_type": "client_credentials",
            "client_id": "a",
            "client_assertion": w.assertion("a"),
        }
        reply = await w.post_token(form)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == "invalid_request"
    assert "client_assertion_type" in reply.json()["error_description"]


async def test_an_assertion_without_its_type_beside_a_posted_secret_is_two_methods() -> None:
    async with open_world() as w:
        form = {
            "grant_type": "client_credentials",
            "client_id": "b",
            "client_secret": "not-the-secret",
            "client_assertion": w.assertion("a"),
        }
        reply = await w.post_token(form)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == "invalid_request"
    assert "more than one client authentication method" in reply.json()["error_description"]
