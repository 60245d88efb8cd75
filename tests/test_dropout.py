"""Dropout (``dropout = p`` on a hidden layer) end to end, and every module's ``seed=``.

With dropout, a^l = D^l * f(z^l), D^l = r^l / (1 - p), r^l ~ Bernoulli(1 - p) per unit
and example, in training only. The module's masks are fixed by ``seed`` (drawn in layer
order from np.random.default_rng(seed), exposed by ``dropout_masks``), so that:

- central finite differences of ``loss(seed=s)`` check ``loss_and_grad(seed=s)`` on
  every parameter (vectorized and plain forms, both layouts, several activations);
- PyTorch autograd, on the same network with the module's masks multiplied in, agrees
  to 1e-9 relative;
- the run_statement evaluator, with the masks as symbols, agrees with SymPy's own
  derivative of the cost (BP2 carries the mask);
- a module with the mask removed from BP2 fails the check.

Then the seed rules, the mask statistics, the refusals (spec values, seeds, the forms and
commands that do not support dropout), threads, train and the importers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
import sympy as sp
from chainrule.codegen.emit import lint_module
from chainrule.codegen.plain import generate_plain
from chainrule.codegen.render import generate_module
from chainrule.derive import naming
from chainrule.derive.batch import batch_program, run_statement
from chainrule.derive.errors import SpecError
from chainrule.derive.layers import derive_network
from chainrule.derive.spec import Layer, Spec, spec_from_dict
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from chainrule.cli import main

#: Relative tolerance against PyTorch autograd, in float64.
TORCH_TOL = 1e-9

#: Networks: (hidden activations, their drop probabilities, output activation, cost).
NETS = {
    "sigmoid-relu-softmax": (("sigmoid", "relu"), (0.3, 0.5), "softmax", "cross-entropy"),
    "tanh-custom-relu": (
        ("tanh", "sin(x) + x/3", "relu"),
        (0.25, 0.0, 0.4),
        "sigmoid",
        "quadratic",
    ),
}


def make_spec(net: str, layout: str = "columns") -> Spec:
    acts, ps, out, cost = NETS[net]
    layers = [Layer(5, a, dropout=p) for a, p in zip(acts, ps, strict=True)]
    return Spec(3, (*layers, Layer(3, out)), cost, layout=layout)


@pytest.fixture(scope="module")
def modules(
    build: Callable[[Spec], ModuleType], load_source: Callable[[str], ModuleType]
) -> Callable[[str, str, str], ModuleType]:
    """The module of a net in a form ("vectorized" or "plain") and layout, linted."""
    cache: dict[tuple[str, str, str], ModuleType] = {}

    def get(net: str, form: str, layout: str) -> ModuleType:
        key = (net, form, layout)
        if key not in cache:
            spec = make_spec(net, layout)
            if form == "vectorized":
                cache[key] = build(spec)
            else:
                source = generate_plain(spec)
                lint_module(source)
                cache[key] = load_source(source)
        return cache[key]

    return get


def batch(module: ModuleType, m: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x and y for ``module`` in its layout: one-hot targets for a softmax output."""
    rng = np.random.default_rng(seed)
    n0, n_out = module.LAYER_SIZES[0], module.LAYER_SIZES[-1]
    x = rng.standard_normal((n0, m))
    if module.ACTIVATIONS[-1] == "softmax":
        y = np.eye(n_out)[:, rng.integers(0, n_out, m)]
    else:
        y = rng.uniform(0.1, 0.9, (n_out, m))
    if module.LAYOUT == "rows":
        return x.T.copy(), y.T.copy()
    return x, y


def away_from_kinks(module: ModuleType, params: dict, x: np.ndarray) -> bool:
    """True when every ReLU input is farther than 1e-3 from its kink at 0."""
    values = dict(zip(module.FORWARD_VALUES, module._forward(params, x), strict=True))
    return all(np.min(np.abs(values[f"z{layer}"])) > 1e-3 for layer in module.KINK_LAYERS)


