"""No code path hands user text to an evaluator.

The packages ``derive``, ``codegen`` and ``chainrule`` are scanned token by token (so
words in strings, comments and docstrings do not count) for calls that turn text into
running code: ``eval``, ``exec``, ``compile``, ``sympify``, ``parse_expr``,
``lambdify``, ``__import__``, ``exec_module``, ``run_path``, ``import_module``. Every
remaining use must be listed in :data:`ALLOWED` with the reason its input is trusted;
a new use fails this test until someone writes that reason down.
"""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

import pytest
import source_scan

REPO = source_scan.REPO
EVALUATORS = frozenset(
    {
        "eval",
        "exec",
        "compile",
        "sympify",
        "parse_expr",
        "lambdify",
        "__import__",
        "exec_module",
        "run_path",
        "import_module",
    }
)

#: (file, a fragment of the line) -> why the input is trusted.
ALLOWED: dict[tuple[str, str], str] = {
    (
        "codegen/emit.py",
        'compile(tree, "<chainrule module>", "exec")',
    ): "compiles (never runs) a generated module after the whitelist lint, to prove it compiles",
    (
        "chainrule/cmd_train.py",
        "exec(compile(source,",
    ): "runs chainrule's own generated module, linted just before; user text in it is only "
    "repr string literals",
    (
        "chainrule/loader.py",
        "exec(compile(source, str(file)",
    ): "chainrule.load_module runs a file only after it starts with chainrule's marker line "
    "and passes the whitelist lint, and runs that same text (read once, never read again)",
    (
        "chainrule/check.py",
        "spec.loader.exec_module(module)",
    ): "'chainrule check FILE' imports the module file the user names, by request: the "
    "same trust as 'python FILE'",
    (
        "chainrule/__init__.py",
        "importlib.import_module(module)",
    ): "module comes from the constant _PUBLIC table, never from input",
    (
        "chainrule/import_torch.py",
        "loader_spec.loader.exec_module(user_module)",
    ): "'--from-torch FILE.py:NAME' imports the user's own model file, by request and "
    "documented as such",
}


def _uses(path: Path) -> list[tuple[int, str, str]]:
    """(line number, evaluator name, line text) of each evaluator name used in code."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tokens = [
        tok
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    ]
    out = []
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.NAME or tok.string not in EVALUATORS:
            continue
        before = tokens[i - 1].string if i else ""
        owner = tokens[i - 2].string if i > 1 else ""
        if before == "." and owner == "re":
            continue  # re.compile builds a regular expression, not code
        if before == "def":
            continue  # a definition of a function that happens to share the name
        out.append((tok.start[0], tok.string, lines[tok.start[0] - 1].strip()))
    return out


@pytest.mark.slow
def test_every_evaluator_use_is_on_trusted_input() -> None:
    unexplained = source_scan.unexplained(_uses, ALLOWED)
    assert not unexplained, "uses without a reason in ALLOWED:\n" + "\n".join(unexplained)


def test_the_parser_and_the_spec_loader_use_no_evaluator() -> None:
    for rel in ("derive/exprparse.py", "derive/spec.py", "derive/tables.py", "codegen/emit.py"):
        names = [name for _, name, text in _uses(REPO / rel) if "<chainrule module>" not in text]
        assert names == [], rel


def test_the_scan_sees_calls_and_ignores_words(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""eval( in a docstring."""\n'
        "import re\n"
        "# exec( in a comment\n"
        "PATTERN = re.compile('x')\n"
        "text = 'sympify(text)'\n"
        "value = eval(text)\n"
        "tree = sympy.sympify(value)\n",
        encoding="utf-8",
    )
    assert [(line, name) for line, name, _ in _uses(sample)] == [(6, "eval"), (7, "sympify")]


@pytest.mark.parametrize("key", sorted(ALLOWED))
def test_allowed_entries_are_still_needed(key: tuple[str, str]) -> None:
    rel, fragment = key
    path = REPO / rel
    if not path.exists():
        pytest.fail(f"{rel} no longer exists: drop its ALLOWED entry")
    assert any(fragment in text for _, _, text in _uses(path)), f"stale entry {key}"
