"""Every code block in README.md and docs/*.md is run, parsed, or tied to a file or a test.

The marker on the line before a block's opening fence says how it is covered:

* ``<!-- file: PATH -->``: the block appears verbatim in the repository file PATH.
* ``<!-- checked-by: tests/test_x.py::test_name -->``: that test exists and replays the
  block (a test in this file reads the block itself; elsewhere it sends the same requests).
* ``<!-- module: NAME -->`` (python): the block is importable module ``NAME``; later
  python blocks of the same page import it.
* ``<!-- output -->`` (text): what the python or shell block before it prints, exactly.

Without a marker: ``python`` blocks are executed as a user runs a script (``__name__`` is
``"__main__"``; ``anyio.run`` runs on asyncio and then on trio; a block that defines an
``async def main()`` must run it itself), ``sh`` / ``bash``
blocks run under bash and must exit 0, ``toml`` blocks must be valid token service
configurations, ``json`` blocks must parse. Anything else fails, naming file and line.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from leak_support import assert_no_token

from keycard_agents.sts import parse_config

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = ("python", "py")
SHELL = ("sh", "bash", "shell")
MARKER = re.compile(r"^<!--\s*(file|checked-by|module|output)(?::\s*(.*?))?\s*-->$")
FENCE = re.compile(r"^(`{3,})([\w+-]*)\s*$")
TWO_COMMANDS = (
    "python3 scripts/dev.py demo    # run the local delegation demo on the embedded token service\n"
    "python3 scripts/dev.py test    # lint (ruff, mypy), then every test on asyncio and trio\n"
)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str | None
    argument: str | None

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


def parse_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, lang = opening.groups()
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != fence:
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{page.relative_to(ROOT)}:{start + 1}: unclosed code block"
        i += 1
        marker = argument = None
        if start > 0 and (found := MARKER.match(lines[start - 1].strip())):
            marker, argument = found.groups()
        code = "\n".join(body) + "\n"
        blocks.append(Block(page, start + 1, lang.lower(), code, marker, argument))
    return blocks


BLOCKS = [block for page in PAGES for block in parse_blocks(page)]


def blocks_where(predicate: Any) -> list[Block]:
    return [b for b in BLOCKS if predicate(b)]


def ids(blocks: list[Block]) -> list[str]:
    return [b.where for b in blocks]


def output_after(block: Block) -> Block | None:
    """The ``<!-- output -->`` block that follows ``block`` on its page, if any."""
    page = [b for b in BLOCKS if b.page == block.page]
    index = page.index(block)
    if index + 1 < len(page) and page[index + 1].marker == "output":
        return page[index + 1]
    return None


def produced_by(block: Block) -> Block | None:
    page = [b for b in BLOCKS if b.page == block.page]
    index = page.index(block)
    return page[index - 1] if index > 0 else None


# ------------------------------------------------------------------ coverage of every block


def coverage_problem(block: Block) -> str | None:
    """Why ``block`` is not covered, or ``None`` when it is."""
    if block.marker == "file":
        path = ROOT / (block.argument or "")
        if not block.argument or not path.is_file():
            return f"file marker names {block.argument!r}, which is not a file"
        if block.code not in path.read_text(encoding="utf-8"):
            return f"the block does not appear verbatim in {block.argument}"
        return None
    if block.marker == "checked-by":
        return missing_test(block.argument or "")
    if block.marker == "module":
        if block.lang not in PYTHON or not (block.argument or "").isidentifier():
            return "a module marker needs a python block and a module name"
        return None
    if block.marker == "output":
        before = produced_by(block)
        if before is None or before.marker not in (None, "checked-by"):
            return "an output block must follow an executed python or shell block"
        if before.lang not in PYTHON + SHELL:
            return "an output block must follow an executed python or shell block"
        return None
    if block.lang in PYTHON + SHELL + ("toml", "json"):
        return None  # executed or parsed by the tests below
    return (
        f"a {block.lang or 'plain'} block needs a marker on the line before it: "
        "<!-- file: PATH -->, <!-- checked-by: tests/x.py::test -->, or <!-- output -->"
    )


def missing_test(reference: str) -> str | None:
    path, sep, name = reference.partition("::")
    file = ROOT / path
    if not sep or not path.startswith("tests/") or not file.is_file():
        return f"checked-by names {reference!r}: expected tests/<file>.py::<test> of a real file"
    tree = ast.parse(file.read_text(encoding="utf-8"))
    names = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    if name not in names or not name.startswith("test"):
        return f"checked-by names {reference!r}, but {path} has no test {name!r}"
    return None


def test_pages_have_blocks() -> None:
    assert ROOT / "README.md" in PAGES
    assert len(PAGES) >= 6, [p.name for p in PAGES]
    assert len(BLOCKS) >= 20


@pytest.mark.parametrize("block", BLOCKS, ids=ids(BLOCKS))
def test_every_block_is_covered(block: Block) -> None:
    problem = coverage_problem(block)
    assert problem is None, f"{block.where}: {problem}"


def test_the_coverage_check_rejects_unmarked_and_stale_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```text\nfree text\n```\n\n"
        "<!-- file: README.md -->\n```python\nnot in the readme\n```\n\n"
        "<!-- checked-by: tests/test_docs.py::test_nothing_here -->\n```sh\nls\n```\n",
        encoding="utf-8",
    )
    problems = [str(coverage_problem(block)) for block in parse_blocks(page)]
    assert "needs a marker" in problems[0]
    assert "verbatim" in problems[1]
    assert "no test 'test_nothing_here'" in problems[2]


# ------------------------------------------------------------------ README shape


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first = parse_blocks(ROOT / "README.md")[0]
    assert first.code == TWO_COMMANDS
    before = MARKER.sub("", text[: text.index("```")].strip().splitlines()[-1]).strip()
    title = text[: text.index("```")].strip().splitlines()[0]
    assert title == "# keycard-agents"
    assert not before or before == title, "only the title may precede the two commands"
    assert len(text[: text.index("```")].strip().splitlines()) <= 3


# ------------------------------------------------------------------ python blocks


@contextlib.contextmanager
def page_modules(block: Block, tmp_path: Path) -> Iterator[None]:
    """Write the page's ``module`` blocks as importable modules for the duration."""
    names = []
    for other in BLOCKS:
        if other.page == block.page and other.marker == "module" and other.argument:
            (tmp_path / f"{other.argument}.py").write_text(other.code, encoding="utf-8")
            names.append(other.argument)
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        for name in names:
            sys.modules.pop(name, None)


