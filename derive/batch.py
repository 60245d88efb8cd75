"""The mini-batch program: the ordered statements of one backpropagation step, as math.

:func:`batch_program` turns a :class:`~chainrule.derive.layers.NetworkDerivation` into
one ordered tuple of :class:`BatchStatement`: forward values, the cost, then BP1..BP4
from the output layer down. Each statement holds its target identifier, its operation,
its operands, the elementwise SymPy expression it applies (for the elementwise
operations), its label, its layer, the quantity it computes and its equation in the
spec's own layout and operand order.

This tuple is the one source of every rendering of the mini-batch step: the generated
module's code and comments (:mod:`chainrule.codegen.program` adds the fast code:
buffers, ``out=``, in-place updates), the derivation's vectorized section (which
renders each statement and checks it with :func:`run_statement` on a symbolic batch).
The math here uses the per-example layer error: delta^l holds one column (row) per
example, and the gradients carry the 1/m of the cost's mean.

Operations (``op``) and what :func:`run_statement` computes for them, in the columns
layout (rows: every product transposed, operands swapped):

=================  ==========================================================
``alias``          the operand itself (a^0 = x)
``affine``         W prev + b 1^T
``log_softmax``    z - log sum_k exp(z_k), per example
``log1m_softmax``  log sum_(k != j) exp(z_k) - log sum_k exp(z_k), per example
``map``            ``expr`` elementwise
``unit_sum``       sum over units of ``expr`` elementwise, per example
``other_units``    sum over k != j of v_k a_j / (1 - a_k), v = ``expr``
``loss``           (1/m) sum of ``expr`` over examples and units, plus the sum of
                   the entries of each ``penalty`` term (L2/L1 regularization)
``backprop``       (W^T delta) elementwise-times each further operand (sigma', D)
``dropout``        the layer's dropout mask D^l, an input of the step: taken from
                   ``env`` under its target (the module draws it)
``backsum``        W^T delta plus the further operands (residual: dC/da^k summed over paths)
``outer``          (1/m) delta prev^T, plus the ``penalty`` term elementwise
``example_sum``    (1/m) delta 1
``bn_mean``        (1/m) u 1: the batch mean per unit
``bn_var``         (1/m) sum over examples of (u - mean)^2: the biased variance
``bn_normalize``   ``expr`` elementwise: (u - mean) / sqrt(var + eps)
``bn_scale``       ``expr`` elementwise: gamma xhat + beta
``bn_gamma_grad``  (1/m) sum over examples of delta * xhat
``bn_beta_grad``   (1/m) delta 1
``bn_backward``    ``expr`` elementwise: the three-term error at u (see
                   :mod:`chainrule.derive.batch_norm`, which derives and checks it)
=================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import sympy as sp
from chainrule.derive import batch_norm, naming, penalty
from chainrule.derive.batch_network import columnwise, log1m_softmax, log_softmax
from chainrule.derive.layers import (
    LOG1MP,
    LOGP,
    MASK,
    REST,
    UNIT_SUM,
    A,
    NetworkDerivation,
    Y,
    Z,
    dropout_factor,
)
from sympy.printing.str import StrPrinter


@dataclass(frozen=True)
class BatchStatement:
    """One statement of the mini-batch program: ``target = op(operands)``.

    ``expr`` is the elementwise SymPy expression (in identifier symbols) of ``map``,
    ``unit_sum``, ``loss`` and ``other_units`` (the weights v); ``quantity`` is the
    kind of value (see :func:`chainrule.derive.naming.kind`); ``equation`` is the
    statement as one plain-text line in the spec's layout; ``derivative`` is, for a
    sigma' statement, the derivative it equals (``expr`` is its cheaper cached form).
    """

    target: str
    op: str
    operands: tuple[str, ...]
    expr: sp.Expr | None
    label: str
    layer: int
    quantity: str
    equation: str
    derivative: sp.Expr | None = None
    #: L2/L1 regularization (:mod:`chainrule.derive.penalty`): for ``loss``, p(W^l) of each
    #: layer (summed over its entries); for ``outer``, dp/dW^l (added entrywise); in the
    #: weight and coefficient symbols. Empty without regularization.
    penalty: tuple[sp.Expr, ...] = ()
    #: The coefficients' values by symbol name (``l2``, ``l1``), for :func:`run_statement`.
    constants: tuple[tuple[str, sp.Expr], ...] = ()


class _PlainPrinter(StrPrinter):
    """SymPy's str form with a piecewise function written as a conditional expression."""

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:  # noqa: N802 - printer dispatch
        *branches, (last, cond) = expr.args
        text = self._print(last) if cond == sp.true else f"{self._print(last)} if {cond} else 0"
        for value, condition in reversed(branches):
            text = f"{self._print(value)} if {self._print(condition)} else {text}"
        return f"({text})"


