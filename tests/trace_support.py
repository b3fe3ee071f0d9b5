"""A real delegation chain with a denied hop, recorded by the token service and the agents.

Shared by the audit trail, CLI and audit page tests. The chain, on one ``txn``:

    alice --sign-in--> a --exchange--> b --exchange--> c
                       |               `--exchange--> D   (denied: invalid_target)
                       `--exchange--> c (scope write)      (denied: invalid_scope)

a, b and c record the tasks they served and the calls they made with an AuditRecorder.
"""

from __future__ import annotations

from dataclasses import dataclass

from sts_support import ISSUER, A, B, C, D, World, claims_of

from keycard_agents import Principal
from keycard_agents.audit import AgentAuditStore, AuditRecorder, MemoryAgentAuditStore
from keycard_agents.auth import StaticKeys, TokenVerifier
from keycard_agents.sts import hash_secret

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
ADMIN = {"token_hash": hash_secret(ADMIN_TOKEN, cost=2**4)}


@dataclass
class Scenario:
    txn: str
    user_token: str
    store: AgentAuditStore
    recorders: dict[str, AuditRecorder]


async def run_scenario(w: World, *, store: AgentAuditStore | None = None) -> Scenario:
    """Drive the chain above through the real token endpoint; agents record as they go."""
    store = store if store is not None else MemoryAgentAuditStore()
    clock = w.clock
    rec = {
        name: AuditRecorder(agent=name, resource=url, store=store, clock=clock)
        for name, url in (("a", A), ("b", B), ("c", C))
    }
    verifier = TokenVerifier(
        issuers=[ISSUER], keys=StaticKeys({ISSUER: w.service.keys.public_jwks()}), clock=clock
    )

    async def principal(token: str, audience: str) -> Principal:
        return await verifier.verify(token, audience=audience)

    user_token = await w.user_token(scope="read write")
    txn = str(claims_of(user_token)["txn"])
    at_a = await principal(user_token, A)
    a_started = clock()

    clock.advance(0.010)
    call_ab = clock()
    r_ab = await w.exchange("a", user_token, B)
    assert r_ab.status_code == 200, r_ab.text
    token_b = r_ab.json()["access_token"]
    at_b = await principal(token_b, B)
    clock.advance(0.005)
    b_started = clock()

    clock.advance(0.010)
    call_bc = clock()
    r_bc = await w.exchange("b", token_b, C, scope="read")
    assert r_bc.status_code == 200, r_bc.text
    at_c = await principal(r_bc.json()["access_token"], C)
    clock.advance(0.002)
    await rec["c"].record_served(
        principal=at_c, task_id="task-c", skill="lookup", outcome="completed", started=clock()
    )
    clock.advance(0.020)
    await rec["b"].record_call(
        principal=at_b,
        target=C,
        dependency="calendar",
        scopes_requested=["read"],
        scopes_granted=["read"],
        outcome="completed",
        started=call_bc,
    )

    clock.advance(0.003)
    call_bd = clock()
    r_bd = await w.exchange("b", token_b, D, scope="read")
    assert r_bd.status_code == 400, r_bd.text
    denial = r_bd.json()
    await rec["b"].record_call(
        principal=at_b,
        target=D,
        dependency="mailer",
        scopes_requested=["read"],
        outcome="denied",
        started=call_bd,
        error=denial["error"],
        reason=denial["error_description"],
    )
    clock.advance(0.004)
    await rec["b"].record_served(
        principal=at_b, task_id="task-b", skill="plan", outcome="completed", started=b_started
    )
    await rec["a"].record_call(
        principal=at_a,
        target=B,
        scopes_granted=["read", "write"],
        outcome="completed",
        started=call_ab,
    )

    clock.advance(0.001)
    r_ac = await w.exchange("a", user_token, C, scope="write")
    assert r_ac.status_code == 400, r_ac.text
    clock.advance(0.001)
    await rec["a"].record_served(
        principal=at_a,
        task_id="task-a",
        skill="trip",
        outcome="failed",
        started=a_started,
        reason="could not book: calendar write access was denied",
    )
    return Scenario(txn=txn, user_token=user_token, store=store, recorders=rec)
