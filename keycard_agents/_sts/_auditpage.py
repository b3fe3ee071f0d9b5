"""The token service's audit page: recent delegation chains and a drawn tree per ``txn``.

Read-only HTML, rendered on the server with an inline SVG graph (no script, no external
resources: the page works offline and its Content-Security-Policy forbids both). It
sits behind the operator's admin credential (``[admin]`` in the configuration), sent as
an RFC 6750 bearer token or as the password of RFC 7617 HTTP Basic authentication.

For browsers that cannot send either, an admin asks for a one-time login link
(``POST /audit/login-link`` with the credential); opening it within 60 seconds sets an
``HttpOnly`` ``SameSite=Strict`` session cookie (RFC 6265) scoped to ``/audit``. Codes
and session ids are kept only as SHA-256 digests and a code works once.

JSON for tools: ``GET /audit/api/records`` (trail entries by ``txn``, ``user``,
``agent``, ``since``, ``until``, ``limit``) and ``GET /audit/api/tree/{txn}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from keycard_agents._audit._render import STATUS_COLOURS, describe, to_dot, to_json, to_mermaid
from keycard_agents._audit._trail import AuditTrail
from keycard_agents._audit._tree import DelegationTree, Hop
from keycard_agents._errors import TraceNotFoundError
from keycard_agents._sts._config import AdminConfig, Limits
from keycard_agents._sts._forms import retry_after_header
from keycard_agents._sts._throttle import (
    CredentialGuard,
    DummyHash,
    TooManyAttemptsError,
    request_source,
)

__all__ = ["AuditPage", "draw_tree_svg"]

COOKIE = "keycard_audit"
LOGIN_CODE_LIFETIME = 60.0
_MAX_PENDING = 100
_MAX_SESSIONS = 1000
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_CHALLENGE = (
    'Basic realm="keycard-agents audit", charset="UTF-8", Bearer realm="keycard-agents audit"'
)

Endpoint = Callable[[Request], Awaitable[Response]]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "replace")).digest()


def _when(ts: float | None) -> str:
    if ts is None:
        return "?"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# -- the drawn graph ------------------------------------------------------------------------

_BOX_W, _BOX_H, _GAP, _ROW, _PAD = 210, 56, 70, 90, 24
#: Generous average glyph widths (px) of the node name (13px bold) and the smaller
#: lines (11px): boxes are sized so that no label is ever cut short.
_NAME_EM, _SMALL_EM = 8.6, 7.0


@dataclass
class _Placed:
    hop: Hop | None
    depth: int
    y: float
    parent: _Placed | None


def _layout(tree: DelegationTree) -> list[_Placed]:
    """Left-to-right tree layout: a column per depth, leaves on successive rows."""
    placed: list[_Placed] = []
    next_row = [0]

    def place(hop: Hop | None, children: list[Hop], depth: int, parent: _Placed | None) -> float:
        node = _Placed(hop=hop, depth=depth, y=0.0, parent=parent)
        placed.append(node)
        if children:
            ys = [place(c, c.children, depth + 1, node) for c in children]
            node.y = (ys[0] + ys[-1]) / 2
        else:
            node.y = float(next_row[0])
            next_row[0] += 1
        return node.y

    place(None, tree.hops, 0, None)
    return placed


@dataclass
class _Labels:
    name: str
    detail: str
    edge: str
    title: str
    status: str


def _labels(tree: DelegationTree, hop: Hop | None) -> _Labels:
    if hop is None:
        user = tree.user or "?"
        return _Labels(name=user, detail="user", edge="", title=user, status="user")
    line1 = describe(hop)
    line2 = f"skill {hop.skill}" if hop.skill else ""
    title = f"{hop.caller} → {hop.target}: {line1}"
    if hop.reason:
        title += f" ({hop.reason})"
    denied = hop.status == "denied"
    scopes = hop.scopes_requested if denied else hop.scopes_granted
    edge = ("denied" + (": " if scopes else "") if denied else "") + " ".join(scopes or ())
    return _Labels(
        name=hop.target,
        detail=line1 + (f" · {line2}" if line2 else ""),
        edge=edge,
        title=title,
        status=hop.status,
    )


def _box_width(label: _Labels) -> int:
    """Wide enough for the node's name, its detail line and the label of its edge."""
    widest = max(
        len(label.name) * _NAME_EM, len(label.detail) * _SMALL_EM, len(label.edge) * _SMALL_EM
    )
    return max(_BOX_W, math.ceil(widest) + 24)


def draw_tree_svg(tree: DelegationTree) -> str:
    """The tree as a self-contained SVG: the user in blue, hops coloured by status.

    Every label is drawn whole: the boxes are as wide as the longest one needs.
    """
    placed = _layout(tree)
    labels = [_labels(tree, node.hop) for node in placed]
    depth = max(p.depth for p in placed)
    column = [_BOX_W] * (depth + 1)  # each column as wide as its widest node
    for node, label in zip(placed, labels, strict=True):
        column[node.depth] = max(column[node.depth], _box_width(label))
    lefts = [_PAD + sum(column[:d]) + d * _GAP for d in range(depth + 1)]
    rows = max(1, max((math.floor(p.y) for p in placed), default=0) + 1)
    width = lefts[-1] + column[-1] + _PAD
    height = _PAD * 2 + (rows - 1) * _ROW + _BOX_H

    def xy(node: _Placed) -> tuple[float, float]:
        return lefts[node.depth], _PAD + node.y * _ROW

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="delegation graph of txn {_e(tree.txn)}">',
        "<style>text{font:13px system-ui,sans-serif}.n{font-weight:700;fill:#fff}"
        ".d{font-size:11px;fill:#fff}.s{font-size:11px;fill:#374151}</style>",
    ]
    for node, label in zip(placed, labels, strict=True):  # edges first, under the boxes
        if node.parent is None or node.hop is None:
            continue
        px, py = xy(node.parent)
        cx, cy = xy(node)
        x1, y1, x2, y2 = px + column[node.parent.depth], py + _BOX_H / 2, cx, cy + _BOX_H / 2
        mid = (x1 + x2) / 2
        denied = node.hop.status == "denied"
        colour = STATUS_COLOURS["denied"] if denied else "#6b7280"
        dash = ' stroke-dasharray="6 4"' if denied else ""
        out.append(
            f'<path d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" fill="none" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
        )
        if label.edge:  # just above the target box, clear of the curves
            out.append(f'<text class="s" x="{cx + 4}" y="{cy - 6}">{_e(label.edge)}</text>')
    for node, label in zip(placed, labels, strict=True):
        x, y = xy(node)
        colour = STATUS_COLOURS[label.status]
        out.append(f'<g class="node {label.status}"><title>{_e(label.title)}</title>')
        out.append(
            f'<rect x="{x}" y="{y}" width="{column[node.depth]}" height="{_BOX_H}" rx="10" '
            f'fill="{colour}"/>'
        )
        out.append(f'<text class="n" x="{x + 12}" y="{y + 21}">{_e(label.name)}</text>')
        out.append(f'<text class="d" x="{x + 12}" y="{y + 41}">{_e(label.detail)}</text></g>')
    out.append("</svg>")
    return "\n".join(out)


# -- HTML -------------------------------------------------------------------------------------

_STYLE = """
body{font:14px system-ui,sans-serif;margin:0;color:#111827;background:#f9fafb}
header{background:#111827;color:#fff;padding:12px 24px}header a{color:#fff}
main{padding:16px 24px}table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e5e7eb;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6}.denied{color:#b91c1c;font-weight:600}.failed{color:#c2410c}
.ok{color:#15803d}.pending{color:#0e7490}.unknown{color:#4b5563}code{font-size:12px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px;margin:12px 0;
overflow-x:auto}form{margin:8px 0}input{padding:4px}.muted{color:#6b7280}
ul.tree{margin:0;padding-left:0;list-style:none}ul.tree ul.tree{padding-left:18px}
ul.tree ul.tree>li::before{content:"└ ";color:#9ca3af}
"""


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        '<header><strong>keycard-agents</strong> · <a href="/audit">audit trail</a></header>'
        f"<main>{body}</main></body></html>"
    )


def _outline(paths: tuple[tuple[str, ...], ...]) -> str:
    """Hop paths as nested lists: each agent once under its caller, siblings side by side."""
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for path in paths:
        kids = children.setdefault(path[:-1], [])
        if path not in kids:
            kids.append(path)

    def items(parent: tuple[str, ...]) -> str:
        kids = children.get(parent)
        if not kids:
            return ""
        inner = "".join(f"<li>{_e(path[-1])}{items(path)}</li>" for path in kids)
        return f'<ul class="tree">{inner}</ul>'

    return items(())


