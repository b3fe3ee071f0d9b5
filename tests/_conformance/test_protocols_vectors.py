"""The conformance vectors of protocols/vectors/ run against our token service and verifier."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from keycard_agents import InsufficientScopeError, InvalidTokenError
from keycard_agents._conformance import (
    ConformanceSettings,
    VectorResult,
    format_table,
    load_settings,
    load_vectors,
    run_exchange_vectors,
)
from keycard_agents.auth import StaticKeys, TokenVerifier
from keycard_agents.sts import TokenService, load_config

ROOT = Path(__file__).resolve().parents[2]
PROTOCOLS = ROOT / "protocols"
VECTORS = PROTOCOLS / "vectors"
T0 = 1_800_000_000.0

TOKENS = load_vectors(VECTORS, "tokens.json")
EXCHANGES = load_vectors(VECTORS, "exchanges.json")


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def user_issuer_jwks() -> dict[str, Any]:
    return dict(json.loads((VECTORS / "keys" / "user-issuer.jwks.json").read_text()))


def user_issuer_transport() -> httpx.MockTransport:
    """Serves the conformance user issuer's JWKS at the jwks_uri token-service.toml names."""
    jwks = user_issuer_jwks()

    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == "https://users.conformance.test/jwks.json":
            return httpx.Response(200, json=jwks)
        return httpx.Response(404)

    return httpx.MockTransport(handler)


def conformance_service(
    clock: Callable[[], float] | None = None,
    *,
    issuer: str | None = None,
    allow_repeated_agents: bool = False,
) -> TokenService:
    config = load_config(VECTORS / "token-service.toml")
    if issuer is not None:
        config = config.model_copy(update={"issuer": issuer})
    if allow_repeated_agents:  # two agents only make a second hop by coming back
        config = config.model_copy(update={"allow_repeated_agents": True})
    return TokenService(
        config,
        clock=clock or Clock(),
        http_client=httpx.AsyncClient(transport=user_issuer_transport()),
    )


@asynccontextmanager
async def open_service() -> AsyncIterator[tuple[TokenService, httpx.AsyncClient, Clock]]:
    clock = Clock()
    service = conformance_service(clock)
    async with service.app.router.lifespan_context(service.app):
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport) as client:
            yield service, client, clock


def settings_for(service: TokenService) -> ConformanceSettings:
    return load_settings(VECTORS / "conformance.toml", issuer=service.issuer)


async def run_token_vectors(document: Mapping[str, Any]) -> list[VectorResult]:
    """Run token vectors through :class:`TokenVerifier` with the document's context."""
    ctx = document["context"]
    verifier = TokenVerifier(
        issuers=ctx["issuers"],
        keys=StaticKeys(document["jwks"]),
        leeway=ctx["leeway"],
        max_bytes=ctx["max_bytes"],
        max_actor_depth=ctx["max_actor_depth"],
        algorithms=ctx["algorithms"],
        clock=lambda: float(ctx["now"]),
        cache_size=0,
    )
    results = []
    for vector in document["vectors"]:
        expect = vector["expect"]
        expected = expect["verdict"] + (f" {expect['check']}" if "check" in expect else "")
        required = vector.get("required_scopes", ())
        detail = ""
        try:
            principal = await verifier.verify(
                vector["token"], audience=ctx["audience"], required_scopes=required
            )
        except InvalidTokenError as exc:
            got = f"reject {exc.check}"
        except InsufficientScopeError as exc:
            got = "forbidden"
            if list(exc.missing) != expect.get("missing", list(exc.missing)):
                detail = f"missing {list(exc.missing)}"
        else:
            got = "accept"
            seen = {
                "user": principal.user,
                "actors": list(principal.actors.subjects()),
                "scopes": sorted(principal.scopes),
                "origin": principal.origin,
            }
            detail = ", ".join(f"{k}={v!r}" for k, v in seen.items() if expect.get(k, v) != v)
        outcome = "PASS" if got == expected and not detail else "FAIL"
        rule = ",".join(vector["rules"])
        results.append(VectorResult(vector["id"], rule, expected, got, outcome, detail))
    return results


