"""The derivation of a batch-normalized network: batch norm's backward pass, step by step.

Batch normalization couples the examples of a batch, so the per-example sections of a
derivation (one example's chain rule, BP1 to BP4) do not describe such a network: this
section takes their place, next to the network and the mini-batch sections. It takes
one unit of a batch-normalized layer over a batch of m examples and derives dC/du_j
through the batch mean and variance (SymPy's ``diff`` on m = 3 symbolic examples,
:func:`chainrule.derive.batch_norm.derive_backward`), then simplifies it to the
three-term form the generated module computes. Every step is checked by SymPy at random
points, like the other sections' steps; the symbols come from the notation.
"""

from __future__ import annotations

import sympy as sp
from chainrule.derive import batch_norm
from chainrule.derive.document.steps import Section, Step
from chainrule.derive.notation import Notation

#: The examples of the symbolic batch the steps are checked on.
CHECK_BATCH = 3


class _Names:
    """LaTeX of the batch-norm objects of one layer in a notation (i numbers examples)."""

    def __init__(self, nota: Notation, layer: int) -> None:
        self.nota, self.layer = nota, layer
        tag = nota.tag(layer)
        sub = nota.name == "cheatsheet"
        self.mu = f"\\mu_{{{tag}}}" if sub else f"\\mu^{{{tag}}}"
        self.var = f"v_{{{tag}}}" if sub else f"v^{{{tag}}}"
        self.gamma = f"\\gamma_{{{tag}}}" if sub else f"\\gamma^{{{tag}}}"
        self.beta = f"\\beta_{{{tag}}}" if sub else f"\\beta^{{{tag}}}"
        self.scale = f"\\frac{{{self.gamma}}}{{\\sqrt{{{self.var} + \\epsilon}}}}"
        self.inverse = f"\\frac{{1}}{{\\sqrt{{{self.var} + \\epsilon}}}}"

    def per(self, letter: str, i: str) -> str:
        """``letter`` of the layer for example ``i``, e.g. ``{u^{2}}_{i}``; the cheatsheet's
        subscripted layer takes the example after a comma, ``u_{1,i}`` (TeX refuses a
        second subscript on a braced accent, ``{\\hat{x}_{1}}_{i}``)."""
        if self.nota.name == "cheatsheet":
            return self.nota._base(letter, self.layer, i)
        return f"{{{self.nota._base(letter, self.layer, None)}}}_{{{i}}}"

    def u(self, i: str) -> str:
        return self.per("u", i)

    def xhat(self, i: str) -> str:
        return self.per("\\hat{x}", i)

    def z(self, i: str) -> str:
        if self.nota.name == "cheatsheet":
            return self.per("Z", i)  # Z_{h,i}, as u_{h,i}
        return f"{{{self.nota.z(self.layer)}}}_{{{i}}}"

    def dz(self, i: str) -> str:
        """dC/dz_i of the batch cost C."""
        return self.nota.partial("C", self.z(i))

    def delta(self, i: str) -> str:
        """The per-example error of example i (m dC/dz_i)."""
        if self.nota.name == "3b1b":
            return self.nota.partial(f"C_{{{i}}}", self.z(i))
        if self.nota.name == "cheatsheet":
            return self.per("E", i)  # E_{h,i}, as u_{h,i}
        return f"{{{self.nota.delta(self.layer)}}}_{{{i}}}"


