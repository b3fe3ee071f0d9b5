"""``POST /token`` is answered in front of FastAPI's middleware stack (the exchange is the
hot path); everything else on the app, and the app's own contract, stays as it was."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from sts_support import ISSUER, open_world

pytestmark = pytest.mark.anyio


async def test_an_exchange_and_its_refusals_are_answered_on_the_front_route() -> None:
    async with open_world() as w:
        assert w.service.app.token_route is not None  # type: ignore[attr-defined]
        user = await w.user_token()
        ok = await w.exchange("a", user, "https://b.example/")
        assert ok.status_code == 200, ok.text
        assert ok.headers["cache-control"] == "no-store"
        bad = await w.post_token({"grant_type": "nonsense"})
        assert bad.status_code == 400
        assert bad.json()["error"] == "unsupported_grant_type"


async def test_other_methods_and_paths_still_go_through_the_router() -> None:
    async with open_world() as w:
        wrong_method = await w.client.get("/token")
        assert wrong_method.status_code == 405
        unknown = await w.client.post("/token/extra", data={"grant_type": "x"})
        assert unknown.status_code == 404
        jwks = await w.client.get("/jwks.json")
        assert jwks.status_code == 200
        assert jwks.json()["keys"]


async def test_an_unexpected_error_is_still_a_bare_server_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with open_world() as w:

        async def boom(*_: Any) -> Any:
            raise RuntimeError("secret internals")

        monkeypatch.setattr(w.service.token_endpoint, "_handle", boom)
        reply = await w.post_token({"grant_type": "client_credentials"})
    assert reply.status_code == 500
    assert reply.json()["error"] == "server_error"
    assert "secret internals" not in reply.text


async def test_the_token_route_works_when_the_app_is_mounted_under_a_prefix() -> None:
    async with open_world() as w:
        user = await w.user_token()
        outer = Starlette(routes=[Mount("/sts", app=w.service.app)])
        transport = httpx.ASGITransport(app=outer)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
            form = {
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": user,
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "resource": "https://b.example/",
                **w.auth("a"),
            }
            reply = await client.post("/sts/token", data=form)
            assert reply.status_code == 200, reply.text
            assert (await client.get("/sts/token")).status_code == 405


async def test_middleware_added_to_the_app_still_sees_token_requests() -> None:
    seen: list[str] = []

    class Spy:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                seen.append(f"{scope['method']} {scope['path']}")
            await self.app(scope, receive, send)

    async with open_world() as w:
        w.service.app.add_middleware(Spy)
        reply = await w.post_token({"grant_type": "nonsense"})
    assert reply.status_code == 400
    assert seen == ["POST /token"]
