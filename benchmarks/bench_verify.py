"""Figure 1 (per-request cost): our verification next to the raw joserfc floor.

* raw: ``joserfc.jwt.decode`` (ES256 signature) + ``typ`` check + ``JWTClaimsRegistry``
  (iss, aud, sub, exp) on a token never seen before: the least any correct check costs.
* first: ``TokenVerifier.verify`` on a token it has never seen (every check, then cached).
* again: ``TokenVerifier.verify`` on a token it verified before (the cached path, which
  still checks expiry, audience and that the key is still served).

Also checks, not timed, that the cached path did not weaken anything: an expired cached
token is refused, and a cached token whose key left the JWKS is refused.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import anyio
from _common import Plan, ratio, summarize
from _issuer import ISSUER, BenchIssuer
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

from keycard_agents import InvalidTokenError
from keycard_agents.auth import StaticKeys, TokenVerifier

AUDIENCE = "https://agent.bench.example"


class MutableKeys:
    """A key resolver whose keys can be withdrawn (a JWKS rotation, as the cache sees it)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self._static = StaticKeys({ISSUER: jwks})
        self.withdrawn: set[str] = set()

    async def resolve(self, *, issuer: str, kid: str | None, alg: str) -> Key:
        if kid in self.withdrawn:
            raise InvalidTokenError("key withdrawn", check="unknown_key")
        return await self._static.resolve(issuer=issuer, kid=kid, alg=alg)

    def known(self, *, issuer: str, kid: str | None) -> bool:
        return kid not in self.withdrawn and self._static.known(issuer=issuer, kid=kid)


def _raw_verifier(jwks: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    keys = KeySet.import_key_set(jwks)
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": AUDIENCE},
        sub={"essential": True},
        exp={"essential": True},
        leeway=60,
    )

    def verify(token: str) -> dict[str, Any]:
        decoded = jwt.decode(token, keys, algorithms=["ES256"])
        if decoded.header.get("typ") != "at+jwt":
            raise JoseError("typ")
        registry.validate(decoded.claims)
        return decoded.claims

    return verify


async def _measure(plan: Plan, issuer: BenchIssuer) -> dict[str, Any]:
    count = 300 if plan.quick else 3000
    reps = 2 if plan.quick else 5
    jwks = issuer.jwks()
    raw_verify = _raw_verifier(jwks)
    raw: list[float] = []
    first: list[float] = []
    again: list[float] = []
    chunk = 50
    for _ in range(reps):
        # Raw, first-seen and seen-again alternate in small chunks, so a burst of load from
        # elsewhere on the machine hits all three alike instead of one of them.
        verifier = TokenVerifier(issuers=[ISSUER], keys=StaticKeys({ISSUER: jwks}))
        raw_tokens = [issuer.token(aud=AUDIENCE) for _ in range(count)]
        fresh_tokens = [issuer.token(aud=AUDIENCE) for _ in range(count)]
        seen = fresh_tokens[0]
        await verifier.verify(seen, audience=AUDIENCE)
        totals = [0.0, 0.0, 0.0]
        gc.collect()
        for offset in range(0, count, chunk):
            start = time.perf_counter()
            for token in raw_tokens[offset : offset + chunk]:
                raw_verify(token)
            middle = time.perf_counter()
            for token in fresh_tokens[offset : offset + chunk]:
                await verifier.verify(token, audience=AUDIENCE)
            later = time.perf_counter()
            for _ in range(chunk):
                await verifier.verify(seen, audience=AUDIENCE)
            end = time.perf_counter()
            totals[0] += middle - start
            totals[1] += later - middle
            totals[2] += end - later
        raw.append(totals[0] / count * 1e3)
        first.append(totals[1] / count * 1e3)
        again.append(totals[2] / count * 1e3)

    first_ratio = [ratio(f, r) for f, r in zip(first, raw, strict=True)]
    again_ratio = [ratio(a, r) for a, r in zip(again, raw, strict=True)]
    return {
        "tokens_per_rep": count,
        "raw_joserfc_ms": summarize(raw),
        "first_seen_ms": summarize(first),
        "seen_again_ms": summarize(again),
        "first_seen_vs_raw": summarize([v for v in first_ratio if v is not None]),
        "seen_again_vs_raw": summarize([v for v in again_ratio if v is not None]),
        "checks": await _checks(issuer),
    }


async def _checks(issuer: BenchIssuer) -> dict[str, bool]:
    """The cached path still refuses what it must (not timed)."""
    now = [time.time()]
    keys = MutableKeys(issuer.jwks())
    verifier = TokenVerifier(issuers=[ISSUER], keys=keys, clock=lambda: now[0], leeway=0)
    token = issuer.token(aud=AUDIENCE, lifetime=60)
    await verifier.verify(token, audience=AUDIENCE)
    await verifier.verify(token, audience=AUDIENCE)  # cached now
    results: dict[str, bool] = {}
    now[0] += 120
    try:
        await verifier.verify(token, audience=AUDIENCE)
        results["expired_cached_token_refused"] = False
    except InvalidTokenError as exc:
        results["expired_cached_token_refused"] = exc.check == "expired"
    now[0] = time.time()
    token = issuer.token(aud=AUDIENCE, lifetime=600)
    await verifier.verify(token, audience=AUDIENCE)
    keys.withdrawn.add(issuer.kid)
    try:
        await verifier.verify(token, audience=AUDIENCE)
        results["withdrawn_key_refused"] = False
    except InvalidTokenError:
        results["withdrawn_key_refused"] = True
    keys.withdrawn.clear()
    try:
        await verifier.verify(token, audience="https://other.bench.example")
        results["wrong_audience_cached_token_refused"] = False
    except InvalidTokenError as exc:
        results["wrong_audience_cached_token_refused"] = exc.check == "audience"
    return results


def run(plan: Plan, issuer: BenchIssuer) -> dict[str, Any]:
    result: dict[str, Any] = anyio.run(_measure, plan, issuer)
    plan.log(
        "  verify: raw {:.3f} ms, first {:.3f} ms, again {:.4f} ms".format(
            result["raw_joserfc_ms"]["median"],
            result["first_seen_ms"]["median"],
            result["seen_again_ms"]["median"],
        )
    )
    return result
