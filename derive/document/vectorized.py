"""Section 6 of a derivation: the mini-batch program, rendered and checked statement by statement.

The statements are those of :func:`chainrule.derive.batch.batch_program`, the one
source the generated module is printed from; this section only renders each one in
the notation and checks it. A statement's check runs it
(:func:`~chainrule.derive.batch.run_statement`) on the witness batch and compares
the result with the value the witness gives for its target by ``diff`` of the
batch cost (or by the forward definitions). An elementwise statement is displayed
from the very expression that is run.
"""

from __future__ import annotations

import functools

import sympy as sp
from chainrule.derive import batch, batch_norm, naming
from chainrule.derive.batch import BatchStatement, run_statement
from chainrule.derive.document.base import SectionWriterBase, _same_text, _tex, odot_tex
from chainrule.derive.document.steps import Section, Side, Step
from chainrule.derive.document.witness import WITNESS_BATCH, WitnessNetwork, _wrapped, witness
from chainrule.derive.layers import LOGP, A, Y, Z

#: Section titles by (operation, quantity); the layer is appended where there is one.
_TITLES = {
    ("alias", "activation"): "Input batch",
    ("affine", "weighted_input"): "Weighted inputs of layer {}",
    ("log_softmax", "log_output"): "Log-softmax",
    ("log1m_softmax", "log_complement"): "Log of one minus the softmax",
    ("map", "activation"): "Activations of layer {}",
    ("loss", "cost"): "Cost of the batch",
    ("unit_sum", "unit_sum"): "Sum over the output units",
    ("other_units", "other_units"): "Other units of the output error",
    ("map", "delta"): "Output error of the batch",
    ("map", "sigma_prime"): "Activation derivative of layer {}",
    ("backprop", "delta"): "Error of layer {} over the batch",
    ("outer", "weight_gradient"): "Weight gradient of layer {} over the batch",
    ("example_sum", "bias_gradient"): "Bias gradient of layer {} over the batch",
    ("map", "own_activation"): "Own activation of layer {} (before the skip)",
    ("map", "activation_gradient"): "Output gradient of the batch",
    ("backsum", "activation_gradient"): "Gradient of the cost in the activations of layer {}",
    ("alias", "delta"): "Error of layer {} over the batch",
    ("dropout", "dropout_mask"): "Dropout mask of layer {} (training only)",
    ("affine", "linear"): "Weighted sums of layer {} (before batch norm)",
    ("bn_mean", "batch_mean"): "Batch mean of layer {}",
    ("bn_var", "batch_var"): "Biased batch variance of layer {}",
    ("bn_normalize", "normalized"): "Normalized weighted sums of layer {}",
    ("bn_scale", "weighted_input"): "Weighted inputs of layer {} (scaled and shifted)",
    ("bn_gamma_grad", "scale_gradient"): "Scale gradient of layer {} over the batch",
    ("bn_beta_grad", "shift_gradient"): "Shift gradient of layer {} over the batch",
    ("bn_backward", "linear_delta"): "Error of layer {} at the weighted sums (three terms)",
}

_ELEMENTWISE = " \\quad (\\text{elementwise})"

#: The vector of m ones: a bias added to every example, a gradient summed over them.
ONES = "\\mathbf{1}_{m}"

#: Batch norm's epsilon as the displayed equations name it (its value, 10^-5, is in words).
EPSILON = sp.Symbol("epsilon", positive=True)


def _entry(expr: sp.Expr, values: dict) -> sp.Expr:
    """``expr`` at one entry; each one-variable piecewise part stays a wrapped function
    (see :func:`~chainrule.derive.document.witness._wrapped`) so nested ReLUs stay small."""
    pieces = {}
    for piece in expr.atoms(sp.Piecewise):
        if len(piece.free_symbols) == 1:
            (var,) = piece.free_symbols
            pieces[piece] = _wrapped(piece.xreplace({var: Z}))(var)
    return expr.xreplace(pieces).xreplace(values)


