"""Configuration of connections to third-party APIs and of the token vault.

A connection names an upstream provider the token service signs users in to on their
behalf (RFC 6749 §4.1 authorization code with RFC 7636 PKCE, endpoints given or found
by RFC 8414 / OpenID Connect Discovery 1.0 §4), the API base URLs it serves (the RFC 8707
resources a dependency names), and optionally an RFC 7009 revocation endpoint. A static
connection holds a per-user API key instead. Upstream client secrets come from an
environment variable or a file, never from the configuration itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from keycard_agents._errors import ConfigurationError
from keycard_agents._sts._values import check_scopes, check_url

__all__ = ["ConnectionConfig", "VaultConfig"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_MAX_SECRET_BYTES = 4096


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConnectionConfig(_Model):
    """One upstream provider (``kind = "oauth"``) or per-user API key (``kind = "static"``).

    ``resources`` are the API base URLs the connection serves: an agent that lists one
    of them in its ``dependencies`` gets the user's upstream token for it by token
    exchange. ``scopes`` are the upstream scopes asked for when the user connects, and
    the most an agent may obtain. For ``oauth``, give either ``issuer`` (its metadata is
    discovered) or ``authorization_endpoint`` and ``token_endpoint``; the client secret
    comes from ``client_secret_env`` or ``client_secret_file``.
    """

    name: str
    kind: Literal["oauth", "static"] = "oauth"
    display_name: str | None = Field(default=None, max_length=100)
    resources: tuple[str, ...] = Field(min_length=1)
    scopes: tuple[str, ...] = ()
    issuer: str | None = None
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    revocation_endpoint: str | None = None
    client_id: str | None = Field(default=None, min_length=1, max_length=200)
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    client_auth: Literal["client_secret_basic", "client_secret_post", "none"] = (
        "client_secret_basic"
    )
    pkce: bool = True
    upstream_resource: str | None = None
    """An RFC 8707 ``resource`` to send upstream (for providers that want one)."""
    static_lifetime: float = Field(default=300.0, gt=0, le=86400)
    """For static keys: the ``expires_in`` reported to agents (how long they may cache)."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be 1-63 lower-case letters, digits, '-' or '_' (it is a URL path segment)"
            )
        return value

    @field_validator("resources")
    @classmethod
    def _resources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            check_url(url)
        if len(set(value)) != len(value):
            raise ValueError("lists a resource twice")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_scopes(value)

    @field_validator(
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "revocation_endpoint",
        "upstream_resource",
    )
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator("client_secret_env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("must be an environment variable name")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> ConnectionConfig:
        oauth_only = {
            "issuer": self.issuer,
            "authorization_endpoint": self.authorization_endpoint,
            "token_endpoint": self.token_endpoint,
            "revocation_endpoint": self.revocation_endpoint,
            "client_id": self.client_id,
            "client_secret_env": self.client_secret_env,
            "client_secret_file": self.client_secret_file,
            "upstream_resource": self.upstream_resource,
        }
        if self.kind == "static":
            given = [k for k, v in oauth_only.items() if v is not None]
            if given:
                raise ValueError(f"{given[0]} is only for kind = 'oauth'")
            return self
        if self.client_id is None:
            raise ValueError("kind = 'oauth' needs the upstream client_id")
        if self.issuer is None and (
            self.authorization_endpoint is None or self.token_endpoint is None
        ):
            raise ValueError(
                "needs issuer (for discovery) or both authorization_endpoint and token_endpoint"
            )
        has_secret = self.client_secret_env is not None or self.client_secret_file is not None
        if self.client_secret_env is not None and self.client_secret_file is not None:
            raise ValueError("give one of client_secret_env or client_secret_file, not both")
        if self.client_auth == "none":
            if has_secret:
                raise ValueError("client_auth = 'none' takes no client secret")
            if not self.pkce:
                raise ValueError("a public upstream client (client_auth = 'none') needs pkce")
        elif not has_secret:
            raise ValueError(
                f"client_auth = {self.client_auth!r} needs client_secret_env or "
                "client_secret_file (the secret itself never goes in the configuration)"
            )
        return self

    @property
    def title(self) -> str:
        return self.display_name or self.name

    def client_secret(self) -> str | None:
        """Read the upstream client secret from its environment variable or file."""
        if self.client_secret_env is not None:
            value = os.environ.get(self.client_secret_env)
            if not value:
                raise ConfigurationError(
                    f"connections[{self.name}]: environment variable {self.client_secret_env} "
                    "(the upstream client secret) is not set",
                    setting=self.client_secret_env,
                )
            return value
        if self.client_secret_file is not None:
            try:
                raw = self.client_secret_file.read_bytes()[: _MAX_SECRET_BYTES + 1]
                value = raw.decode("utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigurationError(
                    f"connections[{self.name}]: cannot read client_secret_file "
                    f"{self.client_secret_file} ({type(exc).__name__})",
                    setting="client_secret_file",
                ) from exc
            if not value or len(raw) > _MAX_SECRET_BYTES:
                raise ConfigurationError(
                    f"connections[{self.name}]: client_secret_file {self.client_secret_file} "
                    "is empty or larger than 4 KiB",
                    setting="client_secret_file",
                )
            return value
        return None


class VaultConfig(_Model):
    """Where users' upstream tokens are kept, encrypted (AES-256-GCM).

    ``dir``: a directory of encrypted records (one file each); without it they are kept
    in memory. The vault keys live in ``<key_dir>/vault`` (rotate them with
    ``keycard-agents sts rotate-vault-key``); a ``dir`` needs a ``key_dir``.
    ``refresh_margin``: an upstream access token closer than this to its expiry is
    refreshed before it is handed out.
    """

    dir: Path | None = None
    refresh_margin: float = Field(default=60.0, ge=0, le=3600)
    connect_lifetime: float = Field(default=600.0, gt=0, le=3600)
    """How long a started connect flow (its ``state``) stays valid."""
    session_lifetime: float = Field(default=3600.0, gt=0, le=86400)
    """How long a sign-in on the connections page lasts."""
