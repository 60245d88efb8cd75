"""The vectorized program equals SymPy's ``diff`` of the fully expanded scalar cost.

For small instances (widths <= 3, depth 1-3) of every preset's layer types, plus
softmax with cross-entropy, binary cross-entropy and the quadratic cost, this test writes the whole
batch cost out as one scalar SymPy expression, one symbol per w^l_jk, b^l_j, x_k and
y_j, with the activations and costs typed in here from their definitions (nothing
is taken from chainrule's tables). It differentiates that expression with respect to
every parameter, and compares the result, at random rational points, with the
program's statements run by a small exact interpreter below, to 30 digits.
"""

from __future__ import annotations

import random

import pytest
import sympy as sp
from chainrule.codegen.program import Program, Statement, build_program
from chainrule.derive.layers import derive_network
from chainrule.derive.spec import Spec

DIGITS = 60
AGREE = sp.Float("1e-30", DIGITS)


# --- The reference: the expanded scalar cost, from the definitions ------------------


def _sigmoid(z: sp.Expr) -> sp.Expr:
    return 1 / (1 + sp.exp(-z))


REFERENCE_ACTIVATIONS = {
    "sigmoid": _sigmoid,
    "tanh": sp.tanh,
    "relu": lambda z: sp.Piecewise((z, z > 0), (0, True)),
    "leaky-relu": lambda z: sp.Piecewise((z, z > 0), (z / 100, True)),
    "softplus": lambda z: sp.log(1 + sp.exp(z)),
    "linear": lambda z: z,
    "x*sigmoid(x)": lambda z: z * _sigmoid(z),
}


def _reference_cost_of_example(cost: str, a: list[sp.Expr], y: list[sp.Symbol]) -> sp.Expr:
    if cost == "quadratic":
        return sum((aj - yj) ** 2 for aj, yj in zip(a, y, strict=True)) / 2
    if cost == "squared-error":
        return sum((aj - yj) ** 2 for aj, yj in zip(a, y, strict=True))
    if cost == "binary-cross-entropy":
        return -sum(
            yj * sp.log(aj) + (1 - yj) * sp.log(1 - aj) for aj, yj in zip(a, y, strict=True)
        )
    if cost == "cross-entropy":
        return -sum(yj * sp.log(aj) for aj, yj in zip(a, y, strict=True))
    raise AssertionError(cost)


def expanded_cost(spec: Spec, batch: int):
    """The batch cost as one scalar expression, its parameter symbols, x and y symbols.

    Returns (C, params, xs, ys): params maps (kind, layer, j, k) to a symbol named as in
    the math (w2_1_0 is w^2_{10}: unit 1 of layer 2, unit 0 of layer 1).
    """
    sizes = spec.sizes
    params: dict[tuple, sp.Symbol] = {}
    for layer, ly in enumerate(spec.layers, start=1):
        for j in range(sizes[layer]):
            for k in range(sizes[layer - 1]):
                params[("W", layer, j, k)] = sp.Symbol(f"w{layer}_{j}_{k}", real=True)
            if ly.bias:
                params[("b", layer, j, 0)] = sp.Symbol(f"b{layer}_{j}", real=True)
    xs = [[sp.Symbol(f"x{e}_{k}", real=True) for k in range(sizes[0])] for e in range(batch)]
    ys = [[sp.Symbol(f"y{e}_{j}", real=True) for j in range(sizes[-1])] for e in range(batch)]
    total = sp.Integer(0)
    for e in range(batch):
        a = list(xs[e])
        for layer, ly in enumerate(spec.layers, start=1):
            z = []
            for j in range(sizes[layer]):
                zj = sum(params[("W", layer, j, k)] * a[k] for k in range(sizes[layer - 1]))
                z.append(zj + (params[("b", layer, j, 0)] if ly.bias else 0))
            if ly.activation == "softmax":
                norm = sum(sp.exp(v) for v in z)
                a = [sp.exp(v) / norm for v in z]
            else:
                a = [REFERENCE_ACTIVATIONS[ly.activation](v) for v in z]
        total += _reference_cost_of_example(spec.cost, a, ys[e])
    return total / batch, params, xs, ys


# --- The program, run exactly by an interpreter of its statements ----------------------


