"""Token service configuration: pydantic models loadable from TOML.

Covers the registrations the service needs for RFC 8693 token exchange (agents,
their RFC 8707 resource URLs and dependencies), RFC 7523 / RFC 6749 §2.3.1 client
authentication, RFC 6749 §4.1 + RFC 7636 login clients, and trusted external
issuers. Validation errors name the field path and the file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from keycard_agents._errors import ConfigurationError
from keycard_agents._jose._profiles import TokenProfile
from keycard_agents._sts._connection_config import ConnectionConfig, VaultConfig
from keycard_agents._sts._secrets import check_password_hash_format, check_secret_hash_format
from keycard_agents._sts._values import LOOPBACK_HOSTS
from keycard_agents._sts._values import check_scopes as _check_scopes
from keycard_agents._sts._values import check_url as check_url  # its old home

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "AdminConfig",
    "ConnectionConfig",
    "DevUser",
    "Lifetimes",
    "Limits",
    "PublicClient",
    "RedisConfig",
    "RegisteredAgent",
    "RegisteredResource",
    "RegistrationConfig",
    "TokenServiceConfig",
    "TrustedIssuerConfig",
    "VaultConfig",
    "load_config",
    "parse_config",
]

SIGNING_ALGORITHMS = ("ES256", "EdDSA", "RS256")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Lifetimes(_Model):
    """Token lifetimes in seconds."""

    user_token: float = Field(default=3600.0, gt=0, le=86400)
    delegated_token: float = Field(default=300.0, gt=0, le=86400)
    actor_token: float = Field(default=300.0, gt=0, le=86400)
    auth_code: float = Field(default=60.0, gt=0, le=600)


class Limits(_Model):
    """Abuse limits of the token service (docs/security.md lists each with its default).

    Failed credential checks (client secrets at ``/token``, passwords at ``/authorize``,
    the admin token at ``/audit``) are counted per source address and per account
    (client id, user name, admin): each may fail ``failed_auth_per_source`` /
    ``failed_auth_per_account`` times, then gets one more attempt every
    ``failed_auth_window / limit`` seconds; beyond that the answer is HTTP 429 with
    ``Retry-After``, without checking the credential, sent ``throttle_delay`` seconds late
    (a guesser waiting for its answers slows down without costing the service CPU).
    Password hashes are checked in at most ``hash_workers`` threads; when ``hash_queue``
    checks already wait, more get 503. At most ``log_issued_per_second`` issued tokens a
    second get a log line each; the rest are counted in one line (the audit trail keeps
    every one).
    """

    failed_auth_per_source: int = Field(default=30, ge=1, le=1_000_000)
    failed_auth_per_account: int = Field(default=10, ge=1, le=1_000_000)
    failed_auth_window: float = Field(default=60.0, gt=0, le=86400)
    throttle_delay: float = Field(default=1.0, ge=0, le=60)
    hash_workers: int = Field(default=1, ge=1, le=64)
    hash_queue: int = Field(default=64, ge=1, le=100_000)
    pending_signins_per_user: int = Field(default=10, ge=1, le=100_000)
    pending_signins_per_client: int = Field(default=1000, ge=1, le=1_000_000)
    audit_issued: int = Field(default=100_000, ge=1, le=10_000_000)
    audit_denied: int = Field(default=100_000, ge=1, le=10_000_000)
    audit_unauthenticated: int = Field(default=10_000, ge=1, le=10_000_000)
    log_issued_per_second: int = Field(default=10, ge=0, le=1_000_000)
    header_timeout: float = Field(default=10.0, gt=0, le=3600)
    body_timeout: float = Field(default=30.0, gt=0, le=3600)
    keep_alive_timeout: float = Field(default=15.0, gt=0, le=3600)


class RegisteredAgent(_Model):
    """An agent: a client of the token service and a resource (its own URL).

    ``resources`` are more endpoints of the same agent (its MCP endpoint when it is also
    served over MCP): tokens issued for any of them may be exchanged by the agent, and a
    user may sign in for any of them.
    """

    client_id: str = Field(min_length=1, max_length=200)
    resource: str
    resources: tuple[str, ...] = ()
    auth: Literal["private_key_jwt", "client_secret"]
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    secret_hash: str | None = None
    scopes: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    may_act_first: bool = True

    @field_validator("resource", "jwks_uri")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _opt_url(value)

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_scopes(value)

    @field_validator("resources")
    @classmethod
    def _more(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            check_url(url)
        if len(set(value)) != len(value):
            raise ValueError("lists a resource twice")
        return value

    @property
    def all_resources(self) -> tuple[str, ...]:
        """Every resource URL of this agent: ``resource`` first, then ``resources``."""
        return (self.resource, *self.resources)

    @field_validator("dependencies")
    @classmethod
    def _deps(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for dep in value:
            check_url(dep)
        if len(set(value)) != len(value):
            raise ValueError("lists a dependency twice")
        return value

    @field_validator("secret_hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        return None if value is None else check_secret_hash_format(value)

    @field_validator("jwks")
    @classmethod
    def _jwks(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        keys = value.get("keys")
        if not isinstance(keys, list) or not keys:
            raise ValueError("must be a JWK Set: a table with a non-empty 'keys' array")
        for key in keys:
            if not isinstance(key, dict) or "kty" not in key:
                raise ValueError("every key needs a 'kty'")
            if "d" in key or "k" in key:
                raise ValueError("must hold public keys only (found private key material)")
        return value

    @model_validator(mode="after")
    def _auth_fields(self) -> RegisteredAgent:
        if self.auth == "private_key_jwt":
            if (self.jwks is None) == (self.jwks_uri is None):
                raise ValueError("auth = 'private_key_jwt' needs exactly one of jwks or jwks_uri")
            if self.secret_hash is not None:
                raise ValueError("secret_hash is only for auth = 'client_secret'")
        else:
            if self.secret_hash is None:
                raise ValueError(
                    "auth = 'client_secret' needs secret_hash "
                    "(make one with `keycard-agents sts hash-secret`)"
                )
            if self.jwks is not None or self.jwks_uri is not None:
                raise ValueError("jwks / jwks_uri are only for auth = 'private_key_jwt'")
        return self


def _is_loopback(url: str) -> bool:
    try:
        return urlsplit(url).hostname in LOOPBACK_HOSTS
    except ValueError:
        return False


def _opt_url(value: str | None) -> str | None:
    return None if value is None else check_url(value)


class RegisteredResource(_Model):
    """A resource that is not an agent (an MCP server, an HTTP API).

    ``name`` is an optional logical name a token exchange may use as ``audience``.
    """

    resource: str
    scopes: tuple[str, ...] = ()
    name: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("resource")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_scopes(value)


class DevUser(_Model):
    """A local user who can sign in on the login page (development only)."""

    username: str = Field(min_length=1, max_length=200)
    password_hash: str | None = None
    # An empty password would let anyone sign in as the user with an empty form field.
    password: str | None = Field(default=None, min_length=1, repr=False)
    scopes: tuple[str, ...] = ()

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_scopes(value)

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        return None if value is None else check_password_hash_format(value)

    @model_validator(mode="after")
    def _one_password(self) -> DevUser:
        if (self.password is None) == (self.password_hash is None):
            raise ValueError("needs exactly one of password_hash or password (dev only)")
        return self


class TrustedIssuerConfig(_Model):
    """An external issuer whose user tokens may be exchanged here.

    ``token_types``, ``require_jti`` and ``client_claim`` describe its access tokens
    (default RFC 9068: ``at+jwt``, ``jti`` required, ``client_id``); an empty string in
    ``token_types`` accepts a token without ``typ``. See ``TokenProfile``.
    """

    issuer: str
    jwks_uri: str | None = None
    metadata_url: str | None = None
    token_types: tuple[str, ...] = ("at+jwt",)
    require_jti: bool = True
    client_claim: str = Field(default="client_id", min_length=1)

    def profile(self) -> TokenProfile:
        return TokenProfile(
            token_types=tuple(t or None for t in self.token_types),
            require_jti=self.require_jti,
            client_claim=self.client_claim,
        )

    @field_validator("issuer", "jwks_uri", "metadata_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _opt_url(value)

    @model_validator(mode="after")
    def _one_source(self) -> TrustedIssuerConfig:
        if (self.jwks_uri is None) == (self.metadata_url is None):
            raise ValueError("needs exactly one of jwks_uri or metadata_url")
        return self


class PublicClient(_Model):
    """A public client (an app without a secret) that signs users in with PKCE."""

    client_id: str = Field(min_length=1, max_length=200)
    redirect_uris: tuple[str, ...] = Field(min_length=1)

    @field_validator("redirect_uris")
    @classmethod
    def _uris(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for uri in value:
            check_url(uri)
        return value


class RegistrationConfig(_Model):
    """Dynamic client registration (RFC 7591) at ``/register``: who may register.

    ``enabled`` defaults to on for a loopback issuer (development: anyone may register a
    public client) and to on elsewhere only when a policy is set: ``initial_access_token_hash``
    (RFC 7591 §3: requests carry ``Authorization: Bearer <token>``; make the hash with
    ``keycard-agents sts hash-secret``) or ``allowed_redirect_uris`` (every redirect URI
    registered must be listed; a loopback entry matches any port, RFC 8252 §7.3).
    ``clients_file`` keeps registered clients across restarts (JSON Lines); without it
    they live in memory (the newest ``max_clients``).
    """

    enabled: bool | None = None
    initial_access_token_hash: str | None = None
    allowed_redirect_uris: tuple[str, ...] = ()
    clients_file: Path | None = None
    max_clients: int = Field(default=10_000, ge=1, le=10_000_000)
    max_redirect_uris: int = Field(default=10, ge=1, le=100)

    @field_validator("initial_access_token_hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        return None if value is None else check_secret_hash_format(value)

    @field_validator("allowed_redirect_uris")
    @classmethod
    def _uris(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for uri in value:
            check_url(uri)
        return value

    @property
    def has_policy(self) -> bool:
        return self.initial_access_token_hash is not None or bool(self.allowed_redirect_uris)


class RedisConfig(_Model):
    """The Redis that replicas of the token service share (docs/replicas.md).

    ``url`` is ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://``; every key
    starts with ``prefix``; ``timeout`` bounds connecting and each command (seconds).
    Without this section, ``KEYCARD_REDIS_URL`` selects Redis; without either, each
    replica keeps its state in memory.
    """

    url: str = Field(min_length=1, max_length=2000)
    prefix: str = Field(default="keycard", min_length=1, max_length=100)
    timeout: float = Field(default=5.0, gt=0, le=60)


class AdminConfig(_Model):
    """The operator's credential for the read-only audit page (``/audit``).

    ``token_hash`` is the scrypt hash of the admin token (make one with
    ``keycard-agents sts hash-secret``). The token is accepted as a bearer token or as
    the password of HTTP Basic authentication with user name ``username``.
    """

    token_hash: str
    username: str = Field(default="admin", min_length=1, max_length=200)
    session_lifetime: float = Field(default=3600.0, gt=0, le=86400)

    @field_validator("token_hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        return check_secret_hash_format(value)


class TokenServiceConfig(_Model):
    """Everything the token service needs; see docs/token-service.md."""

    issuer: str | None = None
    key_dir: Path | None = None
    alg: Literal["ES256", "EdDSA", "RS256"] = "ES256"
    lifetimes: Lifetimes = Lifetimes()
    limits: Limits = Limits()
    max_chain_depth: int = Field(default=5, ge=1, le=32)
    allow_repeated_agents: bool = False
    client_assertion_max_lifetime: float = Field(default=300.0, gt=0, le=3600)
    agents: tuple[RegisteredAgent, ...] = ()
    resources: tuple[RegisteredResource, ...] = ()
    users: tuple[DevUser, ...] = ()
    trusted_issuers: tuple[TrustedIssuerConfig, ...] = ()
    clients: tuple[PublicClient, ...] = ()
    audit_file: Path | None = None
    admin: AdminConfig | None = None
    registration: RegistrationConfig = RegistrationConfig()
    connections: tuple[ConnectionConfig, ...] = ()
    vault: VaultConfig = VaultConfig()
    redis: RedisConfig | None = None

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check_url(value)
        if urlsplit(value).query:
            raise ValueError("must not have a query (RFC 8414 §2)")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> TokenServiceConfig:
        _unique("agents", "client_id", [a.client_id for a in self.agents])
        _unique("clients", "client_id", [c.client_id for c in self.clients])
        _unique("users", "username", [u.username for u in self.users])
        _unique("trusted_issuers", "issuer", [t.issuer for t in self.trusted_issuers])
        _unique("connections", "name", [c.name for c in self.connections])
        urls = [u for a in self.agents for u in a.all_resources]
        urls += [r.resource for r in self.resources]
        urls += [url for c in self.connections for url in c.resources]
        _unique("agents/resources/connections", "resource", urls)
        if self.vault.dir is not None and self.key_dir is None:
            raise ValueError("vault.dir needs key_dir (the vault keys are kept there)")
        clash = {a.client_id for a in self.agents} & {c.client_id for c in self.clients}
        if clash:
            raise ValueError(f"client_id {sorted(clash)[0]!r} is both an agent and a public client")
        known = set(urls)
        for i, agent in enumerate(self.agents):
            for j, dep in enumerate(agent.dependencies):
                if dep not in known:
                    raise _FieldError(
                        ("agents", i, "dependencies", j),
                        f"{dep!r} is not a registered agent or resource (nor a connection's "
                        "API): add it to agents, resources or connections",
                    )
        if (
            self.registration.enabled
            and self.issuer is not None
            and not _is_loopback(self.issuer)
            and not self.registration.has_policy
        ):
            raise _FieldError(
                ("registration", "enabled"),
                "open registration is for a loopback (development) issuer only: set "
                "registration.initial_access_token_hash or registration.allowed_redirect_uris",
            )
        if self.issuer is not None:
            if self.issuer in known:
                raise ValueError("the issuer URL must not also be an agent or resource URL")
            if any(t.issuer == self.issuer for t in self.trusted_issuers):
                raise ValueError("the issuer must not also be listed in trusted_issuers")
        return self

    def agent(self, client_id: str) -> RegisteredAgent | None:
        for agent in self.agents:
            if agent.client_id == client_id:
                return agent
        return None

    def agent_for_resource(self, resource: str) -> RegisteredAgent | None:
        for agent in self.agents:
            if resource in agent.all_resources:
                return agent
        return None

    def accepted_scopes(self, resource: str) -> tuple[str, ...] | None:
        """Scopes a registered resource accepts, or ``None`` when it is unknown."""
        agent = self.agent_for_resource(resource)
        if agent is not None:
            return agent.scopes
        for res in self.resources:
            if res.resource == resource:
                return res.scopes
        connection = self.connection_for_resource(resource)
        return None if connection is None else connection.scopes

    def connection_for_resource(self, resource: str) -> ConnectionConfig | None:
        """The connection whose API ``resource`` is, or ``None``."""
        for connection in self.connections:
            if resource in connection.resources:
                return connection
        return None

    def client(self, client_id: str) -> PublicClient | None:
        for client in self.clients:
            if client.client_id == client_id:
                return client
        return None

    def user(self, username: str) -> DevUser | None:
        for user in self.users:
            if user.username == username:
                return user
        return None

    def registration_enabled(self) -> bool:
        """Whether ``/register`` accepts registrations (see :class:`RegistrationConfig`)."""
        reg = self.registration
        if reg.enabled is not None:
            return reg.enabled
        return reg.has_policy or (self.issuer is not None and _is_loopback(self.issuer))

    def longest_lifetime(self) -> float:
        lt = self.lifetimes
        return max(lt.user_token, lt.delegated_token, lt.actor_token)


class _FieldError(ValueError):
    """A cross-field error that knows the exact path it belongs to."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _unique(section: str, key: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{section}: {key} {value!r} appears twice")
        seen.add(value)


