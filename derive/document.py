"""The step-by-step derivation of a network's backpropagation, every line machine-checked.

:func:`derivation` turns a spec into a :class:`Derivation`: six sections of
:class:`Step` objects (the network, the forward equations, the local partials SymPy
derived, the chain rule written out for one weight per layer and then with the
shared terms named, the BP1-BP4 summary, and the mini-batch form that the generated
module executes line by line). Each step holds the LaTeX it displays and, in
``checks``, the SymPy expressions of every side of the equation it states, on a
*witness* network: the same depth, activations, cost, biases and layout, with each
layer cut to at most :data:`WITNESS_WIDTH` units and every weight, bias, input and
target its own symbol. The per-unit equations do not depend on the width, so the
witness checks them for every width; :func:`check_step` evaluates the sides at
random rational points (derivatives taken by ``sympy.diff`` of the full scalar cost).

The document renders to standalone LaTeX (amsmath and xcolor only), to Markdown with
``$$`` blocks, and to plain Unicode text. The network's user-given name never
appears in it; custom activations appear only as SymPy's LaTeX of the parsed
expression.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sympy as sp
from chainrule.derive import naming
from chainrule.derive.functions import sigmoid, softplus
from chainrule.derive.layers import (
    LOG1MP,
    LOGP,
    REST,
    UNIT_SUM,
    UPSTREAM,
    A,
    NetworkDerivation,
    Y,
    Z,
    _softmax_jvp,
    activation_expr,
    derive_network,
    tidy,
)
from chainrule.derive.notation import notation
from chainrule.derive.spec import Spec
from chainrule.derive.tables import ACTIVATIONS

#: Units per layer of the witness network on which the equations are checked.
WITNESS_WIDTH = 3
#: Examples in the witness mini-batch of the vectorized section.
WITNESS_BATCH = 2
#: Colour of the factors a layer shares with the layer above (memoized terms).
SHARED_COLOR = "teal"

Side = Any  # a SymPy expression or matrix


@dataclass(frozen=True)
class Step:
    """One displayed equation and the SymPy sides that make it checkable.

    ``checks`` (built on first use from ``source``, a tuple or a function returning
    one) holds one tuple of sides per instance checked (e.g. one per layer for a step
    written for a generic layer l); all sides of a tuple are equal.
    ``label`` is BP1..BP4, ``forward`` or ``cost`` where the step has one, and
    ``target`` the identifier a vectorized step assigns in the generated module.
    """

    title: str
    latex: str
    source: Any = field(repr=False, compare=False)
    label: str = ""
    target: str = ""
    _resolved: list = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def checks(self) -> tuple[tuple[Side, ...], ...]:
        """One tuple of equal sides per checked instance (built on first use)."""
        if not self._resolved:
            source = self.source
            self._resolved.append(tuple(source() if callable(source) else source))
        return self._resolved[0]

    @property
    def sides(self) -> tuple[Side, ...]:
        """The sides of the first (representative) instance."""
        return self.checks[0]

    @property
    def lhs(self) -> Side:
        """Left-hand side of the representative instance."""
        return self.sides[0]

    @property
    def rhs(self) -> Side:
        """Right-hand side of the representative instance."""
        return self.sides[-1]

    @property
    def equality(self) -> tuple[Side, Side]:
        """The SymPy equality the step states, as (lhs, rhs)."""
        return self.lhs, self.rhs


@dataclass(frozen=True)
class Section:
    """A numbered part of the document: a heading, a sentence or two, its steps."""

    title: str
    intro: str
    steps: tuple[Step, ...]
    table: tuple[tuple[str, ...], ...] = field(default=())
    items: tuple[tuple[str, str], ...] = field(default=())


# --------------------------------------------------------------------------- witness


_WRAPPED: dict[sp.Expr, type] = {}


def _wrapped(expr: sp.Expr) -> type:
    """A SymPy function equal to ``expr`` (in :data:`Z`) that stays unevaluated off numbers.

    Substituting a ReLU into a ReLU makes SymPy fold the nested piecewise conditions,
    which grows exponentially with depth; a function application keeps the witness
    linear in size, evaluates to ``expr`` at any number and differentiates to the
    wrapped ``diff(expr, Z)``.
    """
    if expr not in _WRAPPED:

        def evaluate(cls: type, arg: sp.Expr) -> sp.Expr | None:
            return expr.subs(Z, arg) if arg.is_Number else None

        def fdiff(self: sp.Function, argindex: int = 1) -> sp.Expr:
            return _wrapped(sp.diff(expr, Z))(self.args[0])

        _WRAPPED[expr] = type(
            f"piecewise{len(_WRAPPED)}",
            (sp.Function,),
            {"nargs": 1, "eval": classmethod(evaluate), "fdiff": fdiff},
        )
    return _WRAPPED[expr]


def _at(expr: sp.Expr, value: sp.Expr) -> sp.Expr:
    """``expr`` (in :data:`Z`) at ``value``; piecewise forms stay wrapped (see :func:`_wrapped`)."""
    if expr.has(sp.Piecewise) and not value.is_Symbol:
        return _wrapped(expr)(value)
    return expr.subs(Z, value)


class _At(sp.Expr):
    """``expr`` with ``variables`` replaced by ``values``, kept unevaluated.

    Like ``sympy.Subs`` but built in constant time: the layer errors of a deep
    witness are large expressions, and ``Subs`` inspects them on construction.
    """

    is_commutative = True

    def __new__(cls, expr: sp.Expr, variables: sp.Tuple, values: sp.Tuple) -> _At:
        return sp.Basic.__new__(cls, expr, variables, values)

    @property
    def free_symbols(self) -> set[sp.Basic]:
        expr, variables, values = self.args
        return (expr.free_symbols - set(variables)) | values.free_symbols

    def doit(self, **hints: Any) -> sp.Expr:
        expr, variables, values = self.args
        return expr.doit(**hints).xreplace(dict(zip(variables, values, strict=True)))


def _name(*parts: object) -> str:
    return "_".join(str(p) for p in parts)


class _Witness:
    """The scalar network on which every step's sides are built (m examples)."""

    def __init__(
        self, spec: Spec, derivation: NetworkDerivation, m: int, width: int = WITNESS_WIDTH
    ) -> None:
        self.spec = spec
        self.derivation = derivation
        self.m = m
        self.depth = spec.depth
        self.n = tuple(min(size, width) for size in spec.sizes)
        sym = naming.symbol
        n, big_l = self.n, self.depth
        self.x = sp.Matrix(n[0], m, lambda k, i: sym(_name(naming.input_entry(k), i)))
        self.W: dict[int, sp.Matrix] = {}
        self.b: dict[int, sp.Matrix] = {}
        for layer in range(1, big_l + 1):
            self.W[layer] = sp.Matrix(
                n[layer], n[layer - 1], lambda j, k, ly=layer: sym(naming.weight_entry(ly, j, k))
            )
            if spec.layers[layer - 1].bias:
                self.b[layer] = sp.Matrix(
                    n[layer], 1, lambda j, _, ly=layer: sym(naming.bias_entry(ly, j))
                )
            else:
                self.b[layer] = sp.zeros(n[layer], 1)
        y = sp.Matrix(n[big_l], m, lambda j, i: sym(_name(naming.target_entry(j), i)))
        if derivation.assumptions:
            # The derivation relies on sum_j y_j = 1: the witness targets satisfy it.
            for i in range(m):
                y[n[big_l] - 1, i] = 1 - sum(y[j, i] for j in range(n[big_l] - 1))
        self.y = y
        self.zfree = {
            layer: sp.Matrix(
                n[layer], m, lambda j, i, ly=layer: sym(_name(naming.weighted_input(ly), j, i))
            )
            for layer in range(1, big_l + 1)
        }
        self.afree = {0: self.x}
        for layer in range(1, big_l + 1):
            self.afree[layer] = sp.Matrix(
                n[layer], m, lambda j, i, ly=layer: sym(_name(naming.activation(ly), j, i))
            )
        self.grad_a = sp.Matrix(
            n[big_l], m, lambda j, i: sym(_name(naming.grad(naming.activation(big_l)), j, i))
        )
        self.zfull: dict[int, sp.Matrix] = {}
        self.afull = {0: self.x}
        for layer in range(1, big_l + 1):
            self.zfull[layer] = self.affine(layer, self.afull[layer - 1])
            self.afull[layer] = self.act(layer, self.zfull[layer])
        self.cost_full = self.batch_cost(self.afull[big_l])

    def ones(self) -> sp.Matrix:
        return sp.ones(1, self.m)

    def affine(self, layer: int, prev: sp.Matrix) -> sp.Matrix:
        """W^l prev + b^l 1^T."""
        return self.W[layer] * prev + self.b[layer] * self.ones()

    def act(self, layer: int, z: sp.Matrix) -> sp.Matrix:
        """The activation of ``layer`` applied to a matrix of weighted inputs."""
        derived = self.derivation.activations[layer - 1]
        if derived is None:
            out = sp.zeros(*z.shape)
            for i in range(z.shape[1]):
                norm = sum(sp.exp(z[k, i]) for k in range(z.shape[0]))
                for j in range(z.shape[0]):
                    out[j, i] = sp.exp(z[j, i]) / norm
            return out
        return z.applyfunc(lambda v: _at(derived.forward, v))

    def example_costs(self, out: sp.Matrix) -> list[sp.Expr]:
        """Per-example cost sum_j c(a^L_j, y_j) for each column of ``out``."""
        c = self.derivation.output.cost_element
        return [
            sp.Add(*[c.xreplace({A: out[j, i], Y: self.y[j, i]}) for j in range(out.shape[0])])
            for i in range(out.shape[1])
        ]

    def batch_cost(self, out: sp.Matrix) -> sp.Expr:
        """(1/m) sum over examples of the per-example cost."""
        return sp.Add(*self.example_costs(out)) / self.m

    @functools.cached_property
    def _cost_at_z(self) -> dict[int, sp.Expr]:
        costs = {}
        for layer in range(1, self.depth + 1):
            a = self.act(layer, self.zfree[layer])
            for upper in range(layer + 1, self.depth + 1):
                a = self.act(upper, self.affine(upper, a))
            costs[layer] = self.batch_cost(a)
        return costs

    def delta(self, layer: int) -> sp.Matrix:
        """m dC/dz^l as unevaluated derivatives, in the free weighted inputs of ``layer``."""
        cost = self._cost_at_z[layer]
        z = self.zfree[layer]
        return z.applyfunc(lambda v: self.m * sp.Derivative(cost, v))

    def delta_at(self, layer: int, z: sp.Matrix) -> sp.Matrix:
        """delta^l with the free weighted inputs replaced by ``z`` (kept unevaluated)."""
        free, values = sp.Tuple(*self.zfree[layer]), sp.Tuple(*z)
        return self.delta(layer).applyfunc(lambda e: _At(e, free, values))

    def delta_full(self, layer: int) -> sp.Matrix:
        """delta^l as a function of the inputs and parameters."""
        return self.delta_at(layer, self.zfull[layer])

    def dcost(self, param: sp.Symbol) -> sp.Expr:
        """dC/d(param) of the full cost, unevaluated."""
        return sp.Derivative(self.cost_full, param)

    def free_to_full(self, expr: Side) -> Side:
        """Replace free z^l, a^l symbols by their values in the inputs and parameters."""
        mapping: dict[sp.Symbol, sp.Expr] = {}
        for layer in range(1, self.depth + 1):
            mapping.update(zip(self.zfree[layer], self.zfull[layer], strict=True))
            mapping.update(zip(self.afree[layer], self.afull[layer], strict=True))
        return expr.xreplace(mapping)


