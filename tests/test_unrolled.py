"""Unrolled modules: every strategy passes finite differences and agrees with the oracle,
with the public API, keys, shapes and layout of the vectorized modules."""

from __future__ import annotations

import ast
import re
import sys

import numpy as np
import oracle
import pytest
import sympy as sp
from chainrule.codegen.emit import lint_module
from chainrule.codegen.unrolled import MAX_PARAMETERS, _cost_expr, generate_unrolled
from chainrule.derive.errors import CodegenError, DerivationError
from chainrule.derive.spec import Layer, Spec, preset
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


@pytest.mark.slow
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
    assert "is delta2_" in source or "is -delta2_" in source
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["naive", "cse", "backprop"])
def test_unrolled_comments_print_no_raw_sympy(strategy):
    spec = Spec.from_sizes([2, 2, 1], ["leaky-relu", "relu"], "quadratic")
    comments = [
        line.strip()
        for line in generate_unrolled(spec, strategy).splitlines()
        if line.strip().startswith("# forward:")
    ]
    assert comments and not any("Piecewise" in c or "True)" in c for c in comments)
    assert "# forward: a2_0 = relu(z2_0) = (z2_0 if mask2_0 else 0)" in comments
    assert "# forward: a1_0 = leaky-relu(z1_0) = (z1_0 if mask1_0 else z1_0/100)" in comments


# ------------------------------------------------------- comments true for the code under them

COMMENT_NETWORKS = [
    Spec.from_sizes([2, 2, 2], ["leaky-relu", "softmax"], "cross-entropy"),
    Spec.from_sizes([2, 2, 1], ["x*sigmoid(x)", "sigmoid"], "binary-cross-entropy", layout="rows"),
    Spec.from_sizes([2, 3, 2], ["relu", "tanh"], "quadratic", layout="rows"),
    Spec.from_sizes([2, 3], ["softmax"], "binary-cross-entropy"),
]


def _commented_statements(source: str, function: str) -> list[tuple[str, str, str]]:
    """(comment, target, code) of each assignment in ``function`` from the first commented
    one up to the stacking or ``grads = ...``; an uncommented one in that stretch fails."""
    lines = source.splitlines()
    tree = ast.parse(source)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    out = []
    for node in fn.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        target = node.targets[0].id
        if target == "grads" or ast.unparse(node.value).startswith("np.stack("):
            break  # the gradient dict, or the forward pass's per-layer arrays
        above = lines[node.lineno - 2].strip()
        if above.startswith("# "):
            out.append((above[2:], target, ast.get_source_segment(source, node.value)))
        else:
            assert not out, f"{function}: {target} has no comment"
    assert out, function
    return out


def _names(text: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(text, mode="eval")) if isinstance(n, ast.Name)}


def _same_value(module, left: str, right: str, seed: int) -> None:
    """``left`` and ``right`` (Python expressions) agree at random values of their names."""
    rng = np.random.default_rng(seed)
    env = dict(vars(module))
    env.update(exp=np.exp, log=np.log, tanh=np.tanh, sqrt=np.sqrt, pi=np.pi)
    if hasattr(module, "_sigmoid"):
        env["sigmoid"] = module._sigmoid
    for name in sorted((_names(left) | _names(right)) - set(env)):
        value = rng.random() < 0.5 if name.startswith("mask") else 0.1 + 0.8 * rng.random()
        env[name] = np.array([value])  # one example: the helpers take arrays
    np.testing.assert_allclose(eval(left, env), eval(right, env), rtol=1e-12)


def _traced_locals(module, params, x, y) -> dict:
    """The local variables of ``module.loss_and_grad`` when it returns."""
    seen: dict = {}

    def tracer(frame, event, arg):
        if frame.f_code.co_name == "loss_and_grad" and event == "return":
            seen.update(frame.f_locals)
        return tracer

    sys.settrace(tracer)
    try:
        module.loss_and_grad(params, x, y)
    finally:
        sys.settrace(None)
    return seen


def _check_equation(spec: Spec, module, comment: str, target: str, code: str) -> None:
    """``label: target = [meaning =] rhs``: rhs equals the code, meaning names the target."""
    parts = comment.split(": ", 1)[1].split(" = ")
    assert parts[0] == target and len(parts) == len(set(parts)) >= 2, comment
    assert "Piecewise" not in comment and "True" not in comment, comment
    for seed in range(3):
        _same_value(module, parts[-1], code, seed)
    if len(parts) == 2:
        return
    meaning, (base, _, unit) = (
        parts[1],
        target.rpartition("_") if "_" in target else (target, "", ""),
    )
    layer = int(re.search(r"\d+", base).group())
    name = "f" if layer and spec.layers[layer - 1].is_custom else ""
    name = name or (spec.layers[layer - 1].activation if layer else "")
    expected = {
        "dC_d": f"dC/d{target[len('dC_d') :]}",
        "delta": f"dC/dz{layer}_{unit}",
        "sp": f"{name}'(z{layer}_{unit})",
        "a": f"{name}(z{layer}_{unit})",
    }
    if base == f"s{spec.depth}":
        _check_softmax_sum(spec, module, meaning, code)
        return
    prefix = next(p for p in expected if target.startswith(p))
    assert meaning == expected[prefix], comment


