"""Generated modules compute the right gradient: finite differences and the oracle.

Every preset (Nielsen with a small input for speed) and a fixed set of small
architectures covering every activation, every valid cost, both layouts, biases on,
off and mixed, and both dtypes are generated, imported, and checked two ways:
central differences on every parameter entry, and agreement with the hand-written
backprop in ``oracle.py`` to 1e-10. The checked-in files in ``generated/`` are
compared with the oracle too, at their real sizes, on random directions.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import oracle
import pytest
from chainrule.derive.spec import Layer, Spec, preset, preset_names
from conftest import GENERATED, import_path
from layout_specs import LAYOUT_SPECS, WRAPPED, covers_every_feature

from chainrule.cli import preset_filename


def small_preset(name: str) -> Spec:
    """The preset, with Nielsen's 784 inputs cut to 6 so that every entry can be checked."""
    spec = preset(name)
    return spec.replace(input_size=6) if name == "nielsen" else spec


def _spec(sizes, acts, cost, *, layout="columns", bias=True, dtype="float64", name="arch"):
    biases = bias if isinstance(bias, tuple) else (bias,) * len(acts)
    layers = tuple(Layer(s, a, b) for s, a, b in zip(sizes[1:], acts, biases, strict=True))
    return Spec(sizes[0], layers, cost, layout, dtype, name)


#: Small architectures: every activation (and two custom expressions), every valid cost,
#: both layouts, biases on, off and mixed, float64 and float32.
ARCHITECTURES = {
    "sigmoid-quadratic-cols": _spec([3, 4, 2], ["sigmoid", "sigmoid"], "quadratic"),
    "tanh-softmax-ce-rows": _spec([3, 4, 3], ["tanh", "softmax"], "cross-entropy", layout="rows"),
    "relu-leaky-sigmoid-bce-nobias": _spec(
        [2, 3, 3, 1], ["relu", "leaky-relu", "sigmoid"], "binary-cross-entropy", bias=False
    ),
    "softplus-linear-se-rows-f32": _spec(
        [4, 3, 2], ["softplus", "linear"], "squared-error", layout="rows", dtype="float32"
    ),
    "swish-softmax-ce-f32": _spec(
        [3, 3, 3], ["x*sigmoid(x)", "softmax"], "cross-entropy", dtype="float32"
    ),
    "leaky-softmax-quadratic-rows-nobias": _spec(
        [2, 4, 3], ["leaky-relu", "softmax"], "quadratic", layout="rows", bias=False
    ),
    "linear-sigmoid-bce-rows-mixed": _spec(
        [3, 2, 2], ["linear", "sigmoid"], "binary-cross-entropy", layout="rows", bias=(False, True)
    ),
    "tanh-tanh-quadratic-mixed-f32": _spec(
        [2, 3, 2], ["tanh", "tanh"], "quadratic", bias=(True, False), dtype="float32"
    ),
    "relu-softmax-bce": _spec([3, 3, 2], ["relu", "softmax"], "binary-cross-entropy"),
    "sigmoid-softplus-linear-se": _spec(
        [1, 2, 2, 1], ["sigmoid", "softplus", "linear"], "squared-error"
    ),
    "swish-sigmoid-bce-rows": _spec(
        [3, 4, 1], ["x*sigmoid(x)", "sigmoid"], "binary-cross-entropy", layout="rows"
    ),
    "softplus-softmax-se-rows-f32": _spec(
        [2, 3, 2], ["softplus", "softmax"], "squared-error", layout="rows", dtype="float32"
    ),
    "mish-relu-quadratic": _spec([3, 2, 2], ["x*tanh(softplus(x))", "relu"], "quadratic"),
}

ALL_SPECS = {f"preset:{n}": small_preset(n) for n in preset_names()} | {
    f"arch:{k}": v for k, v in ARCHITECTURES.items()
}


def test_architectures_cover_every_activation_cost_layout_bias_and_dtype():
    acts = {a for s in ARCHITECTURES.values() for a in s.activations}
    assert {"sigmoid", "tanh", "relu", "leaky-relu", "softplus", "linear", "softmax"} <= acts
    assert "x*sigmoid(x)" in acts
    assert {s.cost for s in ARCHITECTURES.values()} == {
        "quadratic",
        "squared-error",
        "binary-cross-entropy",
        "cross-entropy",
    }
    assert {s.layout for s in ARCHITECTURES.values()} == {"columns", "rows"}
    assert {s.dtype for s in ARCHITECTURES.values()} == {"float64", "float32"}
    bias_patterns = {tuple(ly.bias for ly in s.layers) for s in ARCHITECTURES.values()}
    assert any(all(p) for p in bias_patterns) and any(not any(p) for p in bias_patterns)
    assert any(len(set(p)) == 2 for p in bias_patterns)


