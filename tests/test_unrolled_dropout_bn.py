"""Unrolled modules with dropout and batch normalization equal the vectorized module.

For the same parameters, batch and seed, every strategy's loss, gradient, forward pass
(with and without running statistics), SGD step and training run equal the vectorized
module's to 1e-12; the gradient passes central differences and the independent oracle
of ``battery_oracle``; SymPy finds the unit-by-unit batch-norm statements equal to the
chain rule through the batch mean and variance; and planted bugs (a squared mask, masks
drawn in another order, the biased and unbiased variance swapped) are caught.
"""

from __future__ import annotations

import re
import subprocess
import sys

import battery_oracle
import numpy as np
import oracle
import pytest
import sympy as sp
from chainrule.codegen.emit import lint_module
from chainrule.codegen.render import generate_module
from chainrule.codegen.unrolled import generate_unrolled
from chainrule.derive import batch_norm, naming
from chainrule.derive.errors import CodegenError
from chainrule.derive.scalar_batch_norm import ExampleMean, normalization, normalized_error
from chainrule.derive.spec import Layer, Spec

STRATEGIES = ("naive", "cse", "backprop")

#: Dropout only (columns); dropout on two layers with a skip and l1 (rows).
DROPOUT = Spec(
    input_size=2, layers=(Layer(3, "tanh", dropout=0.3), Layer(2, "sigmoid")), cost="quadratic"
)
DROPOUT_SKIP = Spec(
    input_size=2,
    layers=(
        Layer(2, "sigmoid", dropout=0.25),
        Layer(2, "tanh", skip_from=1, dropout=0.5),
        Layer(1, "sigmoid"),
    ),
    cost="binary-cross-entropy",
    layout="rows",
    l1=0.01,
)
#: Batch norm only; batch norm and dropout on different layers with a skip and l2 (rows);
#: a skip into a batch-normalized layer, with both penalties.
BATCH_NORM = Spec(
    input_size=2,
    layers=(Layer(3, "relu", batch_norm=True), Layer(2, "softmax")),
    cost="cross-entropy",
)
BOTH = Spec(
    input_size=2,
    layers=(
        Layer(3, "tanh", batch_norm=True),
        Layer(3, "sigmoid", skip_from=1, dropout=0.3),
        Layer(2, "softmax"),
    ),
    cost="cross-entropy",
    layout="rows",
    l2=0.01,
)
SKIP_INTO_NORM = Spec(
    input_size=2,
    layers=(
        Layer(2, "tanh", dropout=0.2),
        Layer(2, "sigmoid", batch_norm=True, skip_from=1),
        Layer(1, "linear"),
    ),
    cost="quadratic",
    l2=0.02,
    l1=0.005,
)
NETWORKS = {
    "dropout": DROPOUT,
    "dropout-skip-l1-rows": DROPOUT_SKIP,
    "batch-norm": BATCH_NORM,
    "both-skip-l2-rows": BOTH,
    "skip-into-norm": SKIP_INTO_NORM,
}
CASES = [
    pytest.param(
        name, strategy, id=f"{name}-{strategy}", marks=[pytest.mark.slow] * (strategy != "backprop")
    )
    for name, spec in NETWORKS.items()
    for strategy in STRATEGIES
    if strategy == "backprop" or not spec.batch_norm_layers
]
M = 6
SEED = 7


@pytest.fixture(scope="module")
def modules(load_source):
    """(unrolled module, vectorized module, unrolled source) per network and strategy."""
    cache: dict = {}

    def make(name: str, strategy: str):
        if (name, strategy) not in cache:
            spec = NETWORKS[name]
            source = generate_unrolled(spec, strategy)
            lint_module(source)
            fast = cache.get(name) or load_source(generate_module(spec))
            cache[name] = fast
            cache[(name, strategy)] = (load_source(source), fast, source)
        return cache[(name, strategy)]

    return make