def point(module: ModuleType, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """Parameters and a batch with no ReLU input near its kink (resampled until so)."""
    for attempt in range(50):
        params = module.init_params(seed + attempt)
        x, y = batch(module, seed=seed + attempt)
        if away_from_kinks(module, params, x):
            return params, x, y
    raise AssertionError("no point away from the kinks")


def central_differences(module: ModuleType, params: dict, x, y, seed: int) -> dict:
    """Central differences of loss(seed=seed) on every parameter entry."""
    out = {}
    for key, value in params.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            old = value[index]
            h = np.cbrt(np.finfo(np.float64).eps) * max(1.0, abs(old))
            value[index] = old + h
            up = module.loss(params, x, y, seed=seed)
            value[index] = old - h
            down = module.loss(params, x, y, seed=seed)
            value[index] = old
            numeric[index] = (up - down) / (2 * h)
        out[key] = numeric
    return out


#: Every net, form and layout; two of them (one per form, one per layout) in the quick
#: subset, the rest with the slow tests.
FORMS = [
    pytest.param(
        net,
        form,
        layout,
        marks=()
        if (net, form, layout)
        in (
            ("sigmoid-relu-softmax", "vectorized", "columns"),
            ("tanh-custom-relu", "plain", "rows"),
        )
        else pytest.mark.slow,
    )
    for net in NETS
    for form in ("vectorized", "plain")
    for layout in ("columns", "rows")
]
#: One case in the quick subset, the others with the slow tests.
QUICK_FORM = ["vectorized", pytest.param("plain", marks=pytest.mark.slow)]


@pytest.mark.slow
@pytest.mark.parametrize(("net", "form", "layout"), FORMS)
def test_central_differences_with_a_fixed_seed(modules, net, form, layout) -> None:
    module = modules(net, form, layout)
    params, x, y = point(module)
    cost, grads = module.loss_and_grad(params, x, y, seed=11)
    numeric = central_differences(module, params, x, y, seed=11)
    for key, grad in grads.items():
        err = np.abs(grad - numeric[key])
        assert np.all(err <= 1e-8 * max(1.0, abs(cost)) + 1e-6 * np.abs(numeric[key])), key
    assert module.check_gradient(params, x, y, seed=11) < 1e-6


def torch_loss_and_grad(module: ModuleType, params: dict, x, y, masks: dict) -> tuple:
    """The module's network in PyTorch (float64) with ``masks`` multiplied in explicitly."""
    torch = pytest.importorskip("torch")
    rows = module.LAYOUT == "rows"
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    a = torch.tensor(x)
    functions = {
        "sigmoid": torch.sigmoid,
        "relu": torch.relu,
        "tanh": torch.tanh,
        "sin(x) + x/3": lambda z: torch.sin(z) + z / 3,
        "linear": lambda z: z,
    }
    depth = len(module.LAYER_SIZES) - 1
    outputs = [a]
    for layer in range(1, depth + 1):
        w, b = p[f"W{layer}"], p.get(f"b{layer}")
        z = a @ w if rows else w @ a
        if b is not None:
            z = z + b
        act = module.ACTIVATIONS[layer - 1]
        if act == "softmax":
            logp = torch.log_softmax(z, dim=1 if rows else 0)
            a = torch.exp(logp)
        else:
            a = functions[act](z)
        mask = masks.get(naming.dropout_mask(layer))
        if mask is not None:
            a = torch.tensor(mask) * a
        source = module.SPEC["layers"][layer - 1].get("skip_from")
        if source is not None:  # the mask applies before the skip is added
            a = a + outputs[source]
        outputs.append(a)
    m = x.shape[0 if rows else 1]
    target = torch.tensor(y)
    if module.COST == "cross-entropy":
        cost = -(target * logp).sum() / m
    else:
        cost = ((a - target) ** 2).sum() / 2 / m
    l2, l1 = module.SPEC.get("l2", 0.0), module.SPEC.get("l1", 0.0)
    for layer in range(1, depth + 1):
        w = p[f"W{layer}"]
        cost = cost + l2 / 2 * torch.sum(w * w) + l1 * torch.sum(torch.abs(w))
    cost.backward()
    return float(cost.detach()), {k: v.grad.numpy() for k, v in p.items()}


@pytest.mark.slow
@pytest.mark.parametrize(("net", "form", "layout"), FORMS)
def test_equals_pytorch_autograd_with_the_same_masks(modules, net, form, layout) -> None:
    module = modules(net, form, layout)
    params, x, y = point(module, seed=3)
    m = x.shape[0 if layout == "rows" else 1]
    masks = module.dropout_masks(m, 7)
    assert sorted(masks) == sorted(module.DROPOUT)
    expected_cost, expected = torch_loss_and_grad(module, params, x, y, masks)
    cost, grads = module.loss_and_grad(params, x, y, seed=7)
    assert cost == pytest.approx(expected_cost, rel=TORCH_TOL)
    for key, grad in grads.items():
        scale = np.max(np.abs(expected[key]))
        np.testing.assert_allclose(grad, expected[key], rtol=TORCH_TOL, atol=TORCH_TOL * scale)
    # Without the masks PyTorch's cost differs: the masks really are in play.
    plain_cost, _ = torch_loss_and_grad(module, params, x, y, {})
    assert abs(plain_cost - cost) > 1e-6


@pytest.mark.slow
def test_planted_bug_mask_missing_from_bp2_is_caught(load_source) -> None:
    """The same module with ``delta1 *= D1`` removed: the gradient checks fail."""
    spec = make_spec("sigmoid-relu-softmax")
    source = generate_module(spec)
    line = "    delta1 *= D1\n"
    assert source.count(line) == 1
    broken = load_source(source.replace(line, ""))
    params, x, y = point(broken)
    assert broken.check_gradient(params, x, y, seed=5) > 1e-3
    plain_source = generate_plain(spec)
    line = "    delta1 = (W2.T @ delta2) * D1 * sp1\n"
    assert plain_source.count(line) == 1
    broken_plain = load_source(plain_source.replace(line, line.replace(" * D1", "")))
    assert broken_plain.check_gradient(params, x, y, seed=5) > 1e-3


def test_equation_comments_name_the_mask(modules) -> None:
    source = generate_module(make_spec("sigmoid-relu-softmax"))
    assert "# forward: D1 = r1 / (1 - p), r1 ~ Bernoulli(1 - p) per unit and example" in source
    assert "# forward: a1 = D1 * h1 (dropout)" in source
    assert "# BP2: delta1 = (W2^T delta2) * D1 * sp1 (dropout mask)" in source
    # sigma' is read from the cached f(z) = h1, not from the masked a1
    assert "# BP2: sp1 = sigmoid'(z1) = -(sigmoid(z1) - 1)*sigmoid(z1) = h1*(1 - h1)" in source


def test_seed_costs_a_none_test_only_without_dropout() -> None:
    source = generate_module(Spec.from_sizes([3, 4, 2], ["tanh", "sigmoid"], "quadratic"))
    body = source.split("def loss(params, x, y, seed=None):")[1].split("\ndef ")[0]
    assert "    if seed is not None:\n        _check_seed(seed)\n" in body
    assert "rng" not in body and "_mask_rng" not in source and "DROPOUT" not in source


# --------------------------------------------------------------------------- the evaluator


@pytest.mark.slow
def test_run_statement_bp2_with_symbolic_masks_equals_sympy_diff() -> None:
    """The mini-batch program on a tiny net, evaluated by run_statement with every mask
    entry a symbol: dC/dW1 from BP2..BP4 equals SymPy's diff of the cost it computes."""
    spec = Spec(2, (Layer(2, "tanh", dropout=0.5), Layer(1, "sigmoid")), "quadratic")
    program = batch_program(derive_network(spec))
    m = 2
    rational = [sp.Rational(k, 7) for k in (3, -2, 5, 1, -4, 2, 6, -1, 3, 2)]
    w1 = sp.Matrix(2, 2, sp.symbols("u0:4", real=True))
    d1 = sp.Matrix(2, m, sp.symbols("d0:4", real=True))
    env = {
        "x": sp.Matrix(2, m, rational[:4]),
        "y": sp.Matrix(1, m, [sp.Rational(1, 3), sp.Rational(2, 3)]),
        "W1": w1,
        "b1": sp.Matrix(2, 1, rational[4:6]),
        "W2": sp.Matrix(1, 2, rational[6:8]),
        "b2": sp.Matrix(1, 1, rational[8:9]),
        "D1": d1,
    }
    for s in program:
        env[s.target] = run_statement(s, env, rows=False, m=m)
    cost = env["C"][0, 0]
    at = dict(zip(w1, rational[:4], strict=True)) | dict(zip(d1, (2, 0, 2, 2), strict=True))
    for i in range(2):
        for j in range(2):
            expected = sp.diff(cost, w1[i, j]).subs(at).evalf(30)
            got = env["dC_dW1"][i, j].subs(at).evalf(30)
            assert abs(got - expected) < 1e-25
    # The mask entry set to 0 at example 1, unit 0 cuts that path: the sum changes.
    assert any(d in env["delta1"][0, 1].free_symbols for d in d1)


def test_run_statement_asks_for_the_mask() -> None:
    spec = Spec(2, (Layer(2, "tanh", dropout=0.5), Layer(1, "sigmoid")), "quadratic")
    mask = next(s for s in batch_program(derive_network(spec)) if s.op == "dropout")
    with pytest.raises(ValueError, match="D1 is an input"):
        run_statement(mask, {"h1": sp.zeros(2, 1)}, rows=False, m=1)


# --------------------------------------------------------------------------- seeds


@pytest.mark.slow
@pytest.mark.parametrize("form", ["vectorized", "plain"])
def test_seed_rules(modules, form) -> None:
    module = modules("sigmoid-relu-softmax", form, "columns")
    params, x, y = point(module)
    assert module.loss(params, x, y, seed=4) == module.loss_and_grad(params, x, y, seed=4)[0]
    assert module.loss(params, x, y, seed=4) == module.loss(params, x, y, seed=4)
    assert module.loss(params, x, y, seed=4) != module.loss(params, x, y, seed=5)
    fresh = {module.loss(params, x, y) for _ in range(5)}
    assert len(fresh) > 1
    # numpy integers and huge seeds are whole numbers like any other
    assert module.loss(params, x, y, seed=np.int64(4)) == module.loss(params, x, y, seed=4)
    assert np.isfinite(module.loss(params, x, y, seed=2**70))
    generator = np.random.default_rng(4)
    assert module.loss(params, x, y, seed=generator) == module.loss(params, x, y, seed=4)
    # the generator's stream continues: the next call draws other masks
    assert module.loss(params, x, y, seed=generator) != module.loss(params, x, y, seed=4)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["vectorized", "plain"])
