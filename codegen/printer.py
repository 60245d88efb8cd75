"""The NumPy printer: SymPy expressions to NumPy source, via ``_print_X`` overrides.

Output changes only through printer methods and name tables, never by editing
printed strings. Every name comes from the expression's symbols (named by
:mod:`chainrule.derive.naming`) or from this module's tables of NumPy functions and the
generated module's own helpers (``_sigmoid``, ``_DT``).
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp
from chainrule.codegen.pyformat import format_expr
from chainrule.derive.functions import FUNCTION_ROWS, FUNCTIONS_BY_CLASS, sigmoid  # noqa: F401 - doctests
from sympy.printing.numpy import NumPyPrinter

#: Name of the generated module's dtype constructor, used to keep literals in dtype.
DTYPE_NAME = "_DT"


class ChainrulePrinter(NumPyPrinter):
    """Prints elementwise SymPy expressions as NumPy code using the ``np`` alias.

    Examples
    --------
    >>> z = sp.Symbol("z2", real=True)
    >>> ChainrulePrinter().doprint(sigmoid(z) * (1 - sigmoid(z)))
    '(1 - _sigmoid(z2))*_sigmoid(z2)'
    """

    printmethod = "_chainrule_numpy"

    def __init__(self, settings: dict | None = None) -> None:
        merged = {"fully_qualified_modules": True, "allow_unknown_functions": False}
        merged.update(settings or {})
        super().__init__(merged)
        self.helpers: set[str] = set()

    def _module_format(self, fqn: str, register: bool = True) -> str:
        head, _, rest = fqn.partition(".")
        if head == "numpy" and rest:
            fqn = f"np.{rest}"
        return super()._module_format(fqn, register)

    def _print_row(self, expr: sp.Function) -> str:
        """An elementary function by its row's NumPy form (registered as ``_print_<name>``)."""
        row = FUNCTIONS_BY_CLASS[type(expr)]
        if row.helper is not None:
            self.helpers.add(row.helper)
        return row.numpy.format(self._print(expr.args[0]))

    def _print_log(self, expr: sp.log) -> str:
        arg = expr.args[0]
        if isinstance(arg, sp.Add) and arg.as_coeff_add()[0] == 1:
            rest = sp.Add(*arg.as_coeff_add()[1])
            return f"np.log1p({self._print(rest)})"
        return f"np.log({self._print(arg)})"

    def _print_Min(self, expr: sp.Min) -> str:
        return self._extremum("minimum", expr)

    def _print_Max(self, expr: sp.Max) -> str:
        return self._extremum("maximum", expr)

    def _extremum(self, ufunc: str, expr: sp.Expr) -> str:
        # Variables before constants: np.minimum(z1, 0), as a reader writes it.
        args = sorted(expr.args, key=lambda a: bool(a.is_number))
        out = self._print(args[-1])
        for arg in reversed(args[:-1]):
            out = f"np.{ufunc}({self._print(arg)}, {out})"
        return out

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        # Nested np.where; constant branches are cast to the module dtype so that
        # float32 stays float32. A final branch must be unconditional.
        *branches, (last_value, last_cond) = expr.args
        if last_cond is not sp.true:
            raise ValueError("Piecewise without a default branch cannot be printed")
        if len(branches) == 1 and last_value == 0:
            value, cond = branches[0]
            if cond in (sp.StrictGreaterThan(value, 0), sp.GreaterThan(value, 0)):
                # max(v, 0): np.where(v > 0, v, 0) would turn a NaN v into 0
                return f"np.maximum({self._print(value)}, 0)"
            if not value.is_number:
                # a NaN v fails every comparison: keep it, as max(v, 0) does, not 0
                v, zero = self._print(value), self._branch(sp.Integer(0))
                test = self._print(cond)  # | binds tighter than a comparison in Python
                test = f"({test})" if isinstance(cond, sp.core.relational.Relational) else test
                return f"np.where({test} | np.isnan({v}), {v}, {zero})"
        out = self._branch(_clamped(last_value, [cond for _, cond in branches], False))
        for i in range(len(branches) - 1, -1, -1):
            value, cond = branches[i]
            earlier = [c for _, c in branches[:i]]
            value = _clamped(_clamped(value, [cond], True), earlier, False)
            out = f"np.where({self._print(cond)}, {self._branch(value)}, {out})"
        return out

    def _branch(self, value: sp.Expr) -> str:
        if value.is_number:
            self.helpers.add(DTYPE_NAME)
            return f"{DTYPE_NAME}({self._print(value)})"
        return self._print(value)

    def _print_Relational(self, expr: sp.core.relational.Relational) -> str:
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"{self._print(expr.lhs)} {op} {self._print(expr.rhs)}"

    def _print_Float(self, expr: sp.Float) -> str:
        return repr(float(expr))


for _row in FUNCTION_ROWS:
    # A method the class defines itself (log, for log1p) takes precedence over the row.
    if f"_print_{_row.name}" not in ChainrulePrinter.__dict__:
        setattr(ChainrulePrinter, f"_print_{_row.name}", ChainrulePrinter._print_row)


def _clamped(value: sp.Expr, conds: list[sp.Basic], holds: bool) -> sp.Expr:
    """``value`` with its variable clamped to where it is evaluated, when it could overflow.

    ``np.where`` evaluates every branch everywhere: the exp(z) - 1 branch of an ELU
    overflows at large positive z although it is not selected there. A branch that
    holds an ``exp`` is taken only where ``conds`` all hold (``holds``) or all fail;
    for a condition ``z > c`` (or ``>=``, ``<``, ``<=``) the symbol z is replaced by
    max(z, c) or min(z, c), which equals z wherever the branch is selected.
    """
    if not value.has(sp.exp):
        return value
    for cond in conds:
        if not isinstance(cond, sp.core.relational.Relational) or cond.rel_op == "!=":
            continue
        lhs, rhs = cond.lhs, cond.rhs
        if not (isinstance(lhs, sp.Symbol) and rhs.is_number and lhs in value.free_symbols):
            continue
        above = cond.rel_op in (">", ">=")
        if above == holds:
            value = value.xreplace({lhs: sp.Max(lhs, rhs, evaluate=False)})
        else:
            value = value.xreplace({lhs: sp.Min(lhs, rhs, evaluate=False)})
    return value


def print_expr(expr: sp.Expr, helpers: set[str] | None = None) -> str:
    """Print one expression; helper names it needs are added to ``helpers``."""
    printer = ChainrulePrinter()
    text = printer.doprint(expr)
    if helpers is not None:
        helpers.update(printer.helpers)
    return text


def _is_relu(expr: sp.Piecewise) -> bool:
    """Piecewise((e, e > 0), (0, True)), which is max(e, 0) exactly (0 at e = 0 either way)."""
    if len(expr.args) != 2:
        return False
    (value, cond), (rest, default) = expr.args
    return (
        default is sp.true
        and rest == 0
        and isinstance(cond, sp.StrictGreaterThan)
        and cond.lhs == value
        and cond.rhs == 0
    )


def indicator_condition(expr: sp.Expr) -> sp.Basic | None:
    """The condition c of Piecewise((1, c), (0, True)), an indicator; None otherwise.

    Multiplying by the boolean array of c is multiplying by the indicator, without
    the two constant arrays of ``np.where``.

    Examples
    --------
    >>> z = sp.Symbol("z1", real=True)
    >>> indicator_condition(sp.Piecewise((1, z > 0), (0, True)))
    z1 > 0
    """
    if not isinstance(expr, sp.Piecewise) or len(expr.args) != 2:
        return None
    (value, cond), (rest, default) = expr.args
    if value == 1 and rest == 0 and default is sp.true:
        return cond
    return None


#: NumPy comparison ufuncs by SymPy relational operator, for boolean masks written in place.
_COMPARISONS = {">": "greater", ">=": "greater_equal", "<": "less", "<=": "less_equal"}


def print_condition_into(cond: sp.Basic, out: str) -> str | None:
    """Print a comparison such as ``z1 > 0`` as a NumPy ufunc writing a boolean ``out``.

    Examples
    --------
    >>> z = sp.Symbol("z1", real=True)
    >>> print_condition_into(z > 0, "mask")
    'np.greater(z1, 0, out=mask)'
    """
    if not isinstance(cond, sp.core.relational.Relational) or cond.rel_op not in _COMPARISONS:
        return None
    printer = ChainrulePrinter()
    lhs, rhs = printer.doprint(cond.lhs), printer.doprint(cond.rhs)
    return f"np.{_COMPARISONS[cond.rel_op]}({lhs}, {rhs}, out={out})"


#: Gives the expression of a zeros array shaped like the output (registering it on first
#: use): ``np.maximum(z, 0)`` broadcasts a scalar, a path NumPy does not vectorize, while
#: ``np.maximum(z, zeros)`` with a full array runs 2-3 times faster.
ZerosBuffer = Callable[[], str]


def print_into(
    expr: sp.Expr, out: str, helpers: set[str] | None = None, zeros: ZerosBuffer | None = None
) -> str | None:
    """Print ``expr`` so that its outermost NumPy call writes into the array ``out``.

    Inner subexpressions print as :func:`print_expr` prints them; only the last
    operation gets ``out=``, so the result lands in a preallocated buffer. Returns
    None when ``expr`` is a bare symbol or a number (nothing to compute) or when its
    outermost operation has no ``out=`` form (``np.where``); print it with
    :func:`print_expr` then.

    Examples
    --------
    >>> a, y = sp.Symbol("a2", real=True), sp.Symbol("y", real=True)
    >>> print_into(a * (1 - a) * (a - y), 'ws["delta2"]')
    'np.multiply(a2*(1 - a2), a2 - y, out=ws["delta2"])'
    >>> print_into(sp.tanh(a), "buf")
    'np.tanh(a2, out=buf)'
    >>> print_into(sp.Piecewise((a, a > 0), (0, True)), "buf", zeros=lambda: "z0")
    'np.maximum(a2, z0, out=buf)'
    """
    printer = ChainrulePrinter()
    text = _into(printer, expr, out, zeros)
    if helpers is not None:
        helpers.update(printer.helpers)
    return text


def print_in_place(
    expr: sp.Expr,
    out: str,
    target: str,
    helpers: set[str] | None = None,
    zeros: ZerosBuffer | None = None,
) -> tuple[str, tuple[str, ...]] | None:
    """Like :func:`print_into`, but without temporaries where one factor or term is compound.

    Returns the first assignment's expression (writing into ``out``) and in-place
    updates of the variable ``target`` that finish the value: ``a1*(1 - a1)`` becomes
    ``np.subtract(1, a1, out=...)`` then ``sp1 *= a1``, one pass fewer and no
    temporary array. None when :func:`print_into` would return None.

    Examples
    --------
    >>> a = sp.Symbol("a1", real=True)
    >>> print_in_place(a * (1 - a), "buf", "sp1")
    ('np.subtract(1, a1, out=buf)', ('sp1 *= a1',))
    """
    printer = ChainrulePrinter()
    result = _in_place(printer, expr, out, target, zeros)
    if helpers is not None:
        helpers.update(printer.helpers)
    if result is None:
        return None
    code, updates = result
    return code, tuple(updates)


def _is_atom(expr: sp.Expr) -> bool:
    return isinstance(expr, sp.Symbol) or bool(expr.is_number)


def _signed_atom(term: sp.Expr) -> tuple[int, sp.Expr] | None:
    """(+1, t) or (-1, t) for an atom t or its negation; None for anything else."""
    if _is_atom(term):
        return (-1, -term) if term.is_number and term.is_negative else (1, term)
    coeff, rest = term.as_coeff_Mul()
    if coeff == -1 and isinstance(rest, sp.Symbol):
        return -1, rest
    return None


