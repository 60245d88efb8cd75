"""The shape of the command line: an explicit command table, a light start, a public API.

``chainrule --help`` and ``--version`` must not load SymPy or NumPy; subcommands come
from one table in :mod:`chainrule.cli` (no import by string, no ``cmd_*`` module
importing the cli back); library types live in library modules.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env

from chainrule.cli import COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "chainrule"

# Runs the command line in-process, then prints which heavy packages it loaded.
_PROBE = """
import json, sys
from chainrule.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stdout.flush()
heavy = sorted(n for n in ("sympy", "numpy", "jinja2") if n in sys.modules)
print("\\nLOADED " + json.dumps(heavy), file=sys.stderr)
"""


def _loaded(*argv: str) -> tuple[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    marker = done.stderr.rsplit("LOADED ", 1)
    assert len(marker) == 2, done.stderr
    return done.stdout, json.loads(marker[1])


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_load_no_sympy_and_no_numpy(flag: str) -> None:
    out, loaded = _loaded(flag)
    assert "chainrule" in out
    assert loaded == [], f"chainrule {flag} imported {loaded}"


@pytest.mark.slow
def test_subcommand_help_still_lists_its_options() -> None:
    out, _ = _loaded("generate", "--help")
    assert "--sizes" in out and "--check" in out and "nielsen" in out


def test_every_command_of_the_table_is_listed_in_help() -> None:
    parser = build_parser()
    text = parser.format_help()
    assert [c.name for c in COMMANDS] == [
        "generate",
        "check",
        "presets",
        "regenerate",
        "graph",
        "compare",
        "train",
        "derive",
    ]
    for command in COMMANDS:
        assert command.name in text


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_command_module_imports_the_cli_back() -> None:
    for path in sorted(PACKAGE.glob("cmd_*.py")):
        assert "chainrule.cli" not in _imports(path), path.name


def test_the_cli_imports_no_module_by_string() -> None:
    imports = _imports(PACKAGE / "cli.py")
    assert "importlib" not in imports
    assert "import_module" not in (PACKAGE / "cli.py").read_text(encoding="utf-8")


def test_library_types_live_in_library_modules() -> None:
    import chainrule
    from chainrule.comparison import Comparison
    from chainrule.graph import Graph

    assert chainrule.Graph is Graph and Graph.__module__ == "chainrule.graph"
    assert chainrule.Comparison is Comparison
    assert Comparison.__module__ == "chainrule.comparison"
    for path in sorted(PACKAGE.glob("cmd_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
        assert not classes & {"Graph", "Comparison", "LayerRow"}, path.name


def test_dir_shows_the_public_api_only() -> None:
    import chainrule

    names = dir(chainrule)
    assert names == sorted([*chainrule.__all__, "__version__"])
    assert "importlib" not in names and "Any" not in names and "annotations" not in names
    for name in chainrule.__all__:
        assert getattr(chainrule, name) is not None


def _long_functions(path: Path, limit: int = 80) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_function_of_the_command_line_is_over_80_lines() -> None:
    # importers.py is the import side's, not the command line's
    files = [p for p in PACKAGE.glob("*.py") if p.name != "importers.py"]
    too_long = [entry for path in sorted(files) for entry in _long_functions(path)]
    assert not too_long, too_long
