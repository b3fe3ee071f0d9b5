"""The public surface is exactly what __all__ says."""

from __future__ import annotations

import types

import keycard_agents


def test_all_names_exist_once() -> None:
    # ruff's RUF022 keeps __all__ sorted; here: no duplicates, no dangling names.
    assert len(set(keycard_agents.__all__)) == len(keycard_agents.__all__)
    for name in keycard_agents.__all__:
        assert hasattr(keycard_agents, name), name


def test_all_lists_every_public_name() -> None:
    public = {
        name
        for name in vars(keycard_agents)
        if not name.startswith("_")
        and name != "annotations"
        and not isinstance(getattr(keycard_agents, name), types.ModuleType)
    }
    assert public == set(keycard_agents.__all__) - {"__version__"}


def test_a2a_module_reexports_wire_types_and_errors() -> None:
    from keycard_agents import a2a
    from keycard_agents._a2a import errors, types

    assert set(a2a.__all__) == (set(types.__all__) | set(errors.__all__)) - {"invalid_params"}
    for name in a2a.__all__:
        assert getattr(a2a, name) is getattr(types, name, None) or getattr(a2a, name) is getattr(
            errors, name
        )


def test_importing_the_core_imports_no_optional_integration() -> None:
    import subprocess
    import sys

    code = (
        "import sys, keycard_agents, keycard_agents.sts, keycard_agents.testing\n"
        "optional = ('mcp', 'redis', 'opentelemetry.sdk', 'hypercorn')\n"
        "bad = [m for m in optional if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
