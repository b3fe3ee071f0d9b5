"""Agent identity: the application credential an agent presents to the token service.

Implements client authentication for the token endpoint: ``client_secret_basic`` and
``client_secret_post`` (RFC 6749 §2.3.1), ``private_key_jwt`` (RFC 7523 §2.2 and §3,
OpenID Connect Core §9; assertion ``typ`` ``client-authentication+jwt`` per
draft-ietf-oauth-rfc7523bis, ``aud`` = the issuer identifier), and a projected workload
token sent as a client assertion (RFC 7521 §4.2). The public key set a ``WebIdentity``
publishes follows RFC 7517 §5 with RFC 7638 thumbprints as ``kid``.

Also resolves the configuration the way hosted Keycard does (docs/configuration.md): explicit
arguments first, then ``KEYCARD_*`` environment variables; every contradiction fails at
start-up with a :class:`ConfigurationError` naming the setting.
"""

from __future__ import annotations

import base64
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import quote_plus, urlsplit

import anyio.to_thread

from keycard_agents._errors import ConfigurationError
from keycard_agents._jose._jwt import CLIENT_ASSERTION_TYPE
from keycard_agents._jose._keys import ALGORITHMS, KeyStore, SigningKey
from keycard_agents._json import loads_bounded

__all__ = [
    "CLIENT_ASSERTION_TYPE_JWT_BEARER",
    "ApplicationCredential",
    "ClientAuthentication",
    "ClientSecret",
    "CredentialType",
    "EKSWorkloadIdentity",
    "HoldsSigningKey",
    "PublishesJwks",
    "WebIdentity",
    "WorkloadIdentity",
    "bind_to_agent",
    "credential_from_env",
    "resolve_issuer",
    "web_identity_from_env",
]

#: ``client_assertion_type`` form value for JWT client assertions (RFC 7523 §2.2).
CLIENT_ASSERTION_TYPE_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

CredentialType = Literal["client_secret", "web_identity", "workload_identity"]
_CREDENTIAL_TYPES: tuple[str, ...] = ("client_secret", "web_identity", "workload_identity")

ENV_CLIENT_ID = "KEYCARD_CLIENT_ID"
ENV_CLIENT_SECRET = "KEYCARD_CLIENT_SECRET"  # noqa: S105 - an environment variable name
ENV_CREDENTIAL_TYPE = "KEYCARD_APPLICATION_CREDENTIAL_TYPE"
ENV_WEB_IDENTITY_DIR = "KEYCARD_WEB_IDENTITY_DIR"
ENV_WORKLOAD_TOKEN_FILE = "KEYCARD_WORKLOAD_TOKEN_FILE"  # noqa: S105
ENV_AWS_TOKEN_FILE = "AWS_WEB_IDENTITY_TOKEN_FILE"  # noqa: S105
# Keycard's names for the same settings (its SDK reads these).
ENV_KEYCARD_WEB_IDENTITY_DIR = "KEYCARD_WEB_IDENTITY_KEY_STORAGE_DIR"
ENV_KEYCARD_EKS_TOKEN_FILE = "KEYCARD_EKS_WORKLOAD_IDENTITY_TOKEN_FILE"  # noqa: S105
#: Where Keycard's EKSWorkloadIdentity looks for the token file, in order.
ENV_AWS_CONTAINER_TOKEN_FILE = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"  # noqa: S105
ENV_AZURE_TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"  # noqa: S105
EKS_TOKEN_FILE_VARIABLES = (
    ENV_KEYCARD_EKS_TOKEN_FILE,
    ENV_AWS_CONTAINER_TOKEN_FILE,
    ENV_AWS_TOKEN_FILE,
)
#: Where a workload identity's token file is found, in order (ours, then Keycard's list).
WORKLOAD_TOKEN_FILE_VARIABLES = (
    ENV_WORKLOAD_TOKEN_FILE,
    *EKS_TOKEN_FILE_VARIABLES,
    ENV_AZURE_TOKEN_FILE,
)
DEFAULT_WEB_IDENTITY_DIR = "./server_keys"  # Keycard's default
ENV_ZONE_ID = "KEYCARD_ZONE_ID"
ENV_ZONE_URL = "KEYCARD_ZONE_URL"
ENV_BASE_URL = "KEYCARD_BASE_URL"

