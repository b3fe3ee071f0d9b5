"""Which target an exchange names (``_targets``): the edges a mutation run showed no test
pinned. Logical names of connections, and the trailing-``/`` hint in both directions
(``dev.py mutation sts``, docs/testing.md)."""

from __future__ import annotations

from typing import Any

import pytest

from keycard_agents import OAuthError
from keycard_agents._sts._targets import (  # internal: the module's own API
    requested_targets,
    trailing_slash_hint,
)
from keycard_agents.auth import SigningKey
from keycard_agents.sts import TokenServiceConfig, parse_config

WEATHER = "https://weather.example/v1"
MAPS_EU = "https://maps.example/eu"
MAPS_US = "https://maps.example/us"
INBOX = "https://fax.example/INBOX"


def _config(**extra: Any) -> TokenServiceConfig:
    return parse_config(
        {
            "issuer": "https://sts.example",
            "agents": [
                {
                    "client_id": "a",
                    "resource": "https://a.example/",
                    "auth": "private_key_jwt",
                    "jwks": {"keys": [SigningKey.generate("ES256").public_jwk()]},
                }
            ],
            "resources": [{"resource": INBOX, "scopes": ["read"]}],
            # one connection serving one API, one serving two (no single target)
            "connections": [
                {"name": "weather", "kind": "static", "resources": [WEATHER]},
                {"name": "maps", "kind": "static", "resources": [MAPS_EU, MAPS_US]},
            ],
            **extra,
        }
    )


def test_a_connection_serving_one_api_is_named_by_its_name() -> None:
    assert requested_targets(_config(), [], ["weather"]) == [WEATHER]
    assert requested_targets(_config(), [WEATHER], ["weather"]) == [WEATHER]


def test_a_connection_serving_two_apis_is_no_target_name() -> None:
    """Its name cannot say which API: the request must name the URL in ``resource``."""
    with pytest.raises(OAuthError) as caught:
        requested_targets(_config(), [], ["maps"])
    assert caught.value.error == "invalid_target"
    assert "unknown audience 'maps'" in caught.value.error_description
    assert requested_targets(_config(), [MAPS_US], []) == [MAPS_US]


@pytest.mark.parametrize(
    ("asked", "registered"),
    [
        ("https://a.example", "https://a.example/"),  # the registered form has the slash
        (INBOX + "/", INBOX),  # the request has one too many
        ("https://fax.example/INBOX//", INBOX),
    ],
)
def test_the_hint_names_the_registered_form_whichever_side_has_the_slash(
    asked: str, registered: str
) -> None:
    hint = trailing_slash_hint(_config(), asked)
    assert f"sts.toml registers {registered!r}, which differs from {asked!r}" in hint


@pytest.mark.parametrize(
    "asked", [INBOX, "https://fax.example/INBO", "/https://fax.example/INBOX", "https://b.example/"]
)
def test_no_hint_for_a_registered_or_an_unrelated_resource(asked: str) -> None:
    assert trailing_slash_hint(_config(), asked) == ""