def problem(spec: Spec, m: int = M, seed: int = 0):
    """Parameters away from init (gamma, beta too), inputs and targets in the layout."""
    rng = np.random.default_rng(seed)
    params = {}
    for index, layer in enumerate(spec.layers, start=1):
        n, n_prev = spec.sizes[index], spec.sizes[index - 1]
        params[f"W{index}"] = rng.normal(0, 1.0, (n, n_prev))
        if layer.bias:
            params[f"b{index}"] = rng.normal(0, 0.3, (n, 1))
        if layer.batch_norm:
            params[f"gamma{index}"] = 1 + rng.normal(0, 0.3, (n, 1))
            params[f"beta{index}"] = rng.normal(0, 0.3, (n, 1))
    x = rng.normal(0, 1.0, (spec.sizes[0], m))
    n_out = spec.sizes[-1]
    if spec.cost == "cross-entropy":
        y = np.eye(n_out)[:, rng.integers(0, n_out, m)]
    else:
        y = rng.uniform(0.1, 0.9, (n_out, m))
    if spec.layout == "rows":
        params = {k: v.T.copy() for k, v in params.items()}
        x, y = x.T.copy(), y.T.copy()
    return params, x, y


def _copy(params: dict) -> dict:
    return {k: v.copy() for k, v in params.items()}


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def discrepancy(module, fast, spec: Spec) -> float:
    """The largest relative difference between ``module`` and the vectorized ``fast`` over
    loss, loss_and_grad, forward, sgd_step and train (with running statistics)."""
    params, x, y = problem(spec)
    worst = _rel(module.loss(params, x, y, seed=SEED), fast.loss(params, x, y, seed=SEED))
    cost, grads = module.loss_and_grad(params, x, y, seed=SEED)
    ref_cost, ref_grads = fast.loss_and_grad(params, x, y, seed=SEED)
    worst = max(worst, _rel(cost, ref_cost))
    assert list(grads) == list(ref_grads)
    for key in ref_grads:
        assert grads[key].shape == ref_grads[key].shape, key
        worst = max(worst, _rel(grads[key], ref_grads[key]))
    worst = max(worst, _rel(module.forward(params, x), fast.forward(params, x)))
    runs = []
    for mod in (module, fast):
        p, state = _copy(params), mod.init_state()
        step = mod.sgd_step(p, x, y, 0.1, seed=SEED, state=state)
        history = mod.train(p, x, y, epochs=3, batch_size=3, lr=0.05, seed=SEED, state=state)
        adam = mod.train(_copy(params), x, y, epochs=2, batch_size=4, lr=0.01, optimizer="adam")
        runs.append((step, history, adam, p, state, mod.forward(p, x, state)))
    (step, history, adam, p, state, out), (rstep, rhistory, radam, rp, rstate, rout) = runs
    worst = max(worst, _rel(step, rstep), _rel(history, rhistory), _rel(adam, radam))
    worst = max([worst, _rel(out, rout), *(_rel(p[k], rp[k]) for k in rp)])
    assert sorted(state) == sorted(rstate)
    return max([worst, *(_rel(state[k], rstate[k]) for k in rstate)])


@pytest.mark.parametrize(("name", "strategy"), CASES)
@pytest.mark.slow
def test_unrolled_equals_the_vectorized_module_with_the_same_seed(name, strategy, modules):
    module, fast, _ = modules(name, strategy)
    spec = NETWORKS[name]
    assert discrepancy(module, fast, spec) < 1e-12
    assert module.STRATEGY == strategy
    assert module.FORWARD_VALUES[-1] == fast.FORWARD_VALUES[-1]
    if spec.dropout_layers:
        masks, ref = module.dropout_masks(M, SEED), fast.dropout_masks(M, SEED)
        assert list(masks) == list(ref)
        for key in ref:
            np.testing.assert_array_equal(masks[key], ref[key])
        assert module.DROPOUT == fast.DROPOUT
        params, x, y = problem(spec)
        # Fresh masks (seed None) differ between calls; forward is inference, without masks.
        # (two draws of a small network's masks can coincide: eight all do with odds ~0)
        assert len({module.loss(params, x, y) for _ in range(8)}) > 1
        np.testing.assert_array_equal(module.forward(params, x), module.forward(params, x))
        for bad in (-1, 1.5, True, "7"):
            with pytest.raises(ValueError, match=r"^seed: expected None, a whole number"):
                module.loss_and_grad(params, x, y, seed=bad)
    if spec.batch_norm_layers:
        assert module.STATE_SHAPES == fast.STATE_SHAPES
        for layer in spec.batch_norm_layers:
            statistics = {f"mean{layer}", f"var{layer}", f"xhat{layer}"}
            assert statistics <= set(module.FORWARD_VALUES) & set(fast.FORWARD_VALUES)
            # the fast form computes x̂ in u's buffer, so u is among the unrolled values only
            assert f"u{layer}" in module.FORWARD_VALUES
            assert f"u{layer}" not in fast.FORWARD_VALUES
        params, x, _ = problem(spec)
        with pytest.raises(ValueError, match="batch normalization needs m >= 2"):
            module.forward(params, x[:1] if spec.layout == "rows" else x[:, :1])


