#!/usr/bin/env python3
"""Generate the conformance vectors of ``protocols/vectors/`` (delegation profile).

    .venv/bin/python scripts/gen_vectors.py          # write the files
    .venv/bin/python scripts/gen_vectors.py --check  # exit 1 when they are out of date

Test keys live in ``protocols/vectors/keys/`` and are created once (kept when present),
so the vectors are reproducible: EdDSA and RS256 signatures are deterministic; ES256
ones are not, which is why ``--check`` and the test suite compare tokens without their
signature segment. Token vectors (RFC 7515 §5.2, RFC 7519 §7.2, RFC 9068 §4,
RFC 8725 §3) are signed here; exchange vectors (RFC 8693 §2) are request templates
the runner in ``keycard_agents/_conformance.py`` fills in against a live token service.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, OKPKey, RSAKey

from keycard_agents._jose._keys import jws_registry
from keycard_agents.auth import SigningKey
from keycard_agents.sts import hash_secret, verify_secret

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "protocols" / "vectors"
KEYS = VECTORS / "keys"

NOW = 1_750_000_000  # the verifier's injected clock for token vectors (2025-06-15T15:06:40Z)
FAR = 4_102_444_800  # 2100-01-01: exp of tokens meant to be valid
USER_ISSUER = "https://users.conformance.test"
OTHER_ISSUER = "https://rogue-issuer.conformance.test"
ALPHA = "https://alpha.conformance.test/"
BETA = "https://beta.conformance.test/"
LOCAL_ISSUER = "https://sts.conformance.test"
BETA_SECRET = "conformance-beta-secret-TEST-ONLY-not-for-production"  # noqa: S105
ALPHA_ID = "conformance-alpha"
BETA_ID = "conformance-beta"
UNKNOWN = "https://unregistered.conformance.test/"
ALGS = ("ES256", "EdDSA", "RS256")
ACCESS_URN = "urn:ietf:params:oauth:token-type:access_token"
A_RES, B_RES = "${alpha.resource}", "${beta.resource}"
A_ID, B_ID = "${alpha.client_id}", "${beta.client_id}"
OK = {"status": 200}


# ------------------------------------------------------------------------------ keys


def _key_file(name: str) -> Path:
    return KEYS / f"{name}.private.jwk.json"


def _load_or_create(name: str, kid: str, alg: str) -> SigningKey:
    path = _key_file(name)
    if path.exists():
        return SigningKey.from_jwk(json.loads(path.read_text(encoding="utf-8")), alg=alg)
    params = {"kid": kid, "alg": alg, "use": "sig"}
    if alg == "ES256":
        key: Any = ECKey.generate_key("P-256", parameters=params)
    elif alg == "EdDSA":
        key = OKPKey.generate_key("Ed25519", parameters=params)
    else:
        key = RSAKey.generate_key(2048, parameters=params)
    KEYS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(key.as_dict(private=True), indent=2) + "\n", encoding="utf-8")
    return SigningKey.from_jwk(key.as_dict(private=True), alg=alg)


def load_keys() -> dict[str, SigningKey]:
    return {
        "user-ed25519": _load_or_create("user-ed25519", "user-ed25519", "EdDSA"),
        "user-es256": _load_or_create("user-es256", "user-es256", "ES256"),
        "user-rs256": _load_or_create("user-rs256", "user-rs256", "RS256"),
        "user-ed25519-next": _load_or_create("user-ed25519-next", "user-ed25519-next", "EdDSA"),
        # Not published: signs with the kid of user-ed25519, so signatures must fail.
        "rogue": _load_or_create("rogue", "user-ed25519", "EdDSA"),
        "alpha": _load_or_create("alpha", "alpha-es256", "ES256"),
    }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def compact(
    header: dict[str, Any], payload: Any, key: SigningKey | None, *, extra_header: bytes = b""
) -> str:
    """A compact JWS with exactly this header; ``payload`` may be any JSON (or bytes).

    ``extra_header`` is appended raw inside the header object (JSON too deep to encode).
    """
    raw = payload if isinstance(payload, bytes) else _json(payload)
    head = _json(header)
    if extra_header:
        head = head[:-1] + b"," + extra_header + b"}"
    signing_input = f"{_b64(head)}.{_b64(raw)}".encode()
    if key is None:
        return signing_input.decode() + "."
    alg = jws_registry(ALGS).get_alg(key.alg if header["alg"] == "Ed25519" else header["alg"])
    signature = alg.sign(signing_input, key.key)
    return f"{signing_input.decode()}.{_b64(signature)}"


# ---------------------------------------------------------------------- token vectors


def _claims(**over: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": USER_ISSUER,
        "sub": "alice",
        "aud": ALPHA,
        "scope": "read write",
        "client_id": "conformance-app",
        "txn": "txn-conformance-1",
        "iat": NOW,
        "nbf": NOW,
        "exp": FAR,
        "jti": "jti-placeholder",
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _chain(*subs: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = None
    for sub in reversed(subs):
        level: dict[str, Any] = {"sub": sub, "iss": LOCAL_ISSUER}
        if node is not None:
            level["act"] = node
        node = level
    return node


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return value


def token_vectors(keys: dict[str, SigningKey]) -> dict[str, Any]:
    ed, es, rs = keys["user-ed25519"], keys["user-es256"], keys["user-rs256"]
    vectors: list[dict[str, Any]] = []

    def add(vid: str, rules: str, description: str, token: str, expect: Any, **extra: Any) -> None:
        vector = {"id": vid, "rules": rules.split(), "description": description, "token": token}
        vectors.append({**vector, **extra, "expect": expect})

    def signed(key: SigningKey, typ: str = "at+jwt", alg: str | None = None, **claims: Any) -> str:
        body = _claims(**{"jti": f"jti-{len(vectors) + 1:02d}", **claims})
        return compact({"alg": alg or key.alg, "kid": key.kid, "typ": typ}, body, key)

    def raw(header: dict[str, Any], payload: Any = None, key: SigningKey | None = ed) -> str:
        return compact(header, _claims() if payload is None else payload, key)

    def reject(check: str) -> dict[str, Any]:
        return {"verdict": "reject", "check": check}

    def accept(actors: list[str], scopes: list[str]) -> dict[str, Any]:
        return {"verdict": "accept", "user": "alice", "actors": actors, "scopes": scopes}

    ok = accept([], ["read", "write"])
    at = {"typ": "at+jwt"}
    header = {"alg": "HS256", "kid": rs.kid, **at}
    signing_input = f"{_b64(_json(header))}.{_b64(_json(_claims()))}"
    mac = hmac.new(rs.key.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    # fmt: off
    add("T-01", "RS-3 RS-7", "valid user token, EdDSA", signed(ed), ok)
    add("T-02", "RS-3 RS-7", "valid user token, ES256", signed(es), ok)
    add("T-03", "RS-3 RS-7", "valid user token, RS256", signed(rs), ok)
    add("T-04", "RS-3", "alg 'Ed25519' (RFC 9864) names EdDSA", signed(ed, alg="Ed25519"), ok)
    add("T-05", "TK-1 RS-4", "typ 'application/at+jwt' is the same type",
        signed(ed, typ="application/at+jwt"), ok)
    add("T-06", "CL-2 RS-11 RS-13", "delegated token: act chain beta (current) then alpha",
        signed(ed, client_id=BETA_ID, act=_chain(BETA_ID, ALPHA_ID), scope="read"),
        accept([BETA_ID, ALPHA_ID], ["read"]))
    add("T-07", "RS-11 LIM-2", "act chain exactly at the depth limit (5)",
        signed(ed, act=_chain("a1", "a2", "a3", "a4", "a5")),
        {**ok, "actors": ["a1", "a2", "a3", "a4", "a5"]})
    add("T-08", "RS-11 LIM-2", "act chain deeper than the limit (6)",
        signed(ed, act=_chain("a1", "a2", "a3", "a4", "a5", "a6")), reject("depth"))
    add("T-09", "RS-11", "act level without a string sub",
        signed(ed, act={"sub": BETA_ID, "act": {"client_id": ALPHA_ID}}), reject("claims"))
    add("T-10", "RS-1 LIM-1", "token longer than 8192 bytes", signed(ed, pad="x" * 8200),
        reject("size"))
    add("T-11", "RS-2", "two segments only", ".".join(signed(ed).split(".")[:2]),
        reject("malformed"))
    add("T-12", "RS-2", "header uses 'crit'",
        raw({"alg": "EdDSA", "kid": ed.kid, **at, "crit": ["exp"]}), reject("malformed"))
    add("T-13", "RS-2", "payload is a JSON array, not an object",
        raw({"alg": "EdDSA", "kid": ed.kid, **at}, [1, 2]), reject("malformed"))
    add("T-14", "RS-3", "alg 'none' (unsigned)", raw({"alg": "none", **at}, key=None),
        reject("algorithm"))
    add("T-15", "RS-3", "HS256 keyed with the issuer's RSA public key (algorithm confusion)",
        f"{signing_input}.{_b64(mac)}", reject("algorithm"))
    add("T-16", "RS-6 RS-3", "ES256 header naming the RSA key",
        raw({"alg": "ES256", "kid": rs.kid, **at}, key=es), reject("algorithm"))
    add("T-17", "TK-1 RS-4", "no typ header", raw({"alg": "EdDSA", "kid": ed.kid}),
        reject("type"))
    add("T-18", "TK-1 RS-4", "typ 'JWT'", signed(ed, typ="JWT"), reject("type"))
    add("T-19", "TK-2 RS-4",
        "a client assertion (typ client-authentication+jwt) presented as an access token",
        signed(ed, typ="client-authentication+jwt"), reject("type"))
    add("T-20", "RS-5", "untrusted issuer", signed(ed, iss=OTHER_ISSUER), reject("issuer"))
    add("T-21", "RS-5", "no iss claim", signed(ed, iss=None), reject("claims"))
    add("T-22", "RS-6", "unknown kid", raw({"alg": "EdDSA", "kid": "no-such-key", **at}),
        reject("unknown_key"))
    add("T-23", "RS-6", "no kid while the issuer publishes two EdDSA keys",
        raw({"alg": "EdDSA", **at}), reject("unknown_key"))
    add("T-24", "RS-7", "signed by a key that is not the issuer's (same kid)",
        signed(keys["rogue"]), reject("signature"))
    good = signed(ed, scope="read").split(".")
    tampered = _b64(json.dumps(_claims(jti="jti-25", scope="read write admin")).encode())
    add("T-25", "RS-7", "payload changed after signing", f"{good[0]}.{tampered}.{good[2]}",
        reject("signature"))
    for vid, claim in (("T-26", "jti"), ("T-27", "exp"), ("T-28", "iat"), ("T-29", "sub")):
        rules = "RS-8 CL-9" if claim == "jti" else "RS-8"
        add(vid, rules, f"no {claim} claim", signed(ed, **{claim: None}), reject("claims"))
    add("T-30", "RS-8 CL-1", "empty sub", signed(ed, sub=""), reject("claims"))
    add("T-31", "RS-8", "exp is a string", signed(ed, exp=str(FAR)), reject("claims"))
    add("T-32", "RS-8 CL-5", "scope is a list", signed(ed, scope=["read"]), reject("claims"))
    add("T-33", "RS-9 CL-4", "aud is another resource", signed(ed, aud=BETA), reject("audience"))
    add("T-34", "RS-9", "aud list that contains this resource", signed(ed, aud=[BETA, ALPHA]), ok)
    add("T-35", "RS-9", "aud list without this resource", signed(ed, aud=[BETA]),
        reject("audience"))
    add("T-36", "RS-10 LIM-3", "expired 61 s ago (beyond the 60 s leeway)",
        signed(ed, exp=NOW - 61), reject("expired"))
    add("T-37", "RS-10 LIM-3", "expired 30 s ago (within the leeway)", signed(ed, exp=NOW - 30),
        ok)
    add("T-38", "RS-10", "nbf one hour ahead", signed(ed, nbf=NOW + 3600),
        reject("not_yet_valid"))
    add("T-39", "RS-10", "iat one hour ahead", signed(ed, iat=NOW + 3600, nbf=None),
        reject("issued_in_future"))
    add("T-40", "RS-12", "valid token without the scope the skill requires",
        signed(ed, scope="read"), {"verdict": "forbidden", "missing": ["write"]},
        required_scopes=["read", "write"])
    add("T-41", "RS-12 RS-13", "valid token with the required scope",
        signed(ed, scope="read", act=_chain(ALPHA_ID)), accept([ALPHA_ID], ["read"]),
        required_scopes=["read"])
    add("T-42", "RS-6", "signed by the issuer's second (rotated-in) EdDSA key",
        signed(keys["user-ed25519-next"]), ok)
    idp = "https://idp.conformance.test"
    add("T-43", "CL-11 RS-14", "delegated token whose sub_id says the user came from another "
        "issuer: the user is (that issuer, sub)",
        signed(ed, act=_chain(ALPHA_ID), sub_id={"format": "iss_sub", "iss": idp, "sub": "alice"}),
        {**accept([ALPHA_ID], ["read", "write"]), "origin": idp})
    add("T-44", "CL-11 RS-8", "sub_id names another subject than sub",
        signed(ed, sub_id={"format": "iss_sub", "iss": idp, "sub": "mallory"}), reject("claims"))
    add("T-45", "CL-11 RS-8", "sub_id is not an object with a format",
        signed(ed, sub_id="alice"), reject("claims"))
    add("T-46", "RS-8", "exp beyond any date (10^400): not a NumericDate",
        signed(ed, exp=10**400), reject("claims"))
    add("T-47", "RS-8", "exp is negative", signed(ed, exp=-1), reject("claims"))
    add("T-48", "RS-2", "payload with exp NaN (not JSON)",
        raw({"alg": "EdDSA", "kid": ed.kid, **at}, _json(_claims()).replace(
            str(FAR).encode(), b"NaN")), reject("malformed"))
    add("T-49", "RS-2", "payload with exp 1e999 (no finite number)",
        raw({"alg": "EdDSA", "kid": ed.kid, **at}, _json(_claims()).replace(
            str(FAR).encode(), b"1e999")), reject("malformed"))
    add("T-50", "RS-2", "header nested 1,400 levels deep",
        compact({"alg": "EdDSA", "kid": ed.kid, **at}, _claims(), ed,
                extra_header=b'"x":' + b"[" * 1400 + b"]" * 1400), reject("malformed"))
    add("T-51", "RS-2", "payload nested 100 levels deep (over the limit of 64)",
        raw({"alg": "EdDSA", "kid": ed.kid, **at}, _claims(extra=_nested(100))),
        reject("malformed"))
    # fmt: on
    jwks = {"keys": [k.public_jwk() for k in (ed, es, rs, keys["user-ed25519-next"])]}
    return {
        "description": (
            "Signed tokens and the verdict a receiving agent (resource server) must reach. "
            "Verify each with the context below: trust `issuers` with the keys in `jwks`, "
            "expect audience `audience`, and use `now` as the current time (an injected "
            "clock: expired tokens stay expired). `check` names the first failing check of "
            "delegation-profile.md §6; `forbidden` means a valid token lacking "
            "`required_scopes` (HTTP 403 insufficient_scope). Generated by "
            "scripts/gen_vectors.py with the TEST-ONLY keys in keys/."
        ),
        "context": {
            "issuers": [USER_ISSUER],
            "audience": ALPHA,
            "now": NOW,
            "leeway": 60,
            "max_bytes": 8192,
            "max_actor_depth": 5,
            "algorithms": list(ALGS),
            "token_types": ["at+jwt"],
        },
        "jwks": {USER_ISSUER: jwks},
        "vectors": vectors,
    }


# -------------------------------------------------------------------- exchange vectors


def _user(**over: Any) -> dict[str, Any]:
    """A user token minted at run time by the conformance user issuer (its key user-ed25519)."""
    claims: dict[str, Any] = {
        "iss": "${user_issuer}",
        "sub": "alice",
        "aud": "${alpha.resource}",
        "client_id": "conformance-app",
        "scope": "read write",
        "txn": "txn-conformance-1",
        "iat": "${now}",
        "nbf": "${now}",
        "exp": "${now+600}",
        "jti": "${jti}",
        "may_act": {"sub": "${alpha.client_id}"},
    }
    claims.update(over)
    token: dict[str, Any] = {"mint": {"claims": {k: v for k, v in claims.items() if v is not None}}}
    if not over:
        # `conformance --user-token-file`: a user token of the service under test, issued
        # for alpha, may stand in for this one (and only this one: others need our keys).
        token["user_token"] = True
    return token


def _mint_chain(*subs: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = None
    for sub in reversed(subs):
        level: dict[str, Any] = {"sub": sub}
        if node is not None:
            level["act"] = node
        node = level
    return node


def _hop(client: str, subject: dict[str, Any], resource: str, **params: Any) -> dict[str, Any]:
    return {
        "exchange": {
            "client": client,
            "subject": subject,
            "params": {"resource": resource, **params},
        }
    }


def _err(error: str, status: int = 400) -> dict[str, Any]:
    return {"status": status, "error": error}


# What our token service's error_description says for each denial: the local test suite
# checks it (so each vector fails for the reason it is about); other services are not
# held to our wording.
REASONS = {
    "X-10": "x-www-form-urlencoded",
    "X-11": "repeated",
    "X-12": "'grant_type'",
    "X-13": "not supported",
    "X-14": "'subject_token'",
    "X-15": "subject_token_type",
    "X-16": "together",
    "X-17": "requested_token_type",
    "X-19": "authentication required",
    "X-20": "client authentication failed",
    "X-21": "unknown client",
    "X-22": "more than one",
    "X-23": "HTTP Basic",
    "X-24": "client_assertion_type",
    "X-25": "(audience)",
    "X-26": "client authentication failed",
    "X-27": "'sub' must equal",
    "X-28": "lives longer",
    "X-29": "already used",
    "X-30": "public client",
    "X-32": "actor_token names",
    "X-33": "actor_token rejected (issuer)",
    "X-34": "(type)",
    "X-35": "(expired)",
    "X-55": "(expired): it has already expired",
    "X-56": "(claims)",
    "X-36": "(issuer)",
    "X-37": "(signature)",
    "X-38": "(malformed)",
    "X-39": "(depth)",
    "X-40": "(audience)",
    "X-41": "is addressed to",
    "X-42": "(may_act)",
    "X-43": "malformed 'may_act'",
    "X-44": "may not act first",
    "X-45": "missing 'resource'",
    "X-46": "exactly one target",
    "X-47": "unknown resource",
    "X-48": "dependencies",
    "X-08": "comes back",
    "X-09": "carries an 'act' claim",
    "X-49": "comes back",
    "X-50": "may only name its own users",
    "X-51": "exceeds",
    "X-52": "exceeds",
    "X-53": "share nothing",
    "X-54": "scope is empty",
    "X-59": "exactly one target",
    "X-60": "unknown audience",
}


def exchange_vectors() -> dict[str, Any]:
    vectors: list[dict[str, Any]] = []

    def add(
        vid: str,
        rules: str,
        description: str,
        expect: dict[str, Any],
        *,
        client: str | None = "alpha",
        subject: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        vector: dict[str, Any] = {"id": vid, "rules": rules.split(), "description": description}
        vector["client"] = client
        vector["subject"] = _user() if subject is None else subject
        vector["params"] = {"resource": B_RES} if params is None else params
        vector.update(extra)
        vector["expect"] = {**expect, "reason": REASONS[vid]} if vid in REASONS else expect
        vectors.append(vector)

    def issued(**token: Any) -> dict[str, Any]:
        return {"status": 200, "token": token}

    def resource(url: str, **more: Any) -> dict[str, Any]:
        return {"resource": url, **more}

    user_b = _user(aud=B_RES)
    hop_ab = _hop("alpha", _user(), B_RES)
    mint = _user()["mint"]
    # RFC 8693 §2.2.2: an invalid or unacceptable subject or actor token is invalid_request.
    bad_req, bad_token, bad_client = (
        _err("invalid_request"),
        _err("invalid_request"),
        _err("invalid_client", 401),
    )
    # fmt: off
    # -- the happy paths and the claims of what is issued
    add("X-01", "TS-9 CL-1 CL-3 CL-4 CL-6 CL-8 CL-9 CL-10 RQ-8 TK-1",
        "first hop: alpha exchanges the user's token for beta; default scope = subject ∩ beta's",
        issued(sub="alice", aud=B_RES, client_id=A_ID, scope="read", actors=[A_ID],
               txn="txn-conformance-1"))
    add("X-02", "CL-11 TS-3a",
        "the delegated token says where the user came from: sub_id (RFC 9493 iss_sub) names "
        "the issuer of the subject token and its sub",
        issued(sub_id={"format": "iss_sub", "iss": "${user_issuer}", "sub": "alice"}),
        subject=_user(sub="alice"))  # the conformance user issuer's own user, not a stand-in
    add("X-03", "CL-8", "exp is capped at the subject token's exp",
        issued(exp_max="subject", expires_in_max=120), subject=_user(exp="${now+120}"))
    add("X-04", "CL-6", "a subject token without txn gets a fresh txn", issued(txn="*"),
        subject=_user(txn=None))
    add("X-05", "CL-7 TS-5", "may_act is optional: without it the first hop is allowed", OK,
        subject=_user(may_act=None))
    add("X-06", "TS-4", "aud given as a one-element list naming the agent is accepted", OK,
        subject=_user(aud=[A_RES]))
    add("X-07", "TS-8", "an explicit scope inside subject ∩ target is granted as asked",
        issued(scope="read"), params=resource(B_RES, scope="read"))
    add("X-08", "TS-1 TS-1b",
        "client_secret_post authenticates like Basic (the request then fails on the loop "
        "policy, not on authentication)", _err("invalid_target"), client="beta",
        auth="secret_post", subject=hop_ab, params=resource(A_RES))
    add("X-09", "TS-3a", "a subject token of a trusted external issuer that already carries "
        "act: only this service records actors", bad_token,
        subject=_user(act=_mint_chain("p1", "p2", "p3", "p4"), may_act=None))
    # -- request shape
    add("X-10", "RQ-1", "a JSON body instead of a form", bad_req, encoding="json")
    add("X-11", "RQ-2", "a repeated parameter", bad_req,
        params=resource(B_RES, subject_token_type=[ACCESS_URN, ACCESS_URN]))
    add("X-12", "RQ-3", "no grant_type", bad_req, params=resource(B_RES, grant_type=None))
    add("X-13", "RQ-3", "an unsupported grant_type", _err("unsupported_grant_type"),
        params=resource(B_RES, grant_type="password"))
    add("X-14", "RQ-4", "no subject_token", bad_req, params=resource(B_RES, subject_token=None))
    add("X-15", "RQ-4", "subject_token_type other than access_token", bad_req,
        params=resource(B_RES, subject_token_type="urn:ietf:params:oauth:token-type:id_token"))  # noqa: S106
    add("X-16", "RQ-5", "actor_token without actor_token_type", bad_req,
        actor={"client_credentials": "alpha"}, params=resource(B_RES, actor_token_type=None))
    add("X-17", "RQ-6", "requested_token_type refresh_token", bad_req,
        params=resource(B_RES, requested_token_type=(  # noqa: S106
            "urn:ietf:params:oauth:token-type:refresh_token")))
    add("X-18", "RQ-7 TS-6", "audience = beta's client_id instead of resource",
        issued(aud=B_RES), params={"audience": B_ID})
    # -- 1. client authentication
    add("X-19", "TS-1", "no client authentication", bad_client, client=None)
    add("X-20", "TS-1b TS-1f", "wrong client secret", bad_client, client="beta",
        auth="wrong_secret", subject=user_b, params=resource(A_RES))
    add("X-21", "TS-1b TS-1f", "unknown client id", bad_client, auth="unknown_client")
    add("X-22", "TS-1a", "two authentication methods in one request", bad_req, client="beta",
        auth="basic_and_post", subject=user_b, params=resource(A_RES))
    add("X-23", "TS-1a", "an Authorization header that is not Basic", bad_req,
        auth="bearer_header")
    add("X-24", "TS-1c", "client_assertion_type is not jwt-bearer", bad_req,
        auth="assertion_wrong_type")
    add("X-25", "TS-1c TK-2", "assertion aud is not the issuer", bad_client,
        auth="assertion_wrong_aud")
    add("X-26", "TS-1c TK-2 TS-1f", "assertion typ at+jwt", bad_client, auth="assertion_typ_at_jwt")
    add("X-27", "TS-1c", "assertion sub differs from iss", bad_client,
        auth="assertion_sub_mismatch")
    add("X-28", "TS-1c LIM-4", "assertion lives an hour", bad_client, auth="assertion_long_lived")
    add("X-29", "TS-1d", "the same assertion (jti) twice: the second is refused", bad_client,
        auth="assertion_replay", repeat=True)
    add("X-30", "TS-1e", "a public client (no credentials) cannot exchange",
        _err("unauthorized_client"), auth="public_client")
    # -- 2. actor token
    add("X-31", "TS-2", "actor_token = the agent's own client-credentials token", OK,
        actor={"client_credentials": "alpha"})
    add("X-32", "TS-2", "actor_token of another agent", bad_token,
        actor={"client_credentials": "beta"})
    add("X-33", "TS-2", "actor_token that is a user token", bad_token, actor=_user())
    # -- 3. subject token
    add("X-34", "TS-3", "subject typ JWT", bad_token, subject={"mint": {**mint, "typ": "JWT"}})
    add("X-35", "TS-3 LIM-3", "subject expired an hour ago", bad_token,
        subject=_user(exp="${now-3600}", iat="${now-4000}", nbf="${now-4000}"))
    add("X-55", "TS-3 CL-8", "subject expired 10 s ago: refused although within the leeway",
        bad_token, subject=_user(exp="${now-10}", iat="${now-600}", nbf="${now-600}"))
    add("X-56", "TS-3 CL-9", "subject without jti", bad_token, subject=_user(jti=None))
    add("X-36", "TS-3", "subject from an untrusted issuer", bad_token,
        subject=_user(iss="https://rogue-issuer.conformance.test"))
    add("X-37", "TS-3", "subject signature by a key not the issuer's", bad_token,
        subject={"mint": {**mint, "key": "rogue"}})
    add("X-38", "TS-3", "subject is not a JWT", bad_token, subject={"literal": "not-a-jwt"})
    add("X-39", "TS-3 LIM-2", "subject act chain deeper than the limit", bad_token,
        subject=_user(act=_mint_chain("p1", "p2", "p3", "p4", "p5", "p6"), may_act=None))
    # -- 4. audience chaining
    add("X-40", "TS-4", "alpha presents a token addressed to beta", bad_token, subject=user_b)
    add("X-41", "TS-4 CL-4", "subject aud names alpha and beta", bad_token,
        subject=_user(aud=[A_RES, B_RES]))
    # -- 5. first hop
    add("X-42", "TS-5 CL-7", "may_act names another agent", bad_token,
        subject=_user(may_act={"sub": B_ID}))
    add("X-43", "TS-5", "may_act is not an object with sub", bad_token,
        subject=_user(may_act=A_ID))
    add("X-44", "TS-5", "beta may not act first on a user token (may_act_first = false)",
        _err("unauthorized_client"), client="beta", subject=_user(aud=B_RES, may_act=None),
        params=resource(A_RES))
    # -- 6. target
    add("X-45", "TS-6 RQ-7", "no resource", bad_req, params={})
    add("X-46", "TS-6", "two resources", _err("invalid_target"),
        params=resource([B_RES, A_RES]))
    add("X-47", "TS-6", "an unregistered resource", _err("invalid_target"),
        params=resource("${unknown_resource}"))
    add("X-48", "TS-6", "a registered resource that is not alpha's dependency",
        _err("invalid_target"), params=resource(A_RES))
    # -- 7. chain policy
    add("X-49", "TS-7", "beta exchanges the token alpha got for it back to alpha: the chain "
        "user → alpha → beta → alpha comes back to alpha (a loop)", _err("invalid_target"),
        client="beta", subject=hop_ab, params=resource(A_RES))
    add("X-50", "TS-3a CL-11", "a subject token of a trusted external issuer whose sub_id "
        "claims a user of this token service", bad_token,
        subject=_user(sub_id={"format": "iss_sub", "iss": "${issuer}", "sub": "alice"}))
    # -- 8. scope
    add("X-51", "TS-8", "scope the target does not accept", _err("invalid_scope"),
        params=resource(B_RES, scope="write"))
    add("X-52", "TS-8", "scope the subject token does not carry", _err("invalid_scope"),
        subject=_user(scope="write"), params=resource(B_RES, scope="read"))
    add("X-53", "TS-8", "nothing in common and no scope asked", _err("invalid_scope"),
        subject=_user(scope="write"))
    add("X-54", "TS-8", "a scope parameter of blanks only", bad_req,
        params=resource(B_RES, scope="   "))
    # -- audience (RFC 8693 §2.1), alone or with resource
    add("X-57", "RQ-7 TS-6", "audience = beta's URL (an absolute URI) instead of resource",
        issued(aud=B_RES), params={"audience": B_RES})
    add("X-58", "RQ-7 TS-6", "resource and audience both name beta (what Keycard's SDK sends)",
        issued(aud=B_RES), params=resource(B_RES, audience=B_RES))
    add("X-59", "RQ-7 TS-6", "resource and audience name two different targets",
        _err("invalid_target"), params=resource(B_RES, audience=A_ID))
    add("X-60", "RQ-7 TS-6", "audience is a name nothing is registered under",
        _err("invalid_target"), params={"audience": "not-registered-anywhere"})
    # fmt: on
    return {
        "description": (
            "Token exchange requests (RFC 8693 §2.1) as templates, with the response each "
            "must get. Run them with `keycard-agents conformance URL --config creds.toml`; "
            "the setup they assume is described in README.md. `${...}` placeholders are "
            "filled from the credentials file; `${now+N}` becomes an integer time; "
            "`${jti}` a fresh id. Generated by scripts/gen_vectors.py."
        ),
        "vectors": vectors,
    }


# ------------------------------------------------------------- local service config


def service_config(keys: dict[str, SigningKey], existing_hash: str | None) -> str:
    if existing_hash is None or not verify_secret(BETA_SECRET, existing_hash):
        existing_hash = hash_secret(BETA_SECRET, cost=2**4)
    alpha_jwk = keys["alpha"].public_jwk()
    jwk_items = ", ".join(f'{k} = "{v}"' for k, v in alpha_jwk.items())
    return f"""# Token service configuration for the conformance vectors (TEST ONLY).
