"""Property-based fuzzing of the parsers that read untrusted input (issue 13).

Properties, each over a bounded number of generated inputs so the file runs in seconds:

- the bounded JSON parser raises ``JsonLimitError`` and nothing else, and round-trips
  every JSON value within its depth bound;
- the token parser (``TokenVerifier.verify``) raises ``InvalidTokenError`` and nothing
  else, whatever the three segments hold;
- the A2A request parsers (JSON-RPC and HTTP+JSON bodies, and the params models) answer
  every body with a protocol error or a result, never a 5xx.

The examples lean on what broke before: deep nesting, ``NaN``/``Infinity``, huge numbers,
lone surrogates, JSON-looking fragments.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keycard_agents import Agent, Context, InvalidTokenError, create_app, skill
from keycard_agents._json import DEFAULT_MAX_DEPTH, JsonLimitError, loads_bounded
from keycard_agents.a2a import A2AError
from keycard_agents.auth import SigningKey, StaticKeys, TokenVerifier

BACKENDS = ["asyncio", "trio"]
FAST = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ISSUER = "https://issuer.fuzz.test"
AGENT = "https://agent.fuzz.test"

FRAGMENTS = [
    "[", "]", "{", "}", '"a":', ",", ":", "NaN", "-Infinity", "Infinity", "1e999", "-1e400",
    "1" * 40, '"\\ud800"', '"\\udc00"', '"\\u0000"', "0", "-0", "true", "null", '"x"', " ",
    "\\", '"', "1.5e-400", "9" * 4400,
]  # fmt: skip


def _nested(depth: int, kind: int) -> str:
    opener, closer = (("[", "]"), ('{"k":', "}"), ('{"a":[', "]}"))[kind]
    return opener * depth + "0" + closer * depth


hostile_text = st.one_of(
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join),
    st.tuples(st.integers(0, 3000), st.integers(0, 2)).map(lambda d: _nested(*d)),
    st.text(max_size=200),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


# -------------------------------------------------------------------- bounded JSON


@FAST
@given(st.one_of(hostile_text, hostile_text.map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_bounded_json_raises_only_its_own_error(data: str | bytes) -> None:
    problem = None
    try:
        value = loads_bounded(data)
    except JsonLimitError as exc:
        problem = exc.problem
    if problem is not None:
        assert problem in {"syntax", "size", "depth", "number"}
        return
    assert _depth(value) <= DEFAULT_MAX_DEPTH
    json.dumps(value, allow_nan=False).encode("utf-8")  # what we parse, we can answer


@FAST
@given(json_values)
def test_bounded_json_round_trips_json(value: Any) -> None:
    text = json.dumps(value, allow_nan=False)
    assert loads_bounded(text) == value
    assert loads_bounded(text.encode()) == value


@FAST
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_no_non_finite_number_gets_through(number: float) -> None:
    text = json.dumps({"exp": number})
    if math.isfinite(number):
        assert loads_bounded(text) == {"exp": number}
    else:
        with pytest.raises(JsonLimitError):
            loads_bounded(text)


# -------------------------------------------------------------------------- tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


KEY = SigningKey.generate("ES256")
KEYS = StaticKeys({ISSUER: {"keys": [KEY.public_jwk()]}})


def _segment(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value).encode()


header_values = st.one_of(
    hostile_text,
    st.fixed_dictionaries(
        {"alg": st.sampled_from(["ES256", "none", "HS256", "RS256", "EdDSA"])},
        optional={
            "typ": st.sampled_from(["at+jwt", "JWT", "x"]),
            "kid": st.one_of(st.just(KEY.kid), st.text(max_size=5), st.integers()),
            "crit": json_values,
            "x": json_values,
        },
    ),
    json_values,
)
claim_values = st.one_of(
    hostile_text,
    st.fixed_dictionaries(
        {"iss": st.sampled_from([ISSUER, "x"]), "sub": st.text(max_size=5)},
        optional={
            "aud": st.one_of(st.just(AGENT), json_values),
            "exp": json_values,
            "iat": json_values,
            "nbf": json_values,
            "jti": json_values,
            "act": json_values,
            "sub_id": json_values,
            "scope": json_values,
        },
    ),
    json_values,
)
tokens = st.one_of(
    st.text(max_size=300),
    st.tuples(header_values, claim_values, st.binary(max_size=80)).map(
        lambda p: f"{_b64(_segment(p[0]))}.{_b64(_segment(p[1]))}.{_b64(p[2])}"
    ),
)


#: Inputs at least this long must never appear in a refusal's message.
ECHO_MIN_CHARS = 16


@pytest.mark.parametrize("backend", BACKENDS)
@FAST
@given(token=tokens)
def test_token_parser_raises_only_invalid_token(backend: str, token: str) -> None:
    verifier = TokenVerifier(issuers=[ISSUER], keys=KEYS, cache_size=0)
    refusal: InvalidTokenError | None = None
    try:
        anyio.run(lambda: verifier.verify(token, audience=AGENT), backend=backend)
    except InvalidTokenError as exc:
        refusal = exc
    if refusal is not None:
        assert refusal.check
        # Never echoes the token. A short input can be a word of the fixed message itself
        # (Hypothesis drew "head", which "header.payload.signature" holds); a real token, or
        # any echo worth finding, is far longer than 16 characters.
        assert token not in str(refusal) or len(token) < ECHO_MIN_CHARS


# ------------------------------------------------------------------ A2A request bodies


class Pinger(Agent):
    @skill(anonymous=True)
    async def ping(self, ctx: Context, text: str = "") -> str:
        return "pong"


APP = create_app(
    Pinger(url=AGENT, issuer=ISSUER, token_endpoint=f"{ISSUER}/token"),
    verifier=TokenVerifier(issuers=[ISSUER], keys=KEYS),
)
METHODS = [
    "SendMessage", "SendStreamingMessage", "GetTask", "ListTasks", "CancelTask",
    "SubscribeToTask", "GetExtendedAgentCard", "CreateTaskPushNotificationConfig", "x",
]  # fmt: skip
PATHS = ["/message:send", "/message:stream", "/tasks/x:cancel"]


async def _post(requests: list[tuple[str, bytes]]) -> list[httpx.Response]:
    replies = []
    async with APP.router.lifespan_context(APP):
        transport = httpx.ASGITransport(app=APP)
        async with httpx.AsyncClient(transport=transport, base_url=AGENT) as client:
            for path, body in requests:
                headers = {"A2A-Version": "1.0", "Content-Type": "application/json"}
                replies.append(await client.post(path, content=body, headers=headers))
    return replies


def _answers_properly(reply: httpx.Response, *, jsonrpc: bool) -> None:
    assert reply.status_code < 500, reply.text[:300]
    if reply.headers.get("content-type", "").startswith("text/event-stream"):
        return
    body = reply.json()
    if jsonrpc:
        assert ("result" in body) != ("error" in body), body
    elif reply.status_code >= 400:
        assert body["error"]["code"] == reply.status_code


bodies = st.one_of(
    hostile_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
)


@pytest.mark.parametrize("backend", BACKENDS)
@FAST
@given(body=bodies)
def test_raw_bodies_never_get_a_5xx(backend: str, body: bytes) -> None:
    requests = [("/", body), *((path, body) for path in PATHS)]
    replies = anyio.run(_post, requests, backend=backend)
    _answers_properly(replies[0], jsonrpc=True)
    for reply in replies[1:]:
        _answers_properly(reply, jsonrpc=False)


envelopes = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "id": st.one_of(st.integers(), st.text(max_size=5)),
     "method": st.sampled_from(METHODS)},
    optional={"params": st.one_of(
        json_values,
        st.fixed_dictionaries({}, optional={
            "message": st.one_of(json_values, st.fixed_dictionaries(
                {"messageId": st.text(max_size=5), "role": st.sampled_from(["ROLE_USER", "x"]),
                 "parts": st.lists(st.one_of(json_values, st.fixed_dictionaries(
                     {}, optional={"text": json_values, "data": json_values,
                                   "raw": json_values, "url": json_values})), max_size=3)},
                optional={"taskId": json_values, "metadata": json_values})),
            "id": json_values, "pageSize": json_values, "pageToken": json_values,
            "historyLength": json_values, "configuration": json_values,
        }),
    )},
)  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@FAST
@given(envelope=envelopes)
def test_jsonrpc_requests_get_a_result_or_a_protocol_error(
    backend: str, envelope: dict[str, Any]
) -> None:
    body = json.dumps(envelope).encode()
    params = envelope.get("params")
    rest = json.dumps(params if isinstance(params, dict) else {}).encode()
    replies = anyio.run(_post, [("/", body), ("/message:send", rest)], backend=backend)
    _answers_properly(replies[0], jsonrpc=True)
    _answers_properly(replies[1], jsonrpc=False)


@FAST
@given(method=st.sampled_from(METHODS), params=json_values)
def test_params_models_raise_only_protocol_errors(method: str, params: Any) -> None:
    from keycard_agents._server._dispatch import parse_params

    with contextlib.suppress(A2AError):
        parse_params(method, params if isinstance(params, dict) else None)