def _problem(spec: Spec, seed: int, m: int = 3):
    net = spec.to_dict()
    rng = np.random.default_rng(seed)
    return net, *oracle.sample_problem(net, rng, m=m)


@pytest.mark.parametrize("key", sorted(ALL_SPECS))
@pytest.mark.slow
def test_finite_differences_on_every_entry(build, key):
    spec = ALL_SPECS[key]
    module = build(spec)
    for seed in (1, 2):
        _, params, x, y = _problem(spec, seed)
        cost, grads = module.loss_and_grad(params, x, y)
        failures = oracle.fd_failures(lambda p, x=x, y=y: module.loss(p, x, y), params, grads, cost)
        assert failures == [], failures[:5]


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(ALL_SPECS))
def test_agrees_with_the_oracle(build, key):
    spec = ALL_SPECS[key]
    module = build(spec)
    for seed in (3, 4, 5):
        net, params, x, y = _problem(spec, seed, m=4)
        got = module.loss_and_grad(params, x, y)
        want = oracle.loss_and_grad(net, params, x, y)
        oracle.assert_agrees(got, want)
        assert module.loss(params, x, y) == pytest.approx(want[0], rel=1e-12)
        np.testing.assert_allclose(
            module.forward(params, x), oracle.forward(net, params, x), rtol=1e-12, atol=1e-15
        )


@pytest.mark.parametrize("key", sorted(ALL_SPECS))
def test_module_constants_and_init_params(build, key):
    spec = ALL_SPECS[key]
    module = build(spec)
    assert module.LAYER_SIZES == spec.sizes
    assert module.ACTIVATIONS == spec.activations
    assert (module.COST, module.LAYOUT, module.DTYPE) == (spec.cost, spec.layout, spec.dtype)
    params = module.init_params(seed=7)
    want = oracle.random_params(spec.to_dict(), np.random.default_rng(0))
    assert list(params) == list(want)
    for key_, value in params.items():
        assert value.shape == want[key_].shape, key_
        assert value.dtype == np.dtype(spec.dtype), key_
    again = module.init_params(seed=7)
    assert all(np.array_equal(params[k], again[k]) for k in params)
    other = module.init_params(seed=8)
    assert not np.array_equal(params["W1"], other["W1"])


@pytest.mark.parametrize("key", sorted(k for k, s in ALL_SPECS.items() if s.dtype == "float32"))
def test_float32_module_keeps_float32(build, key):
    spec = ALL_SPECS[key]
    module = build(spec)
    net, params, x, y = _problem(spec, 6, m=5)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    assert module.forward(p32, x32).dtype == np.float32
    cost, grads = module.loss_and_grad(p32, x32, y32)
    assert isinstance(cost, float)
    assert {k: g.dtype for k, g in grads.items()} == {k: np.dtype(np.float32) for k in p32}
    # float32 arithmetic, so agreement to float32 precision with the float64 oracle.
    want_cost, want_grads = oracle.loss_and_grad(net, p32, x32, y32)
    assert cost == pytest.approx(want_cost, rel=1e-5)
    for k, g in grads.items():
        scale = float(np.max(np.abs(want_grads[k])))
        np.testing.assert_allclose(g, want_grads[k], rtol=1e-4, atol=1e-5 * scale, err_msg=k)


@pytest.mark.parametrize("key", sorted(ALL_SPECS))
def test_sgd_step_and_own_check_gradient(build, key):
    spec = ALL_SPECS[key]
    module = build(spec)
    _, params, x, y = _problem(spec, 9)
    assert module.check_gradient(params, x, y) <= 1e-6
    before = {k: v.copy() for k, v in params.items()}
    cost, grads = module.loss_and_grad(params, x, y)
    returned = module.sgd_step(params, x, y, 0.1)
    assert returned == cost
    for k in params:
        np.testing.assert_allclose(params[k], before[k] - 0.1 * grads[k], rtol=1e-14, atol=0)


