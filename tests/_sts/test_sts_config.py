"""Configuration: the example loads; mistakes name the field path and the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sts_support import make_config

from keycard_agents import ConfigurationError
from keycard_agents.sts import TokenService, TokenServiceConfig, hash_secret, load_config

ROOT = Path(__file__).resolve().parents[2]

GOOD_AGENT = """
[[agents]]
client_id = "planner"
resource = "https://planner.example/"
auth = "client_secret"
secret_hash = "{hash}"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sts.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_loads() -> None:
    config = load_config(ROOT / "examples" / "sts.toml")
    assert isinstance(config, TokenServiceConfig)
    assert [a.client_id for a in config.agents] == ["planner", "calendar"]
    assert config.user("alice") is not None
    assert config.max_chain_depth == 5
    assert config.allow_repeated_agents is False
    assert config.accepted_scopes("http://127.0.0.1:8903/mcp") == ("calendar.read",)


def test_bad_resource_names_field_and_file(tmp_path: Path) -> None:
    text = 'issuer = "https://sts.example"\n' + GOOD_AGENT.format(hash=hash_secret("x", cost=4))
    text += (
        GOOD_AGENT.format(hash=hash_secret("y", cost=4))
        .replace('"planner"', '"second"')
        .replace("https://planner.example/", "http://evil.example/")
    )
    with pytest.raises(ConfigurationError) as info:
        load_config(_write(tmp_path, text))
    assert str(info.value) == (
        "sts.toml: agents[second].resource: must be an absolute https or "
        "http://127.0.0.1/localhost URL"
    )
    assert info.value.setting == "agents[second].resource"


@pytest.mark.parametrize(
    ("text", "where", "fragment"),
    [
        ("issuer = 42", "issuer", "string"),
        ("max_chain_depth = 0", "max_chain_depth", "greater than or equal to 1"),
        ('alg = "HS256"', "alg", "ES256"),
        ("typo_key = 1", "typo_key", "Extra inputs"),
        (
            '[[agents]]\nclient_id = "a"\nresource = "https://a.example/"\nauth = "client_secret"',
            "agents[a]",
            "needs secret_hash",
        ),
        (
            '[[agents]]\nclient_id = "a"\nresource = "https://a.example/"\n'
            'auth = "private_key_jwt"\njwks = {keys = [{kty = "EC", d = "secret"}]}',
            "agents[a].jwks",
            "public keys only",
        ),
        (
            '[[agents]]\nclient_id = "a"\nresource = "https://a.example/"\n'
            'auth = "client_secret"\nsecret_hash = "plaintext"',
            "agents[a].secret_hash",
            "scrypt$N$r$p$salt$hash",
        ),
        (
            '[[users]]\nusername = "alice"\nscopes = ["read"]',
            "users[alice]",
            "exactly one of password_hash or password",
        ),
        (
            '[[users]]\nusername = "alice"\npassword = ""',
            "users[alice].password",
            "at least 1 character",
        ),
        (
            '[[clients]]\nclient_id = "app"\nredirect_uris = ["http://example.com/cb"]',
            "clients[app].redirect_uris",
            "https",
        ),
        (
            '[[trusted_issuers]]\nissuer = "https://idp.example"',
            "trusted_issuers[https://idp.example]",
            "exactly one of jwks_uri or metadata_url",
        ),
        (
            '[[resources]]\nresource = "https://r.example/"\nscopes = ["a b"]',
            "resources[https://r.example/].scopes",
            "scope token",
        ),
    ],
    # One-line ids, so tools can select a case by its node id.
    ids=lambda value: value.replace("\n", " ") if isinstance(value, str) else None,
)
def test_mistakes_are_named(tmp_path: Path, text: str, where: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_config(_write(tmp_path, text))
    message = str(info.value)
    assert message.startswith(f"sts.toml: {where}: "), message
    assert fragment in message


def test_an_entry_without_a_name_is_counted_from_one(tmp_path: Path) -> None:
    text = '[[agents]]\nresource = "https://a.example/"\nauth = "client_secret"\n'
    with pytest.raises(ConfigurationError) as info:
        load_config(_write(tmp_path, text))
    assert str(info.value).startswith("sts.toml: agents[#1]"), str(info.value)


def test_cross_checks(tmp_path: Path) -> None:
    h = hash_secret("x", cost=4)
    agent = GOOD_AGENT.format(hash=h)
    undeclared = agent + 'dependencies = ["https://nowhere.example/"]\n'
    with pytest.raises(ConfigurationError) as info:
        load_config(_write(tmp_path, undeclared))
    assert str(info.value).startswith(
        "sts.toml: agents[planner].dependencies[https://nowhere.example/]: "
    )
    assert "not a registered agent or resource" in str(info.value)

    with pytest.raises(ConfigurationError, match="appears twice"):
        load_config(_write(tmp_path, agent + agent))

    clash = 'issuer = "https://planner.example/"\n' + agent
    with pytest.raises(ConfigurationError, match="issuer URL must not also be"):
        load_config(_write(tmp_path, clash))


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"sts.toml: not valid TOML"):
        load_config(_write(tmp_path, "issuer = "))
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_relative_key_dir_is_relative_to_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, 'key_dir = "keys"\n')
    assert load_config(path).key_dir == (tmp_path / "keys").resolve()


def test_service_needs_an_issuer() -> None:
    config, _ = make_config()
    bare = config.model_copy(update={"issuer": None})
    with pytest.raises(ConfigurationError, match="issuer"):
        TokenService(bare)


def test_models_are_frozen_and_secrets_hidden() -> None:
    config, _ = make_config()
    user: Any = config.users[0]
    assert "wonderland" not in repr(user)
    with pytest.raises(ValueError, match="frozen"):
        user.username = "mallory"
