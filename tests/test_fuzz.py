"""Fuzz the parser and the spec loader: the only exception is chainrule's own, no code runs.

Hypothesis feeds random text, random Python-like expression trees, random spec
tables and random spec files. Every call either returns or raises
:class:`~chainrule.derive.errors.SpecError`. Meanwhile an audit hook (``sys.addaudithook``)
records every ``exec`` and ``compile`` event, and SymPy's string evaluators
(``parse_expr``, behind ``sympify`` of a string, and ``lambdify``) are replaced by
sentinels: user text is only ever handed to ``ast.parse``, which builds a syntax tree
and runs nothing; no code made from it is compiled or executed.
"""

from __future__ import annotations

import ast
import importlib
import json
import string
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sympy
import sympy.parsing.sympy_parser
from chainrule.derive import exprparse
from chainrule.derive.errors import SpecError
from chainrule.derive.exprparse import FUNCTIONS, X, parse_activation
from chainrule.derive.spec import LAYER_FIELDS, TOP_FIELDS, Spec, load_spec, spec_from_dict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    # monkeypatch is used only through monkeypatch.context(), undone after each example.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)

# ------------------------------------------------------------------ the audit

_EVENTS: list[tuple[str, tuple[Any, ...]]] = []
_RECORDING = [False]


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _RECORDING[0] and event in ("exec", "compile", "os.system", "subprocess.Popen"):
        _EVENTS.append((event, args))


sys.addaudithook(_hook)  # hooks cannot be removed; this one only records while enabled


_LAMBDIFY_MODULE = importlib.import_module("sympy.utilities.lambdify")


