"""The worked section of a batch-normalized network: its numbers over the whole batch.

Batch normalization couples the examples (and needs m >= 2), so the one-example blocks
of :mod:`chainrule.derive.document.worked_blocks` do not apply. For each
batch-normalized layer these blocks show, from the mini-batch program's values on the
whole batch (:func:`~chainrule.derive.document.worked.run_point`): each shown unit's
batch mean and biased variance, x-hat and z for the shown examples written out from
them, and the three-term error at u worked out term by term (its product must equal the
program's value); then the batch cost, the gradient (gamma and beta included) and, with
a learning rate, one descent step.
"""

from __future__ import annotations

import sympy as sp
from chainrule.derive import batch_norm, naming
from chainrule.derive.document.worked import Block, Env, _agree, _unit, number
from chainrule.derive.document.worked_blocks import (
    COMMA,
    EQ,
    MINUS,
    PLUS,
    TIMES,
    Namer,
    _words,
    factor,
    gradient_lines,
    join,
    name,
    shown_units,
    step_lines,
)
from chainrule.derive.values import Point

Line = tuple[str, str]


def _entry(matrix: sp.Matrix, j: int, i: int, rows: bool) -> sp.Expr:
    """Unit ``j`` of example ``i`` of a units x examples (or transposed) value."""
    return matrix[i, j] if rows else matrix[j, i]


def _examples(m: int) -> list[int]:
    """The examples shown: all of a small batch, else the first and the last."""
    return list(range(m)) if m <= 4 else [0, m - 1]