def _num(expr: sp.Expr) -> sp.Expr:
    value = sp.N(expr, DIGITS)
    assert value.is_number and value.is_finite, expr
    return value


def _broadcast(mat: sp.Matrix, shape: tuple[int, int]) -> sp.Matrix:
    r, c = mat.shape
    assert r in (1, shape[0]) and c in (1, shape[1]), (mat.shape, shape)
    return sp.Matrix(shape[0], shape[1], lambda i, j: mat[i if r > 1 else 0, j if c > 1 else 0])


def _entrywise(expr: sp.Expr, env: dict[str, sp.Matrix]) -> sp.Matrix:
    symbols = sorted(expr.free_symbols, key=lambda s: s.name)
    shapes = [env[s.name].shape for s in symbols]
    shape = (max(r for r, _ in shapes), max(c for _, c in shapes))
    mats = {s: _broadcast(env[s.name], shape) for s in symbols}
    return sp.Matrix(
        shape[0],
        shape[1],
        lambda i, j: _num(expr.xreplace({s: mats[s][i, j] for s in symbols})),
    )


def run_program(program: Program, env: dict[str, sp.Matrix], batch: int) -> dict[str, sp.Matrix]:
    """Execute forward, cost and backward statements on SymPy matrices (60 digits).

    ``env`` holds W^l, b^l, x and y in the program's layout; the result holds every
    target (C as a 1x1 matrix).
    """
    rows = program.spec.layout == "rows"
    units_axis = 1 if rows else 0
    m = sp.Integer(batch)
    env = dict(env)

    def step(s: Statement) -> sp.Matrix:
        ops = [env[name] for name in s.operands]
        if s.op == "alias":
            return ops[0]
        if s.op == "affine":
            w, prev = ops[0], ops[1]
            z = prev * w if rows else w * prev
            if len(ops) == 3:
                z = z + _broadcast(ops[2], z.shape)
            return z.applyfunc(_num)
        if s.op == "map":
            return _entrywise(s.expr, env)
        if s.op == "log_softmax":
            z = ops[0]
            if rows:
                return sp.Matrix(
                    z.rows,
                    z.cols,
                    lambda i, j: _num(z[i, j] - sp.log(sum(sp.exp(v) for v in z.row(i)))),
                )
            return sp.Matrix(
                z.rows,
                z.cols,
                lambda i, j: _num(z[i, j] - sp.log(sum(sp.exp(v) for v in z.col(j)))),
            )
        if s.op == "log1m_softmax":
            z = ops[0]
            units = z.cols if rows else z.rows

            def log1m(i: int, j: int) -> sp.Expr:
                line = list(z.row(i)) if rows else list(z.col(j))
                own = j if rows else i
                others = sum(sp.exp(v) for k, v in enumerate(line) if k != own)
                return _num(sp.log(others) - sp.log(sum(sp.exp(v) for v in line)))

            assert units >= 2
            return sp.Matrix(z.rows, z.cols, log1m)
        if s.op == "other_units":
            # rest_j = sum over units k != j of v_k a_j / (1 - a_k), from the definition.
            a = ops[0]
            v = _entrywise(s.expr, env) if s.expr.free_symbols else None

            def rest(i: int, j: int) -> sp.Expr:
                own, count = (j, a.cols) if rows else (i, a.rows)
                total = sp.Integer(0)
                for k in range(count):
                    if k == own:
                        continue
                    ak = a[i, k] if rows else a[k, j]
                    vk = s.expr if v is None else (v[i, k] if rows else v[k, j])
                    total += vk * a[i, j] / (1 - ak)
                return _num(total)

            return sp.Matrix(a.rows, a.cols, rest)
        if s.op == "unit_sum":
            terms = _entrywise(s.expr, env)
            if units_axis == 0:
                return sp.Matrix(1, terms.cols, lambda _, j: sum(terms.col(j)))
            return sp.Matrix(terms.rows, 1, lambda i, _: sum(terms.row(i)))
        if s.op == "backprop":
            w, upper = ops[0], ops[1]
            back = upper * w.T if rows else w.T * upper
            if len(ops) == 3:
                back = back.multiply_elementwise(ops[2])
            return back
        if s.op == "outer":
            delta, prev = ops
            return (prev.T * delta if rows else delta * prev.T) / m
        if s.op == "example_sum":
            (delta,) = ops
            if rows:
                return sp.Matrix(1, delta.cols, lambda _, j: sum(delta.col(j))) / m
            return sp.Matrix(delta.rows, 1, lambda i, _: sum(delta.row(i))) / m
        if s.op == "loss":
            terms = _entrywise(s.expr, env)
            return sp.Matrix([[sum(terms) / m]])
        raise AssertionError(f"unknown op {s.op!r}")

    for statement in (*program.forward, program.cost, *program.backward):
        env[statement.target] = step(statement)
    return env


