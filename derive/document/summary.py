"""Section 5 of a derivation: the four equations of backpropagation in vector form."""

from __future__ import annotations

import sympy as sp
from chainrule.derive.document.base import (
    SectionWriterBase,
    _tex,
    odot_tex,
    plus,
)
from chainrule.derive.document.steps import Section, Step
from chainrule.derive.layers import A, Y, Z


class SummarySection(SectionWriterBase):
    """Section 5: BP1 to BP4 in vector form."""

    # -- 5. summary --------------------------------------------------------------------
    def bp1_vector(self) -> Step:
        """BP1 in vector form: dC/da^L times sigma'(z^L), or the softmax Jacobian product."""
        nota, net, d, big_l = self.nota, self.example_net, self.d, self.depth
        rows = nota.rows
        out = d.output
        names = self.names(big_l, None)
        delta_l = net.delta(big_l)
        z_l = net.zfree[big_l]
        a_l = net.output_of(big_l, z_l)

        def oriented(matrix: sp.Matrix) -> sp.Matrix:
            return matrix.T if rows else matrix

        if out.softmax is None:
            times = nota.times(big_l)
            vector = times == "\\odot"
            shown = (lambda e: odot_tex(e, names)) if vector else (lambda e: _tex(e, names))
            first = f"{nota.grad_a()} {times} {nota.sprime(big_l)}"
            second = f"\\left({shown(self.dcda)}\\right) {times} {nota.sprime(big_l)}"
            parts = [nota.delta(big_l), first, second]
            product = sp.Matrix(
                net.n[big_l],
                1,
                lambda j, _: (
                    self.dcda.subs({A: a_l[j, 0], Y: net.y[j, 0]})
                    * self.sprime_at(big_l, z_l[j, 0])
                ),
            )
            sides = [oriented(delta_l), oriented(product), oriented(product)]
            if not out.delta.has(sp.Piecewise) and big_l not in self.spec.skips:
                parts.append(shown(out.delta))
                sides.append(
                    oriented(
                        sp.Matrix(
                            net.n[big_l],
                            1,
                            lambda j, _: out.delta.subs(
                                {A: a_l[j, 0], Z: z_l[j, 0], Y: net.y[j, 0]}
                            ),
                        )
                    )
                )
            latex = " = ".join(parts)
        else:
            jvp = out.softmax
            jac = nota.jacobian(big_l)
            first = f"{nota.transpose(jac)} {nota.grad_a()}"
            sub = lambda expr, j: expr.subs({A: a_l[j, 0], Y: net.y[j, 0]})  # noqa: E731
            n = net.n[big_l]
            if jvp.summand_total is None:
                total = sp.Add(*[sub(jvp.summand, k) for k in range(n)])
                formula = sp.Matrix(
                    n, 1, lambda j, _: sub(jvp.elementwise, j) + sub(jvp.scale, j) * total
                )
                body = plus(
                    _tex(jvp.elementwise, names),
                    f"{_tex(jvp.scale, names)} "
                    f"\\sum_{{k}} {_tex(jvp.summand, self.names(big_l, 'k'))}",
                )
            else:
                formula = sp.Matrix(n, 1, lambda j, _: sub(jvp.elementwise, j))
                body = _tex(jvp.elementwise, names)
            latex = f"{nota.delta(big_l)} = {first} = {body}"
            sides = [oriented(delta_l), oriented(formula)]
        title = "Output layer error" if nota.name == "cheatsheet" else "Output error"
        return Step(title, latex, (tuple(sides),), label="BP1")

    def summary(self) -> Section:
        nota, net, d, big_l = self.nota, self.example_net, self.d, self.depth
        rows = nota.rows
        steps: list[Step] = [self.bp1_vector()]

        def oriented(matrix: sp.Matrix) -> sp.Matrix:
            return matrix.T if rows else matrix

        for layer in range(big_l - 1, 0, -1):
            steps.append(self.bp2_vector(layer))
        for layer in range(big_l, 0, -1):
            if self.spec.layers[layer - 1].bias:
                delta = net.delta_full(layer)
                lhs = sp.Matrix(net.n[layer], 1, lambda j, _, ly=layer: net.dcost(net.b[ly][j, 0]))
                latex = f"{nota.grad(nota.cost, nota.b(layer))} = {nota.delta(layer)}"
                steps.append(
                    Step(
                        f"Bias gradient of layer {self.nota.number(layer)}",
                        latex,
                        ((oriented(lhs), oriented(delta)),),
                        label="BP3",
                    )
                )
        for layer in range(big_l, 0, -1):
            steps.append(self.bp4_vector(layer))
        count = len({step.label for step in steps})
        words = {1: "one", 2: "two", 3: "three", 4: "four"}[count]
        intro = f"The {words} equations of backpropagation for this network, in vector form."
        if not any(ly.bias for ly in self.spec.layers):
            bp3 = " (BP3)" if nota.bp_labels else ""
            intro += f" The network has no biases, so there is no bias gradient{bp3}."
        if any("\\odot" in step.latex for step in steps):
            intro += " $\\odot$ is the elementwise product."
        if d.assumptions:
            intro += " The output error assumes each target sums to one ($\\sum_j y_j = 1$)."
        names = sorted({step.label for step in steps})
        if not nota.bp_labels:
            title = "Summary in vector form"
        elif len(names) == 4:
            title = "Summary: BP1 to BP4"
        else:
            title = "Summary: " + ", ".join(names[:-1]) + " and " + names[-1]
        return Section(title, intro, tuple(steps))

    def scalar_pair(self, upper: int, lower: int) -> bool:
        return self.nota.size(upper) == 1 and self.nota.size(lower) == 1

    def residual_bp2_vector(self, layer: int) -> Step:
        """BP2 at a layer that feeds skips: (W^T delta + the skips' dC/da) * sigma'(z)."""
        nota, net = self.nota, self.example_net
        fed = self.fed_by(layer)
        z = net.z[layer]
        sprime = z.applyfunc(lambda v: self.sprime_at(layer, v))
        masks = sp.Matrix(z.rows, 1, lambda j, _: self.mask_factor(layer, j))
        sprime = sprime.multiply_elementwise(masks)  # SymPy's mask factor with dropout
        total = net.W[layer + 1].T * net.delta_full(layer + 1)
        for d in fed:
            total += net.grad_a_full(d)
        lhs, rhs = net.delta_full(layer), total.multiply_elementwise(sprime)
        weight, up = nota.weight_matrix(layer + 1), nota.delta(layer + 1)
        back = f"{up} {nota.transpose(weight)}" if nota.rows else f"{nota.transpose(weight)} {up}"
        skips = "".join(f" + {nota.partial(nota.cost, nota.a(d))}" for d in fed)
        local = self.masked_sprime_tex(layer, vector=True)
        body = f"\\left({back}{skips}\\right) {nota.times(layer)} {local}"
        if nota.rows:
            lhs, rhs = lhs.T, rhs.T
        title = self.hidden_error_title(layer, "Error of layer")
        return Step(title, f"{nota.delta(layer)} = {body}", ((lhs, rhs),), label="BP2")

    def bp2_vector(self, layer: int) -> Step:
        if self.fed_by(layer):
            return self.residual_bp2_vector(layer)
        nota, net = self.nota, self.example_net
        z = net.zfree[layer]
        inner = net.affine(layer + 1, net.output_of(layer, z))
        upper = net.delta_at(layer + 1, inner)
        sprime = z.applyfunc(lambda v: self.sprime_at(layer, v))
        # With dropout on the layer: SymPy's mask factor, entry by entry, before sigma'.
        masks = sp.Matrix(z.rows, 1, lambda j, _: self.mask_factor(layer, j))
        sprime = sprime.multiply_elementwise(masks)
        if nota.rows:
            lhs = net.delta(layer).T
            rhs = (upper.T * net.W[layer + 1].T.T).multiply_elementwise(sprime.T)
        else:
            lhs = net.delta(layer)
            rhs = (net.W[layer + 1].T * upper).multiply_elementwise(sprime)
        weight = nota.weight_matrix(layer + 1)
        up = nota.delta(layer + 1)
        local = self.masked_sprime_tex(layer, vector=True)  # D^l before f' with dropout
        if self.scalar_pair(layer + 1, layer):
            weight = nota.w(layer + 1, None, None)
            factors = [up, weight, local] if not self.forward_order else [local, weight, up]
            body = self.join(factors)
        elif nota.rows:
            back = f"\\left({up} {nota.transpose(weight)}\\right)"
            body = f"{back} {nota.times(layer)} {local}"
        else:
            back = f"\\left({nota.transpose(weight)} {up}\\right)"
            body = f"{back} {nota.times(layer)} {local}"
        latex = f"{nota.delta(layer)} = {body}"
        title = self.hidden_error_title(layer, "Error of layer")
        return Step(title, latex, ((lhs, rhs),), label="BP2")

    def bp4_vector(self, layer: int) -> Step:
        nota, net = self.nota, self.example_net
        delta = net.delta_full(layer)
        prev = net.a[layer - 1]
        n_out, n_in = net.n[layer], net.n[layer - 1]
        if nota.rows:
            lhs = sp.Matrix(n_in, n_out, lambda k, j: net.dcost(net.W[layer][j, k]))
            rhs = prev.T.T * delta.T + net.W[layer].T.applyfunc(self.penalty_at)
        else:
            lhs = sp.Matrix(n_out, n_in, lambda j, k: net.dcost(net.W[layer][j, k]))
            rhs = delta * prev.T + net.W[layer].applyfunc(self.penalty_at)
        a_prev, d_l = nota.a(layer - 1), nota.delta(layer)
        if self.scalar_pair(layer, layer - 1):
            target = nota.w(layer, None, None)
            body = self.join(self.in_order([d_l, a_prev]))
        else:
            target = nota.weight_matrix(layer)
            body = (
                f"{nota.transpose(a_prev)} {d_l}"
                if nota.rows
                else f"{d_l} {nota.transpose(a_prev)}"
            )
        latex = f"{nota.grad(nota.cost, target)} = {body}{self.penalty_tex(target)}"
        return Step(
            f"Weight gradient of layer {self.nota.number(layer)}", latex, ((lhs, rhs),), label="BP4"
        )
