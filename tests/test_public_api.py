"""The public surface: a small root, one public home per name, ``__all__`` exact.

The package root is the authoring surface (at most 50 names); every other public name
lives in exactly one public topic module. Names the root used to export keep working
from the root for one release, with a DeprecationWarning pointing at their new home.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from collections import defaultdict

import pytest

import keycard_agents

#: Every public module: the root and the topic modules.
PUBLIC_MODULES = (
    "keycard_agents",
    "keycard_agents.a2a",
    "keycard_agents.audit",
    "keycard_agents.auth",
    "keycard_agents.delegation",
    "keycard_agents.mcp",
    "keycard_agents.redis",
    "keycard_agents.runtime",
    "keycard_agents.sts",
    "keycard_agents.testing",
)
ROOT_LIMIT = 50


def _public_names(module: types.ModuleType) -> set[str]:
    """What a module offers as public: for a facade, every public name it binds; for a
    module with its own code (``testing``), the public names it defines."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or name == "annotations" or isinstance(value, types.ModuleType):
            continue
        if module.__name__ == "keycard_agents.testing" and (
            getattr(value, "__module__", None) != module.__name__ and not name.isupper()
        ):
            continue  # what testing imports for its own use
        names.add(name)
    return names


def test_the_root_is_the_authoring_surface() -> None:
    assert len(keycard_agents.__all__) <= ROOT_LIMIT, len(keycard_agents.__all__)
    for name in ("Agent", "skill", "Context", "grant", "serve", "open_agent_client"):
        assert name in keycard_agents.__all__


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_matches_what_each_public_module_exports(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(set(exported)) == len(exported), "duplicates in __all__"
    assert exported == sorted(
        exported, key=lambda n: (not n.isupper() or n.startswith("_"), not n[:1].isupper(), n)
    ), "__all__ is not sorted (RUF022 order)"
    for exported_name in exported:
        assert hasattr(module, exported_name), exported_name
    assert _public_names(module) == set(exported) - {"__version__"}


def test_every_public_name_has_exactly_one_public_home() -> None:
    homes: dict[str, list[str]] = defaultdict(list)
    for name in PUBLIC_MODULES:
        for exported in importlib.import_module(name).__all__:
            homes[exported].append(name)
    shared = {name: where for name, where in homes.items() if len(where) > 1}
    assert not shared, shared


def test_old_root_imports_warn_and_point_at_the_new_home() -> None:
    moved = keycard_agents._MOVED
    assert moved, "the deprecation table is empty"
    for name, home in moved.items():
        assert name not in keycard_agents.__all__
        with pytest.warns(DeprecationWarning, match=rf"keycard_agents\.{name} moved to {home}"):
            value = getattr(keycard_agents, name)
        assert value is getattr(importlib.import_module(home), name)
        assert name in importlib.import_module(home).__all__


def test_unknown_root_names_still_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        keycard_agents.no_such_name  # noqa: B018


def test_a2a_module_reexports_wire_types_and_errors() -> None:
    from keycard_agents import a2a
    from keycard_agents._a2a import errors
    from keycard_agents._a2a import types as wire

    # File: content as parts; AuthRequired: what a task stopped for authorization asks for;
    # CardSignatureError: the client's card verification.
    card = {
        "DELEGATION_EXTENSION_URI",
        "build_agent_card",
        "File",
        "AuthRequired",
        "auth_required",
        "CardSignatureError",
    }
    assert set(a2a.__all__) - card == (set(wire.__all__) | set(errors.__all__)) - {"invalid_params"}
    for name in set(a2a.__all__) - card:
        assert getattr(a2a, name) is getattr(wire, name, None) or getattr(a2a, name) is getattr(
            errors, name
        )


def test_importing_the_core_imports_no_optional_integration() -> None:
    code = (
        "import sys, keycard_agents, keycard_agents.sts, keycard_agents.testing\n"
        "import keycard_agents.auth, keycard_agents.audit, keycard_agents.delegation\n"
        "import keycard_agents.runtime\n"
        "optional = ('mcp', 'redis', 'coredis', 'opentelemetry.sdk', 'hypercorn')\n"
        "bad = [m for m in optional if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
