"""The verified identity: users as (origin issuer, sub), actor chains, token profiles.

These are the values an agent authorizes on and keys its per-user state on, so equality,
hashing and copying must keep the issuer, and the chain must keep its order.
"""

from __future__ import annotations

import copy
import pickle
from datetime import datetime, timezone
from typing import Any

import pytest

from keycard_agents import Actor, ActorChain, Principal, UserId
from keycard_agents._jose._profiles import accepted_types
from keycard_agents._jose._subjects import subject_is_client
from keycard_agents.auth import TokenProfile

ISS = "https://issuer.test"
OTHER = "https://other-issuer.test"


def principal(**claims: Any) -> Principal:
    base: dict[str, Any] = {"iss": ISS, "sub": "alice", "aud": "https://cal.test"}
    base.update(claims)
    return Principal.from_claims({k: v for k, v in base.items() if v is not None})


def test_user_ids_are_equal_only_with_the_same_issuer_and_subject() -> None:
    alice = UserId("alice", issuer=ISS)
    assert alice == UserId("alice", issuer=ISS)
    assert (alice != UserId("alice", issuer=ISS)) is False
    assert alice != UserId("alice", issuer=OTHER)
    assert alice != UserId("bob", issuer=ISS)
    assert alice != "alice"  # never equal to the bare sub
    assert not alice == "alice"  # noqa: SIM201 (the == operator is what is tested)
    assert {alice, UserId("alice", issuer=ISS), UserId("alice", issuer=OTHER)} == {
        alice,
        UserId("alice", issuer=OTHER),
    }
    assert hash(alice) == hash(UserId("alice", issuer=ISS))
    assert hash(alice) == hash((ISS, "alice"))
    assert str(alice) == "alice"
    assert repr(alice) == "UserId('alice', issuer='https://issuer.test')"


def pickled(value: UserId) -> Any:
    return pickle.loads(pickle.dumps(value))  # noqa: S301 (our own object, just pickled)


@pytest.mark.parametrize("clone", [copy.copy, copy.deepcopy, pickled])
def test_user_ids_keep_their_issuer_when_copied(clone: Any) -> None:
    alice = UserId("alice", issuer=OTHER)
    copied = clone(alice)
    assert copied == alice
    assert copied.issuer == OTHER
    assert copied.sub == "alice"


def test_actor_chain_indexing_slicing_and_equality() -> None:
    chain = ActorChain([Actor("b", iss=ISS), Actor("a", iss=ISS), Actor("u")])
    assert chain[0] == Actor("b", iss=ISS)
    assert chain[-1] == Actor("u")
    earlier = chain[1:]
    assert isinstance(earlier, ActorChain)
    assert earlier == ActorChain([Actor("a", iss=ISS), Actor("u")])
    assert chain != earlier
    assert chain == ActorChain(list(chain))
    assert (chain == ("b", "a", "u")) is False
    assert chain.__eq__(("b", "a", "u")) is NotImplemented
    assert hash(chain) == hash(ActorChain(list(chain)))
    assert len({chain, ActorChain(list(chain)), earlier}) == 2
    assert repr(chain) == "ActorChain(['b', 'a', 'u'])"
    assert [a.sub for a in chain] == ["b", "a", "u"]


def test_principal_from_claims_reads_every_field() -> None:
    act = {"sub": "planner", "iss": ISS, "client_id": "planner-id", "act": {"sub": "first"}}
    p = principal(
        scope="read write",
        act=act,
        client_id="planner-id",
        txn="t-1",
        jti="j-1",
        exp=1_700_000_300,
        iat=1_700_000_000,
        aud=["https://cal.test", "https://mail.test"],
    )
    assert p.user == "alice"
    assert p.issuer == ISS
    assert p.origin == ISS
    assert p.audience == ("https://cal.test", "https://mail.test")
    assert p.scopes == frozenset({"read", "write"})
    assert p.actors == ActorChain([Actor("planner", ISS, "planner-id"), Actor("first")])
    assert (p.client_id, p.txn, p.jti) == ("planner-id", "t-1", "j-1")
    assert (p.expires_at, p.issued_at) == (1_700_000_300, 1_700_000_000)
    assert p.expires == datetime(2023, 11, 14, 22, 18, 20, tzinfo=timezone.utc)
    assert p.claims["act"] == act
    assert p.chain == ("alice", "first", "planner")
    assert str(p) == "alice → first → planner"
    assert p.render_chain(receiver="calendar", arrow=" > ") == "alice > first > planner > calendar"