def _weight_step(n: _Names) -> Step:
    """BP4 of a batch-normalized layer: the weights' gradient takes m dC/du as the error.

    Checked on u_i = w_1 a_1i + w_2 a_2i (two inputs) over the symbolic batch.
    """
    d = batch_norm.derive_backward(CHECK_BATCH)
    m, eps = CHECK_BATCH, {d.eps: batch_norm.EPS}
    w = sp.symbols("w1:3", real=True)
    a = [sp.symbols(f"a{k}_1:{m + 1}", real=True) for k in (1, 2)]
    u_of_w = {d.u[i]: w[0] * a[0][i] + w[1] * a[1][i] for i in range(m)}
    xhat = [x.subs(eps).subs(u_of_w) for x in d.xhat]
    cost = sp.Add(*[gk * (d.gamma * x + d.beta) for gk, x in zip(d.g, xhat, strict=True)])
    errors = [m * t.subs(eps).subs(u_of_w) for t in d.three_term]  # m dC/du_i
    nota, layer = n.nota, n.layer
    weight = nota.w(layer, "j", "k")
    below = nota.a(layer - 1, "k")
    if nota.name == "cheatsheet" and below.endswith("}"):
        prev = below[:-1] + ",i}"  # X_{k,i}: unit k, example i, as u_{h,i}
    else:
        prev = f"{{{below}}}_{{i}}"
    error = f"\\left(m {nota.partial('C', n.u('i'))}\\right)"
    return Step(
        "Weight gradient, with m dC/du as the error",
        f"{nota.grad('C', weight)} = \\frac{{1}}{{m}} \\sum_{{i=1}}^{{m}} {error} {prev}",
        (
            (
                sp.Derivative(cost, w[0]),
                sp.Add(*[e * ak for e, ak in zip(errors, a[0], strict=True)]) / m,
            ),
        ),
        label="BP4",
    )


def _steps(n: _Names) -> tuple[Step, ...]:
    d = batch_norm.derive_backward(CHECK_BATCH)
    eps = {d.eps: batch_norm.EPS}
    m = CHECK_BATCH
    u, g, xhat = d.u, d.g, [x.subs(eps) for x in d.xhat]
    z = [d.gamma * x + d.beta for x in xhat]
    cost = sp.Add(*[gk * zk for gk, zk in zip(g, z, strict=True)])  # dC/dz_k = g_k
    s = sp.sqrt(d.var + batch_norm.EPS)
    mean_g = sp.Add(*g) / m
    mean_gx = sp.Add(*[gk * xk for gk, xk in zip(g, xhat, strict=True)]) / m
    delta = [m * gk for gk in g]
    sum_i = "\\frac{1}{m} \\sum_{i=1}^{m}"
    # Two examples are i and t: j and k number a layer's units, as in w_jk, and s is the
    # mini-batch section's sum over the output units (a softmax output's BP1).
    other = "t"
    sum_k = f"\\sum_{{{other}=1}}^{{m}}"
    mean_k = f"\\frac{{1}}{{m}} {sum_k}"

    def kron(k: int, j: int) -> int:
        return 1 if k == j else 0

    local = [
        (sp.Derivative(xhat[k], u[0]), (kron(k, 0) - sp.Rational(1, m) - xhat[k] * xhat[0] / m) / s)
        for k in range(m)
    ]
    return (
        Step("Batch mean of a unit", f"{n.mu} = {sum_i} {n.u('i')}", ((d.mean, sp.Add(*u) / m),)),
        Step(
            "Biased batch variance",
            f"{n.var} = {sum_i} \\left({n.u('i')} - {n.mu}\\right)^{{2}}",
            ((d.var, sp.Add(*[(ui - d.mean) ** 2 for ui in u]) / m),),
        ),
        Step(
            "Normalized and shifted weighted input",
            f"{n.z('i')} = {n.gamma} {n.xhat('i')} + {n.beta}, \\quad {n.xhat('i')} = "
            f"\\frac{{{n.u('i')} - {n.mu}}}{{\\sqrt{{{n.var} + \\epsilon}}}}",
            ((z[0], d.gamma * (u[0] - d.mean) / s + d.beta),),
        ),
        Step(
            "Every example's z depends on the u of example i (through the mean and the variance)",
            f"{n.nota.partial('C', n.u('i'))} = {sum_k} {n.dz(other)} "
            f"{n.nota.partial(n.z(other), n.u('i'))}",
            (
                (
                    sp.Derivative(cost, u[0]),
                    sp.Add(*[gk * sp.Derivative(zk, u[0]) for gk, zk in zip(g, z, strict=True)]),
                ),
            ),
        ),
        Step(
            "The local partial through the mean and the variance",
            f"{n.nota.partial(n.xhat(other), n.u('i'))} = {n.inverse} \\left([{other} = i] - "
            f"\\frac{{1}}{{m}} - \\frac{{{n.xhat(other)} {n.xhat('i')}}}{{m}}\\right)",
            tuple(local),
        ),
        Step(
            "Summed over the examples",
            f"{n.nota.partial('C', n.u('i'))} = {n.scale} \\left({n.dz('i')} - \\frac{{1}}{{m}} "
            f"{sum_k} {n.dz(other)} - {n.xhat('i')} \\frac{{1}}{{m}} {sum_k} {n.dz(other)} "
            f"{n.xhat(other)}\\right)",
            ((sp.Derivative(cost, u[0]), d.gamma / s * (g[0] - mean_g - xhat[0] * mean_gx)),),
        ),
        Step(
            "The three-term form, in the per-example errors",
            f"m {n.nota.partial('C', n.u('i'))} = {n.scale} \\left({n.delta('i')} - {mean_k} "
            f"{n.delta(other)} - {n.xhat('i')} {mean_k} {n.delta(other)} {n.xhat(other)}\\right)",
            ((m * sp.Derivative(cost, u[0]), d.three_term[0].subs(eps) * m),),
            label="BN",
        ),
        Step(
            "Gradient of the scale",
            f"{n.nota.grad('C', n.gamma)} = {sum_i} {n.delta('i')} {n.xhat('i')}",
            (
                (
                    sp.Derivative(cost, d.gamma),
                    sp.Add(*[dk * xk for dk, xk in zip(delta, xhat, strict=True)]) / m,
                ),
            ),
            label="BN",
        ),
        Step(
            "Gradient of the shift",
            f"{n.nota.grad('C', n.beta)} = {sum_i} {n.delta('i')}",
            ((sp.Derivative(cost, d.beta), sp.Add(*delta) / m),),
            label="BN",
        ),
    )