def _check_softmax_sum(spec: Spec, module, meaning: str, code: str) -> None:
    """``sum_k a2_k*dC/da2_k`` with dC/da2_k the derivative of this module's cost."""
    cost = _cost_expr(spec)
    a_k, term = f"a{spec.depth}_k", meaning.removeprefix("sum_k ")
    total = []
    for k in range(spec.sizes[-1]):
        a = sp.Symbol(f"a{spec.depth}_{k}")
        dc_da = next(d for d in [sp.diff(cost, s) for s in cost.free_symbols if s.name == a.name])
        total.append("(" + term.replace(f"dC/d{a_k}", f"({dc_da})").replace(a_k, a.name) + ")")
    _same_value(module, " + ".join(total), code, 0)


def _check_cse_label(note: str, target: str, code: str, values: dict, backprop: dict, deps):
    """``_tN is NOTE``: the named backprop value, or forward/backward by use of y."""
    uses_y = any(n.startswith("y_") for n in deps[target])
    if note == "forward value":
        assert not uses_y, target
        return
    if note == "backward term":
        assert uses_y, target
        return
    sign, name = (-1, note[1:]) if note.startswith("-") else (1, note)
    if name.startswith("sigma'(z"):
        name = "sp" + name[len("sigma'(z") : -1]
    if name.startswith("dC/da"):
        layer, j = map(int, name[len("dC/da") :].split("_"))
        up = [k for k in backprop if k.startswith(f"delta{layer + 1}_")]
        ref = sum(backprop[f"w{layer + 1}_{i}_{j}"] * backprop[f"delta{layer + 1}_{i}"]
                  for i in range(len(up)))  # fmt: skip
    else:
        ref = backprop[name]
    np.testing.assert_allclose(values[target], sign * ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("spec", COMMENT_NETWORKS, ids=_id)
@pytest.mark.slow
def test_every_unrolled_comment_is_true_for_the_code_under_it(spec, strategy, unrolled):
    module, source = unrolled(spec, strategy)
    params, x, y = live_problem(spec.to_dict(), m=3)
    backprop = _traced_locals(unrolled(spec, "backprop")[0], params, x, y)
    values = _traced_locals(module, params, x, y)
    for comment, target, code in _commented_statements(source, "_forward"):
        assert comment.startswith("forward: "), comment
        _check_equation(spec, module, comment, target, code)
    deps: dict[str, set[str]] = {}
    statements = _commented_statements(source, "loss_and_grad")
    assert [t for _, t, _ in statements if t.startswith("dC_d")] == [
        k for k in backprop if k.startswith("dC_d")
    ]
    for comment, target, code in statements:
        names = _names(code)
        deps[target] = names.union(*(deps.get(n, set()) for n in names))
        label, _, rest = comment.partition(": ")
        if label == "cse" and " is " in rest:
            _check_cse_label(rest.split(" is ", 1)[1], target, code, values, backprop, deps)
        elif rest.startswith(f"{target} = dC/d") and "," in rest:  # naive and cse entries
            param = target[len("dC_d") :]
            assert rest.split(", ")[0] == f"{target} = dC/d{param}", comment
            np.testing.assert_allclose(values[target], backprop[target], rtol=1e-9, atol=1e-12)
        else:
            assert strategy == "backprop" and label in ("forward", "BP1", "BP2", "BP3", "BP4")
            _check_equation(spec, module, comment, target, code)


@pytest.mark.slow
def test_unrolled_modules_pass_ruff_check_in_isolation(tmp_path) -> None:
    """Every network above, in each strategy, plus a residual one and one with both
    penalties, passes ``ruff check`` with no configuration (loss() unpacked z^L even
    where its cost reads only a^L: ruff's RUF059). Their layout is not ruff format's:
    an expanded naive gradient is one expression per line, however long."""
    import subprocess

    extra = [
        Spec.from_sizes([2, 2, 2], ["tanh", "sigmoid"], "quadratic", l2=0.1, l1=0.01),
        Spec(
            input_size=2,
            layers=(Layer(2, "tanh", skip_from=0), Layer(1, "linear")),
            cost="huber",
        ),
    ]
    names = []
    for index, spec in enumerate([*NETWORKS, *extra]):
        for strategy in STRATEGIES:
            path = tmp_path / f"unrolled_{index}_{strategy}.py"
            path.write_text(generate_unrolled(spec, strategy), encoding="utf-8")
            names.append(str(path))
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", *names],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout
