"""Hostile inputs against a real agent and token service: each gets its exact refusal.

One row of ``ROWS`` is one attack: a name, the request (a function of the world in
``hostile_support``), the answer it must get, and why. Every row runs on asyncio and
trio against agent beta's ASGI app (or the token service's), and every row asserts
that nothing was accepted and nothing answered 5xx. To add an attack, add a row.

Expected answers (``Expect``):

- ``Expect.rpc(code)``: HTTP 200 and a JSON-RPC ``error`` with ``code`` (no ``result``);
- ``Expect.rest(status, name)``: HTTP ``status`` and a ``google.rpc.Status`` whose
  ``status`` is ``name``;
- ``Expect.token(check)``: HTTP 401 with ``WWW-Authenticate: Bearer
  error="invalid_token"`` naming the failed ``check`` (either binding);
- ``Expect.oauth(error, status)``: an RFC 6749 §5.2 error from the token service;
- ``Expect.empty_list()``: HTTP 200 listing no task at all (what other principals see).
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hostile_support import (
    ALPHA,
    BETA,
    EPSILON,
    IDP,
    JWT_BEARER,
    STS,
    World,
    b64,
    nested,
    open_world,
    send_params,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
async def world(anyio_backend: str) -> AsyncIterator[World]:
    async with open_world() as opened:
        yield opened


@dataclass(frozen=True)
class Expect:
    status: int
    kind: str
    value: Any = None

    @classmethod
    def rpc(cls, code: int) -> Expect:
        return cls(200, "rpc", code)

    @classmethod
    def rest(cls, status: int, name: str) -> Expect:
        return cls(status, "rest", name)

    @classmethod
    def token(cls, check: str) -> Expect:
        return cls(401, "token", check)

    @classmethod
    def oauth(cls, error: str, status: int = 400) -> Expect:
        return cls(status, "oauth", error)

    @classmethod
    def empty_list(cls, who: str | None = None) -> Expect:
        """No task but ``who``'s own (the module's world is shared: other tests may have
        started tasks for ``who``, in any order)."""
        return cls(200, "empty", who)

    def problem(self, reply: httpx.Response, own: Collection[str] = ()) -> str | None:
        """What is wrong with ``reply``, or ``None`` when it is exactly this refusal."""
        if reply.status_code >= 500:
            return f"answered {reply.status_code}"
        if reply.status_code != self.status:
            return f"status {reply.status_code}, expected {self.status}: {reply.text[:300]}"
        body = reply.json() if reply.content else None
        if self.kind == "rpc":
            if not isinstance(body, dict) or "result" in body:
                return f"accepted: {reply.text[:300]}"
            if body.get("error", {}).get("code") != self.value:
                return f"JSON-RPC error {body.get('error')}, expected code {self.value}"
        elif self.kind == "rest":
            status = (body or {}).get("error", {}).get("status") if isinstance(body, dict) else None
            if status != self.value:
                return f"error status {status!r}, expected {self.value!r}"
        elif self.kind == "token":
            challenge = reply.headers.get("www-authenticate", "")
            wanted = f'error_description="the access token failed the {self.value} check"'
            if 'error="invalid_token"' not in challenge or wanted not in challenge:
                return f"challenge {challenge!r}, expected the {self.value} check"
            if isinstance(body, dict) and "result" in body:
                return "accepted"
        elif self.kind == "oauth":
            if not isinstance(body, dict) or body.get("error") != self.value:
                return f"OAuth error {body!r}, expected {self.value}"
            if "access_token" in body:
                return "issued a token"
        elif self.kind == "status":  # only the HTTP status is ours (the mcp SDK answers)
            if isinstance(body, dict) and "result" in body:
                return "accepted"
        elif self.kind == "empty":
            tasks = body.get("tasks") if isinstance(body, dict) else None
            if isinstance(body, dict) and "result" in body:
                tasks = body["result"].get("tasks")
            if tasks is not None:
                tasks = [t for t in tasks if t.get("id") not in own]
            if tasks != [] and tasks is not None:
                return f"listed {len(tasks)} task(s) of another principal"
            if tasks is None:
                return f"no task list: {reply.text[:300]}"
        return None


Send = Callable[[World], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Row:
    name: str
    send: Send
    expect: Expect
    reason: str


ROWS: list[Row] = []


def row(name: str, send: Send, expect: Expect, reason: str) -> None:
    ROWS.append(Row(name, send, expect, reason))


# ------------------------------------------------------------------------------ tokens
# Each hostile token is presented to both bindings: JSON-RPC GetTask and REST ListTasks.

Mint = Callable[[World], str]


def _unsigned(header: str, payload: str) -> str:
    return f"{b64(header.encode())}.{b64(payload.encode())}.{b64(b'not-a-signature')}"


def _payload_with(world: World, claim: str, raw: str) -> bytes:
    """The claims of a valid token with the value of ``claim`` replaced by raw text."""
    text = json.dumps(world.sts_claims(**{claim: 4_102_444_800}))
    return text.replace("4102444800", raw).encode()


def _act(depth: int) -> dict[str, Any] | None:
    node: dict[str, Any] | None = None
    for i in range(depth, 0, -1):
        node = {"sub": f"agent{i}", "iss": STS, **({"act": node} if node else {})}
    return node


TOKENS: list[tuple[str, Mint, str, str]] = [
    ("not a JWT", lambda w: "not-a-token", "malformed", "a bearer token must be a compact JWS"),
    ("two segments", lambda w: "abc.def", "malformed", "a compact JWS has three segments"),
    ("empty payload", lambda w: "eyJhbGciOiJFUzI1NiJ9..sig", "malformed", "RFC 7515 §7.1"),
    (
        "header nested 1,400 deep",
        lambda w: _unsigned('{"alg":"ES256","typ":"at+jwt","x":' + nested(1400) + "}", "{}"),
        "malformed",
        "finding 3: RecursionError gave a 500",
    ),
    (
        "header is a 1,400-deep array",
        lambda w: _unsigned(nested(1400), "{}"),
        "malformed",
        "finding 3: the header itself nested",
    ),
    (
        "payload nested 1,400 deep",
        lambda w: w.sts_signed_raw(('{"iss":"' + STS + '","x":' + nested(1400) + "}").encode()),
        "malformed",
        "finding 3: the payload parse recursed",
    ),
    (
        "payload nested 100 deep",
        lambda w: w.sts_signed_raw(('{"x":' + nested(100) + "}").encode()),
        "malformed",
        "over the 64-level bound even where Python would not recurse",
    ),
    (
        "header with NaN",
        lambda w: _unsigned('{"alg":"ES256","typ":"at+jwt","n":NaN}', "{}"),
        "malformed",
        "NaN is not JSON (RFC 8259 §6)",
    ),
    (
        "exp NaN",
        lambda w: w.sts_signed_raw(_payload_with(w, "exp", "NaN")),
        "malformed",
        "finding 4: NaN compares false against the clock: never expires",
    ),
    (
        "exp Infinity",
        lambda w: w.sts_signed_raw(_payload_with(w, "exp", "Infinity")),
        "malformed",
        "finding 4: Infinity is not JSON",
    ),
    (
        "exp 1e999",
        lambda w: w.sts_signed_raw(_payload_with(w, "exp", "1e999")),
        "malformed",
        "finding 4: parses to inf",
    ),
    (
        "exp 10**400",
        lambda w: w.sts_signed(exp=10**400),
        "claims",
        "finding 3/4: OverflowError in date conversion gave a 500",
    ),
    ("exp negative", lambda w: w.sts_signed(exp=-5), "claims", "not a NumericDate"),
    ("exp a string", lambda w: w.sts_signed(exp="tomorrow"), "claims", "RFC 7519 NumericDate"),
    ("exp true", lambda w: w.sts_signed(exp=True), "claims", "a boolean is not a number"),
    (
        "nbf NaN",
        lambda w: w.sts_signed_raw(
            json.dumps(w.sts_claims(nbf=12345)).replace("12345", "NaN").encode()
        ),
        "malformed",
        "NaN in any date",
    ),
    ("iat 1e400", lambda w: w.sts_signed(iat=10**400), "claims", "out of NumericDate range"),
    (
        "lone surrogate in sub",
        lambda w: w.sts_signed_raw(
            json.dumps(w.sts_claims(sub="SUBX")).replace("SUBX", "\\ud800").encode()
        ),
        "malformed",
        "cannot be encoded back to UTF-8",
    ),
    (
        "5,000-digit number",
        lambda w: w.sts_signed_raw(
            json.dumps(w.sts_claims(n=1)).replace('"n": 1', '"n": ' + "9" * 5000).encode()
        ),
        "malformed",
        "Python refuses to parse it: must not be a 500",
    ),
    (
        "alg none",
        lambda w: _unsigned('{"alg":"none","typ":"at+jwt"}', json.dumps(w.sts_claims())),
        "algorithm",
        "RFC 8725 §3.1",
    ),
    (
        "alg HS256",
        lambda w: _unsigned('{"alg":"HS256","typ":"at+jwt"}', json.dumps(w.sts_claims())),
        "algorithm",
        "no HMAC with a public key",
    ),
    ("typ JWT", lambda w: w.sts_signed(typ="JWT"), "type", "RFC 8725 §3.11 explicit typing"),
    (
        "typ client assertion",
        lambda w: w.sts_signed(typ="client-authentication+jwt"),
        "type",
        "a client assertion is not an access token",
    ),
    ("wrong audience", lambda w: w.sts_signed(aud=ALPHA), "audience", "RFC 8707: not for beta"),
    ("audience list without beta", lambda w: w.sts_signed(aud=[ALPHA]), "audience", "RFC 9068"),
    (
        "untrusted issuer",
        lambda w: w.sts_signed(iss="https://evil.hostile.test"),
        "issuer",
        "only the token service is trusted",
    ),
    (
        "identity provider token at beta",
        lambda w: w.idp_token(aud=BETA),
        "issuer",
        "beta trusts the token service, not the IdP directly",
    ),
    (
        "expired",
        lambda w: w.sts_signed(exp=1_700_000_000, iat=1_699_999_000, nbf=1_699_999_000),
        "expired",
        "RFC 7519 §4.1.4",
    ),
    ("not yet valid", lambda w: w.sts_signed(nbf=4_000_000_000), "not_yet_valid", "nbf"),
    (
        "issued in the future",
        lambda w: w.sts_signed(iat=4_000_000_000, nbf=None),
        "issued_in_future",
        "iat beyond leeway",
    ),
    ("oversized", lambda w: w.sts_signed(pad="x" * 9000), "size", "8 KiB limit"),
    ("act deeper than 5", lambda w: w.sts_signed(act=_act(6)), "depth", "chain depth limit"),
    ("act level without sub", lambda w: w.sts_signed(act={"iss": STS}), "claims", "RFC 8693 §4.1"),
    ("act is a string", lambda w: w.sts_signed(act="alpha"), "claims", "act must be an object"),
    (
        "sub_id names another subject",
        lambda w: w.sts_signed(sub_id={"format": "iss_sub", "iss": IDP, "sub": "mallory"}),
        "claims",
        "finding 1: sub_id.sub must equal sub (RFC 9493 §4)",
    ),
    ("sub_id is a string", lambda w: w.sts_signed(sub_id="alice"), "claims", "RFC 9493 §4"),
    (
        "sub_id iss_sub without iss",
        lambda w: w.sts_signed(sub_id={"format": "iss_sub", "sub": "alice"}),
        "claims",
        "an origin must be named",
    ),
    ("empty sub", lambda w: w.sts_signed(sub="", sub_id=None), "claims", "RS-8"),
    ("no jti", lambda w: w.sts_signed(jti=None), "claims", "RS-8 required claims"),
    ("scope a list", lambda w: w.sts_signed(scope=["notes.read"]), "claims", "RS-8 types"),
    ("forged signature", lambda w: w.sts_signed()[:-8] + "AAAAAAAA", "signature", "RS-7"),
    (
        "unknown kid",
        lambda w: w.idp_key.sign(w.sts_claims(), typ="at+jwt"),
        "unknown_key",
        "RS-6: not a key of the token service",
    ),
    (
        "crit header",
        lambda w: w.sts_signed_raw(
            json.dumps(w.sts_claims()).encode(), {"crit": ["b64"], "b64": True}
        ),
        "malformed",
        "RS-2: JWS extensions are refused",
    ),
]


def _token_rpc(mint: Mint) -> Send:
    async def send(w: World) -> httpx.Response:
        return await w.rpc("GetTask", {"id": w.tasks["ask"]}, who=mint(w))

    return send


def _token_rest(mint: Mint) -> Send:
    async def send(w: World) -> httpx.Response:
        return await w.rest("GET", "/tasks", who=mint(w))

    return send


for _name, _mint, _check, _why in TOKENS:
    row(f"token/jsonrpc/{_name}", _token_rpc(_mint), Expect.token(_check), _why)
    row(f"token/rest/{_name}", _token_rest(_mint), Expect.token(_check), _why)


def _token_mcp(mint: Mint) -> Send:
    async def send(w: World) -> httpx.Response:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        headers = {
            "Authorization": f"Bearer {mint(w)}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        return await w.mcp.post("/mcp", json=body, headers=headers)

    return send


for _name, _mint, _check, _why in TOKENS:
    if _check in ("malformed", "claims") or "nested" in _name:
        row(f"token/mcp/{_name}", _token_mcp(_mint), Expect(401, "status"), _why)


async def _bearer_junk(w: World) -> httpx.Response:
    headers = {"Authorization": "Bearer a b c", "A2A-Version": "1.0"}
    return await w.beta.get("/tasks", headers=headers)


row("token/rest/bearer with spaces", _bearer_junk, Expect.token("malformed"), "RFC 6750 §2.1")


# ---------------------------------------------------------------------- task isolation
# alice (local, through alpha, both scopes) owns the tasks "ask" (waiting) and "write"
# (completed). Every other principal must see nothing: not found, or an empty list.

OTHERS = {
    "alice_idp": "finding 1: the same sub at another issuer is another user",
    "alice_gamma": "finding 2: the same user through another chain",
    "alice_direct": "finding 2: the same user calling beta herself (no actor)",
    "bob": "another user",
}
NOT_FOUND_RPC = Expect.rpc(-32001)
NOT_FOUND_REST = Expect.rest(404, "NOT_FOUND")


def _isolation_rows(who: str, why: str, tasks: tuple[str, ...]) -> None:
    for task in tasks:

        def get_rpc(w: World, task: str = task) -> Awaitable[httpx.Response]:
            return w.rpc("GetTask", {"id": w.tasks[task]}, who=who)

        def get_rest(w: World, task: str = task) -> Awaitable[httpx.Response]:
            return w.rest("GET", f"/tasks/{w.tasks[task]}", who=who)

        def cancel_rpc(w: World, task: str = task) -> Awaitable[httpx.Response]:
            return w.rpc("CancelTask", {"id": w.tasks[task]}, who=who)

        def cancel_rest(w: World, task: str = task) -> Awaitable[httpx.Response]:
            return w.rest("POST", f"/tasks/{w.tasks[task]}:cancel", who=who)

        def subscribe_rpc(w: World, task: str = task) -> Awaitable[httpx.Response]:
            return w.rpc("SubscribeToTask", {"id": w.tasks[task]}, who=who)

        def subscribe_rest(w: World, task: str = task) -> Awaitable[httpx.Response]:
            return w.rest("POST", f"/tasks/{w.tasks[task]}:subscribe", who=who)

        row(f"tasks/{who}/GetTask {task}/jsonrpc", get_rpc, NOT_FOUND_RPC, why)
        row(f"tasks/{who}/GetTask {task}/rest", get_rest, NOT_FOUND_REST, why)
        row(f"tasks/{who}/CancelTask {task}/jsonrpc", cancel_rpc, NOT_FOUND_RPC, why)
        row(f"tasks/{who}/CancelTask {task}/rest", cancel_rest, NOT_FOUND_REST, why)
        row(f"tasks/{who}/SubscribeToTask {task}/sse-jsonrpc", subscribe_rpc, NOT_FOUND_RPC, why)
        row(f"tasks/{who}/SubscribeToTask {task}/sse-rest", subscribe_rest, NOT_FOUND_REST, why)

    def resume_rpc(w: World) -> Awaitable[httpx.Response]:
        return w.rpc("SendMessage", send_params("ask", task_id=w.tasks["ask"]), who=who)

    def resume_rest(w: World) -> Awaitable[httpx.Response]:
        return w.rest(
            "POST", "/message:send", who=who, json_body=send_params("ask", task_id=w.tasks["ask"])
        )

    def list_rpc(w: World) -> Awaitable[httpx.Response]:
        return w.rpc("ListTasks", {}, who=who)

    def list_rest(w: World) -> Awaitable[httpx.Response]:
        return w.rest("GET", "/tasks?includeArtifacts=true", who=who)

    if "ask" in tasks:
        row(f"tasks/{who}/answer alice's question/jsonrpc", resume_rpc, NOT_FOUND_RPC, why)
        row(f"tasks/{who}/answer alice's question/rest", resume_rest, NOT_FOUND_REST, why)
        row(f"tasks/{who}/ListTasks/jsonrpc", list_rpc, Expect.empty_list(who), why)
        row(f"tasks/{who}/ListTasks/rest", list_rest, Expect.empty_list(who), why)


for _who, _why in OTHERS.items():
    _isolation_rows(_who, _why, ("ask", "write"))
# A token of the same chain without notes.write cannot see the task that needed it.
_isolation_rows("alice_narrow", "finding 2: without the scope the skill required", ("write",))


def _anonymous(op: str) -> Send:
    async def send(w: World) -> httpx.Response:
        if op == "get-alice":
            return await w.rpc("GetTask", {"id": w.tasks["ask"]}, who=None)
        if op == "get-ping":
            return await w.rpc("GetTask", {"id": w.tasks["ping"]}, who=None)
        if op == "cancel-ping":
            return await w.rest("POST", f"/tasks/{w.tasks['ping']}:cancel", who=None)
        if op == "alice-gets-ping":
            return await w.rpc("GetTask", {"id": w.tasks["ping"]}, who="alice")
        return await w.rest("GET", f"/tasks/{w.tasks['ask']}", who=None)

    return send


row(
    "tasks/anonymous/GetTask alice's task/jsonrpc",
    _anonymous("get-alice"),
    NOT_FOUND_RPC,
    "no token, no task",
)
row(
    "tasks/anonymous/GetTask alice's task/rest",
    _anonymous("get-alice-rest"),
    NOT_FOUND_REST,
    "no token, no task",
)
row(
    "tasks/anonymous/GetTask another anonymous task",
    _anonymous("get-ping"),
    NOT_FOUND_RPC,
    "finding 8: anonymous tasks were shared by all anonymous callers",
)
row(
    "tasks/anonymous/CancelTask another anonymous task",
    _anonymous("cancel-ping"),
    NOT_FOUND_REST,
    "finding 8: an anonymous task is seen only by the request that made it",
)
row(
    "tasks/alice/GetTask an anonymous task",
    _anonymous("alice-gets-ping"),
    NOT_FOUND_RPC,
    "an id is not a credential",
)


async def _anonymous_list(w: World) -> httpx.Response:
    return await w.rpc("ListTasks", {}, who=None)


row(
    "tasks/anonymous/ListTasks",
    _anonymous_list,
    Expect.empty_list(),
    "the card allows anonymous calls; no task is visible to an anonymous caller",
)


# ---------------------------------------------------------------------- request bodies


def _rpc_body(text: str) -> Send:
    async def send(w: World) -> httpx.Response:
        return await w.rpc("", None, body=text.encode())

    return send


def _rest_body(path: str, text: str) -> Send:
    async def send(w: World) -> httpx.Response:
        return await w.rest("POST", path, body=text.encode())

    return send


def _deep_metadata(depth: int, method: str = "SendMessage") -> str:
    message = json.dumps(send_params("write", text="x")["message"])[:-1]
    return (
        '{"jsonrpc":"2.0","id":1,"method":"'
        + method
        + '","params":{"message":'
        + message
        + ',"metadata":'
        + nested(depth, opener='{"a":', closer="}")
        + "}}}"
    )


def _rest_deep_metadata(depth: int) -> str:
    message = json.dumps(send_params("write", text="x")["message"])[:-1]
    return '{"message":' + message + ',"metadata":' + nested(depth, '{"a":', "}") + "}}"


BODIES: list[tuple[str, Send, Expect, str]] = [
    (
        "jsonrpc/array nested 1,400 deep",
        _rpc_body(nested(1400)),
        Expect.rpc(-32600),
        "finding 3: RecursionError",
    ),
    (
        "jsonrpc/object nested 1,400 deep",
        _rpc_body(nested(1400, '{"a":', "}")),
        Expect.rpc(-32600),
        "finding 3",
    ),
    (
        "jsonrpc/message.metadata nested 700 deep",
        _rpc_body(_deep_metadata(700)),
        Expect.rpc(-32600),
        "finding 3: -32603 and a broken ListTasks for the owner",
    ),
    (
        "jsonrpc/message.metadata nested 65 deep",
        _rpc_body(_deep_metadata(65)),
        Expect.rpc(-32600),
        "over the 64-level bound",
    ),
    (
        "sse-jsonrpc/SendStreamingMessage nested 700 deep",
        _rpc_body(_deep_metadata(700, "SendStreamingMessage")),
        Expect.rpc(-32600),
        "SSE too",
    ),
    (
        "jsonrpc/NaN",
        _rpc_body('{"jsonrpc":"2.0","id":NaN,"method":"ListTasks"}'),
        Expect.rpc(-32700),
        "not JSON",
    ),
    (
        "jsonrpc/Infinity in params",
        _rpc_body('{"jsonrpc":"2.0","id":1,"method":"ListTasks","params":{"pageSize":Infinity}}'),
        Expect.rpc(-32700),
        "not JSON",
    ),
    (
        "jsonrpc/1e999",
        _rpc_body('{"jsonrpc":"2.0","id":1e999,"method":"ListTasks"}'),
        Expect.rpc(-32700),
        "no finite double",
    ),
    (
        "jsonrpc/5,000-digit id",
        _rpc_body('{"jsonrpc":"2.0","id":' + "9" * 5000 + "}"),
        Expect.rpc(-32700),
        "ValueError from int parsing",
    ),
    (
        "jsonrpc/lone surrogate",
        _rpc_body('{"jsonrpc":"2.0","id":"\\udc00","method":"ListTasks"}'),
        Expect.rpc(-32700),
        "could not be encoded in the answer",
    ),
    ("jsonrpc/not JSON", _rpc_body("{'jsonrpc': '2.0'"), Expect.rpc(-32700), "JSON-RPC §5.1"),
    (
        "jsonrpc/invalid UTF-8",
        _rpc_body("\udcff".encode("utf-8", "surrogateescape").decode("latin-1")),
        Expect.rpc(-32700),
        "bytes that are not UTF-8",
    ),
    ("jsonrpc/batch", _rpc_body("[]"), Expect.rpc(-32600), "batches are not supported"),
    ("jsonrpc/a string", _rpc_body('"SendMessage"'), Expect.rpc(-32600), "not an object"),
    (
        "jsonrpc/no id",
        _rpc_body('{"jsonrpc":"2.0","method":"ListTasks"}'),
        Expect.rpc(-32600),
        "notifications are not served",
    ),
    (
        "jsonrpc/params a list",
        _rpc_body('{"jsonrpc":"2.0","id":1,"method":"ListTasks","params":[1]}'),
        Expect.rpc(-32600),
        "params is an object",
    ),
    (
        "jsonrpc/unknown method",
        _rpc_body('{"jsonrpc":"2.0","id":1,"method":"DropTables"}'),
        Expect.rpc(-32601),
        "JSON-RPC §5.1",
    ),
    (
        "jsonrpc/SendMessage without message",
        _rpc_body('{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{}}'),
        Expect.rpc(-32602),
        "invalid params",
    ),
    (
        "jsonrpc/message of 300 KiB",
        _rpc_body(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "SendMessage",
                    "params": send_params("write", text="x" * 300_000),
                }
            )
        ),
        Expect.rpc(-32602),
        "finding 6: per-message limit (256 KiB)",
    ),
    (
        "rest/body nested 1,400 deep",
        _rest_body("/message:send", nested(1400, '{"a":', "}")),
        Expect.rest(400, "INVALID_ARGUMENT"),
        "finding 3: 500 at REST endpoints",
    ),
    (
        "rest/message.metadata nested 700 deep",
        _rest_body("/message:send", _rest_deep_metadata(700)),
        Expect.rest(400, "INVALID_ARGUMENT"),
        "finding 3",
    ),
    (
        "sse-rest/message:stream nested 700 deep",
        _rest_body("/message:stream", _rest_deep_metadata(700)),
        Expect.rest(400, "INVALID_ARGUMENT"),
        "SSE binding too",
    ),
    (
        "rest/NaN",
        _rest_body("/message:send", '{"message":NaN}'),
        Expect.rest(400, "INVALID_ARGUMENT"),
        "not JSON",
    ),
    (
        "rest/not an object",
        _rest_body("/message:send", "[1,2]"),
        Expect.rest(400, "INVALID_ARGUMENT"),
        "a request is an object",
    ),
    (
        "rest/cancel body nested 1,400 deep",
        _rest_body("/tasks/x:cancel", nested(1400, '{"a":', "}")),
        Expect.rest(400, "INVALID_ARGUMENT"),
        "every body is bounded",
    ),
    (
        "rest/message of 300 KiB",
        _rest_body("/message:send", json.dumps(send_params("write", text="x" * 300_000))),
        Expect.rest(400, "INVALID_ARGUMENT"),
        "finding 6: per-message limit",
    ),
]
for _name, _send, _expect, _why in BODIES:
    row(f"body/{_name}", _send, _expect, _why)


async def _too_big(w: World) -> httpx.Response:
    return await w.rest("POST", "/message:send", body=b" " * (1024 * 1024 + 1))


async def _wrong_type(w: World) -> httpx.Response:
    return await w.rest("POST", "/message:send", body=b"{}", content_type="text/plain")


async def _bad_page_token(w: World) -> httpx.Response:
    return await w.rest("GET", "/tasks?pageToken=%00%ff")


async def _bad_page_size(w: World) -> httpx.Response:
    return await w.rest("GET", "/tasks?pageSize=many")


row("body/rest/over 1 MiB", _too_big, Expect.rest(413, "INVALID_ARGUMENT"), "body limit")
row("body/rest/text/plain", _wrong_type, Expect.rest(415, "INVALID_ARGUMENT"), "content type")
row(
    "body/rest/garbage pageToken",
    _bad_page_token,
    Expect.rest(400, "INVALID_ARGUMENT"),
    "opaque cursor",
)
row(
    "body/rest/pageSize not a number",
    _bad_page_size,
    Expect.rest(400, "INVALID_ARGUMENT"),
    "query validation",
)


# ------------------------------------------------------- the token service (findings 1, 3, 4, 8)


def _sts(build: Callable[[World], Awaitable[httpx.Response]]) -> Send:
    return build


async def _idp_with_act(w: World) -> httpx.Response:
    return await w.exchange("alpha", w.idp_token(act={"sub": "beta"}), BETA)


async def _idp_claims_local_user(w: World) -> httpx.Response:
    sub_id = {"format": "iss_sub", "iss": STS, "sub": "alice"}
    return await w.exchange("alpha", w.idp_token(sub_id=sub_id), BETA)


async def _loop_back(w: World) -> httpx.Response:
    return await w.exchange("beta", w.tokens["alice"], ALPHA)


async def _idp_exp_nan(w: World) -> httpx.Response:
    text = json.dumps(w.idp_claims(exp=4_102_444_800)).replace("4102444800", "NaN")
    return await w.exchange("alpha", w.idp_signed_raw(text.encode()), BETA)


async def _idp_exp_huge(w: World) -> httpx.Response:
    return await w.exchange("alpha", w.idp_token(exp=10**400), BETA)


async def _subject_nested(w: World) -> httpx.Response:
    token = _unsigned('{"alg":"ES256","typ":"at+jwt","x":' + nested(1400) + "}", "{}")
    return await w.exchange("alpha", token, BETA)


def _assertion_form(w: World, assertion: str, **more: str) -> dict[str, str]:
    user = w.user_token("alice", audience="https://delta.hostile.test")
    return {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": user,
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "resource": BETA,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        **more,
    }


async def _assertion_exp_nan(w: World) -> httpx.Response:
    text = json.dumps(
        {"iss": "delta", "sub": "delta", "aud": STS, "exp": 1, "jti": uuid.uuid4().hex}
    ).replace('"exp": 1', '"exp": NaN')
    return await w.sts.post("/token", data=_assertion_form(w, w.delta_signed_raw(text.encode())))


async def _assertion_exp_huge(w: World) -> httpx.Response:
    return await w.sts.post("/token", data=_assertion_form(w, w.assertion(exp=10**400)))


async def _assertion_payload_nested(w: World) -> httpx.Response:
    assertion = _unsigned('{"alg":"ES256"}', nested(1400))
    return await w.sts.post("/token", data=_assertion_form(w, assertion))


async def _assertion_header_nested_with_client_id(w: World) -> httpx.Response:
    assertion = _unsigned('{"alg":"ES256","x":' + nested(1400) + "}", '{"iss":"delta"}')
    return await w.sts.post("/token", data=_assertion_form(w, assertion, client_id="delta"))


STS_ROWS: list[tuple[str, Send, Expect, str]] = [
    (
        "exchange/external token that already carries act",
        _idp_with_act,
        Expect.oauth("invalid_request"),
        "finding 8: actors only come from this service (TS-3a)",
    ),
    (
        "exchange/external token claiming a local user",
        _idp_claims_local_user,
        Expect.oauth("invalid_request"),
        "finding 1: an IdP names only its own users (TS-3a)",
    ),
    (
        "exchange/A -> B -> A",
        _loop_back,
        Expect.oauth("invalid_target"),
        "finding 8: allow_repeated_agents = false (TS-7)",
    ),
    (
        "exchange/external subject exp NaN",
        _idp_exp_nan,
        Expect.oauth("invalid_request"),
        "finding 3/4: ValueError gave a 500",
    ),
    (
        "exchange/external subject exp 10**400",
        _idp_exp_huge,
        Expect.oauth("invalid_request"),
        "finding 3: OverflowError gave a 500",
    ),
    (
        "exchange/subject header nested 1,400 deep",
        _subject_nested,
        Expect.oauth("invalid_request"),
        "finding 3: RecursionError gave a 500",
    ),
    (
        "client assertion/exp NaN",
        _assertion_exp_nan,
        Expect.oauth("invalid_client", 401),
        "finding 4: replayable forever",
    ),
    (
        "client assertion/exp 10**400",
        _assertion_exp_huge,
        Expect.oauth("invalid_client", 401),
        "finding 4: out of NumericDate range",
    ),
    (
        "client assertion/payload nested 1,400 deep",
        _assertion_payload_nested,
        Expect.oauth("invalid_client", 401),
        "finding 3: _unverified_claims recursed",
    ),
    (
        "client assertion/header nested, client_id given",
        _assertion_header_nested_with_client_id,
        Expect.oauth("invalid_client", 401),
        "finding 3: 500 with client_id=",
    ),
]
for _name, _send, _expect, _why in STS_ROWS:
    row(f"sts/{_name}", _sts(_send), _expect, _why)


# ------------------------------------------------------------------------------- tests


def test_the_table_is_large_and_names_are_unique() -> None:
    names = [r.name for r in ROWS]
    assert len(names) == len(set(names))
    assert len(ROWS) >= 150


@pytest.mark.parametrize("case", ROWS, ids=lambda r: r.name)
async def test_hostile_input_is_refused(
    world: World, case: Row, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="keycard_agents"):
        reply = await case.send(world)
    if case.expect.kind == "rpc-401":  # JSON-RPC error with HTTP 401 (RFC 6750 challenge)
        assert reply.status_code == 401, reply.text
        assert "result" not in reply.json()
        problem = None
    else:
        who = case.expect.value if case.expect.kind == "empty" else None
        own = world.started.get(str(who), set()) if who else set()
        problem = case.expect.problem(reply, own)
    assert problem is None, f"{case.name} ({case.reason}): {problem}"
    lines = [r for r in caplog.records if r.name.startswith("keycard_agents")]
    assert not [r for r in lines if r.exc_info], "a refusal logged a traceback"
    if case.expect.kind != "empty":  # an empty list is an answer, not a refusal
        assert len(lines) == 1, [r.getMessage() for r in lines]  # one line per refusal


async def test_audit_trails_record_where_each_user_came_from(world: World) -> None:
    """Finding 1: the audit user is (origin, sub) at the token service."""
    records = await world.service.audit.query(user="alice")
    origins = {r.user_issuer for r in records if r.decision == "issued"}
    assert origins == {STS, IDP}
    task = await world.start("whoami", "alice_idp")
    served = await world.recorder.store.query(user="alice")
    assert {r.user_issuer for r in served if r.task_id == task["id"]} == {IDP}


async def test_origin_is_copied_unchanged_at_every_hop(world: World) -> None:
    """Finding 1: sub_id, decided at the first exchange, survives the second."""
    second = await world.delegated("beta", world.tokens["alice_idp"], EPSILON)
    claims = json.loads(base64.urlsafe_b64decode(second.split(".")[1] + "=="))
    assert claims["sub_id"] == {"format": "iss_sub", "iss": IDP, "sub": "alice"}
    assert claims["iss"] == STS
    assert [claims["act"]["sub"], claims["act"]["act"]["sub"]] == ["beta", "alpha"]


async def test_the_owner_still_sees_and_uses_her_tasks(world: World) -> None:
    """The attacks above change nothing for alice: her tasks are there, and answerable."""
    listed = (await world.rpc("ListTasks", {}, who="alice")).json()["result"]["tasks"]
    assert {t["id"] for t in listed} >= {world.tasks["ask"], world.tasks["write"]}
    got = (await world.rest("GET", f"/tasks/{world.tasks['write']}")).json()
    assert got["status"]["state"] == "TASK_STATE_COMPLETED"
    seen = (await world.start("whoami", "alice"))["artifacts"][0]["parts"][0]["data"]
    assert seen == {"sub": "alice", "origin": STS}
    seen = (await world.start("whoami", "alice_idp"))["artifacts"][0]["parts"][0]["data"]
    assert seen == {"sub": "alice", "origin": IDP}
