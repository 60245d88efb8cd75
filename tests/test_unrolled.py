"""Unrolled modules: every strategy passes finite differences and agrees with the oracle,
with the public API, keys, shapes and layout of the vectorized modules."""

from __future__ import annotations

import ast

import numpy as np
import oracle
import pytest
from chainrule.codegen.emit import lint_module
from chainrule.codegen.unrolled import MAX_PARAMETERS, generate_unrolled
from chainrule.derive.errors import CodegenError, DerivationError
from chainrule.derive.spec import Spec, preset
from conftest import GENERATED, import_path

from chainrule.cli import main, preset_filename

STRATEGIES = ("naive", "cse", "backprop")

NETWORKS = [
    preset("3b1b-chain"),
    preset("cheatsheet-relu"),
    preset("two-layer-nobias"),
    Spec.from_sizes([2, 2, 3], ["tanh", "softmax"], "cross-entropy"),
    Spec.from_sizes(
        [2, 2, 1, 1], ["relu", "leaky-relu", "sigmoid"], "binary-cross-entropy", layout="rows"
    ),
    Spec.from_sizes([2, 3, 2], ["x*sigmoid(x)", "linear"], "squared-error"),
    # softmax + binary cross-entropy: the cost in log a and log(1 - a) of each unit
    Spec.from_sizes([2, 3], ["softmax"], "binary-cross-entropy"),
]


def _id(spec: Spec) -> str:
    return f"{spec.name}-{'-'.join(map(str, spec.sizes))}-{spec.layout}"


def live_problem(net: dict, m: int = 5):
    """Oracle data away from kinks where the gradient is not all zero (dead ReLUs)."""
    rng = np.random.default_rng(4)
    for _ in range(50):
        params, x, y = oracle.sample_problem(net, rng, m=m)
        _, grads = oracle.loss_and_grad(net, params, x, y)
        if max(np.abs(g).max() for g in grads.values()) > 1e-3:
            return params, x, y
    raise AssertionError("no live sample")


@pytest.fixture(scope="module")
def unrolled(load_source):
    cache = {}

    def make(spec: Spec, strategy: str):
        key = (repr(spec.to_dict()), strategy)
        if key not in cache:
            source = generate_unrolled(spec, strategy)
            lint_module(source)
            cache[key] = (load_source(source), source)
        return cache[key]

    return make


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("spec", NETWORKS, ids=_id)
@pytest.mark.slow
def test_unrolled_agrees_with_oracle_and_finite_differences(spec, strategy, unrolled):
    module, _ = unrolled(spec, strategy)
    net = spec.to_dict()
    params, x, y = live_problem(net)
    cost, grads = module.loss_and_grad(params, x, y)
    ref_cost, ref_grads = oracle.loss_and_grad(net, params, x, y)
    assert cost == pytest.approx(ref_cost, rel=1e-12, abs=1e-14)
    assert sorted(grads) == sorted(ref_grads)
    for key, ref in ref_grads.items():
        assert grads[key].shape == ref.shape, key
        np.testing.assert_allclose(grads[key], ref, rtol=1e-10, atol=1e-13)
    failures = oracle.fd_failures(lambda p: module.loss(p, x, y), params, grads, cost)
    assert failures == []
    np.testing.assert_allclose(
        module.forward(params, x), oracle.forward(net, params, x), rtol=1e-12
    )
    assert module.STRATEGY == strategy


@pytest.mark.parametrize("name", ["3b1b-chain", "cheatsheet-relu", "two-layer-nobias"])
@pytest.mark.slow
def test_same_api_keys_shapes_and_values_as_the_vectorized_module(name, unrolled):
    vectorized = import_path(GENERATED / preset_filename(name))
    spec = preset(name)
    for strategy in STRATEGIES:
        module, _ = unrolled(spec, strategy)
        for attr in ("NAME", "LAYER_SIZES", "ACTIVATIONS", "COST", "LAYOUT", "DTYPE", "SPEC"):
            assert getattr(module, attr) == getattr(vectorized, attr), attr
        for fn in ("init_params", "forward", "loss", "loss_and_grad", "new_gradient",
                   "sgd_step", "train", "check_gradient"):  # fmt: skip
            assert callable(getattr(module, fn)), fn
        params = module.init_params(3)
        ref_params = vectorized.init_params(3)
        assert list(params) == list(ref_params)
        for key in params:
            np.testing.assert_array_equal(params[key], ref_params[key])
        x, y = live_problem(spec.to_dict(), m=4)[1:]
        cost, grads = module.loss_and_grad(params, x, y)
        ref_cost, ref_grads = vectorized.loss_and_grad(params, x, y)
        assert cost == pytest.approx(ref_cost, rel=1e-12)
        for key in ref_grads:
            np.testing.assert_allclose(grads[key], ref_grads[key], rtol=1e-10, atol=1e-14)
        out = module.new_gradient()
        _, into = module.loss_and_grad(params, x, y, out=out)
        for key in ref_grads:
            assert into[key] is out[key]
            np.testing.assert_array_equal(out[key], grads[key])
        assert module.check_gradient(params, x, y) < 1e-6
        assert module.FORWARD_VALUES[:2] == ("z1", "a1")
        history = module.train(
            {k: v.copy() for k, v in params.items()}, x, y, epochs=3, batch_size=2, lr=0.1
        )
        ref_history = vectorized.train(
            {k: v.copy() for k, v in params.items()}, x, y, epochs=3, batch_size=2, lr=0.1
        )
        np.testing.assert_allclose(history, ref_history, rtol=1e-10)