def plain(expr: sp.Expr) -> str:
    """``expr`` as one line of plain text: SymPy's str form, piecewise as ``x if c else y``.

    Examples
    --------
    >>> z = naming.symbol("z1")
    >>> plain(sp.Piecewise((1, z > 0), (sp.Rational(1, 100), True)))
    '(1 if z1 > 0 else 1/100)'
    """
    return _PlainPrinter().doprint(expr)


def layer_symbols(layer: int) -> dict[sp.Symbol, sp.Symbol]:
    """The per-element symbols of :mod:`chainrule.derive.layers` as identifiers of ``layer``."""
    sym = naming.symbol
    return {
        Z: sym(naming.weighted_input(layer)),
        A: sym(naming.activation(layer)),
        Y: sym(naming.TARGET),
        LOGP: sym(naming.log_output(layer)),
        LOG1MP: sym(naming.log_complement(layer)),
        REST: sym(naming.other_units(layer)),
        UNIT_SUM: sym(naming.unit_sum(layer)),
    }


def _names(expr: sp.Expr) -> tuple[str, ...]:
    return tuple(sorted(s.name for s in expr.free_symbols))


def function_name(derivation: NetworkDerivation, layer: int) -> str:
    """The name a plain-text equation gives the activation of ``layer`` (``f`` for an
    activation given as an expression)."""
    spec_layer = derivation.spec.layers[layer - 1]
    return "f" if spec_layer.is_custom else spec_layer.activation