def _log1m_softmax(z: sp.Matrix) -> sp.Matrix:
    """log(1 - softmax) of each column of ``z`` (units x examples), from the definition:
    log sum over the other units of e^z, less log sum over all units."""
    units, m = z.shape

    def entry(j: int, i: int) -> sp.Expr:
        every = [sp.exp(z[k, i]) for k in range(units)]
        return sp.log(sp.Add(*every[:j], *every[j + 1 :])) - sp.log(sp.Add(*every))

    return sp.Matrix(units, m, entry)


@functools.lru_cache(maxsize=32)
def _witness(spec: Spec, m: int, width: int = WITNESS_WIDTH) -> _Witness:
    return _Witness(spec, derive_network(spec), m, width)


# --------------------------------------------------------------------------- checking


def _sample(symbols: list[sp.Symbol], rng: random.Random) -> dict[sp.Symbol, sp.Rational]:
    return {s: sp.Rational(rng.randint(-150, 150), 100) for s in symbols}


def _collapse(expr: sp.Basic, var: sp.Symbol, point: dict, memo: dict) -> sp.Basic:
    """``expr`` with every subexpression free of ``var`` replaced by its value at ``point``.

    ``memo`` maps each visited subexpression to (depends on var, collapsed form), so a
    subexpression shared many times in the cost is visited once.
    """
    if expr in memo:
        return memo[expr][1]
    if not expr.args:
        depends = expr == var
        out = expr if depends or not isinstance(expr, sp.Expr) else expr.xreplace(point)
    else:
        args = [_collapse(arg, var, point, memo) for arg in expr.args]
        depends = any(memo[arg][0] for arg in expr.args)
        out = expr.func(*args)
        if not depends and isinstance(out, sp.Expr) and not out.is_Number:
            out = sp.N(out, 40)
    memo[expr] = (depends, out)
    return out


def _closed(expr: sp.Expr) -> sp.Expr:
    """``expr`` with sigmoid and softplus written out in exp and log: a reference
    derivative is then SymPy's diff of the definition, not the class's own ``fdiff``
    (which a wrong identity would make agree with itself)."""
    return expr.replace(
        lambda e: isinstance(e, (sigmoid, softplus)), lambda e: e.closed_form(e.args[0])
    )


def _numeric(expr: sp.Expr, point: dict[sp.Symbol, sp.Expr], memo: dict | None = None) -> sp.Expr:
    """``expr`` at ``point``, taking each derivative after fixing the other variables.

    Every part of the differentiated expression that does not depend on the variable
    is evaluated first, so ``diff`` works on a small expression; the derivative is
    still exact in the variable. ``memo`` shares repeated derivatives (one point).
    """
    memo = {} if memo is None else memo
    if not expr.has(sp.Derivative, sp.Subs, _At):
        return expr.xreplace(point)
    if expr in memo:
        return memo[expr]
    if isinstance(expr, sp.Derivative):
        (var, order), *rest = expr.variable_count
        if rest or order != 1:
            out = sp.Derivative(_closed(expr.expr), *expr.variable_count).doit().xreplace(point)
        else:
            others = {s: v for s, v in point.items() if s != var}
            inner = _numeric(expr.expr, others, {})
            inner = _collapse(inner, var, others, {})
            out = sp.diff(_closed(inner), var).xreplace({var: point[var]})
    elif isinstance(expr, (sp.Subs, _At)):
        inner, variables, values = expr.args
        moved = dict(point)
        for var, value in zip(variables, values, strict=True):
            moved[var] = sp.N(_numeric(value, point, memo), 40)
        out = _numeric(inner, moved, {})
    else:
        out = expr.func(*[_numeric(arg, point, memo) for arg in expr.args])
    memo[expr] = out
    return out


def _evaluate(side: Side, point: dict[sp.Symbol, sp.Rational], memo: dict) -> list[sp.Float]:
    matrix = side if isinstance(side, sp.MatrixBase) else sp.Matrix([side])
    return [sp.N(_numeric(entry, point, memo), 30) for entry in matrix]


def sides_agree(sides: tuple[Side, ...], points: int = 2, seed: int = 0) -> bool:
    """True when all ``sides`` agree exactly at random rational points (30 digits).

    Derivatives and substitutions in the sides are evaluated first (``doit``), so an
    unevaluated ``Derivative`` of the full scalar cost is compared with the chain-rule
    form it is claimed to equal.

    Examples
    --------
    >>> x = sp.Symbol("x", real=True)
    >>> sides_agree((sp.Derivative(x**3, x), 3 * x**2))
    True
    """
    symbols: set[sp.Symbol] = set()
    for side in sides:
        symbols |= {s for s in side.free_symbols if isinstance(s, sp.Symbol)}
    ordered = sorted(symbols, key=lambda s: s.name)
    rng = random.Random(seed)
    for _ in range(points):
        point = _sample(ordered, rng)
        memo: dict = {}
        reference = _evaluate(sides[0], point, memo)
        for side in sides[1:]:
            values = _evaluate(side, point, memo)
            if len(values) != len(reference):
                return False
            for left, right in zip(reference, values, strict=True):
                if not (left.is_finite and right.is_finite):
                    return False
                if abs(left - right) > sp.Float("1e-20", 30) * (1 + abs(right)):
                    return False
    return True


def check_step(step: Step, points: int = 2, seed: int = 0) -> bool:
    """True when every checked instance of ``step`` holds (see :func:`sides_agree`)."""
    return all(sides_agree(sides, points, seed) for sides in step.checks)


# --------------------------------------------------------------------------- helpers


def _tex(expr: sp.Expr, names: dict[sp.Symbol, str]) -> str:
    """SymPy's LaTeX of ``expr`` with the layer-level symbols named by the notation."""
    return sp.latex(expr, symbol_names=names)


def _shown(expr: sp.Expr) -> sp.Expr:
    """The factored form a reader expects: 2(a - y) rather than 2a - 2y."""
    return expr if expr.has(sp.Piecewise) else sp.factor_terms(tidy(expr))


def _plain(latex: str) -> str:
    """LaTeX with sized parentheses made plain, to compare two printed forms."""
    return latex.replace("\\left(", "(").replace("\\right)", ")").replace(" ", "")


def _color(body: str) -> str:
    return f"\\textcolor{{{SHARED_COLOR}}}{{{body}}}"


def _activation_words(name: str) -> str:
    """A table name as is; a custom activation as SymPy's LaTeX of the parsed expression."""
    if name in ACTIVATIONS:
        return name
    return "$" + sp.latex(activation_expr(name)) + "$"


@dataclass(frozen=True)
class _Factor:
    """One factor of a chain-rule product: its ratio form and its evaluated form."""

    ratio: str
    value: str
    shared: bool = False
    summation: str = ""