def test_train_lowers_the_cost_of_a_fixed_problem(build):
    module = build(ARCHITECTURES["sigmoid-quadratic-cols"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 40))
    y = np.vstack([x[0] > 0, x[1] > 0]).astype(float) * 0.8 + 0.1
    params = module.init_params(seed=0)
    start = module.loss(params, x, y)
    history = module.train(params, x, y, epochs=30, batch_size=8, lr=2.0, seed=0)
    assert len(history) == 30
    assert history[-1] < 0.6 * start
    assert module.loss(params, x, y) < 0.6 * start
    # Same seed, same shuffles: training is reproducible.
    again = module.init_params(seed=0)
    assert module.train(again, x, y, epochs=30, batch_size=8, lr=2.0, seed=0) == history


def test_softmax_cross_entropy_module_states_the_target_assumption(build):
    module = build(ARCHITECTURES["tanh-softmax-ce-rows"])
    assert "sum_j y_j = 1" in module.__doc__
    assert "Assumptions:" in module.__doc__
    plain = build(ARCHITECTURES["sigmoid-quadratic-cols"])
    assert "Assumptions:" not in plain.__doc__


def test_relu_gradient_is_zero_exactly_at_the_kink(build):
    # relu'(0) = 0: a unit whose z is exactly 0 passes no gradient back.
    module = build(preset("cheatsheet-relu"))
    params = {"W1": np.array([[1.0]]), "W2": np.array([[2.0]])}
    x, y = np.array([[0.0]]), np.array([[1.0]])
    cost, grads = module.loss_and_grad(params, x, y)
    assert cost == 0.5
    assert grads["W1"][0, 0] == 0.0
    assert grads["W2"][0, 0] == 0.0


@pytest.mark.parametrize("name", preset_names())
def test_checked_in_module_agrees_with_oracle_at_full_size(name):
    module = import_path(GENERATED / preset_filename(name))
    net = module.SPEC
    assert net == preset(name).to_dict()
    rng = np.random.default_rng(11)
    params, x, y = oracle.sample_problem(net, rng, m=5)
    cost, grads = module.loss_and_grad(params, x, y)
    oracle.assert_agrees((cost, grads), oracle.loss_and_grad(net, params, x, y))
    failures = oracle.directional_failures(
        lambda p: module.loss(p, x, y), params, grads, cost, rng, count=8
    )
    assert failures == []
    # And on a random sample of single entries of every parameter.
    picks = {k: rng.choice(v.size, min(v.size, 25), replace=False) for k, v in params.items()}
    assert oracle.fd_failures(lambda p: module.loss(p, x, y), params, grads, cost, picks) == []


def test_finite_differences_catch_a_wrong_gradient(build):
    # The checker itself must fail when one entry is off by a small amount (1e-5).
    spec = ARCHITECTURES["sigmoid-quadratic-cols"]
    module = build(spec)
    _, params, x, y = _problem(spec, 1)
    cost, grads = module.loss_and_grad(params, x, y)
    grads = {k: v.copy() for k, v in grads.items()}
    grads["W1"][0, 0] += 1e-5
    failures = oracle.fd_failures(lambda p, x=x, y=y: module.loss(p, x, y), params, grads, cost)
    assert [(k, i) for k, i, _, _ in failures] == [("W1", 0)]
    with pytest.raises(AssertionError):
        oracle.assert_agrees((cost, grads), module.loss_and_grad(params, x, y))


_STANDALONE = """
import importlib.abc
import importlib.util
import sys

BLOCKED = {"sympy", "jinja2", "mpmath", "derive", "codegen", "chainrule"}


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed here")
        return None


sys.meta_path.insert(0, Blocker())
for name in ("sympy", "jinja2"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} could be imported")

import numpy as np

for index, path in enumerate(sys.argv[1:]):
    spec = importlib.util.spec_from_file_location(f"standalone_{index}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(index)
    n0, nl = module.LAYER_SIZES[0], module.LAYER_SIZES[-1]
    x, y = rng.standard_normal((n0, 4)), rng.uniform(0.1, 0.9, (nl, 4))
    if module.COST == "cross-entropy":
        y /= y.sum(axis=0, keepdims=True)
    if module.LAYOUT == "rows":
        x, y = x.T.copy(), y.T.copy()
    params = module.init_params(seed=index)
    cost, grads = module.loss_and_grad(params, x, y)
    assert set(grads) == set(params)
    assert all(grads[k].shape == params[k].shape for k in params)
    size = sum(v.size for v in params.values())
    worst = module.check_gradient(params, x, y) if size < 2000 else 0.0
    history = module.train(params, x, y, epochs=2, batch_size=2, lr=0.1)
    print(path, repr(float(cost)), repr(float(worst)), len(history))
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("leaked", leaked)
"""