class _Layer:
    """The values and names of one batch-normalized layer at the point."""

    def __init__(self, namer: Namer, env: Env, layer: int) -> None:
        self.namer, self.env, self.layer, self.rows = namer, env, layer, namer.rows
        self.m = env[naming.INPUT].shape[0 if self.rows else 1]

    def names(self, j: int) -> dict[str, str]:
        """LaTeX of the layer's quantities at unit ``j`` (numbered from 1 when shown)."""
        nota, index = self.namer.nota, str(j + 1)
        tex = {
            key: nota._base(letter, self.layer, index)
            for key, letter in (
                ("u", "u"),
                ("mu", "\\mu"),
                ("v", "v"),
                ("xhat", "\\hat{x}"),
                ("gamma", "\\gamma"),
                ("beta", "\\beta"),
            )
        }
        tex["z"], tex["delta"] = nota.z(self.layer, index), nota.delta(self.layer, index)
        return tex

    def value(self, identifier: str, j: int, i: int | None = None) -> sp.Expr:
        matrix = self.env[identifier]
        return _unit(matrix, j, self.rows) if i is None else _entry(matrix, j, i, self.rows)

    def where(self, j: int, i: int | None = None) -> Line:
        text = f"unit {j + 1}" + ("" if i is None else f", example {i + 1}")
        return _words(f"{text}: ")

    def statistics(self) -> list[Line]:
        """mu_j and v_j of each shown unit, from the batch's u."""
        ly = self.layer
        return [
            join(
                self.where(j),
                name(self.names(j)["mu"]),
                EQ,
                number(self.value(naming.batch_mean(ly), j)),
                COMMA,
                name(self.names(j)["v"]),
                EQ,
                number(self.value(naming.batch_var(ly), j)),
            )
            for j in shown_units(self.namer.spec.sizes[ly])
        ]

    def normalized(self) -> list[Line]:
        """x-hat = (u - mu) / sqrt(v + eps) and z = gamma x-hat + beta, written out."""
        ly, lines = self.layer, []
        for j in shown_units(self.namer.spec.sizes[ly]):
            t = self.names(j)
            root = f"\\sqrt{{{t['v']} + \\epsilon}}"
            mu, var = self.value(naming.batch_mean(ly), j), self.value(naming.batch_var(ly), j)
            gamma, beta = self.value(naming.scale(ly), j), self.value(naming.shift(ly), j)
            for i in _examples(self.m):
                u, xhat = (
                    self.value(naming.linear(ly), j, i),
                    self.value(naming.normalized(ly), j, i),
                )
                z = self.value(naming.weighted_input(ly), j, i)
                _agree([[xhat], [batch_norm.normalize(u, mu, var)]], "x-hat")
                _agree(
                    [[z], [batch_norm.scale_shift(gamma, xhat, beta)]],
                    "z of a batch-normalized layer",
                )
                lines.append(
                    join(
                        self.where(j, i),
                        name(f"{t['xhat']} = \\frac{{{t['u']} - {t['mu']}}}{{{root}}}"),
                        (" = \\frac{", " = ("),
                        number(u),
                        MINUS,
                        factor(mu),
                        ("}{\\sqrt{", ")/√("),
                        number(var),
                        (" + 10^{-5}}}", " + 1e-5)"),
                        EQ,
                        number(xhat),
                        COMMA,
                        name(f"{t['z']} = {t['gamma']} {t['xhat']} + {t['beta']}"),
                        EQ,
                        number(gamma),
                        TIMES,
                        factor(xhat),
                        PLUS,
                        factor(beta),
                        EQ,
                        number(z),
                    )
                )
        return lines

    def three_terms(self) -> list[Line]:
        """m dC/du = gamma / sqrt(v + eps) (delta - mean(delta) - x-hat mean(delta x-hat)),
        term by term; the product must equal the program's error at u."""
        ly, lines, nota = self.layer, [], self.namer.nota
        for j in shown_units(self.namer.spec.sizes[ly]):
            t = self.names(j)
            error = (
                f"m {nota.partial('C', t['u'])} = "
                f"\\frac{{{t['gamma']}}}{{\\sqrt{{{t['v']} + \\epsilon}}}} \\left({t['delta']} - "
                f"{nota.grad('C', t['beta'])} - {t['xhat']} {nota.grad('C', t['gamma'])}\\right)"
            )
            var, gamma = self.value(naming.batch_var(ly), j), self.value(naming.scale(ly), j)
            mean_delta = self.value(naming.grad(naming.shift(ly)), j)
            mean_dx = self.value(naming.grad(naming.scale(ly)), j)
            scale = gamma / sp.sqrt(var + batch_norm.EPS)
            for i in _examples(self.m):
                delta = self.value(naming.delta(ly), j, i)
                xhat = self.value(naming.normalized(ly), j, i)
                product = batch_norm.input_error(gamma, var, delta, mean_delta, xhat, mean_dx)
                _agree([[product], [self.value(naming.linear_delta(ly), j, i)]], "three terms")
                lines.append(
                    join(
                        self.where(j, i),
                        name(error),
                        EQ,
                        number(scale),
                        TIMES,
                        ("\\left(", "("),
                        number(delta),
                        MINUS,
                        factor(mean_delta),
                        MINUS,
                        factor(xhat),
                        TIMES,
                        factor(mean_dx),
                        ("\\right)", ")"),
                        EQ,
                        number(product),
                    )
                )
        return lines


def batch_norm_blocks(namer: Namer, point: Point, env: Env) -> list[Block]:
    """The worked section's blocks after the masks for a batch-normalized network."""
    nota, m = namer.nota, point.m
    out = []
    for layer in namer.spec.batch_norm_layers:
        values, number_ = _Layer(namer, env, layer), nota.number(layer)
        out += [
            Block(
                f"Batch statistics of layer {number_} (per unit, over the {m} examples)",
                tuple(values.statistics()),
            ),
            Block(
                f"Normalized and shifted weighted inputs of layer {number_}",
                tuple(values.normalized()),
            ),
            Block(
                f"Three-term error of layer {number_} at the weighted sums (the gradients of "
                "beta and gamma are the batch means of the error and of the error times x-hat)",
                tuple(values.three_terms()),
            ),
        ]
    cost = (join(name("C"), EQ, number(env[naming.COST][0, 0])),)
    out.append(Block(f"Cost (mean over the {m} examples)", cost))
    out.append(Block(f"Gradient (mean over the {m} examples)", tuple(gradient_lines(namer, env))))
    if point.lr is not None:
        title = f"One gradient-descent step with learning rate {number(point.lr)[1]}"
        out.append(Block(title, tuple(step_lines(namer, env, point.lr))))
    return out
