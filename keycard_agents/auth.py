"""Tokens, keys and credentials: verifying access tokens, signing keys, discovering issuers'
keys, the RFC 8693 exchange client and token inspection.

What an agent needs is at the package root (credentials, ``credential_from_env``,
``resolve_issuer``); this module has the pieces to build or test your own wiring:
:class:`TokenVerifier` (RFC 9068 access tokens for a resource), :func:`verify_jwt`
(any JWT, every check in one call), :class:`KeyStore` / :class:`SigningKey` (RFC 7517
keys), :class:`JWKSCache` (RFC 8414 discovery), :class:`TokenExchangeClient` (RFC 8693),
:func:`protected_resource_metadata` (RFC 9728) and :func:`inspect_token`.
"""

from __future__ import annotations

from keycard_agents._agent._card import protected_resource_metadata as protected_resource_metadata
from keycard_agents._errors import InvalidTokenResponseError as InvalidTokenResponseError
from keycard_agents._jose._jwt import ACCESS_TOKEN_TYPE as ACCESS_TOKEN_TYPE
from keycard_agents._jose._jwt import CLIENT_ASSERTION_TYPE as CLIENT_ASSERTION_TYPE
from keycard_agents._jose._jwt import verify_jwt as verify_jwt
from keycard_agents._jose._keys import ALGORITHMS as ALGORITHMS
from keycard_agents._jose._keys import KeyResolver as KeyResolver
from keycard_agents._jose._keys import KeyStore as KeyStore
from keycard_agents._jose._keys import SigningKey as SigningKey
from keycard_agents._jose._keys import StaticKeys as StaticKeys
from keycard_agents._jose._profiles import TokenProfile as TokenProfile
from keycard_agents._oauth._credentials import PublishesJwks as PublishesJwks
from keycard_agents._oauth._discovery import ResourceMetadata as ResourceMetadata
from keycard_agents._oauth._exchange import ExchangedToken as ExchangedToken
from keycard_agents._oauth._exchange import ExchangeStats as ExchangeStats
from keycard_agents._oauth._exchange import SharedTokenCache as SharedTokenCache
from keycard_agents._oauth._exchange import TokenExchangeClient as TokenExchangeClient
from keycard_agents._oauth._inspect import TokenReport as TokenReport
from keycard_agents._oauth._inspect import inspect_token as inspect_token
from keycard_agents._oauth._jwks import JWKSCache as JWKSCache
from keycard_agents._oauth._jwks import TrustedIssuer as TrustedIssuer
from keycard_agents._oauth._verifier import TokenVerifier as TokenVerifier

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "ALGORITHMS",
    "CLIENT_ASSERTION_TYPE",
    "ExchangeStats",
    "ExchangedToken",
    "InvalidTokenResponseError",
    "JWKSCache",
    "KeyResolver",
    "KeyStore",
    "PublishesJwks",
    "ResourceMetadata",
    "SharedTokenCache",
    "SigningKey",
    "StaticKeys",
    "TokenExchangeClient",
    "TokenProfile",
    "TokenReport",
    "TokenVerifier",
    "TrustedIssuer",
    "inspect_token",
    "protected_resource_metadata",
    "verify_jwt",
]