def test_forward_has_no_dropout(modules, load_source, form) -> None:
    module = modules("sigmoid-relu-softmax", form, "columns")
    params, x, y = point(module)
    spec = make_spec("sigmoid-relu-softmax")
    no_dropout = spec.replace(layers=tuple(Layer(ly.size, ly.activation) for ly in spec.layers))
    source = (generate_module if form == "vectorized" else generate_plain)(no_dropout)
    reference = load_source(source)
    out = module.forward(params, x)
    np.testing.assert_array_equal(out, module.forward(params, x))
    np.testing.assert_array_equal(out, reference.forward(params, x))
    # and without dropout, seed changes nothing
    assert reference.loss(params, x, y, seed=1) == reference.loss(params, x, y)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [-1, "a", 1.5, True, [1]])
def test_bad_seeds_are_refused(modules, build, seed) -> None:
    dropout = modules("sigmoid-relu-softmax", "vectorized", "columns")
    plain = Spec.from_sizes([3, 4, 2], ["tanh", "sigmoid"], "quadratic")
    for module in (dropout, modules("sigmoid-relu-softmax", "plain", "rows"), build(plain)):
        params, x, y = point(module)
        calls = (
            (module.loss, (params, x, y)),
            (module.loss_and_grad, (params, x, y)),
            (module.sgd_step, (params, x, y, 0.1)),
            (module.check_gradient, (params, x, y)),
        )
        for function, args in calls:
            with pytest.raises(ValueError, match=r"^seed: expected None, a whole number >= 0"):
                function(*args, seed=seed)
    with pytest.raises(ValueError, match="seed: check_gradient needs a whole number"):
        dropout.check_gradient(*point(dropout), seed=None)