def _loss_and_grad_body(source: str) -> str:
    tree = ast.parse(source)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "loss_and_grad")
    return ast.get_source_segment(source, fn)


def test_naive_module_visibly_recomputes_and_memoized_ones_do_not(unrolled):
    spec = preset("two-layer-nobias")  # 4-5-3: 8 sigmoid units
    units = sum(spec.sizes[1:])
    counts = {}
    for strategy in STRATEGIES:
        _, source = unrolled(spec, strategy)
        counts[strategy] = _loss_and_grad_body(source).count("_sigmoid(")
    assert counts["naive"] > 20 * units  # each entry writes the forward pass again
    assert counts["cse"] <= units  # each activation at most once
    assert counts["backprop"] == units  # one forward pass, then only deltas
    _, source = unrolled(spec, "cse")
    assert "is delta^" in source or "is -delta^" in source
    _, source = unrolled(spec, "backprop")
    body = _loss_and_grad_body(source)
    for j in range(5):
        assert body.count(f"    delta1_{j} = ") == 1


def test_float32_module_keeps_its_dtype(unrolled):
    spec = Spec.from_sizes([2, 2, 1], ["tanh", "sigmoid"], "quadratic", dtype="float32")
    module, _ = unrolled(spec, "cse")
    params = module.init_params(0)
    assert all(v.dtype == np.float32 for v in params.values())
    x = np.ones((2, 3), dtype=np.float32)
    y = np.full((1, 3), 0.5, dtype=np.float32)
    _, grads = module.loss_and_grad(params, x, y)
    assert all(g.dtype == np.float32 for g in grads.values())


def test_size_limits_are_clear_errors():
    with pytest.raises(CodegenError, match=f"too large \\(limit {MAX_PARAMETERS}\\)"):
        generate_unrolled(preset("nielsen"), "backprop")
    deep = Spec.from_sizes([4] * 6, ["sigmoid"] * 5, "quadratic")
    with pytest.raises(CodegenError, match="use --strategy backprop"):
        generate_unrolled(deep, "naive")
    assert "def loss_and_grad" in generate_unrolled(deep, "backprop")
    with pytest.raises(CodegenError, match="unknown strategy"):
        generate_unrolled(deep, "fast")
    assert issubclass(CodegenError, Exception) and DerivationError is not CodegenError


def test_cli_generate_unrolled(tmp_path, capsys):
    out = tmp_path / "chain_naive.py"
    status = main(
        [
            "generate",
            "--preset",
            "3b1b-chain",
            "--form",
            "unrolled",
            "--strategy",
            "naive",
            "-o",
            str(out),
            "--check",
        ]  # fmt: skip
    )
    text = capsys.readouterr().out
    assert status == 0, text
    assert "gradient check: passed" in text
    assert 'STRATEGY = "naive"' in out.read_text()
    assert main(["generate", "--preset", "nielsen", "--form", "unrolled"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "too large" in err
    assert main(["generate", "--preset", "3b1b-chain", "--strategy", "naive"]) == 2
    assert "--form unrolled" in capsys.readouterr().err


@pytest.mark.parametrize("strategy", ["naive", "cse", "backprop"])
def test_unrolled_comments_print_no_raw_sympy(strategy):
    spec = Spec.from_sizes([2, 2, 1], ["leaky-relu", "relu"], "quadratic")
    comments = [
        line.strip()
        for line in generate_unrolled(spec, strategy).splitlines()
        if line.strip().startswith("# forward:")
    ]
    assert comments and not any("Piecewise" in c or "True)" in c for c in comments)
    assert "# forward: a^2_0 = relu(z2_0) = (z2_0 if mask2_0 else 0)" in comments
    assert "# forward: a^1_0 = leaky-relu(z1_0) = (z1_0 if mask1_0 else z1_0/100)" in comments
