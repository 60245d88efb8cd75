"""The program builder: a derivation becomes an ordered list of NumPy statements.

Each :class:`Statement` holds its target, the operation, its operands, the SymPy
expression it prints (for elementwise operations), the equation it implements and
its label (forward, cost, BP1..BP4). The builder decides the statement order and
the array layout; the math inside every elementwise statement comes from
:mod:`chainrule.derive.layers`. The structure itself (z = W a + b, W^T delta, delta a^T) is
the chain rule applied to a dense layer.

``op``, ``operands`` and ``expr`` state the math of a statement; ``code`` is how the
module computes it fast: matrix products and elementwise results are written into
preallocated work buffers (``ws[...]``, see :data:`Program.buffers`) with ``out=``,
follow-up in-place updates sit in ``updates``, and the 1/m of the cost's mean over
examples is applied once, to delta^L, instead of once per gradient (so BP3/BP4 code
has no division). The equation comments say so wherever the code differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from chainrule.codegen.printer import (
    indicator_condition,
    print_condition_into,
    print_expr,
    print_in_place,
)
from chainrule.derive import naming
from chainrule.derive.layers import LOG1MP, LOGP, REST, UNIT_SUM, A, NetworkDerivation, Y, Z
from chainrule.derive.spec import Spec


@dataclass(frozen=True)
class Statement:
    """One line of generated code: ``target = <code>``.

    ``op`` is one of ``alias``, ``affine``, ``map``, ``log_softmax``, ``log1m_softmax``,
    ``unit_sum``, ``other_units``, ``backprop``, ``outer``, ``example_sum``, ``loss``;
    ``operands`` are identifiers; ``expr`` is the elementwise SymPy expression for
    ``map``, ``unit_sum``, ``loss`` and (the weights v_k) ``other_units``.
    ``buffer`` names the work buffer the code writes into (None: a new array or an
    alias); ``updates`` are in-place statements that complete the value after ``code``.
    """

    target: str
    op: str
    operands: tuple[str, ...]
    expr: sp.Expr | None
    code: str
    equation: str
    label: str
    buffer: str | None = None
    updates: tuple[str, ...] = ()


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
    #: Work buffers (name, shape code in ``m``, "zeros" or "ones", "dtype" or "bool") that the
    #: statements write into.
    buffers: tuple[tuple[str, str, str, str], ...] = ()


def _sym(name: str) -> sp.Symbol:
    return naming.symbol(name)


#: Work-buffer key of the column (or row) of m ones that sums over examples by a product.
ONES = "ones"
#: Work-buffer key prefix of the zeros arrays, one per layer width, that ReLU compares with.
ZEROS = "zeros"


def buffer_ref(name: str) -> str:
    """The generated expression of a work buffer, e.g. ``ws["z1"]``."""
    return f'ws["{name}"]'


def gradient_ref(param: str) -> str:
    """The generated expression of the array a parameter's gradient is written into."""
    return f'out["{param}"]'