def test_masks_statistics() -> None:
    """The kept fraction is 1 - p within 4 standard deviations, and E[D] = 1 (inverted)."""
    spec = Spec(3, (Layer(50, "tanh", dropout=0.3), Layer(2, "softmax")), "cross-entropy")
    module_source = generate_module(spec)
    namespace: dict = {}
    exec(compile(module_source, "dropout_stats", "exec"), namespace)  # noqa: S102 - our own module
    p, m = 0.3, 4000
    mask = namespace["dropout_masks"](m, 123)["D1"]
    n = mask.size
    kept = np.count_nonzero(mask) / n
    assert abs(kept - (1 - p)) < 4 * np.sqrt(p * (1 - p) / n)
    assert set(np.unique(mask)) == {0.0, 1 / (1 - p)}
    assert abs(mask.mean() - 1) < 4 * np.sqrt(p / (1 - p) / n)
    # E[a] = f(z): the mean of a^1 over many draws matches h^1 within the same bound
    params = namespace["init_params"](0)
    x = np.random.default_rng(0).standard_normal((3, 1)).repeat(m, axis=1)
    values = namespace["_forward"](params, x, None, np.random.default_rng(9))
    cache = dict(zip(namespace["FORWARD_VALUES"], values, strict=True))
    h, a = cache["h1"], cache["a1"]
    spread = np.abs(h[:, 0]) * np.sqrt(p / (1 - p) / m)
    assert np.all(np.abs(a.mean(axis=1) - h[:, 0]) <= 4 * spread + 1e-12)


