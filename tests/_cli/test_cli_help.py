"""Every subcommand and option of ``keycard-agents`` explains itself in ``--help``."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from keycard_agents._cli import build_parser, main


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """Every (sub)command: its words, its parser and the help line its parent shows."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            lines = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, lines.get(name)
                yield from _parsers(sub, (*path, name))


def test_every_subcommand_and_option_has_help_text() -> None:
    missing = []
    commands = list(_parsers(build_parser()))
    assert {"sts", "serve", "trace", "token", "demo"} <= {c[0][0] for c in commands}
    for words, parser, line in commands:
        name = " ".join(words)
        if not line:
            missing.append(f"{name}: no help line in its parent's list")
        if not parser.description:
            missing.append(f"{name}: no description for `{name} --help`")
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                shown = "/".join(action.option_strings) or action.dest
                missing.append(f"{name} {shown}: no help text")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    "words", [["sts", "rotate-key"], ["sts", "rotate-vault-key"], ["sts", "hash-secret"]]
)
def test_sts_subcommands_describe_themselves(
    words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*words, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: keycard-agents {' '.join(words)}")
    if words[1] in ("rotate-key", "rotate-vault-key"):
        assert "--config FILE" in out
        assert "token service TOML" in out
    else:
        assert "standard input" in out
