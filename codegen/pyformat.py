"""Lay out printed Python expressions the way ``ruff format`` does.

The printer's output is parsed with :mod:`ast` and written back by an unparser
that puts spaces around binary operators and hugs ``**`` when both operands are
simple (a name, a number or an attribute, optionally negated), as ruff and black
do. Parsing also proves every printed expression is valid Python.
"""

from __future__ import annotations

import ast


def _is_simple_power_operand(node: ast.expr) -> bool:
    # A unary operand is always printed in parentheses here (``(-a) ** 2``,
    # ``a ** (-1)``), and ruff does not hug a parenthesized operand.
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


class _RuffStyleUnparser(ast._Unparser):  # type: ignore[name-defined]
    """ast's unparser with ruff's spacing around ``**``, its ``-(a**2)`` and its quotes."""

    def _write_constant(self, value: object) -> None:
        if isinstance(value, str) and value.isidentifier():
            self.write(f'"{value}"')  # keys such as ws["z1"]: ruff's double quotes
            return
        super()._write_constant(value)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:  # noqa: N802 - ast visitor name
        if not (isinstance(node.operand, ast.BinOp) and isinstance(node.operand.op, ast.Pow)):
            super().visit_UnaryOp(node)
            return
        # ruff parenthesizes a power under a unary operator: -(z**2), not -z**2.
        operator = self.unop[node.op.__class__.__name__]
        precedence = self.unop_precedence[operator]
        with self.require_parens(precedence, node):
            self.write(operator if operator != "not" else "not ")
            self.set_precedence(ast._Precedence.ATOM, node.operand)  # type: ignore[attr-defined]
            self.traverse(node.operand)

    def visit_BinOp(self, node: ast.BinOp) -> None:  # noqa: N802 - ast visitor name
        if not isinstance(node.op, ast.Pow):
            super().visit_BinOp(node)
            return
        hug = _is_simple_power_operand(node.left) and _is_simple_power_operand(node.right)
        # ruff reads an unparenthesized chain a**b**c as one run of operands; a nested
        # exponent keeps its parentheses instead (x ** (y**z), as SymPy writes it).
        nested = isinstance(node.right, ast.BinOp) and isinstance(node.right.op, ast.Pow)
        precedence = self.binop_precedence["**"]
        with self.require_parens(precedence, node):
            self.set_precedence(precedence.next(), node.left)
            self.traverse(node.left)
            self.write("**" if hug else " ** ")
            self.set_precedence(
                ast._Precedence.ATOM if nested else precedence,  # type: ignore[attr-defined]
                node.right,
            )
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