@contextlib.contextmanager
def in_sandbox(tmp_path: Path) -> Iterator[Path]:
    """A working directory that sees the repository's examples/ and protocols/."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("examples", "protocols"):
        (work / name).symlink_to(ROOT / name)
    previous = Path.cwd()
    os.chdir(work)
    try:
        yield work
    finally:
        os.chdir(previous)


def run_python(block: Block, tmp_path: Path, backend: str) -> str:
    """Execute a python block as a user runs a script (``__name__ == "__main__"``); return
    what it printed. ``anyio.run`` runs on ``backend``. A block that defines an
    ``async def main()`` must run it itself (``anyio.run(main)``): typed as shown, a
    coroutine nobody awaits prints nothing."""
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": block.where}
    out = io.StringIO()
    real_run = anyio.run
    runs: list[object] = []

    def run_on_backend(func: Any, *args: Any, **options: Any) -> Any:
        runs.append(func)
        options.setdefault("backend", backend)
        return real_run(func, *args, **options)

    with (
        page_modules(block, tmp_path),
        in_sandbox(tmp_path),
        contextlib.redirect_stdout(out),
        _patched(anyio, "run", run_on_backend),
    ):
        exec(compile(block.code, block.where, "exec"), namespace)  # noqa: S102 - our own docs
    main = namespace.get("main")
    if inspect.iscoroutinefunction(main):
        assert main in runs, (
            f"{block.where} defines async def main() but never runs it: a reader who types "
            "it in sees nothing. End the block with anyio.run(main)"
        )
    return out.getvalue()


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    previous = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, previous)


EXECUTED = blocks_where(lambda b: b.lang in PYTHON and b.marker is None)
MODULES = blocks_where(lambda b: b.marker == "module")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("block", EXECUTED, ids=ids(EXECUTED))
def test_python_block_runs(block: Block, backend: str, tmp_path: Path) -> None:
    printed = run_python(block, tmp_path, backend)
    expected = output_after(block)
    if expected is not None:
        assert printed == expected.code, f"{block.where} printed:\n{printed}"


def test_a_block_that_never_runs_its_main_fails(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nasync def main() -> None:\n    print('hello')\n```\n", encoding="utf-8"
    )
    (block,) = parse_blocks(page)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with pytest.raises(AssertionError, match="never runs it"):
        run_python(block, tmp_path / "one", "asyncio")
    code = block.code + "\n\nimport anyio\nanyio.run(main)\n"
    ran = Block(page, 1, "python", code, None, None)
    assert run_python(ran, tmp_path / "two", "trio") == "hello\n"


@pytest.mark.parametrize("block", MODULES, ids=ids(MODULES))
def test_module_block_imports(block: Block, tmp_path: Path) -> None:
    assert block.argument is not None
    with page_modules(block, tmp_path):
        module = __import__(block.argument)
    assert module.__file__ == str(tmp_path / f"{block.argument}.py")


# ------------------------------------------------------------------ shell, toml, json blocks


SHELLS = blocks_where(lambda b: b.lang in SHELL and b.marker is None)


@pytest.mark.parametrize("block", SHELLS, ids=ids(SHELLS))
def test_shell_block_runs(block: Block, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with in_sandbox(tmp_path) as work:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.code],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=40,
            check=False,
        )
    assert done.returncode == 0, f"{block.where} failed:\n{done.stdout}\n{done.stderr}"
    expected = output_after(block)
    if expected is not None:
        assert done.stdout == expected.code, f"{block.where} printed:\n{done.stdout}"


TOMLS = blocks_where(lambda b: b.lang == "toml" and b.marker is None)
JSONS = blocks_where(lambda b: b.lang == "json" and b.marker is None)


@pytest.mark.parametrize("block", TOMLS, ids=ids(TOMLS))
def test_toml_block_is_a_valid_configuration(block: Block) -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    data = tomllib.loads(block.code)
    config = parse_config(data, source=block.where)
    # every registered party in the block is in the parsed configuration
    assert [a.client_id for a in config.agents] == [a["client_id"] for a in data.get("agents", [])]
    assert [u.username for u in config.users] == [u["username"] for u in data.get("users", [])]


@pytest.mark.parametrize("block", JSONS, ids=ids(JSONS))
def test_json_block_parses(block: Block) -> None:
    document = json.loads(block.code)
    assert isinstance(document, (dict, list)), block.where
    assert document, block.where


# ------------------------------------------------------------------ the two commands


def load_dev_script() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("keycard_dev_script", ROOT / "scripts/dev.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
# The test command's lint gate (mypy --strict over the package and the tests) and the demo
# run in here: 38 s on a quiet machine, over the suite's 60 s default at load 10.
@pytest.mark.timeout(600)
def test_readme_commands(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """``dev.py demo`` runs the demo and ``dev.py test`` runs pytest, in this environment."""
    dev = load_dev_script()
    monkeypatch.setattr(dev, "BIN", Path(sys.executable).parent)
    monkeypatch.setattr(dev, "PYTHON", Path(sys.executable))
    installs: list[str] = []
    monkeypatch.setattr(dev, "ensure_venv", lambda: installs.append("venv"))
    monkeypatch.setattr(dev, "ensure_system_packages", lambda: installs.append("system"))

    assert dev.main(["demo"]) == 0
    demo = capfd.readouterr().out
    assert "alice → planner" in demo
    assert_no_token(demo)  # the demo shows claims, never a raw token

    probe = "tests/test_docs.py::test_pages_have_blocks"
    assert dev.main(["test", probe, "-q", "-p", "no:cacheprovider"]) == 0
    assert "1 passed" in capfd.readouterr().out
    assert installs == ["venv", "venv", "system"]


def test_dev_script_creates_and_reuses_the_venv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What the README says of the first and later runs: install once, then reuse."""
    dev = load_dev_script()
    venv_dir = tmp_path / ".venv"
    python = venv_dir / "bin" / "python"
    monkeypatch.setattr(dev, "VENV", venv_dir)
    monkeypatch.setattr(dev, "PYTHON", python)
    monkeypatch.setattr(dev, "STAMP", venv_dir / ".keycard-installed")
    created: list[Path] = []

    class FakeBuilder:
        def __init__(self, **options: Any) -> None:
            assert options["with_pip"] is True

        def create(self, where: Path) -> None:
            created.append(where)
            python.parent.mkdir(parents=True)
            python.touch()

    commands: list[list[str]] = []
    monkeypatch.setattr(dev.venv, "EnvBuilder", FakeBuilder)
    monkeypatch.setattr(dev, "run", lambda *args, **kw: commands.append([str(a) for a in args]))
    dev.ensure_venv()
    assert created == [venv_dir]
    assert commands[-1] == [str(python), "-m", "pip", "install", "--quiet", "-e",
                            f"{ROOT}[{dev.EXTRAS}]"]  # fmt: skip
    count = len(commands)
    dev.ensure_venv()  # unchanged pyproject.toml: nothing to do
    assert len(commands) == count
    (venv_dir / ".keycard-installed").write_text("stale", encoding="utf-8")
    dev.ensure_venv()  # pyproject.toml changed: install again
    assert len(commands) > count


