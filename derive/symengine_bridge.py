"""SymPy to SymEngine and back, node by node, for the naive and cse strategies.

With SymEngine installed (``pip install chainrule[fast]``) the heavy ``diff`` and
``cse`` run in its C++ core; the results are converted back to SymPy and are the
same functions of the parameters. The elementary functions are converted through
their rows (:data:`chainrule.derive.functions.FUNCTION_ROWS`): a row with a SymEngine
name maps to that function, any other to an opaque SymEngine function whose
derivative SymPy supplies. No text is parsed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import sympy as sp
from chainrule.derive import naming
from chainrule.derive.errors import DerivationError
from chainrule.derive.functions import CONSTANTS, FUNCTION_ROWS, FUNCTIONS_BY_CLASS
from chainrule.derive.layers import activation_expr
from chainrule.derive.scalar_network import ScalarNetwork, _sym
from chainrule.derive.spec import Spec
from chainrule.derive.tables import COSTS

ENGINES = ("auto", "sympy", "symengine")

#: Progress callback: (stage, done, total).
Progress = Callable[[str, int, int], None]


def symengine_available() -> bool:
    """True when the optional SymEngine package can be imported."""
    try:
        import symengine  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_engine(engine: str, spec: Spec | None = None) -> str:
    """``auto`` becomes ``symengine`` when installed, else ``sympy``; others are checked.

    For a network with piecewise activations (ReLU) ``auto`` stays with SymPy:
    SymEngine has no if-then-else condition, so its CSE of those gradients is weaker.
    """
    if engine not in ENGINES:
        raise DerivationError(
            "engine", f"unknown engine {engine!r}", "use one of: " + ", ".join(ENGINES)
        )
    if engine == "auto":
        if spec is not None and (
            any(
                act != "softmax" and activation_expr(act).has(sp.Piecewise)
                for act in spec.activations
            )
            or COSTS[spec.cost].expr.has(sp.Piecewise)
        ):
            return "sympy"
        return "symengine" if symengine_available() else "sympy"
    if engine == "symengine" and not symengine_available():
        raise DerivationError(
            "engine",
            "SymEngine is not installed",
            "pip install 'chainrule[fast]' (or symengine), or use --engine sympy",
        )
    return engine


#: SymEngine function name -> SymPy class, from the function rows.
_FROM_SYMENGINE: dict[str, type] = {
    row.symengine: row.cls for row in FUNCTION_ROWS if row.symengine is not None
}
#: SymEngine's printed constant -> SymPy constant.
_CONSTANT_NAMES: dict[str, sp.Basic] = {name: const for const, (name, _, _) in CONSTANTS.items()}


class _ToSymEngine:
    """Convert SymPy expressions into SymEngine node by node (no text, no sympify)."""

    def __init__(self) -> None:
        import symengine as se

        self.se = se
        self.memo: dict[sp.Basic, Any] = {}
        self.symbols: dict[str, sp.Symbol] = {}
        self.functions: dict[str, Any] = {}

    def __call__(self, expr: sp.Basic) -> Any:
        se = self.se
        stack: list[tuple[sp.Basic, bool]] = [(expr, False)]
        memo = self.memo
        while stack:
            node, ready = stack.pop()
            if node in memo:
                continue
            if not ready and node.args and not isinstance(node, sp.Number):
                stack.append((node, True))
                stack.extend((a, False) for a in node.args if a not in memo)
                continue
            args = [memo[a] for a in node.args] if not isinstance(node, sp.Number) else []
            memo[node] = self._node(node, args, se)
        return memo[expr]

    def _node(self, node: sp.Basic, args: list, se: Any) -> Any:
        if isinstance(node, sp.Symbol):
            self.symbols[node.name] = node
            return se.Symbol(node.name)
        if isinstance(node, sp.Integer):
            return se.Integer(int(node))
        if isinstance(node, sp.Rational):
            return se.Rational(int(node.p), int(node.q))
        if isinstance(node, sp.Float):
            return se.RealDouble(float(node))
        if isinstance(node, sp.Add):
            return se.Add(*args)
        if isinstance(node, sp.Mul):
            return se.Mul(*args)
        if isinstance(node, sp.Pow):
            return se.Pow(*args)
        if node in CONSTANTS:
            return getattr(se, CONSTANTS[node][0])
        row = FUNCTIONS_BY_CLASS.get(type(node))
        if row is not None and row.symengine is not None:
            return getattr(se, row.symengine)(args[0])
        if row is not None:
            self.functions[row.name] = row.cls
            return se.Function(row.name)(args[0])
        if isinstance(node, sp.Piecewise):
            return se.Piecewise(*args)
        if isinstance(node, sp.functions.elementary.piecewise.ExprCondPair):
            return (args[0], args[1])
        if node is sp.true:
            return se.true
        if node is sp.false:
            return se.false
        if isinstance(node, sp.ITE):
            cond, yes, no = args
            return se.Or(se.And(cond, yes), se.And(se.Not(cond), no))
        for cls, fn in ((sp.And, se.And), (sp.Or, se.Or), (sp.Not, se.Not)):
            if isinstance(node, cls):
                return fn(*args)
        rel = {
            sp.Equality: se.Eq,
            sp.Unequality: se.Ne,
            sp.StrictGreaterThan: se.Gt,
            sp.StrictLessThan: se.Lt,
            sp.GreaterThan: se.Ge,
            sp.LessThan: se.Le,
        }
        for cls, fn in rel.items():
            if isinstance(node, cls):
                return fn(args[0], args[1])
        raise DerivationError(
            "engine",
            f"SymEngine cannot take {type(node).__name__}",
            "use --engine sympy for this network",
        )


class _FromSymEngine:
    """Convert SymEngine results back to SymPy, replacing unevaluated derivatives of
    sigmoid/softplus by SymPy's derivative of them."""

    def __init__(self, to_se: _ToSymEngine) -> None:
        self.symbols = to_se.symbols
        self.functions = to_se.functions
        self.memo: dict[Any, sp.Basic] = {}
        self.extra: dict[str, sp.Symbol] = {}
        self.rename: dict[str, sp.Symbol] = {}

    def symbol(self, name: str) -> sp.Symbol:
        if name in self.rename:
            return self.rename[name]
        if name in self.symbols:
            return self.symbols[name]
        return self.extra.setdefault(name, _sym(name))

    def __call__(self, expr: Any) -> sp.Basic:
        memo = self.memo
        stack: list[tuple[Any, bool]] = [(expr, False)]
        while stack:
            node, ready = stack.pop()
            if node in memo:
                continue
            kind = type(node).__name__
            kids = () if kind in ("Subs", "Derivative") else node.args
            if not ready and kids:
                stack.append((node, True))
                stack.extend((a, False) for a in kids if a not in memo)
                continue
            memo[node] = self._node(node, kind, [memo[a] for a in kids])
        return memo[expr]

    def _node(self, node: Any, kind: str, args: list) -> sp.Basic:
        if kind in ("Symbol", "Dummy"):
            return self.symbol(node.name)
        if node.is_Integer:
            return sp.Integer(int(node))
        if node.is_Rational:
            p, q = node.get_num_den()
            return sp.Rational(int(p), int(q))
        if kind == "RealDouble":
            return sp.Float(float(node))
        if kind in ("Pi", "Exp1", "Constant") and str(node) in _CONSTANT_NAMES:
            return _CONSTANT_NAMES[str(node)]
        if kind == "Add":
            return sp.Add(*args)
        if kind == "Mul":
            return sp.Mul(*args)
        if kind == "Pow":
            if str(node.args[0]) == "E":
                return sp.exp(args[1])
            return sp.Pow(*args)
        if kind in _FROM_SYMENGINE:
            return _FROM_SYMENGINE[kind](args[0])
        if kind == "FunctionSymbol":
            return self.functions[node.get_name()](args[0])
        if kind == "Piecewise":
            return sp.Piecewise(*[(args[i], args[i + 1]) for i in range(0, len(args), 2)])
        if kind == "BooleanTrue":
            return sp.true
        if kind == "BooleanFalse":
            return sp.false
        if kind in ("And", "Or", "Not"):
            return getattr(sp, kind)(*args)
        if kind == "Equality":
            return sp.Eq(*args)
        if kind == "Unequality":
            return sp.Ne(*args)
        if kind == "StrictLessThan":
            return sp.StrictLessThan(*args)
        if kind == "LessThan":
            return sp.LessThan(*args)
        if kind == "Subs":  # Subs(Derivative(f(xi), xi), xi, u): f'(u)
            name = node.expr.expr.get_name()
            return _derivative(self.functions[name], self(node.point[0]))
        if kind == "Derivative":
            inner = node.expr
            return _derivative(self.functions[inner.get_name()], self(inner.args[0]))
        raise DerivationError(
            "engine",
            f"cannot convert SymEngine {kind} back to SymPy",
            "use --engine sympy for this network",
        )