# The test suite starts TokenService with this file (issuer overridden) and serves the
# user issuer's JWKS (keys/user-issuer.jwks.json) at the jwks_uri below.
issuer = "{LOCAL_ISSUER}"
max_chain_depth = 5
allow_repeated_agents = false

[[trusted_issuers]]
issuer = "{USER_ISSUER}"
jwks_uri = "{USER_ISSUER}/jwks.json"

[[agents]]
client_id = "{ALPHA_ID}"
resource = "{ALPHA}"
auth = "private_key_jwt"
jwks = {{ keys = [{{ {jwk_items} }}] }}
scopes = ["read", "write"]
dependencies = ["{BETA}"]

[[agents]]
client_id = "{BETA_ID}"
resource = "{BETA}"
auth = "client_secret"
# scrypt hash of the TEST-ONLY secret in conformance.toml
secret_hash = "{existing_hash}"
scopes = ["read"]
dependencies = ["{ALPHA}"]
may_act_first = false

[[clients]]
client_id = "conformance-app"
redirect_uris = ["http://127.0.0.1:8765/callback"]
"""


CREDENTIALS = f"""# Credentials of the two conformance test agents (TEST ONLY: never register these
# keys or secrets with a production token service). See protocols/README.md.
# Paths are relative to this file.

[user_issuer]
issuer = "{USER_ISSUER}"
private_jwks_file = "keys/user-issuer.private.jwks.json"

