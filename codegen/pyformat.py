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


#: ruff format's default line length: a generated line longer than this is laid out anew.
LINE_LENGTH = 88


def _fits(*lines: str) -> bool:
    return all(len(line) <= LINE_LENGTH for line in lines)


def exploded(items: list[str] | tuple[str, ...], indent: int, last: str = "") -> str:
    """``(``, one item a line with its trailing comma (ruff's magic comma), then ``)``.

    ``indent`` is the indentation level of the line the bracket opens on; ``last`` follows
    the closing bracket.

    Examples
    --------
    >>> print(exploded(["a", "b"], 0, " = f()"))
    (
        a,
        b,
    ) = f()
    """
    pad = "    " * (indent + 1)
    return "(\n" + "".join(f"{pad}{item},\n" for item in items) + "    " * indent + ")" + last


def tuple_layout(items: list[str] | tuple[str, ...], lead: str, indent: int = 0) -> str:
    """A parenthesized tuple after ``lead`` (``FORWARD_VALUES = ``) as ruff lays it out: on
    its line when that fits, else one item a line. Returns the text after ``lead``.

    Examples
    --------
    >>> tuple_layout(['"z1"', '"a1"'], "FORWARD_VALUES = ")
    '("z1", "a1")'
    """
    flat = f"({items[0]},)" if len(items) == 1 else "(" + ", ".join(items) + ")"
    if _fits("    " * indent + lead + flat):
        return flat
    return exploded(items, indent)


def return_layout(names: list[str] | tuple[str, ...], indent: int = 1) -> str:
    """The text after ``return `` for a tuple of ``names``: bare on the line when it fits,
    else parenthesized one name a line, as ruff does.

    Examples
    --------
    >>> return_layout(["z1", "a1"])
    'z1, a1'
    """
    flat = ", ".join(names)
    if len(names) == 1 or _fits("    " * indent + "return " + flat):
        return flat
    return exploded(names, indent)


def unpack_layout(targets: str, function: str, *args: str, indent: int = 1) -> str:
    """``targets = function(args)`` as ruff lays it out, for a tuple of short targets and a
    call with short arguments: on one line; else the call's arguments on a line of their
    own; else the call parenthesized on a line of its own; else one target a line.

    Examples
    --------
    >>> unpack_layout("_, a1", "_forward", "params", "x")
    '_, a1 = _forward(params, x)'
    """
    pad = "    " * indent
    inner = pad + "    "
    arguments = ", ".join(args)
    call = f"{function}({arguments})"
    if _fits(f"{pad}{targets} = {call}"):
        return f"{targets} = {call}"
    if _fits(f"{pad}{targets} = {function}(", inner + arguments):
        return f"{targets} = {function}(\n{inner}{arguments}\n{pad})"
    if _fits(f"{pad}{targets} = (", inner + call):
        return f"{targets} = (\n{inner}{call}\n{pad})"
    return exploded(targets.split(", "), indent, f" = {call}")


def _level(op: ast.operator) -> object:
    """The precedence of a binary operator, as ast's unparser ranks it."""
    return _RuffStyleUnparser.binop_precedence[_RuffStyleUnparser.binop[type(op).__name__]]


def _operator_chain(node: ast.expr) -> list[ast.expr | ast.operator]:
    """The operands and operators of a left-nested run of binary operators of one
    precedence (``a * b / c``): ruff breaks such a run before each operator."""
    if not isinstance(node, ast.BinOp):
        return [node]
    left = node.left
    # A left operand in parentheses starts after the run's first character: it stays whole.
    same = (
        isinstance(left, ast.BinOp)
        and left.col_offset == node.col_offset
        and _level(left.op) == _level(node.op)
        and not isinstance(node.op, ast.Pow)
    )
    head = _operator_chain(left) if same else [left]
    return [*head, node.op, node.right]


def _call_layout(target: str, code: str, node: ast.Call, indent: int) -> str:
    """``target = f(args)`` past the line length: the arguments on a line of their own
    when that fits, else one a line with a trailing comma; the call parenthesized on a
    line of its own when even ``target = f(`` is too long."""
    pad = "    " * indent
    inner = pad + "    "
    parts = sorted([*node.args, *node.keywords], key=lambda n: (n.lineno, n.col_offset))
    head = code[: node.func.end_col_offset] + "("
    if not (parts and code.endswith(")") and code[len(head) - 1] == "("):
        return code  # not a plain f(...) call: left as it is
    arguments = [code[p.col_offset : p.end_col_offset] for p in parts]
    if not _fits(f"{pad}{target} = {head}"):
        return f"(\n{inner}{code}\n{pad})" if _fits(inner + code) else code
    if _fits(inner + ", ".join(arguments)):
        return f"{head}\n{inner}{', '.join(arguments)}\n{pad})"
    return head + "\n" + "".join(f"{inner}{a},\n" for a in arguments) + pad + ")"


def assignment_layout(target: str, code: str, indent: int = 1) -> str:
    """The text after ``target = `` for the expression ``code`` (one line, laid out by
    :func:`format_expr`), as ruff lays out a statement past :data:`LINE_LENGTH`: an
    expression that is not a call is parenthesized on a line of its own, and broken
    before each operator of its outermost run of binary operators when it is still
    too long; a call has its arguments on a line of their own, or one a line (see
    :func:`_call_layout`). A line that fits is left as it is.

    Examples
    --------
    >>> assignment_layout("d", "a * b")
    'a * b'
    >>> print(assignment_layout("delta", "x" * 38 + " * " + "y" * 38))
    (
            xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx * yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy
        )
    >>> print(assignment_layout("delta", "x" * 40 + " * " + "y" * 40))
    (
            xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
            * yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy
        )
    """
    pad = "    " * indent
    inner = pad + "    "
    if "\n" in code or _fits(f"{pad}{target} = {code}"):
        return code
    node = ast.parse(code, mode="eval").body
    if isinstance(node, ast.Call):
        return _call_layout(target, code, node, indent)
    if _fits(inner + code):
        return f"(\n{inner}{code}\n{pad})"
    lines = []
    for part in _operator_chain(node):
        if isinstance(part, ast.operator):
            operator = _RuffStyleUnparser.binop[type(part).__name__]
            continue
        # An operand the parser read inside parentheses keeps them.
        start, end = part.col_offset, part.end_col_offset
        while start > 0 and code[start - 1] == "(" and end < len(code) and code[end] == ")":
            start, end = start - 1, end + 1
        text = code[start:end]
        lines.append(f"{inner}{text}" if not lines else f"{inner}{operator} {text}")
    return "(\n" + "\n".join(lines) + f"\n{pad})"