@pytest.mark.parametrize(("name", "strategy"), CASES)
def test_unrolled_gradient_passes_the_oracle_and_central_differences(name, strategy, modules):
    module, _, _ = modules(name, strategy)
    spec = NETWORKS[name]
    net = spec.to_dict()
    params, x, y = problem(spec, seed=3)
    cost, grads = module.loss_and_grad(params, x, y, seed=SEED)
    masks = module.dropout_masks(M, SEED) if spec.dropout_layers else None
    ref_cost, ref_grads = battery_oracle.loss_and_grad(net, params, x, y, masks)
    assert cost == pytest.approx(ref_cost, rel=1e-12)
    for key, ref in ref_grads.items():
        np.testing.assert_allclose(grads[key], ref, rtol=1e-9, atol=1e-12, err_msg=key)
    assert not battery_oracle.near_kink(net, params, x, 1e-4, masks)
    failures = oracle.fd_failures(lambda p: module.loss(p, x, y, seed=SEED), params, grads, cost)
    assert failures == []
    assert module.check_gradient(params, x, y, seed=SEED) < 1e-6


def test_batch_norm_statements_are_the_chain_rule_on_three_symbolic_examples():
    """The unit statements (mean, variance, xhat, z, dC/dgamma, dC/dbeta, deltau), each
    mean taken over 3 symbolic examples, equal derive_backward(3)'s forward values and
    chain rule through the mean and the variance (compared to 40 digits at random
    rational points: a wrong term would differ)."""
    m = 3
    d = batch_norm.derive_backward(m)
    u = naming.symbol("u1_0")
    forward = normalization(BATCH_NORM, 1, 0, u)
    backward = normalized_error(1, 0)
    gamma, beta = naming.symbol("gamma1_0"), naming.symbol("beta1_0")
    delta = naming.symbol("delta1_0")

    def expand(expr, example, env):
        """``expr`` at one example: per-example symbols to their values there, each
        ExampleMean to the mean of its argument over the m examples."""
        means = {
            e: sp.Add(*(expand(e.args[0], i, env) for i in range(m))) / m
            for e in expr.atoms(ExampleMean)
        }
        return expr.xreplace(means).xreplace(env[example])

    # Per example i: u_i and the upstream delta_i = m dC/dz_i (the program's convention).
    env = [{u: d.u[i], delta: m * d.g[i], gamma: d.gamma, beta: d.beta} for i in range(m)]
    for s in (*forward[1:], *backward):
        for i in range(m):
            env[i][s.target] = expand(s.expr, i, env)
    name = {s.note.split("^")[0]: s.target for s in forward}
    pairs = [(env[0][name["mean"]], d.mean), (env[0][name["var"]], d.var)]
    pairs += [(env[0][naming.symbol("dC_dgamma1_0")], d.dgamma)]
    pairs += [(env[0][naming.symbol("dC_dbeta1_0")], d.dbeta)]
    for i in range(m):
        pairs.append((env[i][name["xhat"]], d.xhat[i]))
        pairs.append((env[i][name["z"]], d.gamma * d.xhat[i] + d.beta))
        pairs.append((env[i][naming.symbol("deltau1_0")] / m, d.chain[i]))
    rng = np.random.default_rng(5)
    for _ in range(2):
        point = {s: sp.Rational(int(rng.integers(-99, 100)), 37) for s in (*d.u, *d.g)}
        point.update(
            {d.gamma: sp.Rational(7, 5), d.beta: sp.Rational(-1, 3), d.eps: batch_norm.EPS}
        )
        for ours, theirs in pairs:
            difference = (ours - theirs).xreplace(point).evalf(50)
            assert abs(difference) < sp.Float(10) ** -40, (ours, theirs)
    assert len(pairs) == 4 + 3 * m