def test_threads_with_seeds_equal_single_threaded(modules) -> None:
    module = modules("tanh-custom-relu", "vectorized", "rows")
    params, x, y = point(module)
    expected = {s: module.loss_and_grad(params, x, y, seed=s) for s in range(8)}
    errors: list[str] = []

    def work(offset: int) -> None:
        for round_ in range(20):
            s = (offset + round_) % 8
            cost, grads = module.loss_and_grad(params, x, y, seed=s)
            if cost != expected[s][0] or any(
                not np.array_equal(grads[k], expected[s][1][k]) for k in grads
            ):
                errors.append(f"seed {s}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --------------------------------------------------------------------------- train


@pytest.mark.parametrize("form", QUICK_FORM)
@pytest.mark.parametrize(
    "optimizer", [{}, {"optimizer": "adam"}, {"optimizer": "nesterov", "momentum": 0.9}]
)
def test_train_same_seed_same_run(modules, form, optimizer) -> None:
    module = modules("sigmoid-relu-softmax", form, "columns")
    _, x, y = point(module)

    def run(seed: int) -> dict:
        params = module.init_params(0)
        module.train(params, x, y, epochs=3, batch_size=4, lr=0.1, seed=seed, **optimizer)
        return params

    first, again, other = run(1), run(1), run(2)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert any(not np.array_equal(first[k], other[k]) for k in first)


def test_train_draws_masks_after_the_permutation(modules) -> None:
    """One full batch: train's cost is loss() on the permuted batch with the masks drawn
    next from the same generator."""
    module = modules("sigmoid-relu-softmax", "vectorized", "columns")
    params, x, y = point(module)
    rng = np.random.default_rng(5)
    order = rng.permutation(x.shape[1])
    expected = module.loss(params, x[:, order], y[:, order], seed=rng)
    history = module.train(params, x, y, epochs=1, batch_size=x.shape[1], lr=0.1, seed=5)
    assert history[0] == pytest.approx(expected, rel=1e-14)


def test_sgd_step_draws_its_masks_from_seed(modules) -> None:
    module = modules("sigmoid-relu-softmax", "vectorized", "columns")
    params, x, y = point(module)
    expected_cost, grads = module.loss_and_grad(params, x, y, seed=3)
    stepped = {k: v.copy() for k, v in params.items()}
    assert module.sgd_step(stepped, x, y, 0.5, seed=3) == expected_cost
    for key in params:
        np.testing.assert_allclose(stepped[key], params[key] - 0.5 * grads[key], rtol=1e-14)


# --------------------------------------------------------------------------- spec refusals


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (1.0, "outside [0, 1)"),
        (-0.1, "outside [0, 1)"),
        ("0.2", "expected a number"),
        (True, "expected a number"),
        (float("nan"), "expected a number"),
        (float("inf"), "expected a number"),
    ],
)
def test_bad_dropout_is_refused_naming_the_field(value, words) -> None:
    with pytest.raises(SpecError) as error:
        Spec(3, (Layer(4, "tanh", dropout=value), Layer(2, "softmax")), "cross-entropy")
    text = str(error.value)
    assert text.startswith("layers[0].dropout: ") and words in text and "\n" not in text


def test_dropout_on_the_output_is_refused() -> None:
    with pytest.raises(SpecError, match=r"^layers\[1\]\.dropout: dropout on the output layer"):
        Spec(3, (Layer(4, "tanh"), Layer(2, "softmax", dropout=0.1)), "cross-entropy")


@pytest.mark.slow
def test_zero_dropout_changes_nothing() -> None:
    """p = 0 (and -0.0) give the very module of a spec without the field."""
    base = Spec.from_sizes([3, 4, 2], ["tanh", "softmax"], "cross-entropy")
    for zero in (0, 0.0, -0.0):
        layers = (Layer(4, "tanh", dropout=zero), Layer(2, "softmax"))
        assert generate_module(base.replace(layers=layers)) == generate_module(base)
        assert base.replace(layers=layers).to_dict() == base.to_dict()
    assert "_dropout_mask" not in generate_module(base)


@pytest.mark.slow
def test_near_one_dropout_works(build) -> None:
    module = build(
        Spec(3, (Layer(4, "tanh", dropout=0.999999), Layer(2, "softmax")), "cross-entropy")
    )
    params, x, y = point(module)
    masks = module.dropout_masks(6, 0)["D1"]
    assert set(np.unique(masks)) <= {0.0, 1 / (1 - 0.999999)}
    assert np.isfinite(module.loss(params, x, y, seed=0))


def test_spec_file_round_trip() -> None:
    data = {
        "input": 3,
        "cost": "cross-entropy",
        "layers": [
            {"size": 4, "activation": "relu", "dropout": 0.2},
            {"size": 2, "activation": "softmax"},
        ],
    }
    spec = spec_from_dict(json.loads(json.dumps(data)))
    assert spec.dropout_layers == {1: 0.2}
    assert spec.to_dict()["layers"][0]["dropout"] == 0.2


# --------------------------------------------------------------------------- commands


SPEC_TOML = """\
input = 3
cost = "cross-entropy"
[[layers]]
size = 4
activation = "tanh"
dropout = 0.2
[[layers]]
size = 3
activation = "softmax"
"""


