"""``train``'s optimizers: momentum, Nesterov and Adam, exactly as ``torch.optim``'s.

Every form of the generated module (vectorized in both layouts, plain, unrolled) is
trained with each optimizer and compared, parameter by parameter, with PyTorch's
optimizer in float64: once stepping on the module's own gradients (full batch, so that
the shuffle cannot matter), once end to end with PyTorch autograd on the same network
and cost (whole batches and mini-batches, the module's shuffle reproduced). The
tolerance, 1e-10 relative, is far below what swapping Nesterov for plain momentum or
dropping Adam's bias correction changes: a test below shows both.

Then the arguments a user can get wrong, each refused by a ValueError naming it, and
the hostile cases: a learning rate that overflows, epochs=0, float32 parameters, two
threads at once, a state dict carried from call to call.
"""

from __future__ import annotations

import ast
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from chainrule.codegen.emit import lint_module
from chainrule.codegen.plain import generate_plain
from chainrule.codegen.render import generate_module
from chainrule.codegen.unrolled import generate_unrolled
from chainrule.derive.spec import Spec

#: Relative tolerance against torch.optim, in float64.
TOL = 1e-10

#: (train keyword arguments, torch optimizer class name, its keyword arguments).
CONFIGS = {
    "sgd": ({"optimizer": "sgd"}, "SGD", {}),
    "momentum": ({"optimizer": "momentum", "momentum": 0.9}, "SGD", {"momentum": 0.9}),
    "momentum-0.5": ({"optimizer": "momentum", "momentum": 0.5}, "SGD", {"momentum": 0.5}),
    "nesterov": (
        {"optimizer": "nesterov", "momentum": 0.9},
        "SGD",
        {"momentum": 0.9, "nesterov": True},
    ),
    "nesterov-0.3": (
        {"optimizer": "nesterov", "momentum": 0.3},
        "SGD",
        {"momentum": 0.3, "nesterov": True},
    ),
    "adam": ({"optimizer": "adam"}, "Adam", {}),
    "adam-betas-eps": (
        {"optimizer": "adam", "betas": (0.5, 0.9), "eps": 1e-3},
        "Adam",
        {"betas": (0.5, 0.9), "eps": 1e-3},
    ),
}
#: A learning rate per update rule that moves the parameters well in a few steps.
LR = {"SGD": 0.5, "Adam": 0.05}

SIGMOID = Spec.from_sizes([3, 4, 2], ["sigmoid", "sigmoid"], "quadratic")
SOFTMAX = Spec.from_sizes([3, 5, 3], ["tanh", "softmax"], "cross-entropy")
FORMS = ("columns", "rows", "plain", "unrolled")
#: FORMS as parameters: generating the unrolled form takes SymPy a few seconds, so its
#: cases run with the slow tests (in CI) only.
FORM_PARAMS = [pytest.param(f, marks=pytest.mark.slow) if f == "unrolled" else f for f in FORMS]


@pytest.fixture(scope="module")
def torch():
    """PyTorch, or a skip when it is absent (it is optional: pip install torch==2.13.0)."""
    return pytest.importorskip("torch", reason="PyTorch is optional: pip install torch==2.13.0")


@pytest.fixture(scope="module")
def make(load_source: Callable[[str], ModuleType]) -> Callable[[Spec, str], ModuleType]:
    """The module of ``spec`` in a form: vectorized columns or rows, plain, unrolled."""
    cache: dict[tuple, ModuleType] = {}

    def build(spec: Spec, form: str) -> ModuleType:
        key = (repr(spec.to_dict()), form)
        if key not in cache:
            if form == "rows":
                source = generate_module(spec.replace(layout="rows"))
            elif form == "plain":
                source = generate_plain(spec)
            elif form == "unrolled":
                source = generate_unrolled(spec, "backprop")
            else:
                source = generate_module(spec)
            lint_module(source)
            cache[key] = load_source(source)
        return cache[key]

    return build