class _BatchProgramBuilder:
    """Builds the ordered statements of one network's mini-batch step."""

    def __init__(self, derivation: NetworkDerivation) -> None:
        self.d = derivation
        self.spec = derivation.spec
        self.rows = self.spec.layout == "rows"
        self.depth = self.spec.depth
        self.out: list[BatchStatement] = []

    def add(
        self,
        target: str,
        op: str,
        operands: tuple[str, ...],
        expr: sp.Expr | None,
        label: str,
        layer: int,
        equation: str,
        derivative: sp.Expr | None = None,
    ) -> None:
        kind = naming.kind(target)
        self.out.append(
            BatchStatement(target, op, operands, expr, label, layer, kind, equation, derivative)
        )

    def product(self, left: str, right: str) -> str:
        """A matrix product written in the layout's operand order (columns: left right)."""
        return f"{right} {left}" if self.rows else f"{left} {right}"

    # -- forward --------------------------------------------------------------------------
    def forward(self) -> None:
        self.add(
            naming.activation(0),
            "alias",
            (naming.INPUT,),
            None,
            "forward",
            0,
            f"{naming.activation(0)} = {naming.INPUT}",
        )
        for layer, spec_layer in enumerate(self.spec.layers, start=1):
            w, b = naming.weight(layer), naming.bias(layer)
            prev, z = naming.activation(layer - 1), naming.weighted_input(layer)
            operands = (w, prev, b) if spec_layer.bias else (w, prev)
            eq = f"{z} = {self.product(w, prev)}" + (f" + {b}" if spec_layer.bias else "")
            if spec_layer.batch_norm:
                self.normalized_input(layer)
            else:
                self.add(z, "affine", operands, None, "forward", layer, eq)
            if self.d.activations[layer - 1] is None:
                self.softmax(layer)
            elif spec_layer.skip_from is not None:
                self.residual_activation(layer, spec_layer.skip_from)
            elif spec_layer.dropout:
                self.dropout_activation(layer, float(spec_layer.dropout))
            else:
                self.activation(layer)

    def normalized_input(self, layer: int) -> None:
        """z^l of a batch-normalized layer: u, the batch mean and variance, xhat, z."""
        sym = naming.symbol
        w, prev = naming.weight(layer), naming.activation(layer - 1)
        u, mean, var = naming.linear(layer), naming.batch_mean(layer), naming.batch_var(layer)
        xhat, z = naming.normalized(layer), naming.weighted_input(layer)
        gamma, beta = naming.scale(layer), naming.shift(layer)
        self.add(u, "affine", (w, prev), None, "forward", layer, f"{u} = {self.product(w, prev)}")
        ones = "1^T" if self.rows else "1"
        self.add(
            mean,
            "bn_mean",
            (u,),
            None,
            "forward",
            layer,
            f"{mean} = (1/m) {self.product(u, ones)} (batch norm: the batch mean per unit)",
        )
        self.add(
            var,
            "bn_var",
            (u, mean),
            None,
            "forward",
            layer,
            f"{var} = (1/m) sum over examples of ({u} - {mean})**2 (biased variance)",
        )
        normal = batch_norm.normalize(sym(u), sym(mean), sym(var))
        self.add(
            xhat,
            "bn_normalize",
            (u, mean, var),
            normal,
            "forward",
            layer,
            f"{xhat} = ({u} - {mean}) / sqrt({var} + {batch_norm.EPS_TEXT})",
        )
        shifted = batch_norm.scale_shift(sym(gamma), sym(xhat), sym(beta))
        self.add(
            z, "bn_scale", (gamma, xhat, beta), shifted, "forward", layer, f"{z} = {plain(shifted)}"
        )

    def activation(self, layer: int) -> None:
        act = self.d.activations[layer - 1]
        a, z = naming.activation(layer), naming.weighted_input(layer)
        expr = act.forward.subs(layer_symbols(layer))
        # Only table names and SymPy's printing of a parsed expression reach the text.
        call = f"{function_name(self.d, layer)}({z})"
        shown = plain(expr)
        eq = f"{a} = {call}" + ("" if shown == call else f" = {shown}")
        self.add(a, "map", _names(expr), expr, "forward", layer, eq)

    def softmax(self, layer: int) -> None:
        z, a = naming.weighted_input(layer), naming.activation(layer)
        logp, log1m = naming.log_output(layer), naming.log_complement(layer)
        self.add(
            logp,
            "log_softmax",
            (z,),
            None,
            "forward",
            layer,
            f"{logp} = log {a} = {z} - log sum_k exp({z}_k)",
        )
        if layer == self.depth and self.d.output.complement is not None:
            self.add(
                log1m,
                "log1m_softmax",
                (z,),
                None,
                "forward",
                layer,
                f"{log1m} = log(1 - {a}) = log sum_(k != j) exp({z}_k) - log sum_k exp({z}_k)",
            )
        expr = sp.exp(naming.symbol(logp))
        self.add(a, "map", (logp,), expr, "forward", layer, f"{a} = softmax({z}) = {plain(expr)}")

    def cost(self) -> None:
        expr = self.d.output.loss_element.subs(layer_symbols(self.depth))
        self.add(
            naming.COST,
            "loss",
            _names(expr),
            expr,
            "cost",
            self.depth,
            f"{naming.COST} = (1/m) sum over examples and units of {plain(expr)}",
        )

    # -- backward -------------------------------------------------------------------------
    def output_error(self) -> None:
        if self.depth in self.spec.skips:
            self.residual_output_error()
            return
        big_l, output = self.depth, self.d.output
        symbols = layer_symbols(big_l)
        delta, a = naming.delta(big_l), naming.activation(big_l)
        if output.softmax is None:
            expr = output.delta.subs(symbols)
            act = function_name(self.d, big_l)
            dc_da = plain(output.dcost_da.subs(symbols))
            eq = f"{delta} = dC/d{a} * {act}'({naming.weighted_input(big_l)}) = {plain(expr)}"
            if len(eq) + len(dc_da) < 80:
                eq = f"{delta} = ({dc_da}) * {act}'({naming.weighted_input(big_l)}) = {plain(expr)}"
        elif output.complement is not None:
            expr = self.complement_terms()
            eq = f"{delta} = J_softmax^T dC/d{a} = {plain(expr)}"
        elif output.softmax.summand_total is not None:
            expr = output.softmax.elementwise.subs(symbols)
            eq = f"{delta} = J_softmax^T dC/d{a} = {plain(expr)} (sum_j y_j = 1)"
        else:
            jvp = output.softmax
            self.unit_sum(big_l, jvp.summand.subs(symbols))
            expr = (jvp.elementwise + jvp.scale * UNIT_SUM).subs(symbols)
            eq = f"{delta} = J_softmax^T dC/d{a} = {plain(expr)}"
        self.add(delta, "map", _names(expr), expr, "BP1", big_l, eq)

    def complement_terms(self) -> sp.Expr:
        """The other-units term and the unit sum of a softmax under a cost in log(1 - a);
        returns delta^L's elementwise expression over them."""
        big_l, comp = self.depth, self.d.output.complement
        symbols = layer_symbols(big_l)
        a, logp, log1m = (
            naming.activation(big_l),
            naming.log_output(big_l),
            naming.log_complement(big_l),
        )
        rest = naming.other_units(big_l)
        weights = comp.dlog1m.subs(symbols)
        self.add(
            rest,
            "other_units",
            (a, logp, log1m),
            weights,
            "BP1",
            big_l,
            f"{rest}_j = sum over k != j of v_k {a}_j / (1 - {a}_k), v = {plain(weights)}",
        )
        if not comp.summand_is_constant:
            self.unit_sum(big_l, comp.summand.subs(symbols))
        return comp.delta.subs(symbols)

    def unit_sum(self, big_l: int, summand: sp.Expr) -> None:
        """BP1's sum over the output units of ``summand`` (one value per example)."""
        s = naming.unit_sum(big_l)
        self.add(
            s,
            "unit_sum",
            _names(summand),
            summand,
            "BP1",
            big_l,
            f"{s} = sum over units of {plain(summand)}",
        )

    def hidden_error(self, layer: int) -> None:
        if layer in self.spec.skips or layer in self.spec.skips.values():
            self.residual_error(layer)
            return
        if self.spec.layers[layer - 1].dropout:
            self.dropout_error(layer)
            return
        act = self.d.activations[layer - 1]
        delta, upper = naming.delta(layer), self.upper_error(layer + 1)
        w_up, sprime = naming.weight(layer + 1), naming.sigma_prime(layer)
        back = self.product(f"{w_up}^T", upper)
        cached = act.cached.subs(layer_symbols(layer))
        if cached == 1:
            name = function_name(self.d, layer)
            self.add(
                delta,
                "backprop",
                (w_up, upper),
                None,
                "BP2",
                layer,
                f"{delta} = {back} ({name}' = 1)",
            )
            return
        derivative = act.derivative.subs(Z, naming.symbol(naming.weighted_input(layer)))
        call = f"{function_name(self.d, layer)}'({naming.weighted_input(layer)})"
        forms = [call]
        for form in (derivative, cached):
            if plain(form) not in forms:
                forms.append(plain(form))
        self.add(
            sprime,
            "map",
            _names(cached),
            cached,
            "BP2",
            layer,
            f"{sprime} = " + " = ".join(forms),
            derivative,
        )
        self.add(
            delta,
            "backprop",
            (w_up, upper, sprime),
            None,
            "BP2",
            layer,
            f"{delta} = ({back}) * {sprime}",
        )

    # -- dropout ----------------------------------------------------------------------------
    def dropout_activation(self, layer: int, p: float) -> None:
        """a^l = D^l * sigma(z^l): sigma(z^l) kept as h^l (sigma'(z^l) is computed from it),
        then the mask D^l = r^l / (1 - p), then their product."""
        a, h, mask = (
            naming.activation(layer),
            naming.own_activation(layer),
            naming.dropout_mask(layer),
        )
        product = self.own_output(layer)
        self.add(a, "map", (mask, h), product, "forward", layer, f"{a} = {mask} * {h} (dropout)")

    def own_output(self, layer: int) -> sp.Expr:
        """The statements of h^l = sigma(z^l) and, with dropout, of the mask D^l; returns the
        layer's own output, D^l * h^l with dropout (h^l without), as a SymPy product."""
        act = self.d.activations[layer - 1]
        h, z = naming.own_activation(layer), naming.weighted_input(layer)
        mask = naming.dropout_mask(layer)
        expr = act.forward.subs(layer_symbols(layer))
        call = f"{function_name(self.d, layer)}({z})"
        shown = plain(expr)
        eq = f"{h} = {call}" + ("" if shown == call else f" = {shown}")
        self.add(h, "map", _names(expr), expr, "forward", layer, eq)
        p = float(self.spec.layers[layer - 1].dropout)
        if not p:
            return naming.symbol(h)
        self.add(
            mask,
            "dropout",
            (h,),
            None,
            "forward",
            layer,
            f"{mask} = r{layer} / (1 - p), r{layer} ~ Bernoulli(1 - p) per unit and example, "
            f"p = {p!r} (dropout; training only, {mask} = 1 in forward)",
        )
        return naming.symbol(mask) * naming.symbol(h)

    def dropout_error(self, layer: int) -> None:
        """BP2 at a dropout layer: delta^l = (W^T delta^(l+1)) * D^l * sigma'(z^l), the mask
        factor being SymPy's d(D sigma(z))/dz over sigma'(z); sigma' is read from h^l."""
        act = self.d.activations[layer - 1]
        delta, upper = naming.delta(layer), self.upper_error(layer + 1)
        w_up, sprime = naming.weight(layer + 1), naming.sigma_prime(layer)
        mask = naming.dropout_mask(layer)
        factor = dropout_factor().subs(MASK, naming.symbol(mask))
        back = self.product(f"{w_up}^T", upper)
        symbols = {**layer_symbols(layer), A: naming.symbol(naming.own_activation(layer))}
        cached = act.cached.subs(symbols)
        if cached == 1:
            name = function_name(self.d, layer)
            eq = f"{delta} = ({back}) * {plain(factor)} ({name}' = 1; dropout mask)"
            self.add(delta, "backprop", (w_up, upper, *_names(factor)), None, "BP2", layer, eq)
            return
        derivative = act.derivative.subs(Z, naming.symbol(naming.weighted_input(layer)))
        forms = [f"{function_name(self.d, layer)}'({naming.weighted_input(layer)})"]
        for form in (derivative, cached):
            if plain(form) not in forms:
                forms.append(plain(form))
        eq = f"{sprime} = " + " = ".join(forms)
        self.add(sprime, "map", _names(cached), cached, "BP2", layer, eq, derivative)
        eq = f"{delta} = ({back}) * {plain(factor)} * {sprime} (dropout mask)"
        operands = (w_up, upper, *_names(factor), sprime)
        self.add(delta, "backprop", operands, None, "BP2", layer, eq)

    def upper_error(self, layer: int) -> str:
        """The error BP2 takes back through W^layer: delta^layer, or for a batch-normalized
        layer the error at its u (the three-term form)."""
        if self.spec.layers[layer - 1].batch_norm:
            return naming.linear_delta(layer)
        return naming.delta(layer)

    def normalized_gradients(self, layer: int) -> str:
        """dC/dgamma, dC/dbeta and the three-term error at u of a batch-normalized layer;
        returns the error's identifier (BP4's dC/dW and BP2 below use it)."""
        batch_norm.derive_backward()  # the three-term form, checked against the chain rule
        sym = naming.symbol
        delta, xhat = naming.delta(layer), naming.normalized(layer)
        gamma, var = naming.scale(layer), naming.batch_var(layer)
        d_gamma, d_beta = naming.grad(gamma), naming.grad(naming.shift(layer))
        deltau = naming.linear_delta(layer)
        self.add(
            d_gamma,
            "bn_gamma_grad",
            (delta, xhat),
            None,
            "BN",
            layer,
            f"dC/d{gamma} = (1/m) sum over examples of {delta} * {xhat} = mean({delta} * {xhat})",
        )
        ones = "1^T" if self.rows else "1"
        self.add(
            d_beta,
            "bn_beta_grad",
            (delta,),
            None,
            "BN",
            layer,
            f"dC/d{naming.shift(layer)} = (1/m) {self.product(delta, ones)} = mean({delta})",
        )
        # The gradients of beta and gamma are mean(delta) and mean(delta xhat).
        three = batch_norm.input_error(
            sym(gamma), sym(var), sym(delta), sym(d_beta), sym(xhat), sym(d_gamma)
        )
        self.add(
            deltau,
            "bn_backward",
            _names(three),
            three,
            "BN",
            layer,
            f"{deltau} = {gamma} / sqrt({var} + {batch_norm.EPS_TEXT}) * ({delta} - mean({delta})"
            f" - {xhat} * mean({delta} * {xhat})): three terms (the mean and the variance)",
        )
        return deltau

    # -- residual connections ---------------------------------------------------------------
    def residual_activation(self, layer: int, source: int) -> None:
        """a^l = sigma(z^l) + a^k: sigma(z^l) kept as h^l (sigma'(z^l) is computed from it);
        with dropout a^l = D^l * sigma(z^l) + a^k, the mask before the skip is added."""
        h, a, z = (
            naming.own_activation(layer),
            naming.activation(layer),
            naming.weighted_input(layer),
        )
        a_k = naming.activation(source)
        call = f"{function_name(self.d, layer)}({z})"
        own = self.own_output(layer)
        if own != naming.symbol(h):  # dropout: the mask applies before the skip is added
            mask = naming.dropout_mask(layer)
            call, h = f"{mask} * {call}", f"{mask} * {h}"
        total = own + naming.symbol(a_k)
        eq = f"{a} = {call} + {a_k} = {h} + {a_k} (residual connection from layer {source})"
        self.add(a, "map", _names(total), total, "forward", layer, eq)

    def residual_symbols(self, layer: int) -> dict[sp.Symbol, sp.Symbol]:
        """Layer symbols where the cached output a means sigma(z^l) (h^l with a skip in)."""
        symbols = layer_symbols(layer)
        if layer in self.spec.skips or self.spec.layers[layer - 1].dropout:
            symbols[A] = naming.symbol(naming.own_activation(layer))
        return symbols

    def residual_delta(self, layer: int, label: str) -> None:
        """delta^l = dC/da^l * sigma'(z^l), from the stored dC/da^l."""
        act = self.d.activations[layer - 1]
        g, delta = naming.activation_gradient(layer), naming.delta(layer)
        cached = act.cached.subs(self.residual_symbols(layer))
        if self.spec.layers[layer - 1].dropout:
            self.residual_dropout_delta(layer, label, cached)
            return
        if cached == 1:
            name = function_name(self.d, layer)
            self.add(delta, "alias", (g,), None, label, layer, f"{delta} = {g} ({name}' = 1)")
            return
        sprime = self.residual_sigma_prime(layer, label, cached)
        expr = naming.symbol(g) * naming.symbol(sprime)
        self.add(delta, "map", (g, sprime), expr, label, layer, f"{delta} = {g} * {sprime}")

    def residual_sigma_prime(self, layer: int, label: str, cached: sp.Expr) -> str:
        """The statement sigma'(z^l) = its derivative = its cached form, at a layer a skip
        touches; returns its name."""
        act = self.d.activations[layer - 1]
        sprime = naming.sigma_prime(layer)
        derivative = act.derivative.subs(Z, naming.symbol(naming.weighted_input(layer)))
        forms = [f"{function_name(self.d, layer)}'({naming.weighted_input(layer)})"]
        for form in (derivative, cached):
            if plain(form) not in forms:
                forms.append(plain(form))
        eq = f"{sprime} = " + " = ".join(forms)
        self.add(sprime, "map", _names(cached), cached, label, layer, eq, derivative)
        return sprime

    def residual_dropout_delta(self, layer: int, label: str, cached: sp.Expr) -> None:
        """delta^l = dC/da^l * D^l * sigma'(z^l) at a dropout layer a skip touches (the mask
        factor is SymPy's, as in BP2 without a skip)."""
        g, delta = naming.activation_gradient(layer), naming.delta(layer)
        factor = dropout_factor().subs(MASK, naming.symbol(naming.dropout_mask(layer)))
        product = naming.symbol(g) * factor
        if cached != 1:
            sprime = self.residual_sigma_prime(layer, label, cached)
            product *= naming.symbol(sprime)
        eq = f"{delta} = {g} * {plain(factor)}" + (f" * {sprime}" if cached != 1 else "")
        self.add(delta, "map", _names(product), product, label, layer, eq + " (dropout mask)")

    def residual_error(self, layer: int) -> None:
        """BP2 at a layer a skip touches: dC/da^l summed over the path through layer l+1
        and the skips out of l, then delta^l = dC/da^l * sigma'(z^l)."""
        g = naming.activation_gradient(layer)
        w_up, upper = naming.weight(layer + 1), self.upper_error(layer + 1)
        fed = [
            naming.activation_gradient(dest)
            for dest, k in sorted(self.spec.skips.items())
            if k == layer
        ]
        back = self.product(f"{w_up}^T", upper)
        paths = "".join(f" + {name}" for name in fed)
        into = [str(naming.layer_of(name)) for name in fed]
        note = ""
        if len(into) == 1:
            note = f" (paths through layer {layer + 1} and the skip into layer {into[0]})"
        elif into:
            listed = f"{', '.join(into[:-1])} and {into[-1]}"
            note = f" (paths through layer {layer + 1} and the skips into layers {listed})"
        self.add(
            g, "backsum", (w_up, upper, *fed), None, "BP2", layer, f"{g} = {back}{paths}{note}"
        )
        self.residual_delta(layer, "BP2")

    def residual_output_error(self) -> None:
        """BP1 for an output layer with a skip in: dC/da^L stored, then times sigma'(z^L)."""
        big_l = self.depth
        g = naming.activation_gradient(big_l)
        expr = self.d.output.dcost_da.subs(layer_symbols(big_l))
        self.add(
            g,
            "map",
            _names(expr),
            expr,
            "BP1",
            big_l,
            f"{g} = dC/d{naming.activation(big_l)} = {plain(expr)}",
        )
        self.residual_delta(big_l, "BP1")

    def gradients(self, layer: int) -> None:
        delta, prev = naming.delta(layer), naming.activation(layer - 1)
        if self.spec.layers[layer - 1].batch_norm:
            delta = self.normalized_gradients(layer)
        w, b = naming.weight(layer), naming.bias(layer)
        product = self.product(delta, f"{prev}^T")
        self.add(
            naming.grad(w), "outer", (delta, prev), None, "BP4", layer, f"dC/d{w} = (1/m) {product}"
        )
        if self.spec.layers[layer - 1].bias:
            ones = "1^T" if self.rows else "1"
            self.add(
                naming.grad(b),
                "example_sum",
                (delta,),
                None,
                "BP3",
                layer,
                f"dC/d{b} = (1/m) {self.product(delta, ones)}",
            )

    def regularize(self) -> None:
        """Add the L2/L1 weight penalty (derived by SymPy) to the cost and to BP4."""
        spec = self.spec
        element = penalty.penalty_element(spec.l2, spec.l1)
        if element == 0:
            return
        slope = penalty.penalty_derivative(element)
        constants = penalty.coefficients(spec.l2, spec.l1)
        for i, s in enumerate(self.out):
            operands = s.operands
            if s.op == "loss":
                terms = tuple(penalty.for_weight(element, k) for k in range(1, self.depth + 1))
                shown = " + ".join(f"sum({plain(t)})" for t in terms)
            elif s.op == "outer":
                terms = (penalty.for_weight(slope, s.layer),)
                shown = plain(terms[0])
                operands = (*operands, naming.weight(s.layer))
            else:
                continue
            self.out[i] = replace(
                s,
                operands=operands,
                equation=f"{s.equation} + {shown}",
                penalty=terms,
                constants=constants,
            )

    def build(self) -> tuple[BatchStatement, ...]:
        self.forward()
        self.cost()
        self.output_error()
        for layer in range(self.depth, 0, -1):
            if layer < self.depth:
                self.hidden_error(layer)
            self.gradients(layer)
        self.regularize()
        return tuple(self.out)