def test_bad_dropout_in_a_file_is_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "net.toml"
    path.write_text(SPEC_TOML.replace("dropout = 0.2", 'dropout = "0.2"'))
    assert main(["generate", str(path), "-o", str(tmp_path / "m.py")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("chainrule: error: layers[0].dropout: expected a number")
    assert "\n" not in err


@pytest.mark.slow
def test_chainrule_train_with_dropout(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 3)) * 3
    labels = rng.integers(0, 3, 150)
    x = centers[labels] + rng.standard_normal((150, 3)) * 0.5
    np.savez(tmp_path / "d.npz", x=x, y=labels)
    path = tmp_path / "net.toml"
    path.write_text(SPEC_TOML)
    args = ["train", str(path), "--data", str(tmp_path / "d.npz"), "--epochs", "3", "--lr", "0.5"]
    runs = []
    for _ in range(2):
        assert main(args) == 0
        lines = capsys.readouterr().out.splitlines()[:3]
        runs.append([line.split()[:7] for line in lines])  # epoch, loss, accuracy
    assert runs[0] == runs[1]  # the seed drives the masks: the same run twice
    assert float(runs[0][-1][6]) > 0.5
    one_liner = ["--sizes", "3,4,3", "--activations", "tanh,softmax", "--cost", "cross-entropy"]
    flagged = ["train", *one_liner, "--dropout", "0.2,0", *args[2:]]
    assert main(flagged) == 0
    flagged_lines = capsys.readouterr().out.splitlines()[:3]
    assert [line.split()[:7] for line in flagged_lines] == runs[0]  # the file's network


@pytest.mark.slow
def test_accuracy_is_measured_without_dropout(build) -> None:
    from chainrule.cmd_train import accuracy

    module = build(Spec(3, (Layer(8, "relu", dropout=0.5), Layer(3, "softmax")), "cross-entropy"))
    params, x, _ = point(module)
    labels = np.argmax(module.forward(params, x), axis=0)
    assert accuracy(module, params, x, labels) == 1.0


# --------------------------------------------------------------------------- importers


def _keras(*middle: dict) -> dict:
    """A Keras 3 style Sequential config: input 4, Dense(6, relu), ``middle``, Dense(3)."""
    return {
        "class_name": "Sequential",
        "config": {
            "name": "k",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 4]}},
                {"class_name": "Dense", "config": {"name": "d0", "units": 6, "activation": "relu"}},
                *middle,
                {
                    "class_name": "Dense",
                    "config": {"name": "d1", "units": 3, "activation": "softmax"},
                },
            ],
        },
    }


def _drop(rate: object = 0.25, **extra: object) -> dict:
    config = {"name": "drop", "rate": rate, "noise_shape": None, "seed": None, **extra}
    return {"class_name": "Dropout", "config": config}


def test_keras_dropout_sets_the_layer_before() -> None:
    from chainrule.importers import spec_from_keras

    spec = spec_from_keras(_keras(_drop(0.25)), "cross-entropy")
    assert spec.dropout_layers == {1: 0.25}
    relu_then_drop = _keras(
        {"class_name": "Dense", "config": {"name": "d", "units": 5, "activation": "linear"}},
        {"class_name": "ReLU", "config": {"name": "r"}},
        _drop(0.5),
    )
    assert spec_from_keras(relu_then_drop, "cross-entropy").dropout_layers == {2: 0.5}


@pytest.mark.parametrize(
    ("layers", "field", "words"),
    [
        ((_drop(), _drop()), "drop", "a second Dropout"),
        ((_drop(noise_shape=[None, 1]),), "noise_shape", "not supported"),
        ((_drop(seed=3),), "seed", "not supported"),
        ((_drop(1.0),), "rate", "[0, 1)"),
        ((_drop("0.2"),), "rate", "[0, 1)"),
        (
            (
                {"class_name": "Dense", "config": {"name": "d", "units": 5}},
                _drop(),
                {"class_name": "ReLU", "config": {"name": "r"}},
            ),
            "'r'",
            "an activation after",
        ),
    ],
)
def test_keras_dropout_refusals(layers, field, words) -> None:
    from chainrule.importers import spec_from_keras

    with pytest.raises(SpecError) as info:
        spec_from_keras(_keras(*layers), "cross-entropy")
    assert field in info.value.field and words in info.value.message
    assert "\n" not in str(info.value)


def test_keras_dropout_first_or_last_is_refused() -> None:
    from chainrule.importers import spec_from_keras

    first = _keras()
    first["config"]["layers"].insert(1, _drop())
    with pytest.raises(SpecError, match="a Dropout before any Dense layer"):
        spec_from_keras(first, "cross-entropy")
    last = _keras()
    last["config"]["layers"].append(_drop())
    with pytest.raises(SpecError, match="a Dropout after the output layer"):
        spec_from_keras(last, "cross-entropy")


