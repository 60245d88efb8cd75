"""The program builder: a derivation becomes an ordered list of NumPy statements.

Each :class:`Statement` holds its target, the operation, its operands, the SymPy
expression it prints (for elementwise operations), the equation it implements and
its label (forward, cost, BP1..BP4). The builder decides the statement order and
the array layout; the math inside every elementwise statement comes from
:mod:`derive.layers`. The structure itself (z = W a + b, W^T delta, delta a^T) is
the chain rule applied to a dense layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from codegen.printer import print_expr
from derive import naming
from derive.layers import LOGP, A, NetworkDerivation, Y, Z
from derive.spec import Spec


@dataclass(frozen=True)
class Statement:
    """One line of generated code: ``target = <code>``.

    ``op`` is one of ``alias``, ``affine``, ``map``, ``log_softmax``, ``unit_sum``,
    ``backprop``, ``outer``, ``example_sum``, ``loss``; ``operands`` are identifiers;
    ``expr`` is the elementwise SymPy expression for ``map``, ``unit_sum`` and ``loss``.
    """

    target: str
    op: str
    operands: tuple[str, ...]
    expr: sp.Expr | None
    code: str
    equation: str
    label: str


@dataclass(frozen=True)
class Program:
    """The statements of a module, split into forward, cost and backward parts."""

    spec: Spec
    forward: tuple[Statement, ...]
    cost: Statement
    backward: tuple[Statement, ...]
    cache: tuple[str, ...]  # forward values returned by _forward, in order
    output: str  # identifier of a^L
    params: tuple[str, ...]
    grads: tuple[tuple[str, str], ...]  # (param, gradient identifier)
    helpers: frozenset[str]
    kink_layers: tuple[int, ...]
    assumptions: tuple[str, ...]


def _sym(name: str) -> sp.Symbol:
    return naming.symbol(name)


class _Builder:
    def __init__(self, derivation: NetworkDerivation) -> None:
        self.derivation = derivation
        self.spec = derivation.spec
        self.rows = self.spec.layout == "rows"
        self.units_axis = 1 if self.rows else 0
        self.examples_axis = 0 if self.rows else 1
        self.helpers: set[str] = set()

    def map(self, target: str, expr: sp.Expr, equation: str, label: str) -> Statement:
        code = print_expr(expr, self.helpers)
        operands = tuple(sorted(s.name for s in expr.free_symbols))
        return Statement(target, "map", operands, expr, code, equation, label)

    def layer_symbols(self, layer: int) -> dict[sp.Symbol, sp.Symbol]:
        return {
            Z: _sym(naming.weighted_input(layer)),
            A: _sym(naming.activation(layer)),
            Y: _sym(naming.TARGET),
            LOGP: _sym(naming.log_output(layer)),
        }

    def forward(self) -> tuple[list[Statement], list[str]]:
        out: list[Statement] = []
        cache: list[str] = []
        a0 = naming.activation(0)
        out.append(
            Statement(
                a0,
                "alias",
                (naming.INPUT,),
                None,
                naming.INPUT,
                f"a^0 = x, the input ({self._shape_words(0)})",
                "forward",
            )
        )
        for index, layer in enumerate(self.spec.layers, start=1):
            w, b = naming.weight(index), naming.bias(index)
            prev, z, a = (
                naming.activation(index - 1),
                naming.weighted_input(index),
                naming.activation(index),
            )
            product = f"{prev} @ {w}" if self.rows else f"{w} @ {prev}"
            code = f"{product} + {b}" if layer.bias else product
            wa = f"{prev} W^{index}" if self.rows else f"W^{index} {prev}"
            eq = f"z^{index} = {wa}" + (f" + b^{index}" if layer.bias else "")
            operands = (w, prev, b) if layer.bias else (w, prev)
            out.append(Statement(z, "affine", operands, None, code, eq, "forward"))
            cache.append(z)
            act = self.derivation.activations[index - 1]
            if act is None:
                logp = naming.log_output(index)
                self.helpers.add("_log_softmax")
                out.append(
                    Statement(
                        logp,
                        "log_softmax",
                        (z,),
                        None,
                        f"_log_softmax({z}, axis={self.units_axis})",
                        f"log a^{index} = z^{index} - log sum_k exp(z^{index}_k)",
                        "forward",
                    )
                )
                out.append(
                    self.map(
                        a,
                        sp.exp(_sym(logp)),
                        f"a^{index} = softmax(z^{index}) = exp(log a^{index})",
                        "forward",
                    )
                )
                cache.extend([logp, a])
            else:
                expr = act.forward.subs(self.layer_symbols(index))
                # Only table names and SymPy's own printing of a parsed expression reach
                # a comment; the user's text never does.
                eq = (
                    f"a^{index} = {layer.activation}(z^{index}) = {expr}"
                    if not layer.is_custom
                    else f"a^{index} = {expr}"
                )
                out.append(self.map(a, expr, eq, "forward"))
                cache.append(a)
        return out, cache

    def _shape_words(self, layer: int) -> str:
        n = f"n{layer}"
        return f"shape (m, {n})" if self.rows else f"shape ({n}, m)"

    def cost(self) -> Statement:
        big_l = self.spec.depth
        expr = self.derivation.output.loss_element.subs(self.layer_symbols(big_l))
        body = print_expr(expr, self.helpers)
        code = f"np.sum({body}) / {naming.BATCH}"
        return Statement(
            naming.COST,
            "loss",
            (),
            expr,
            code,
            f"C = (1/m) sum over examples and units of {expr}",
            "cost",
        )

    def backward(self) -> tuple[list[Statement], list[tuple[str, str]]]:
        out: list[Statement] = []
        grads: list[tuple[str, str]] = []
        big_l = self.spec.depth
        output = self.derivation.output
        symbols = self.layer_symbols(big_l)
        delta_l = naming.delta(big_l)
        dc_da = output.dcost_da.subs(symbols)
        if output.softmax is None:
            expr = output.delta.subs(symbols)
            out.append(
                self.map(
                    delta_l,
                    expr,
                    f"delta^{big_l} = dC/da^{big_l} * sigma'(z^{big_l}) "
                    f"= ({dc_da}) * sigma'(z^{big_l}) = {expr}",
                    "BP1",
                )
            )
        else:
            jvp = output.softmax
            if jvp.summand_total is not None:
                expr = jvp.elementwise.subs(symbols)
                out.append(
                    self.map(
                        delta_l,
                        expr,
                        f"delta^{big_l} = J_softmax^T dC/da^{big_l} with "
                        f"dC/da = {dc_da}; sum_j y_j = 1 gives {expr}",
                        "BP1",
                    )
                )
            else:
                s = naming.unit_sum(big_l)
                summand = jvp.summand.subs(symbols)
                body = print_expr(summand, self.helpers)
                out.append(
                    Statement(
                        s,
                        "unit_sum",
                        tuple(sorted(v.name for v in summand.free_symbols)),
                        summand,
                        f"np.sum({body}, axis={self.units_axis}, keepdims=True)",
                        f"s = sum over units k of {summand}",
                        "BP1",
                    )
                )
                expr = (jvp.elementwise + jvp.scale * sp.Symbol("_S")).subs(symbols)
                expr = expr.subs(sp.Symbol("_S"), _sym(s))
                out.append(
                    self.map(
                        delta_l,
                        expr,
                        f"delta^{big_l} = J_softmax^T dC/da^{big_l} with dC/da = {dc_da}: {expr}",
                        "BP1",
                    )
                )
        for index in range(big_l, 0, -1):
            delta = naming.delta(index)
            if index < big_l:
                upper = naming.delta(index + 1)
                w_up = naming.weight(index + 1)
                back = f"{upper} @ {w_up}.T" if self.rows else f"{w_up}.T @ {upper}"
                act = self.derivation.activations[index - 1]
                cached = act.cached.subs(self.layer_symbols(index))
                derivative = act.derivative.subs(Z, _sym(naming.weighted_input(index)))
                sp_name = naming.sigma_prime(index)
                if cached == 1:
                    code = back
                    eq = f"delta^{index} = (W^{index + 1})^T delta^{index + 1} (sigma' = 1)"
                    operands: tuple[str, ...] = (w_up, upper)
                else:
                    out.append(
                        self.map(
                            sp_name,
                            cached,
                            f"sigma'(z^{index}) = {derivative} = {cached}",
                            "BP2",
                        )
                    )
                    code = f"({back}) * {sp_name}"
                    eq = (
                        f"delta^{index} = ((W^{index + 1})^T delta^{index + 1}) "
                        f"(.) sigma'(z^{index})"
                    )
                    operands = (w_up, upper, sp_name)
                out.append(Statement(delta, "backprop", operands, None, code, eq, "BP2"))
            prev = naming.activation(index - 1)
            w = naming.weight(index)
            g_w = naming.grad(w)
            code = f"{prev}.T @ {delta} / m" if self.rows else f"{delta} @ {prev}.T / m"
            out.append(
                Statement(
                    g_w,
                    "outer",
                    (delta, prev),
                    None,
                    code,
                    f"dC/dW^{index} = (1/m) delta^{index} (a^{index - 1})^T",
                    "BP4",
                )
            )
            grads.append((w, g_w))
            if self.spec.layers[index - 1].bias:
                b = naming.bias(index)
                g_b = naming.grad(b)
                code = f"np.sum({delta}, axis={self.examples_axis}, keepdims=True) / m"
                out.append(
                    Statement(
                        g_b,
                        "example_sum",
                        (delta,),
                        None,
                        code,
                        f"dC/db^{index} = (1/m) sum over examples of delta^{index}",
                        "BP3",
                    )
                )
                grads.append((b, g_b))
        return out, grads


def build_program(derivation: NetworkDerivation) -> Program:
    """Order the derived expressions into forward, cost and backward statements."""
    builder = _Builder(derivation)
    forward, cache = builder.forward()
    cost = builder.cost()
    backward, grads = builder.backward()
    spec = derivation.spec
    params: list[str] = []
    for index, layer in enumerate(spec.layers, start=1):
        params.append(naming.weight(index))
        if layer.bias:
            params.append(naming.bias(index))
    kinks = tuple(
        index
        for index, act in enumerate(derivation.activations, start=1)
        if act is not None and act.derivative.has(sp.Piecewise)
    )
    order = {p: i for i, p in enumerate(params)}
    return Program(
        spec=spec,
        forward=tuple(forward),
        cost=cost,
        backward=tuple(backward),
        cache=tuple(cache),
        output=naming.activation(spec.depth),
        params=tuple(params),
        grads=tuple(sorted(grads, key=lambda pair: order[pair[0]])),
        helpers=frozenset(builder.helpers),
        kink_layers=kinks,
        assumptions=derivation.assumptions,
    )