#: The key that names an entry of each list section, as people (and policy messages) say it.
_ENTRY_NAMES = {
    "agents": "client_id",
    "clients": "client_id",
    "users": "username",
    "resources": "resource",
    "trusted_issuers": "issuer",
}


def _format_loc(loc: Iterable[str | int], data: Any = None) -> str:
    """``agents[planner].resource``: list entries by their name (or a string entry by its
    value), else by their position counted from 1 (``agents[#2]``)."""
    out = ""
    node = data
    section: str | int | None = None
    for part in loc:
        if isinstance(part, int):
            entry = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            key = _ENTRY_NAMES.get(section) if isinstance(section, str) else None
            name = entry.get(key) if isinstance(entry, dict) and key else entry
            out += f"[{name}]" if isinstance(name, str) and name else f"[#{part + 1}]"
            node = entry
        else:
            out += f".{part}" if out else part
            node = node.get(part) if isinstance(node, dict) else None
        section = part
    return out


def _translate(exc: ValidationError, source: str, data: Any = None) -> ConfigurationError:
    err = exc.errors(include_url=False)[0]
    loc: tuple[str | int, ...] = tuple(err["loc"])
    message = str(err["msg"])
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _FieldError):
        loc = ctx_error.loc
        message = str(ctx_error)
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    where = _format_loc(loc, data) or "(top level)"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return ConfigurationError(f"{source}: {where}: {message}{suffix}", setting=where)