class VectorizedSection(SectionWriterBase):
    """Renders the mini-batch program in the notation and checks it on the witness batch."""

    @functools.cached_property
    def program(self) -> tuple[BatchStatement, ...]:
        """The module's mini-batch program, built once per document."""
        return batch.batch_program(self.d)

    def vectorized(self) -> Section:
        """The mini-batch statements, in the order and with the labels of the module."""
        statements = self.program
        steps = tuple(
            Step(
                self.batch_title(s),
                self.batch_latex(s),
                functools.partial(self.batch_sides, s.target),
                s.label,
                s.target,
                tag="" if s.quantity == "sigma_prime" else None,
            )
            for s in statements
        )
        per = "row" if self.nota.rows else "column"
        errors = self.nota.batch("D", self.depth)
        intro = (
            f"The same equations over a mini-batch of m examples, one per {per} "
            f"(${errors}$ and the other error matrices hold the layer errors of the examples "
            f"{'one above the other' if self.nota.rows else 'side by side'}; "
            f"{self.batch_cost_words()}). These "
            "are the statements of the generated NumPy module, in its order and with its "
            "labels. SymPy runs each on a symbolic batch of two examples and compares the "
            "result with the forward definitions or with diff of the batch cost (a sum over "
            "units through the output error it feeds)."
        )
        if self.nota.from_input_one:
            intro += " " + self.numbering_line()
        if any(ly.bias for ly in self.spec.layers):
            intro += (
                f" ${ONES}$ is the vector of m ones: it adds a bias to every example and sums "
                "a bias gradient over the examples."
            )
        if self.spec.batch_norm_layers:
            intro += " " + self.batch_norm_words()
        intro += self.unit_ones_words(statements)
        return Section("Vectorized over a mini-batch", intro, steps)

    def batch_norm_words(self) -> str:
        """What the batch-normalized layers' statements name (their first layer's symbols)."""
        layer = self.spec.batch_norm_layers[0]
        names = self.batch_norm_names(layer)

        def name(identifier: str) -> str:
            return names[naming.symbol(identifier)]

        takers = (
            "BP2 of the layer below and BP4"
            if self.nota.bp_labels
            else "the error of the layer below and the weights' gradient"
        )
        return (
            f"In a batch-normalized layer (here layer {self.nota.number(layer)}), "
            f"${name(naming.linear(layer))}$ holds the weighted sums (no bias), "
            f"${name(naming.batch_mean(layer))}$ and ${name(naming.batch_var(layer))}$ each "
            f"unit's mean and biased variance over the m examples (${ONES}$ is the vector of m "
            "ones; an elementwise statement repeats them over the examples), "
            f"$\\epsilon = 10^{{-5}}$, and ${self.linear_error_tex(layer)}$ is the error at "
            "the weighted sums, by the three-term form of the batch-norm section; "
            f"{takers} take it in place of the error."
        )

    def batch_cost_words(self) -> str:
        """What C means in this section: the batch mean, not the cost of one example that
        the legend calls C (3Blue1Brown: the video's average over n examples, with n = m)."""
        if self.nota.name == "3b1b":
            # k numbers the examples in the video's average, which a batch-normalized
            # document does not show: there k numbers units and i the examples.
            k = "i" if self.spec.batch_norm_layers else "k"
            return (
                f"here $C$ is the mean of the examples' costs $C_{k}$ over the m examples, the "
                "video's average with n = m"
            )
        return "here $C$ is the mean of the m examples' costs, no longer the cost of one example"

    @property
    def unit_ones(self) -> str:
        """The vector of ones over the output units (length n_L), as a softmax and a sum
        over the output units use it."""
        return f"\\mathbf{{1}}_{{{self.spec.sizes[-1]}}}"

    def unit_ones_words(self, statements: list[BatchStatement]) -> str:
        """The sentence defining the output units' ones vector (and I), where used."""
        ops = {s.op for s in statements}
        if not ops & {"log_softmax", "log1m_softmax", "unit_sum"}:
            return ""
        n = self.spec.sizes[-1]
        words = f" ${self.unit_ones}$ is the vector of {n} ones, one per output unit"
        if "log1m_softmax" in ops:
            words += f", and $I$ the {n} by {n} identity matrix"
        return words + "."

    def numbering_line(self) -> str:
        """One line mapping the module's layer numbers (input 0) onto the book's (input 1)."""
        nota, layers = self.nota, range(1, self.depth + 1)
        pairs = [f"{naming.weight(ly)} is ${nota.weight_matrix(ly)}$" for ly in layers]
        pairs += [
            f"{naming.bias(ly)} is ${nota.b(ly)}$" for ly in layers if self.spec.layers[ly - 1].bias
        ]
        return (
            "The module numbers the input layer 0 and the book numbers it 1, so each module "
            f"name is one layer below the book's: {', '.join(pairs)}."
        )

    def batch_title(self, s: BatchStatement) -> str:
        if s.quantity == "delta" and naming.activation_gradient(s.layer) in s.operands:
            if s.layer < self.depth:
                return f"Error of layer {self.nota.number(s.layer)} over the batch"
        if s.quantity == "sigma_prime":
            # The module labels sigma' with BP2, the equation it serves; the title says so
            # rather than tagging sigma' as that equation.
            number = self.nota.number(s.layer)
            error = "BP2" if self.nota.bp_labels else f"the error of layer {number}"
            return f"Activation derivative of layer {number}, a factor of {error}"
        if (
            s.quantity == "activation"
            and s.op == "map"
            and s.operands == (naming.log_output(s.layer),)
        ):
            return "Softmax"
        if s.quantity == "own_activation" and self.dropped(s.layer):
            return f"Own activation of layer {self.nota.number(s.layer)} (before the mask)"
        return _TITLES[(s.op, s.quantity)].format(self.nota.number(s.layer))

    # -- checking -------------------------------------------------------------------------
    def batch_sides(self, target: str) -> tuple[tuple[Side, ...], ...]:
        """The sides of one statement's check: the witness's value of its target, then the
        statement run on the witness batch (for sigma', the derivative form between). A
        dropout mask is an input of the step: its check adds the mask's own, E[D] = 1 and
        P(D = 0) = p."""
        masks = {naming.dropout_mask(ly): ly for ly in range(1, self.depth + 1) if self.dropped(ly)}
        if target in masks:
            return (self.batch_results[target], *self.mask_sides(masks[target]))
        return (self.batch_results[target],)

    @functools.cached_property
    def batch_results(self) -> dict[str, tuple[Side, ...]]:
        net = witness(self.spec, WITNESS_BATCH, self.width)
        rows = self.nota.rows
        reference = self.batch_references(net)
        env = self.batch_inputs(net)
        results: dict[str, tuple[Side, ...]] = {}
        for s in self.program:
            got = run_statement(s, env, rows, net.m, at=_entry)
            ref = reference.get(s.target)
            if s.derivative is not None:
                shown = run_statement(
                    BatchStatement(s.target, "map", s.operands, s.derivative, "", 0, "", ""),
                    env,
                    rows,
                    net.m,
                    at=_entry,
                )
                results[s.target] = (ref, shown, got)
            elif s.quantity == "cost" and self.logit_cost(s):
                results[s.target] = (ref, got, self.cost_in_a_y(net))
            else:
                results[s.target] = (got, got) if ref is None else (ref, got)
            # Backward values continue from the witness's own delta (a function of the
            # weighted inputs), so each statement is checked on its own.
            env[s.target] = ref if ref is not None and s.label.startswith("BP") else got
        return results

    def logit_cost(self, s: BatchStatement) -> bool:
        """True when the module's cost is written in the weighted inputs (logits) rather
        than in the output a and the target y that the source writes."""
        return naming.weighted_input(s.layer) in s.operands

    def cost_in_a_y(self, net: WitnessNetwork) -> sp.Matrix:
        """The batch cost as the mean of the per-entry cost in a and y, on the witness."""
        element, big_l = self.d.output.cost_element, self.depth
        a = net.a[big_l]
        total = sp.Add(
            *[
                element.xreplace({A: a[j, i], Y: net.y[j, i], LOGP: sp.log(a[j, i])})
                for j in range(a.rows)
                for i in range(a.cols)
            ]
        )
        return sp.Matrix([[total / net.m]])

    def oriented(self, matrix: sp.Matrix) -> sp.Matrix:
        """A units x examples (or parameter) matrix in the spec's layout."""
        return matrix.T if self.nota.rows else matrix

    def batch_inputs(self, net: WitnessNetwork) -> dict[str, sp.Matrix]:
        o = self.oriented
        env = {naming.INPUT: o(net.x), naming.TARGET: o(net.y)}
        for layer in range(1, self.depth + 1):
            env[naming.weight(layer)] = o(net.W[layer])
            env[naming.bias(layer)] = o(net.b[layer])
            if layer in net.mask:  # the module draws the mask; here each entry is a symbol
                env[naming.dropout_mask(layer)] = o(net.mask[layer])
            if layer in net.gamma:
                env[naming.scale(layer)] = o(net.gamma[layer])
                env[naming.shift(layer)] = o(net.beta[layer])
        return env

    def batch_references(self, net: WitnessNetwork) -> dict[str, Side]:
        """The value of each target from the witness: the forward definitions, diff of the
        batch cost for the deltas (times m, per example) and the gradients."""
        o, refs = self.oriented, {}
        refs[naming.activation(0)] = o(net.a[0])
        refs[naming.COST] = sp.Matrix([[net.cost]])
        for layer in range(1, self.depth + 1):
            z, a = net.z[layer], net.a[layer]
            refs[naming.weighted_input(layer)] = o(z)
            refs[naming.activation(layer)] = o(a)
            refs[naming.log_output(layer)] = o(a.applyfunc(sp.log))
            refs[naming.log_complement(layer)] = o(a.applyfunc(lambda v: sp.log(1 - v)))
            refs[naming.delta(layer)] = o(net.delta_full(layer))
            if self.d.activations[layer - 1] is not None:
                refs[naming.sigma_prime(layer)] = o(
                    z.applyfunc(lambda v, ly=layer: self.sprime_at(ly, v))
                )
            if layer in self.spec.skips or self.dropped(layer):
                # residual or dropout: sigma(z^l) kept, before a^k is added or the mask applied
                refs[naming.own_activation(layer)] = o(net.activate(layer, z))
            if layer in self.spec.skips or self.spec.skips and layer in self.spec.skips.values():
                refs[naming.activation_gradient(layer)] = o(net.grad_a_full(layer))
            n_out, n_in = net.n[layer], net.n[layer - 1]
            w = sp.Matrix(n_out, n_in, lambda j, k, ly=layer: net.dcost(net.W[ly][j, k]))
            refs[naming.grad(naming.weight(layer))] = o(w)
            if self.spec.layers[layer - 1].bias:
                b = sp.Matrix(n_out, 1, lambda j, _, ly=layer: net.dcost(net.b[ly][j, 0]))
                refs[naming.grad(naming.bias(layer))] = o(b)
            if layer in net.gamma:
                refs.update(self.batch_norm_references(net, layer))
        return refs

    def batch_norm_references(self, net: WitnessNetwork, layer: int) -> dict[str, Side]:
        """The witness's values of a batch-normalized layer's statements: u, its batch mean
        and variance and xhat by their definitions; m dC/du, dC/dgamma and dC/dbeta by
        ``diff`` of the batch cost (through the mean and the variance)."""
        o, u = self.oriented, net.linear(layer)
        mean, var = net.batch.statistics(u)
        n = net.n[layer]

        def dcost(params: sp.Matrix) -> sp.Matrix:
            return sp.Matrix(n, 1, lambda j, _: net.dcost(params[j, 0]))

        return {
            naming.linear(layer): o(u),
            naming.batch_mean(layer): o(mean),
            naming.batch_var(layer): o(var),
            naming.normalized(layer): o(net.batch.normalized(u)),
            naming.linear_delta(layer): o(net.linear_delta_full(layer)),
            naming.grad(naming.scale(layer)): o(dcost(net.gamma[layer])),
            naming.grad(naming.shift(layer)): o(dcost(net.beta[layer])),
        }

    # -- rendering ------------------------------------------------------------------------
    @functools.cached_property
    def batch_names(self) -> dict[sp.Symbol, str]:
        """LaTeX of every identifier symbol a statement's expression can hold."""
        nota, sym = self.nota, naming.symbol
        ones = self.unit_ones
        unit_sum = f"s {ones}^{{T}}" if nota.rows else f"{ones} s"
        names = {sym(naming.TARGET): "Y"}
        for layer in range(1, self.depth + 1):
            zb, ab = nota.batch("Z", layer), nota.batch("A", layer)
            names[sym(naming.weighted_input(layer))] = zb
            names[sym(naming.activation(layer))] = ab
            names[sym(naming.log_output(layer))] = f"\\log {ab}"
            names[sym(naming.log_complement(layer))] = f"\\log(1 - {ab})"
            names[sym(naming.other_units(layer))] = nota.batch("R", layer)
            names[sym(naming.unit_sum(layer))] = unit_sum
            names[sym(naming.sigma_prime(layer))] = f"{nota.act_letter(layer)}'({zb})"
            if self.spec.skips or self.dropped(layer):
                names.update(self.residual_names(layer))
            if self.dropped(layer):
                names[sym(naming.dropout_mask(layer))] = nota.mask(layer)
            if self.spec.layers[layer - 1].batch_norm:
                names.update(self.batch_norm_names(layer))
        return names

    def batch_norm_names(self, layer: int) -> dict[sp.Symbol, str]:
        """LaTeX of a batch-normalized layer's identifiers (U, mu, v, X-hat, gamma, beta,
        the error at U and the two parameter gradients), as the batch-norm section writes
        them."""
        nota, sym = self.nota, naming.symbol
        gamma, beta = nota._base("\\gamma", layer, None), nota._base("\\beta", layer, None)
        return {
            sym(naming.linear(layer)): nota._base("U", layer, None),
            sym(naming.batch_mean(layer)): nota._base("\\mu", layer, None),
            sym(naming.batch_var(layer)): nota._base("v", layer, None),
            sym(naming.normalized(layer)): nota._base("\\hat{X}", layer, None),
            sym(naming.scale(layer)): gamma,
            sym(naming.shift(layer)): beta,
            sym(naming.delta(layer)): nota.batch("D", layer),
            sym(naming.linear_delta(layer)): self.linear_error_tex(layer, factor=True),
            sym(naming.grad(naming.scale(layer))): nota.grad("C", gamma),
            sym(naming.grad(naming.shift(layer))): nota.grad("C", beta),
        }

    def linear_error_tex(self, layer: int, factor: bool = False) -> str:
        """The error at U^l of a batch-normalized layer: m dC/dU^l (the course's dU^l), in
        parentheses as a ``factor``."""
        nota = self.nota
        if nota.name == "course":
            return nota._base("dU", layer, None)
        body = f"m {nota.partial('C', nota._base('U', layer, None))}"  # C: the batch's cost
        return f"\\left({body}\\right)" if factor else body

    def error_tex(self, name: str) -> str:
        """The error matrix ``name`` stands for: Delta^l, or the error at U^l of a
        batch-normalized layer (which BP2 below it and BP4 take)."""
        if naming.kind(name) == "linear_delta":
            return self.batch_names[naming.symbol(name)]
        return self.nota.batch("D", naming.layer_of(name))

    def residual_names(self, layer: int) -> dict[sp.Symbol, str]:
        """LaTeX of sigma(Z^l), dC/dA^l and sigma'(Z^l), the residual statements' operands."""
        nota, sym = self.nota, naming.symbol
        zb, ab = nota.batch("Z", layer), nota.batch("A", layer)
        grad = (
            nota._base("dA", layer, None) if nota.name == "course" else nota.partial(nota.cost, ab)
        )
        return {
            sym(naming.activation(0)): nota.batch("A", 0),
            sym(naming.own_activation(layer)): f"{nota.act_letter(layer)}({zb})",
            sym(naming.activation_gradient(layer)): grad,
            sym(naming.sigma_prime(layer)): f"{nota.act_letter(layer)}'({zb})",
        }

    def residual_latex(self, s: BatchStatement) -> str | None:
        """The residual statements (a skip's forward sum, dC/dA^l, delta from it), or None."""
        nota, layer, names = self.nota, s.layer, self.batch_names
        sym = naming.symbol
        if s.quantity == "own_activation":
            shown = odot_tex(s.expr, names)
            own = names[sym(s.target)]
            if _same_text(shown) != _same_text(own):
                return f"{own} = {shown}"
            if not self.sigma_prime_reads(s.target):
                return own
            sprime = names[sym(naming.sigma_prime(layer))]
            return f"{own} \\quad (\\text{{kept: }} {sprime} \\text{{ is computed from it}})"
        if s.quantity == "activation" and naming.own_activation(layer) in s.operands:
            h, a_k = (names[sym(name)] for name in s.operands)
            return f"{nota.batch('A', layer)} = {h} + {a_k}"
        if s.quantity == "activation_gradient" and s.op == "map":
            return f"{names[sym(s.target)]} = {odot_tex(s.expr, names)}"
        if s.op == "backsum":
            weight, up = nota.weight_matrix(layer + 1), self.error_tex(s.operands[1])
            back = (
                f"{up} {nota.transpose(weight)}" if nota.rows else f"{nota.transpose(weight)} {up}"
            )
            skips = "".join(f" + {names[sym(g)]}" for g in s.operands[2:])
            return f"{names[sym(s.target)]} = {back}{skips}"
        if s.quantity == "delta" and naming.activation_gradient(layer) in s.operands:
            body = names[sym(s.operands[0])] if s.op == "alias" else odot_tex(s.expr, names)
            return f"{nota.batch('D', layer)} = {body}{'' if s.op == 'alias' else _ELEMENTWISE}"
        return None

    def batch_latex(self, s: BatchStatement) -> str:
        """The statement in the notation; an elementwise one printed from its expression."""
        if s.op.startswith("bn_") or s.quantity == "linear":
            return self.batch_norm_latex(s)
        dropout = self.dropout_latex(s) if self.dropped(s.layer) else None
        if dropout is not None:
            return dropout
        residual = self.residual_latex(s) if self.spec.skips else None
        if residual is not None:
            return residual
        nota = self.nota
        layer = s.layer
        zb = nota.batch("Z", layer)
        if s.op == "alias":
            if nota.name == "cheatsheet":
                # The cheatsheet names the input X only: its shape, one example per row
                # (rows layout) or per column.
                n0 = self.spec.input_size
                shape = f"m \\times {n0}" if nota.rows else f"{n0} \\times m"
                return f"X \\in \\mathbb{{R}}^{{{shape}}}"
            return f"{nota.batch_a0} = X"
        if s.op == "affine":
            return f"{zb} = {self.affine_latex(s)}"
        if s.op in ("log_softmax", "log1m_softmax"):
            return self.log_softmax_latex(s)
        if s.op == "loss":
            return self.loss_latex(s)
        if s.op == "unit_sum":
            body = _tex(s.expr, self.batch_names)
            if nota.rows:
                return f"s = \\left({body}\\right) {self.unit_ones}"
            return f"s = {self.unit_ones}^{{T}} \\left({body}\\right)"
        if s.op == "other_units":
            return self.other_units_latex(s)
        if s.op == "map":
            return self.map_latex(s)
        return self.product_latex(s)

    def batch_norm_latex(self, s: BatchStatement) -> str:
        """A batch-normalized layer's statements: U = W A, the batch mean and biased
        variance per unit, X-hat, Z = gamma X-hat + beta, the two parameter gradients and
        the three-term error at U (the elementwise ones printed from their expressions,
        epsilon named)."""
        nota, names, sym, layer = self.nota, self.batch_names, naming.symbol, s.layer
        rows, mean = nota.rows, "\\frac{1}{m}"

        def name(identifier: str) -> str:
            return names[sym(identifier)]

        def over_examples(body: str) -> str:  # (1/m) times body summed over the examples
            return f"{mean} {ONES}^{{T}} {body}" if rows else f"{mean} {body} {ONES}"

        shown = s.expr.xreplace({batch_norm.EPS: EPSILON}) if s.expr is not None else None
        if s.quantity == "linear":
            return f"{name(s.target)} = {self.affine_latex(s)}"
        if s.op == "bn_mean":
            return f"{name(s.target)} = {over_examples(name(s.operands[0]))}"
        if s.op == "bn_var":
            u, mu = name(s.operands[0]), name(s.operands[1])
            spread = f"{ONES} {mu}" if rows else f"{mu} {ONES}^{{T}}"
            centered = f"\\left({u} - {spread}\\right)"
            squares = f"{centered} \\odot {centered}"
            return f"{name(s.target)} = {over_examples(squares)}"
        if s.op in ("bn_gamma_grad", "bn_beta_grad"):
            error = nota.batch("D", layer)
            if s.op == "bn_gamma_grad":
                error = f"\\left({error} \\odot {name(naming.normalized(layer))}\\right)"
            return f"{name(s.target)} = {over_examples(error)}"
        lhs = self.linear_error_tex(layer) if s.op == "bn_backward" else name(s.target)
        return f"{lhs} = {self.batch_norm_rhs(s, shown)}{_ELEMENTWISE}"

    def batch_norm_rhs(self, s: BatchStatement, shown: sp.Expr) -> str:
        """The right side of an elementwise batch-norm statement in the order a reader
        expects (u - mean over the root; the three terms in their order), used only when
        SymPy finds it equal to the statement's expression; else that expression as printed."""
        names, sym, layer = self.batch_names, naming.symbol, s.layer
        u, mean, var, xhat = (
            sym(f(layer))
            for f in (naming.linear, naming.batch_mean, naming.batch_var, naming.normalized)
        )
        gamma, beta, delta = (
            sym(naming.scale(layer)),
            sym(naming.shift(layer)),
            sym(naming.delta(layer)),
        )
        d_gamma, d_beta = (
            sym(naming.grad(naming.scale(layer))),
            sym(naming.grad(naming.shift(layer))),
        )
        root = sp.sqrt(var + EPSILON)
        tex = {n: names[n] for n in (u, mean, var, xhat, gamma, beta, delta, d_gamma, d_beta)}
        sqrt = f"\\sqrt{{{tex[var]} + \\epsilon}}"
        laid = {
            "bn_normalize": (
                (u - mean) / root,
                f"\\frac{{{tex[u]} - {tex[mean]}}}{{{sqrt}}}",
            ),
            "bn_scale": (gamma * xhat + beta, f"{tex[gamma]} \\odot {tex[xhat]} + {tex[beta]}"),
            "bn_backward": (
                gamma / root * (delta - d_beta - xhat * d_gamma),
                f"\\frac{{{tex[gamma]}}}{{{sqrt}}} \\odot \\left({tex[delta]} - {tex[d_beta]} - "
                f"{tex[xhat]} \\odot {tex[d_gamma]}\\right)",
            ),
        }
        built, written = laid.get(s.op, (None, ""))
        if built is not None and sp.expand(built - shown) == 0:
            return written
        return odot_tex(shown, names)

    def dropout_latex(self, s: BatchStatement) -> str | None:
        """The statements particular to a dropout layer (the mask, sigma(Z^l) kept, the
        masked activation), or None."""
        names, sym, layer = self.batch_names, naming.symbol, s.layer
        if s.op == "dropout":
            return self.mask_latex(layer, batch=True)
        if s.quantity == "own_activation":
            own, shown = names[sym(s.target)], odot_tex(s.expr, names)
            if self.sigma_prime_reads(s.target):
                sprime = names[sym(naming.sigma_prime(layer))]
                return f"{own} \\quad (\\text{{kept: }} {sprime} \\text{{ is computed from it}})"
            # f' read from z (relu, mish, an expression) or not needed (linear): no claim
            return own if _same_text(shown) == _same_text(own) else f"{own} = {shown}"
        if s.quantity == "activation" and naming.dropout_mask(layer) in s.operands:
            return f"{self.nota.batch('A', layer)} = {odot_tex(s.expr, names)}"
        return None

    def sigma_prime_reads(self, own: str) -> bool:
        """True when a sigma' statement of the program reads the kept output ``own``."""
        return any(s.quantity == "sigma_prime" and own in s.operands for s in self.program)

    def affine_latex(self, s: BatchStatement) -> str:
        nota, layer = self.nota, s.layer
        prev, wb = nota.batch("A", layer - 1), nota.weight_matrix(layer)
        bias = len(s.operands) == 3
        if nota.rows:
            return f"{prev} {wb}" + (f" + {ONES} {nota.b(layer)}" if bias else "")
        return f"{wb} {prev}" + (f" + {nota.b(layer)} {ONES}^{{T}}" if bias else "")

    def log_softmax_latex(self, s: BatchStatement) -> str:
        zb, ab = self.nota.batch("Z", s.layer), self.nota.batch("A", s.layer)
        one = self.unit_ones
        if self.nota.rows:
            norm = f"\\log\\left(e^{{{zb}}} {one}\\right) {one}^{{T}}"
            others = f"\\log\\left(e^{{{zb}}} ({one}{one}^{{T}} - I)\\right)"
        else:
            norm = f"{one} \\log\\left({one}^{{T}} e^{{{zb}}}\\right)"
            others = f"\\log\\left(({one}{one}^{{T}} - I) e^{{{zb}}}\\right)"
        if s.op == "log_softmax":
            return f"\\log {ab} = {zb} - {norm}"
        return f"\\log(1 - {ab}) = {others} - {norm}"

    def loss_latex(self, s: BatchStatement) -> str:
        """C as the mean of the per-entry cost, each batch matrix written by its entry."""
        nota, layer, sym = self.nota, s.layer, naming.symbol
        idx = "ij" if nota.rows else "ji"
        entry = f"{{{nota.batch('A', layer)}}}_{{{idx}}}"
        entries = {
            sym(naming.weighted_input(layer)): f"{{{nota.batch('Z', layer)}}}_{{{idx}}}",
            sym(naming.activation(layer)): entry,
            sym(naming.TARGET): f"Y_{{{idx}}}",
            sym(naming.log_output(layer)): f"\\log {entry}",
            sym(naming.log_complement(layer)): f"\\log(1 - {entry})",
        }
        mean = "C = \\frac{1}{m} \\sum_{i} \\sum_{j}"
        body = _tex(s.expr, entries)
        latex = f"{mean} \\left({body}\\right)" if isinstance(s.expr, sp.Add) else f"{mean} {body}"
        if self.logit_cost(s):
            # The same cost in the output and the target, as the source writes it.
            names = {A: entry, Y: f"Y_{{{idx}}}", LOGP: f"\\log {entry}"}
            in_a_y = _tex(self.d.output.cost_element, names)
            latex += f" = {mean[4:]} \\left({in_a_y}\\right)"
        latex += self.penalty_cost_tex()
        if "softplus" in latex:
            latex += (
                ", \\quad \\text{with } \\operatorname{softplus}(t) = \\log\\left(1 + e^{t}\\right)"
            )
        return latex

    def other_units_latex(self, s: BatchStatement) -> str:
        nota = self.nota
        r_name, ab = nota.batch("R", s.layer), nota.batch("A", s.layer)
        idx, kdx = ("ij", "ik") if nota.rows else ("ji", "ki")  # unit and example, i the example
        v = _tex(s.expr, self.batch_names)
        slope = nota.partial("C", f"\\log(1 - {ab})")  # C'(log(1 - Ŷ)) in the cheatsheet
        return (
            f"{{{r_name}}}_{{{idx}}} = \\sum_{{k \\neq j}} V_{{{kdx}}} "
            f"\\frac{{{{{ab}}}_{{{idx}}}}}"
            f"{{1 - {{{ab}}}_{{{kdx}}}}}, \\quad V = {slope} = {v}"
        )

    def map_latex(self, s: BatchStatement) -> str:
        nota, layer = self.nota, s.layer
        zb, ab = nota.batch("Z", layer), nota.batch("A", layer)
        shown = odot_tex(s.expr, self.batch_names)
        if s.quantity == "delta":
            return f"{nota.batch('D', layer)} = {shown}{_ELEMENTWISE}"
        if s.quantity == "sigma_prime":
            parts = [f"{nota.act_letter(layer)}'({zb})", odot_tex(s.derivative, self.batch_names)]
            if not _same_text(parts[-1]) == _same_text(shown):
                parts.append(shown)
            return " = ".join(parts)
        if s.operands == (naming.log_output(layer),):
            return f"{ab} = {shown}"
        parts = [ab, f"{nota.act_letter(layer)}({zb})"]
        if _same_text(shown) not in [_same_text(p) for p in parts]:
            parts.append(shown)
        return " = ".join(parts)

    def product_latex(self, s: BatchStatement) -> str:
        nota, layer, rows = self.nota, s.layer, self.nota.rows
        if s.op == "backprop":
            weight, up = nota.weight_matrix(layer + 1), self.error_tex(s.operands[1])
            back = f"{up} {nota.transpose(weight)}" if rows else f"{nota.transpose(weight)} {up}"
            if len(s.operands) > 2:
                factors = [self.batch_names[naming.symbol(name)] for name in s.operands[2:]]
                back = f"\\left({back}\\right) \\odot " + " \\odot ".join(factors)
            return f"{nota.batch('D', layer)} = {back}"
        dl = self.error_tex(s.operands[0])
        if s.op == "outer":
            ab = nota.transpose(nota.batch("A", layer - 1))
            body = f"{ab} {dl}" if rows else f"{dl} {ab}"
            extra = self.penalty_tex(nota.weight_matrix(layer))
            return f"{nota.grad('C', nota.weight_matrix(layer))} = \\frac{{1}}{{m}} {body}{extra}"
        body = f"{ONES}^{{T}} {dl}" if rows else f"{dl} {ONES}"
        return f"{nota.grad('C', nota.b(layer))} = \\frac{{1}}{{m}} {body}"