class _Builder:
    """Builds the sections of one derivation (one spec, one notation)."""

    def __init__(self, spec: Spec, notation_name: str, width: int = WITNESS_WIDTH) -> None:
        self.spec = spec
        self.width = width
        self.nota = notation(notation_name, spec)
        self.d = derive_network(spec)
        self.w1 = _witness(spec, 1, width)
        self.depth = spec.depth
        self.forward_order = notation_name == "3b1b"
        self.sep = " \\cdot " if notation_name == "cheatsheet" else " \\, "
        self.dcda = _shown(self.d.output.dcost_da)

    # -- small pieces ------------------------------------------------------------------
    def names(self, layer: int, index: str | None) -> dict[sp.Symbol, str]:
        """LaTeX names of the layer-level symbols Z, A, Y, LOGP for one unit of ``layer``."""
        nota = self.nota
        a = nota.a(layer, index)
        return {Z: nota.z(layer, index), A: a, Y: nota.y(index), LOGP: f"\\log {a}"}

    def instances(self, layer: int) -> list[tuple[int, int]]:
        """Witness unit pairs (j, k) on which a per-weight equation of ``layer`` is checked."""
        n = self.w1.n
        first, last = (0, 0), (n[layer] - 1, n[layer - 1] - 1)
        return [first] if first == last else [first, last]

    def units(self, layer: int) -> list[int]:
        """Witness units on which a per-unit equation of ``layer`` is checked."""
        return sorted({0, self.w1.n[layer] - 1})

    def join(self, parts: list[str]) -> str:
        return self.sep.join(p for p in parts if p)

    def dcda_tex(self, index: str | None, factor: bool = False) -> str:
        """dC/da^L as SymPy prints it; in parentheses when it is a sum used as a factor."""
        text = _tex(self.dcda, self.names(self.depth, index))
        return f"\\left({text}\\right)" if factor and isinstance(self.dcda, sp.Add) else text

    def sprime_at(self, layer: int, z: sp.Expr) -> sp.Expr:
        return _at(self.d.activations[layer - 1].derivative, z)

    def in_order(self, backward: list[str]) -> list[str]:
        """Factors listed from the cost back, reversed for a notation that reads forward."""
        return backward if not self.forward_order else list(reversed(backward))

    # -- 1. network ----------------------------------------------------------------------
    def network(self) -> Section:
        spec, nota = self.spec, self.nota
        big_l = self.depth
        table = [
            ("layer", "units", "activation", "bias"),
            ("0 (input)", str(spec.input_size), "", ""),
        ]
        for layer, ly in enumerate(spec.layers, start=1):
            table.append(
                (
                    str(layer),
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
            (
                f"${nota.delta('l', 'j')}$",
                f"error of unit j, ${nota.partial(nota.cost, nota.z('l', 'j'))}$",
            ),
            (f"${nota.y('j')}$, ${nota.cost}$", "target and cost of one example"),
        ]
        if any(ly.bias for ly in spec.layers):
            items.insert(1, (f"${nota.b('l', 'j')}$", "bias of unit j of layer l"))
        intro = (
            f"A feedforward network with {big_l} weight layer(s), sizes "
            f"{'-'.join(map(str, spec.sizes))}, {spec.cost} cost, {spec.layout} layout. "
            "An index is dropped for a layer of a single unit."
        )
        if any(size > WITNESS_WIDTH for size in spec.sizes):
            intro += (
                f" SymPy checks every equation on a copy with at most {WITNESS_WIDTH} units per "
                "layer: the per-unit equations do not depend on the width."
            )
        return Section("The network and the notation", intro, (), tuple(table), tuple(items))

    # -- 2. forward ----------------------------------------------------------------------
    def forward(self) -> Section:
        nota, w1 = self.nota, self.w1
        steps: list[Step] = []
        for layer in range(1, self.depth + 1):
            has_bias = self.spec.layers[layer - 1].bias
            below = f"{nota.sum(layer - 1, 'k')}{nota.w(layer, 'j', 'k')} {nota.a(layer - 1, 'k')}"
            if has_bias:
                below += f" + {nota.b(layer, 'j')}"
            product = w1.affine(layer, w1.afree[layer - 1])
            checks = []
            for j in self.units(layer):
                explicit = sp.Add(
                    *[w1.W[layer][j, k] * w1.afree[layer - 1][k, 0] for k in range(w1.n[layer - 1])]
                ) + (w1.b[layer][j, 0] if has_bias else 0)
                checks.append((product[j, 0], explicit))
            steps.append(
                Step(
                    f"Weighted input of layer {layer}",
                    f"{nota.z(layer, 'j')} = {below}",
                    tuple(checks),
                )
            )
            steps.append(self.activation_step(layer))
        big_l = self.depth
        out = self.d.output
        cost_tex = _tex(out.cost_element, self.names(big_l, "j"))
        a_l = w1.afree[big_l]
        explicit = sp.Add(
            *[out.cost_element.subs({A: a_l[j, 0], Y: w1.y[j, 0]}) for j in range(w1.n[big_l])]
        )
        steps.append(
            Step(
                "Cost of one example",
                f"{nota.cost} = {nota.sum(big_l, 'j')}{cost_tex}",
                ((w1.example_costs(a_l)[0], explicit),),
            )
        )
        intro = (
            "Each layer forms weighted inputs from the activations below it and applies its "
            "activation; the cost compares the output with the target."
        )
        return Section("Forward equations", intro, tuple(steps))

    def activation_step(self, layer: int) -> Step:
        nota, w1 = self.nota, self.w1
        derived = self.d.activations[layer - 1]
        z = w1.zfree[layer]
        if derived is None:
            zs = [z[i, 0] for i in range(w1.n[layer])]
            explicit = sp.exp(zs[0]) / sp.Add(*[sp.exp(v) for v in zs])
            latex = (
                f"{nota.a(layer, 'j')} = \\frac{{e^{{{nota.z(layer, 'j')}}}}}"
                f"{{\\sum_{{k}} e^{{{nota.z(layer, 'k')}}}}}"
            )
            return Step(
                f"Softmax output of layer {layer}", latex, ((w1.act(layer, z)[0, 0], explicit),)
            )
        names = self.names(layer, "j")
        forward = derived.forward
        closed = forward.rewrite(sp.exp) if forward.has(sp.Function) else forward
        parts = [nota.a(layer, "j"), f"{nota.act_letter(layer)}({nota.z(layer, 'j')})"]
        sides: list[sp.Expr] = [w1.act(layer, z)[0, 0]]
        for form in (forward, closed):
            text = _tex(form, names)
            if _plain(text) not in [_plain(p) for p in parts]:
                parts.append(text)
                sides.append(form.subs(Z, z[0, 0]))
        if len(sides) == 1:
            sides.append(forward.subs(Z, z[0, 0]))
        return Step(f"Activation of layer {layer}", " = ".join(parts), (tuple(sides),))

    # -- 3. local partials ---------------------------------------------------------------
    def local_partials(self) -> Section:
        nota, w1, d = self.nota, self.w1, self.d
        steps: list[Step] = []
        for layer in range(1, self.depth + 1):
            derived = d.activations[layer - 1]
            if derived is None:
                continue
            z = w1.zfree[layer][0, 0]
            names = self.names(layer, "j")
            parts = [nota.partial(nota.a(layer, "j"), nota.z(layer, "j")), nota.sprime(layer, "j")]
            parts.append(_tex(derived.derivative, names))
            sides = [sp.diff(_closed(derived.forward), Z).subs(Z, z), derived.derivative.subs(Z, z)]
            if derived.cached != derived.derivative:
                parts.append(_tex(derived.cached, names))
                sides.append(derived.cached.subs({A: derived.forward.subs(Z, z), Z: z}))
            steps.append(
                Step(
                    f"Derivative of the activation of layer {layer}",
                    " = ".join(parts),
                    (tuple(sides),),
                )
            )
        big_l = self.depth
        a_l = w1.afree[big_l]
        cost = w1.example_costs(a_l)[0]
        checks = tuple(
            (sp.diff(cost, a_l[j, 0]), self.dcda.subs({A: a_l[j, 0], Y: w1.y[j, 0]}))
            for j in self.units(big_l)
        )
        latex = f"{nota.partial(nota.cost, nota.a(big_l, 'j'))} = {self.dcda_tex('j')}"
        steps.append(Step("Derivative of the cost", latex, checks))
        if d.output.softmax is not None:
            steps.append(self.softmax_step())
        z_w, z_a, z_b = [], [], []
        for layer in range(1, big_l + 1):
            local = w1.affine(layer, w1.afree[layer - 1])
            for j, k in self.instances(layer):
                z_w.append((sp.diff(local[j, 0], w1.W[layer][j, k]), w1.afree[layer - 1][k, 0]))
                z_a.append((sp.diff(local[j, 0], w1.afree[layer - 1][k, 0]), w1.W[layer][j, k]))
                if self.spec.layers[layer - 1].bias:
                    z_b.append((sp.diff(local[j, 0], w1.b[layer][j, 0]), sp.Integer(1)))
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
        nota, w1 = self.nota, self.w1
        big_l = self.depth
        raw_p, raw_q, raw_r = _softmax_jvp()
        a = w1.act(big_l, w1.zfree[big_l])
        z, g = w1.zfree[big_l], w1.grad_a
        n = w1.n[big_l]
        checks = []
        for j in self.units(big_l):
            lhs = sp.Add(*[sp.diff(a[k, 0], z[j, 0]) * g[k, 0] for k in range(n)])
            total = sp.Add(*[raw_r.subs({A: a[k, 0], UPSTREAM: g[k, 0]}) for k in range(n)])
            rhs = raw_p.subs({A: a[j, 0], UPSTREAM: g[j, 0]}) + raw_q.subs(A, a[j, 0]) * total
            checks.append((lhs, rhs))
        names_j = {**self.names(big_l, "j"), UPSTREAM: "g_{j}"}
        names_k = {**self.names(big_l, "k"), UPSTREAM: "g_{k}"}
        latex = (
            f"\\sum_{{k}} {nota.partial(nota.a(big_l, 'k'), nota.z(big_l, 'j'))} g_{{k}} = "
            f"{_tex(raw_p, names_j)} + {_tex(raw_q, names_j)} \\sum_{{k}} {_tex(raw_r, names_k)}"
        )
        return Step("Softmax Jacobian times a vector g", latex, tuple(checks))

    # -- 4. the chain rule per layer -------------------------------------------------------
    def chain(self) -> Section:
        steps: list[Step] = []
        for layer in range(self.depth, 0, -1):
            steps.append(self.expanded_step(layer))
            steps.append(self.error_step(layer))
            steps.extend(self.gradient_steps(layer))
        intro = (
            "First the chain rule for one weight of each layer, written out in full; then the "
            "same with the shared terms named. Coloured factors are the layer error of the layer "
            "above (or the output error), computed once and reused: that is what backpropagation "
            "saves."
        )
        return Section("The chain rule, written out and memoized", intro, tuple(steps))

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
                atoms.append(_Factor(local, nota.sprime(m, i), m >= first_shared))
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
        lines = []
        for start in range(0, len(pieces), per_line):
            lines.append(self.join(pieces[start : start + per_line]))
        return lines

    def chain_value(self, layer: int, j: int, k: int, mode: str) -> sp.Expr:
        """dC/dw^l_jk on the witness, as the chain product (``ratio`` or ``value`` factors)."""
        w1, d, big_l = self.w1, self.d, self.depth
        memo: dict[tuple[int, int], sp.Expr] = {}
        a_top, z_top = w1.afree[big_l], w1.zfree[big_l]
        cost = w1.example_costs(a_top)[0]

        def local(m: int, i: int) -> sp.Expr:
            derived = d.activations[m - 1]
            if mode == "ratio":
                return _at(sp.diff(_closed(derived.forward), Z), w1.zfull[m][i, 0])
            return _at(derived.derivative, w1.zfull[m][i, 0])

        def final(i: int) -> sp.Expr:
            if mode == "ratio":
                return w1.free_to_full(sp.diff(cost, a_top[i, 0]))
            return self.dcda.xreplace({A: w1.afull[big_l][i, 0], Y: w1.y[i, 0]})

        def upward(m: int, i: int) -> sp.Expr:
            key = (m, i)
            if key in memo:
                return memo[key]
            if m == big_l:
                if d.activations[m - 1] is None:
                    soft = w1.act(big_l, z_top)
                    out = sp.Add(
                        *[
                            w1.free_to_full(sp.diff(soft[t, 0], z_top[i, 0])) * final(t)
                            for t in range(w1.n[big_l])
                        ]
                    )
                else:
                    out = local(m, i) * final(i)
            else:
                out = local(m, i) * sp.Add(
                    *[w1.W[m + 1][q, i] * upward(m + 1, q) for q in range(w1.n[m + 1])]
                )
            memo[key] = out
            return out

        return w1.afull[layer - 1][k, 0] * upward(layer, j)

    def expanded_step(self, layer: int) -> Step:
        nota, w1 = self.nota, self.w1
        lhs = nota.grad(nota.cost, nota.w(layer, "j", "k"))
        ratio = self.render_chain(layer, "ratio", colour=False)
        value = self.render_chain(layer, "value", colour=True)
        rows = [f"{lhs} &= {ratio[0]}"] + [f"&\\quad {line}" for line in ratio[1:]]
        rows += [f"&= {value[0]}"] + [f"&\\quad {line}" for line in value[1:]]
        latex = "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"
        checks = tuple(
            (
                w1.dcost(w1.W[layer][j, k]),
                self.chain_value(layer, j, k, "ratio"),
                self.chain_value(layer, j, k, "value"),
            )
            for j, k in self.instances(layer)
        )
        return Step(f"Chain rule for a weight of layer {layer}, written out", latex, checks)

    def error_step(self, layer: int) -> Step:
        nota, w1, d, big_l = self.nota, self.w1, self.d, self.depth
        head = f"{nota.delta(layer, 'j')} = {nota.partial(nota.cost, nota.z(layer, 'j'))}"
        z = w1.zfree[layer]
        checks = []
        if layer == big_l:
            out = d.output
            names = self.names(big_l, "j")
            if out.softmax is None:
                symbolic = self.in_order(
                    [nota.partial(nota.cost, nota.a(big_l, "j")), nota.sprime(big_l, "j")]
                )
                valued = self.in_order([self.dcda_tex("j", True), nota.sprime(big_l, "j")])
                parts = [head, self.join(symbolic), self.join(valued)]
                show_final = not out.delta.has(sp.Piecewise)
                if show_final:
                    parts.append(_tex(out.delta, names))
                act = d.activations[big_l - 1]
                for j in self.units(big_l):
                    zj, yj = z[j, 0], w1.y[j, 0]
                    aj = act.forward.subs(Z, zj)
                    sides = [
                        w1.delta(big_l)[j, 0],
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
                        f"{_tex(jvp.elementwise, names)} + {_tex(jvp.scale, names)} "
                        f"\\sum_{{k}} {_tex(jvp.summand, names_k)}"
                    )
                else:
                    parts.append(_tex(jvp.elementwise, names))
                a = w1.act(big_l, z)
                n = w1.n[big_l]
                for j in self.units(big_l):
                    chain = sp.Add(
                        *[
                            sp.diff(a[k, 0], z[j, 0]) * self.dcda.subs({A: a[k, 0], Y: w1.y[k, 0]})
                            for k in range(n)
                        ]
                    )
                    sub = {A: a[j, 0], Y: w1.y[j, 0]}
                    if jvp.summand_total is None:
                        total = sp.Add(
                            *[jvp.summand.subs({A: a[k, 0], Y: w1.y[k, 0]}) for k in range(n)]
                        )
                        formula = jvp.elementwise.subs(sub) + jvp.scale.subs(sub) * total
                    else:
                        formula = jvp.elementwise.subs(sub)
                    checks.append((w1.delta(big_l)[j, 0], chain, formula))
            title = "Output error of one unit"
            return Step(title, " = ".join(parts), tuple(checks), label="BP1")
        q = nota.sum_letter(1, layer + 1)
        factors = self.in_order(
            [
                _color(nota.delta(layer + 1, q)),
                nota.w(layer + 1, q, "j"),
                nota.sprime(layer, "j"),
            ]
        )
        if self.forward_order:
            body = (
                f"{nota.sprime(layer, 'j')} {nota.sum(layer + 1, q)}{nota.w(layer + 1, q, 'j')} "
                + _color(nota.delta(layer + 1, q))
            )
        else:
            body = nota.sum(layer + 1, q) + self.join(factors)
        latex = f"{head} = {body}"
        inner = w1.affine(layer + 1, w1.act(layer, z))
        upper = w1.delta_at(layer + 1, inner)
        for j in self.units(layer):
            rhs = self.sprime_at(layer, z[j, 0]) * sp.Add(
                *[w1.W[layer + 1][q_, j] * upper[q_, 0] for q_ in range(w1.n[layer + 1])]
            )
            checks.append((w1.delta(layer)[j, 0], rhs))
        return Step(f"Error of a unit of layer {layer}", latex, tuple(checks), label="BP2")

    def gradient_steps(self, layer: int) -> list[Step]:
        nota, w1 = self.nota, self.w1
        delta = w1.delta_full(layer)
        parts = self.in_order([nota.delta(layer, "j"), nota.a(layer - 1, "k")])
        latex = f"{nota.grad(nota.cost, nota.w(layer, 'j', 'k'))} = {self.join(parts)}"
        checks = tuple(
            (w1.dcost(w1.W[layer][j, k]), w1.afull[layer - 1][k, 0] * delta[j, 0])
            for j, k in self.instances(layer)
        )
        steps = [Step(f"Gradient of a weight of layer {layer}", latex, checks, label="BP4")]
        if self.spec.layers[layer - 1].bias:
            latex = f"{nota.grad(nota.cost, nota.b(layer, 'j'))} = {nota.delta(layer, 'j')}"
            checks = tuple((w1.dcost(w1.b[layer][j, 0]), delta[j, 0]) for j in self.units(layer))
            steps.append(Step(f"Gradient of a bias of layer {layer}", latex, checks, label="BP3"))
        return steps

    # -- 5. summary --------------------------------------------------------------------
    def summary(self) -> Section:
        nota, w1, d, big_l = self.nota, self.w1, self.d, self.depth
        rows = nota.rows
        steps: list[Step] = []
        out = d.output
        names = self.names(big_l, None)
        delta_l = w1.delta(big_l)
        z_l = w1.zfree[big_l]
        a_l = w1.act(big_l, z_l)

        def oriented(matrix: sp.Matrix) -> sp.Matrix:
            return matrix.T if rows else matrix

        if out.softmax is None:
            times = nota.times(big_l)
            first = f"{nota.grad_a()} {times} {nota.sprime(big_l)}"
            second = f"\\left({_tex(self.dcda, names)}\\right) {times} {nota.sprime(big_l)}"
            parts = [nota.delta(big_l), first, second]
            product = sp.Matrix(
                w1.n[big_l],
                1,
                lambda j, _: (
                    self.dcda.subs({A: a_l[j, 0], Y: w1.y[j, 0]}) * self.sprime_at(big_l, z_l[j, 0])
                ),
            )
            sides = [oriented(delta_l), oriented(product), oriented(product)]
            if not out.delta.has(sp.Piecewise):
                parts.append(_tex(out.delta, names))
                sides.append(
                    oriented(
                        sp.Matrix(
                            w1.n[big_l],
                            1,
                            lambda j, _: out.delta.subs(
                                {A: a_l[j, 0], Z: z_l[j, 0], Y: w1.y[j, 0]}
                            ),
                        )
                    )
                )
            latex = " = ".join(parts)
        else:
            jvp = out.softmax
            jac = f"J^{{{nota.tag(big_l)}}}" if nota.name != "cheatsheet" else "J_{o}"
            first = f"{nota.transpose(jac)} {nota.grad_a()}"
            sub = lambda expr, j: expr.subs({A: a_l[j, 0], Y: w1.y[j, 0]})  # noqa: E731
            n = w1.n[big_l]
            if jvp.summand_total is None:
                total = sp.Add(*[sub(jvp.summand, k) for k in range(n)])
                formula = sp.Matrix(
                    n, 1, lambda j, _: sub(jvp.elementwise, j) + sub(jvp.scale, j) * total
                )
                body = (
                    f"{_tex(jvp.elementwise, names)} + {_tex(jvp.scale, names)} "
                    f"\\sum_{{k}} {_tex(jvp.summand, self.names(big_l, 'k'))}"
                )
            else:
                formula = sp.Matrix(n, 1, lambda j, _: sub(jvp.elementwise, j))
                body = _tex(jvp.elementwise, names)
            latex = f"{nota.delta(big_l)} = {first} = {body}"
            sides = [oriented(delta_l), oriented(formula)]
        steps.append(Step("Output error", latex, (tuple(sides),), label="BP1"))
        for layer in range(big_l - 1, 0, -1):
            steps.append(self.bp2_vector(layer))
        for layer in range(big_l, 0, -1):
            if self.spec.layers[layer - 1].bias:
                delta = w1.delta_full(layer)
                lhs = sp.Matrix(w1.n[layer], 1, lambda j, _, ly=layer: w1.dcost(w1.b[ly][j, 0]))
                latex = f"{nota.grad(nota.cost, nota.b(layer))} = {nota.delta(layer)}"
                steps.append(
                    Step(
                        f"Bias gradient of layer {layer}",
                        latex,
                        ((oriented(lhs), oriented(delta)),),
                        label="BP3",
                    )
                )
        for layer in range(big_l, 0, -1):
            steps.append(self.bp4_vector(layer))
        intro = "The four equations of backpropagation for this network, in vector form"
        if any(size > 1 for size in self.spec.sizes[1:]):
            intro += " ($\\odot$ is the elementwise product)"
        intro += "."
        if d.assumptions:
            intro += " The output error assumes each target sums to one ($\\\\sum_j y_j = 1$)."
        return Section("Summary: BP1 to BP4", intro, tuple(steps))

    def scalar_pair(self, upper: int, lower: int) -> bool:
        return self.nota.size(upper) == 1 and self.nota.size(lower) == 1

    def bp2_vector(self, layer: int) -> Step:
        nota, w1 = self.nota, self.w1
        z = w1.zfree[layer]
        inner = w1.affine(layer + 1, w1.act(layer, z))
        upper = w1.delta_at(layer + 1, inner)
        sprime = z.applyfunc(lambda v: self.sprime_at(layer, v))
        if nota.rows:
            lhs = w1.delta(layer).T
            rhs = (upper.T * w1.W[layer + 1].T.T).multiply_elementwise(sprime.T)
        else:
            lhs = w1.delta(layer)
            rhs = (w1.W[layer + 1].T * upper).multiply_elementwise(sprime)
        weight = nota.weight_matrix(layer + 1)
        up = nota.delta(layer + 1)
        if self.scalar_pair(layer + 1, layer):
            weight = nota.w(layer + 1, None, None)
            factors = (
                [up, weight, nota.sprime(layer)]
                if not self.forward_order
                else [nota.sprime(layer), weight, up]
            )
            body = self.join(factors)
        elif nota.rows:
            back = f"\\left({up} {nota.transpose(weight)}\\right)"
            body = f"{back} {nota.times(layer)} {nota.sprime(layer)}"
        else:
            back = f"\\left({nota.transpose(weight)} {up}\\right)"
            body = f"{back} {nota.times(layer)} {nota.sprime(layer)}"
        latex = f"{nota.delta(layer)} = {body}"
        return Step(f"Error of layer {layer}", latex, ((lhs, rhs),), label="BP2")

    def bp4_vector(self, layer: int) -> Step:
        nota, w1 = self.nota, self.w1
        delta = w1.delta_full(layer)
        prev = w1.afull[layer - 1]
        n_out, n_in = w1.n[layer], w1.n[layer - 1]
        if nota.rows:
            lhs = sp.Matrix(n_in, n_out, lambda k, j: w1.dcost(w1.W[layer][j, k]))
            rhs = prev.T.T * delta.T
        else:
            lhs = sp.Matrix(n_out, n_in, lambda j, k: w1.dcost(w1.W[layer][j, k]))
            rhs = delta * prev.T
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
        latex = f"{nota.grad(nota.cost, target)} = {body}"
        return Step(f"Weight gradient of layer {layer}", latex, ((lhs, rhs),), label="BP4")

    # -- 6. vectorized -------------------------------------------------------------------
    def vectorized(self) -> Section:
        """The mini-batch statements, in the order and with the labels of the module."""
        nota, spec, d = self.nota, self.spec, self.d
        w2 = _witness(spec, WITNESS_BATCH, self.width)
        rows = nota.rows
        m = w2.m
        big_l = self.depth

        def o(matrix: sp.Matrix) -> sp.Matrix:
            return matrix.T if rows else matrix

        def bnames(layer: int) -> dict[sp.Symbol, str]:
            a = nota.batch("A", layer)
            return {Z: nota.batch("Z", layer), A: a, Y: "Y", LOGP: f"\\log {a}"}

        steps: list[Step] = [
            Step(
                "Input batch",
                f"{nota.batch_a0} = X",
                ((o(w2.x), o(w2.afull[0])),),
                "forward",
                naming.activation(0),
            )
        ]
        for layer in range(1, big_l + 1):
            zb, ab, prev = (
                nota.batch("Z", layer),
                nota.batch("A", layer),
                nota.batch("A", layer - 1),
            )
            wb, bias = nota.weight_matrix(layer), spec.layers[layer - 1].bias
            if rows:
                body = f"{prev} {wb}" + (f" + \\mathbf{{1}} {nota.b(layer)}" if bias else "")
            else:
                body = f"{wb} {prev}" + (f" + {nota.b(layer)} \\mathbf{{1}}^{{T}}" if bias else "")
            explicit = sp.Matrix(
                w2.n[layer],
                m,
                lambda j, i, ly=layer: (
                    sp.Add(*[w2.W[ly][j, k] * w2.afull[ly - 1][k, i] for k in range(w2.n[ly - 1])])
                    + w2.b[ly][j, 0]
                ),
            )
            steps.append(
                Step(
                    f"Weighted inputs of layer {layer}",
                    f"{zb} = {body}",
                    ((o(w2.zfull[layer]), o(explicit)),),
                    "forward",
                    naming.weighted_input(layer),
                )
            )
            derived = d.activations[layer - 1]
            if derived is None:
                zf = w2.zfull[layer]
                logsum = [
                    sp.log(sp.Add(*[sp.exp(zf[k, i]) for k in range(w2.n[layer])]))
                    for i in range(m)
                ]
                logp = sp.Matrix(
                    w2.n[layer], m, lambda j, i, zf=zf, logsum=logsum: zf[j, i] - logsum[i]
                )
                if rows:
                    norm = f"\\log\\left(e^{{{zb}}} \\mathbf{{1}}\\right) \\mathbf{{1}}^{{T}}"
                else:
                    norm = f"\\mathbf{{1}} \\log\\left(\\mathbf{{1}}^{{T}} e^{{{zb}}}\\right)"
                steps.append(
                    Step(
                        "Log-softmax",
                        f"\\log {ab} = {zb} - {norm}",
                        ((o(w2.afull[layer].applyfunc(sp.log)), o(logp)),),
                        "forward",
                        naming.log_output(layer),
                    )
                )
                if layer == big_l and d.output.complement is not None:
                    others = _log1m_softmax(zf)
                    if rows:
                        rest_sum = (
                            f"\\log\\left(e^{{{zb}}} (\\mathbf{{1}}\\mathbf{{1}}^{{T}} - I)\\right)"
                        )
                    else:
                        rest_sum = (
                            f"\\log\\left((\\mathbf{{1}}\\mathbf{{1}}^{{T}} - I) e^{{{zb}}}\\right)"
                        )
                    steps.append(
                        Step(
                            "Log of one minus the softmax",
                            f"\\log(1 - {ab}) = {rest_sum} - {norm}",
                            ((o(w2.afull[layer].applyfunc(lambda v: sp.log(1 - v))), o(others)),),
                            "forward",
                            naming.log_complement(layer),
                        )
                    )
                steps.append(
                    Step(
                        "Softmax",
                        f"{ab} = e^{{\\log {ab}}}",
                        ((o(w2.afull[layer]), o(logp.applyfunc(sp.exp))),),
                        "forward",
                        naming.activation(layer),
                    )
                )
                continue
            steps.append(
                Step(
                    f"Activations of layer {layer}",
                    f"{ab} = {nota.act_letter(layer)}({zb})",
                    (
                        (
                            o(w2.afull[layer]),
                            o(w2.zfull[layer].applyfunc(lambda v, dd=derived: _at(dd.forward, v))),
                        ),
                    ),
                    "forward",
                    naming.activation(layer),
                )
            )
        # cost
        out = d.output
        idx = "ij" if rows else "ji"
        entry = {
            Z: f"{{{nota.batch('Z', big_l)}}}_{{{idx}}}",
            A: f"{{{nota.batch('A', big_l)}}}_{{{idx}}}",
            Y: f"Y_{{{idx}}}",
        }
        entry[LOGP] = f"\\log {entry[A]}"
        entry[LOG1MP] = f"\\log(1 - {entry[A]})"
        zf, af = w2.zfull[big_l], w2.afull[big_l]
        units = range(w2.n[big_l])
        logs = [sp.log(sp.Add(*[sp.exp(zf[k, i]) for k in units])) for i in range(m)]
        log1m = _log1m_softmax(zf) if out.complement is not None else None
        terms = [
            out.loss_element.xreplace(
                {
                    Z: zf[j, i],
                    A: af[j, i],
                    Y: w2.y[j, i],
                    LOGP: zf[j, i] - logs[i],
                    **({LOG1MP: log1m[j, i]} if log1m is not None else {}),
                }
            )
            for j in units
            for i in range(m)
        ]
        steps.append(
            Step(
                "Cost of the batch",
                f"C = \\frac{{1}}{{m}} \\sum_{{i}} \\sum_{{j}} {_tex(out.loss_element, entry)}",
                ((w2.cost_full, sp.Add(*terms) / m),),
                "cost",
                naming.COST,
            )
        )
        # BP1
        zfree = w2.zfree[big_l]
        a_free = w2.act(big_l, zfree)
        names = bnames(big_l)
        dl = nota.batch("D", big_l)
        elementwise = " \\quad (\\text{elementwise})"
        if out.softmax is None:
            formula = sp.Matrix(
                w2.n[big_l],
                m,
                lambda j, i: out.delta.subs({A: a_free[j, i], Z: zfree[j, i], Y: w2.y[j, i]}),
            )
            steps.append(
                Step(
                    "Output error of the batch",
                    f"{dl} = {_tex(out.delta, names)}{elementwise}",
                    ((o(w2.delta(big_l)), o(formula)),),
                    "BP1",
                    naming.delta(big_l),
                )
            )
        elif out.complement is not None:
            steps.extend(self.batch_complement_bp1(w2, a_free, names))
        else:
            jvp = out.softmax
            sub = lambda e, j, i: e.subs({A: a_free[j, i], Y: w2.y[j, i]})  # noqa: E731
            if jvp.summand_total is None:
                s_sym = naming.symbol("_S")
                step, totals = self.batch_unit_sum(w2, a_free, jvp.summand, names)
                steps.append(step)
                expr = jvp.elementwise + jvp.scale * s_sym
                formula = sp.Matrix(
                    w2.n[big_l],
                    m,
                    lambda j, i: sub(jvp.elementwise, j, i) + sub(jvp.scale, j, i) * totals[i],
                )
                s_shown = "s \\mathbf{1}^{T}" if rows else "\\mathbf{1} s"
                latex = f"{dl} = {_tex(expr, {**names, s_sym: s_shown})}{elementwise}"
            else:
                formula = sp.Matrix(w2.n[big_l], m, lambda j, i: sub(jvp.elementwise, j, i))
                latex = f"{dl} = {_tex(jvp.elementwise, names)}{elementwise}"
            steps.append(
                Step(
                    "Output error of the batch",
                    latex,
                    ((o(w2.delta(big_l)), o(formula)),),
                    "BP1",
                    naming.delta(big_l),
                )
            )
        for layer in range(big_l, 0, -1):
            if layer < big_l:
                steps.extend(self.batch_bp2(w2, layer))
            steps.extend(self.batch_grads(w2, layer))
        intro = (
            "The same equations over a mini-batch of m examples, one per column"
            if not rows
            else "The same equations over a mini-batch of m examples, one per row"
        )
        intro += (
            " (the layer errors of the examples side by side; the cost is the mean over the "
            "batch). These are the statements of the generated NumPy module, in its order and "
            "with its labels."
        )
        return Section("Vectorized over a mini-batch", intro, tuple(steps))

    def batch_unit_sum(
        self, w2: _Witness, a_free: sp.Matrix, summand: sp.Expr, names: dict[sp.Symbol, str]
    ) -> tuple[Step, list[sp.Expr]]:
        """BP1's sum over the output units of ``summand`` (in A, Y), per example of the batch.

        Returns the step and the per-example totals.
        """
        rows, big_l, m = self.nota.rows, self.depth, w2.m
        totals = [
            sp.Add(*[summand.subs({A: a_free[k, i], Y: w2.y[k, i]}) for k in range(w2.n[big_l])])
            for i in range(m)
        ]
        sums = sp.Matrix(1, m, lambda _, i: totals[i])
        sums = sums.T if rows else sums
        body = _tex(summand, names)
        s_tex = (
            f"s = \\left({body}\\right) \\mathbf{{1}}"
            if rows
            else f"s = \\mathbf{{1}}^{{T}} \\left({body}\\right)"
        )
        step = Step(
            "Sum over the output units", s_tex, ((sums, sums),), "BP1", naming.unit_sum(big_l)
        )
        return step, totals

    def batch_complement_bp1(
        self, w2: _Witness, a_free: sp.Matrix, names: dict[sp.Symbol, str]
    ) -> list[Step]:
        """BP1 of a softmax output under a cost in log(1 - a), as the module computes it:
        the other-units term R, the sum over units when it is not a constant, then Delta."""
        nota, comp = self.nota, self.d.output.complement
        rows, big_l, m = nota.rows, self.depth, w2.m
        units = range(w2.n[big_l])

        def o(matrix: sp.Matrix) -> sp.Matrix:
            return matrix.T if rows else matrix

        def sub(expr: sp.Expr, j: int, i: int) -> sp.Expr:
            return expr.subs({A: a_free[j, i], Y: w2.y[j, i]})

        rest = sp.Matrix(
            w2.n[big_l],
            m,
            lambda j, i: sp.Add(
                *[
                    sub(comp.dlog1m, k, i) * a_free[j, i] / (1 - a_free[k, i])
                    for k in units
                    if k != j
                ]
            ),
        )
        r_name, ab = nota.batch("R", big_l), nota.batch("A", big_l)
        idx = "ij" if rows else "ji"
        v = _tex(comp.dlog1m, {**names, Y: "Y"})
        steps = [
            Step(
                "Other units of the output error",
                f"{{{r_name}}}_{{{idx}}} = \\sum_{{k \\neq j}} V_{{k}} \\frac{{{{{ab}}}_{{j}}}}"
                f"{{1 - {{{ab}}}_{{k}}}}, \\quad V = \\frac{{\\partial C}}"
                f"{{\\partial \\log(1 - {ab})}} = {v}",
                ((o(rest), o(rest)),),
                "BP1",
                naming.other_units(big_l),
            )
        ]
        totals: list[sp.Expr] | None = None
        if not comp.summand_is_constant:
            step, totals = self.batch_unit_sum(w2, a_free, comp.summand, names)
            steps.append(step)
        formula = sp.Matrix(
            w2.n[big_l],
            m,
            lambda j, i: sub(comp.delta, j, i).subs(
                {REST: rest[j, i], **({UNIT_SUM: totals[i]} if totals is not None else {})}
            ),
        )
        s_shown = "s \\mathbf{1}^{T}" if rows else "\\mathbf{1} s"
        dl = nota.batch("D", big_l)
        latex = _tex(comp.delta, {**names, REST: r_name, UNIT_SUM: s_shown})
        steps.append(
            Step(
                "Output error of the batch",
                f"{dl} = {latex} \\quad (\\text{{elementwise}})",
                ((o(w2.delta(big_l)), o(formula)),),
                "BP1",
                naming.delta(big_l),
            )
        )
        return steps

    def batch_bp2(self, w2: _Witness, layer: int) -> list[Step]:
        nota = self.nota
        rows = nota.rows
        derived = self.d.activations[layer - 1]
        z = w2.zfree[layer]
        zb, ab = nota.batch("Z", layer), nota.batch("A", layer)
        steps = []
        sprime = z.applyfunc(lambda v: self.sprime_at(layer, v))
        has_sp = derived.cached != 1
        if has_sp:
            names = {Z: zb, A: ab}
            cached = z.applyfunc(
                lambda v: derived.cached.subs({A: derived.forward.subs(Z, v), Z: v})
            )
            parts = [f"{nota.act_letter(layer)}'({zb})", _tex(derived.derivative, names)]
            if derived.cached != derived.derivative:
                parts.append(_tex(derived.cached, names))
            sides = (sprime.T, cached.T) if rows else (sprime, cached)
            steps.append(
                Step(
                    f"Activation derivative of layer {layer}",
                    " = ".join(parts),
                    (sides,),
                    "BP2",
                    naming.sigma_prime(layer),
                )
            )
        inner = w2.affine(layer + 1, w2.act(layer, z))
        upper = w2.delta_at(layer + 1, inner)
        weight, up = nota.weight_matrix(layer + 1), nota.batch("D", layer + 1)
        if rows:
            back = f"{up} {nota.transpose(weight)}"
            product = upper.T * w2.W[layer + 1]
            lhs = w2.delta(layer).T
            rhs = product.multiply_elementwise(sprime.T)
        else:
            back = f"{nota.transpose(weight)} {up}"
            product = w2.W[layer + 1].T * upper
            lhs = w2.delta(layer)
            rhs = product.multiply_elementwise(sprime)
        body = f"\\left({back}\\right) \\odot {nota.act_letter(layer)}'({zb})" if has_sp else back
        steps.append(
            Step(
                f"Error of layer {layer} over the batch",
                f"{nota.batch('D', layer)} = {body}",
                ((lhs, rhs),),
                "BP2",
                naming.delta(layer),
            )
        )
        return steps

    def batch_grads(self, w2: _Witness, layer: int) -> list[Step]:
        nota, rows, m = self.nota, self.nota.rows, w2.m
        delta = w2.delta_full(layer)
        prev = w2.afull[layer - 1]
        dl, ab = nota.batch("D", layer), nota.batch("A", layer - 1)
        n_out, n_in = w2.n[layer], w2.n[layer - 1]
        if rows:
            lhs = sp.Matrix(n_in, n_out, lambda k, j: w2.dcost(w2.W[layer][j, k]))
            rhs = prev.T.T * delta.T / m
            body = f"\\frac{{1}}{{m}} {nota.transpose(ab)} {dl}"
        else:
            lhs = sp.Matrix(n_out, n_in, lambda j, k: w2.dcost(w2.W[layer][j, k]))
            rhs = delta * prev.T / m
            body = f"\\frac{{1}}{{m}} {dl} {nota.transpose(ab)}"
        weight = nota.weight_matrix(layer)
        steps = [
            Step(
                f"Weight gradient of layer {layer} over the batch",
                f"{nota.grad('C', weight)} = {body}",
                ((lhs, rhs),),
                "BP4",
                naming.grad(naming.weight(layer)),
            )
        ]
        if self.spec.layers[layer - 1].bias:
            lhs = sp.Matrix(n_out, 1, lambda j, _: w2.dcost(w2.b[layer][j, 0]))
            if rows:
                rhs, body = (
                    sp.ones(1, m) * delta.T / m,
                    f"\\frac{{1}}{{m}} \\mathbf{{1}}^{{T}} {dl}",
                )
                lhs = lhs.T
            else:
                rhs, body = delta * sp.ones(m, 1) / m, f"\\frac{{1}}{{m}} {dl} \\mathbf{{1}}"
            steps.append(
                Step(
                    f"Bias gradient of layer {layer} over the batch",
                    f"{nota.grad('C', nota.b(layer))} = {body}",
                    ((lhs, rhs),),
                    "BP3",
                    naming.grad(naming.bias(layer)),
                )
            )
        return steps


# --------------------------------------------------------------------------- the document


@dataclass(frozen=True)
class Derivation:
    """The derivation of one network in one notation: sections of checked steps.

    Iterating over it yields the :class:`Step` objects in order. It displays itself in
    Jupyter (``_repr_latex_``, ``_repr_markdown_``) and renders to LaTeX, Markdown and
    plain text.
    """

    spec: Spec
    notation: str
    sections: tuple[Section, ...]

    def __iter__(self) -> Iterator[Step]:
        for section in self.sections:
            yield from section.steps

    def __len__(self) -> int:
        return sum(len(section.steps) for section in self.sections)

    @property
    def steps(self) -> tuple[Step, ...]:
        """Every step, in order."""
        return tuple(self)

    @property
    def vectorized(self) -> tuple[Step, ...]:
        """The mini-batch statements (section 6), one per statement of the module."""
        return self.sections[-1].steps

    @property
    def title(self) -> str:
        """A title naming the architecture (never the user-given network name)."""
        sizes = "-".join(map(str, self.spec.sizes))
        return f"Backpropagation, step by step: a {sizes} network ({self.spec.cost} cost)"

    def to_latex(self) -> str:
        """A standalone LaTeX document (amsmath, amssymb, xcolor) for ``pdflatex``."""
        out = [
            "% Generated by chainrule (chainrule derive). Every equation is checked by SymPy.",
            "\\documentclass[11pt]{article}",
            "\\usepackage{amsmath}",
            "\\usepackage{amssymb}",
            "\\usepackage{xcolor}",
            "\\setlength{\\textwidth}{17cm}",
            "\\setlength{\\oddsidemargin}{-0.5cm}",
            "\\setlength{\\textheight}{23cm}",
            "\\setlength{\\topmargin}{-1.5cm}",
            "\\setlength{\\parindent}{0pt}",
            "\\ifdefined\\pdfinfo\\pdfinfo{/Creator (chainrule)}\\fi",
            "\\begin{document}",
            f"\\section*{{{_escape_text(self.title)}}}",
            f"Notation: {_escape_text(_NOTATION_WORDS[self.notation])}.",
        ]
        for number, section in enumerate(self.sections, start=1):
            out.append(f"\\section*{{{number}. {_escape_text(section.title)}}}")
            out.append(_escape_prose(section.intro))
            if section.table:
                out.append("\\begin{center}\\begin{tabular}{rrll}")
                for i, row in enumerate(section.table):
                    out.append(" & ".join(_escape_cell(c) for c in row) + " \\\\")
                    if i == 0:
                        out.append("\\hline")
                out.append("\\end{tabular}\\end{center}")
            if section.items:
                out.append("\\begin{itemize}")
                out.extend(f"\\item {sym}: {_escape_prose(words)}" for sym, words in section.items)
                out.append("\\end{itemize}")
            for step in section.steps:
                out.append(f"\\paragraph{{{_escape_text(step.title)}}}")
                tag = f" \\tag{{{step.label}}}" if step.label else ""
                out.append(f"\\begin{{equation*}}\n{step.latex}{tag}\n\\end{{equation*}}")
        out.append("\\end{document}")
        return "\n".join(out) + "\n"

    def to_markdown(self) -> str:
        """Markdown with ``$$`` blocks (GitHub, Jupyter)."""
        out = [f"# {self.title}", "", f"Notation: {_NOTATION_WORDS[self.notation]}.", ""]
        for number, section in enumerate(self.sections, start=1):
            out += [f"## {number}. {section.title}", "", _escape_md(section.intro), ""]
            if section.table:
                header, *body = section.table
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + " --- |" * len(header))
                out.extend("| " + " | ".join(_escape_md(c) for c in row) + " |" for row in body)
                out.append("")
            if section.items:
                out.extend(f"- {sym}: {words}" for sym, words in section.items)
                out.append("")
            for step in section.steps:
                tag = f" \\tag{{{step.label}}}" if step.label else ""
                out += [f"**{step.title}**", "", "$$", step.latex + tag, "$$", ""]
        return "\n".join(out)

    def to_text(self) -> str:
        """Plain Unicode text for a terminal."""
        out = [
            self.title,
            "=" * len(self.title),
            f"Notation: {_NOTATION_WORDS[self.notation]}.",
            "",
        ]
        for number, section in enumerate(self.sections, start=1):
            heading = f"{number}. {section.title}"
            out += [heading, "-" * len(heading), to_unicode(section.intro), ""]
            if section.table:
                cells = [[to_unicode(c) for c in row] for row in section.table]
                widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
                out.extend(
                    "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                    for row in cells
                )
                out.append("")
            if section.items:
                out.extend(
                    f"  {to_unicode(sym)}: {to_unicode(words)}" for sym, words in section.items
                )
                out.append("")
            for step in section.steps:
                out.append(f"{step.title}" + (f" [{step.label}]" if step.label else ""))
                out.extend(f"    {line}" for line in to_unicode(step.latex).splitlines())
                out.append("")
        return "\n".join(out)

    def _repr_latex_(self) -> str:
        blocks = [f"$$\\textbf{{{_escape_text(self.title)}}}$$"]
        for number, section in enumerate(self.sections, start=1):
            blocks.append(f"$$\\textbf{{{number}. {_escape_text(section.title)}}}$$")
            for step in section.steps:
                tag = f" \\tag{{{step.label}}}" if step.label else ""
                blocks.append(f"$$\\text{{{_escape_text(step.title)}:}}\\quad {step.latex}{tag}$$")
        return "\n".join(blocks)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