def batch_norm_section(nota: Notation) -> Section:
    """The batch-norm derivation of the first batch-normalized layer of ``nota.spec``
    (every batch-normalized layer is alike)."""
    spec = nota.spec
    layers = spec.batch_norm_layers
    first = layers[0]
    names = _Names(nota, first)
    numbers = ", ".join(str(nota.number(layer)) for layer in layers)
    bp = nota.bp_labels  # BP1 to BP4 are the labels of Nielsen's book alone
    taker = "BP2 of the layer below" if bp else "the error of the layer below"
    below = f" ({taker} takes m dC/du in place of the error)" if first > 1 else ""
    replaced = "BP1 to BP4" if bp else "the error of each layer and the gradients"
    plural = len(layers) > 1
    intro = (
        f"Layer{'s' if plural else ''} {numbers} normalize{'' if plural else 's'} "
        f"the weighted input over the batch: ${names.u('i')}$ is the weighted input "
        f"(weights times the previous activations, no bias) of one unit for example i of "
        f"the m examples (t numbers another example; j and k number units, as elsewhere), "
        f"${names.mu}$ and ${names.var}$ its batch mean and biased variance; "
        f"each unit is normalized on its own, so one unit is shown. "
        f"Here $C$ is the mean of the m examples' costs and ${names.delta('i')}$ is the "
        f"per-example error, m times ${names.dz('i')}$. SymPy checks every step on a batch "
        f"of {CHECK_BATCH} symbolic examples, with $\\epsilon = 10^{{-5}}$ (PyTorch's). "
        f"The weights' gradient takes m dC/du in place of the error{below}. "
        "This section replaces the per-example sections (one example's forward pass, local "
        f"partials, chain rule and {replaced}): with batch normalization the error of a layer "
        "at u depends on every example of the batch, through the mean and the variance, so "
        "equations written for one example alone do not hold."
    )
    return Section(
        "Batch normalization's backward pass", intro, (*_steps(names), _weight_step(names))
    )


__all__ = ["CHECK_BATCH", "batch_norm_section"]