[agents.alpha]
client_id = "{ALPHA_ID}"
resource = "{ALPHA}"
private_key_file = "keys/alpha.private.jwk.json"

[agents.beta]
client_id = "{BETA_ID}"
resource = "{BETA}"
client_secret = "{BETA_SECRET}"

[public_client]
client_id = "conformance-app"

[resources]
unknown = "{UNKNOWN}"
"""


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def build() -> dict[str, str]:
    """Every generated file under protocols/vectors/, by relative path."""
    keys = load_keys()
    old = VECTORS / "token-service.toml"
    existing = None
    if old.exists():
        for line in old.read_text(encoding="utf-8").splitlines():
            if line.startswith("secret_hash = "):
                existing = line.split('"')[1]
    user_keys = [keys[k] for k in ("user-ed25519", "user-es256", "user-rs256", "user-ed25519-next")]
    private = {"keys": [k.to_json()["jwk"] | {"alg": k.alg, "use": "sig"} for k in user_keys]}
    return {
        "tokens.json": _dump(token_vectors(keys)),
        "exchanges.json": _dump(exchange_vectors()),
        "token-service.toml": service_config(keys, existing),
        "conformance.toml": CREDENTIALS,
        "keys/user-issuer.jwks.json": _dump({"keys": [k.public_jwk() for k in user_keys]}),
        "keys/user-issuer.private.jwks.json": _dump(private),
    }


def strip_signatures(text: str) -> str:
    """tokens.json without signature segments (ES256 signatures differ on every run)."""
    data = json.loads(text)
    for vector in data.get("vectors", []):
        parts = vector["token"].split(".")
        if len(parts) == 3:
            vector["token"] = ".".join(parts[:2])
    return _dump(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, content in build().items():
        path = VECTORS / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        same = current is not None and (
            strip_signatures(current) == strip_signatures(content)
            if name == "tokens.json"
            else current == content
        )
        if same:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    if args.check and stale:
        print("out of date: " + ", ".join(stale) + " (run scripts/gen_vectors.py)")
        return 1
    for name in stale if not args.check else ():
        print(f"wrote protocols/vectors/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
