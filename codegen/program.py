"""The module program: the mini-batch statements of a derivation, with their NumPy code.

The statements, their order, their math (``op``, ``operands``, ``expr``), labels and
equations come from one place, :func:`chainrule.derive.batch.batch_program`; this module
adds only how the generated module computes each one fast, and the comment that says
so. ``code`` is that fast form: matrix products and elementwise results are written into
preallocated work buffers (``ws[...]``, see :data:`Program.buffers`) with ``out=``,
follow-up in-place updates sit in ``updates``, and the 1/m of the cost's mean over
examples is applied once, to delta^L, instead of once per gradient (so BP3/BP4 code
has no division). The equation comments say so wherever the code differs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import sympy as sp
from chainrule.codegen.printer import (
    indicator_condition,
    print_condition_into,
    print_expr,
    print_in_place,
)
from chainrule.codegen.pyformat import format_expr
from chainrule.derive import batch, batch_norm, naming
from chainrule.derive.batch import BatchStatement, plain
from chainrule.derive.layers import NetworkDerivation
from chainrule.derive.spec import Spec
from chainrule.derive.tables import ACTIVATIONS


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
    #: The statement of the mini-batch program this line computes (None for a temporary).
    source: BatchStatement | None = None


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
    #: The forward statements of inference with running statistics (``forward`` with a
    #: state): batch norm reads ``state`` instead of the batch; empty without batch norm.
    inference: tuple[Statement, ...] = ()


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


#: Comment notes where the fast code differs from the statement's math.
_STORED_OVER_M = ", over m (C is a mean)"


def temporary_equation(name: str, sub: sp.Expr, target: str) -> str:
    """The comment of a CSE temporary: ``_t0 = tanh(softplus(z1)), used more than once in sp1``."""
    return f"{name} = {plain(sub)}, used more than once in {target}"


def penalty_code(s: BatchStatement, helpers: set[str], *, in_params: bool) -> list[str]:
    """The NumPy code of each L2/L1 penalty term of ``s`` (see
    :mod:`chainrule.derive.penalty`), with the coefficients' values written in and a weight
    read as ``params["W1"]`` (``in_params``) or by its local name ``W1``."""
    values = {name: sp.Float(float(value)) for name, value in s.constants}
    out = []
    for term in s.penalty:
        term = term.xreplace({v: values[v.name] for v in term.free_symbols if v.name in values})
        if in_params:
            term = term.xreplace({w: sp.Symbol(f'params["{w.name}"]') for w in term.free_symbols})
        out.extend(format_expr(print_expr(part, helpers)) for part in sp.Add.make_args(term))
    return out


class _ModuleProgramBuilder:
    """Gives each statement of the mini-batch program its NumPy code and work buffer."""

    def __init__(self, derivation: NetworkDerivation) -> None:
        self.derivation = derivation
        self.spec = derivation.spec
        self.rows = self.spec.layout == "rows"
        self.units_axis = 1 if self.rows else 0
        self.helpers: set[str] = set()
        self.buffers: list[tuple[str, str, str, str]] = []
        self.temporaries = 0

    # -- work buffers ---------------------------------------------------------------------
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

    def ones(self) -> str:
        """The column (row) of m ones that sums a delta over the examples by a product."""
        if all(name != ONES for name, *_ in self.buffers):
            self.buffers.append((ONES, "(1, m)" if self.rows else "(m, 1)", "ones", "dtype"))
        return buffer_ref(ONES)

    def vector_buffer(self, name: str, units: int) -> str:
        """Register a work buffer of one value per unit (a column; a row in the rows layout)."""
        self.buffers.append(
            (name, f"(1, {units})" if self.rows else f"({units}, 1)", "zeros", "dtype")
        )
        return buffer_ref(name)

    def pair(self, left: str, right: str) -> str:
        """The arguments of a matrix product in the layout's order (columns: left, right)."""
        return f"{right}, {left}" if self.rows else f"{left}, {right}"

    # -- statements -------------------------------------------------------------------------
    def statement(self, s: BatchStatement, code: str, **extra: object) -> Statement:
        equation = extra.pop("equation", s.equation)
        return Statement(
            s.target, s.op, s.operands, s.expr, code, equation, s.label, source=s, **extra
        )

    def elementwise(
        self, s: BatchStatement, computed: sp.Expr, equation: str | None = None
    ) -> list[Statement]:
        """An elementwise statement; a subexpression it uses twice gets a temporary first."""
        units = self.spec.sizes[s.layer]
        out: list[Statement] = []
        replacements, (reduced,) = sp.cse(
            computed, symbols=self.temporary_names(), order="canonical"
        )
        for name, sub in replacements:
            into = print_in_place(
                sub, buffer_ref(name.name), name.name, self.helpers, zeros=lambda: self.zeros(units)
            )
            code, buffer, updates = print_expr(sub, self.helpers), None, ()
            if into is not None:
                self.buffer(name.name, units)
                (code, updates), buffer = into, name.name
            operands = tuple(sorted(v.name for v in sub.free_symbols))
            out.append(
                Statement(
                    name.name,
                    "map",
                    operands,
                    sub,
                    code,
                    temporary_equation(name.name, sub, s.target),
                    s.label,
                    buffer,
                    updates,
                )
            )
        into = print_in_place(
            reduced, buffer_ref(s.target), s.target, self.helpers, zeros=lambda: self.zeros(units)
        )
        kwargs = {} if equation is None else {"equation": equation}
        if into is None:
            return [*out, self.statement(s, print_expr(reduced, self.helpers), **kwargs)]
        self.buffer(s.target, units)
        code, updates = into
        return [*out, self.statement(s, code, buffer=s.target, updates=updates, **kwargs)]

    def temporary_names(self) -> Iterator[sp.Symbol]:
        """Fresh temporaries ``_t0, _t1, ...``, numbered across the whole module."""
        while True:
            # Count before yielding: sp.cse takes only the names it needs and never resumes
            # the generator, so a count after the yield would issue _t0 again next time.
            self.temporaries += 1
            yield naming.symbol(naming.temp(self.temporaries - 1))

    def softmax_helper(self, s: BatchStatement) -> Statement:
        """log-softmax or log(1 - softmax) of z by a stable module helper, into a buffer."""
        helper = f"_{s.op}"
        self.helpers.add(helper)
        buffer = self.buffer(s.target, self.spec.sizes[s.layer])
        code = f"{helper}({s.operands[0]}, axis={self.units_axis}, out={buffer})"
        return self.statement(s, code, buffer=s.target)

    def sigma_prime(self, s: BatchStatement) -> list[Statement]:
        """sigma'(z^l): an indicator derivative (ReLU's) is kept as a boolean mask."""
        condition = indicator_condition(s.expr)
        if condition is None:
            return self.elementwise(s, s.expr)
        mask = print_condition_into(condition, buffer_ref(s.target))
        equation = f"{s.equation}: the boolean mask {plain(condition)}"
        if mask is None:
            return [self.statement(s, print_expr(condition, self.helpers), equation=equation)]
        self.buffer(s.target, self.spec.sizes[s.layer], "bool")
        return [self.statement(s, mask, buffer=s.target, equation=equation)]

    def other_units(self, s: BatchStatement) -> Statement:
        self.helpers.add("_softmax_other_units")
        weights = print_expr(s.expr, self.helpers)
        args = ", ".join(s.operands)
        code = f"_softmax_other_units({args}, {weights}, axis={self.units_axis})"
        return self.statement(s, code)

    def reduction(self, s: BatchStatement) -> Statement:
        """A sum over units (BP1's s) or the cost: a sum over examples and units over m."""
        body = print_expr(s.expr, self.helpers)
        if s.op == "loss":
            code = f"np.sum({body}) / {naming.BATCH}"
            updates = tuple(
                f"{s.target} += np.sum({t})" for t in penalty_code(s, self.helpers, in_params=True)
            )
            return self.statement(s, code, updates=updates)
        return self.statement(s, f"np.sum({body}, axis={self.units_axis}, keepdims=True)")

    def product(self, s: BatchStatement) -> Statement:
        """affine, backprop, outer and example_sum: one matrix product into a buffer."""
        sizes, layer = self.spec.sizes, s.layer
        if s.op == "affine":
            w, prev, *bias = s.operands
            if self.spec.layers[layer - 1].batch_norm:
                return self.normalized_input(s)
            code = f"np.matmul({self.pair(w, prev)}, out={self.buffer(s.target, sizes[layer])})"
            return self.statement(
                s, code, buffer=s.target, updates=tuple(f"{s.target} += {b}" for b in bias)
            )
        if s.op == "backprop":
            w_up, upper, *sprime = s.operands
            out = self.buffer(s.target, sizes[layer])
            code = f"np.matmul({self.pair(f'{w_up}.T', upper)}, out={out})"
            updates = tuple(f"{s.target} *= {name}" for name in sprime)
            return self.statement(s, code, buffer=s.target, updates=updates)
        delta = s.operands[0]
        held = f" ({delta} holds the 1/m)"
        if s.op == "outer":
            param, prev = naming.weight(layer), s.operands[1]
            n_in, n_out = sizes[layer - 1], sizes[layer]
            self.gradient_buffer(param, *((n_in, n_out) if self.rows else (n_out, n_in)))
            code = f"np.matmul({self.pair(delta, f'{prev}.T')}, out={gradient_ref(param)})"
            updates = tuple(
                f"{s.target} += {t}" for t in penalty_code(s, self.helpers, in_params=False)
            )
            return self.statement(s, code, equation=s.equation + held, updates=updates)
        param = naming.bias(layer)
        self.gradient_buffer(param, *((1, sizes[layer]) if self.rows else (sizes[layer], 1)))
        code = f"np.matmul({self.pair(delta, self.ones())}, out={gradient_ref(param)})"
        return self.statement(s, code, equation=s.equation + held)

    def normalized_input(self, s: BatchStatement) -> Statement:
        """u^l = W^l a^(l-1) of a batch-normalized layer, into x̂^l's buffer: it is centred
        and scaled there in place (a pass that writes into another buffer costs up to twice
        as much), so u^l is not one of the values _forward returns."""
        w, prev = s.operands
        xhat = naming.normalized(s.layer)
        into = self.buffer(xhat, self.spec.sizes[s.layer])
        code = f"np.matmul({self.pair(w, prev)}, out={into})"
        note = f" (in {xhat}'s buffer, which becomes {xhat} below)"
        return self.statement(s, code, buffer=xhat, equation=s.equation + note)

    def dropout_mask(self, s: BatchStatement) -> Statement:
        """D^l drawn into its work buffer by the module helper (1 when ``rng`` is None)."""
        self.helpers.add("_dropout_mask")
        buffer = self.buffer(s.target, self.spec.sizes[s.layer])
        p = float(self.spec.layers[s.layer - 1].dropout)
        return self.statement(s, f"_dropout_mask(rng, {p!r}, {buffer})", buffer=s.target)

    def per_unit_sum(self, left: str, right: str, into: str) -> str:
        """A sum over the examples of ``left * right``, per unit, into the per-unit buffer
        ``into`` (viewed as a vector), in one pass that writes nothing n x m.

        Columns: np.vecdot along each unit's contiguous row (1-4% faster than einsum).
        Rows: np.einsum, which picks its loop order; vecdot along axis 0 strides across
        the rows, 2.5 to 6.7 times einsum's time for 256 units at m = 64 to 1024.
        """
        if self.rows:
            return f'np.einsum("ij,ij->j", {left}, {right}, out={into}[0])'
        return f"np.vecdot({left}, {right}, axis=1, out={into}[:, 0])"

    def normalization(self, s: BatchStatement) -> Statement | list[Statement]:
        """A batch-norm statement: batch statistics by products with the ones column, xhat
        and z in place; the gradients of gamma and beta into sgd_step's arrays."""
        layer, n, m, ones = s.layer, self.spec.sizes[s.layer], naming.BATCH, self.ones()
        xhat, z = buffer_ref(naming.normalized(layer)), buffer_ref(naming.weighted_input(layer))
        if s.op == "bn_mean":
            into = self.vector_buffer(s.target, n)
            code = f"np.matmul({self.pair(s.operands[0], ones)}, out={into})"
            return self.statement(s, code, updates=(f"{s.target} /= {m}",))
        if s.op == "bn_var":
            u, mean = s.operands
            self.buffer(naming.weighted_input(layer), n)
            into = self.vector_buffer(s.target, n)
            # one pass sums the squares per unit, without writing them out
            total = self.per_unit_sum(u, u, s.target)
            note = f" ({u}'s buffer is centred in place first, to {u} - {mean})"
            updates = (f"{u} -= {mean}", total, f"{s.target} /= {m}")
            return self.statement(s, into, updates=updates, equation=s.equation + note)
        if s.op == "bn_normalize":
            rstd = f"1 / np.sqrt({s.operands[2]} + {batch_norm.EPS_TEXT})"
            code = f"np.multiply({xhat}, {rstd}, out={xhat})"
            u, mean = naming.linear(layer), naming.batch_mean(layer)
            note = f" (the buffer holds {u} - {mean})"
            return self.statement(
                s, code, buffer=naming.normalized(layer), equation=s.equation + note
            )
        if s.op == "bn_scale":
            gamma, xh, beta = s.operands
            return self.statement(
                s, f"np.multiply({xh}, {gamma}, out={z})", updates=(f"{s.target} += {beta}",)
            )
        held = f" ({naming.delta(layer)} holds the 1/m)"
        shape = (1, n) if self.rows else (n, 1)
        if s.op == "bn_beta_grad":
            param = naming.shift(layer)
            self.gradient_buffer(param, *shape)
            code = f"np.matmul({self.pair(s.operands[0], ones)}, out={gradient_ref(param)})"
            return self.statement(s, code, equation=s.equation + held)
        if s.op == "bn_gamma_grad":
            param = naming.scale(layer)
            self.gradient_buffer(param, *shape)
            delta, xh = s.operands
            total = self.per_unit_sum(delta, xh, s.target)
            return self.statement(
                s, gradient_ref(param), updates=(total,), equation=s.equation + held
            )
        return self.three_terms(s)

    def three_terms(self, s: BatchStatement) -> list[Statement]:
        """The error at u, in place in delta's buffer: delta and the two gradients hold the
        1/m, so the two mean terms are divided by m once more. x̂'s buffer, whose last use
        is dC/dgamma's sum, holds the mean terms. Checked against the statement's SymPy
        form."""
        layer, sym = s.layer, naming.symbol
        delta, xhat = naming.delta(layer), naming.normalized(layer)
        gamma, var = naming.scale(layer), naming.batch_var(layer)
        d_gamma, d_beta = naming.grad(gamma), naming.grad(naming.shift(layer))
        target, m = s.target, sym(naming.BATCH)
        # What the code below computes, with delta stored as delta / m:
        factor = sym(gamma) / sp.sqrt(sym(var) + batch_norm.EPS)
        computed = sym(delta) / m * factor - (
            sym(xhat) * (sym(d_gamma) * factor / m) + sym(d_beta) * factor / m
        )
        if sp.simplify(computed * m - s.expr) != 0:
            raise AssertionError(f"{target}: the fast form differs from the three-term form")
        # Four passes over the batch, each in place (a pass that writes into another
        # buffer costs up to twice as much): the mean terms' factors are small vectors.
        name = next(self.temporary_names()).name
        scale = Statement(
            name,
            "map",
            (gamma, var),
            factor,
            f"{gamma} / np.sqrt({var} + {batch_norm.EPS_TEXT})",
            temporary_equation(name, factor, target),
            s.label,
        )
        code = f"np.multiply({delta}, {name}, out={buffer_ref(delta)})"
        updates = (
            f"{xhat} *= {d_gamma} * {name} / {naming.BATCH}",
            f"{xhat} += {d_beta} * {name} / {naming.BATCH}",
            f"{target} -= {xhat}",
        )
        note = (
            f" ({delta} and dC/d{gamma}, dC/d{naming.shift(layer)} hold the 1/m; "
            f"{target} is computed in {delta}'s buffer, and {xhat}'s buffer, not needed "
            "again, holds the two mean terms)"
        )
        return [
            scale,
            self.statement(s, code, buffer=delta, updates=updates, equation=s.equation + note),
        ]

    def residual(self, s: BatchStatement) -> list[Statement]:
        """dC/da^l of a layer a skip touches: at the output, dC/da^L over m (C is a mean);
        below it, W^T delta into a buffer plus, in place, dC/da of each layer it feeds."""
        if s.op == "map":
            computed = s.expr / naming.symbol(naming.BATCH)
            return self.elementwise(s, computed, s.equation + _STORED_OVER_M)
        w_up, upper, *fed = s.operands
        out = self.buffer(s.target, self.spec.sizes[s.layer])
        code = f"np.matmul({self.pair(f'{w_up}.T', upper)}, out={out})"
        updates = tuple(f"{s.target} += {name}" for name in fed)
        return [self.statement(s, code, buffer=s.target, updates=updates)]

    def code(self, s: BatchStatement) -> list[Statement]:
        """The generated statements computing ``s`` (a temporary or two, then ``s`` itself)."""
        if s.op == "dropout":
            return [self.dropout_mask(s)]
        if s.op.startswith("bn_"):
            made = self.normalization(s)
            return made if isinstance(made, list) else [made]
        if s.op == "alias":
            return [self.statement(s, s.operands[0])]
        if s.op in ("log_softmax", "log1m_softmax"):
            return [self.softmax_helper(s)]
        if s.op == "other_units":
            return [self.other_units(s)]
        if s.op in ("loss", "unit_sum"):
            return [self.reduction(s)]
        if s.op == "map" and s.quantity == "sigma_prime":
            return self.sigma_prime(s)
        if s.op == "backsum" or s.quantity == "activation_gradient":
            return self.residual(s)
        if (
            s.op == "map"
            and s.quantity == "delta"
            and naming.activation_gradient(s.layer) in s.operands
        ):
            return self.elementwise(s, s.expr)  # dC/da^l holds the 1/m already
        if s.op == "map" and s.quantity == "delta":
            # The cost is a mean over the m examples: delta^L is stored divided by m, once,
            # and every delta and gradient computed from it inherits the factor.
            computed = s.expr / naming.symbol(naming.BATCH)
            return self.elementwise(s, computed, s.equation + _STORED_OVER_M)
        if s.op == "map":
            return self.elementwise(s, s.expr)
        return [self.product(s)]


def _has_kink(activation: str, derivative: sp.Expr) -> bool:
    """Whether a layer's derivative jumps: a table row says where (elu's derivative is
    continuous, relu's jumps at 0); an expression activation is taken as kinked when SymPy's
    derivative of it is piecewise."""
    row = ACTIVATIONS.get(activation)
    if row is not None:
        return bool(row.kinks)
    return derivative.has(sp.Piecewise)


class CodeBuilder(Protocol):
    """Gives each statement of the mini-batch program its code (one form of the module).

    ``helpers`` collects the module helpers the code calls; ``buffers`` the work
    buffers it writes into (none for a form without them).
    """

    helpers: set[str]
    buffers: list[tuple[str, str, str, str]]

    def code(self, s: BatchStatement) -> list[Statement]:
        """The generated statements computing ``s``."""
        ...


def build_program(derivation: NetworkDerivation, builder: CodeBuilder | None = None) -> Program:
    """Give the mini-batch program of ``derivation`` its code: forward, cost, backward.

    ``builder`` chooses the form of the code (default: the fast form of this module,
    with work buffers and ``out=``).
    """
    if builder is None:
        builder = _ModuleProgramBuilder(derivation)
    parts: dict[str, list[Statement]] = {"forward": [], "cost": [], "backward": []}
    for s in batch.batch_program(derivation):
        part = s.label if s.label in ("forward", "cost") else "backward"
        parts[part].extend(builder.code(s))
    spec = derivation.spec
    params: list[str] = []
    for index, layer in enumerate(spec.layers, start=1):
        params.append(naming.weight(index))
        if layer.bias:
            params.append(naming.bias(index))
        if layer.batch_norm:
            params.extend((naming.scale(index), naming.shift(index)))
    grads = [
        (_GRADIENT_OF[s.op](s.source.layer), s.target)
        for s in parts["backward"]
        if s.op in _GRADIENT_OF
    ]
    kinks = tuple(
        index
        for index, act in enumerate(derivation.activations, start=1)
        if act is not None and _has_kink(spec.layers[index - 1].activation, act.derivative)
    )
    # _forward returns the cached forward values in order; a^L last (log(1 - a^L) before it).
    # u^l of a batch-normalized layer is not among them: x̂^l is computed in its buffer.
    overwritten = {naming.linear(layer) for layer in spec.batch_norm_layers}
    cache = tuple(
        s.target
        for s in parts["forward"]
        if s.source is not None and s.op != "alias" and s.target not in overwritten
    )
    order = {p: i for i, p in enumerate(params)}
    (cost,) = parts["cost"]
    return Program(
        spec=spec,
        forward=tuple(parts["forward"]),
        cost=cost,
        backward=tuple(parts["backward"]),
        cache=cache,
        output=naming.activation(spec.depth),
        params=tuple(params),
        grads=tuple(sorted(grads, key=lambda pair: order[pair[0]])),
        helpers=frozenset(builder.helpers),
        kink_layers=kinks,
        assumptions=derivation.assumptions,
        buffers=tuple(builder.buffers),
        inference=_inference(derivation) if spec.batch_norm_layers else (),
    )


