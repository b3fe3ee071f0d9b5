"""Client authentication (``_clientauth``): the edges a mutation run showed no test
pinned (``dev.py mutation sts``, docs/testing.md)."""

from __future__ import annotations

import base64

import pytest
from sts_support import open_world

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("user_id", "seen"),
    [("team+b", "team b"), ("team%2Bb", "team+b"), ("a%3Ab", "a:b")],
)
async def test_a_basic_client_id_is_form_decoded(user_id: str, seen: str) -> None:
    """RFC 6749 §2.3.1: the client id is form-urlencoded before base64, so ``+`` is a
    space and ``%2B`` a plus; the audit names the client id as decoded."""
    async with open_world() as w:
        raw = base64.b64encode(f"{user_id}:secret".encode()).decode()
        reply = await w.post_token(
            {"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {raw}"}
        )
        (record,) = await w.service.audit.query()
    assert reply.status_code == 401
    assert reply.json()["error"] == "invalid_client"
    assert record.reason == f"unknown client {seen!r}"
