"""Conformance vectors of the delegation profile (``protocols/``): loading and running them.

Exchange vectors are RFC 8693 §2.1 token exchange requests given as templates; they are
filled in from a credentials file and sent to any token service over HTTP (RFC 6749 §3.2
form posts, client authentication per RFC 6749 §2.3.1 and RFC 7523 §2.2), and each
response is judged against RFC 8693 §2.2.1 / §2.2.2 and the claims rules of the profile
(RFC 9068 §2.2, RFC 8693 §4.1 ``act``). Token vectors are signed JWTs with the verdict a
resource server must reach (RFC 7519 §7.2, RFC 8725 §3); the test suite runs those through
the verifier. Used by the test suite and by ``keycard-agents conformance URL --config creds.toml``.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode

import anyio
import httpx
from joserfc.jwk import OKPKey

from keycard_agents._errors import ConfigurationError, InvalidTokenError
from keycard_agents._jose._jwt import ACCESS_TOKEN_TYPE, CLIENT_ASSERTION_TYPE, verify_jwt
from keycard_agents._jose._keys import SigningKey, StaticKeys
from keycard_agents._jose._principal import ActorChain
from keycard_agents._oauth._urls import discovery_urls, identifier_mismatch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "ConformanceAgent",
    "ConformanceSettings",
    "VectorResult",
    "add_conformance_arguments",
    "add_conformance_command",
    "default_vectors_dir",
    "format_table",
    "load_settings",
    "load_vectors",
    "run_conformance",
    "run_exchange_vectors",
]

EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_URN = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_PLACEHOLDER = re.compile(r"\$\{([a-z_.]+)\}")
_TIME = re.compile(r"\$\{now(?:([+-])(\d+))?\}")


@dataclass(frozen=True)
class ConformanceAgent:
    """One of the two test agents (``alpha``, ``beta``) and its credential."""

    name: str
    client_id: str
    resource: str
    secret: str | None = field(default=None, repr=False)
    key: SigningKey | None = None


@dataclass(frozen=True)
class ConformanceSettings:
    """What the exchange vectors need to know about the service under test."""

    issuer: str
    user_issuer: str
    user_keys: Mapping[str, SigningKey]
    agents: Mapping[str, ConformanceAgent]
    unknown_resource: str
    public_client: str | None = None
    token_endpoint: str | None = None
    user_token: str | None = field(default=None, repr=False)
    """A user token issued by the service under test for alpha (``--user-token-file``):
    vectors marked ``user_token`` start from it instead of a minted one."""

    def variables(self) -> dict[str, str]:
        out = {"issuer": self.issuer, "user_issuer": self.user_issuer}
        out["unknown_resource"] = self.unknown_resource
        for name, agent in self.agents.items():
            out[f"{name}.client_id"] = agent.client_id
            out[f"{name}.resource"] = agent.resource
        return out


@dataclass(frozen=True)
class VectorResult:
    """The outcome of one vector: ``PASS``, ``FAIL`` or ``SKIP``."""

    id: str
    rule: str
    expected: str
    got: str
    outcome: str
    detail: str = ""


def default_vectors_dir() -> Path:
    """``protocols/vectors`` of a source checkout, or the copy packaged with the library."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_protocols" / "vectors", here.parent / "protocols" / "vectors"):
        if (candidate / "exchanges.json").is_file():
            return candidate
    raise ConfigurationError(
        "cannot find the conformance vectors: pass --vectors DIR (protocols/vectors of the "
        "keycard-agents source tree)",
        setting="--vectors",
    )


def load_vectors(directory: Path | None, name: str) -> dict[str, Any]:
    """Load ``tokens.json`` or ``exchanges.json``."""
    path = (directory or default_vectors_dir()) / name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read vectors {path}: {exc}", setting=str(path)) from exc
    if not isinstance(data, dict) or not isinstance(data.get("vectors"), list):
        raise ConfigurationError(f"{path} has no 'vectors' list", setting=str(path))
    return data