def batch_program(derivation: NetworkDerivation) -> tuple[BatchStatement, ...]:
    """The ordered statements of ``derivation``'s mini-batch step (forward, cost, backward).

    Examples
    --------
    >>> from chainrule.derive.layers import derive_network
    >>> from chainrule.derive.spec import preset
    >>> [s.equation for s in batch_program(derive_network(preset("cheatsheet-relu")))][-1]
    'dC/dW1 = (1/m) a0^T delta1'
    """
    return _BatchProgramBuilder(derivation).build()


# --------------------------------------------------------------------------- interpreter

#: Evaluates an elementwise expression at one entry: (expr, {symbol: value}) -> value.
Entrywise = Callable[[sp.Expr, dict], sp.Expr]
#: One of the softmax-family builders of :mod:`chainrule.derive.batch_network`.
Builder = Callable[[Sequence[sp.Expr]], list[sp.Expr]]


def _xreplace(expr: sp.Expr, values: dict) -> sp.Expr:
    return expr.xreplace(values)


def _broadcast(mat: sp.Matrix, shape: tuple[int, int]) -> sp.Matrix:
    r, c = mat.shape
    return sp.Matrix(shape[0], shape[1], lambda i, j: mat[i if r > 1 else 0, j if c > 1 else 0])


def _entrywise(expr: sp.Expr, env: dict[str, sp.Matrix], at: Entrywise) -> sp.Matrix:
    symbols = sorted(expr.free_symbols, key=lambda s: s.name)
    if not symbols:
        return sp.Matrix([[expr]])
    shapes = [env[s.name].shape for s in symbols]
    shape = (max(r for r, _ in shapes), max(c for _, c in shapes))
    mats = {s: _broadcast(env[s.name], shape) for s in symbols}
    return sp.Matrix(shape[0], shape[1], lambda i, j: at(expr, {s: mats[s][i, j] for s in symbols}))