# ------------------------------------------------------------------ reference pages vs code


@dataclass(frozen=True)
class Table:
    heading: str
    header: tuple[str, ...]
    rows: dict[str, tuple[str, ...]]  # first cell (backticks removed) -> the other cells


def cell(text: str) -> str:
    return text.strip().replace("`", "")


def tables(page: Path) -> list[Table]:
    found: list[Table] = []
    heading = ""
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = cell(line.lstrip("#"))
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("| ---"):
            header = tuple(cell(c) for c in line.strip("|").split("|"))
            rows: dict[str, tuple[str, ...]] = {}
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [cell(c) for c in lines[i].strip().strip("|").split(" | ")]
                rows[cells[0]] = tuple(cells[1:])
                i += 1
            found.append(Table(heading, header, rows))
            continue
        i += 1
    return found


def shown(value: Any) -> str:
    """A default as the configuration reference writes it."""
    from pydantic_core import PydanticUndefined

    if value is inspect.Parameter.empty or value is PydanticUndefined:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ", ".join(str(v) for v in value) if value else "[]"
    return str(value)


def keyword_defaults(func: Any, *, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    params = inspect.signature(func).parameters.values()
    return {
        p.name: shown(p.default)
        for p in params
        if p.name not in {"self", *skip} and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


CONFIGURATION = ROOT / "docs" / "configuration.md"
INJECTED = frozenset({"clock", "sleep"})  # documented once: they exist for tests


def table(heading: str, first: str | None = None) -> Table:
    for found in tables(CONFIGURATION):
        if found.heading == heading and (first is None or found.header[0] == first):
            return found
    raise AssertionError(f"docs/configuration.md has no table {first!r} under {heading!r}")


def test_configuration_lists_every_environment_variable() -> None:
    from keycard_agents._oauth import _credentials as _identity

    documented = {name: cells[0] for name, cells in table("Environment variables").rows.items()}
    for name, value in vars(_identity).items():
        if name.startswith("ENV_"):
            default = _identity.DEFAULT_BASE_URL if value == _identity.ENV_BASE_URL else "none"
            assert documented.pop(value, None) == default, value
    used: set[str] = set()
    for source in (ROOT / "keycard_agents").rglob("*.py"):
        content = source.read_text(encoding="utf-8")
        used.update(re.findall(r"\"(KEYCARD_[A-Z_]+)\"", content))
        used.update(re.findall(r"\"([A-Z_]+)\" in os\.environ", content))
    assert {"KEYCARD_ADMIN_TOKEN", "NO_COLOR"} <= used
    identity = {v for k, v in vars(_identity).items() if k.startswith("ENV_")}
    assert used - identity == set(documented)


def argument_tables() -> list[tuple[str, dict[str, str]]]:
    from keycard_agents import Agent, create_app, serve
    from keycard_agents.auth import TokenExchangeClient, TokenVerifier

    serving = keyword_defaults(serve, skip=frozenset({"agent"}))
    serving.update(keyword_defaults(create_app, skip=frozenset({"agent"})))
    return [
        ("Agent(...)", keyword_defaults(Agent.__init__)),
        ("serve(agent, ...) and create_app(agent, ...)", serving),
        ("TokenVerifier(...)", keyword_defaults(TokenVerifier.__init__, skip=INJECTED)),
        ("TokenExchangeClient(...)", keyword_defaults(TokenExchangeClient.__init__, skip=INJECTED)),
    ]


@pytest.mark.parametrize(("heading", "expected"), argument_tables(), ids=lambda v: str(v)[:30])
def test_configuration_lists_every_argument_and_default(
    heading: str, expected: dict[str, str]
) -> None:
    documented = {name: cells[0] for name, cells in table(heading).rows.items()}
    assert documented == expected


def test_configuration_lists_every_credential_option() -> None:
    from keycard_agents import ClientSecret, WebIdentity, WorkloadIdentity

    rows = table("Credentials").rows
    text = " ".join(rows)
    defaults = " ".join(cells[0] for cells in rows.values())
    for credential in (ClientSecret, WebIdentity, WorkloadIdentity):
        options = keyword_defaults(credential.__init__, skip=INJECTED)
        for name, default in options.items():
            assert f"{credential.__name__}(" in text
            assert name in text, (credential.__name__, name)
            if default != "required":
                assert default in defaults, (credential.__name__, name, default)


def test_configuration_lists_every_token_service_key() -> None:
    from pydantic import BaseModel

    from keycard_agents import sts

    heading = "Token service (keycard-agents sts --config FILE)"
    models: dict[str, type[BaseModel]] = {
        "key": sts.TokenServiceConfig,
        "[lifetimes] key": sts.Lifetimes,
        "[[agents]] key": sts.RegisteredAgent,
        "[[resources]] key": sts.RegisteredResource,
        "[[users]] key": sts.DevUser,
        "[[clients]] key": sts.PublicClient,
        "[[trusted_issuers]] key": sts.TrustedIssuerConfig,
        "[admin] key": sts.AdminConfig,
        "[limits] key": sts.Limits,
        "[registration] key": sts.RegistrationConfig,
        "[[connections]] key": sts.ConnectionConfig,
        "[vault] key": sts.VaultConfig,
        "[redis] key": sts.RedisConfig,
    }
    sections = {
        "lifetimes",
        "limits",
        "agents",
        "resources",
        "users",
        "clients",
        "trusted_issuers",
        "admin",
        "registration",
        "connections",
        "vault",
        "redis",
    }
    for first, model in models.items():
        expected = {
            name: shown(field.default)
            for name, field in model.model_fields.items()
            if not (model is sts.TokenServiceConfig and name in sections)
        }
        documented = {name: cells[0] for name, cells in table(heading, first).rows.items()}
        assert documented == expected, first


TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"


def all_error_classes() -> list[type]:
    import importlib
    import pkgutil

    import keycard_agents
    from keycard_agents import KeycardError

    for module in pkgutil.walk_packages(keycard_agents.__path__, "keycard_agents."):
        importlib.import_module(module.name)
    found: list[type] = []
    pending: list[type] = [KeycardError]
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.append(cls)
            pending.extend(cls.__subclasses__())
    return [c for c in found if not c.__name__.startswith("_")]


def test_troubleshooting_names_every_error_class() -> None:
    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    missing = sorted(c.__name__ for c in all_error_classes() if f"`{c.__name__}`" not in text)
    assert not missing, f"docs/troubleshooting.md does not explain {missing}"


def test_troubleshooting_names_every_error_code() -> None:
    from keycard_agents import InvalidTokenError

    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    code = re.compile(
        r"\"(invalid_[a-z_]+|unauthorized_client|unsupported_[a-z_]+|access_denied|"
        r"(?:interaction|consent|login)_required|server_error|temporarily_unavailable|insufficient_scope|"
        r"transport_error|configuration_error)\""
    )
    names: set[str] = set()
    codes: set[str] = set()
    for source in (ROOT / "keycard_agents").rglob("*.py"):
        content = source.read_text(encoding="utf-8")
        codes.update(code.findall(content))
        names.update(re.findall(r"^def (\w+)", content, flags=re.MULTILINE))
    codes -= names  # a function listed in __all__ is not an error code
    assert {"invalid_grant", "invalid_target", "invalid_scope", "invalid_client"} <= codes
    assert InvalidTokenError.__doc__ is not None
    checks = set(re.findall(r"``(\w+)``", InvalidTokenError.__doc__)) - {"check"}
    assert {"audience", "expired", "signature"} <= checks
    missing = sorted(c for c in codes | checks if f"`{c}`" not in text)
    assert not missing, f"docs/troubleshooting.md does not explain {missing}"


def test_troubleshooting_gives_each_a2a_error_its_code_and_status() -> None:
    from keycard_agents.a2a import A2AError

    rows: dict[str, tuple[str, ...]] = {}
    for found in tables(TROUBLESHOOTING):
        if found.header[:3] == ("error", "code", "HTTP"):
            rows.update(found.rows)
    classes = [c for c in all_error_classes() if issubclass(c, A2AError) and c is not A2AError]
    assert len(classes) >= 15
    for cls in classes:
        assert cls.__name__ in rows, cls.__name__
        assert rows[cls.__name__][:2] == (str(cls.code), str(cls.http_status)), cls.__name__


# ------------------------------------------------------------------ links


LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {
        slug(line.lstrip("#"))
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):
            continue  # absolute URLs are not checked offline
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        missing_anchor = bool(anchor) and resolved.suffix == ".md"
        if not resolved.exists() or (missing_anchor and anchor not in anchors(resolved)):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_tracing_names_in_the_docs_exist() -> None:
    from keycard_agents._observe import _tracing

    text = " ".join(p.read_text(encoding="utf-8") for p in PAGES)
    named = set(re.findall(r"`(keycard\.[a-z_.]+)`", text))
    defined = {v for k, v in vars(_tracing).items() if k.startswith("ATTR_")}
    # metric instruments and their attributes, as the metrics module spells them
    metrics = (ROOT / "keycard_agents" / "_observe" / "_metrics.py").read_text(encoding="utf-8")
    defined |= set(re.findall(r"\"(keycard\.[a-z_.]+)\"", metrics))
    assert {"keycard.txn", "keycard.actors", "keycard.skill.duration"} <= named
    assert named <= defined, named - defined
    assert f"`{_tracing.TRACER_NAME}`" in text


def test_configuration_lists_every_command_line_option() -> None:
    import argparse

    from keycard_agents._cli import build_parser

    rows = table("Command line").rows
    checked = 0

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        nonlocal checked
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    assert any(r.startswith(f"{path} {name}".strip()) for r in rows), name
                    walk(sub, f"{path} {name}".strip())
                continue
            for option in action.option_strings:
                if option in ("-h", "--help", "--version"):
                    continue
                documented = [r for r in rows if r.startswith(path) and option in r.split()[1:]]
                documented += [r for r in rows if r.startswith(path) and f" {option}," in r]
                documented += [r for r in rows if r.startswith(path) and r.endswith(option)]
                assert documented, f"keycard-agents {path} {option} is not documented"
                checked += 1
                row = f"{path} {option}"
                if row in rows and action.default not in (None, False, [], argparse.SUPPRESS):
                    assert rows[row][0] == shown(action.default), row

    walk(build_parser(), "")
    assert checked >= 25