DEFAULT_BASE_URL = "https://keycard.cloud"


@dataclass(frozen=True)
class ClientAuthentication:
    """What a credential adds to one token request: form fields and HTTP headers.

    The repr names the fields only: the values are secrets or single-use assertions.
    """

    form: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"ClientAuthentication(form={sorted(self.form)!r}, headers={sorted(self.headers)!r})"


@runtime_checkable
class ApplicationCredential(Protocol):
    """How an agent authenticates itself to the token service (its client credential)."""

    @property
    def client_id(self) -> str: ...

    async def authenticate(self, *, token_endpoint: str, issuer: str) -> ClientAuthentication:
        """Client authentication for one request to ``token_endpoint``.

        Called once per HTTP attempt: assertions carry a fresh ``jti`` every time.
        """
        ...


@runtime_checkable
class PublishesJwks(Protocol):
    """A credential whose public keys its agent serves (RFC 7517 §5), such as
    :class:`WebIdentity`: the agent's server publishes them at ``/.well-known/jwks.json``
    so the token service can verify its ``private_key_jwt`` assertions (RFC 7523)."""

    def public_jwks(self) -> dict[str, Any]: ...


@runtime_checkable
class HoldsSigningKey(Protocol):
    """A credential with a private key of the agent's own (:class:`WebIdentity`): the
    server signs the agent card with it (A2A 1.0 §8.4), next to publishing its JWKS."""

    @property
    def signing_key(self) -> SigningKey: ...


# --------------------------------------------------------------------------- client secret


class ClientSecret:
    """A client id and secret, sent as HTTP Basic (default) or in the form body.

    Also takes Keycard's shapes: ``ClientSecret((client_id, secret))``, and one pair per
    zone, keyed by the zone's issuer URL: ``ClientSecret({"https://z1.keycard.cloud":
    (id1, secret1), ...})``; each token request then uses the pair of its issuer.
    """

    __slots__ = ("_client_id", "_secret", "_zones", "method")

    def __init__(
        self,
        client_id: str | tuple[str, str] | Mapping[str, tuple[str, str]],
        client_secret: str | None = None,
        *,
        method: Literal["basic", "post"] = "basic",
    ) -> None:
        if method not in ("basic", "post"):
            raise ConfigurationError(
                f"client secret method must be 'basic' or 'post', not {method!r}",
                setting="method",
            )
        zones: dict[str, tuple[str, str]] = {}
        if isinstance(client_id, Mapping):
            if client_secret is not None or not client_id:
                raise ConfigurationError(
                    "per-zone credentials are {issuer: (client_id, client_secret)}, with no "
                    "separate client_secret",
                    setting="client_secret",
                )
            zones = {str(z): _pair(pair, f"zone {z!r}") for z, pair in client_id.items()}
            client_id, client_secret = next(iter(zones.values()))
        elif isinstance(client_id, tuple):
            if client_secret is not None:
                raise ConfigurationError(
                    "pass (client_id, client_secret) or two arguments, not both",
                    setting="client_secret",
                )
            client_id, client_secret = _pair(client_id, "credentials")
        if not client_id:
            raise ConfigurationError("client_id is empty", setting=ENV_CLIENT_ID)
        if not client_secret:
            raise ConfigurationError("client_secret is empty", setting=ENV_CLIENT_SECRET)
        self._client_id = client_id
        self._secret = client_secret
        self._zones = zones
        self.method: Literal["basic", "post"] = method

    @property
    def client_id(self) -> str:
        """The client id (with per-zone credentials: the first zone's; see ``client_id_for``)."""
        return self._client_id

    @property
    def is_multi_zone(self) -> bool:
        """Whether this credential holds one pair per zone (Keycard's name)."""
        return bool(self._zones)

    def client_id_for(self, issuer: str) -> str:
        return self._pair_for(issuer)[0]

    def _pair_for(self, issuer: str) -> tuple[str, str]:
        if not self._zones:
            return self._client_id, self._secret
        pair = self._zones.get(issuer)
        if pair is None:  # configured as https://zone.example or https://zone.example/
            pair = next(
                (p for z, p in self._zones.items() if z.rstrip("/") == issuer.rstrip("/")), None
            )
        if pair is None:
            raise ConfigurationError(
                f"no client credentials for issuer {issuer!r}; configured zones: "
                f"{', '.join(sorted(self._zones))}",
                setting="client_secret",
            )
        return pair

    async def authenticate(self, *, token_endpoint: str, issuer: str) -> ClientAuthentication:
        client_id, secret = self._pair_for(issuer)
        if self.method == "post":
            return ClientAuthentication(form={"client_id": client_id, "client_secret": secret})
        # RFC 6749 §2.3.1: both parts are form-urlencoded before the Basic encoding.
        raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
        basic = base64.b64encode(raw).decode("ascii")
        return ClientAuthentication(headers={"Authorization": f"Basic {basic}"})

    def __repr__(self) -> str:
        if self._zones:
            return f"ClientSecret(zones={sorted(self._zones)!r}, method={self.method!r})"
        return f"ClientSecret(client_id={self._client_id!r}, method={self.method!r})"