def _per_example(z: sp.Matrix, rows: bool, builder: Builder) -> sp.Matrix:
    """Apply ``builder`` (a vector of one example's units -> a vector) to each example of ``z``."""
    return columnwise(builder, z.T).T if rows else columnwise(builder, z)


def _other_units(s: BatchStatement, env: dict, rows: bool, at: Entrywise) -> sp.Matrix:
    a = env[s.operands[0]]
    v = _broadcast(_entrywise(s.expr, env, at), a.shape)

    def rest(i: int, j: int) -> sp.Expr:
        own, count = (j, a.cols) if rows else (i, a.rows)
        terms = []
        for k in range(count):
            if k != own:
                ak, vk = (a[i, k], v[i, k]) if rows else (a[k, j], v[k, j])
                terms.append(vk * a[i, j] / (1 - ak))
        return sp.Add(*terms)

    return sp.Matrix(a.rows, a.cols, rest)


def _example_mean(op: str, ops: list[sp.Matrix], rows: bool, m: int) -> sp.Matrix:
    """(1/m) sum over the examples of u (bn_mean), (u - mean)^2 (bn_var) or delta * xhat."""
    first = ops[0]
    if op == "bn_mean":
        terms = first
    elif op == "bn_var":
        centered = first - _broadcast(ops[1], first.shape)
        terms = centered.multiply_elementwise(centered)
    else:
        terms = first.multiply_elementwise(ops[1])
    if rows:
        return sp.ones(1, terms.rows) * terms / m
    return terms * sp.ones(terms.cols, 1) / m


