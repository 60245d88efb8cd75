"""Section 4 of a derivation: the chain rule for one weight of each layer."""

from __future__ import annotations

import sympy as sp
from chainrule.derive.document.base import (
    SectionWriterBase,
    _color,
    _Factor,
    _tex,
    plus,
)
from chainrule.derive.document.steps import Section, Step, closed
from chainrule.derive.document.witness import at
from chainrule.derive.layers import A, Y, Z


class ChainSection(SectionWriterBase):
    """Section 4: the chain rule for one weight per layer, expanded and with shared terms named."""

    # -- 4. the chain rule per layer -------------------------------------------------------
    def chain(self) -> Section:
        steps: list[Step] = []
        for layer in range(self.depth, 0, -1):
            if self.written_out(layer):
                steps.append(self.expanded_step(layer))
            if self.fed_by(layer):
                steps.append(self.two_paths_step(layer))
            steps.append(self.error_step(layer))
            steps.extend(self.gradient_steps(layer))
        intro = (
            "First the chain rule for one weight of each layer, written out in full; then the "
            "same with the shared terms named. The factors that make up the error of the layer "
            "above (or the output error) are computed once and reused: that is what "
            "backpropagation saves."
        )
        if self.spec.skips:
            intro += " " + self.residual_words()
        note = "In the written-out chains those factors are coloured."
        return Section(
            "The chain rule, written out and memoized", intro, tuple(steps), colour_note=note
        )

    def chain_atoms(self, layer: int) -> list[_Factor]:
        """The factors of dC/dw^l_jk from the cost back to the weight.

        ``shared`` marks the factors (and sums) that make up the error of the layer above
        (or the output error when ``layer`` is the last one); ``summation`` is the sum
        over the factor's unit index, written in front of it when reading forward.
        """
        nota, big_l = self.nota, self.depth
        letters = {layer: "j", layer - 1: "k"}
        for m in range(layer + 1, big_l + 1):
            letters[m] = nota.sum_letter(m - layer, m)
        first_shared = layer + 1 if layer < big_l else big_l
        atoms: list[_Factor] = []
        for m in range(big_l, layer - 1, -1):
            i = letters[m]
            if m == big_l and self.d.activations[big_l - 1] is None:
                jac = nota.partial(nota.a(big_l, "t"), nota.z(big_l, i))
                cost = nota.partial(nota.cost, nota.a(big_l, "t"))
                value = self.dcda_tex("t", factor=True)
                if self.forward_order:
                    ratio, shown = f"\\sum_{{t}} {jac} {cost}", f"\\sum_{{t}} {jac} {value}"
                else:
                    ratio, shown = f"\\sum_{{t}} {cost} {jac}", f"\\sum_{{t}} {value} {jac}"
                atoms.append(_Factor(ratio, shown, True))
            else:
                if m == big_l:
                    cost = nota.partial(nota.cost, nota.a(big_l, i))
                    atoms.append(_Factor(cost, self.dcda_tex(i, factor=True), True))
                local = nota.partial(nota.a(m, i), nota.z(m, i))
                atoms.append(_Factor(local, self.masked_sprime_tex(m, i), m >= first_shared))
            if m > layer:
                link = nota.partial(nota.z(m, i), nota.a(m - 1, letters[m - 1]))
                weight = nota.w(m, i, letters[m - 1])
                atoms.append(_Factor(link, weight, m >= first_shared + 1, nota.sum(m, i)))
        entry = nota.partial(nota.z(layer, "j"), nota.w(layer, "j", "k"))
        atoms.append(_Factor(entry, nota.a(layer - 1, "k"), False))
        return atoms

    def render_chain(self, layer: int, attr: str, colour: bool) -> list[str]:
        """Lines of the chain product for ``layer``; ``attr`` is ``ratio`` or ``value``."""
        atoms = self.chain_atoms(layer)

        def paint(text: str, shared: bool) -> str:
            return _color(text) if colour and shared and text else text

        if self.forward_order:
            pieces = []
            for atom in reversed(atoms):
                text = getattr(atom, attr)
                if atom.summation:
                    text = atom.summation + text
                pieces.append(paint(text, atom.shared))
            return self.wrap(pieces)
        outer = "".join(a.summation for a in atoms if a.summation and not a.shared)
        inner = "".join(reversed([a.summation for a in atoms if a.summation and a.shared]))
        group = [getattr(a, attr) for a in atoms if a.shared]
        rest = [getattr(a, attr) for a in atoms if not a.shared]
        if inner:
            group[0] = "\\bigl(" + inner + group[0]
            group[-1] = group[-1] + "\\bigr)"
        pieces = [paint(t, True) for t in group] + rest
        pieces[0] = outer + pieces[0]
        return self.wrap(pieces)

    def wrap(self, pieces: list[str], per_line: int = 8) -> list[str]:
        """The product's factors, ``per_line`` a line; a line that continues the product
        starts with its operator where the notation writes one (the cheatsheet's dot)."""
        lines = []
        visible = self.sep.strip() != "\\,"
        for start in range(0, len(pieces), per_line):
            line = self.join(pieces[start : start + per_line])
            lines.append(f"{self.sep.strip()} {line}" if start and visible else line)
        return lines

    def chain_value(self, layer: int, j: int, k: int, mode: str) -> sp.Expr:
        """dC/dw^l_jk on the witness, as the chain product (``ratio`` or ``value`` factors)."""
        net, d, big_l = self.example_net, self.d, self.depth
        memo: dict[tuple[int, int], sp.Expr] = {}
        a_top, z_top = net.afree[big_l], net.zfree[big_l]
        cost = net.example_costs(a_top)[0]

        def local(m: int, i: int) -> sp.Expr:
            derived, factor = d.activations[m - 1], self.mask_factor(m, i)
            if mode == "ratio":
                own = factor * closed(derived.forward).subs(Z, net.zfree[m][i, 0])
                return net.free_to_full(sp.diff(own, net.zfree[m][i, 0]))
            return factor * at(derived.derivative, net.z[m][i, 0])

        def final(i: int) -> sp.Expr:
            if mode == "ratio":
                return net.free_to_full(sp.diff(cost, a_top[i, 0]))
            return self.dcda.xreplace({A: net.a[big_l][i, 0], Y: net.y[i, 0]})

        def upward(m: int, i: int) -> sp.Expr:
            key = (m, i)
            if key in memo:
                return memo[key]
            if m == big_l:
                if d.activations[m - 1] is None:
                    soft = net.activate(big_l, z_top)
                    out = sp.Add(
                        *[
                            net.free_to_full(sp.diff(soft[t, 0], z_top[i, 0])) * final(t)
                            for t in range(net.n[big_l])
                        ]
                    )
                else:
                    out = local(m, i) * final(i)
            else:
                out = local(m, i) * sp.Add(
                    *[net.W[m + 1][q, i] * upward(m + 1, q) for q in range(net.n[m + 1])]
                )
            memo[key] = out
            return out

        return net.a[layer - 1][k, 0] * upward(layer, j)

    def expanded_step(self, layer: int) -> Step:
        nota, net = self.nota, self.example_net
        lhs = nota.grad(nota.cost, nota.w(layer, "j", "k"))
        ratio = self.render_chain(layer, "ratio", colour=False)
        value = self.render_chain(layer, "value", colour=True)
        extra = self.penalty_tex(nota.w(layer, "j", "k"))
        ratio[-1] += extra
        value[-1] += extra
        rows = [f"{lhs} &= {ratio[0]}"] + [f"&\\quad {line}" for line in ratio[1:]]
        rows += [f"&= {value[0]}"] + [f"&\\quad {line}" for line in value[1:]]
        latex = "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"
        checks = tuple(
            (
                net.dcost(net.W[layer][j, k]),
                self.chain_value(layer, j, k, "ratio") + self.penalty_at(net.W[layer][j, k]),
                self.chain_value(layer, j, k, "value") + self.penalty_at(net.W[layer][j, k]),
            )
            for j, k in self.instances(layer)
        )
        return Step(
            f"Chain rule for a weight of layer {self.nota.number(layer)}, written out",
            latex,
            checks,
        )

    def output_error_step(self, head: str, z: sp.Matrix) -> Step:
        """BP1 for one unit: the chain through dC/da^L (or the softmax Jacobian) to delta^L."""
        nota, net, d, big_l = self.nota, self.example_net, self.d, self.depth
        checks = []
        out = d.output
        names = self.names(big_l, "j")
        if out.softmax is None:
            symbolic = self.in_order(
                [nota.partial(nota.cost, nota.a(big_l, "j")), nota.sprime(big_l, "j")]
            )
            valued = self.in_order([self.dcda_tex("j", True), nota.sprime(big_l, "j")])
            parts = [head, self.join(symbolic), self.join(valued)]
            show_final = not out.delta.has(sp.Piecewise) and big_l not in self.spec.skips
            if show_final:
                parts.append(_tex(out.delta, names))
            act = d.activations[big_l - 1]
            for j in self.units(big_l):
                zj, yj = z[j, 0], net.y[j, 0]
                aj = (
                    net.output_of(big_l, z)[j, 0]
                    if big_l in self.spec.skips
                    else act.forward.subs(Z, zj)
                )
                sides = [
                    net.delta(big_l)[j, 0],
                    self.dcda.subs({A: aj, Y: yj}) * self.sprime_at(big_l, zj),
                    self.dcda.subs({A: aj, Y: yj}) * self.sprime_at(big_l, zj),
                ]
                if show_final:
                    sides.append(out.delta.subs({A: aj, Z: zj, Y: yj}))
                checks.append(tuple(sides))
        else:
            jvp = out.softmax
            jac = nota.partial(nota.a(big_l, "k"), nota.z(big_l, "j"))
            parts = [head, f"\\sum_{{k}} {jac} {nota.partial(nota.cost, nota.a(big_l, 'k'))}"]
            if jvp.summand_total is None:
                names_k = self.names(big_l, "k")
                parts.append(
                    plus(
                        _tex(jvp.elementwise, names),
                        f"{_tex(jvp.scale, names)} \\sum_{{k}} {_tex(jvp.summand, names_k)}",
                    )
                )
            else:
                parts.append(_tex(jvp.elementwise, names))
            a = net.activate(big_l, z)
            n = net.n[big_l]
            for j in self.units(big_l):
                chain = sp.Add(
                    *[
                        sp.diff(a[k, 0], z[j, 0]) * self.dcda.subs({A: a[k, 0], Y: net.y[k, 0]})
                        for k in range(n)
                    ]
                )
                sub = {A: a[j, 0], Y: net.y[j, 0]}
                if jvp.summand_total is None:
                    total = sp.Add(
                        *[jvp.summand.subs({A: a[k, 0], Y: net.y[k, 0]}) for k in range(n)]
                    )
                    formula = jvp.elementwise.subs(sub) + jvp.scale.subs(sub) * total
                else:
                    formula = jvp.elementwise.subs(sub)
                checks.append((net.delta(big_l)[j, 0], chain, formula))
        # The cheatsheet's own words: the output layer error E_o.
        title = "Output layer error" if nota.name == "cheatsheet" else "Output error of one unit"
        return Step(title, " = ".join(parts), tuple(checks), label="BP1")

    # -- residual connections --------------------------------------------------------------
    def residual_words(self) -> str:
        """What the chain rule does at a residual connection, in this notation."""
        nota = self.nota
        # A layer with dropout masks its own output before the skip is added.
        mask = {d: f"{nota.mask(d)} \\odot " if self.dropped(d) else "" for d in self.spec.skips}
        pairs = ", ".join(
            f"${nota.a(d)} = {mask[d]}{nota.act_letter(d)}({nota.z(d)}) + {nota.a(k)}$"
            for d, k in sorted(self.spec.skips.items())
        )
        return (
            f"This network has residual connections ({pairs}): an activation that feeds a "
            "skip reaches the cost by two paths, through the layer above it and through the "
            "skip, and the chain rule sums them. The gradient with respect to such an "
            "activation is computed once and reused by both; a weight below a skip is "
            "therefore not written out as one long product."
        )

    def grad_a_tex(self, layer: int, index: str) -> str:
        return self.nota.partial(self.nota.cost, self.nota.a(layer, index))

    def two_paths_step(self, layer: int) -> Step:
        """dC/da^k_j over its two paths (the layer above, the skips), then memoized."""
        nota, net = self.nota, self.example_net
        q = nota.sum_letter(1, layer + 1)
        above = self.in_order(
            [
                nota.partial(nota.cost, nota.z(layer + 1, q)),
                nota.partial(nota.z(layer + 1, q), nota.a(layer, "j")),
            ]
        )
        ratio = [f"{nota.sum(layer + 1, q)}{self.join(above)}"]
        memo = [
            f"{nota.sum(layer + 1, q)}"
            + self.join(
                self.in_order([_color(nota.delta(layer + 1, q)), nota.w(layer + 1, q, "j")])
            )
        ]
        for d in self.fed_by(layer):
            skip = self.in_order(
                [self.grad_a_tex(d, "j"), nota.partial(nota.a(d, "j"), nota.a(layer, "j"))]
            )
            ratio.append(self.join(skip))
            memo.append(_color(self.grad_a_tex(d, "j")))
        latex = f"{self.grad_a_tex(layer, 'j')} = {' + '.join(ratio)} = {' + '.join(memo)}"
        checks = []
        free = net.afree[layer]
        upper = net.delta_full(layer + 1)
        for j in self.units(layer):
            through = sp.Add(
                *[upper[i, 0] * net.W[layer + 1][i, j] for i in range(net.n[layer + 1])]
            )
            by_skip = [net.grad_a_full(d)[j, 0] for d in self.fed_by(layer)]
            # da^d_j / da^k_j from a^d = sigma(z^d) + a^k, by SymPy: 1.
            ones = [
                sp.diff(net.activate(d, net.zfree[d])[j, 0] + free[j, 0], free[j, 0])
                for d in self.fed_by(layer)
            ]
            ratio_side = through + sp.Add(*[g * one for g, one in zip(by_skip, ones, strict=True)])
            checks.append((net.grad_a_full(layer)[j, 0], ratio_side, through + sp.Add(*by_skip)))
        title = f"Two paths from an activation of layer {nota.number(layer)}: up and by the skip"
        return Step(title, latex, tuple(checks), label="BP2")

    def residual_error_step(self, layer: int) -> Step:
        """delta^k_j = dC/da^k_j sigma'(z^k_j), the sum of the two paths stored once."""
        nota, net = self.nota, self.example_net
        head = nota.delta(layer, "j")
        ratio = nota.partial(nota.cost, nota.z(layer, "j"))
        if ratio != head:
            head = f"{head} = {ratio}"
        factors = self.in_order(
            [_color(self.grad_a_tex(layer, "j")), self.masked_sprime_tex(layer, "j")]
        )
        latex = f"{head} = {self.join(factors)}"
        z = net.z[layer]
        checks = tuple(
            (
                net.delta_full(layer)[j, 0],
                net.grad_a_full(layer)[j, 0]
                * self.mask_factor(layer, j)
                * self.sprime_at(layer, z[j, 0]),
            )
            for j in self.units(layer)
        )
        return Step(
            self.hidden_error_title(layer, "Error of a unit of layer"), latex, checks, label="BP2"
        )

    def error_step(self, layer: int) -> Step:
        if self.fed_by(layer):
            return self.residual_error_step(layer)
        nota, net, big_l = self.nota, self.example_net, self.depth
        head = nota.delta(layer, "j")
        ratio = nota.partial(nota.cost, nota.z(layer, "j"))
        if ratio != head:
            head = f"{head} = {ratio}"
        z = net.zfree[layer]
        checks = []
        if layer == big_l:
            return self.output_error_step(head, z)
        q = nota.sum_letter(1, layer + 1)
        factors = self.in_order(
            [
                _color(nota.delta(layer + 1, q)),
                nota.w(layer + 1, q, "j"),
                self.masked_sprime_tex(layer, "j"),
            ]
        )
        if self.forward_order:
            body = (
                f"{self.masked_sprime_tex(layer, 'j')} {nota.sum(layer + 1, q)}"
                f"{nota.w(layer + 1, q, 'j')} " + _color(nota.delta(layer + 1, q))
            )
        else:
            body = nota.sum(layer + 1, q) + self.join(factors)
        latex = f"{head} = {body}"
        inner = net.affine(layer + 1, net.output_of(layer, z))
        upper = net.delta_at(layer + 1, inner)
        for j in self.units(layer):
            rhs = (
                self.mask_factor(layer, j)
                * self.sprime_at(layer, z[j, 0])
                * sp.Add(
                    *[net.W[layer + 1][q_, j] * upper[q_, 0] for q_ in range(net.n[layer + 1])]
                )
            )
            checks.append((net.delta(layer)[j, 0], rhs))
        return Step(
            self.hidden_error_title(layer, "Error of a unit of layer"),
            latex,
            tuple(checks),
            label="BP2",
        )

    def gradient_steps(self, layer: int) -> list[Step]:
        nota, net = self.nota, self.example_net
        delta = net.delta_full(layer)
        parts = self.in_order([nota.delta(layer, "j"), nota.a(layer - 1, "k")])
        weight = nota.w(layer, "j", "k")
        latex = f"{nota.grad(nota.cost, weight)} = {self.join(parts)}{self.penalty_tex(weight)}"
        checks = tuple(
            (
                net.dcost(net.W[layer][j, k]),
                net.a[layer - 1][k, 0] * delta[j, 0] + self.penalty_at(net.W[layer][j, k]),
            )
            for j, k in self.instances(layer)
        )
        steps = [
            Step(
                f"Gradient of a weight of layer {self.nota.number(layer)}",
                latex,
                checks,
                label="BP4",
            )
        ]
        if self.spec.layers[layer - 1].bias:
            latex = f"{nota.grad(nota.cost, nota.b(layer, 'j'))} = {nota.delta(layer, 'j')}"
            checks = tuple((net.dcost(net.b[layer][j, 0]), delta[j, 0]) for j in self.units(layer))
            steps.append(
                Step(
                    f"Gradient of a bias of layer {self.nota.number(layer)}",
                    latex,
                    checks,
                    label="BP3",
                )
            )
        return steps
