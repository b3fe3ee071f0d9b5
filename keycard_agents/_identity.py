"""Agent identity: the application credential an agent presents to the token service.

Implements client authentication for the token endpoint: ``client_secret_basic`` and
``client_secret_post`` (RFC 6749 §2.3.1), ``private_key_jwt`` (RFC 7523 §2.2 and §3,
OpenID Connect Core §9; assertion ``typ`` ``client-authentication+jwt`` per
draft-ietf-oauth-rfc7523bis, ``aud`` = the issuer identifier), and a projected workload
token sent as a client assertion (RFC 7521 §4.2). The public key set a ``WebIdentity``
publishes follows RFC 7517 §5 with RFC 7638 thumbprints as ``kid``.

Also resolves the configuration the way hosted Keycard does (DESIGN §8): explicit
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

from ._errors import ConfigurationError
from ._keys import ALGORITHMS, KeyStore
from ._tokens import CLIENT_ASSERTION_TYPE

__all__ = [
    "CLIENT_ASSERTION_TYPE_JWT_BEARER",
    "ApplicationCredential",
    "ClientAuthentication",
    "ClientSecret",
    "CredentialType",
    "WebIdentity",
    "WorkloadIdentity",
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


# --------------------------------------------------------------------------- client secret


class ClientSecret:
    """A client id and secret, sent as HTTP Basic (default) or in the form body."""

    __slots__ = ("_client_id", "_secret", "method")

    def __init__(
        self, client_id: str, client_secret: str, *, method: Literal["basic", "post"] = "basic"
    ) -> None:
        if not client_id:
            raise ConfigurationError("client_id is empty", setting=ENV_CLIENT_ID)
        if not client_secret:
            raise ConfigurationError("client_secret is empty", setting=ENV_CLIENT_SECRET)
        if method not in ("basic", "post"):
            raise ConfigurationError(
                f"client secret method must be 'basic' or 'post', not {method!r}",
                setting="method",
            )
        self._client_id = client_id
        self._secret = client_secret
        self.method: Literal["basic", "post"] = method

    @property
    def client_id(self) -> str:
        return self._client_id

    async def authenticate(self, *, token_endpoint: str, issuer: str) -> ClientAuthentication:
        if self.method == "post":
            return ClientAuthentication(
                form={"client_id": self._client_id, "client_secret": self._secret}
            )
        # RFC 6749 §2.3.1: both parts are form-urlencoded before the Basic encoding.
        raw = f"{quote_plus(self._client_id)}:{quote_plus(self._secret)}".encode()
        basic = base64.b64encode(raw).decode("ascii")
        return ClientAuthentication(headers={"Authorization": f"Basic {basic}"})

    def __repr__(self) -> str:
        return f"ClientSecret(client_id={self._client_id!r}, method={self.method!r})"


# --------------------------------------------------------------------------- web identity


class WebIdentity:
    """``private_key_jwt``: a key pair kept in ``storage_dir``, assertions signed with it.

    The keys live in a :class:`~keycard_agents._keys.KeyStore` (directory mode 0700,
    one JSON file per key, mode 0600; looser permissions are refused). The key is
    generated on first start and reused afterwards; :meth:`rotate_key` makes a new one
    while the old public key stays published for ``retention`` seconds. Serve
    :meth:`public_jwks` at the agent's ``/.well-known/jwks.json`` so the token service
    can fetch it. One directory per agent: replicas that share a directory should
    create the key once before they start.
    """

    __slots__ = ("_client_id", "_clock", "_lifetime", "_store")

    def __init__(
        self,
        client_id: str,
        *,
        storage_dir: str | os.PathLike[str],
        alg: str = "ES256",
        assertion_lifetime: int = 60,
        retention: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not client_id:
            raise ConfigurationError("client_id is empty", setting=ENV_CLIENT_ID)
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
        return self._client_id

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

    def rotate_key(self) -> str:
        """Start signing with a new key; returns its ``kid``. The old one stays published."""
        return self._store.rotate().kid

    def create_assertion(self, *, audience: str) -> str:
        """A signed client assertion for ``audience`` (the token service's issuer)."""
        now = int(self._clock())
        claims = {
            "iss": self._client_id,
            "sub": self._client_id,
            "aud": audience,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "exp": now + self._lifetime,
        }
        return self._store.current.sign(claims, typ=CLIENT_ASSERTION_TYPE)

    async def authenticate(self, *, token_endpoint: str, issuer: str) -> ClientAuthentication:
        return ClientAuthentication(
            form={
                "client_id": self._client_id,
                "client_assertion_type": CLIENT_ASSERTION_TYPE_JWT_BEARER,
                "client_assertion": self.create_assertion(audience=issuer),
            }
        )

    def __repr__(self) -> str:
        return f"WebIdentity(client_id={self._client_id!r}, kid={self.kid!r})"


# --------------------------------------------------------------------------- workload identity


class WorkloadIdentity:
    """A projected workload token (Kubernetes service account, EKS) used as client assertion.

    The file is read again whenever it changes (path, inode, size or mtime), since the
    platform rotates it in place or by swapping a symlink.
    """

    __slots__ = ("_cached", "_client_id", "assertion_type", "token_file")

    def __init__(
        self,
        client_id: str,
        *,
        token_file: str | os.PathLike[str],
        assertion_type: str = CLIENT_ASSERTION_TYPE_JWT_BEARER,
    ) -> None:
        if not client_id:
            raise ConfigurationError("client_id is empty", setting=ENV_CLIENT_ID)
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
        return self._client_id

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
        return ClientAuthentication(
            form={
                "client_id": self._client_id,
                "client_assertion_type": self.assertion_type,
                "client_assertion": token,
            }
        )

    def __repr__(self) -> str:
        return (
            f"WorkloadIdentity(client_id={self._client_id!r}, token_file={str(self.token_file)!r})"
        )


# --------------------------------------------------------------------------- discovery


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
    (``client_secret`` | ``web_identity`` | ``workload_identity``),
    ``KEYCARD_WEB_IDENTITY_DIR``, ``KEYCARD_WORKLOAD_TOKEN_FILE`` (falling back to
    ``AWS_WEB_IDENTITY_TOKEN_FILE`` for workload identity). Without a type, the one
    credential configured is used, explicit arguments before variables; two at the same
    level, or a credential that contradicts the type, raise :class:`ConfigurationError`.
    """
    env = os.environ if env is None else env
    cid = _pick(client_id, "client_id", env, ENV_CLIENT_ID)
    kind = _pick(credential_type, "credential_type", env, ENV_CREDENTIAL_TYPE)
    material: dict[str, _Setting | None] = {
        "client_secret": _pick(client_secret, "client_secret", env, ENV_CLIENT_SECRET),
        "web_identity": _pick(web_identity_dir, "web_identity_dir", env, ENV_WEB_IDENTITY_DIR),
        "workload_identity": _pick(
            workload_token_file, "workload_token_file", env, ENV_WORKLOAD_TOKEN_FILE
        ),
    }
    aws = _pick(None, "", env, ENV_AWS_TOKEN_FILE)

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

    if cid is None:
        raise ConfigurationError(
            f"no client id configured: set {ENV_CLIENT_ID} or pass client_id=",
            setting=ENV_CLIENT_ID,
        )
    if chosen == "workload_identity":
        token_file = material["workload_identity"] or aws
        if token_file is None:
            raise ConfigurationError(
                f"workload identity needs a token file: set {ENV_WORKLOAD_TOKEN_FILE} "
                f"(or {ENV_AWS_TOKEN_FILE}) or pass workload_token_file=",
                setting=ENV_WORKLOAD_TOKEN_FILE,
            )
        return WorkloadIdentity(cid.value, token_file=token_file.value)
    if chosen == "web_identity":
        directory = material["web_identity"]
        if directory is None:
            raise ConfigurationError(
                f"web identity needs a key directory: set {ENV_WEB_IDENTITY_DIR} "
                "or pass web_identity_dir=",
                setting=ENV_WEB_IDENTITY_DIR,
            )
        return WebIdentity(cid.value, storage_dir=directory.value, alg=web_identity_alg)
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
    directory = env.get(ENV_WEB_IDENTITY_DIR, "").strip()
    if kind == "web_identity" or (not kind and directory):
        return credential_from_env(env)
    return None


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

    From one of ``issuer=``, ``zone_id=`` (``https://{zone_id}.keycard.cloud``, or
    ``{zone_id}.`` + the host of ``base_url``) or ``zone_url=``; without an argument, from
    ``KEYCARD_ZONE_ID`` / ``KEYCARD_ZONE_URL`` with ``KEYCARD_BASE_URL``. The result must
    be an ``https`` URL (``http`` only on loopback) without query or fragment
    (RFC 8414 §2), and is returned exactly as configured (a trailing ``/`` included).
    """
    env = os.environ if env is None else env
    base = _pick(base_url, "base_url", env, ENV_BASE_URL)
    explicit = [
        s
        for s in (
            _pick(issuer, "issuer", {}, ""),
            _pick(zone_id, "zone_id", {}, ""),
            _pick(zone_url, "zone_url", {}, ""),
        )
        if s is not None
    ]
    if not explicit:
        explicit = [
            s
            for s in (_pick(None, "", env, ENV_ZONE_ID), _pick(None, "", env, ENV_ZONE_URL))
            if s is not None
        ]
    if len(explicit) > 1:
        names = " and ".join(s.name for s in explicit)
        raise ConfigurationError(
            f"{names} are both set; configure the token service with only one of them",
            setting=_setting_id(explicit[1]),
        )
    if not explicit:
        raise ConfigurationError(
            "no token service configured: pass issuer=, zone_id= or zone_url=, "
            f"or set {ENV_ZONE_ID} or {ENV_ZONE_URL}",
            setting=ENV_ZONE_ID,
        )
    source = explicit[0]
    is_zone_id = source.name in ("zone_id argument", ENV_ZONE_ID)
    if base is not None and not is_zone_id and (base.explicit or not source.explicit):
        raise ConfigurationError(
            f"{base.name} only applies with a zone id, but the token service comes from "
            f"{source.name}; remove {base.name}",
            setting=_setting_id(base),
        )
    if is_zone_id:
        if not _ZONE_ID.fullmatch(source.value):
            raise ConfigurationError(
                f"{source.name} {source.value!r} is not a valid zone id "
                "(lowercase letters, digits and '-')",
                setting=_setting_id(source),
            )
        root = _check_url(base.value if base else DEFAULT_BASE_URL, base or source).rstrip("/")
        parts = urlsplit(root)
        if parts.path and base is not None:
            raise ConfigurationError(
                f"{base.name} {base.value!r} must not have a path", setting=_setting_id(base)
            )
        return f"{parts.scheme}://{source.value}.{parts.netloc}"
    # Kept exactly as configured: issuers compare as strings (RFC 8414 §3.3, RFC 7519
    # §4.1.1), so a zone whose identifier ends in "/" must be configured with it.
    return _check_url(source.value, source)


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