def _pair(value: object, what: str) -> tuple[str, str]:
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise ConfigurationError(
            f"{what}: expected (client_id, client_secret), two non-empty strings",
            setting="client_secret",
        )
    return value[0], value[1]


# --------------------------------------------------------------------------- web identity


class WebIdentity:
    """``private_key_jwt``: a key pair kept in ``storage_dir``, assertions signed with it.

    The keys live in a :class:`~keycard_agents._jose._keys.KeyStore` (directory mode 0700,
    one JSON file per key, mode 0600; looser permissions are refused). The key is
    generated on first start and reused afterwards; :meth:`rotate_key` makes a new one
    while the old public key stays published for ``retention`` seconds. Serve
    :meth:`public_jwks` at the agent's ``/.well-known/jwks.json`` so the token service
    can fetch it. One directory per agent: replicas that share a directory should
    create the key once before they start.
    """

    __slots__ = ("_client_id", "_clock", "_lifetime", "_store", "server_name")

    def __init__(
        self,
        client_id: str | None = None,
        *,
        storage_dir: str | os.PathLike[str] | None = None,
        alg: str = "ES256",
        assertion_lifetime: int = 60,
        retention: float = 86_400.0,
        clock: Callable[[], float] = time.time,
        server_name: str | None = None,
        mcp_server_name: str | None = None,
    ) -> None:
        # Keycard's shape: WebIdentity(mcp_server_name=..., storage_dir=...) has no client id;
        # as in Keycard, the client id is then the URL of the agent it serves (bound when
        # the agent is served), and the storage directory defaults to ./server_keys.
        if client_id is not None and not client_id:
            raise ConfigurationError("client_id is empty", setting=ENV_CLIENT_ID)
        self.server_name = server_name or mcp_server_name
        if storage_dir is None:
            storage_dir = DEFAULT_WEB_IDENTITY_DIR
        _refuse_keycard_key_files(Path(storage_dir))
        if alg not in ALGORITHMS:
            raise ConfigurationError(
                f"unsupported web identity algorithm {alg!r}; use one of {', '.join(ALGORITHMS)}",
                setting="alg",
            )
        if not 0 < assertion_lifetime <= 300:
            raise ConfigurationError(
                "assertion_lifetime must be between 1 and 300 seconds",
                setting="assertion_lifetime",
            )
        self._client_id = client_id
        self._lifetime = assertion_lifetime
        self._clock = clock
        try:
            self._store = KeyStore(storage_dir, alg=alg, clock=clock, retention=retention)
            self._store.current  # noqa: B018 - create (or load) the key now, at start-up
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"web identity storage {str(storage_dir)!r}: {exc}", setting=ENV_WEB_IDENTITY_DIR
            ) from exc
        except OSError as exc:
            raise ConfigurationError(
                f"cannot use the web identity directory {str(storage_dir)!r}: {exc.strerror}",
                setting=ENV_WEB_IDENTITY_DIR,
            ) from exc

    @property
    def client_id(self) -> str:
        if self._client_id is None:
            raise ConfigurationError(
                "this WebIdentity has no client id yet: pass WebIdentity(client_id=...), or "
                "serve it with an agent, whose url then is its client id (Keycard's convention)",
                setting="client_id",
            )
        return self._client_id

    @property
    def has_client_id(self) -> bool:
        return self._client_id is not None

    def bind_client_id(self, client_id: str) -> None:
        """Give a WebIdentity built without a client id (Keycard's shape) its client id:
        the URL of the agent it serves. A client id set already is kept."""
        if self._client_id is None and client_id:
            self._client_id = client_id

    @property
    def kid(self) -> str:
        """The current key's id (its RFC 7638 thumbprint)."""
        return self._store.current.kid

    @property
    def alg(self) -> str:
        return self._store.current.alg

    @property
    def storage_dir(self) -> Path | None:
        return self._store.directory

    def public_jwks(self) -> dict[str, Any]:
        """The JWK Set (RFC 7517 §5) to serve at ``/.well-known/jwks.json``."""
        return self._store.public_jwks()

    @property
    def signing_key(self) -> SigningKey:
        """The current private key (signs assertions and the agent card)."""
        return self._store.current

    def rotate_key(self) -> str:
        """Start signing with a new key; returns its ``kid``. The old one stays published."""
        return self._store.rotate().kid

    def create_assertion(self, *, audience: str) -> str:
        """A signed client assertion for ``audience`` (the token service's issuer)."""
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "exp": now + self._lifetime,
        }
        return self._store.current.sign(claims, typ=CLIENT_ASSERTION_TYPE)

    async def authenticate(self, *, token_endpoint: str, issuer: str) -> ClientAuthentication:
        return ClientAuthentication(
            form={
                "client_id": self.client_id,
                "client_assertion_type": CLIENT_ASSERTION_TYPE_JWT_BEARER,
                "client_assertion": self.create_assertion(audience=issuer),
            }
        )

    def get_jwks(self) -> dict[str, Any]:
        """Keycard's name for :meth:`public_jwks`."""
        return self.public_jwks()

    def __repr__(self) -> str:
        return f"WebIdentity(client_id={self._client_id!r}, kid={self.kid!r})"