_NOTATION_WORDS = {
    "nielsen": "Nielsen (w^l_jk, delta^l, BP1 to BP4, elementwise product)",
    "3b1b": "3Blue1Brown (a^(L), C_0, the chain of ratios, sums over units)",
    "cheatsheet": "the cheatsheet (X, H, Z_h, Z_o, E_h, E_o, prime notation, rows Z = XW)",
}


@functools.lru_cache(maxsize=64)
def derivation(spec: Spec, notation: str = "nielsen") -> Derivation:
    """The step-by-step derivation of ``spec``'s backpropagation in a notation.

    Parameters
    ----------
    spec : Spec
        The network.
    notation : str
        ``nielsen`` (default), ``3b1b`` or ``cheatsheet``.

    Returns
    -------
    Derivation
        Iterable over :class:`Step` objects, each with ``title``, ``latex`` and the
        SymPy ``equality`` (lhs, rhs) it states.

    Examples
    --------
    >>> from chainrule.derive.spec import preset
    >>> doc = derivation(preset("3b1b-chain"), "3b1b")
    >>> [s.label for s in doc.vectorized][-2:]
    ['BP4', 'BP3']
    """
    # The document is laid out on a one-unit witness (fast at any depth); the sides
    # of each step come from the full witness, built when a check first asks for them.
    sections = _sections(spec, notation, 1)
    lazy = []
    for number, section in enumerate(sections):
        steps = tuple(
            dataclasses.replace(
                step, source=functools.partial(_full_checks, spec, notation, number, index)
            )
            for index, step in enumerate(section.steps)
        )
        lazy.append(dataclasses.replace(section, steps=steps))
    return Derivation(spec, notation, tuple(lazy))


