"""The token service's audit page over ASGI: admin credential, content, graph, JSON API."""

from __future__ import annotations

import base64
import re
from urllib.parse import urlsplit

import httpx
import pytest
from sts_support import ISSUER, T0, D, open_world
from trace_support import ADMIN, ADMIN_TOKEN, run_scenario

from keycard_agents import ConfigurationError
from keycard_agents.audit import AgentAuditRecord
from keycard_agents.sts import parse_config

pytestmark = pytest.mark.anyio

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


@pytest.mark.parametrize(
    "path",
    ["/audit", "/audit/txn/x", "/audit/txn/x/export", "/audit/api/records", "/audit/api/tree/x"],
)
async def test_every_page_requires_the_admin_credential(path: str) -> None:
    async with open_world(admin=ADMIN) as w:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer"},
            _basic("admin", "wrong"),
            _basic("root", ADMIN_TOKEN),
            {"Authorization": "Basic !!!"},
            {"Authorization": f"Digest {ADMIN_TOKEN}"},
        ):
            reply = await w.client.get(path, headers=headers)
            assert reply.status_code == 401, (path, headers)
            assert reply.headers["www-authenticate"].startswith(
                'Basic realm="keycard-agents audit"'
            )
            assert reply.headers["cache-control"] == "no-store"
            assert "admin credential" in reply.text
            assert ADMIN_TOKEN not in reply.text
        reply = await w.client.get(path, headers={"Cookie": "keycard_audit=forged"})
        assert reply.status_code == 401


async def test_no_admin_section_means_no_audit_page() -> None:
    async with open_world() as w:
        reply = await w.client.get("/audit", headers=BEARER)
        assert reply.status_code == 404
        assert w.service.audit_page is None


async def test_recent_chains_and_filters() -> None:
    async with open_world(admin=ADMIN) as w:
        s = await run_scenario(w)
        w.service.trail.add_agent_store(s.store)
        w.clock.advance(5)
        other = w.service.issue_user_token("bob", audience="https://a.example/", scopes=["read"])
        assert (await w.exchange("a", other, "https://b.example/")).status_code == 200

        for headers in (BEARER, _basic("admin", ADMIN_TOKEN)):
            reply = await w.client.get("/audit", headers=headers)
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/html")
            csp = reply.headers["content-security-policy"]
            assert "default-src 'none'" in csp
            assert "script-src" not in csp
            assert reply.headers["x-frame-options"] == "DENY"
            page = reply.text
            assert "Recent delegation chains" in page
            assert f'href="/audit/txn/{s.txn}"' in page
            assert "<td>alice</td>" in page
            assert "<td>bob</td>" in page
            assert "<script" not in page
            assert "http://" not in page.replace("http://www.w3.org", "")

        alice_only = (await w.client.get("/audit", params={"user": "alice"}, headers=BEARER)).text
        assert s.txn in alice_only
        assert "<td>bob</td>" not in alice_only
        assert 'value="alice"' in alice_only
        c_only = (await w.client.get("/audit", params={"agent": "c"}, headers=BEARER)).text
        assert s.txn in c_only
        assert "<td>bob</td>" not in c_only
        none = (await w.client.get("/audit", params={"user": "zed"}, headers=BEARER)).text
        assert "No delegation chains match." in none
        limited = await w.client.get("/audit", params={"limit": "x"}, headers=BEARER)
        assert limited.status_code == 200


async def test_txn_page_draws_the_graph_and_lists_every_hop() -> None:
    async with open_world(admin=ADMIN) as w:
        s = await run_scenario(w)
        w.service.trail.add_agent_store(s.store)
        reply = await w.client.get(f"/audit/txn/{s.txn}", headers=BEARER)
        assert reply.status_code == 200
        page = reply.text
        svg = page[page.index("<svg") : page.index("</svg>")]
        assert svg.count('<g class="node') == 6  # the user and five hops
        assert svg.count('<g class="node denied">') == 2
        assert 'fill="#dc2626"' in svg  # denied
        assert 'fill="#16a34a"' in svg  # ok
        assert 'fill="#2563eb"' in svg  # the user
        assert 'stroke-dasharray="6 4"' in svg
        assert "DENIED invalid_target" in svg
        assert "alice → a → b → https://d.example/api" in page  # the hop table
        assert "may not call" in page
        assert "task-b" in page
        assert "5 hops, 2 denied, 1 failed" in page
        for fmt in ("json", "mermaid", "dot"):
            assert f"/audit/txn/{s.txn}/export?format={fmt}" in page


async def test_exports_and_unknown_txn() -> None:
    async with open_world(admin=ADMIN) as w:
        s = await run_scenario(w)
        base = f"/audit/txn/{s.txn}/export"
        as_json = await w.client.get(base, params={"format": "json"}, headers=BEARER)
        assert as_json.json()["txn"] == s.txn
        mermaid = await w.client.get(base, params={"format": "mermaid"}, headers=BEARER)
        assert mermaid.text.startswith("flowchart LR")
        dot = await w.client.get(base, params={"format": "dot"}, headers=BEARER)
        assert dot.headers["content-type"].startswith("text/vnd.graphviz")
        assert (
            await w.client.get(base, params={"format": "png"}, headers=BEARER)
        ).status_code == 400
        unknown = await w.client.get("/audit/txn/nope", headers=BEARER)
        assert unknown.status_code == 404
        assert "No audit record for txn <code>nope</code>" in unknown.text
        assert (await w.client.get("/audit/txn/nope/export", headers=BEARER)).status_code == 404