#: Planted bugs, each a change of the emitted source: (network, description, pattern,
#: replacement). Each must change what the comparison with the vectorized module sees.
PLANTED = [
    ("dropout", "mask squared in BP2", r"(delta1_\d+ = )(D1_\d+)", r"\1\2**2"),
    (
        "dropout",
        "masks drawn units after examples",
        r"np\.empty\(\(3, m\), dtype\)\)",
        "np.empty((m, 3), dtype)).T",
    ),
    (
        "batch-norm",
        "unbiased variance in the batch statistics",
        r"(var1_\d+ = _mean\(.*, m\))",
        r"\1 * m / (m - 1)",
    ),
    (
        "batch-norm",
        "biased variance in the running statistics",
        r"\(0\.1 \* m / \(m - 1\)\)",
        "0.1",
    ),
]


@pytest.mark.parametrize(
    ("name", "what", "pattern", "replacement"), PLANTED, ids=[p[1] for p in PLANTED]
)
@pytest.mark.slow
def test_planted_bugs_are_caught(name, what, pattern, replacement, modules, load_source):
    module, fast, source = modules(name, "backprop")
    spec = NETWORKS[name]
    planted, count = re.subn(pattern, replacement, source)
    assert count > 0, what
    assert discrepancy(module, fast, spec) < 1e-12
    assert discrepancy(load_source(planted), fast, spec) > 1e-6, what


@pytest.mark.slow
def test_naive_and_cse_refuse_batch_norm_in_one_line(run_cli, tmp_path):
    for strategy in ("naive", "cse"):
        with pytest.raises(
            CodegenError, match=r"^strategy: .*layers\[0\]\.batch_norm.*use --strategy backprop$"
        ):
            generate_unrolled(BATCH_NORM, strategy)
    toml = (
        'input = 2\ncost = "quadratic"\n[[layers]]\nsize = 2\nactivation = "tanh"\n'
        'batch_norm = true\n[[layers]]\nsize = 1\nactivation = "linear"\n'
    )
    (tmp_path / "bn.toml").write_text(toml, encoding="utf-8")
    done = run_cli(
        "generate", "bn.toml", "--form", "unrolled", "--strategy", "cse", "-o", "u.py", cwd=tmp_path
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "--strategy backprop" in done.stderr
    assert "layers[0].batch_norm" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "u.py").exists()


