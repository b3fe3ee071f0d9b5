"""The embedded token service: issue user, actor and delegated tokens locally.

Public entry points; the implementation lives in ``keycard_agents._sts``. See
docs/token-service.md. Implements the issuing side of the delegation profile
(RFC 8693 token exchange with nested ``act``, RFC 8707 resources, RFC 7523 and
RFC 6749 §2.3.1 client authentication, RFC 7636 PKCE sign-in, RFC 8414 metadata,
RFC 7591 dynamic registration of public clients).
"""

from __future__ import annotations

from keycard_agents._audit._sts_records import AuditRecord as AuditRecord
from keycard_agents._audit._sts_records import AuditStore as AuditStore
from keycard_agents._audit._sts_records import JsonlAuditStore as JsonlAuditStore
from keycard_agents._audit._sts_records import MemoryAuditStore as MemoryAuditStore
from keycard_agents._oauth._pkce import pkce_challenge as pkce_challenge
from keycard_agents._sts._app import TokenService as TokenService
from keycard_agents._sts._client_store import ClientStore as ClientStore
from keycard_agents._sts._client_store import JsonlClientStore as JsonlClientStore
from keycard_agents._sts._client_store import MemoryClientStore as MemoryClientStore
from keycard_agents._sts._client_store import RegisteredClient as RegisteredClient
from keycard_agents._sts._config import AdminConfig as AdminConfig
from keycard_agents._sts._config import ConnectionConfig as ConnectionConfig
from keycard_agents._sts._config import DevUser as DevUser
from keycard_agents._sts._config import Lifetimes as Lifetimes
from keycard_agents._sts._config import Limits as Limits
from keycard_agents._sts._config import PublicClient as PublicClient
from keycard_agents._sts._config import RedisConfig as RedisConfig
from keycard_agents._sts._config import RegisteredAgent as RegisteredAgent
from keycard_agents._sts._config import RegisteredResource as RegisteredResource
from keycard_agents._sts._config import RegistrationConfig as RegistrationConfig
from keycard_agents._sts._config import TokenServiceConfig as TokenServiceConfig
from keycard_agents._sts._config import TrustedIssuerConfig as TrustedIssuerConfig
from keycard_agents._sts._config import VaultConfig as VaultConfig
from keycard_agents._sts._config import load_config as load_config
from keycard_agents._sts._config import parse_config as parse_config
from keycard_agents._sts._connections._broker import ConnectionStats as ConnectionStats
from keycard_agents._sts._connections._vault import FileVaultStore as FileVaultStore
from keycard_agents._sts._connections._vault import MemoryVaultStore as MemoryVaultStore
from keycard_agents._sts._connections._vault import StoredGrant as StoredGrant
from keycard_agents._sts._connections._vault import TokenVault as TokenVault
from keycard_agents._sts._connections._vault import VaultError as VaultError
from keycard_agents._sts._connections._vault import VaultKeyMissingError as VaultKeyMissingError
from keycard_agents._sts._connections._vault import VaultKeys as VaultKeys
from keycard_agents._sts._connections._vault import (
    VaultRecordTamperedError as VaultRecordTamperedError,
)
from keycard_agents._sts._connections._vault import VaultStore as VaultStore
from keycard_agents._sts._secrets import WeakSecretError as WeakSecretError
from keycard_agents._sts._secrets import hash_client_secret as hash_client_secret
from keycard_agents._sts._secrets import hash_secret as hash_secret
from keycard_agents._sts._secrets import new_client_secret as new_client_secret
from keycard_agents._sts._secrets import verify_secret as verify_secret
from keycard_agents._sts._token_endpoint import TokenStats as TokenStats

__all__ = [
    "AdminConfig",
    "AuditRecord",
    "AuditStore",
    "ClientStore",
    "ConnectionConfig",
    "ConnectionStats",
    "DevUser",
    "FileVaultStore",
    "JsonlAuditStore",
    "JsonlClientStore",
    "Lifetimes",
    "Limits",
    "MemoryAuditStore",
    "MemoryClientStore",
    "MemoryVaultStore",
    "PublicClient",
    "RedisConfig",
    "RegisteredAgent",
    "RegisteredClient",
    "RegisteredResource",
    "RegistrationConfig",
    "StoredGrant",
    "TokenService",
    "TokenServiceConfig",
    "TokenStats",
    "TokenVault",
    "TrustedIssuerConfig",
    "VaultConfig",
    "VaultError",
    "VaultKeyMissingError",
    "VaultKeys",
    "VaultRecordTamperedError",
    "VaultStore",
    "WeakSecretError",
    "hash_client_secret",
    "hash_secret",
    "load_config",
    "new_client_secret",
    "parse_config",
    "pkce_challenge",
    "verify_secret",
]