@pytest.mark.slow
def test_torch_dropout_sets_the_layer_before() -> None:
    torch = pytest.importorskip("torch")
    from chainrule.importers import from_torch

    nn = torch.nn
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Dropout(0.3), nn.Linear(6, 5))
    net.append(nn.Dropout(0.1))
    net.append(nn.Linear(5, 3))
    assert from_torch(net, "quadratic").dropout_layers == {1: 0.3, 2: 0.1}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda nn: nn.Sequential(nn.Dropout(0.2), nn.Linear(2, 3)), "before any Dense"),
        (
            lambda nn: nn.Sequential(
                nn.Linear(2, 3), nn.Dropout(0.2), nn.Dropout(0.2), nn.Linear(3, 1)
            ),
            "a second Dropout",
        ),
        (lambda nn: nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.2)), "after the output layer"),
        (
            lambda nn: nn.Sequential(
                nn.Linear(2, 3), nn.Dropout(0.2), nn.Sigmoid(), nn.Linear(3, 1)
            ),
            "an activation after",
        ),
        (
            lambda nn: nn.Sequential(nn.Linear(2, 3), nn.AlphaDropout(0.2), nn.Linear(3, 1)),
            "AlphaDropout",
        ),
    ],
)
def test_torch_dropout_refusals(make, words) -> None:
    torch = pytest.importorskip("torch")
    from chainrule.importers import from_torch

    with pytest.raises(SpecError) as info:
        from_torch(make(torch.nn), "quadratic")
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_chainrule_check_fixes_the_masks(tmp_path, capsys) -> None:
    path = tmp_path / "net.toml"
    path.write_text(SPEC_TOML)
    module = tmp_path / "net.py"
    assert main(["generate", str(path), "-o", str(module)]) == 0
    for form_args in ([], ["--form", "plain"]):
        assert main(["generate", str(path), *form_args, "-o", str(module), "--force"]) == 0
        capsys.readouterr()
        assert main(["check", str(module), "--seed", "2"]) == 0
        assert "gradient check: passed" in capsys.readouterr().out


@pytest.mark.slow
def test_float32_module_draws_float32_masks(build) -> None:
    spec = make_spec("sigmoid-relu-softmax").replace(dtype="float32")
    module = build(spec)
    params = module.init_params(0)
    x, y = batch(module)
    masks = module.dropout_masks(6, 1, np.float32)
    assert all(mask.dtype == np.float32 for mask in masks.values())
    cost, grads = module.loss_and_grad(params, x.astype(np.float32), y.astype(np.float32), seed=1)
    assert cost == module.loss(params, x.astype(np.float32), y.astype(np.float32), seed=1)
    assert all(g.dtype == np.float32 for g in grads.values())
    with pytest.raises(ValueError, match="^dtype: expected float64 or float32"):
        module.dropout_masks(6, 1, np.int64)
    with pytest.raises(ValueError, match="^m: expected a whole number >= 1"):
        module.dropout_masks(0, 1)


@pytest.mark.slow
@pytest.mark.parametrize("form", QUICK_FORM)
def test_dropout_with_l2_and_l1_equals_pytorch(load_source, form) -> None:
    spec = make_spec("tanh-custom-relu", "rows").replace(l2=0.03, l1=0.02)
    source = (generate_module if form == "vectorized" else generate_plain)(spec)
    lint_module(source)
    module = load_source(source)
    params, x, y = point(module, seed=4)
    expected_cost, expected = torch_loss_and_grad(module, params, x, y, module.dropout_masks(6, 2))
    cost, grads = module.loss_and_grad(params, x, y, seed=2)
    assert cost == pytest.approx(expected_cost, rel=TORCH_TOL)
    for key, grad in grads.items():
        scale = np.max(np.abs(expected[key]))
        np.testing.assert_allclose(grad, expected[key], rtol=TORCH_TOL, atol=TORCH_TOL * scale)