# --- The comparison --------------------------------------------------------------------

CASES = {
    # preset 3b1b-chain: one sigmoid neuron per layer, squared error, biases
    "3b1b-chain": (Spec.from_sizes([1, 1, 1, 1], ["sigmoid"] * 3, "squared-error"), 2),
    # preset nielsen: sigmoid layers, quadratic cost, biases
    "nielsen": (Spec.from_sizes([3, 2, 2], ["sigmoid"] * 2, "quadratic"), 2),
    # preset two-layer-nobias: sigmoid layers without biases
    "two-layer-nobias": (Spec.from_sizes([3, 3, 2], ["sigmoid"] * 2, "quadratic", bias=False), 1),
    # preset cheatsheet-relu: ReLU chain, rows layout, no biases (and a wider version)
    "cheatsheet-relu": (
        Spec.from_sizes([1, 1, 1], ["relu"] * 2, "quadratic", bias=False, layout="rows"),
        2,
    ),
    "cheatsheet-relu-wide": (
        Spec.from_sizes([2, 3, 2], ["relu"] * 2, "quadratic", bias=False, layout="rows"),
        2,
    ),
    # preset deep-relu-sigmoid: ReLU hidden layers, sigmoid output, binary cross-entropy
    "deep-relu-sigmoid": (
        Spec.from_sizes([2, 2, 2, 1], ["relu", "relu", "sigmoid"], "binary-cross-entropy"),
        2,
    ),
    "softmax-cross-entropy": (Spec.from_sizes([2, 3, 3], ["tanh", "softmax"], "cross-entropy"), 2),
    # softmax with binary cross-entropy: delta^L through log a and log(1 - a)
    "softmax-binary-cross-entropy": (
        Spec.from_sizes([2, 2, 3], ["sigmoid", "softmax"], "binary-cross-entropy"),
        2,
    ),
    "softmax-binary-cross-entropy-rows": (
        Spec.from_sizes([2, 3], ["softmax"], "binary-cross-entropy", layout="rows"),
        2,
    ),
    "softmax-quadratic-rows": (
        Spec.from_sizes([2, 2, 3], ["leaky-relu", "softmax"], "quadratic", layout="rows"),
        2,
    ),
    "softplus-swish-linear": (
        Spec.from_sizes([2, 2, 2, 2], ["softplus", "x*sigmoid(x)", "linear"], "squared-error"),
        1,
    ),
}


def _rational(rng: random.Random, low: int = -150, high: int = 150) -> sp.Rational:
    return sp.Rational(rng.randint(low, high), rng.choice((37, 41, 43, 47)))


def _point(spec: Spec, params, xs, ys, rng: random.Random) -> dict[sp.Symbol, sp.Rational]:
    point = {s: _rational(rng) for s in params.values()}
    for row in xs:
        point.update({s: _rational(rng) for s in row})
    for row in ys:
        values = [sp.Rational(rng.randint(1, 9), 10) for _ in row]
        if spec.cost == "cross-entropy":
            # The derivation assumes each target column sums to one.
            total = sum(values)
            values = [v / total for v in values]
        point.update(dict(zip(row, values, strict=True)))
    return point