#: The gradient statements' operations and the parameter each one's gradient is of.
_GRADIENT_OF = {
    "outer": naming.weight,
    "example_sum": naming.bias,
    "bn_gamma_grad": naming.scale,
    "bn_beta_grad": naming.shift,
}


def _inference(derivation: NetworkDerivation) -> tuple[Statement, ...]:
    """The forward statements with each batch-norm layer's mean and variance read from
    the running statistics in ``state``, in the plain form (new arrays: forward is not
    the training loop)."""
    from chainrule.codegen.plain import _PlainCodeBuilder  # plain builds on this module

    builder = _PlainCodeBuilder(derivation)
    out: list[Statement] = []
    for s in batch.batch_program(derivation):
        if s.label != "forward":
            continue
        if s.op in ("bn_mean", "bn_var"):
            running = naming.running_mean if s.op == "bn_mean" else naming.running_var
            key = running(s.layer)
            equation = f"{s.target} = state[{key!r}] (inference: the running statistic)"
            out.append(
                Statement(s.target, s.op, (), None, f'state["{key}"]', equation, s.label, source=s)
            )
            continue
        if s.op == "dropout":
            equation = f"{s.target} = 1 (inference: no dropout)"
            out.append(Statement(s.target, s.op, (), None, "1.0", equation, s.label, source=s))
            continue
        out.extend(builder.code(s))
    return tuple(out)