@functools.lru_cache(maxsize=16)
def _sections(spec: Spec, notation: str, width: int) -> tuple[Section, ...]:
    builder = _Builder(spec, notation, width)
    return (
        builder.network(),
        builder.forward(),
        builder.local_partials(),
        builder.chain(),
        builder.summary(),
        builder.vectorized(),
    )


def _full_checks(spec: Spec, notation: str, section: int, index: int) -> tuple:
    """The checks of one step, on the witness of width :data:`WITNESS_WIDTH`."""
    return _sections(spec, notation, WITNESS_WIDTH)[section].steps[index].checks


# --------------------------------------------------------------------------- text forms

_TEXT_SPECIALS = {
    "\\": "\\textbackslash{}",
    "{": "\\{",
    "}": "\\}",
    "$": "\\$",
    "&": "\\&",
    "#": "\\#",
    "^": "\\^{}",
    "_": "\\_",
    "%": "\\%",
    "~": "\\~{}",
}


def _escape_text(text: str) -> str:
    """Escape plain text for LaTeX."""
    return "".join(_TEXT_SPECIALS.get(ch, ch) for ch in text)


def _escape_prose(text: str) -> str:
    """Escape text that may hold $...$ math written by chainrule itself."""
    parts = text.split("$")
    return "$".join(p if i % 2 else _escape_text(p) for i, p in enumerate(parts))


