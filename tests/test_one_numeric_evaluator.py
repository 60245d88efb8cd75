"""Numbers come from one evaluator, :class:`chainrule.derive.numeric.Evaluator`.

The packages ``derive``, ``codegen`` and ``chainrule`` are scanned token by token (so
words in strings, comments and docstrings do not count) for SymPy's own numeric
evaluation: a call of ``N`` (``sp.N``, ``sympy.N`` or an imported ``N``) or of a
``.evalf`` / ``.n`` method. Outside ``derive/numeric.py`` every use must be listed in
:data:`ALLOWED` with the reason it is not a second evaluator; a new one fails this
test until it goes through the evaluator or someone writes that reason down.

A substitution (``xreplace``/``subs``) is not scanned: the same call builds
expressions symbolically throughout the code, and a scan cannot tell the two apart.
"""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

import pytest
import source_scan

REPO = source_scan.REPO
#: The one evaluator: its own module may call SymPy's evaluation.
EVALUATOR = "derive/numeric.py"
METHODS = frozenset({"evalf", "n"})
MODULES = frozenset({"sp", "sympy"})

#: (file, a fragment of the line) -> why this is not a second evaluator.
ALLOWED: dict[tuple[str, str], str] = {
    (
        "derive/exprparse.py",
        "sp.real_roots(poly)[0].evalf(15)",
    ): "the float of an exact algebraic root (a pole of a parsed activation), not the "
    "value of an expression at a point",
}


def _uses(path: Path) -> list[tuple[int, str, str]]:
    """(line number, evaluation call, line text) of each SymPy evaluation call in code."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tokens = [
        tok
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    ]
    out = []
    for i, tok in enumerate(tokens):
        after = tokens[i + 1].string if i + 1 < len(tokens) else ""
        if tok.type != tokenize.NAME or after != "(":
            continue
        before = tokens[i - 1].string if i else ""
        owner = tokens[i - 2].string if i > 1 else ""
        if before == "def":
            continue
        if tok.string == "N" and (before != "." or owner in MODULES):
            name = f"{owner}.N" if before == "." else "N"
        elif tok.string in METHODS and before == ".":
            name = f".{tok.string}"
        else:
            continue
        out.append((tok.start[0], name, lines[tok.start[0] - 1].strip()))
    return out


@pytest.mark.slow
def test_numbers_come_from_the_one_evaluator() -> None:
    unexplained = source_scan.unexplained(_uses, ALLOWED, skip=EVALUATOR)
    assert not unexplained, "evaluation outside derive/numeric.py:\n" + "\n".join(unexplained)


def test_the_evaluator_itself_is_seen_by_the_scan() -> None:
    # The scan finds the evaluator's own sympy.N: it would find a copy elsewhere.
    assert any(name == "sp.N" for _, name, _ in _uses(REPO / EVALUATOR))


def test_the_scan_sees_calls_and_ignores_words(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""sp.N( in a docstring."""\n'
        "# expr.evalf( in a comment\n"
        "text = 'sp.N(x, 30)'\n"
        "width = net.n[1] + layer.N\n"
        "a = sp.N(x, 30)\n"
        "b = (x + 1).evalf(20)\n"
        "c = N(x)\n"
        "d = x.n(15)\n",
        encoding="utf-8",
    )
    found = [(line, name) for line, name, _ in _uses(sample)]
    assert found == [(5, "sp.N"), (6, ".evalf"), (7, "N"), (8, ".n")]


@pytest.mark.parametrize("key", sorted(ALLOWED))
def test_allowed_entries_are_still_needed(key: tuple[str, str]) -> None:
    rel, fragment = key
    path = REPO / rel
    if not path.exists():
        pytest.fail(f"{rel} no longer exists: drop its ALLOWED entry")
    assert any(fragment in text for _, _, text in _uses(path)), f"stale entry {key}"