@pytest.fixture(scope="module")
def module_files(module_dir) -> list:
    """The checked-in preset modules and every architecture above, as files."""
    from chainrule.codegen.render import generate_module

    files = sorted(GENERATED.glob("*.py"))
    assert len(files) == len(preset_names())
    for key, spec in sorted(ARCHITECTURES.items()):
        path = module_dir / f"standalone_{key.replace('-', '_')}.py"
        path.write_text(generate_module(spec), encoding="utf-8")
        files.append(path)
    return files


@pytest.mark.slow
def test_modules_run_where_sympy_and_jinja2_cannot_be_imported(module_files, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _STANDALONE, *map(str, module_files)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "leaked []"
    assert len(lines) == len(module_files) + 1
    for line in lines[:-1]:
        _, cost, worst, epochs = line.split()
        assert np.isfinite(float(cost)) and float(worst) <= 1e-6 and epochs == "2", line


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_generated_files_pass_ruff_check_and_format_in_isolation(module_files, tmp_path):
    # mish's derivative repeats tanh(softplus(z)): computed once into a temporary, its
    # statements fit ruff's line length too. The networks of layout_specs (batch norm,
    # dropout, skips, L2/L1, rows, float32, wide and deep) have lines ruff would break:
    # the renderer breaks them as ruff does.
    from chainrule.codegen.render import generate_module

    assert covers_every_feature(LAYOUT_SPECS) == []
    sources = {key: generate_module(spec) for key, spec in sorted(LAYOUT_SPECS.items())}
    names = [str(p) for p in module_files]
    for key, source in sources.items():
        path = tmp_path / f"layout_{key}.py"
        path.write_text(source, encoding="utf-8")
        names.append(str(path))
    done = _ruff("check", "--isolated", *names)
    assert done.returncode == 0, done.stdout
    done = _ruff("format", "--isolated", "--check", *names)
    assert done.returncode == 0, done.stdout
    # Every layout past one line was checked (the plain form's statements are its own).
    text = "".join(sources.values())
    missing = [name for name, wrapped in WRAPPED.items() if wrapped not in text]
    assert missing == ["parenthesized statement", "operator run"]


def test_custom_activation_needs_no_template_or_printer_entry():
    # The templates name no activation (only the stable forward helpers _sigmoid and
    # _log_softmax, used wherever SymPy's forms call for them), and nothing in the printer
    # or the templates knows x*sigmoid(x): its derivative comes from SymPy alone.
    import sympy as sp
    from chainrule.codegen.program import build_program
    from chainrule.derive.layers import derive_network

    root = GENERATED.parent / "codegen"
    templates = "".join(p.read_text(encoding="utf-8") for p in root.glob("templates/*.j2"))
    for word in ("relu", "leaky", "softplus", "tanh", "swish", "x*sigmoid", "1 - a"):
        assert word not in templates, word
    printer = (root / "printer.py").read_text(encoding="utf-8")
    assert "swish" not in printer and "x*sigmoid" not in printer

    spec = ARCHITECTURES["swish-sigmoid-bce-rows"]
    program = build_program(derive_network(spec))
    (statement,) = [s for s in program.backward if s.target == "sp1"]
    z1 = sp.Symbol("z1", real=True)
    forward = z1 / (1 + sp.exp(-z1))
    got = statement.expr.subs(sp.Symbol("a1", real=True), forward).rewrite(sp.exp)
    want = sp.diff(forward, z1)
    for value in (sp.Rational(-7, 3), sp.Rational(1, 5), sp.Rational(11, 4)):
        assert abs(sp.N(got.subs(z1, value) - want.subs(z1, value), 40)) < 1e-35


@pytest.mark.parametrize("key", sorted(ALL_SPECS))
def test_chainrule_checker_passes_every_module(build, key):
    from chainrule.check import check_module

    report = check_module(build(ALL_SPECS[key]), seed=3)
    assert report.passed, report.worst
    assert [name for name, _, _ in report.worst] == list(build(ALL_SPECS[key]).init_params())


def _comment_block_before(lines: list[str], index: int) -> str:
    """The first line of the run of comment lines just above ``lines[index]``."""
    start = index
    while start > 0 and lines[start - 1].lstrip().startswith("#"):
        start -= 1
    assert start < index, f"no comment above {lines[index]!r}"
    return lines[start].strip()


@pytest.mark.parametrize("name", preset_names())
def test_every_backward_statement_is_preceded_by_its_labelled_equation(name):
    lines = (GENERATED / preset_filename(name)).read_text(encoding="utf-8").splitlines()
    want = {"delta": ("# BP1:", "# BP2:"), "sp": ("# BP2:",), "dC_dW": ("# BP4:",)}
    want["dC_db"] = ("# BP3:",)
    seen = set()
    for i, line in enumerate(lines):
        head = line.strip().split(" = ")[0]
        for prefix, labels in want.items():
            if head.startswith(prefix) and head[len(prefix) :].isdigit():
                first = _comment_block_before(lines, i)
                assert first.startswith(labels), (line, first)
                seen.add(first[:6])
    labels = {"# BP1:", "# BP2:", "# BP3:", "# BP4:"}
    if not any(ly.bias for ly in preset(name).layers):
        labels.discard("# BP3:")
    assert seen == labels


def _comment_blocks(source):
    """(comment text, first code line under it) for every statement comment of a module."""
    lines = source.splitlines()
    out = []
    i = 0
    while i < len(lines):
        text = lines[i].strip()
        if text.startswith(("# forward:", "# cost:", "# BP")):
            comment = [text[2:]]
            i += 1
            while lines[i].strip().startswith("# "):
                comment.append(lines[i].strip()[2:])
                i += 1
            out.append((" ".join(comment), lines[i].strip()))
        i += 1
    return out


def _product_in_comment(comment):
    """The two factors of the matrix product a comment states, as NumPy would name them."""
    rhs = comment.split(" = ", 1)[1].replace("(1/m) ", "").lstrip("(")
    left, right = rhs.split(" ")[:2]

    def numpy_name(factor):
        factor = factor.rstrip(")")
        if factor in ("1", "1^T"):
            return 'ws["ones"]'
        return factor[:-2] + ".T" if factor.endswith("^T") else factor

    return numpy_name(left), numpy_name(right)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["columns", "rows"])