def _refuse_keycard_key_files(directory: Path) -> None:
    """Keycard's SDK keeps ``NAME.pem`` + ``NAME.json`` (an RSA key) where we keep JWK files:
    say how to move instead of failing on a file we cannot read."""
    try:
        pems = sorted(p for p in directory.glob("*.pem") if p.with_suffix(".json").is_file())
    except OSError:
        return
    if pems:
        raise ConfigurationError(
            f"{str(directory)!r} holds keys of Keycard's SDK ({pems[0].name}); keycard-agents "
            "keeps its keys in its own format. Use a new, empty storage_dir: the agent "
            "publishes its new public key at the same /.well-known/jwks.json, where the zone "
            "fetches it, so nothing needs registering again (see docs/migrating-from-keycard.md)",
            setting=ENV_WEB_IDENTITY_DIR,
        )


# --------------------------------------------------------------------------- workload identity


class WorkloadIdentity:
    """A projected workload token (Kubernetes service account, EKS) used as client assertion.

    The file is read again whenever it changes (path, inode, size or mtime), since the
    platform rotates it in place or by swapping a symlink. Without ``token_file`` it is
    found the way Keycard's SDK finds it: the first of ``KEYCARD_WORKLOAD_TOKEN_FILE``,
    ``KEYCARD_EKS_WORKLOAD_IDENTITY_TOKEN_FILE``, ``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE``,
    ``AWS_WEB_IDENTITY_TOKEN_FILE`` and ``AZURE_FEDERATED_TOKEN_FILE`` that is set.
    Without ``client_id`` no ``client_id`` is sent: the token service identifies the
    workload by its token (Keycard's legacy token credentials).
    """

    __slots__ = ("_cached", "_client_id", "assertion_type", "token_file")

    def __init__(
        self,
        client_id: str | None = None,
        *,
        token_file: str | os.PathLike[str] | None = None,
        assertion_type: str = CLIENT_ASSERTION_TYPE_JWT_BEARER,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if client_id is not None and not client_id:
            raise ConfigurationError("client_id is empty", setting=ENV_CLIENT_ID)
        if token_file is None or str(token_file) == "":
            token_file = _discover_token_file(os.environ if env is None else env)
        self._client_id = client_id
        self.token_file = Path(token_file)
        self.assertion_type = assertion_type
        if not self.token_file.is_file():
            raise ConfigurationError(
                f"workload token file {str(self.token_file)!r} does not exist or is not a file",
                setting=ENV_WORKLOAD_TOKEN_FILE,
            )
        self._cached: tuple[tuple[int, int, int], str] | None = None

    @property
    def client_id(self) -> str:
        """The configured client id, else the ``sub`` of the workload token (a label)."""
        if self._client_id is not None:
            return self._client_id
        try:
            return _unverified_sub(self.read_token()) or "workload"
        except ConfigurationError:
            return "workload"

    def read_token(self) -> str:
        """The current token, read from disk only when the file changed (blocking)."""
        try:
            st = os.stat(self.token_file)
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            if self._cached is not None and self._cached[0] == signature:
                return self._cached[1]
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read workload token file {str(self.token_file)!r}: {exc.strerror}",
                setting=ENV_WORKLOAD_TOKEN_FILE,
            ) from exc
        if not token:
            raise ConfigurationError(
                f"workload token file {str(self.token_file)!r} is empty",
                setting=ENV_WORKLOAD_TOKEN_FILE,
            )
        self._cached = (signature, token)
        return token

    async def authenticate(self, *, token_endpoint: str, issuer: str) -> ClientAuthentication:
        token = await anyio.to_thread.run_sync(self.read_token)
        form = {"client_assertion_type": self.assertion_type, "client_assertion": token}
        if self._client_id is not None:
            form["client_id"] = self._client_id
        return ClientAuthentication(form=form)

    def __repr__(self) -> str:
        return (
            f"WorkloadIdentity(client_id={self._client_id!r}, token_file={str(self.token_file)!r})"
        )