def parse_config(data: dict[str, Any], *, source: str = "config") -> TokenServiceConfig:
    """Validate a mapping (parsed TOML or a dict built in code)."""
    try:
        return TokenServiceConfig.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, source, data) from None


def load_config(path: str | Path) -> TokenServiceConfig:
    """Load a TOML configuration file; a relative ``key_dir``, ``audit_file`` or
    ``registration.clients_file`` is relative to the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"{path}: cannot read the token service configuration ({exc.__class__.__name__})",
            setting=str(path),
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path.name}: not valid TOML: {exc}", setting=str(path)) from exc
    config = parse_config(data, source=path.name)
    if config.key_dir is not None and not config.key_dir.is_absolute():
        config = config.model_copy(update={"key_dir": (path.parent / config.key_dir).resolve()})
    if config.audit_file is not None and not config.audit_file.is_absolute():
        audit_file = (path.parent / config.audit_file).resolve()
        config = config.model_copy(update={"audit_file": audit_file})
    clients_file = config.registration.clients_file
    if clients_file is not None and not clients_file.is_absolute():
        registration = config.registration.model_copy(
            update={"clients_file": (path.parent / clients_file).resolve()}
        )
        config = config.model_copy(update={"registration": registration})
    if config.vault.dir is not None and not config.vault.dir.is_absolute():
        vault = config.vault.model_copy(update={"dir": (path.parent / config.vault.dir).resolve()})
        config = config.model_copy(update={"vault": vault})
    return config