def _escape_cell(text: str) -> str:
    return _escape_prose(text) if text.startswith("$") else _escape_text(text)


def _escape_md(text: str) -> str:
    parts = text.split("$")
    out = []
    for i, p in enumerate(parts):
        out.append(p if i % 2 else re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", p))
    return "$".join(out)


_SUPER = dict(zip("0123456789+-=()nijklLT", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱʲᵏˡᴸᵀ", strict=True))
_SUB = dict(
    zip("0123456789+-=()aehijklmnoprstuvx", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓ", strict=True)
)
#: Commands after which a space only ends the command name.
_TIGHT = frozenset({"partial", "nabla", "sigma", "delta", "Delta", "sum"})
_COMMANDS = {
    "sigma": "σ",
    "delta": "δ",
    "Delta": "Δ",
    "partial": "∂",
    "odot": "⊙",
    "cdot": "·",
    "nabla": "∇",
    "sum": "Σ",
    "log": "log",
    "exp": "exp",
    "tanh": "tanh",
    "max": "max",
    "min": "min",
    "sin": "sin",
    "cos": "cos",
    "left": "",
    "right": "",
    "bigl": "",
    "bigr": "",
    "quad": "  ",
    "qquad": "    ",
    "infty": "∞",
    "otimes": "⊗",
    "times": "×",
    "leq": "≤",
    "geq": "≥",
    "neq": "≠",
    "in": "∈",
    "ldots": "…",
    "cdots": "⋯",
    "pi": "π",
    "lambda": "λ",
}


def _group(tex: str, i: int) -> tuple[str, int]:
    """The braced group (or single token) starting at ``i``, and the index after it."""
    while i < len(tex) and tex[i] == " ":
        i += 1
    if i >= len(tex):
        return "", i
    if tex[i] == "{":
        depth, j = 0, i
        while j < len(tex):
            depth += tex[j] == "{"
            depth -= tex[j] == "}"
            if depth == 0:
                return tex[i + 1 : j], j + 1
            j += 1
        return tex[i + 1 :], len(tex)
    if tex[i] == "\\":
        j = i + 1
        while j < len(tex) and tex[j].isalpha():
            j += 1
        return tex[i : max(j, i + 2)], max(j, i + 2)
    return tex[i], i + 1


def _script(text: str, table: dict[str, str], mark: str) -> str:
    if text and all(ch in table for ch in text):
        return "".join(table[ch] for ch in text)
    return f"{mark}({text})" if len(text) > 1 else f"{mark}{text}"


def _atom(text: str) -> str:
    simple = re.fullmatch(r"[\w∂σδΔŷ⁰-⁾₀-₎'()^_,]*", text)
    return text if simple and " " not in text else f"({text})"


def to_unicode(tex: str) -> str:
    """Render the LaTeX chainrule writes as plain Unicode text.

    Examples
    --------
    >>> to_unicode(r"\\frac{\\partial C}{\\partial w^{2}_{jk}} = a^{1}_{k} \\delta^{2}_{j}")
    '∂C/∂w²ⱼₖ = a¹ₖ δ²ⱼ'
    """
    out: list[str] = []
    i = 0
    while i < len(tex):
        ch = tex[i]
        if ch == "\\":
            token, i = _group(tex, i)
            name = token[1:]
            if name == "\\":
                out.append("\n")
                while i < len(tex) and tex[i] in " \n":
                    i += 1
            elif name in (",", ":", ";", " ", "!"):
                out.append(" " if name != "!" else "")
            elif name in ("{", "}", "$", "&", "#", "%", "_"):
                out.append(name)
            elif name == "frac":
                num, i = _group(tex, i)
                den, i = _group(tex, i)
                out.append(f"{_atom(to_unicode(num))}/{_atom(to_unicode(den))}")
            elif name in ("textcolor", "colorbox"):
                _, i = _group(tex, i)
                body, i = _group(tex, i)
                out.append(to_unicode(body))
            elif name in ("text", "textbf", "mathrm", "operatorname", "mathbf", "boxed"):
                body, i = _group(tex, i)
                out.append(to_unicode(body))
            elif name == "hat":
                body, i = _group(tex, i)
                out.append({"y": "ŷ", "Y": "Ŷ"}.get(body, to_unicode(body) + "\u0302"))
            elif name == "tag":
                body, i = _group(tex, i)
                out.append(f"   ({body})")
            elif name in ("begin", "end"):
                env, i = _group(tex, i)
                if env == "cases" and name == "begin":
                    end = tex.find("\\end{cases}", i)
                    end = len(tex) if end < 0 else end
                    rows = tex[i:end].split("\\\\")
                    out.append("{" + "; ".join(to_unicode(r) for r in rows) + "}")
                    i = end
            else:
                out.append(_COMMANDS.get(name, name))
                if name.isalpha() and i < len(tex) and tex[i] == " " and name in _TIGHT:
                    i += 1
        elif ch in "^_":
            body, i = _group(tex, i + 1)
            text = to_unicode(body)
            out.append(_script(text, _SUPER if ch == "^" else _SUB, ch))
        elif ch in "{}":
            i += 1
        elif ch in "&$":
            i += 1
        else:
            out.append(ch)
            i += 1
    lines = "".join(out).splitlines()
    return "\n".join(re.sub(r"(?<=\S) {2,}(?=\S)", " ", line).rstrip() for line in lines).strip()