class _Builder:
    def __init__(self, derivation: NetworkDerivation) -> None:
        self.derivation = derivation
        self.spec = derivation.spec
        self.rows = self.spec.layout == "rows"
        self.units_axis = 1 if self.rows else 0
        self.examples_axis = 0 if self.rows else 1
        self.helpers: set[str] = set()
        self.buffers: list[tuple[str, str, str, str]] = []

    def buffer(self, name: str, units: int, dtype: str = "dtype") -> str:
        """Register a work buffer of ``units`` rows (columns in the rows layout)."""
        shape = f"(m, {units})" if self.rows else f"({units}, m)"
        self.buffers.append((name, shape, "zeros", dtype))
        return buffer_ref(name)

    def zeros(self, units: int) -> str:
        """A work buffer of zeros shaped like a layer of ``units`` units, made once per width.

        ReLU is ``np.maximum(z, zeros)``: against a whole array NumPy's maximum runs in its
        vectorized loop, against the scalar 0 it does not (2-3 times slower). Nothing
        writes into it, so it stays zero.
        """
        name = f"{ZEROS}{units}"
        if all(existing != name for existing, *_ in self.buffers):
            shape = f"(m, {units})" if self.rows else f"({units}, m)"
            self.buffers.append((name, shape, "zeros", "dtype"))
        return buffer_ref(name)

    def gradient_buffer(self, param: str, rows: int, cols: int) -> None:
        """Register sgd_step's array for the gradient of ``param`` (shape rows x cols).

        It sits in the work buffers under the parameter's own name, so that sgd_step can
        pass its workspace as loss_and_grad's ``out``; loss_and_grad without ``out``
        never writes into it.
        """
        self.buffers.append((param, f"({rows}, {cols})", "zeros", "dtype"))

    def units(self, name: str) -> int:
        """Number of units of the layer a per-layer identifier such as ``delta2`` belongs to.

        The layer is the identifier's trailing number (``log1ma2`` is layer 2).
        """
        digits = name[len(name.rstrip("0123456789")) :]
        return self.spec.sizes[int(digits)]

    def map(
        self,
        target: str,
        expr: sp.Expr,
        equation: str,
        label: str,
        code_expr: sp.Expr | None = None,
    ) -> Statement:
        """An elementwise statement; ``code_expr`` (default ``expr``) is what the code computes."""
        operands = tuple(sorted(s.name for s in expr.free_symbols))
        computed = expr if code_expr is None else code_expr
        units = self.units(target)
        into = print_in_place(
            computed, buffer_ref(target), target, self.helpers, zeros=lambda: self.zeros(units)
        )
        if into is None:
            code = print_expr(computed, self.helpers)
            return Statement(target, "map", operands, expr, code, equation, label)
        self.buffer(target, units)
        code, updates = into
        return Statement(target, "map", operands, expr, code, equation, label, target, updates)

    def layer_symbols(self, layer: int) -> dict[sp.Symbol, sp.Symbol]:
        return {
            Z: _sym(naming.weighted_input(layer)),
            A: _sym(naming.activation(layer)),
            Y: _sym(naming.TARGET),
            LOGP: _sym(naming.log_output(layer)),
            LOG1MP: _sym(naming.log_complement(layer)),
            REST: _sym(naming.other_units(layer)),
            UNIT_SUM: _sym(naming.unit_sum(layer)),
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
            pair = f"{prev}, {w}" if self.rows else f"{w}, {prev}"
            code = f"np.matmul({pair}, out={self.buffer(z, layer.size)})"
            wa = f"{prev} W^{index}" if self.rows else f"W^{index} {prev}"
            eq = f"z^{index} = {wa}" + (f" + b^{index}" if layer.bias else "")
            operands = (w, prev, b) if layer.bias else (w, prev)
            updates = (f"{z} += {b}",) if layer.bias else ()
            out.append(Statement(z, "affine", operands, None, code, eq, "forward", z, updates))
            cache.append(z)
            act = self.derivation.activations[index - 1]
            if act is None:
                logp = naming.log_output(index)
                out.append(
                    self.softmax_helper(
                        logp,
                        "_log_softmax",
                        z,
                        layer.size,
                        f"log a^{index} = z^{index} - log sum_k exp(z^{index}_k)",
                    )
                )
                cache.append(logp)
                if index == self.spec.depth and self.derivation.output.complement is not None:
                    log1m = naming.log_complement(index)
                    out.append(
                        self.softmax_helper(
                            log1m,
                            "_log1m_softmax",
                            z,
                            layer.size,
                            f"log(1 - a^{index}) = log sum_(k != j) exp(z^{index}_k) "
                            f"- log sum_k exp(z^{index}_k)",
                        )
                    )
                    cache.append(log1m)  # before a^L: forward() returns the last value
                out.append(
                    self.map(
                        a,
                        sp.exp(_sym(logp)),
                        f"a^{index} = softmax(z^{index}) = exp(log a^{index})",
                        "forward",
                    )
                )
                cache.append(a)
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

    def softmax_helper(
        self, target: str, helper: str, z: str, units: int, equation: str
    ) -> Statement:
        """A forward statement computing ``target`` from z with a stable module helper
        (``_log_softmax`` or ``_log1m_softmax``) into its work buffer."""
        self.helpers.add(helper)
        code = f"{helper}({z}, axis={self.units_axis}, out={self.buffer(target, units)})"
        return Statement(target, helper[1:], (z,), None, code, equation, "forward", target)

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

    def backprop(self, index: int) -> list[Statement]:
        """BP2 for a hidden layer: sigma'(z^l), then delta^l = ((W^(l+1))^T delta^(l+1)) (.) sigma'.

        The product is written into delta^l's buffer and multiplied by sigma' in place.
        An indicator derivative (ReLU's) is kept as a boolean mask.
        """
        out: list[Statement] = []
        delta, upper = naming.delta(index), naming.delta(index + 1)
        w_up = naming.weight(index + 1)
        pair = f"{upper}, {w_up}.T" if self.rows else f"{w_up}.T, {upper}"
        code = f"np.matmul({pair}, out={self.buffer(delta, self.spec.sizes[index])})"
        act = self.derivation.activations[index - 1]
        cached = act.cached.subs(self.layer_symbols(index))
        derivative = act.derivative.subs(Z, _sym(naming.weighted_input(index)))
        sp_name = naming.sigma_prime(index)
        carried = f" (carries the 1/m of delta^{self.spec.depth})"
        if cached == 1:
            eq = f"delta^{index} = (W^{index + 1})^T delta^{index + 1} (sigma' = 1){carried}"
            return [Statement(delta, "backprop", (w_up, upper), None, code, eq, "BP2", delta)]
        condition = indicator_condition(cached)
        if condition is not None:
            operands = tuple(sorted(v.name for v in cached.free_symbols))
            mask = print_condition_into(condition, buffer_ref(sp_name))
            if mask is None:
                mask_code, buffer = print_expr(condition, self.helpers), None
            else:
                mask_code, buffer = mask, sp_name
                self.buffer(sp_name, self.spec.sizes[index], "bool")
            out.append(
                Statement(
                    sp_name,
                    "map",
                    operands,
                    cached,
                    mask_code,
                    f"sigma'(z^{index}) = {derivative}: the indicator of {condition}, "
                    "kept as a boolean mask",
                    "BP2",
                    buffer,
                )
            )
        else:
            out.append(
                self.map(sp_name, cached, f"sigma'(z^{index}) = {derivative} = {cached}", "BP2")
            )
        eq = f"delta^{index} = ((W^{index + 1})^T delta^{index + 1}) (.) sigma'(z^{index}){carried}"
        out.append(
            Statement(
                delta,
                "backprop",
                (w_up, upper, sp_name),
                None,
                code,
                eq,
                "BP2",
                delta,
                (f"{delta} *= {sp_name}",),
            )
        )
        return out

    def unit_sum(self, layer: int, summand: sp.Expr) -> Statement:
        """BP1's per-example sum over the units of ``layer`` of the elementwise ``summand``."""
        body = print_expr(summand, self.helpers)
        return Statement(
            naming.unit_sum(layer),
            "unit_sum",
            tuple(sorted(v.name for v in summand.free_symbols)),
            summand,
            f"np.sum({body}, axis={self.units_axis}, keepdims=True)",
            f"s = sum over units k of {summand}",
            "BP1",
        )

    def _complement_delta(
        self, big_l: int, dc_da: sp.Expr, folded: str, per_example: sp.Expr
    ) -> list[Statement]:
        """BP1 for a softmax whose cost is in log(1 - a): the other-units term, then delta^L."""
        comp = self.derivation.output.complement
        symbols = self.layer_symbols(big_l)
        a, logp, log1m = (
            naming.activation(big_l),
            naming.log_output(big_l),
            naming.log_complement(big_l),
        )
        rest = naming.other_units(big_l)
        weights = comp.dlog1m.subs(symbols)
        self.helpers.add("_softmax_other_units")
        out = [
            Statement(
                rest,
                "other_units",
                (a, logp, log1m),
                weights,
                f"_softmax_other_units({a}, {logp}, {log1m}, {print_expr(weights, self.helpers)}, "
                f"axis={self.units_axis})",
                f"rest_j = sum over k != j of v_k a_j / (1 - a_k), v = dC/dlog(1 - a) = {weights}",
                "BP1",
            )
        ]
        if not comp.summand_is_constant:
            out.append(self.unit_sum(big_l, comp.summand.subs(symbols)))
        expr = comp.delta.subs(symbols)
        u = comp.dlogp.subs(symbols)
        total = (
            f"sum over the {self.spec.sizes[big_l]} units of {comp.summand.subs(symbols)}"
            if comp.summand_is_constant
            else "s"
        )
        out.append(
            self.map(
                naming.delta(big_l),
                expr,
                f"delta^{big_l} = J_softmax^T dC/da^{big_l} with dC/da = {dc_da}, taken "
                f"through log a and log(1 - a): u = dC/dlog a = {u}, "
                f"delta = u - a ({total}) + rest = {expr}{folded}",
                "BP1",
                code_expr=expr * per_example,
            )
        )
        return out

    def backward(self) -> tuple[list[Statement], list[tuple[str, str]]]:
        out: list[Statement] = []
        grads: list[tuple[str, str]] = []
        big_l = self.spec.depth
        output = self.derivation.output
        symbols = self.layer_symbols(big_l)
        delta_l = naming.delta(big_l)
        dc_da = output.dcost_da.subs(symbols)
        # The cost is a mean over the m examples: delta^L is stored divided by m, once,
        # and every delta and gradient computed from it inherits the factor.
        per_example = 1 / _sym(naming.BATCH)
        folded = "; stored divided by m (the cost's mean), so no gradient divides again"
        if output.softmax is None:
            expr = output.delta.subs(symbols)
            out.append(
                self.map(
                    delta_l,
                    expr,
                    f"delta^{big_l} = dC/da^{big_l} * sigma'(z^{big_l}) "
                    f"= ({dc_da}) * sigma'(z^{big_l}) = {expr}{folded}",
                    "BP1",
                    code_expr=expr * per_example,
                )
            )
        elif output.complement is not None:
            out.extend(self._complement_delta(big_l, dc_da, folded, per_example))
        else:
            jvp = output.softmax
            if jvp.summand_total is not None:
                expr = jvp.elementwise.subs(symbols)
                out.append(
                    self.map(
                        delta_l,
                        expr,
                        f"delta^{big_l} = J_softmax^T dC/da^{big_l} with "
                        f"dC/da = {dc_da}; sum_j y_j = 1 gives {expr}{folded}",
                        "BP1",
                        code_expr=expr * per_example,
                    )
                )
            else:
                out.append(self.unit_sum(big_l, jvp.summand.subs(symbols)))
                expr = (jvp.elementwise + jvp.scale * UNIT_SUM).subs(symbols)
                out.append(
                    self.map(
                        delta_l,
                        expr,
                        f"delta^{big_l} = J_softmax^T dC/da^{big_l} with dC/da = {dc_da}: "
                        f"{expr}{folded}",
                        "BP1",
                        code_expr=expr * per_example,
                    )
                )
        for index in range(big_l, 0, -1):
            delta = naming.delta(index)
            if index < big_l:
                out.extend(self.backprop(index))
            prev = naming.activation(index - 1)
            w = naming.weight(index)
            g_w = naming.grad(w)
            n_in, n_out = self.spec.sizes[index - 1], self.spec.sizes[index]
            self.gradient_buffer(w, *((n_in, n_out) if self.rows else (n_out, n_in)))
            pair = f"{prev}.T, {delta}" if self.rows else f"{delta}, {prev}.T"
            code = f"np.matmul({pair}, out={gradient_ref(w)})"
            out.append(
                Statement(
                    g_w,
                    "outer",
                    (delta, prev),
                    None,
                    code,
                    f"dC/dW^{index} = (1/m) delta^{index} (a^{index - 1})^T "
                    f"(the 1/m is already in delta^{index})",
                    "BP4",
                )
            )
            grads.append((w, g_w))
            if self.spec.layers[index - 1].bias:
                b = naming.bias(index)
                g_b = naming.grad(b)
                self.gradient_buffer(b, *((1, n_out) if self.rows else (n_out, 1)))
                ones = buffer_ref(ONES)
                if all(name != ONES for name, *_ in self.buffers):
                    shape = "(1, m)" if self.rows else "(m, 1)"
                    self.buffers.append((ONES, shape, "ones", "dtype"))
                pair = f"{ones}, {delta}" if self.rows else f"{delta}, {ones}"
                code = f"np.matmul({pair}, out={gradient_ref(b)})"
                out.append(
                    Statement(
                        g_b,
                        "example_sum",
                        (delta,),
                        None,
                        code,
                        f"dC/db^{index} = (1/m) sum over examples of delta^{index}: one "
                        f"product with a vector of m ones (the 1/m is already in delta^{index})",
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
        buffers=tuple(builder.buffers),
    )