def _penalty(s: BatchStatement, env: dict[str, sp.Matrix], at: Entrywise) -> list[sp.Matrix]:
    """Each penalty term of ``s`` evaluated entrywise (weights from ``env``, coefficients
    from the statement)."""
    values = {name: sp.Matrix([[value]]) for name, value in s.constants}
    return [_entrywise(term, {**env, **values}, at) for term in s.penalty]


def run_statement(
    s: BatchStatement, env: dict[str, sp.Matrix], rows: bool, m: int, at: Entrywise = _xreplace
) -> sp.Matrix:
    """The value of statement ``s`` given its operands' values in ``env`` (SymPy matrices
    in the layout: units x examples for columns, examples x units for rows; ``y`` and
    the parameters likewise, C as a 1x1 matrix).

    ``at`` evaluates an elementwise expression at one entry (default ``xreplace``).

    Examples
    --------
    >>> x = sp.Matrix([[1, 2]])
    >>> a1 = naming.symbol("a1")
    >>> s = BatchStatement("C", "loss", ("a1",), a1**2, "cost", 1, "cost", "")
    >>> run_statement(s, {"a1": x}, rows=False, m=2)
    Matrix([[5/2]])
    """
    ops = [env[name] for name in s.operands]
    if s.op == "alias":
        return ops[0]
    if s.op == "affine":
        w, prev = ops[0], ops[1]
        z = prev * w if rows else w * prev
        return z + _broadcast(ops[2], z.shape) if len(ops) == 3 else z
    if s.op == "map":
        return _entrywise(s.expr, env, at)
    if s.op in ("log_softmax", "log1m_softmax"):
        builder = log_softmax if s.op == "log_softmax" else log1m_softmax
        return _per_example(ops[0], rows, builder)
    if s.op == "other_units":
        return _other_units(s, env, rows, at)
    if s.op == "unit_sum":
        terms = _entrywise(s.expr, env, at)
        if rows:
            return sp.Matrix(terms.rows, 1, lambda i, _: sp.Add(*terms.row(i)))
        return sp.Matrix(1, terms.cols, lambda _, j: sp.Add(*terms.col(j)))
    if s.op == "loss":
        extra = sp.Add(*(sp.Add(*p) for p in _penalty(s, env, at)))
        return sp.Matrix([[sp.Add(*_entrywise(s.expr, env, at)) / m + extra]])
    if s.op == "backprop":
        back = ops[1] * ops[0].T if rows else ops[0].T * ops[1]
        for factor in ops[2:]:
            back = back.multiply_elementwise(factor)
        return back
    if s.op == "dropout":
        if s.target not in env:
            raise ValueError(f"the dropout mask {s.target} is an input here: give it in env")
        return env[s.target]
    if s.op == "backsum":
        back = ops[1] * ops[0].T if rows else ops[0].T * ops[1]
        return sum(ops[2:], back)
    if s.op == "outer":
        delta, prev = ops[:2]  # a third operand: the weights of the penalty term
        product = (prev.T * delta if rows else delta * prev.T) / m
        for term in _penalty(s, env, at):
            product += term
        return product
    if s.op in ("bn_normalize", "bn_scale", "bn_backward"):
        return _entrywise(s.expr, env, at)
    if s.op in ("bn_mean", "bn_var", "bn_gamma_grad"):
        return _example_mean(s.op, ops, rows, m)
    if s.op in ("example_sum", "bn_beta_grad"):
        (delta,) = ops
        if rows:
            return sp.ones(1, delta.rows) * delta / m
        return delta * sp.ones(delta.cols, 1) / m
    raise ValueError(f"unknown operation {s.op!r}")


__all__ = ["BatchStatement", "batch_program", "layer_symbols", "plain", "run_statement"]