def test_comments_state_the_equations_of_the_code_under_them(layout):
    from chainrule.codegen.render import generate_module

    specs = [
        _spec(
            [3, 4, 2, 2], ["relu", "leaky-relu", "sigmoid"], "binary-cross-entropy", layout=layout
        ),
        _spec([2, 3, 3], ["x*sigmoid(x)", "softmax"], "cross-entropy", layout=layout),
        _spec([2, 3, 3], ["softplus", "softmax"], "binary-cross-entropy", layout=layout),
    ]
    products = 0
    for spec in specs:
        for comment, code in _comment_blocks(generate_module(spec)):
            assert "Piecewise" not in comment and "True)" not in comment, comment
            sides = comment.split(": ", 1)[1].split(" = ")
            assert all(a != b for a, b in zip(sides, sides[1:], strict=False)), comment  # x = x
            if "np.matmul(" not in code:
                continue
            args = code.split("np.matmul(", 1)[1].split(", out=")[0].split(", ")
            assert _product_in_comment(comment) == tuple(args), (comment, code)
            products += 1
    assert products >= 20


def test_rows_comments_read_in_the_rows_order():
    from chainrule.codegen.render import generate_module

    source = generate_module(_spec([2, 3, 2], ["sigmoid", "sigmoid"], "quadratic", layout="rows"))
    assert "# BP4: dC/dW2 = (1/m) a1^T delta2" in source
    assert "# BP2: delta1 = (delta2 W2^T) * sp1" in source
    assert "# BP3: dC/db2 = (1/m) 1^T delta2" in source
    assert "# forward: z1 = a0 W1 + b1" in source


def test_a_subexpression_used_twice_is_computed_once():
    from chainrule.codegen.render import generate_module

    source = generate_module(
        _spec([3, 4, 1], ["x*sigmoid(x)", "sigmoid"], "binary-cross-entropy", layout="rows")
    )
    code = [ln for ln in source.splitlines() if not ln.strip().startswith("#")]
    for line in code:
        assert line.count("_sigmoid(z1") <= 1, line
    assert any(ln.strip().startswith("_t0 = _sigmoid(z1") for ln in code)
