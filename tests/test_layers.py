"""The package's layers contract (``[tool.importlinter]`` in pyproject.toml) holds.

A module imports only from the layers below its own, and no package has an import cycle
among its modules, counting ``TYPE_CHECKING`` and function-level imports.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "keycard_agents"
#: Function-level imports are allowed only for optional extras, each with a comment.
OPTIONAL_EXTRAS = (
    "mcp",
    "mcp_types",
    "httpx2",
    "trio",
    "hypercorn",
    "fastmcp",
    "keycard_agents._mcp",
    "keycard_agents._redis",
    "keycard_agents._demo._replicas",
)


#: import-linter configures logging for its own output (``logging.config.dictConfig``),
#: which disables every logger that exists already: run it in a process of its own.
LINT = (
    "from importlinter.cli import lint_imports; "
    "raise SystemExit(lint_imports(config_filenames=('pyproject.toml',), no_cache=True, "
    "no_logo=True))"
)


def test_the_layers_and_acyclic_contracts_are_kept() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LINT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "2 kept, 0 broken" in report, report


def test_type_checking_imports_are_part_of_the_checked_graph() -> None:
    graph = grimp.build_graph("keycard_agents")
    # Only imported under TYPE_CHECKING: if the graph missed it, upward imports hidden
    # behind TYPE_CHECKING would slip through the contract.
    assert graph.direct_import_exists(
        importer="keycard_agents._agent._agent", imported="keycard_agents._oauth._exchange"
    )


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                found.append((node.lineno, node.module))
            elif isinstance(node, ast.Import):
                found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def _commented(lines: list[str], lineno: int) -> bool:
    """Whether the block of imports holding line ``lineno`` carries a ``#`` comment."""
    index = lineno - 1
    while index >= 0:
        line = lines[index].strip()
        if "#" in line:
            return True
        if line and not line.startswith(("from ", "import ", "try:")):
            return False
        index -= 1
    return False


def test_function_level_imports_are_only_for_optional_extras_with_a_comment() -> None:
    offending: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for lineno, module in _function_level_imports(path):
            where = f"{path.relative_to(ROOT)}:{lineno} imports {module}"
            if not module.startswith(OPTIONAL_EXTRAS):
                offending.append(where)
                continue
            if not _commented(lines, lineno):
                offending.append(where + " without a comment saying why")
    assert not offending, offending
