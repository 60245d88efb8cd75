"""Command-line manners: help with examples everywhere, --version, python -m chainrule."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import chainrule
from chainrule.cli import build_parser, main


def _subcommands() -> list[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_shows_examples_and_exit_statuses(capsys) -> None:
    text = _help(["--help"], capsys)
    assert "examples:" in text
    assert "chainrule generate --preset nielsen" in text
    assert "exit status: 0 ok, 1 check failed, 2 bad input" in text
    for name in _subcommands():
        assert name in text


def test_the_known_subcommands_are_registered() -> None:
    assert {"generate", "check", "presets", "regenerate", "graph"} <= set(_subcommands())


@pytest.mark.parametrize("name", _subcommands())
def test_every_subcommand_help_shows_examples(name: str, capsys) -> None:
    text = _help([name, "--help"], capsys)
    assert "examples:" in text
    examples = text.split("examples:", 1)[1]
    assert f"chainrule {name}" in examples


def test_version(capsys) -> None:
    assert _help(["--version"], capsys).strip() == f"chainrule {chainrule.__version__}"


@pytest.mark.slow
def test_python_dash_m_runs_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chainrule", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"chainrule {chainrule.__version__}"
    bad = subprocess.run(
        [sys.executable, "-m", "chainrule", "generate", "--preset", "nielsn"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "did you mean 'nielsen'" in bad.stderr


def test_no_command_prints_help_and_exits_2(capsys) -> None:
    assert main([]) == 2
    assert "examples:" in capsys.readouterr().out