@pytest.mark.slow
def test_cli_writes_and_checks_unrolled_modules_with_dropout_and_batch_norm(run_cli, tmp_path):
    toml = (
        'input = 2\ncost = "quadratic"\nl2 = 0.01\n'
        '[[layers]]\nsize = 2\nactivation = "tanh"\nbatch_norm = true\n'
        '[[layers]]\nsize = 2\nactivation = "sigmoid"\ndropout = 0.2\nskip_from = 1\n'
        '[[layers]]\nsize = 1\nactivation = "linear"\n'
    )
    (tmp_path / "net.toml").write_text(toml, encoding="utf-8")
    done = run_cli(
        "generate", "net.toml", "--form", "unrolled", "-o", "u.py", "--check", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    source = (tmp_path / "u.py").read_text(encoding="utf-8")
    assert "def dropout_masks(m, seed, dtype=_DT):" in source
    assert "def init_state(dtype=_DT):" in source
    assert "# BN: deltau1_0 = dC/du1_0 = " in source
    checked = [sys.executable, "-m", "ruff", "check", "--isolated", str(tmp_path / "u.py")]
    lint = subprocess.run(checked, capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout
    dropout_only = (tmp_path / "net.toml").read_text().replace("batch_norm = true\n", "")
    (tmp_path / "drop.toml").write_text(dropout_only, encoding="utf-8")
    done = run_cli(
        "generate",
        "drop.toml",
        "--form",
        "unrolled",
        "--strategy",
        "cse",
        "-o",
        "c.py",
        "--check",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr


def test_the_readme_says_what_the_unrolled_form_does_with_dropout_and_batch_norm():
    """The README's claims, each tested above: batch norm with backprop (the default) and
    refused by naive and cse; dropout in every strategy with the vectorized masks."""
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    flat = " ".join(readme.split())
    assert "`--form unrolled` writes it with `--strategy backprop` (the default)" in flat
    assert "refuse a batch-normalized network in one line suggesting `--strategy backprop`" in flat
    assert "The vectorized, plain and unrolled forms, `chainrule derive` (also with `--at`" in flat
    assert "so the same seed gives the vectorized module's masks" in flat
    assert "`--form unrolled` refuse batch norm" not in flat


def _same_value(module, left: str, right: str, seed: int) -> None:
    """``left`` (a comment's right-hand side) and ``right`` (the code under it) agree at
    random values of their names, 4 examples each (mean is the mean over them)."""
    from test_unrolled import _names

    rng = np.random.default_rng(seed)
    env = dict(vars(module))
    env.update(exp=np.exp, log=np.log, tanh=np.tanh, sqrt=np.sqrt, sign=np.sign, m=4)
    env.update(sigmoid=module._sigmoid, mean=lambda value: np.mean(value * np.ones(4)))
    for name in sorted((_names(left) | _names(right)) - set(env)):
        env[name] = 0.1 + 0.8 * rng.random(4)
    np.testing.assert_allclose(eval(left, env), eval(right, env), rtol=1e-12)


@pytest.mark.parametrize("name", ["dropout-skip-l1-rows", "both-skip-l2-rows", "skip-into-norm"])
@pytest.mark.slow
def test_every_backprop_comment_is_true_for_the_code_under_it(name, modules):
    """Each statement's comment ``label: target = [meaning =] rhs``: rhs computes what the
    code does; a dropout layer's a^l names its mask; deltau is dC/du."""
    from test_unrolled import _commented_statements

    module, _, source = modules(name, "backprop")
    spec = NETWORKS[name]
    seen = set()
    for function in ("_forward", "loss_and_grad"):
        for comment, target, code in _commented_statements(source, function):
            label, _, rest = comment.partition(": ")
            parts = rest.split(" = ")
            assert parts[0] == target and len(parts) >= 2, comment
            for seed in range(2):
                _same_value(module, parts[-1], code, seed)
            layer = re.search(r"\d+", target).group()
            if target.startswith("a") and spec.layers[int(layer) - 1].dropout:
                assert parts[1].startswith(f"D{layer}_{target.rsplit('_', 1)[1]}*"), comment
            if target.startswith("deltau"):
                assert label == "BN" and parts[1] == f"dC/du{target[len('deltau') :]}", comment
            seen.add(label)
    assert {"forward", "BP1", "BP2", "BP4"} <= seen
    assert ("BN" in seen) == bool(spec.batch_norm_layers)


def test_float32_module_with_dropout_and_batch_norm_keeps_its_dtype(load_source):
    """Masks are drawn in the parameters' dtype, as the vectorized module draws them."""
    spec = Spec(
        input_size=2,
        layers=BOTH.layers,
        cost="cross-entropy",
        dtype="float32",
    )
    module = load_source(generate_unrolled(spec, "backprop"))
    fast = load_source(generate_module(spec))
    params, x, y = problem(spec)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    x, y = x.astype(np.float32), y.astype(np.float32)
    masks, ref_masks = module.dropout_masks(M, SEED), fast.dropout_masks(M, SEED)
    np.testing.assert_array_equal(masks["D2"], ref_masks["D2"])
    assert masks["D2"].dtype == np.float32
    cost, grads = module.loss_and_grad(params, x, y, seed=SEED)
    ref_cost, ref_grads = fast.loss_and_grad(params, x, y, seed=SEED)
    assert cost == pytest.approx(ref_cost, rel=1e-5)
    for key, ref in ref_grads.items():
        assert grads[key].dtype == np.float32, key
        np.testing.assert_allclose(grads[key], ref, rtol=1e-3, atol=1e-5, err_msg=key)
    state, ref_state = module.init_state(), fast.init_state()
    module.sgd_step(_copy(params), x, y, 0.1, seed=SEED, state=state)
    fast.sgd_step(_copy(params), x, y, 0.1, seed=SEED, state=ref_state)
    for key, ref in ref_state.items():
        assert state[key].dtype == np.float32
        np.testing.assert_allclose(state[key], ref, rtol=1e-5, atol=1e-6, err_msg=key)
    assert module.forward(params, x, state).dtype == np.float32