def _problem(module: ModuleType, n: int = 8, seed: int = 1) -> tuple[dict, np.ndarray, np.ndarray]:
    """Parameters, inputs and one-hot targets (probabilities for a softmax) in the layout."""
    rng = np.random.default_rng(seed)
    sizes = module.LAYER_SIZES
    x = rng.standard_normal((n, sizes[0]))
    y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)]
    if module.LAYOUT == "columns":
        x, y = x.T.copy(), y.T.copy()
    return module.init_params(seed), x, y


def _worst(ours: dict, theirs: dict) -> float:
    """Largest relative difference over all parameters (relative to each's largest entry)."""
    return max(
        float(np.max(np.abs(ours[k] - theirs[k])) / np.max(np.abs(theirs[k]))) for k in theirs
    )


def _torch_trajectory(torch, module, params, x, y, steps, name, kwargs, lr) -> dict:
    """``steps`` full-batch steps of torch.optim ``name`` on the module's own gradients."""
    tensors = {k: torch.tensor(v.copy(), dtype=torch.float64) for k, v in params.items()}
    optimizer = getattr(torch.optim, name)(list(tensors.values()), lr=lr, **kwargs)
    for _ in range(steps):
        _, grads = module.loss_and_grad({k: t.numpy().copy() for k, t in tensors.items()}, x, y)
        for key, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[key])
        optimizer.step()
    return {k: t.numpy() for k, t in tensors.items()}


@pytest.mark.slow
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("form", FORM_PARAMS)
def test_full_batch_steps_match_torch_optim_on_the_modules_gradients(torch, make, form, config):
    kwargs, name, torch_kwargs = CONFIGS[config]
    module = make(SOFTMAX if form != "unrolled" else SIGMOID, form)
    start, x, y = _problem(module)
    params = {k: v.copy() for k, v in start.items()}
    n, lr = x.shape[0 if module.LAYOUT == "rows" else 1], LR[name]
    history = module.train(params, x, y, epochs=7, batch_size=n, lr=lr, seed=3, **kwargs)
    expected = _torch_trajectory(torch, module, start, x, y, 7, name, torch_kwargs, lr)
    assert len(history) == 7
    assert _worst(params, expected) < TOL
    assert _worst(params, start) > 1e-3  # the parameters did move


class _TorchNet:
    """The same network and cost in PyTorch autograd, parameters as the module keys them."""

    def __init__(self, torch, module, params: dict) -> None:
        self.torch, self.module = torch, module
        self.tensors = {
            k: torch.tensor(v.copy(), dtype=torch.float64, requires_grad=True)
            for k, v in params.items()
        }

    def loss(self, x: np.ndarray, y: np.ndarray):
        torch, rows = self.torch, self.module.LAYOUT == "rows"
        a = torch.tensor(x if rows else x.T)
        target = torch.tensor(y if rows else y.T)
        for layer, activation in enumerate(self.module.ACTIVATIONS, start=1):
            w, b = self.tensors[f"W{layer}"], self.tensors[f"b{layer}"]
            z = a @ w + b if rows else a @ w.T + b.T
            if activation == "softmax":
                a = torch.log_softmax(z, dim=1)  # log a, for the cross-entropy
            else:
                a = getattr(torch, activation)(z)
        if self.module.COST == "cross-entropy":
            return -(target * a).sum(dim=1).mean()
        return ((a - target) ** 2 / 2).sum(dim=1).mean()


