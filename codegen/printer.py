"""The NumPy printer: SymPy expressions to NumPy source, via ``_print_X`` overrides.

Output changes only through printer methods and name tables, never by editing
printed strings. Every name comes from the expression's symbols (named by
:mod:`derive.naming`) or from this module's tables of NumPy functions and the
generated module's own helpers (``_sigmoid``, ``_DT``).
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.numpy import NumPyPrinter

from derive.functions import sigmoid, softplus

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

    def _print_sigmoid(self, expr: sigmoid) -> str:
        self.helpers.add("_sigmoid")
        return f"_sigmoid({self._print(expr.args[0])})"

    def _print_softplus(self, expr: softplus) -> str:
        return f"np.logaddexp(0, {self._print(expr.args[0])})"

    def _print_log(self, expr: sp.log) -> str:
        arg = expr.args[0]
        if isinstance(arg, sp.Add) and arg.as_coeff_add()[0] == 1:
            rest = sp.Add(*arg.as_coeff_add()[1])
            return f"np.log1p({self._print(rest)})"
        return f"np.log({self._print(arg)})"

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        # Nested np.where; constant branches are cast to the module dtype so that
        # float32 stays float32. A final branch must be unconditional.
        *branches, (last_value, last_cond) = expr.args
        if last_cond is not sp.true:
            raise ValueError("Piecewise without a default branch cannot be printed")
        out = self._branch(last_value)
        for value, cond in reversed(branches):
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


def print_expr(expr: sp.Expr, helpers: set[str] | None = None) -> str:
    """Print one expression; helper names it needs are added to ``helpers``."""
    printer = ChainrulePrinter()
    text = printer.doprint(expr)
    if helpers is not None:
        helpers.update(printer.helpers)
    return text