@pytest.mark.anyio
@pytest.mark.parametrize("vector", EXCHANGES["vectors"], ids=lambda v: v["id"])
async def test_exchange_vector(vector: dict[str, Any]) -> None:
    async with open_service() as (service, client, clock):
        results = await run_exchange_vectors(
            settings_for(service), [vector], http=client, clock=clock, strict_reasons=True
        )
    assert [r.outcome for r in results] == ["PASS"], format_table(results)
    # TS-9: every decision leaves an audit record; the last one is this vector's request.
    last = (await service.audit.query())[-1]
    if vector["expect"]["status"] == 200:
        assert (last.decision, last.error) == ("issued", None)
    else:
        assert (last.decision, last.error) == ("denied", vector["expect"]["error"])


@pytest.mark.anyio
async def test_all_exchange_vectors_in_one_service() -> None:
    """One service for the whole run, as the remote command uses it (state carries over)."""
    async with open_service() as (service, client, clock):
        results = await run_exchange_vectors(
            settings_for(service),
            EXCHANGES["vectors"],
            http=client,
            clock=clock,
            strict_reasons=True,
        )
    table = format_table(results)
    assert all(r.outcome == "PASS" for r in results), table
    assert table.splitlines()[-1] == f"{len(results)} passed, 0 failed, 0 skipped"


@pytest.mark.anyio
@pytest.mark.parametrize("vector", TOKENS["vectors"], ids=lambda v: v["id"])
async def test_token_vector(vector: dict[str, Any]) -> None:
    results = await run_token_vectors({**TOKENS, "vectors": [vector]})
    assert [r.outcome for r in results] == ["PASS"], format_table(results)


@pytest.mark.anyio
async def test_a_wrong_expectation_fails() -> None:
    """The runners can fail: flip one verdict of each kind and see FAIL."""
    token = {**TOKENS["vectors"][0], "expect": {"verdict": "reject", "check": "signature"}}
    assert [r.outcome for r in await run_token_vectors({**TOKENS, "vectors": [token]})] == ["FAIL"]
    vector = next(v for v in EXCHANGES["vectors"] if v["id"] == "X-01")
    wrong = {**vector, "expect": {**vector["expect"], "token": {"scope": "read write"}}}
    denied = {**vector, "expect": {"status": 400, "error": "invalid_grant"}}
    async with open_service() as (service, client, clock):
        results = await run_exchange_vectors(
            settings_for(service), [wrong, denied], http=client, clock=clock, strict_reasons=True
        )
    assert [r.outcome for r in results] == ["FAIL", "FAIL"]
    assert "scope" in results[0].detail
    assert results[1].got == "200"


def profile_rules() -> set[str]:
    text = (PROTOCOLS / "delegation-profile.md").read_text(encoding="utf-8")
    return set(re.findall(r"\*\*\[([A-Z]{2,3}-\d+[a-z]?)\]\*\*", text))


def test_every_profile_rule_has_a_vector_and_every_vector_a_rule() -> None:
    rules = profile_rules()
    assert len(rules) >= 40
    used = {r for doc in (TOKENS, EXCHANGES) for v in doc["vectors"] for r in v["rules"]}
    assert rules - used == set(), "profile rules without a vector"
    assert used - rules == set(), "vectors citing rules the profile does not define"


def test_vector_ids_are_unique_and_plentiful() -> None:
    ids = [v["id"] for doc in (TOKENS, EXCHANGES) for v in doc["vectors"]]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 40
    verdicts = {v["expect"]["verdict"] for v in TOKENS["vectors"]}
    assert verdicts == {"accept", "reject", "forbidden"}
    statuses = {v["expect"]["status"] for v in EXCHANGES["vectors"]}
    assert statuses == {200, 400, 401}


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_vectors_match_the_generator() -> None:
    gen = load_script("gen_vectors")
    for name, content in gen.build().items():
        current = (VECTORS / name).read_text(encoding="utf-8")
        if name == "tokens.json":
            current, content = gen.strip_signatures(current), gen.strip_signatures(content)
        assert current == content, f"{name} is stale: run scripts/gen_vectors.py"


def test_test_keys_are_labelled_and_public_jwks_has_no_private_members() -> None:
    readme = (VECTORS / "keys" / "README.md").read_text(encoding="utf-8")
    assert "TEST KEYS ONLY" in readme
    assert "never" in readme.lower()
    for key in user_issuer_jwks()["keys"]:
        assert not {"d", "p", "q"} & set(key)