def _in_place(
    printer: ChainrulePrinter,
    expr: sp.Expr,
    out: str,
    target: str,
    zeros: ZerosBuffer | None = None,
) -> tuple[str, list[str]] | None:
    p = printer.doprint
    if isinstance(expr, sp.Mul):
        compound = [f for f in expr.args if not _is_atom(f)]
        if len(compound) == 1 and len(expr.args) > 1:
            inner = _in_place(printer, compound[0], out, target, zeros)
            if inner is not None:
                code, updates = inner
                rest = [f for f in expr.args if f is not compound[0]]
                return code, updates + [f"{target} *= {format_expr(p(f))}" for f in rest]
    if isinstance(expr, sp.Add):
        signed = [_signed_atom(t) for t in expr.args]
        compound = [t for t, s in zip(expr.args, signed, strict=True) if s is None]
        if len(compound) == 1 and len(expr.args) > 1:
            # atom - c is computed as c, then one subtraction from the atom: no negation pass.
            negated = compound[0].as_coeff_Mul()[0] == -1
            inner = _in_place(printer, -compound[0] if negated else compound[0], out, target, zeros)
            if inner is not None:
                code, updates = inner
                atoms = [pair for pair in signed if pair is not None]
                if negated:
                    first = next((pair for pair in atoms if pair[0] > 0), None)
                    if first is None:
                        updates = updates + [f"np.negative({target}, out={target})"]
                    else:
                        atoms.remove(first)
                        left = format_expr(p(first[1]))
                        updates = updates + [f"np.subtract({left}, {target}, out={target})"]
                for sign, atom in atoms:
                    op = "+=" if sign > 0 else "-="
                    updates = updates + [f"{target} {op} {format_expr(p(atom))}"]
                return code, updates
    code = _into(printer, expr, out, zeros)
    return None if code is None else (format_expr(code), [])


def _into(
    printer: ChainrulePrinter, expr: sp.Expr, out: str, zeros: ZerosBuffer | None = None
) -> str | None:
    p = printer.doprint
    if isinstance(expr, sp.Symbol) or expr.is_number:
        return None
    if isinstance(expr, sp.Mul):
        numer, denom = [], []
        for factor in expr.args:
            base, exp = factor.as_base_exp()
            if exp.is_number and exp.is_negative and not factor.is_number:
                denom.append(base ** (-exp))
            else:
                numer.append(factor)
        if denom:
            return f"np.divide({p(sp.Mul(*numer))}, {p(sp.Mul(*denom))}, out={out})"
        *rest, last = expr.args
        return f"np.multiply({p(sp.Mul(*rest))}, {p(last)}, out={out})"
    if isinstance(expr, sp.Add):
        *rest, last = expr.args
        coeff, _ = last.as_coeff_Mul()
        if coeff.is_negative:
            return f"np.subtract({p(sp.Add(*rest))}, {p(-last)}, out={out})"
        return f"np.add({p(sp.Add(*rest))}, {p(last)}, out={out})"
    if isinstance(expr, sp.Pow):
        base, exp = expr.args
        if exp == 2:
            return f"np.square({p(base)}, out={out})"
        if exp == -1:
            return f"np.divide(1, {p(base)}, out={out})"
        if exp == sp.Rational(1, 2):
            return f"np.sqrt({p(base)}, out={out})"
        return f"np.power({p(base)}, {p(exp)}, out={out})"
    if isinstance(expr, sp.log):
        arg = expr.args[0]
        if isinstance(arg, sp.Add) and arg.as_coeff_add()[0] == 1:
            return f"np.log1p({p(sp.Add(*arg.as_coeff_add()[1]))}, out={out})"
        return f"np.log({p(arg)}, out={out})"
    if isinstance(expr, sp.Piecewise) and _is_relu(expr):
        zero = "0" if zeros is None else zeros()
        return f"np.maximum({p(expr.args[0][0])}, {zero}, out={out})"
    row = FUNCTIONS_BY_CLASS.get(type(expr))
    if row is not None and row.numpy_out is not None:
        if row.helper is not None:
            printer.helpers.add(row.helper)
        return row.numpy_out.format(p(expr.args[0]), out=out)
    # Anything else (np.where, say) has no out= form: the caller assigns a new array.
    return None
