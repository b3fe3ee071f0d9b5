"""The audit page's layout in headless Chromium: sibling hops drawn as siblings, long names whole.

A chain where one agent calls two others (siblings) and the names are long: the list of
recent chains must nest the agents as a tree, and the drawn graph must keep siblings in
one column and show every name and outcome in full. Measured in the browser (element
boxes, text lengths) and checked on screenshots.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from browser_support import open_browser_page
from test_auditpage_browser import COLOURS, _png_pixels
from trace_support import ADMIN, ADMIN_TOKEN

from keycard_agents.sts import AuditRecord, MemoryAuditStore, TokenService, parse_config

pytestmark = pytest.mark.slow

TXN = "txn-with-siblings-0001"
PLANNER = "planner-for-the-quarterly-offsite-with-many-travellers"
TRAVEL = "travel-agent-for-international-bookings"
P_URL = "https://planner.agents.example.com/"
T_URL = "https://travel.agents.example.com/"
W_URL = "https://weather.agents.example.com/"
TOOLS = "https://travel-tools.internal.example.com/mcp/v1/booking-and-itineraries"
MAILER = "https://mailer.internal.example.com/api/v2/notifications"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


def _records() -> list[AuditRecord]:
    """What the token service records for: alice → planner → {travel → {tools, mailer ✘}, weather}.

    Weather never exchanges, so nothing in these records names it: it shows as its URL.
    """
    common: dict[str, Any] = {"txn": TXN, "user": "alice", "decision": "issued"}

    def exchange(
        t: float, agent: str, resource: str, actors: tuple[str, ...], target: str, **extra: Any
    ) -> AuditRecord:
        fields = {
            **common,
            "grant_type": EXCHANGE,
            "client_id": agent,
            "resource": resource,
            "actors": actors,
            "target": target,
            "scopes_granted": ("trips.read",),
            "jti": f"jti-{t}",
            **extra,
        }
        return AuditRecord(time=1_800_000_000 + t, **fields)

    return [
        AuditRecord(
            time=1_800_000_000.0,
            grant_type="authorization_code",
            client_id="cli",
            target=P_URL,
            scopes_granted=("trips.read",),
            jti="jti-0",
            **common,
        ),
        exchange(0.1, PLANNER, P_URL, (PLANNER,), T_URL),
        exchange(0.2, TRAVEL, T_URL, (TRAVEL, PLANNER), TOOLS),
        exchange(
            0.3,
            TRAVEL,
            T_URL,
            (TRAVEL, PLANNER),
            MAILER,
            decision="denied",
            error="invalid_target",
            scopes_granted=None,
            jti=None,
            scopes_requested=("mail.send",),
        ),
        exchange(0.4, PLANNER, P_URL, (PLANNER,), W_URL),
    ]


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    from keycard_agents._demo._services import bind_loopback, start_server

    sock = bind_loopback(0, service="token service")
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    store = MemoryAuditStore()
    config = parse_config({"issuer": url, "admin": ADMIN})
    service = TokenService(config, audit=store)

    async def fill() -> None:
        for record in _records():
            await store.append(record)

    anyio.run(fill)
    server = start_server(service.app, sock, name="token service", url=url)
    try:
        yield url
    finally:
        server.stop()


def _login(base: str, next_path: str) -> str:
    reply = httpx.post(
        f"{base}/audit/login-link", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
    )
    assert reply.status_code == 200, reply.text
    return f"{reply.json()['url']}&next={next_path}"


def _keep(shot: Path, name: str) -> None:
    folder = os.environ.get("KEYCARD_AUDIT_SCREENSHOTS")
    if folder:
        shutil.copyfile(shot, Path(folder) / name)


_LIST_ITEMS = """
JSON.stringify([...document.querySelectorAll('td ul.tree li')].map(li => {
  const parent = li.parentElement.closest('li');
  const own = n => n.firstChild.textContent;
  const box = li.getBoundingClientRect();
  const cell = li.closest('td');
  return {name: own(li), parent: parent ? own(parent) : null, left: box.left, top: box.top,
          height: parseFloat(getComputedStyle(li).lineHeight) || 18,
          cell: [cell.getBoundingClientRect().left, cell.getBoundingClientRect().right],
          fits: cell.scrollWidth <= cell.clientWidth};
}))
"""


def test_list_view_nests_sibling_hops(base: str, tmp_path: Path) -> None:
    with open_browser_page(tmp_path, width=1600, height=700) as page:
        page.goto(_login(base, "/audit"), until="document.querySelector('h1') !== null")
        items = json.loads(page.evaluate(_LIST_ITEMS))
        shot = tmp_path / "list.png"
        data = page.screenshot(shot)
    _keep(shot, "audit-list.png")
    by_name = {item["name"]: item for item in items}
    assert [i["name"] for i in items] == [PLANNER, TRAVEL, TOOLS, MAILER, W_URL], items
    assert by_name[PLANNER]["parent"] is None
    assert by_name[TRAVEL]["parent"] == PLANNER
    assert by_name[W_URL]["parent"] == PLANNER  # a sibling of travel, not its child
    assert by_name[TOOLS]["parent"] == TRAVEL
    assert by_name[MAILER]["parent"] == TRAVEL
    # siblings start at the same indent, children further right, one line each
    assert by_name[TRAVEL]["left"] == by_name[W_URL]["left"] > by_name[PLANNER]["left"]
    assert by_name[TOOLS]["left"] == by_name[MAILER]["left"] > by_name[TRAVEL]["left"]
    assert all(item["fits"] for item in items), items
    # the screenshot shows five separate lines of text in the agents cell
    width, _, rows = _png_pixels(data)
    left, right = (int(x) for x in items[0]["cell"])
    top = int(items[0]["top"]) - 4
    bottom = int(items[-1]["top"] + items[-1]["height"]) + 4
    bands, inside = 0, False
    for y in range(top, bottom):
        row = rows[y]
        dark = any(sum(row[x * 3 : x * 3 + 3]) < 300 for x in range(left, min(right, width)))
        if dark and not inside:
            bands += 1
        inside = dark
    assert bands == 5, bands


_GRAPH = """
JSON.stringify([...document.querySelectorAll('svg.graph g.node')].map(g => {
  const rect = g.querySelector('rect');
  const [name, detail] = [...g.querySelectorAll('text')];
  return {name: name.textContent, detail: detail.textContent,
          left: rect.getBoundingClientRect().left, x: rect.x.baseVal.value,
          y: rect.y.baseVal.value, width: rect.width.baseVal.value,
          nameEnd: name.x.baseVal[0].value + name.getComputedTextLength(),
          detailEnd: detail.x.baseVal[0].value + detail.getComputedTextLength(),
          status: g.getAttribute('class').split(' ')[1]};
}))
"""


def test_graph_keeps_siblings_in_a_column_and_names_whole(base: str, tmp_path: Path) -> None:
    with open_browser_page(tmp_path, width=2200, height=700) as page:
        page.goto(_login(base, f"/audit/txn/{TXN}"), until="document.querySelector('h1') !== null")
        nodes = json.loads(page.evaluate(_GRAPH))
        shot = tmp_path / "tree.png"
        data = page.screenshot(shot)
    _keep(shot, "audit-tree.png")
    by_name = {node["name"]: node for node in nodes}
    assert set(by_name) == {"alice", PLANNER, TRAVEL, W_URL, TOOLS, MAILER}, nodes
    for node in nodes:  # every label whole, inside its box
        assert "…" not in node["name"] + node["detail"]
        assert node["nameEnd"] <= node["x"] + node["width"], node
        assert node["detailEnd"] <= node["x"] + node["width"], node
    assert by_name[MAILER]["detail"] == "DENIED invalid_target"
    # siblings share a column, one above the other; children one column further right
    assert by_name[TRAVEL]["x"] == by_name[W_URL]["x"] > by_name[PLANNER]["x"]
    assert by_name[TRAVEL]["y"] != by_name[W_URL]["y"]
    assert by_name[TOOLS]["x"] == by_name[MAILER]["x"] > by_name[TRAVEL]["x"]
    # the screenshot: green boxes at two columns, two of them stacked in travel's column
    _, _, rows = _png_pixels(data)
    lefts: dict[int, int] = {}
    ok = COLOURS["ok"]
    for row in rows:
        start = None
        for x in range(0, len(row) // 3):
            hit = all(abs(row[x * 3 + k] - ok[k]) <= 6 for k in range(3))
            if hit and start is None:
                start = x
            elif not hit and start is not None:
                if x - start > 150:
                    lefts[start] = lefts.get(start, 0) + 1
                start = None
    column = round(by_name[TRAVEL]["left"])
    stacked = sum(n for left, n in lefts.items() if abs(left - column) <= 12)
    assert stacked > 56, lefts  # more rows than one 56-row box has: two boxes, stacked
    assert _count_red(rows) > 0


def _count_red(rows: list[bytes]) -> int:
    red = COLOURS["denied"]
    return sum(
        1
        for row in rows
        for x in range(0, len(row), 3)
        if all(abs(row[x + k] - red[k]) <= 6 for k in range(3))
    )