def _batches(n: int, batch_size: int, epochs: int, seed: int):
    """The index batches train takes: one generator, a permutation per epoch."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [11, 4], ids=["full-batch", "mini-batch"])
@pytest.mark.parametrize("config", ["momentum", "nesterov", "adam-betas-eps", "adam"])
@pytest.mark.parametrize(
    ("spec", "form"),
    [
        (SIGMOID, "columns"),
        (SOFTMAX, "columns"),
        # The other forms' steps match the columns form's (above); the slow tests run these.
        pytest.param(SOFTMAX, "rows", marks=pytest.mark.slow),
        pytest.param(SIGMOID, "plain", marks=pytest.mark.slow),
        pytest.param(SIGMOID, "unrolled", marks=pytest.mark.slow),
    ],
    ids=["sigmoid-quadratic", "softmax-ce", "softmax-ce-rows", "sigmoid-plain", "unrolled"],
)
def test_train_matches_torch_autograd_and_optim_end_to_end(
    torch, make, spec, form, config, batch_size
):
    kwargs, name, torch_kwargs = CONFIGS[config]
    module = make(spec, form)
    start, x, y = _problem(module, n=11, seed=4)
    net = _TorchNet(torch, module, start)
    rows = module.LAYOUT == "rows"
    assert abs(net.loss(x, y).item() - module.loss(start, x, y)) < 1e-12  # same cost
    lr, epochs, seed = LR[name], 6, 7
    optimizer = getattr(torch.optim, name)(list(net.tensors.values()), lr=lr, **torch_kwargs)
    for idx in _batches(11, batch_size, epochs, seed):
        optimizer.zero_grad()
        net.loss(x[idx] if rows else x[:, idx], y[idx] if rows else y[:, idx]).backward()
        optimizer.step()
    params = {k: v.copy() for k, v in start.items()}
    module.train(params, x, y, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, **kwargs)
    expected = {k: t.detach().numpy() for k, t in net.tensors.items()}
    assert _worst(params, expected) < TOL
    assert _worst(params, start) > 1e-3


@pytest.mark.slow
def test_the_tolerance_tells_the_rules_apart(torch, make):
    """Nesterov for plain momentum, or Adam without its bias correction, misses by far more
    than the tolerance after 3 steps: the torch comparisons above would catch either."""
    module = make(SOFTMAX, "columns")
    start, x, y = _problem(module)
    nesterov = {k: v.copy() for k, v in start.items()}
    module.train(nesterov, x, y, epochs=3, batch_size=8, lr=0.5, optimizer="nesterov", momentum=0.9)
    plain = _torch_trajectory(torch, module, start, x, y, 3, "SGD", {"momentum": 0.9}, 0.5)
    assert _worst(nesterov, plain) > 1e-4
    adam = {k: v.copy() for k, v in start.items()}
    module.train(adam, x, y, epochs=3, batch_size=8, lr=0.05, optimizer="adam")
    # Adam with m and v used as they are (no 1 - beta^t), by hand.
    raw = {k: v.copy() for k, v in start.items()}
    m = {k: np.zeros_like(v) for k, v in raw.items()}
    v2 = {k: np.zeros_like(v) for k, v in raw.items()}
    for _ in range(3):
        _, grads = module.loss_and_grad(raw, x, y)
        for key, g in grads.items():
            m[key] = 0.9 * m[key] + 0.1 * g
            v2[key] = 0.999 * v2[key] + 0.001 * g * g
            raw[key] -= 0.05 * m[key] / (np.sqrt(v2[key]) + 1e-8)
    assert _worst(adam, raw) > 1e-4


BAD_ARGUMENTS = [
    ("optimizer", {"optimizer": "Adam"}),
    ("optimizer", {"optimizer": None}),
    ("optimizer", {"optimizer": ["adam"]}),
    ("optimizer", {"optimizer": np.array(["sgd", "adam"])}),
    ("optimizer", {"optimizer": 3}),
    ("momentum", {"optimizer": "momentum", "momentum": float("nan")}),
    ("momentum", {"optimizer": "momentum", "momentum": float("inf")}),
    ("momentum", {"optimizer": "momentum", "momentum": -0.5}),
    ("momentum", {"optimizer": "momentum", "momentum": 1.0}),
    ("momentum", {"optimizer": "momentum", "momentum": True}),
    ("momentum", {"optimizer": "momentum", "momentum": "0.9"}),
    ("momentum", {"optimizer": "momentum", "momentum": np.array([0.9])}),
    ("momentum", {"optimizer": "momentum", "momentum": None}),
    ("momentum", {"optimizer": "momentum"}),
    ("momentum", {"optimizer": "nesterov", "momentum": 0}),
    ("momentum", {"optimizer": "sgd", "momentum": 0.9}),
    ("momentum", {"momentum": 0.9}),
    ("momentum", {"optimizer": "adam", "momentum": 0.9}),
    ("betas[0]", {"optimizer": "adam", "betas": (1.0, 0.999)}),
    ("betas[1]", {"optimizer": "adam", "betas": (0.9, float("nan"))}),
    ("betas[0]", {"optimizer": "adam", "betas": (-0.1, 0.999)}),
    ("betas[0]", {"optimizer": "adam", "betas": (True, 0.999)}),
    ("betas[1]", {"optimizer": "adam", "betas": [0.9, "0.999"]}),
    ("betas", {"optimizer": "adam", "betas": (0.9,)}),
    ("betas", {"optimizer": "adam", "betas": 0.9}),
    ("betas", {"optimizer": "adam", "betas": "0.9,0.999"}),
    ("betas", {"optimizer": "adam", "betas": np.array([[0.9, 0.999]])}),
    ("eps", {"optimizer": "adam", "eps": 0}),
    ("eps", {"optimizer": "adam", "eps": -1e-8}),
    ("eps", {"optimizer": "adam", "eps": float("nan")}),
    ("eps", {"optimizer": "adam", "eps": float("inf")}),
    ("eps", {"optimizer": "adam", "eps": True}),
    ("eps", {"optimizer": "adam", "eps": "1e-8"}),
    ("eps", {"optimizer": "adam", "eps": np.array([1e-8])}),
    ("eps", {"optimizer": "adam", "eps": 1e-330}),
    # Adam's own hyperparameters given to another optimizer (the defaults pass).
    ("betas", {"betas": (0.8, 0.9)}),
    ("betas", {"optimizer": "momentum", "momentum": 0.9, "betas": (0.9, 0.99)}),
    ("eps", {"eps": 1e-6}),
    ("eps", {"optimizer": "nesterov", "momentum": 0.5, "eps": 1e-3}),
    ("optimizer_state", {"optimizer": "adam", "optimizer_state": [1]}),
    ("optimizer_state", {"optimizer": "adam", "optimizer_state": {"optimizer": "momentum"}}),
    ("optimizer_state", {"optimizer": "adam", "optimizer_state": {"anything": 1}}),
]


@pytest.mark.parametrize("form", ["columns", "plain"])
@pytest.mark.parametrize(("name", "kwargs"), BAD_ARGUMENTS, ids=lambda v: repr(v)[:40])
def test_each_bad_optimizer_argument_is_refused_by_name(make, form, name, kwargs):
    module = make(SIGMOID, form)
    start, x, y = _problem(module)
    params = {k: v.copy() for k, v in start.items()}
    prefix = name.replace("[", r"\[").replace("]", r"\]")
    with pytest.raises(ValueError, match=f"^{prefix}: "):
        module.train(params, x, y, epochs=2, batch_size=4, lr=0.1, **kwargs)
    for key, value in start.items():  # refused before any step
        np.testing.assert_array_equal(params[key], value)


@pytest.mark.parametrize("form", ["columns", "plain"])
def test_a_negative_learning_rate_is_refused_and_zero_is_taken(make, form):
    """As torch.optim: lr < 0 would climb the cost; lr = 0 leaves every parameter."""
    module = make(SIGMOID, form)
    start, x, y = _problem(module)
    params = {k: v.copy() for k, v in start.items()}
    with pytest.raises(ValueError, match=r"^lr: expected a finite real number >= 0; got -0.1$"):
        module.train(params, x, y, epochs=1, batch_size=4, lr=-0.1)
    with pytest.raises(ValueError, match=r"^lr: expected a finite real number >= 0; got -1$"):
        module.sgd_step(params, x, y, -1)
    module.train(params, x, y, epochs=1, batch_size=4, lr=0, betas=(0.9, 0.999), eps=1e-8)
    for key, value in start.items():
        np.testing.assert_array_equal(params[key], value)


def test_good_hyperparameters_of_every_kind_are_taken(make):
    module = make(SIGMOID, "columns")
    params, x, y = _problem(module)
    for kwargs in (
        {"optimizer": "momentum", "momentum": np.float32(0.5)},
        {"optimizer": "nesterov", "momentum": 0.99},
        {"optimizer": "adam", "betas": [0, 0], "eps": 1},
        {"optimizer": "adam", "betas": np.array([0.8, 0.9]), "eps": np.float64(1e-6)},
    ):
        assert len(module.train(params, x, y, epochs=1, batch_size=3, lr=0.01, **kwargs)) == 1


def _state_of(module, params, x, y, optimizer, **kwargs) -> dict:
    state: dict = {}
    module.train(
        params,
        x,
        y,
        epochs=1,
        batch_size=8,
        lr=0.01,
        optimizer=optimizer,
        optimizer_state=state,
        **kwargs,
    )
    return state


@pytest.mark.parametrize("form", FORM_PARAMS)
def test_a_state_dict_carries_the_run_from_call_to_call(make, form):
    """Three one-epoch calls sharing optimizer_state make the run one three-epoch call
    makes (full batches: the shuffle only reorders a sum); without it, they do not."""
    module = make(SIGMOID, form)
    start, x, y = _problem(module)
    for optimizer, extra in (("adam", {}), ("nesterov", {"momentum": 0.9})):
        once = {k: v.copy() for k, v in start.items()}
        module.train(once, x, y, epochs=3, batch_size=8, lr=0.1, optimizer=optimizer, **extra)
        parts, fresh = ({k: v.copy() for k, v in start.items()} for _ in range(2))
        state: dict = {}
        for seed in range(3):
            module.train(
                parts,
                x,
                y,
                epochs=1,
                batch_size=8,
                lr=0.1,
                seed=seed,
                optimizer=optimizer,
                optimizer_state=state,
                **extra,
            )
            module.train(
                fresh, x, y, epochs=1, batch_size=8, lr=0.1, seed=seed, optimizer=optimizer, **extra
            )
        assert _worst(parts, once) < 1e-12
        assert _worst(fresh, once) > 1e-4
        arrays = [a for held in state.values() if isinstance(held, dict) for a in held.values()]
        module.train(
            parts,
            x,
            y,
            epochs=1,
            batch_size=8,
            lr=0.1,
            optimizer=optimizer,
            optimizer_state=state,
            **extra,
        )
        kept = [a for held in state.values() if isinstance(held, dict) for a in held.values()]
        assert len(kept) >= 4 and all(b is a for a, b in zip(arrays, kept, strict=True))
    assert state["optimizer"] == "nesterov" and sorted(state) == ["optimizer", "velocity"]
    adam = _state_of(module, dict(start), x, y, "adam")
    assert adam["step"] == 1 and sorted(adam) == ["m", "optimizer", "step", "v"]
    assert all(adam["m"][k].shape == v.shape for k, v in start.items())


@pytest.mark.parametrize("form", ["columns", "plain"])
def test_a_state_that_does_not_fit_is_refused_by_name(make, form):
    module = make(SIGMOID, form)
    params, x, y = _problem(module)
    cases = []
    shape = _state_of(module, dict(params), x, y, "adam")
    shape["m"]["W1"] = np.zeros((1, 1))
    cases.append(("adam", shape, r"optimizer_state\['m'\]\['W1'\]: .*shape"))
    dtype = _state_of(module, dict(params), x, y, "adam")
    dtype["v"]["b2"] = dtype["v"]["b2"].astype(np.float32)
    cases.append(("adam", dtype, r"optimizer_state\['v'\]\['b2'\]: .*float64"))
    step = _state_of(module, dict(params), x, y, "adam")
    step["step"] = -1
    cases.append(("adam", step, r"optimizer_state\['step'\]: "))
    missing = _state_of(module, dict(params), x, y, "momentum", momentum=0.5)
    del missing["velocity"]["b1"]
    cases.append(("momentum", missing, r"optimizer_state\['velocity'\]: "))
    other = _state_of(module, dict(params), x, y, "momentum", momentum=0.5)
    cases.append(("adam", other, r"optimizer_state: not the state of 'adam' \(it is 'momentum'\)"))
    for optimizer, state, message in cases:
        extra = {"momentum": 0.5} if optimizer == "momentum" else {}
        with pytest.raises(ValueError, match=message):
            module.train(
                params,
                x,
                y,
                epochs=1,
                batch_size=8,
                lr=0.1,
                optimizer=optimizer,
                optimizer_state=state,
                **extra,
            )


@pytest.mark.parametrize("form", FORM_PARAMS)
@pytest.mark.parametrize("config", ["sgd", "momentum", "nesterov", "adam"])
def test_zero_epochs_return_nothing_and_touch_nothing(make, form, config):
    module = make(SIGMOID, form)
    start, x, y = _problem(module)
    params = {k: v.copy() for k, v in start.items()}
    assert module.train(params, x, y, epochs=0, batch_size=3, lr=0.1, **CONFIGS[config][0]) == []
    for key, value in start.items():
        np.testing.assert_array_equal(params[key], value)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["columns", "rows", "plain"])
@pytest.mark.parametrize("config", ["momentum", "nesterov", "adam"])
def test_float32_parameters_keep_float32_state(make, form, config):
    module = make(SOFTMAX.replace(dtype="float32"), form)
    params, x, y = _problem(module)
    assert all(value.dtype == np.float32 for value in params.values())
    state: dict = {}
    history = module.train(
        params, x, y, epochs=3, batch_size=3, lr=0.05, optimizer_state=state, **CONFIGS[config][0]
    )
    assert np.all(np.isfinite(history)) and history[-1] < history[0]
    assert all(value.dtype == np.float32 for value in params.values())
    slots = [state[slot] for slot in ("velocity", "m", "v") if slot in state]
    assert slots and all(a.dtype == np.float32 for arrays in slots for a in arrays.values())
    with pytest.raises(ValueError, match=r"^eps: 1e-50 is 0 in float32 \(W1\); give a larger eps"):
        module.train(params, x, y, epochs=1, batch_size=3, lr=0.05, optimizer="adam", eps=1e-50)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["columns", "plain"])
@pytest.mark.parametrize("config", ["sgd", "momentum", "nesterov", "adam"])
def test_a_learning_rate_that_overflows_leaves_inf_or_nan_and_train_goes_on(make, form, config):
    """As the docstring says: NumPy's overflow warning, non-finite parameters, and an
    infinite or NaN cost for the epochs after, with no exception."""
    module = make(Spec.from_sizes([3, 4, 2], ["tanh", "linear"], "quadratic"), form)
    params, x, y = _problem(module)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = module.train(params, x, y, epochs=4, batch_size=8, lr=1e300, **CONFIGS[config][0])
    assert any("overflow" in str(warning.message) for warning in caught)
    assert len(history) == 4 and not np.isfinite(history[-1])
    assert not all(np.all(np.isfinite(value)) for value in params.values())


@pytest.mark.slow
@pytest.mark.parametrize("form", ["columns", "plain"])
def test_two_threads_training_at_once_get_what_each_gets_alone(make, form):
    module = make(SOFTMAX, form)
    start, x, y = _problem(module, n=64)
    runs = [("adam", {"optimizer": "adam"}, 0), ("nesterov", CONFIGS["nesterov"][0], 1)]
    alone = {}
    for name, kwargs, seed in runs:
        alone[name] = {k: v.copy() for k, v in start.items()}
        module.train(alone[name], x, y, epochs=20, batch_size=5, lr=0.01, seed=seed, **kwargs)
    together = {name: {k: v.copy() for k, v in start.items()} for name, _, _ in runs}
    threads = [
        threading.Thread(
            target=module.train,
            args=(together[name], x, y),
            kwargs={"epochs": 20, "batch_size": 5, "lr": 0.01, "seed": seed, **kwargs},
        )
        for name, kwargs, seed in runs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in alone:
        for key, value in alone[name].items():
            np.testing.assert_array_equal(together[name][key], value)


@pytest.mark.parametrize("form", FORM_PARAMS)
def test_sgd_is_sgd_step_batch_after_batch(make, form):
    """optimizer="sgd" (the default) steps with sgd_step itself, bit for bit."""
    module = make(SIGMOID, form)
    start, x, y = _problem(module)
    params = {k: v.copy() for k, v in start.items()}
    history = module.train(params, x, y, epochs=2, batch_size=3, lr=0.2, seed=5)
    by_hand = {k: v.copy() for k, v in start.items()}
    rows = module.LAYOUT == "rows"
    for idx in _batches(8, 3, 2, 5):
        module.sgd_step(by_hand, x[idx] if rows else x[:, idx], y[idx] if rows else y[:, idx], 0.2)
    for key, value in by_hand.items():
        np.testing.assert_array_equal(params[key], value)
    assert len(history) == 2


def test_the_readme_shows_trains_signature_and_optimizer_names(make):
    """The README's row for train has the module's arguments and defaults, and its
    optimizer table the names of OPTIMIZERS."""
    module = make(SIGMOID, "columns")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `train(params"))
    shown = ast.parse(f"def train{row[len('| `train') : row.index(' -> list')]}: pass").body[0]
    arguments = shown.args.args + shown.args.kwonlyargs
    defaults = [None] * 3 + [ast.literal_eval(d) if d else None for d in shown.args.kw_defaults]
    import inspect

    actual = inspect.signature(module.train).parameters.values()
    assert [a.arg for a in arguments] == [p.name for p in actual]
    for arg, default, parameter in zip(arguments, defaults, actual, strict=True):
        if parameter.default is not inspect.Parameter.empty:
            assert default == parameter.default, arg.arg
    assert module.OPTIMIZERS == ("sgd", "momentum", "nesterov", "adam")
    assert f"`{module.OPTIMIZERS}`".replace("'", '"') in readme
    for name in module.OPTIMIZERS:
        assert f'| `"{name}"` |' in readme


@pytest.mark.slow
@pytest.mark.parametrize("config", ["momentum", "nesterov", "adam"])
def test_float32_steps_match_torch_optim_in_float32(torch, make, config):
    """float32 parameters: state and arithmetic in float32, as PyTorch's with float32
    tensors (agreement to float32 rounding, accumulated over 5 steps)."""
    kwargs, name, torch_kwargs = CONFIGS[config]
    module = make(SOFTMAX.replace(dtype="float32"), "columns")
    start, x, y = _problem(module)
    x, y = x.astype(np.float32), y.astype(np.float32)
    params = {k: v.copy() for k, v in start.items()}
    lr = LR[name]
    module.train(params, x, y, epochs=5, batch_size=8, lr=lr, **kwargs)
    tensors = {k: torch.tensor(v.copy()) for k, v in start.items()}
    optimizer = getattr(torch.optim, name)(list(tensors.values()), lr=lr, **torch_kwargs)
    for _ in range(5):
        _, grads = module.loss_and_grad({k: t.numpy().copy() for k, t in tensors.items()}, x, y)
        for key, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[key])
        optimizer.step()
    expected = {k: t.numpy() for k, t in tensors.items()}
    assert all(value.dtype == np.float32 for value in params.values())
    assert _worst(params, expected) < 1e-5
    assert _worst(params, start) > 1e-3


#: The equation comment over each update statement, in every form.
COMMENTS = (
    "# momentum: v <- mu v + g",
    "# momentum: theta <- theta - lr v",
    "# Nesterov: theta <- theta - lr (g + mu v)",
    "# Adam: bias corrections c1 = 1 - beta1^t, c2 = 1 - beta2^t",
    "# Adam: m <- beta1 m + (1 - beta1) g",
    "# Adam: v <- beta2 v + (1 - beta2) g^2",
    "# Adam: theta <- theta - (lr / c1) m / (sqrt(v) / sqrt(c2) + eps)",
)


@pytest.mark.parametrize("form", FORM_PARAMS)
def test_every_update_statement_has_its_equation_above_it(make, form):
    import inspect

    module = make(SIGMOID, form)
    for step in (module._momentum_step, module._adam_step):
        lines = [line.strip() for line in inspect.getsource(step).splitlines()]
        for i, line in enumerate(lines):
            if line.startswith("# ") and line[2:].split(":")[0] in ("momentum", "Nesterov", "Adam"):
                assert line in COMMENTS, line
                assert not lines[i + 1].startswith("#")  # a statement follows
    source = inspect.getsource(module)
    for comment in COMMENTS:
        assert source.count(comment) == 1, comment