def _hop_rows(tree: DelegationTree) -> str:
    rows = []
    for hop in tree.walk():
        chain = " → ".join(hop.path)
        scopes = " ".join(hop.scopes_granted or ()) or "-"
        denied = " ".join(hop.scopes_denied) or "-"
        rows.append(
            "<tr>"
            f"<td>{_e(chain)}</td>"
            f'<td class="{hop.status}">{_e(describe(hop))}</td>'
            f"<td>{_e(scopes)}</td><td>{_e(denied)}</td>"
            f"<td>{_e(hop.reason or '')}</td>"
            f"<td>{_e(hop.skill or '')} <code>{_e(hop.task_id or '')}</code></td>"
            f"<td>{_e(_when(hop.started))}</td>"
            f"<td>{'' if hop.duration is None else f'{hop.duration * 1000:.0f} ms'}</td>"
            "</tr>"
        )
    return "".join(rows)


class AuditPage:
    """The routes of the audit page, bound to a trail and an admin credential."""

    def __init__(
        self,
        *,
        trail: AuditTrail,
        admin: AdminConfig,
        issuer: str,
        clock: Callable[[], float] = time.time,
        guard: CredentialGuard | None = None,
    ) -> None:
        self.trail = trail
        self._admin = admin
        self._guard = guard if guard is not None else CredentialGuard(Limits(), clock=clock)
        self._dummy = DummyHash([admin.token_hash])
        self._issuer = issuer.rstrip("/")
        self._secure_cookie = issuer.startswith("https://")
        self._clock = clock
        self._codes: dict[bytes, float] = {}
        self._sessions: dict[bytes, float] = {}

    # -- credentials ---------------------------------------------------------------------

    async def _check_secret(self, presented: str, *, account: str, source: str | None) -> bool:
        return await self._guard.check_hash(
            presented, self._admin.token_hash, account=account, source=source, dummy=self._dummy
        )

    async def _credential_ok(self, request: Request) -> bool:
        """Bearer admin token or HTTP Basic (``username`` / admin token); no cookie.

        Checked off the event loop and throttled per source address and for the admin
        account (raises :class:`TooManyAttemptsError`).
        """
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        source = request_source(request)
        if scheme.lower() == "bearer" and value:
            return await self._check_secret(value, account="admin", source=source)
        if scheme.lower() == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            user, sep, password = decoded.partition(":")
            if not sep:
                return False
            user_ok = hmac.compare_digest(user.encode(), self._admin.username.encode())
            # the hash is checked whatever the user name, so both take as long
            return await self._check_secret(password, account="admin", source=source) and user_ok
        return False

    def _session_ok(self, request: Request) -> bool:
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return False
        now = self._clock()
        expires = self._sessions.get(_digest(cookie))
        return expires is not None and expires > now

    async def _authorized(self, request: Request) -> bool:
        return self._session_ok(request) or await self._credential_ok(request)

    @staticmethod
    def _throttled(exc: TooManyAttemptsError, api: bool) -> Response:
        headers = {**_SECURITY_HEADERS, **retry_after_header(exc)}
        if api:
            body = {"error": exc.error, "error_description": exc.error_description}
            return JSONResponse(body, status_code=exc.status_code, headers=headers)
        page = _page(
            "Too many attempts",
            f"<h1>{exc.status_code}: too many attempts</h1><p>{_e(exc.error_description)}.</p>",
        )
        return HTMLResponse(page, status_code=exc.status_code, headers=headers)

    @staticmethod
    def _denied(api: bool) -> Response:
        headers = {**_SECURITY_HEADERS, "WWW-Authenticate": _CHALLENGE}
        message = (
            "the audit trail needs the admin credential: a bearer token, HTTP Basic "
            "(user name and admin token) or a one-time login link"
        )
        if api:
            body = {"error": "invalid_token", "error_description": message}
            return JSONResponse(body, status_code=401, headers=headers)
        page = _page("Sign-in required", f"<h1>401: sign-in required</h1><p>{_e(message)}.</p>")
        return HTMLResponse(page, status_code=401, headers=headers)

    def _prune(self, now: float) -> None:
        for store in (self._codes, self._sessions):
            for key in [k for k, exp in store.items() if exp <= now]:
                del store[key]

    # -- routes ----------------------------------------------------------------------------

    def routes(self) -> list[tuple[str, Endpoint, list[str]]]:
        return [
            ("/audit", self._guarded(self.index, api=False), ["GET"]),
            ("/audit/txn/{txn}", self._guarded(self.txn_page, api=False), ["GET"]),
            ("/audit/txn/{txn}/export", self._guarded(self.export, api=False), ["GET"]),
            ("/audit/api/records", self._guarded(self.api_records, api=True), ["GET"]),
            ("/audit/api/tree/{txn}", self._guarded(self.api_tree, api=True), ["GET"]),
            ("/audit/login-link", self.login_link, ["POST"]),
            ("/audit/login", self.login, ["GET"]),
        ]

    def _guarded(self, endpoint: Endpoint, *, api: bool) -> Endpoint:
        async def guarded(request: Request) -> Response:
            try:
                authorized = await self._authorized(request)
            except TooManyAttemptsError as exc:
                return self._throttled(exc, api)
            if not authorized:
                return self._denied(api)
            return await endpoint(request)

        return guarded

    async def login_link(self, request: Request) -> Response:
        """``POST /audit/login-link``: a one-time URL that opens a browser session."""
        try:
            authorized = await self._credential_ok(request)
        except TooManyAttemptsError as exc:
            return self._throttled(exc, api=True)
        if not authorized:
            return self._denied(api=True)
        now = self._clock()
        self._prune(now)
        if len(self._codes) >= _MAX_PENDING:
            body = {"error": "slow_down", "error_description": "too many unused login links"}
            return JSONResponse(body, status_code=429, headers=_SECURITY_HEADERS)
        code = secrets.token_urlsafe(32)
        self._codes[_digest(code)] = now + LOGIN_CODE_LIFETIME
        url = f"{self._issuer}/audit/login?{urlencode({'code': code})}"
        link = {"url": url, "expires_in": int(LOGIN_CODE_LIFETIME)}
        return JSONResponse(link, headers=_SECURITY_HEADERS)

    async def login(self, request: Request) -> Response:
        """``GET /audit/login?code=...``: trade a one-time code for a session cookie."""
        now = self._clock()
        self._prune(now)
        code = request.query_params.get("code", "")
        expires = self._codes.pop(_digest(code), None) if code else None
        if expires is None or expires <= now:
            return self._denied(api=False)
        if len(self._sessions) >= _MAX_SESSIONS:
            oldest = min(self._sessions, key=self._sessions.__getitem__)
            del self._sessions[oldest]
        session = secrets.token_urlsafe(32)
        lifetime = self._admin.session_lifetime
        self._sessions[_digest(session)] = now + lifetime
        target = request.query_params.get("next", "/audit")
        if not target.startswith("/audit") or target.startswith("//"):
            target = "/audit"
        response = RedirectResponse(target, status_code=303, headers=_SECURITY_HEADERS)
        response.set_cookie(
            COOKIE,
            session,
            max_age=int(lifetime),
            path="/audit",
            httponly=True,
            samesite="strict",
            secure=self._secure_cookie,
        )
        return response

    async def index(self, request: Request) -> Response:
        q = request.query_params
        user = q.get("user") or None
        agent = q.get("agent") or None
        try:
            limit = max(1, min(200, int(q.get("limit", "50"))))
        except ValueError:
            limit = 50
        chains = await self.trail.chains(user=user, agent=agent, limit=limit)
        rows = []
        for chain in chains:
            link = f"/audit/txn/{quote(chain.txn, safe='')}"
            path = _outline(chain.paths) or _e(" → ".join(chain.agents))
            rows.append(
                "<tr>"
                f"<td>{_e(_when(chain.ended))}</td>"
                f'<td><a href="{_e(link)}"><code>{_e(chain.txn)}</code></a></td>'
                f"<td>{_e(chain.user or '?')}</td><td>{path}</td><td>{chain.hops}</td>"
                f'<td class="{"denied" if chain.denied else "ok"}">{chain.denied}</td>'
                f'<td class="{"failed" if chain.failed else "ok"}">{chain.failed}</td>'
                "</tr>"
            )
        table = (
            "<table><thead><tr><th>last activity</th><th>txn</th><th>user</th><th>agents</th>"
            "<th>hops</th><th>denied</th><th>failed</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
            if rows
            else '<p class="muted">No delegation chains match.</p>'
        )
        body = (
            "<h1>Recent delegation chains</h1>"
            '<form method="get" action="/audit">'
            f'<label>user <input name="user" value="{_e(user or "")}"></label> '
            f'<label>agent <input name="agent" value="{_e(agent or "")}"></label> '
            '<button type="submit">filter</button> <a href="/audit">clear</a></form>'
            f'<div class="card">{table}</div>'
        )
        return HTMLResponse(_page("Audit trail", body), headers=_SECURITY_HEADERS)

    async def _tree(self, request: Request) -> DelegationTree | None:
        try:
            return await self.trail.tree(request.path_params["txn"])
        except TraceNotFoundError:
            return None

    async def txn_page(self, request: Request) -> Response:
        tree = await self._tree(request)
        if tree is None:
            txn = request.path_params["txn"]
            body = (
                "<h1>Unknown transaction</h1>"
                f"<p>No audit record for txn <code>{_e(txn)}</code>.</p>"
            )
            return HTMLResponse(
                _page("Unknown txn", body), status_code=404, headers=_SECURITY_HEADERS
            )
        export = f"/audit/txn/{quote(tree.txn, safe='')}/export?format="
        hops = len(list(tree.walk()))
        counts = f"{hops} hops, {tree.count('denied')} denied, {tree.count('failed')} failed"
        body = (
            f"<h1>Delegation tree of txn <code>{_e(tree.txn)}</code></h1>"
            f"<p>user <strong>{_e(tree.user or '?')}</strong> · {_e(_when(tree.started))} · "
            f"{_e(counts)} · export: "
            f'<a href="{export}json">JSON</a> · <a href="{export}mermaid">Mermaid</a> · '
            f'<a href="{export}dot">DOT</a></p>'
            f'<div class="card">{draw_tree_svg(tree)}</div>'
            '<div class="card"><table><thead><tr><th>path</th><th>outcome</th>'
            "<th>scopes granted</th><th>scopes denied</th><th>reason</th><th>task</th>"
            "<th>started</th><th>duration</th></tr></thead>"
            f"<tbody>{_hop_rows(tree)}</tbody></table></div>"
        )
        return HTMLResponse(_page(f"txn {tree.txn}", body), headers=_SECURITY_HEADERS)

    async def export(self, request: Request) -> Response:
        tree = await self._tree(request)
        if tree is None:
            return Response("unknown txn\n", status_code=404, headers=_SECURITY_HEADERS)
        fmt = request.query_params.get("format", "json")
        renderers = {
            "json": (to_json, "application/json"),
            "mermaid": (to_mermaid, "text/plain; charset=utf-8"),
            "dot": (to_dot, "text/vnd.graphviz; charset=utf-8"),
        }
        if fmt not in renderers:
            return Response(
                "format must be json, mermaid or dot\n", status_code=400, headers=_SECURITY_HEADERS
            )
        render, media_type = renderers[fmt]
        return Response(render(tree), media_type=media_type, headers=_SECURITY_HEADERS)

    async def api_records(self, request: Request) -> Response:
        q = request.query_params
        try:
            since = float(q["since"]) if "since" in q else None
            until = float(q["until"]) if "until" in q else None
            limit = max(0, min(10_000, int(q.get("limit", "1000"))))
        except ValueError:
            body = {
                "error": "invalid_request",
                "error_description": "since and until are seconds since the epoch; "
                "limit is an integer",
            }
            return JSONResponse(body, status_code=400, headers=_SECURITY_HEADERS)
        entries = await self.trail.query(
            txn=q.get("txn"),
            user=q.get("user"),
            agent=q.get("agent"),
            since=since,
            until=until,
            limit=limit,
        )
        return JSONResponse({"records": [e.to_dict() for e in entries]}, headers=_SECURITY_HEADERS)

    async def api_tree(self, request: Request) -> Response:
        tree = await self._tree(request)
        if tree is None:
            txn = request.path_params["txn"]
            body = {
                "error": "not_found",
                "error_description": f"no audit record for txn {txn[:80]!r}",
            }
            return JSONResponse(body, status_code=404, headers=_SECURITY_HEADERS)
        return JSONResponse(tree.to_dict(), headers=_SECURITY_HEADERS)