def test_principal_defaults_without_optional_claims() -> None:
    p = principal()
    assert p.audience == ("https://cal.test",)
    assert p.scopes == frozenset()
    assert p.actors == ActorChain()
    assert p.actors.current is None
    assert (p.client_id, p.txn, p.jti, p.expires_at, p.expires) == (None,) * 5
    assert principal(aud=None).audience == ()


def test_origin_comes_from_an_iss_sub_subject_identifier() -> None:
    sub_id = {"format": "iss_sub", "iss": OTHER, "sub": "alice"}
    p = principal(sub_id=sub_id)
    assert p.issuer == ISS
    assert p.origin == OTHER
    assert p.user_id == UserId("alice", issuer=OTHER)
    assert p.user_id != principal().user_id
    # Another format says nothing about the origin.
    assert principal(sub_id={"format": "opaque", "id": "x"}).origin == ISS
    # Built directly, the origin defaults to the issuer.
    direct = Principal(user="alice", issuer=ISS, audience=(), scopes=frozenset())
    assert direct.origin == ISS
    assert (
        Principal(user="alice", issuer=ISS, audience=(), scopes=frozenset(), origin=OTHER).origin
        == OTHER
    )


def test_task_owner_names_origin_user_and_each_actor_with_its_issuer() -> None:
    act = {"sub": "planner", "iss": ISS, "act": {"sub": "first"}}
    p = principal(act=act, sub_id={"format": "iss_sub", "iss": OTHER, "sub": "alice"})
    assert p.task_owner == (
        '["https://other-issuer.test","alice",[["planner","https://issuer.test"],["first",""]]]'
    )


def test_has_scopes_needs_every_required_scope() -> None:
    p = principal(scope="read write")
    assert p.has_scopes(["read"])
    assert p.has_scopes(frozenset({"read", "write"}))
    assert p.has_scopes([])
    assert not p.has_scopes(["read", "admin"])


def test_a_client_acting_for_itself_is_no_user() -> None:
    assert subject_is_client(principal(sub="svc", client_id="svc"))
    assert subject_is_client(principal(sub="alice", client_id="x", gty="client-credentials"))
    assert subject_is_client(principal(sub="alice", gty="client_credentials"))
    assert not subject_is_client(principal(sub="alice", client_id="svc"))
    assert not subject_is_client(principal(sub="alice"))  # no client named at all
    assert not subject_is_client(principal(sub="alice", gty="password"))
    # A delegated token whose sub happens to equal the client is still a user's.
    assert not subject_is_client(principal(sub="svc", client_id="svc", act={"sub": "a"}))


def test_profile_names_the_client_and_describes_its_types() -> None:
    keycloak = TokenProfile(token_types=("JWT", None), require_jti=False, client_claim="azp")
    assert keycloak.client_of({"azp": "web", "client_id": "other"}) == "web"
    assert keycloak.client_of({"client_id": "other"}) is None
    assert keycloak.client_of({"azp": 7}) is None
    assert TokenProfile().client_of({"client_id": "cli", "azp": "web"}) == "cli"
    assert keycloak.describe_types() == "no 'typ' or 'jwt'"
    assert TokenProfile(token_types=("b+jwt", "A+JWT")).describe_types() == "'a+jwt' or 'b+jwt'"


def test_actor_chain_round_trips_through_the_act_claim() -> None:
    act = {
        "sub": "b",
        "iss": ISS,
        "client_id": "b-client",
        "act": {"sub": "a", "client_id": "a-client", "act": {"sub": "first", "iss": OTHER}},
    }
    chain = ActorChain.from_act_claim(act)
    assert chain.to_act_claim() == act
    assert chain[0] == Actor("b", iss=ISS, client_id="b-client")
    assert ActorChain().to_act_claim() is None
    # Chains that differ hash apart (they key caches of verified principals).
    assert hash(chain) != hash(chain[1:])


def test_profiles_list_their_types_with_no_typ_first() -> None:
    assert TokenProfile(token_types=("1+jwt", None)).describe_types() == "no 'typ' or '1+jwt'"
    assert accepted_types([TokenProfile(token_types=("JWT",)), TokenProfile()]) == {
        "jwt",
        "at+jwt",
    }
