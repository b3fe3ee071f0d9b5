"""keycard-agents: agent-to-agent delegation with real RFC 8693 token exchange."""

from __future__ import annotations

from ._errors import AuthenticationError as AuthenticationError
from ._errors import ConfigurationError as ConfigurationError
from ._errors import DelegationDeniedError as DelegationDeniedError
from ._errors import InsufficientScopeError as InsufficientScopeError
from ._errors import InvalidTokenError as InvalidTokenError
from ._errors import IssuerUnreachableError as IssuerUnreachableError
from ._errors import KeycardError as KeycardError
from ._errors import OAuthError as OAuthError
from ._errors import TransportError as TransportError
from ._principal import Actor as Actor
from ._principal import ActorChain as ActorChain
from ._principal import Principal as Principal

__version__ = "0.1.0.dev0"

__all__ = [
    "Actor",
    "ActorChain",
    "AuthenticationError",
    "ConfigurationError",
    "DelegationDeniedError",
    "InsufficientScopeError",
    "InvalidTokenError",
    "IssuerUnreachableError",
    "KeycardError",
    "OAuthError",
    "Principal",
    "TransportError",
    "__version__",
]