class EKSWorkloadIdentity(WorkloadIdentity):
    """Keycard's name for a workload identity whose token file is found in the environment.

    ``EKSWorkloadIdentity()`` reads ``env_var_name`` when given, then
    ``KEYCARD_EKS_WORKLOAD_IDENTITY_TOKEN_FILE``, ``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE``
    and ``AWS_WEB_IDENTITY_TOKEN_FILE``, as Keycard's SDK does; ``token_file_path`` names
    the file directly.
    """

    __slots__ = ("env_var_name",)

    def __init__(
        self,
        token_file_path: str | os.PathLike[str] | None = None,
        env_var_name: str | None = None,
        *,
        client_id: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        names = (*([env_var_name] if env_var_name else []), *EKS_TOKEN_FILE_VARIABLES)
        if token_file_path is None:
            found = next((name for name in names if env.get(name, "").strip()), None)
            if found is None:
                raise ConfigurationError(
                    f"no workload token file: set one of {', '.join(names)} or pass "
                    "token_file_path=",
                    setting=names[0],
                )
            token_file_path = env[found].strip()
        self.env_var_name = env_var_name
        super().__init__(client_id, token_file=token_file_path)


def _discover_token_file(env: Mapping[str, str]) -> str:
    found = next((n for n in WORKLOAD_TOKEN_FILE_VARIABLES if env.get(n, "").strip()), None)
    if found is None:
        raise ConfigurationError(
            "workload identity needs a token file: pass token_file= or set one of "
            + ", ".join(WORKLOAD_TOKEN_FILE_VARIABLES),
            setting=ENV_WORKLOAD_TOKEN_FILE,
        )
    return env[found].strip()


def _unverified_sub(token: str) -> str | None:
    """The ``sub`` of a JWT, read without verification (for a label only)."""
    try:
        payload = token.split(".")[1]
        claims = loads_bounded(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) and sub else None


# --------------------------------------------------------------------------- discovery


def bind_to_agent(credential: ApplicationCredential, agent_url: str | None) -> None:
    """Give a credential built without a client id (Keycard's ``WebIdentity(mcp_server_name=
    ...)``) the client id Keycard gives it: the URL of the agent it serves."""
    if isinstance(credential, WebIdentity) and agent_url:
        credential.bind_client_id(agent_url)


@dataclass(frozen=True)
class _Setting:
    """A resolved setting: its value, the name to report, and whether it was explicit."""

    value: str
    name: str
    explicit: bool


def _pick(
    explicit: str | os.PathLike[str] | None, arg: str, env: Mapping[str, str], var: str
) -> _Setting | None:
    if explicit is not None and str(explicit) != "":
        return _Setting(str(explicit), f"{arg} argument", True)
    value = env.get(var, "").strip()
    return _Setting(value, var, False) if value else None


def credential_from_env(
    env: Mapping[str, str] | None = None,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
    credential_type: CredentialType | None = None,
    web_identity_dir: str | os.PathLike[str] | None = None,
    workload_token_file: str | os.PathLike[str] | None = None,
    client_secret_method: Literal["basic", "post"] = "basic",  # noqa: S107 - not a secret
    web_identity_alg: str = "ES256",
) -> ApplicationCredential:
    """Build the agent's application credential from arguments, then the environment.

    Each setting comes from its argument when given, else from its variable:
    ``KEYCARD_CLIENT_ID``, ``KEYCARD_CLIENT_SECRET``, ``KEYCARD_APPLICATION_CREDENTIAL_TYPE``
    (``client_secret`` | ``web_identity`` | ``workload_identity``; Keycard's
    ``eks_workload_identity`` too), ``KEYCARD_WEB_IDENTITY_DIR`` (or Keycard's
    ``KEYCARD_WEB_IDENTITY_KEY_STORAGE_DIR``), ``KEYCARD_WORKLOAD_TOKEN_FILE`` (falling
    back, for workload identity, to the first of ``KEYCARD_EKS_WORKLOAD_IDENTITY_TOKEN_FILE``,
    ``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE``, ``AWS_WEB_IDENTITY_TOKEN_FILE``,
    ``AZURE_FEDERATED_TOKEN_FILE``). Without a type, the one credential configured is
    used, explicit arguments before variables; two at the same level, or a credential that
    contradicts the type, raise :class:`ConfigurationError`. As in Keycard's SDK, only a
    client secret needs ``KEYCARD_CLIENT_ID``: a web identity without one takes the URL of
    the agent it serves as its client id, and ``web_identity`` without a directory keeps
    its keys in ``./server_keys``.
    """
    env = os.environ if env is None else env
    cid = _pick(client_id, "client_id", env, ENV_CLIENT_ID)
    kind = _pick(credential_type, "credential_type", env, ENV_CREDENTIAL_TYPE)
    if kind is not None and kind.value == "eks_workload_identity":  # Keycard's legacy name
        kind = _Setting("workload_identity", kind.name, kind.explicit)
    material: dict[str, _Setting | None] = {
        "client_secret": _pick(client_secret, "client_secret", env, ENV_CLIENT_SECRET),
        "web_identity": _web_identity_dir(web_identity_dir, env),
        "workload_identity": _pick(
            workload_token_file, "workload_token_file", env, ENV_WORKLOAD_TOKEN_FILE
        ),
    }
    aws = next(
        (s for n in WORKLOAD_TOKEN_FILE_VARIABLES[1:] if (s := _pick(None, "", env, n))), None
    )

    if kind is not None:
        if kind.value not in _CREDENTIAL_TYPES:
            raise ConfigurationError(
                f"{kind.name} is {kind.value!r}; use one of {', '.join(_CREDENTIAL_TYPES)}",
                setting=_setting_id(kind),
            )
        chosen = kind.value
        for other, setting in material.items():
            # Another credential at the same level as the type (or above it) contradicts it.
            if other != chosen and setting is not None and (setting.explicit or not kind.explicit):
                raise ConfigurationError(
                    f"{setting.name} is set but {kind.name} is {chosen!r}; "
                    f"remove {setting.name} or change {kind.name}",
                    setting=_setting_id(setting),
                )
    else:
        explicit = [k for k, s in material.items() if s is not None and s.explicit]
        configured = explicit or [k for k, s in material.items() if s is not None]
        if len(configured) > 1:
            names = " and ".join(s.name for k in configured if (s := material[k]) is not None)
            raise ConfigurationError(
                f"{names} are both set; configure one application credential, or set "
                f"{ENV_CREDENTIAL_TYPE} to choose",
                setting=ENV_CREDENTIAL_TYPE,
            )
        if configured:
            chosen = configured[0]
        elif aws is not None:
            chosen = "workload_identity"
        else:
            raise ConfigurationError(
                "no application credential configured: set "
                f"{ENV_CLIENT_SECRET}, {ENV_WEB_IDENTITY_DIR} or {ENV_WORKLOAD_TOKEN_FILE} "
                f"(or {ENV_CREDENTIAL_TYPE}), or pass a credential explicitly",
                setting=ENV_CREDENTIAL_TYPE,
            )

    client = None if cid is None else cid.value
    if chosen == "workload_identity":
        token_file = material["workload_identity"] or aws
        if token_file is None:
            raise ConfigurationError(
                f"workload identity needs a token file: set {ENV_WORKLOAD_TOKEN_FILE} "
                f"(or {', '.join(WORKLOAD_TOKEN_FILE_VARIABLES[1:])}) or pass "
                "workload_token_file=",
                setting=ENV_WORKLOAD_TOKEN_FILE,
            )
        return WorkloadIdentity(client, token_file=token_file.value)
    if chosen == "web_identity":
        directory = material["web_identity"]
        return WebIdentity(
            client,
            storage_dir=directory.value if directory is not None else DEFAULT_WEB_IDENTITY_DIR,
            alg=web_identity_alg,
        )
    if cid is None:
        raise ConfigurationError(
            f"no client id configured: set {ENV_CLIENT_ID} or pass client_id=",
            setting=ENV_CLIENT_ID,
        )
    secret = material["client_secret"]
    if secret is None:
        raise ConfigurationError(
            f"client secret credential needs a secret: set {ENV_CLIENT_SECRET} "
            "or pass client_secret=",
            setting=ENV_CLIENT_SECRET,
        )
    return ClientSecret(cid.value, secret.value, method=client_secret_method)


def web_identity_from_env(env: Mapping[str, str] | None = None) -> ApplicationCredential | None:
    """The credential :func:`credential_from_env` builds, when the environment selects a
    web identity (a key pair whose public keys the agent must publish); else ``None``.

    Lets an agent configured only by environment serve its ``/.well-known/jwks.json``
    from the start, with the same key its token requests are signed with.
    """
    env = os.environ if env is None else env
    kind = env.get(ENV_CREDENTIAL_TYPE, "").strip()
    directory = _web_identity_dir(None, env)
    if kind == "web_identity" or (not kind and directory is not None):
        return credential_from_env(env)
    return None


def _web_identity_dir(
    explicit: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> _Setting | None:
    """The key directory: the argument, else ours or Keycard's variable (they must agree)."""
    ours = _pick(explicit, "web_identity_dir", env, ENV_WEB_IDENTITY_DIR)
    if ours is not None and ours.explicit:
        return ours
    keycards = _pick(None, "", env, ENV_KEYCARD_WEB_IDENTITY_DIR)
    if ours is not None and keycards is not None and ours.value != keycards.value:
        raise ConfigurationError(
            f"{ENV_WEB_IDENTITY_DIR} and {ENV_KEYCARD_WEB_IDENTITY_DIR} name different "
            "directories; set only one of them",
            setting=ENV_KEYCARD_WEB_IDENTITY_DIR,
        )
    return ours or keycards


def _setting_id(setting: _Setting) -> str:
    """The ``setting`` attribute: the argument name or the environment variable."""
    return setting.name.removesuffix(" argument")


# --------------------------------------------------------------------------- issuer

_ZONE_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def resolve_issuer(
    *,
    issuer: str | None = None,
    zone_id: str | None = None,
    zone_url: str | None = None,
    base_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The token service's issuer identifier.

    ``issuer=`` is used as given. Otherwise, with the precedence of Keycard's SDK: the zone
    URL (``zone_url=``, else ``KEYCARD_ZONE_URL``) when there is one, else the zone id
    (``zone_id=``, else ``KEYCARD_ZONE_ID``) as ``https://{zone_id}.keycard.cloud`` or
    ``{zone_id}.`` + the host of ``base_url=`` / ``KEYCARD_BASE_URL``: a zone URL beats a
    zone id, and a variable stands in for an argument not given. The result must be an
    ``https`` URL (``http`` only on loopback) without query or fragment (RFC 8414 §2), and
    is returned exactly as configured (a trailing ``/`` included: issuers compare as
    strings, RFC 8414 §3.3, RFC 7519 §4.1.1).
    """
    env = os.environ if env is None else env
    own = _pick(issuer, "issuer", {}, "")
    if own is not None:
        others = [
            s for s in (_pick(zone_id, "zone_id", {}, ""), _pick(zone_url, "zone_url", {}, "")) if s
        ]
        if others:
            raise ConfigurationError(
                f"issuer argument and {others[0].name} are both set; configure the token "
                "service with only one of them",
                setting=_setting_id(others[0]),
            )
        return _check_url(own.value, own)
    url = _pick(zone_url, "zone_url", env, ENV_ZONE_URL)
    if url is not None:  # Keycard: the zone URL wins over a zone id (and its base URL)
        return _check_url(url.value, url)
    zone = _pick(zone_id, "zone_id", env, ENV_ZONE_ID)
    if zone is None:
        raise ConfigurationError(
            "no token service configured: pass issuer=, zone_id= or zone_url=, "
            f"or set {ENV_ZONE_URL} or {ENV_ZONE_ID}",
            setting=ENV_ZONE_ID,
        )
    if not _ZONE_ID.fullmatch(zone.value):
        raise ConfigurationError(
            f"{zone.name} {zone.value!r} is not a valid zone id "
            "(lowercase letters, digits and '-')",
            setting=_setting_id(zone),
        )
    base = _pick(base_url, "base_url", env, ENV_BASE_URL)
    root = _check_url(base.value if base else DEFAULT_BASE_URL, base or zone).rstrip("/")
    parts = urlsplit(root)
    if parts.path and base is not None:
        raise ConfigurationError(
            f"{base.name} {base.value!r} must not have a path", setting=_setting_id(base)
        )
    return f"{parts.scheme}://{zone.value}.{parts.netloc}"


def _check_url(value: str, setting: _Setting) -> str:
    parts = urlsplit(value)
    host = parts.hostname or ""
    secure = parts.scheme == "https" or (parts.scheme == "http" and host in _LOOPBACK)
    if not secure or not host or parts.query or parts.fragment:
        raise ConfigurationError(
            f"{setting.name} {value!r} is not a valid issuer URL: it must use https "
            "(http only on localhost) and have no query or fragment",
            setting=_setting_id(setting),
        )
    return value
