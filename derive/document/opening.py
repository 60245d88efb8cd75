"""Sections 1 to 3 of a derivation: the network, the forward equations, the local partials."""

from __future__ import annotations

import sympy as sp
from chainrule.derive.document.base import (
    SectionWriterBase,
    _activation_words,
    _same_text,
    _tex,
    plus,
)
from chainrule.derive.document.steps import Section, Step, closed
from chainrule.derive.document.witness import WITNESS_WIDTH
from chainrule.derive.layers import UPSTREAM, A, Y, Z, _softmax_jvp


def _input_row(number: int) -> str:
    """The table's name for the input layer: its number, if the notation gives it one."""
    return f"{number} (input)" if number >= 0 else "input"


class NetworkSections(SectionWriterBase):
    """Sections 1 to 3: the network and notation, the forward equations, the local partials."""

    # -- 1. network ----------------------------------------------------------------------
    def network(self) -> Section:
        spec, nota = self.spec, self.nota
        big_l = self.depth
        table = [
            ("layer", "units", "activation", "bias"),
            (_input_row(nota.number(0)), str(spec.input_size), "", ""),
        ]
        for layer, ly in enumerate(spec.layers, start=1):
            table.append(
                (
                    str(nota.number(layer)),
                    str(ly.size),
                    _activation_words(ly.activation),
                    "yes" if ly.bias else "no",
                )
            )
        items = [
            (
                f"${nota.w('l', 'j', 'k')}$",
                "weight into unit j of layer l from unit k of layer l-1",
            ),
            (f"${nota.z('l', 'j')}$", "weighted input of unit j of layer l"),
            (
                f"${nota.a('l', 'j')}$",
                f"activation of unit j of layer l; the input is ${nota.x()}$",
            ),
            (f"${nota.sprime('l', 'j')}$", "derivative of the activation of layer l at z"),
            self.error_item(),
            (f"${nota.y('j')}$, ${nota.cost}$", "target and cost of one example"),
        ]
        matrix, entry = nota.weight_matrix("l"), nota.w("l", "j", "k")
        if matrix[0] != entry[0]:
            # W^l, the summary's and the batch's matrix, is not the legend's w^l_jk.
            items.insert(1, (f"${matrix}$", f"the matrix of the weights ${entry}$ of layer l"))
        if any(ly.bias for ly in spec.layers):
            items.insert(1, (f"${nota.b('l', 'j')}$", "bias of unit j of layer l"))
        dropped = [ly for ly in range(1, big_l + 1) if self.dropped(ly)]
        if dropped:
            which = ", ".join(
                f"{nota.number(ly)} (p = {spec.layers[ly - 1].dropout!r})" for ly in dropped
            )
            items.append(
                (
                    f"${nota.mask('l', 'j')}$",
                    f"dropout mask of unit j of layer l (training only): layer {which}",
                )
            )
        items += self.batch_norm_items()
        intro = (
            f"A feedforward network with {big_l} weight layer{'s' if big_l > 1 else ''}, sizes "
            f"{'-'.join(map(str, spec.sizes))}, {spec.cost} cost, {spec.layout} layout. "
            "An index is dropped for a layer of a single unit."
        )
        if nota.from_input_one:
            intro += (
                f" Layers are numbered from the input, layer 1 (${nota.a(0)} = a^{{1}}$), as "
                f"in the book: the output is layer L = {nota.number(big_l)}."
            )
        if nota.name == "3b1b":
            intro += (
                " As in the video, a layer is named by its distance from the output layer L "
                f"(here L = {big_l}, the input is layer 0)"
            )
            if big_l > 1:
                intro += f": ${nota.a(big_l - 1)}$ is the activation of layer {big_l - 1}"
            intro += "."
        sizes = spec.sizes
        if any((sizes[i] == 1) != (sizes[i + 1] == 1) for i in range(len(sizes) - 1)):
            intro += (
                f" A weight between a single unit and a wider layer keeps {nota.only_unit}, "
                "the number of the single unit, so that each index stays in its place."
            )
        if any(size > WITNESS_WIDTH for size in spec.sizes):
            intro += (
                f" SymPy checks every equation on a copy with at most {WITNESS_WIDTH} units per "
                "layer: the per-unit equations do not depend on the width."
            )
        return Section("The network and the notation", intro, (), tuple(table), tuple(items))

    def batch_norm_items(self) -> list[tuple[str, str]]:
        """The legend's lines for batch normalization (none without a batch-normalized layer)."""
        nota, layers = self.nota, self.spec.batch_norm_layers
        if not layers:
            return []
        which = ("layers " if len(layers) > 1 else "layer ") + ", ".join(
            str(nota.number(ly)) for ly in layers
        )
        gamma, beta = nota._base("\\gamma", "l", "j"), nota._base("\\beta", "l", "j")
        return [
            (
                f"${gamma}$, ${beta}$",
                f"scale and shift of unit j of a batch-normalized layer ({which}, which "
                f"{'have' if len(layers) > 1 else 'has'} no bias): its weighted input is the "
                "weighted sum normalized over the "
                "batch, then scaled and shifted",
            )
        ]

    def error_item(self) -> tuple[str, str]:
        """The legend's line for the layer error, in the notation's own words."""
        nota = self.nota
        error, ratio = nota.delta("l", "j"), nota.partial(nota.cost, nota.z("l", "j"))
        if error == ratio:
            return f"${ratio}$", "sensitivity of the cost to the weighted input of unit j"
        words = "layer error" if nota.name == "cheatsheet" else "error"
        return f"${error}$", f"{words} of unit j, ${ratio}$"

    # -- 2. forward ----------------------------------------------------------------------
    def forward(self) -> Section:
        nota, net = self.nota, self.example_net
        steps: list[Step] = []
        for layer in range(1, self.depth + 1):
            has_bias = self.spec.layers[layer - 1].bias
            weight, below = nota.w(layer, "j", "k"), nota.a(layer - 1, "k")
            # Rows (Z = XW): the input before the weight, as the cheatsheet writes it.
            pair = f"{below} {weight}" if nota.rows else f"{weight} {below}"
            below = f"{nota.sum(layer - 1, 'k')}{pair}"
            if has_bias:
                below += f" + {nota.b(layer, 'j')}"
            product = net.affine(layer, net.afree[layer - 1])
            checks = []
            for j in self.units(layer):
                explicit = sp.Add(
                    *[
                        net.W[layer][j, k] * net.afree[layer - 1][k, 0]
                        for k in range(net.n[layer - 1])
                    ]
                ) + (net.b[layer][j, 0] if has_bias else 0)
                checks.append((product[j, 0], explicit))
            steps.append(
                Step(
                    f"Weighted input of layer {self.nota.number(layer)}",
                    f"{nota.z(layer, 'j')} = {below}",
                    tuple(checks),
                )
            )
            if self.dropped(layer):
                steps.append(self.mask_step(layer))
            steps.append(self.activation_step(layer))
        big_l = self.depth
        out = self.d.output
        cost_tex = _tex(out.cost_element, self.names(big_l, "j"))
        a_l = net.afree[big_l]
        explicit = sp.Add(
            *[out.cost_element.subs({A: a_l[j, 0], Y: net.y[j, 0]}) for j in range(net.n[big_l])]
        )
        sides = (net.example_costs(a_l)[0], explicit)
        if self.spec.regularized:  # the full cost: the penalty on every weight added
            sides = (net.cost, net.free_to_full(explicit) + self.penalty_sum(net))
        steps.append(
            Step(
                "Cost of one example",
                f"{nota.cost} = {nota.sum(big_l, 'j')}{cost_tex}{self.penalty_cost_tex()}",
                (sides,),
            )
        )
        intro = (
            "Each layer forms weighted inputs from the activations below it and applies its "
            "activation; the cost compares the output with the target."
        ) + self.penalty_words()
        return Section("Forward equations", intro, tuple(steps))

    def activation_step(self, layer: int) -> Step:
        nota, net = self.nota, self.example_net
        derived = self.d.activations[layer - 1]
        z = net.zfree[layer]
        if derived is None:
            zs = [z[i, 0] for i in range(net.n[layer])]
            # The displayed formula transcribed by hand: the reference side against which
            # the shared softmax builder (net.activate) is checked, so it is not built by it.
            explicit = sp.exp(zs[0]) / sp.Add(*[sp.exp(v) for v in zs])
            latex = (
                f"{nota.a(layer, 'j')} = \\frac{{e^{{{nota.z(layer, 'j')}}}}}"
                f"{{\\sum_{{k}} e^{{{nota.z(layer, 'k')}}}}}"
            )
            return Step(
                f"Softmax output of layer {self.nota.number(layer)}",
                latex,
                ((net.activate(layer, z)[0, 0], explicit),),
            )
        names = self.names(layer, "j")
        forward = derived.forward
        closed = forward.rewrite(sp.exp) if forward.has(sp.Function) else forward
        parts = [nota.a(layer, "j"), f"{nota.act_letter(layer)}({nota.z(layer, 'j')})"]
        sides: list[sp.Expr] = [net.activate(layer, z)[0, 0]]
        for form in (forward, closed):
            text = _tex(form, names)
            if _same_text(text) not in [_same_text(p) for p in parts]:
                parts.append(text)
                sides.append(form.subs(Z, z[0, 0]))
        if len(sides) == 1:
            sides.append(forward.subs(Z, z[0, 0]))
        if self.dropped(layer):  # inverted dropout: a^l = D^l f(z^l) in training
            mask = nota.mask(layer, "j")
            # The SymPy form behind each part after the first (a side may have no part).
            forms = [None, *sides[1:]]
            masked = zip(parts[1:], forms, strict=False)
            parts = [parts[0], *(self.masked(mask, p, f) for p, f in masked)]
            factor = net.mask[layer][0, 0]
            sides = [sides[0], *(factor * side for side in sides[1:])]
        source = self.spec.layers[layer - 1].skip_from
        if source is not None:  # a residual connection: a^l = sigma(z^l) + a^k
            skip = net.a[source][0, 0]
            parts = [parts[0], *(f"{p} + {nota.a(source, 'j')}" for p in parts[1:])]
            sides = [sides[0], *(side + skip for side in sides[1:])]
        sides[0] = net.output_of(layer, z)[0, 0]
        return Step(
            f"Activation of layer {self.nota.number(layer)}", " = ".join(parts), (tuple(sides),)
        )

    # -- 3. local partials ---------------------------------------------------------------
    def local_partials(self) -> Section:
        nota, net, d = self.nota, self.example_net, self.d
        steps: list[Step] = []
        for layer in range(1, self.depth + 1):
            derived = d.activations[layer - 1]
            if derived is None:
                continue
            z = net.zfree[layer][0, 0]
            names = self.names(layer, "j")
            parts = [nota.partial(nota.a(layer, "j"), nota.z(layer, "j")), nota.sprime(layer, "j")]
            parts.append(_tex(derived.derivative, names))
            sides = [sp.diff(closed(derived.forward), Z).subs(Z, z), derived.derivative.subs(Z, z)]
            if self.dropped(layer):  # a^l = D^l f(z^l): SymPy's factor D^l in front of f'
                parts, sides = self.masked_partial(layer, parts, sides)
            # With a skip into the layer a^l = sigma(z^l) + a^k: no form in a^l holds.
            elif derived.cached != derived.derivative and layer not in self.spec.skips:
                parts.append(_tex(derived.cached, names))
                sides.append(derived.cached.subs({A: derived.forward.subs(Z, z), Z: z}))
            steps.append(
                Step(
                    f"Derivative of the activation of layer {self.nota.number(layer)}",
                    " = ".join(parts),
                    (tuple(sides),),
                )
            )
        big_l = self.depth
        a_l = net.afree[big_l]
        cost = net.example_costs(a_l)[0]
        checks = tuple(
            (sp.diff(cost, a_l[j, 0]), self.dcda.subs({A: a_l[j, 0], Y: net.y[j, 0]}))
            for j in self.units(big_l)
        )
        latex = f"{nota.partial(nota.cost, nota.a(big_l, 'j'))} = {self.dcda_tex('j')}"
        steps.append(Step("Derivative of the cost", latex, checks))
        if d.output.softmax is not None:
            steps.append(self.softmax_step())
        z_w, z_a, z_b = [], [], []
        for layer in range(1, big_l + 1):
            local = net.affine(layer, net.afree[layer - 1])
            for j, k in self.instances(layer):
                z_w.append((sp.diff(local[j, 0], net.W[layer][j, k]), net.afree[layer - 1][k, 0]))
                z_a.append((sp.diff(local[j, 0], net.afree[layer - 1][k, 0]), net.W[layer][j, k]))
                if self.spec.layers[layer - 1].bias:
                    z_b.append((sp.diff(local[j, 0], net.b[layer][j, 0]), sp.Integer(1)))
        zj, wjk, ak = nota.z("l", "j"), nota.w("l", "j", "k"), nota.a("l-1", "k")
        steps.append(
            Step("Weighted input by a weight", f"{nota.partial(zj, wjk)} = {ak}", tuple(z_w))
        )
        steps.append(
            Step(
                "Weighted input by an activation below",
                f"{nota.partial(zj, ak)} = {wjk}",
                tuple(z_a),
            )
        )
        if z_b:
            steps.append(
                Step(
                    "Weighted input by a bias",
                    f"{nota.partial(zj, nota.b('l', 'j'))} = 1",
                    tuple(z_b),
                )
            )
        intro = (
            "SymPy differentiates each forward equation on its own; an activation's derivative "
            "is also rewritten in terms of the cached output where that is exact."
        )
        return Section("Local partial derivatives", intro, tuple(steps))

    def softmax_step(self) -> Step:
        nota, net = self.nota, self.example_net
        big_l = self.depth
        raw_p, raw_q, raw_r = _softmax_jvp()
        a = net.activate(big_l, net.zfree[big_l])
        z, g = net.zfree[big_l], net.grad_a
        n = net.n[big_l]
        checks = []
        for j in self.units(big_l):
            lhs = sp.Add(*[sp.diff(a[k, 0], z[j, 0]) * g[k, 0] for k in range(n)])
            total = sp.Add(*[raw_r.subs({A: a[k, 0], UPSTREAM: g[k, 0]}) for k in range(n)])
            rhs = raw_p.subs({A: a[j, 0], UPSTREAM: g[j, 0]}) + raw_q.subs(A, a[j, 0]) * total
            checks.append((lhs, rhs))
        names_j = {**self.names(big_l, "j"), UPSTREAM: "g_{j}"}
        names_k = {**self.names(big_l, "k"), UPSTREAM: "g_{k}"}
        # Names J, the Jacobian the summary's BP1 multiplies by: (J^T g)_j is this sum.
        jac = nota.transpose(nota.jacobian(big_l))
        latex = (
            f"\\left({jac} g\\right)_{{j}} = "
            f"\\sum_{{k}} {nota.partial(nota.a(big_l, 'k'), nota.z(big_l, 'j'))} g_{{k}} = "
            + plus(
                _tex(raw_p, names_j), f"{_tex(raw_q, names_j)} \\sum_{{k}} {_tex(raw_r, names_k)}"
            )
        )
        return Step("Softmax Jacobian times a vector g", latex, tuple(checks))
