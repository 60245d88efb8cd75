"""Lay out printed Python expressions the way ``ruff format`` does.

The printer's output is parsed with :mod:`ast` and written back by an unparser
that puts spaces around binary operators and hugs ``**`` when both operands are
simple (a name, a number or an attribute, optionally negated), as ruff and black
do. Parsing also proves every printed expression is valid Python.
"""

from __future__ import annotations

import ast


def _is_simple_power_operand(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


class _RuffStyleUnparser(ast._Unparser):  # type: ignore[name-defined]
    """ast's unparser with ruff's spacing around ``**``."""

    def visit_BinOp(self, node: ast.BinOp) -> None:  # noqa: N802 - ast visitor name
        if not isinstance(node.op, ast.Pow):
            super().visit_BinOp(node)
            return
        if not (_is_simple_power_operand(node.left) and _is_simple_power_operand(node.right)):
            super().visit_BinOp(node)
            return
        precedence = self.binop_precedence["**"]
        with self.require_parens(precedence, node):
            self.set_precedence(precedence.next(), node.left)
            self.traverse(node.left)
            self.write("**")
            self.set_precedence(precedence, node.right)
            self.traverse(node.right)


def format_expr(code: str) -> str:
    """Re-emit one Python expression in ruff's layout.

    Examples
    --------
    >>> format_expr("a2*(1 - a2)*(a2 - y)**2")
    'a2 * (1 - a2) * (a2 - y) ** 2'
    >>> format_expr("(1/2)*a2**2")
    '1 / 2 * a2**2'
    """
    tree = ast.parse(code, mode="eval")
    return _RuffStyleUnparser().visit(tree.body)