def _layout_env(spec: Spec, params, xs, ys, point) -> dict[str, sp.Matrix]:
    rows = spec.layout == "rows"
    sizes = spec.sizes
    env: dict[str, sp.Matrix] = {}
    for layer, ly in enumerate(spec.layers, start=1):
        w = sp.Matrix(
            sizes[layer],
            sizes[layer - 1],
            lambda j, k, layer=layer: point[params[("W", layer, j, k)]],
        )
        env[f"W{layer}"] = w.T if rows else w
        if ly.bias:
            b = sp.Matrix(
                sizes[layer], 1, lambda j, _, layer=layer: point[params[("b", layer, j, 0)]]
            )
            env[f"b{layer}"] = b.T if rows else b
    x = sp.Matrix([[point[s] for s in row] for row in xs]).T  # (n0, m)
    y = sp.Matrix([[point[s] for s in row] for row in ys]).T  # (nL, m)
    env["x"], env["y"] = (x.T, y.T) if rows else (x, y)
    return env


def _at(expr: sp.Expr, point: dict[sp.Symbol, sp.Rational]) -> sp.Expr:
    """``expr`` at ``point``; the rationals enter as 80-digit floats (exact to far more
    than the 30 digits compared), which keeps SymPy from building huge exact forms."""
    return _num(expr.xreplace({s: sp.Float(v, 80) for s, v in point.items()}))


def _close(a: sp.Expr, b: sp.Expr) -> bool:
    return abs(_num(a) - _num(b)) <= AGREE * (1 + abs(_num(b)))


def _kinked_z_near_zero(spec: Spec, program_env: dict[str, sp.Matrix]) -> bool:
    return any(
        min(abs(v) for v in program_env[f"z{layer}"]) < sp.Rational(1, 1000)
        for layer, ly in enumerate(spec.layers, start=1)
        if ly.activation in ("relu", "leaky-relu")
    )


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.slow
def test_program_equals_diff_of_expanded_cost(case):
    spec, batch = CASES[case]
    program = build_program(derive_network(spec))
    cost, params, xs, ys = expanded_cost(spec, batch)
    partials = {key: sp.diff(cost, sym) for key, sym in params.items()}
    rng = random.Random(f"{case}-points")
    points_checked = 0
    while points_checked < 2:
        point = _point(spec, params, xs, ys, rng)
        env = run_program(program, _layout_env(spec, params, xs, ys, point), batch)
        if _kinked_z_near_zero(spec, env):
            continue  # resample: the derivative is not defined at a kink
        assert _close(env["C"][0, 0], _at(cost, point)), case
        rows = spec.layout == "rows"
        for (kind, layer, j, k), partial in partials.items():
            grad = env[f"dC_d{kind}{layer}"]
            if kind == "W":
                got = grad[k, j] if rows else grad[j, k]
            else:
                got = grad[0, j] if rows else grad[j, 0]
            want = _at(partial, point)
            assert _close(got, want), (case, kind, layer, j, k, _num(got), _num(want))
        points_checked += 1


def test_interpreter_notices_a_wrong_statement():
    # A program with one altered elementwise expression must disagree with diff.
    spec, batch = CASES["nielsen"]
    program = build_program(derive_network(spec))
    altered = tuple(
        s if s.target != "sp1" else Statement(**{**s.__dict__, "expr": s.expr * 2})
        for s in program.backward
    )
    bad = Program(**{**program.__dict__, "backward": altered})
    cost, params, xs, ys = expanded_cost(spec, batch)
    point = _point(spec, params, xs, ys, random.Random(0))
    env = run_program(bad, _layout_env(spec, params, xs, ys, point), batch)
    want = _at(sp.diff(cost, params[("W", 1, 0, 0)]), point)
    assert not _close(env["dC_dW1"][0, 0], want)
    good = run_program(program, _layout_env(spec, params, xs, ys, point), batch)
    assert _close(good["dC_dW1"][0, 0], want)


def test_softmax_cross_entropy_needs_targets_that_sum_to_one():
    # Off the assumption sum_j y_j = 1, the simplified delta = a - y is not the gradient.
    spec, batch = CASES["softmax-cross-entropy"]
    program = build_program(derive_network(spec))
    assert program.assumptions and "sum_j y_j = 1" in program.assumptions[0]
    cost, params, xs, ys = expanded_cost(spec, batch)
    point = _point(spec, params, xs, ys, random.Random(1))
    point.update({s: point[s] * 2 for row in ys for s in row})  # columns now sum to 2
    env = run_program(program, _layout_env(spec, params, xs, ys, point), batch)
    want = _at(sp.diff(cost, params[("b", 2, 0, 0)]), point)
    assert not _close(env["dC_db2"][0, 0], want)