@pytest.mark.slow
def test_dropout_flag_sets_every_layer(tmp_path) -> None:
    from chainrule.derive.spec import preset

    from chainrule.dropout_args import with_dropout

    assert with_dropout(preset("nielsen"), "0.25, 0").dropout_layers == {1: 0.25}
    out = tmp_path / "net.py"
    # the README's example
    args = ["--sizes", "64,32,10", "--activations", "relu,softmax", "--cost", "cross-entropy"]
    assert main(["generate", *args, "--dropout", "0.2,0", "-o", str(out)]) == 0
    assert '"D1": 0.2,' in out.read_text()
    path = tmp_path / "net.toml"
    path.write_text(SPEC_TOML)
    assert main(["generate", str(path), "--dropout", "0,0", "-o", str(out), "--force"]) == 0
    assert "DROPOUT" not in out.read_text()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("0.2", "--dropout: 1 value(s) for 2 layer(s)"),
        ("0.2,0.1", "--dropout item 2: dropout on the output layer"),
        ("x,0", "--dropout item 1: 'x' is not a number"),
        ("1,0", "--dropout item 1: 1.0 is outside [0, 1)"),
        ("nan,0", "--dropout item 1: 'nan' is not a number"),
    ],
)
def test_bad_dropout_flag_is_one_line(tmp_path, capsys, value, words) -> None:
    args = ["--sizes", "3,4,2", "--activations", "relu,softmax", "--cost", "cross-entropy"]
    out = tmp_path / "net.py"
    assert main(["generate", *args, "--dropout", value, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"chainrule: error: {words}") and "\n" not in err
    assert not out.exists()


@pytest.mark.slow
def test_regenerate_keeps_dropout(tmp_path, capsys) -> None:
    path = tmp_path / "net.toml"
    path.write_text(SPEC_TOML)
    for form_args in ([], ["--form", "plain"]):
        module = tmp_path / f"net{len(form_args)}.py"
        assert main(["generate", str(path), *form_args, "-o", str(module)]) == 0
        assert main(["regenerate", str(module), "--check"]) == 0
        assert "up to date" in capsys.readouterr().out


# --------------------------------------------------------------------------- random networks

_HIDDEN = ("sigmoid", "tanh", "relu", "linear", "sin(x) + x/3")
_HEADS = (("softmax", "cross-entropy"), ("sigmoid", "quadratic"), ("linear", "quadratic"))


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True, phases=(Phase.generate,))
@given(
    hidden=st.lists(
        st.tuples(
            st.sampled_from(_HIDDEN),
            st.integers(1, 5),
            st.sampled_from((0.0, 0.1, 0.5, 0.9)),
            st.booleans(),
        ),
        min_size=1,
        max_size=3,
    ),
    head=st.sampled_from(_HEADS),
    layout=st.sampled_from(("columns", "rows")),
    form=st.sampled_from(("vectorized", "plain")),
    m=st.integers(1, 4),
    seed=st.integers(0, 2**32),
)
def test_random_networks_with_dropout_equal_pytorch(hidden, head, layout, form, m, seed) -> None:
    """Random depths, widths, activations, biases and drop probabilities, both layouts and
    forms: loss_and_grad(seed=s) equals PyTorch autograd with dropout_masks(m, s)."""
    layers = [Layer(n, act, bias, dropout=p) for act, n, p, bias in hidden]
    spec = Spec(3, (*layers, Layer(2, head[0])), head[1], layout=layout)
    source = (generate_module if form == "vectorized" else generate_plain)(spec)
    lint_module(source)
    namespace: dict = {}
    exec(compile(source, "random_dropout", "exec"), namespace)  # noqa: S102 - our own module
    module = type("Module", (), namespace)
    params = module.init_params(seed % 1000)
    x, y = batch(module, m=m, seed=seed % 1000)
    expected_cost, expected = torch_loss_and_grad(
        module, params, x, y, module.dropout_masks(m, seed) if spec.dropout_layers else {}
    )
    cost, grads = module.loss_and_grad(params, x, y, seed=seed)
    assert cost == pytest.approx(expected_cost, rel=TORCH_TOL, abs=1e-15)
    for key, grad in grads.items():
        scale = max(np.max(np.abs(expected[key])), 1e-300)
        np.testing.assert_allclose(grad, expected[key], rtol=TORCH_TOL, atol=TORCH_TOL * scale)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["rows", pytest.param("columns", marks=pytest.mark.slow)])
@pytest.mark.parametrize("form", QUICK_FORM)
def test_dropout_with_residual_connections_equals_pytorch(load_source, form, layout) -> None:
    """a^l = D^l * f(z^l) + a^k, on skips from the input, from a dropout layer and into
    layers with and without dropout (linear and relu too)."""
    layers = (
        Layer(4, "tanh", dropout=0.3),
        Layer(4, "sigmoid", skip_from=1, dropout=0.5),
        Layer(4, "linear", skip_from=2, dropout=0.2),
        Layer(4, "relu", skip_from=0, dropout=0.4),
        Layer(4, "sin(x) + x/3", skip_from=3),
        Layer(3, "softmax"),
    )
    spec = Spec(4, layers, "cross-entropy", layout=layout)
    source = (generate_module if form == "vectorized" else generate_plain)(spec)
    lint_module(source)
    assert "# forward: a2 = D2 * sigmoid(z2) + a1 = D2 * h2 + a1" in source
    module = load_source(source)
    params, x, y = point(module, seed=2)
    m = x.shape[0 if layout == "rows" else 1]
    expected_cost, expected = torch_loss_and_grad(module, params, x, y, module.dropout_masks(m, 9))
    cost, grads = module.loss_and_grad(params, x, y, seed=9)
    assert cost == pytest.approx(expected_cost, rel=TORCH_TOL)
    for key, grad in grads.items():
        scale = np.max(np.abs(expected[key]))
        np.testing.assert_allclose(grad, expected[key], rtol=TORCH_TOL, atol=TORCH_TOL * scale)
    assert module.check_gradient(params, x, y, seed=9) < 1e-6


@pytest.mark.slow
def test_unrolled_module_takes_and_checks_seed(load_source) -> None:
    from chainrule.codegen.unrolled import generate_unrolled
    from chainrule.derive.spec import preset

    module = load_source(generate_unrolled(preset("3b1b-chain"), "backprop"))
    params = module.init_params(0)
    x, y = np.array([[0.5, 0.2]]), np.array([[0.1, 0.3]])
    assert module.loss(params, x, y, seed=1) == module.loss(params, x, y)
    assert module.loss_and_grad(params, x, y, seed=1)[0] == module.loss(params, x, y)
    with pytest.raises(ValueError, match="^seed: expected None"):
        module.loss_and_grad(params, x, y, seed="a")