async def test_json_api() -> None:
    async with open_world(admin=ADMIN) as w:
        s = await run_scenario(w)
        w.service.trail.add_agent_store(s.store)
        tree = await w.client.get(f"/audit/api/tree/{s.txn}", headers=BEARER)
        assert tree.status_code == 200
        hops = tree.json()["hops"]
        assert hops[0]["path"] == ["alice", "a"]
        denied = hops[0]["children"][0]["children"][1]
        assert denied["target"] == D
        assert denied["status"] == "denied"
        assert "may not call" in denied["reason"]
        missing = await w.client.get("/audit/api/tree/nope", headers=BEARER)
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"

        records = await w.client.get(
            "/audit/api/records", params={"txn": s.txn, "agent": "b"}, headers=BEARER
        )
        kinds = sorted({r["kind"] for r in records.json()["records"]})
        assert kinds == ["call", "exchange", "served"]
        windowed = await w.client.get(
            "/audit/api/records",
            params={"since": str(T0 + 0.02), "until": str(T0 + 0.03), "limit": "50"},
            headers=BEARER,
        )
        found = sorted((r["kind"], r["outcome"]) for r in windowed.json()["records"])
        # b's exchange for c, b's record of that call and c's task
        assert found == [("call", "completed"), ("exchange", "issued"), ("served", "completed")]
        bad = await w.client.get("/audit/api/records", params={"since": "x"}, headers=BEARER)
        assert bad.status_code == 400
        assert bad.json()["error"] == "invalid_request"


async def test_recorded_text_is_escaped() -> None:
    async with open_world(admin=ADMIN) as w:
        store = w.service.trail
        evil = AgentAuditRecord(
            kind="served",
            agent="<script>alert(1)</script>",
            time=w.clock(),
            outcome="completed",
            txn="<i>t",
            user='"><img src=x onerror=alert(1)>',
        )

        class _One:
            async def append(self, record: AgentAuditRecord) -> None:
                raise AssertionError("read-only")

            async def query(self, **kwargs: object) -> list[AgentAuditRecord]:
                return [evil] if kwargs.get("txn") in (None, evil.txn) else []

        store.add_agent_store(_One())
        index = (await w.client.get("/audit", headers=BEARER)).text
        assert "<script>" not in index
        assert "<img" not in index
        assert "&lt;script&gt;" in index
        page = await w.client.get("/audit/txn/%3Ci%3Et", headers=BEARER)
        assert page.status_code == 200
        assert "<script>" not in page.text
        assert "<img" not in page.text


async def test_one_time_login_link_opens_a_cookie_session() -> None:
    async with open_world(admin=ADMIN) as w:
        assert (await w.client.post("/audit/login-link")).status_code == 401
        link = await w.client.post("/audit/login-link", headers=BEARER)
        assert link.status_code == 200
        body = link.json()
        assert body["expires_in"] == 60
        url = urlsplit(body["url"])
        assert f"{url.scheme}://{url.netloc}" == ISSUER
        assert url.path == "/audit/login"

        reply = await w.client.get(f"/audit/login?{url.query}&next=/audit/txn/x")
        assert reply.status_code == 303
        assert reply.headers["location"] == "/audit/txn/x"
        cookie = reply.headers["set-cookie"]
        assert cookie.startswith("keycard_audit=")
        for attribute in ("HttpOnly", "Path=/audit", "SameSite=strict", "Secure"):
            assert attribute.lower() in cookie.lower()
        session = re.match(r"keycard_audit=([^;]+)", cookie)
        assert session is not None
        jar = {"Cookie": f"keycard_audit={session.group(1)}"}
        w.client.cookies.clear()
        assert (await w.client.get("/audit", headers=jar)).status_code == 200
        # a cookie is not an admin credential for minting more links
        assert (await w.client.post("/audit/login-link", headers=jar)).status_code == 401
        # the code works once
        assert (await w.client.get(f"/audit/login?{url.query}")).status_code == 401
        # the session ends
        w.clock.advance(3601)
        assert (await w.client.get("/audit", headers=jar)).status_code == 401

        # an unused code expires after 60 s; an open redirect is refused
        late = urlsplit((await w.client.post("/audit/login-link", headers=BEARER)).json()["url"])
        w.clock.advance(61)
        assert (await w.client.get(f"/audit/login?{late.query}")).status_code == 401
        fresh = urlsplit((await w.client.post("/audit/login-link", headers=BEARER)).json()["url"])
        away = await w.client.get(f"/audit/login?{fresh.query}&next=//evil.example/audit")
        assert away.headers["location"] == "/audit"
        assert (await w.client.get("/audit/login")).status_code == 401


async def test_pending_login_links_are_bounded() -> None:
    async with open_world(admin=ADMIN) as w:
        for _ in range(100):
            assert (await w.client.post("/audit/login-link", headers=BEARER)).status_code == 200
        assert (await w.client.post("/audit/login-link", headers=BEARER)).status_code == 429


async def test_admin_config_is_validated() -> None:
    with pytest.raises(ConfigurationError, match=r"admin\.token_hash"):
        parse_config({"issuer": ISSUER, "admin": {"token_hash": "plain-text"}})
    config = parse_config({"issuer": ISSUER, "admin": ADMIN})
    assert config.admin is not None
    assert config.admin.username == "admin"


async def test_audit_file_config_writes_jsonl(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "audit.jsonl"
    async with open_world(audit_file=path) as w:
        await run_scenario(w)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5
    assert all('"decision"' in line for line in lines)


async def test_page_served_over_a_real_client_transport_keeps_lifespan() -> None:
    async with open_world(admin=ADMIN) as w:
        transport = httpx.ASGITransport(app=w.service.app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as other:
            assert (await other.get("/audit", headers=BEARER)).status_code == 200