def _sentinel(name: str) -> Callable[..., Any]:
    def called(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{name} was called during parsing")

    return called


# Warm SymPy up first: its lazy imports and its own generated polynomial helpers
# compile and exec trusted code once, on first use.
for _text in ("x*sigmoid(x)", "max(x, 0.1*x)", "1/(1 + x**2)", "log(2 + x**2)", "1/(x - 0.5)"):
    try:
        parse_activation(_text)
    except SpecError:
        pass


@contextmanager
def no_code_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record audit events and replace the evaluators; yield the texts given to ``ast.parse``.

    On exit: no process was started; every ``compile`` event is either the parser's
    ``ast.parse`` of the text (file name ``<unknown>``: a syntax tree, nothing runs) or
    SymPy compiling source that contains none of that text; every ``exec`` event runs
    a code object from an installed file (a lazy import) or from such a vetted compile.
    """
    parsed: list[str] = []
    real_parse = ast.parse

    def recording_parse(source: Any, *args: Any, **kwargs: Any) -> ast.AST:
        parsed.append(source if isinstance(source, str) else repr(source))
        return real_parse(source, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(ast, "parse", recording_parse)
        patch.setattr(sympy.parsing.sympy_parser, "parse_expr", _sentinel("parse_expr"))
        patch.setattr(sympy, "parse_expr", _sentinel("parse_expr"), raising=False)
        patch.setattr(sympy, "lambdify", _sentinel("lambdify"))
        patch.setattr(_LAMBDIFY_MODULE, "lambdify", _sentinel("lambdify"))
        exprparse._parse.cache_clear()  # every text goes through ast.parse again
        _EVENTS.clear()
        _RECORDING[0] = True
        try:
            yield parsed
        finally:
            _RECORDING[0] = False
    events = list(_EVENTS)
    _EVENTS.clear()
    user_texts = [t for t in parsed if t.strip()]
    for event, args in events:
        assert event in ("compile", "exec"), f"{event} {args!r:.200}"
        if event == "exec":
            # Code objects run only from installed files (SymPy's lazy imports) or from
            # a compile event vetted below; user text is never compiled for running.
            filename = getattr(args[0], "co_filename", None)
            assert filename == "<string>" or Path(str(filename)).is_file(), f"exec {args!r:.200}"
            continue
        source, filename = args[0], args[1]
        if isinstance(source, bytes):
            source = source.decode("utf-8", "replace")
        if filename == "<unknown>" and source in parsed:
            continue  # the parser's own ast.parse: a syntax tree, nothing runs
        # Anything else is SymPy generating its own helpers (e.g. polynomial monomials).
        assert not any(t.strip() in source for t in user_texts), f"compiled {source!r:.200}"


def _parse(text: str) -> None:
    try:
        expr = parse_activation(text, "layers[0].activation")
    except SpecError as exc:
        assert exc.field == "layers[0].activation"
        assert "\n" not in str(exc) and len(str(exc)) < 600
    else:
        assert isinstance(expr, sympy.Expr)
        assert expr.free_symbols == {X}


# ------------------------------------------------------------------ strategies

PYTHONISH = st.lists(
    st.sampled_from(
        list("x()+-*/.,0123456789e _[]{}:'\"=<>!%&|^~@#\\\n\t;")
        + list(FUNCTIONS)
        + ["lambda", "for", "in", "if", "else", "import", "__", "inf", "nan", "j", "**"]
    ),
    max_size=80,
).map("".join)

NAMES = st.sampled_from(
    [*FUNCTIONS, "x", "y", "X", "inf", "nan", "__import__", "eval", "os", "sympify", "\uff58"]
)

LEAVES = st.one_of(
    st.just("x"),
    NAMES,
    st.integers(min_value=-(10**9), max_value=10**9).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e400", "-1e400", "1e-400", "0", "0.0", "1j", "'s'", "b''", "True", "None"]),
)


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "**", "%", "//", "@"]), inner)
    return st.one_of(
        binary.map(lambda t: f"({t[0]}){t[1]}({t[2]})"),
        st.tuples(st.sampled_from(["-", "+", "~", "not "]), inner).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(NAMES, st.lists(inner, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(inner, st.sampled_from(["real", "__class__", "T"])).map(
            lambda t: f"({t[0]}).{t[1]}"
        ),
        inner.map(lambda s: f"(lambda x: {s})(x)"),
        inner.map(lambda s: f"[{s} for x in (1,)][0]"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]}) if x > 0 else ({t[1]})"),
        inner.map(lambda s: f"f'{{{s}}}'"),
        inner.map(lambda s: f"max({s}, 0.1*({s}))"),
    )


TREES = st.recursive(LEAVES, _extend, max_leaves=12)

# Mostly inside the whitelist, so that the checks after parsing are exercised too.
SMALL_NUMBERS = st.one_of(
    st.integers(min_value=-5, max_value=5).map(str),
    st.floats(min_value=-3, max_value=3, allow_nan=False).map(lambda v: f"{v:.3g}"),
)


def _extend_mostly_valid(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    unary = st.sampled_from(sorted(n for n, (arity, _) in FUNCTIONS.items() if arity == 1))
    binary = st.sampled_from(sorted(n for n, (arity, _) in FUNCTIONS.items() if arity == 2))
    return st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(
            lambda t: f"({t[0]}){t[1]}({t[2]})"
        ),
        st.tuples(inner, st.integers(min_value=-20, max_value=20)).map(
            lambda t: f"({t[0]})**{t[1]}"
        ),
        inner.map(lambda s: f"-({s})"),
        st.tuples(unary, inner).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(binary, inner, inner).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
    )


MOSTLY_VALID_TREES = st.recursive(
    st.one_of(st.just("x"), SMALL_NUMBERS), _extend_mostly_valid, max_leaves=8
)

JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**12), max_value=10**12),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.sampled_from(["sigmoid", "softmax", "relu", "x*sigmoid(x)", "quadratic", "rows"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)

LAYER = st.dictionaries(
    st.one_of(st.sampled_from(LAYER_FIELDS), st.sampled_from(["sise", "act", ""])),
    st.one_of(
        st.integers(min_value=-3, max_value=200_000),
        st.sampled_from(["sigmoid", "tanh", "softmax", "x*sigmoid(x)", "sigmoidd", "1/x", "x.y"]),
        JSONISH,
    ),
    max_size=4,
)

SPEC_DICT = st.dictionaries(
    st.one_of(st.sampled_from(TOP_FIELDS), st.sampled_from(["inputs", "layer", "Cost"])),
    st.one_of(
        st.lists(LAYER, max_size=4),
        st.integers(min_value=-3, max_value=10**10),
        st.sampled_from(
            ["quadratic", "cross-entropy", "binary-cross-entropy", "mse", "rows", "float32"]
        ),
        JSONISH,
    ),
    max_size=7,
)

ACTIVATION_TEXTS = st.one_of(
    st.sampled_from(
        ["sigmoid", "tanh", "relu", "leaky-relu", "softplus", "linear", "softmax", "sigmoidd"]
    ),
    st.sampled_from(["x*sigmoid(x)", "max(x, 0.1*x)", "softplus(x) - log(2)", "1/x", "x.real"]),
    MOSTLY_VALID_TREES,
    JSONISH,
)

MOSTLY_VALID_LAYER = st.fixed_dictionaries(
    {
        "size": st.one_of(st.integers(min_value=1, max_value=6), st.integers(), JSONISH),
        "activation": ACTIVATION_TEXTS,
    },
    optional={"bias": st.one_of(st.booleans(), JSONISH), "bais": st.booleans()},
)

MOSTLY_VALID_SPEC = st.fixed_dictionaries(
    {
        "input": st.one_of(st.integers(min_value=1, max_value=6), JSONISH),
        "layers": st.lists(MOSTLY_VALID_LAYER, max_size=4),
        "cost": st.sampled_from(
            ["quadratic", "squared-error", "binary-cross-entropy", "cross-entropy", "mse"]
        ),
    },
    optional={
        "name": st.one_of(st.text(max_size=20), JSONISH),
        "layout": st.sampled_from(["columns", "rows", "row"]),
        "dtype": st.sampled_from(["float64", "float32", "float16"]),
        "cost ": st.just("quadratic"),
    },
)

VALID_JSON = json.dumps(
    {
        "name": "fuzz",
        "input": 3,
        "cost": "cross-entropy",
        "layers": [
            {"size": 4, "activation": "x*sigmoid(x)"},
            {"size": 2, "activation": "softmax", "bias": False},
        ],
    }
)
VALID_TOML = (
    'name = "fuzz"\ninput = 3\ncost = "quadratic"\nlayout = "rows"\n'
    '[[layers]]\nsize = 4\nactivation = "max(x, 0.1*x)"\n'
    '[[layers]]\nsize = 1\nactivation = "sigmoid"\nbias = false\n'
)


def _mutations(text: str) -> st.SearchStrategy[str]:
    """Valid file text with a few characters replaced, inserted or deleted."""
    edits = st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=len(text)),
            st.sampled_from(["insert", "delete", "replace"]),
            st.sampled_from(list(string.printable) + ["\x00", "\uff58", "NaN", "1e999", '"']),
        ),
        min_size=1,
        max_size=4,
    )

    def apply(changes: list[tuple[int, str, str]]) -> str:
        out = text
        for at, how, what in changes:
            at = min(at, len(out))
            if how == "insert":
                out = out[:at] + what + out[at:]
            elif how == "delete":
                out = out[:at] + out[at + 1 :]
            else:
                out = out[:at] + what + out[at + 1 :]
        return out

    return edits.map(apply)


# ------------------------------------------------------------------ the tests


@pytest.mark.slow
@FUZZ
@given(text=st.one_of(st.text(max_size=600), PYTHONISH))
def test_random_text_into_the_parser(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with no_code_runs(monkeypatch):
        _parse(text)


@FUZZ
@given(text=st.one_of(TREES, MOSTLY_VALID_TREES))
@pytest.mark.slow
def test_random_expression_trees_into_the_parser(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with no_code_runs(monkeypatch):
        _parse(text)


@FUZZ
@given(data=st.one_of(MOSTLY_VALID_SPEC, SPEC_DICT, JSONISH))
@pytest.mark.slow
def test_random_tables_into_the_spec_loader(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with no_code_runs(monkeypatch):
        try:
            spec = spec_from_dict(data)
        except SpecError as exc:
            assert "\n" not in str(exc)
        else:
            assert isinstance(spec, Spec)
            assert spec_from_dict(spec.to_dict()) == spec


@FUZZ
@given(
    case=st.one_of(
        st.tuples(st.just(".json"), _mutations(VALID_JSON)),
        st.tuples(st.just(".toml"), _mutations(VALID_TOML)),
        st.tuples(st.sampled_from([".json", ".toml"]), st.text(max_size=200)),
    )
)
@pytest.mark.slow
def test_random_files_into_the_spec_loader(
    case: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    suffix, text = case
    path: Path = tmp_path_factory.mktemp("fuzz") / f"net{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with no_code_runs(monkeypatch):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            assert "\n" not in str(exc)
        else:
            assert isinstance(spec, Spec)


def test_the_audit_catches_an_evaluator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: sympify of a string, or compiling the text, is caught."""
    with pytest.raises(AssertionError, match="parse_expr"), no_code_runs(monkeypatch):
        sympy.sympify("x + 1")
    with pytest.raises(AssertionError, match="compiled"), no_code_runs(monkeypatch):
        parse_activation("x*sigmoid(x)")
        compile("x*sigmoid(x)", "<string>", "eval")
    with no_code_runs(monkeypatch):
        parse_activation("x*sigmoid(x)")  # and the parser alone passes
