"""Operation counts: the one definition every comparison in chainrule uses.

An *operation* is one arithmetic step or one function call in SymPy's canonical
tree of an expression:

* an ``Add`` of n terms is n - 1 additions or subtractions (``a - b``, stored as
  ``a + (-1)*b``, is one subtraction), a ``Mul`` of n factors is n - 1
  multiplications or divisions (``a/b``, stored as ``a*b**-1``, is one division;
  a lone ``-x`` is one negation), a ``Pow`` is one operation (``1/x`` and ``x**2``);
* a function call (``exp``, ``log``, ``sigmoid``, ``tanh``, ...) is one operation;
  a relation (``z > 0``) is one, a ``Piecewise`` of n branches is n - 1 selections;
* symbols and numbers are free.

Two ways to add these up, and they are the whole point of the naive-versus-memoized
comparison:

* :func:`tree_ops` counts the expression *as a tree*: a subexpression that occurs
  twice is computed twice. This is the cost of evaluating a fully expanded
  chain-rule expression with nothing shared (the ``naive`` strategy).
* :func:`program_ops` counts a *straight-line program* (assignments whose right-hand
  sides use earlier targets as plain symbols): each statement is counted once, as a
  tree. This is the cost after sharing (the ``cse`` and ``backprop`` strategies, and
  ``forward_ops`` of the forward pass and cost).

Both are computed in time proportional to the number of *distinct* subexpressions,
so counting a tree of 10^12 operations takes as long as building it did.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sympy as sp

__all__ = ["own_ops", "tree_ops", "tree_ops_many", "program_ops"]


def own_ops(expr: sp.Basic) -> int:
    """Operations of the top node of ``expr`` alone (its arguments not included).

    Examples
    --------
    >>> x, y, z = sp.symbols("x y z")
    >>> own_ops(x + y + z), own_ops(x * y), own_ops(sp.exp(x)), own_ops(x)
    (2, 1, 1, 0)
    """
    if not expr.args or isinstance(expr, sp.Number):
        return 0
    if isinstance(expr, sp.Add):
        # a + (-1)*b is one subtraction: the negation inside the term is absorbed.
        return len(expr.args) - 1 - sum(1 for t in expr.args if _is_negated(t))
    if isinstance(expr, sp.Mul):
        # a * b**-1 is one division: the reciprocal inside the factor is absorbed.
        return len(expr.args) - 1 - sum(1 for f in expr.args if _is_reciprocal(f))
    if isinstance(expr, sp.Piecewise):
        return len(expr.args) - 1
    if isinstance(expr, sp.logic.boolalg.BooleanAtom):
        return 0
    if isinstance(expr, sp.core.containers.Tuple):
        return 0
    if isinstance(expr, sp.functions.elementary.piecewise.ExprCondPair):
        return 0
    return 1


def _is_negated(term: sp.Basic) -> bool:
    return isinstance(term, sp.Mul) and term.args[0] == -1


def _is_reciprocal(factor: sp.Basic) -> bool:
    return isinstance(factor, sp.Pow) and factor.args[1] == -1


def _children(expr: sp.Basic) -> tuple[sp.Basic, ...]:
    return expr.args if not isinstance(expr, sp.Number) else ()


def tree_ops_many(exprs: Iterable[sp.Basic], memo: dict | None = None) -> list[int]:
    """:func:`tree_ops` of each expression, sharing one memo (distinct nodes visited once)."""
    memo = {} if memo is None else memo
    out = []
    for root in exprs:
        if root in memo:
            out.append(memo[root])
            continue
        stack: list[tuple[sp.Basic, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node in memo:
                continue
            kids = _children(node)
            if expanded or not kids:
                memo[node] = own_ops(node) + sum(memo[k] for k in kids)
                continue
            stack.append((node, True))
            stack.extend((k, False) for k in kids if k not in memo)
        out.append(memo[root])
    return out


def tree_ops(expr: sp.Basic, memo: dict | None = None) -> int:
    """Operations to evaluate ``expr`` as a tree, nothing shared.

    Examples
    --------
    >>> x = sp.Symbol("x")
    >>> e = sp.exp(x + 1)
    >>> tree_ops(e * (e + 2))  # exp(x + 1) is counted twice: 2 * 2 + 1 + 1
    6
    """
    return tree_ops_many([expr], memo)[0]


def program_ops(statements: Sequence[tuple[sp.Basic, int]], memo: dict | None = None) -> int:
    """Operations of a straight-line program given as (right-hand side, repeat count) pairs.

    Each right-hand side refers to earlier results as symbols, so it is counted as a
    tree; ``count`` lets one representative statement stand for ``count`` identical
    ones (layer-level counting of wide networks).

    Examples
    --------
    >>> t, x = sp.symbols("t x")
    >>> program_ops([(sp.exp(x + 1), 1), (t * (t + 2), 1)])  # t = exp(x + 1) is shared
    4
    """
    memo = {} if memo is None else memo
    exprs = [expr for expr, _ in statements]
    counts = tree_ops_many(exprs, memo)
    return sum(c * n for c, (_, n) in zip(counts, statements, strict=True))