# ------------------------------------------------------------------------ credentials


def _table(data: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    value = data.get(name)
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{source}: missing table [{name}]", setting=name)
    return value


def _text(table: Mapping[str, Any], name: str, where: str, *, required: bool = True) -> str | None:
    value = table.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where}.{name} must be a non-empty string", setting=name)
    return value


def _read_json(path: Path, setting: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"{setting}: cannot read {path} ({type(exc).__name__})", setting=setting
        ) from exc


def _signing_key(jwk: Any, setting: str) -> SigningKey:
    if not isinstance(jwk, Mapping):
        raise ConfigurationError(f"{setting}: not a JWK object", setting=setting)
    key = SigningKey.from_jwk(jwk)
    if not jwk.get("kid"):
        raise ConfigurationError(f"{setting}: the private JWK needs a 'kid'", setting=setting)
    return key


def _read_user_token(path: Path, setting: str) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"{setting}: cannot read {path} ({type(exc).__name__})", setting=setting
        ) from exc
    if token.count(".") != 2:
        raise ConfigurationError(
            f"{setting}: {path} does not hold one JWT access token", setting=setting
        )
    return token


def load_settings(
    path: str | Path, *, issuer: str, user_token_file: str | Path | None = None
) -> ConformanceSettings:
    """Read the credentials file (TOML; see protocols/README.md for its format).

    ``user_token_file`` (or ``user_token_file`` in the file) holds a user token the
    service under test issued for alpha; then ``[user_issuer]`` is optional.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(
            f"{path}: cannot read the conformance credentials ({type(exc).__name__})",
            setting="--config",
        ) from exc
    base = path.parent
    user_token: str | None = None
    if user_token_file is not None:
        user_token = _read_user_token(Path(user_token_file), "--user-token-file")
    elif (listed := _text(data, "user_token_file", "(top level)", required=False)) is not None:
        user_token = _read_user_token(base / listed, "user_token_file")
    users: Mapping[str, Any] = {}
    user_keys: list[SigningKey] = []
    if "user_issuer" in data or user_token is None:
        users = _table(data, "user_issuer", path.name)
        jwks_file = _text(users, "private_jwks_file", "user_issuer")
        assert jwks_file is not None
        jwks = _read_json(base / jwks_file, "user_issuer.private_jwks_file")
        members = jwks.get("keys") if isinstance(jwks, Mapping) else None
        if not isinstance(members, list) or not members:
            raise ConfigurationError(
                "user_issuer.private_jwks_file has no keys", setting="user_issuer"
            )
        user_keys = [_signing_key(m, "user_issuer.private_jwks_file") for m in members]
    agents: dict[str, ConformanceAgent] = {}
    agent_tables = _table(data, "agents", path.name)
    for name in ("alpha", "beta"):
        table = _table(agent_tables, name, f"{path.name} [agents]")
        where = f"agents.{name}"
        secret = _text(table, "client_secret", where, required=False)
        key_file = _text(table, "private_key_file", where, required=False)
        if (secret is None) == (key_file is None):
            raise ConfigurationError(
                f"{where}: set exactly one of client_secret or private_key_file", setting=where
            )
        key: SigningKey | None = None
        if key_file is not None:
            key = _signing_key(_read_json(base / key_file, f"{where}.private_key_file"), where)
        client_id = _text(table, "client_id", where)
        resource = _text(table, "resource", where)
        assert client_id is not None
        assert resource is not None
        agents[name] = ConformanceAgent(name, client_id, resource, secret=secret, key=key)
    public, resources = data.get("public_client"), data.get("resources")
    unknown = None
    if isinstance(resources, Mapping):
        unknown = _text(resources, "unknown", "resources", required=False)
    return ConformanceSettings(
        issuer=_text(data, "issuer", "(top level)", required=False) or issuer,
        user_issuer=(_text(users, "issuer", "user_issuer") if users else None) or "",
        user_keys={k.kid: k for k in user_keys},
        agents=agents,
        unknown_resource=unknown or "https://unregistered.conformance.test/",
        public_client=_text(public, "client_id", "public_client")
        if isinstance(public, Mapping)
        else None,
        token_endpoint=_text(data, "token_endpoint", "(top level)", required=False),
        user_token=user_token,
    )


# --------------------------------------------------------------------------- running


class _Skip(Exception):
    """The vector needs a credential the settings do not have."""


class _SetupFailed(Exception):
    """A token the vector builds on could not be obtained."""


def _unverified(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _error_of(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None


def _describe(response: httpx.Response) -> str:
    error = _error_of(response)
    return str(response.status_code) if error is None else f"{error} ({response.status_code})"


class _Runner:
    def __init__(
        self,
        settings: ConformanceSettings,
        http: httpx.AsyncClient,
        clock: Callable[[], float],
        strict_reasons: bool,
    ) -> None:
        self.strict_reasons = strict_reasons
        self.settings = settings
        self.http = http
        self.clock = clock
        self.vars = settings.variables()
        self.token_endpoint = settings.token_endpoint or ""
        self.jwks: dict[str, Any] = {}
        default = next(iter(settings.user_keys.values()), None)
        self.default_kid = default.kid if default is not None else "conformance-none"
        rogue = OKPKey.generate_key("Ed25519", parameters={"kid": self.default_kid})
        self.rogue = SigningKey(rogue, alg="EdDSA", created_at=0)
        self.provided_used = False  # the current vector started from settings.user_token

    async def prepare(self) -> None:
        """Read the metadata (RFC 8414, else OpenID Connect discovery) and the JWK Set."""
        issuer = self.settings.issuer
        urls = discovery_urls(issuer)
        for url in urls:
            reply = await self._get(url, "the token service metadata")
            if reply.status_code != 404 or url == urls[-1]:
                break
        if reply.status_code != 200:
            tried = " nor ".join(urls)
            raise ConfigurationError(
                f"no token service metadata for {issuer}: neither {tried} answered it (last: "
                f"HTTP {reply.status_code}); pass the issuer identifier exactly as the "
                "service states it",
                setting="URL",
            )
        meta = self._json(reply, url, "the token service metadata")
        if not isinstance(meta, dict) or meta.get("issuer") != issuer:
            stated = meta.get("issuer") if isinstance(meta, dict) else None
            raise ConfigurationError(
                f"the metadata at {url}: {identifier_mismatch(stated, issuer)}; pass the "
                "issuer exactly as the service states it",
                setting="URL",
            )
        endpoint, jwks_uri = meta.get("token_endpoint"), meta.get("jwks_uri")
        if not isinstance(endpoint, str) or not isinstance(jwks_uri, str):
            raise ConfigurationError(
                f"the metadata at {url} lacks token_endpoint or jwks_uri", setting="URL"
            )
        self.token_endpoint = self.token_endpoint or endpoint
        self.vars["token_endpoint"] = self.token_endpoint
        keys = self._json(await self._get(jwks_uri, "the JWK Set"), jwks_uri, "the JWK Set")
        self.jwks = keys if isinstance(keys, dict) else {}

    async def _get(self, url: str, what: str) -> httpx.Response:
        try:
            return await self.http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ConfigurationError(
                f"cannot read {what} at {url}: {type(exc).__name__}: {exc}", setting="URL"
            ) from exc

    @staticmethod
    def _json(reply: httpx.Response, url: str, what: str) -> Any:
        """The JSON body of a 200 answer; the HTTP status otherwise (never a decode error)."""
        if reply.status_code != 200:
            raise ConfigurationError(
                f"{what} at {url} answered HTTP {reply.status_code}, expected 200", setting="URL"
            )
        try:
            return reply.json()
        except ValueError as exc:
            raise ConfigurationError(
                f"{what} at {url} answered HTTP 200 but not JSON", setting="URL"
            ) from exc

    # -- templates ---------------------------------------------------------------------

    def fill(self, value: Any, now: int) -> Any:
        if isinstance(value, list):
            return [self.fill(v, now) for v in value]
        if isinstance(value, dict):
            return {k: self.fill(v, now) for k, v in value.items()}
        if not isinstance(value, str):
            return value
        moment = _TIME.fullmatch(value)
        if moment is not None:
            sign, amount = moment.groups()
            delta = int(amount or 0)
            return now + delta if sign != "-" else now - delta
        if value == "${jti}":
            return str(uuid.uuid4())

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.vars:
                raise ConfigurationError(f"vectors use an unknown placeholder ${{{name}}}")
            return self.vars[name]

        return _PLACEHOLDER.sub(substitute, value)

    def agent(self, name: str) -> ConformanceAgent:
        return self.settings.agents[name]

    # -- tokens the vectors build on ---------------------------------------------------

    async def token(self, source: Mapping[str, Any], now: int) -> str:
        if "literal" in source:
            return str(source["literal"])
        if "mint" in source and source.get("user_token") and self.settings.user_token:
            self.provided_used = True
            return self.settings.user_token
        if "mint" in source:
            if not self.settings.user_keys:
                raise _Skip(
                    "needs a user token with other claims: configure [user_issuer] with keys "
                    "the service trusts"
                )
            spec = source["mint"]
            kid = spec.get("key", self.default_kid)
            key = self.rogue if kid == "rogue" else self.settings.user_keys.get(kid)
            if key is None:
                raise _Skip(f"no user issuer key {kid!r}")
            return key.sign(self.fill(spec["claims"], now), typ=spec.get("typ", ACCESS_TOKEN_TYPE))
        if "client_credentials" in source:
            agent = self.agent(source["client_credentials"])
            form, headers = self.client_auth(agent, "default", now)
            reply = await self.post({"grant_type": "client_credentials", **form}, headers)
        else:
            spec = source["exchange"]
            subject = await self.token(spec["subject"], now)
            form, headers = self.client_auth(self.agent(spec["client"]), "default", now)
            params = {
                "grant_type": EXCHANGE_GRANT,
                "subject_token": subject,
                "subject_token_type": ACCESS_TOKEN_URN,
                **self.fill(spec["params"], now),
                **form,
            }
            reply = await self.post(params, headers)
        if reply.status_code != 200:
            raise _SetupFailed(f"a setup request got {_describe(reply)}")
        return str(reply.json()["access_token"])

    # -- client authentication ---------------------------------------------------------

    def assertion(self, agent: ConformanceAgent, now: int, **over: Any) -> str:
        if agent.key is None:
            raise _Skip(f"needs a private_key_jwt credential for {agent.name}")
        typ = over.pop("typ", CLIENT_ASSERTION_TYPE)
        claims: dict[str, Any] = {"iss": agent.client_id, "sub": agent.client_id}
        claims.update(aud=self.settings.issuer, iat=now, exp=now + 60, jti=str(uuid.uuid4()))
        claims.update(over)
        return agent.key.sign(claims, typ=typ)

    def client_auth(
        self, agent: ConformanceAgent | None, variant: str, now: int
    ) -> tuple[dict[str, str], dict[str, str]]:
        if agent is None:
            return {}, {}
        if variant == "unknown_client":
            return {}, {"Authorization": _basic("conformance-unknown-client", "not-a-secret")}
        if variant == "bearer_header":
            return {}, {"Authorization": "Bearer conformance-not-a-token"}
        if variant == "public_client":
            if self.settings.public_client is None:
                raise _Skip("needs [public_client] in the credentials file")
            return {"client_id": self.settings.public_client}, {}
        if (variant == "default" and agent.key is not None) or variant.startswith("assertion"):
            # assertion_replay: a plain assertion; the vector sends the request twice
            variants: dict[str, dict[str, Any]] = {
                "assertion_wrong_aud": {"aud": "https://unrelated.conformance.test"},
                "assertion_typ_at_jwt": {"typ": ACCESS_TOKEN_TYPE},
                "assertion_sub_mismatch": {"sub": "conformance-someone-else"},
                "assertion_long_lived": {"exp": now + 3600},
            }
            over = variants.get(variant, {})
            kind = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
            form = {
                "client_id": agent.client_id,
                "client_assertion_type": kind if variant == "assertion_wrong_type" else JWT_BEARER,
                "client_assertion": self.assertion(agent, now, **over),
            }
            return form, {}
        if agent.secret is None:
            raise _Skip(f"needs a client secret credential for {agent.name}")
        if variant == "secret_post":
            return {"client_id": agent.client_id, "client_secret": agent.secret}, {}
        secret = agent.secret + "-wrong" if variant == "wrong_secret" else agent.secret
        headers = {"Authorization": _basic(agent.client_id, secret)}
        if variant == "basic_and_post":
            return {"client_secret": agent.secret}, headers
        return {}, headers

    # -- one request -------------------------------------------------------------------

    async def post(
        self,
        params: Mapping[str, Any],
        headers: Mapping[str, str],
        *,
        encoding: str = "form",
    ) -> httpx.Response:
        pairs: list[tuple[str, str]] = []
        for name, value in params.items():
            if value is None:
                continue
            for item in value if isinstance(value, list) else [value]:
                pairs.append((name, str(item)))
        if encoding == "json":
            body, kind = json.dumps(dict(pairs)).encode(), "application/json"
        else:
            body, kind = urlencode(pairs).encode(), "application/x-www-form-urlencoded"
        return await self.http.post(
            self.token_endpoint, content=body, headers={"Content-Type": kind, **headers}
        )

    async def run(self, vector: Mapping[str, Any]) -> VectorResult:
        expect = vector["expect"]
        expected = "200" if expect["status"] == 200 else f"{expect['error']} ({expect['status']})"
        rules = vector["rules"]
        rule = rules[0] if len(rules) == 1 else f"{rules[0]} +{len(rules) - 1}"

        def result(got: str, outcome: str, detail: str = "") -> VectorResult:
            return VectorResult(vector["id"], rule, expected, got, outcome, detail)

        now = int(self.clock())
        self.provided_used = False
        try:
            name = vector.get("client")
            agent = None if name is None else self.agent(name)
            subject = await self.token(vector["subject"], now)
            params: dict[str, Any] = {
                "grant_type": EXCHANGE_GRANT,
                "subject_token": subject,
                "subject_token_type": ACCESS_TOKEN_URN,
            }
            if vector.get("actor") is not None:
                params["actor_token"] = await self.token(vector["actor"], now)
                params["actor_token_type"] = ACCESS_TOKEN_URN
            params.update(self.fill(vector["params"], now))
            form, headers = self.client_auth(agent, vector.get("auth", "default"), now)
            params.update(form)
            encoding = vector.get("encoding", "form")
            reply = await self.post(params, headers, encoding=encoding)
            if vector.get("repeat"):
                if reply.status_code != 200:
                    return result(_describe(reply), "FAIL", "the first of the two requests failed")
                reply = await self.post(params, headers, encoding=encoding)
        except _Skip as exc:
            return result("-", "SKIP", str(exc))
        except _SetupFailed as exc:
            return result("-", "FAIL", str(exc))
        except httpx.HTTPError as exc:
            return result("-", "FAIL", f"HTTP failure: {type(exc).__name__}")
        got = _describe(reply)
        if expect["status"] != 200:
            ok = reply.status_code == expect["status"] and _error_of(reply) == expect["error"]
            if ok and self.strict_reasons and "reason" in expect:
                description = _description(reply)
                if expect["reason"].lower() not in description.lower():
                    return result(got, "FAIL", f"denied for another reason: {description}")
            return result(got, "PASS" if ok else "FAIL")
        if reply.status_code != 200:
            return result(got, "FAIL", _description(reply))
        want = dict(expect.get("token", {}))
        if self.provided_used and self.settings.user_token is not None:
            # The chain starts from the service's own user token: its sub and txn stand in
            # for those the vector would have minted.
            provided = _unverified(self.settings.user_token)
            want["sub"] = provided.get("sub")
            want["txn"] = provided["txn"] if isinstance(provided.get("txn"), str) else "*"
        problem = await self.judge_issued(reply, params, agent, subject, want)
        return result(got, "FAIL" if problem else "PASS", problem or "")

    async def judge_issued(
        self,
        reply: httpx.Response,
        params: Mapping[str, Any],
        agent: ConformanceAgent | None,
        subject: str,
        want: Mapping[str, Any],
    ) -> str | None:
        """The first way the issued token breaks the profile, or ``None``."""
        body = reply.json()
        if body.get("issued_token_type") != ACCESS_TOKEN_URN:
            return "issued_token_type is not the access_token URN"
        if str(body.get("token_type", "")).lower() != "bearer":
            return "token_type is not Bearer"
        expires_in = body.get("expires_in")
        if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
            return "expires_in is not a positive integer"
        if "refresh_token" in body:
            return "a refresh_token was issued with a delegated token"
        if "no-store" not in reply.headers.get("cache-control", ""):
            return "the response lacks Cache-Control: no-store"
        now = int(self.clock())
        filled = self.fill(dict(want), now)
        # The target: the vector's expected aud (an audience-only request), else the resource.
        resource = str(filled.get("aud") or params.get("resource"))
        try:
            claims = await verify_jwt(
                str(body.get("access_token")),
                keys=StaticKeys({self.settings.issuer: self.jwks}),
                issuers=(self.settings.issuer,),
                audience=resource,
                token_types=(ACCESS_TOKEN_TYPE,),
                clock=self.clock,
            )
        except InvalidTokenError as exc:
            return f"the issued token does not verify ({exc.check})"
        source = _unverified(subject)
        act = claims.get("act")
        sub_id = claims.get("sub_id")
        source_origin = source.get("sub_id") if "act" in source else None
        checks: list[tuple[bool, str]] = [
            (
                isinstance(sub_id, dict)
                and sub_id.get("format") == "iss_sub"
                and sub_id.get("sub") == claims.get("sub"),
                "sub_id is not an iss_sub naming the token's sub (CL-11)",
            ),
            (source_origin is None or sub_id == source_origin, "sub_id was not copied unchanged"),
            (claims.get("sub") == source.get("sub"), "sub is not the subject token's sub"),
            (claims.get("aud") == resource, "aud is not exactly the requested target"),
            (agent is not None and claims.get("client_id") == agent.client_id, "client_id"),
            (isinstance(act, dict) and act.get("iss") == self.settings.issuer, "act.iss"),
            (
                isinstance(act, dict) and agent is not None and act.get("sub") == agent.client_id,
                "act.sub is not the requesting agent",
            ),
            (isinstance(act, dict) and act.get("act") == source.get("act"), "earlier act lost"),
            (claims["exp"] <= source.get("exp", claims["exp"]), "exp is later than the subject's"),
            (claims.get("nbf", claims["iat"]) <= claims["iat"] + 1, "nbf after iat"),
            (isinstance(claims.get("txn"), str) and bool(claims["txn"]), "no txn"),
            (bool(str(claims.get("scope", "")).split()), "scope is missing or empty"),
            ("txn" not in source or claims.get("txn") == source["txn"], "txn changed"),
            (expires_in <= claims["exp"] - claims["iat"] + 1, "expires_in longer than exp - iat"),
        ]
        if "scope" in filled:
            got = set(str(claims.get("scope", "")).split())
            checks.append(
                (got == set(filled["scope"].split()), f"scope is {claims.get('scope')!r}")
            )
        if "actors" in filled:
            chain = ActorChain.from_act_claim(act).subjects()
            checks.append((list(chain) == filled["actors"], f"actor chain is {list(chain)}"))
        for name in ("sub", "aud", "client_id", "sub_id"):
            if name in filled:
                checks.append((claims.get(name) == filled[name], f"{name} differs"))
        if "txn" in filled and filled["txn"] != "*":
            checks.append((claims.get("txn") == filled["txn"], "txn differs"))
        if "expires_in_max" in filled:
            checks.append((expires_in <= filled["expires_in_max"], "expires_in too long"))
        for ok, message in checks:
            if not ok:
                return message
        return None


def _description(response: httpx.Response) -> str:
    try:
        text = response.json().get("error_description", "")
    except (ValueError, AttributeError):
        return ""
    return str(text)[:200]


def _basic(client_id: str, secret: str) -> str:

    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


async def run_exchange_vectors(
    settings: ConformanceSettings,
    vectors: Sequence[Mapping[str, Any]],
    *,
    http: httpx.AsyncClient,
    clock: Callable[[], float] = time.time,
    strict_reasons: bool = False,
) -> list[VectorResult]:
    """Run exchange vectors against the token service of ``settings.issuer`` via ``http``.

    ``strict_reasons`` also requires each denial's ``error_description`` to contain the
    vector's ``reason`` (our token service's wording; used by our own test suite).
    """
    runner = _Runner(settings, http, clock, strict_reasons)
    await runner.prepare()
    return [await runner.run(vector) for vector in vectors]


def format_table(results: Sequence[VectorResult]) -> str:
    """A plain-text table: vector id, rule, expected, got, result (and why, on FAIL/SKIP)."""
    rows = [("vector", "rule", "expected", "got", "result")]
    rows += [(r.id, r.rule, r.expected, r.got, r.outcome) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for row, result in zip(rows, [None, *results], strict=True):
        line = "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        if result is not None and result.detail and result.outcome != "PASS":
            line += f"  ({result.detail})"
        lines.append(line)
    counts = {o: sum(r.outcome == o for r in results) for o in ("PASS", "FAIL", "SKIP")}
    lines.append(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- CLI


def add_conformance_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``keycard-agents conformance``; ``run_conformance`` runs it."""
    parser.add_argument("url", metavar="URL", help="the token service's issuer identifier")
    parser.add_argument(
        "--config",
        required=True,
        metavar="CREDS.toml",
        help="credentials of the two test agents and the user issuer (see protocols/README.md)",
    )
    parser.add_argument("--vectors", metavar="DIR", help="directory of exchanges.json")
    parser.add_argument(
        "--only", action="append", metavar="ID", help="run only this vector (repeatable)"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request")
    parser.add_argument(
        "--user-token-file",
        metavar="FILE",
        help="a user token the service under test issued for alpha (scopes read and write); "
        "vectors that start from a plain user token use it",
    )


def run_conformance(args: argparse.Namespace) -> int:
    """Run the exchange vectors against ``args.url``; print the table; 1 on any FAIL."""
    settings = load_settings(args.config, issuer=args.url, user_token_file=args.user_token_file)
    directory = Path(args.vectors) if args.vectors else None
    vectors = load_vectors(directory, "exchanges.json")["vectors"]
    if args.only:
        vectors = [v for v in vectors if v["id"] in set(args.only)]
        if not vectors:
            raise ConfigurationError("no vector matches --only", setting="--only")

    async def main() -> list[VectorResult]:
        async with httpx.AsyncClient(timeout=args.timeout) as http:
            return await run_exchange_vectors(settings, vectors, http=http)

    results = anyio.run(main)
    print(f"conformance of {settings.issuer} with the keycard-agents delegation profile")
    print(format_table(results))
    return 1 if any(r.outcome == "FAIL" for r in results) else 0


def add_conformance_command(subparsers: Any) -> None:
    """Register ``keycard-agents conformance URL``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "conformance",
        help="check a token service against the delegation profile's vectors",
        description="Run the exchange vectors of protocols/vectors against a token service.",
    )
    add_conformance_arguments(parser)
    parser.set_defaults(func=run_conformance)
