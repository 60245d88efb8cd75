"""The section "As the source writes it": each source's own general equations, checked.

Nielsen's book states BP1 to BP4 for a generic layer l, the five-step algorithm and the
gradient-descent update over a mini-batch; 3Blue1Brown's video writes the sensitivity to
the previous activation, the chain for a bias and the total cost over n examples; the
cheatsheet lists the memoized chain C'(W) for every layer, from the output down. Each
equation is checked on the witness network like every other step (for a generic layer,
one instance per layer of the network).
"""

from __future__ import annotations

import sympy as sp
from chainrule.derive.document.base import SectionWriterBase
from chainrule.derive.document.steps import Section, Step
from chainrule.derive.document.witness import WITNESS_BATCH, witness
from chainrule.derive.layers import A, Y, Z

#: The learning rate of the update rule (a symbol: the update holds for every eta).
ETA = sp.Symbol("eta", positive=True)


class SourceSection(SectionWriterBase):
    """The source's own general forms, in the source's symbols (a mixin of the writer)."""

    def source_forms(self) -> Section:
        """The section for the notation's source text."""
        name = self.nota.name
        if name == "nielsen":
            return self.nielsen_forms()
        if name == "3b1b":
            return self.video_forms()
        if name == "course":
            return self.course_forms()
        return self.cheatsheet_forms()

    # -- Nielsen ----------------------------------------------------------------------
    def nielsen_forms(self) -> Section:
        nota, big_l = self.nota, self.depth
        summary = [self.bp1_vector()] + [self.bp2_vector(ly) for ly in range(big_l - 1, 0, -1)]
        steps = [self.general_bp1(summary[0])]
        if big_l > 1:
            latex = (
                f"{nota.delta('l')} = \\left(({nota.weight_matrix('l+1')})^{{T}} "
                f"{nota.delta('l+1')}\\right) \\odot {nota.sprime('l')}"
            )
            by_layer = dict(zip(range(big_l - 1, 0, -1), summary[1:], strict=True))
            plain = [
                step
                for ly, step in by_layer.items()
                if not self.fed_by(ly) and not self.dropped(ly)
            ]
            checks = tuple(sides for step in plain for sides in step.checks)
            if plain:
                steps.append(Step("The error of layer l from layer l+1", latex, checks, "BP2"))
            steps.extend(self.dropout_general_bp2(by_layer))
            if any(self.fed_by(ly) and not self.dropped(ly) for ly in by_layer):
                steps.append(self.residual_general_bp2(by_layer))
        gradients = [s for ly in range(big_l, 0, -1) for s in self.gradient_steps(ly)]
        bias = [s for s in gradients if s.label == "BP3"]
        if bias:
            latex = f"{nota.grad(nota.cost, nota.b('l', 'j'))} = {nota.delta('l', 'j')}"
            checks = tuple(sides for step in bias for sides in step.checks)
            steps.append(Step("The rate of change with a bias", latex, checks, "BP3"))
        latex = (
            f"{nota.grad(nota.cost, nota.w('l', 'j', 'k'))} = "
            f"{nota.a('l-1', 'k')} {nota.delta('l', 'j')}{self.penalty_tex(nota.w('l', 'j', 'k'))}"
        )
        checks = tuple(sides for s in gradients if s.label == "BP4" for sides in s.checks)
        steps.append(Step("The rate of change with a weight", latex, checks, "BP4"))
        steps.extend(self.nielsen_updates())
        outer = self.outer_product_forms()
        first, last = nota.number(0), nota.number(big_l)
        intro = (
            f"The book states the equations for any layer l, with output layer L "
            f"(here L = {last}, the input is layer {first}); the next section writes them "
            "out for this network. Its algorithm, for one training example x: (1) input: set "
            f"${nota.a(0)}$ as the activation of layer {first}; (2) feedforward: for "
            f"l = {first + 1}, ..., L compute $z^{{l}} = w^{{l}} a^{{l-1}} + b^{{l}}$ and "
            f"$a^{{l}} = {nota.act_letter('l')}(z^{{l}})$; (3) output error: BP1; (4) "
            f"backpropagate: BP2 for l = L-1, ..., {first + 1}; (5) output: the gradient by BP3 "
            "and BP4. Gradient descent then averages over a mini-batch of m examples."
        )
        if big_l == 1:
            intro = intro.replace(
                f"BP2 for l = L-1, ..., {first + 1}", "nothing to do without a hidden layer"
            )
        if not any(ly.bias for ly in self.spec.layers):
            intro = intro.replace("$z^{l} = w^{l} a^{l-1} + b^{l}$", "$z^{l} = w^{l} a^{l-1}$")
            intro = intro.replace("by BP3 and BP4", "by BP4 (no biases)")
        if outer:
            steps.extend(outer)
            intro += " " + self.outer_product_words()
        intro += self.dropout_words()
        return Section("As the book writes it", intro, tuple(steps))

    def residual_general_bp2(self, by_layer: dict[int, Step]) -> Step:
        """BP2 for a layer l that feeds a residual connection into layer d (not the book's:
        its networks have none): the skip's dC/da^d joins the sum before sigma'(z^l)."""
        nota = self.nota
        latex = (
            f"{nota.delta('l')} = \\left(({nota.weight_matrix('l+1')})^{{T}} "
            f"{nota.delta('l+1')} + \\sum_{{d}} {nota.partial(nota.cost, nota.a('d'))}\\right) "
            f"\\odot {nota.sprime('l')}"
        )
        sources = [
            step for ly, step in by_layer.items() if self.fed_by(ly) and not self.dropped(ly)
        ]
        checks = tuple(sides for step in sources for sides in step.checks)
        title = "The error of a layer l that feeds skips into layers d (residual connections)"
        return Step(title, latex, checks, "BP2")

    # -- the two-layer text's outer products (networks without biases) -----------------
    def outer_product_words(self) -> str:
        """How the two-layer text's symbols map onto this document's."""
        nota, big_l = self.nota, self.depth
        hidden = ", ".join(f"$h_{{{ly}}}$ is ${nota.a(ly)}$" for ly in range(1, big_l))
        inputs = ", ".join(f"$z_{{{ly}}}$ is ${nota.z(ly)}$" for ly in range(1, big_l + 1))
        weights = ", ".join(
            f"$W_{{{ly}}}$ is ${nota.weight_matrix(ly)}$" for ly in range(1, big_l + 1)
        )
        return (
            "The text on networks without biases writes the weight gradients as outer "
            "products $u \\otimes v = u v^{T}$ and calls the hidden activations h and the "
            f"network's output y: there {hidden + ', ' if hidden else ''}its "
            f"$\\mathbf{{y}}$ is the output ${nota.a(big_l)}$ (this document's y is the "
            f"target), {inputs}, and {weights}."
        )

    def outer_product_forms(self) -> list[Step]:
        """dC/dW_l = (g_l * s'(z_l)) (x) h_{l-1}, g_L = grad C at y, g_{l-1} = W_l^T (...)."""
        spec = self.spec
        if any(ly.bias for ly in spec.layers) or self.d.output.softmax is not None:
            return []
        nota, net, big_l = self.nota, self.example_net, self.depth
        names = {ly: f"\\mathbf{{h}}_{{{ly}}}" for ly in range(1, big_l)}
        names[0] = "\\mathbf{x}"
        out = net.a[big_l]
        upstream = sp.Matrix(
            [self.dcda.subs({A: out[j, 0], Y: net.y[j, 0]}) for j in range(out.rows)]
        )
        text = "\\nabla C\\big|_{\\mathbf{y}}"
        steps = []
        for layer in range(big_l, 0, -1):
            slope = net.z[layer].applyfunc(lambda v, ly=layer: self.sprime_at(ly, v))
            signal = upstream.multiply_elementwise(slope)
            act = f"{nota.act_letter(layer)}'(\\mathbf{{z}}_{{{layer}}})"
            text = f"\\left({text} \\odot {act}\\right)"
            lhs = sp.Matrix(
                net.n[layer], net.n[layer - 1], lambda j, k, ly=layer: net.dcost(net.W[ly][j, k])
            )
            steps.append(
                Step(
                    f"Outer-product form of the gradient, layer {layer} of the text",
                    f"\\frac{{\\partial C}}{{\\partial W_{{{layer}}}}} = {text} \\otimes "
                    f"{names[layer - 1]}{self.penalty_tex(f'W_{{{layer}}}')}",
                    ((lhs, signal * net.a[layer - 1].T + net.W[layer].applyfunc(self.penalty_at)),),
                )
            )
            upstream = net.W[layer].T * signal
            text = f"W_{{{layer}}}^{{T}} {text}"
        return steps

    def general_bp1(self, instance: Step) -> Step:
        nota = self.nota
        if self.d.output.softmax is None:
            act = nota.act_letter(self.depth)
            latex = f"{nota.delta('L')} = \\nabla_a C \\odot {act}'({nota.z('L')})"
        else:
            latex = f"{nota.delta('L')} = (J^{{L}})^{{T}} \\nabla_a C"
        return Step("The error of the output layer L", latex, instance.checks, "BP1")

    def nielsen_updates(self) -> list[Step]:
        """w -> w - (eta/m) sum_x delta^{x,l} (a^{x,l-1})^T, and the same for b."""
        nota = self.nota
        net = witness(self.spec, WITNESS_BATCH, self.width)
        m = net.m
        w_checks, b_checks = [], []
        for layer in range(1, self.depth + 1):
            weight = net.W[layer]
            grad = weight.applyfunc(net.dcost)
            delta, below = net.delta_full(layer), net.a[layer - 1]
            summed = sp.zeros(*weight.shape)
            for x in range(m):
                summed += delta[:, x] * below[:, x].T
            decay = weight.applyfunc(self.penalty_at)
            w_checks.append((weight - ETA * grad, weight - ETA / m * summed - ETA * decay))
            if self.spec.layers[layer - 1].bias:
                bias = net.b[layer]
                grad_b = bias.applyfunc(net.dcost)
                total = sp.Matrix([sp.Add(*delta[j, :]) for j in range(bias.rows)])
                b_checks.append((bias - ETA * grad_b, bias - ETA / m * total))
        w, b = nota.weight_matrix("l"), nota.b("l")
        x_delta = "\\delta^{x,l}"
        steps = [
            Step(
                "Gradient descent on a mini-batch: the weights",
                f"{w} \\rightarrow {w} - \\frac{{\\eta}}{{m}} \\sum_{{x}} {x_delta} "
                f"(a^{{x,l-1}})^{{T}}{self.penalty_update_tex(w)}",
                tuple(w_checks),
                "update",
            )
        ]
        if b_checks:
            steps.append(
                Step(
                    "Gradient descent on a mini-batch: the biases",
                    f"{b} \\rightarrow {b} - \\frac{{\\eta}}{{m}} \\sum_{{x}} {x_delta}",
                    tuple(b_checks),
                    "update",
                )
            )
        return steps

    # -- 3Blue1Brown -------------------------------------------------------------------
    def video_forms(self) -> Section:
        steps: list[Step] = []
        shown = []
        if self.d.output.softmax is None and self.depth > 1:
            steps.append(self.previous_activation_step())
            shown.append(
                "how the cost of one example is sensitive to an activation of the layer "
                "before the output (through every unit it feeds)"
            )
        if self.d.output.softmax is None and self.spec.layers[-1].bias:
            steps.append(self.bias_chain_step())
            shown.append("the chain for a bias")
        steps.extend(self.total_cost_steps())
        shown.append(
            "the cost of the whole training set as the average of the costs of its n examples"
        )
        listed = ", ".join(shown[:-1]) + (" and " if len(shown) > 1 else "") + shown[-1]
        intro = f"The video's own forms: {listed}."
        return Section("As the video writes it", intro, tuple(steps))

    def previous_activation_step(self) -> Step:
        nota, net, big_l = self.nota, self.example_net, self.depth
        below = big_l - 1
        j, k = "j", "k"
        total = nota.sum(big_l, j)
        ratios = self.in_order(
            [
                nota.partial(nota.cost, nota.a(big_l, j)),
                nota.partial(nota.a(big_l, j), nota.z(big_l, j)),
                nota.partial(nota.z(big_l, j), nota.a(below, k)),
            ]
        )
        values = self.in_order(
            [self.dcda_tex(j, factor=True), nota.sprime(big_l, j), nota.w(big_l, j, k)]
        )
        lhs = nota.partial(nota.cost, nota.a(below, k))
        latex = f"{lhs} = {total}{' '.join(ratios)} = {total}{' '.join(values)}"
        free = net.afree[below]
        z = net.affine(big_l, free)
        out = net.activate(big_l, z)
        cost = net.example_costs(out)[0]
        checks = []
        for unit in sorted({0, free.rows - 1}):
            chain = sp.Add(
                *[
                    self.dcda.subs({A: out[q, 0], Y: net.y[q, 0]})
                    * self.sprime_at(big_l, z[q, 0])
                    * net.W[big_l][q, unit]
                    for q in range(out.rows)
                ]
            )
            checks.append((sp.Derivative(cost, free[unit, 0]), chain))
        return Step("Sensitivity to an activation of the previous layer", latex, tuple(checks))

    def bias_chain_step(self) -> Step:
        nota, net, big_l = self.nota, self.example_net, self.depth
        ratios = self.in_order(
            [
                nota.partial(nota.cost, nota.a(big_l, "j")),
                nota.partial(nota.a(big_l, "j"), nota.z(big_l, "j")),
                nota.partial(nota.z(big_l, "j"), nota.b(big_l, "j")),
            ]
        )
        values = self.in_order([self.dcda_tex("j", factor=True), nota.sprime(big_l, "j"), "1"])
        lhs = nota.grad(nota.cost, nota.b(big_l, "j"))
        latex = f"{lhs} = {' '.join(ratios)} = {' '.join(values)}"
        z = net.z[big_l]
        out = net.a[big_l]
        checks = tuple(
            (
                net.dcost(net.b[big_l][j, 0]),
                self.dcda.subs({A: out[j, 0], Y: net.y[j, 0]}) * self.sprime_at(big_l, z[j, 0]),
            )
            for j in self.units(big_l)
        )
        return Step("The chain for a bias", latex, checks)

    def total_cost_steps(self) -> list[Step]:
        nota = self.nota
        net = witness(self.spec, WITNESS_BATCH, self.width)
        # Each example's cost C_k holds the weight penalty too (as the cost of one example
        # does), so the mean over the examples carries it once.
        costs = [c + self.penalty_sum(net) for c in net.example_costs(net.a[self.depth])]
        n = len(costs)
        mean = sp.Add(*costs) / n
        cost = Step(
            "The cost over all n training examples",
            "C = \\frac{1}{n} \\sum_{k=0}^{n-1} C_{k}",
            ((net.cost, mean),),
        )
        weight = nota.w(self.depth, "j", "i")  # k counts the examples
        indexed = "_" in weight and "i" in weight.rsplit("_", 1)[1]
        checks = tuple(
            (
                net.dcost(net.W[self.depth][j, k]),
                sp.Add(*[sp.Derivative(c, net.W[self.depth][j, k]) for c in costs]) / n,
            )
            for j, k in self.instances(self.depth)
        )
        gradient = Step(
            "Its derivative, the average of the examples' derivatives"
            + (" (i: the unit of the layer below; k counts the examples)" if indexed else ""),
            f"\\frac{{\\partial C}}{{\\partial {weight}}} = \\frac{{1}}{{n}} \\sum_{{k=0}}^{{n-1}} "
            f"\\frac{{\\partial C_{{k}}}}{{\\partial {weight}}}",
            checks,
        )
        return [cost, gradient]

    # -- the cheatsheet ----------------------------------------------------------------
    def cheatsheet_forms(self) -> Section:
        nota = self.nota
        rows, checks = [], []
        for layer in range(self.depth, 0, -1):
            if not self.written_out(layer):
                continue  # below a skip's source the paths split: see the chain section
            value = self.render_chain(layer, "value", colour=False)
            lhs = nota.grad(nota.cost, nota.w(layer, "j", "k"))
            # One row per weight: the continuation lines (each led by the dot) rejoined.
            extra = self.penalty_tex(nota.w(layer, "j", "k"))
            rows.append(f"{lhs} &= {' '.join(value)}{extra}")
            for j, k in self.instances(layer):
                checks.append(
                    (
                        self.example_net.dcost(self.example_net.W[layer][j, k]),
                        self.chain_value(layer, j, k, "value")
                        + self.penalty_at(self.example_net.W[layer][j, k]),
                    )
                )
        memo = Step(
            "Every weight, from the output layer down",
            "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}",
            tuple(checks),
        )
        errors = []
        for layer in range(self.depth, 0, -1):
            errors.append(
                f"{nota.grad(nota.cost, nota.w(layer, 'j', 'k'))} &= "
                f"{nota.delta(layer, 'j')} \\cdot {nota.a(layer - 1, 'k')}"
                + self.penalty_tex(nota.w(layer, "j", "k"))
            )
        gradient_checks = tuple(
            sides
            for layer in range(self.depth, 0, -1)
            for step in self.gradient_steps(layer)
            if step.label == "BP4"
            for sides in step.checks
        )
        memoized = Step(
            "The same, memoized: current layer error times current layer input",
            "\\begin{aligned}\n" + " \\\\\n".join(errors) + "\n\\end{aligned}",
            gradient_checks,
        )
        intro = (
            "The page writes the derivative of the cost for every weight, from the output "
            f"layer down to the first ({self.depth} weight layer{'s' if self.depth > 1 else ''} "
            "here), each a long product "
            "that repeats the one above it; then the same with the layer errors stored once "
            "(memoization): each is the current layer error times the current layer input."
        )
        return Section("As the cheatsheet writes it", intro, (memo, memoized))

    # -- the course notation -----------------------------------------------------------
    def course_forms(self) -> Section:
        """dA before dZ over the batch, the shape of every quantity, ReLU's slope at 0."""
        nota, big_l = self.nota, self.depth
        net = witness(self.spec, WITNESS_BATCH, self.width)
        steps: list[Step] = []
        for layer in range(big_l, 1, -1):
            steps.extend(self.course_backward(net, layer))
        relu = [ly for ly in range(1, big_l + 1) if self.spec.layers[ly - 1].activation == "relu"]
        if relu:
            checks = tuple(
                (self.d.activations[ly - 1].derivative.subs(Z, 0), sp.Integer(0)) for ly in relu
            )
            steps.append(
                Step("The slope of ReLU at 0", f"{nota.act_letter(relu[0])}'(0) = 0", checks)
            )

        def shape(rows: object, cols: object) -> str:
            return f"{cols} x {rows}" if nota.rows else f"{rows} x {cols}"

        table = [("layer", "W, dW", "b, db", "Z, A, dZ, dA")]
        sizes = self.spec.sizes
        table.append(("0 (A = X)", "", "", f"A: {shape(sizes[0], 'm')}"))
        for layer in range(1, big_l + 1):
            bias = shape(sizes[layer], 1) if self.spec.layers[layer - 1].bias else ""
            weight = shape(sizes[layer], sizes[layer - 1])
            table.append((str(layer), weight, bias, shape(sizes[layer], "m")))
        per = "row" if nota.rows else "column"
        intro = (
            "The course goes back one layer in two steps: first the gradient with respect to "
            "the activations below, dA, then through the activation's derivative "
            f"${nota.act_letter('l')}'$ to dZ. "
            "Each dZ and dA holds the examples "
            f"{'one above the other' if nota.rows else 'side by side'} (times m, as the module's "
            f"errors). The table gives the shape of every quantity (m examples, one per {per}): "
            "a gradient has the shape of what it differentiates."
        )
        if big_l == 1:
            # No layer below the output: no dA step, and only dZ of the output to shape.
            intro = intro.replace(
                "The course goes back one layer in two steps: first the gradient with respect "
                "to the activations below, dA, then through the activation's derivative "
                f"${nota.act_letter('l')}'$ to dZ. Each dZ and dA holds",
                "Without a hidden layer there is no step back through dA: the output's dZ is "
                "the output error. dZ holds",
            )
        if relu:
            intro += " ReLU has no derivative at 0; the course, and chainrule, take it as 0 there."
        return Section("As the course writes it", intro, tuple(steps), tuple(table))

    def course_backward(self, net, layer: int) -> list[Step]:
        """dA^{l-1} = (W^l)^T dZ^l, then dZ^{l-1} = dA^{l-1} * g'(Z^{l-1}), checked."""
        nota = self.nota
        below = layer - 1
        a_free = net.afree[below]
        out = a_free
        for upper in range(layer, self.depth + 1):
            out = net.dropped(upper, net.activate(upper, net.affine(upper, out)))
        cost = net.batch_cost(out)
        d_a = a_free.applyfunc(lambda v: net.m * sp.Derivative(cost, v))
        upper_delta = net.delta_at(layer, net.affine(layer, a_free))
        back = net.W[layer].T * upper_delta
        da_tex = nota._base("dA", below, None)
        latex = f"{da_tex} = ({nota.weight_matrix(layer)})^{{T}} {nota.batch('D', layer)}"
        if self.spec.skips:  # residual connections: dA over every path, at the values
            d_a = net.grad_a_full(below)
            back = net.W[layer].T * net.delta_full(layer)
            for d in self.fed_by(below):
                back += net.grad_a_full(d)
                latex += f" + {nota._base('dA', d, None)}"
        steps = [
            Step(
                f"Gradient with respect to the activations of layer {below}", latex, ((d_a, back),)
            )
        ]
        z = net.zfree[below]
        inner = net.affine(layer, net.output_of(below, z))
        through = (net.W[layer].T * net.delta_at(layer, inner)).multiply_elementwise(
            z.applyfunc(lambda v: self.sprime_at(below, v))
        )
        through = through.multiply_elementwise(self.mask_factors(below, net))
        mask = f"{nota.mask(below)} \\odot " if self.dropped(below) else ""
        latex = (
            f"{nota.batch('D', below)} = {da_tex} \\odot {mask}"
            f"{nota.act_letter(below)}'({nota.batch('Z', below)})"
        )
        title = f"Error of layer {below} from dA"
        if self.spec.skips:
            sprime = net.z[below].applyfunc(lambda v: self.sprime_at(below, v))
            through = net.grad_a_full(below).multiply_elementwise(sprime)
            through = through.multiply_elementwise(self.mask_factors(below, net))
            steps.append(Step(title, latex, ((net.delta_full(below), through),), "BP2"))
            return steps
        steps.append(Step(title, latex, ((net.delta(below), through),), "BP2"))
        return steps