_DUMMY_ARG = sp.Dummy("u", real=True)


def _derivative(cls: Any, point: sp.Expr) -> sp.Expr:
    """SymPy's own derivative of the one-argument function ``cls`` at ``point``."""
    return _derivative_template(cls).xreplace({_DUMMY_ARG: point})


@functools.lru_cache(maxsize=16)
def _derivative_template(cls: Any) -> sp.Expr:
    return sp.diff(cls(_DUMMY_ARG), _DUMMY_ARG)


def _symengine_diff_cse(
    net: ScalarNetwork, do_cse: bool, progress: Progress | None
) -> tuple[list[tuple[sp.Symbol, sp.Expr]], list[sp.Expr]]:
    import symengine as se

    to_se = _ToSymEngine()
    cost = to_se(net.cost)
    params = [to_se(p) for p in net.params]
    raw = []
    for i, p in enumerate(params):
        raw.append(cost.diff(p))
        if progress:
            progress("naive diff", i + 1, len(params))
    # Replace the unevaluated derivatives of sigmoid/softplus inside SymEngine, so
    # that CSE sees sigmoid(u) in them and shares it with the forward value.
    back = _FromSymEngine(to_se)
    mapping = {}
    for node in _collect(raw, ("Subs", "Derivative")):
        if type(node).__name__ == "Subs":  # Subs(Derivative(f(xi), xi), xi, u)
            name, point = node.expr.expr.get_name(), node.point[0]
        else:  # Derivative(f(u), u)
            name, point = node.expr.get_name(), node.expr.args[0]
        template, var = _se_derivative(to_se, name)
        mapping[node] = template.xreplace({var: point})
    if mapping:
        raw = [r.xreplace(mapping) for r in raw]
    if not do_cse:
        return [], [back(r) for r in raw]
    pairs, reduced = se.cse(raw)
    replacements = []
    for i, (tmp, value) in enumerate(pairs):
        if tmp.name in to_se.symbols:  # pragma: no cover - SymEngine names are x0, x1, ...
            raise DerivationError("engine", f"temporary {tmp.name} clashes", "use --engine sympy")
        back.rename[tmp.name] = _sym(naming.temp(i))
        replacements.append((back.rename[tmp.name], value))
    back_pairs = [(new, back(value)) for new, value in replacements]
    return back_pairs, [back(r) for r in reduced]


def _se_derivative(to_se: _ToSymEngine, name: str) -> tuple[Any, Any]:
    """SymPy's derivative of the function ``name``, in SymEngine, and its variable."""
    cls = to_se.functions[name]
    return to_se(_derivative(cls, _DUMMY_ARG)), to_se(_DUMMY_ARG)


def _collect(exprs: Sequence[Any], kinds: tuple[str, ...]) -> list[Any]:
    seen: set = set()
    found = []
    stack = list(exprs)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        kind = type(node).__name__
        if kind in kinds:
            found.append(node)
            continue
        stack.extend(node.args)
    return found
