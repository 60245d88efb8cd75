"""Differential testing on random architectures: finite differences and an independent oracle.

Hypothesis draws networks of depth 1-4 and widths 1-6 with every activation (the named
ones and custom expressions such as ``"x*sigmoid(x)"``, ``"max(x, 0.1*x)"``,
``"softplus(x) - log(2)"``), every cost valid for the output layer, both layouts, biases
on or off per layer, residual connections (``skip_from``: about half the layers repeat an
earlier layer's size, and about half of those that can take a skip do), L2 and L1
weight penalties (each 0 about a third of the time), batch norm on about half the hidden
layers when the batch has 2 or 3 examples (gamma and beta drawn away from 1 and 0),
dropout (p from 0.05 to 0.7) on about half the other hidden layers, with a fixed ``seed``
given to ``loss`` and ``loss_and_grad`` and the module's ``dropout_masks`` given to the
oracle, and batches of 1-3 examples. For each network chainrule generates
a module (through the lint and the atomic write) and imports it; then

* central finite differences of the module's own ``loss`` must match ``loss_and_grad``
  on every parameter: |g - n| <= 1e-8 * max(1, |loss|) + 1e-6 * |n| (DESIGN.md), with
  data whose weighted inputs come within 1e-3 of a kink (ReLU, leaky ReLU, abs, max,
  min), or, with l1, parameters with a weight within 1e-3 of 0 (|w|'s kink), resampled,
  not ignored;
* the independent oracle of :mod:`battery_oracle` must agree on the loss and every
  gradient entry to 1e-10 relative, |g - r| <= 1e-10 (|r| + 0.01 max(1, |loss|)). For
  analytic custom expressions the oracle's derivative comes from the complex step on a
  hand-written NumPy copy of the function; for non-analytic ones (max, min, abs) from a
  hand-written derivative. No case skips the oracle.

CI runs 50 derandomized examples; ``python -m tests.soak --examples 500`` runs more.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import battery_oracle as oracle  # noqa: E402
from chainrule.codegen.emit import write_module  # noqa: E402
from chainrule.codegen.render import generate_module  # noqa: E402
from chainrule.derive.errors import SpecError  # noqa: E402
from chainrule.derive.spec import Layer, Spec  # noqa: E402

ABS_TOL = 1e-8
REL_TOL = 1e-6
ORACLE_RTOL = 1e-10
KINK_MARGIN = 1e-3
ELEMENTWISE = tuple(oracle.ELEMENTWISE)
COSTS = ("quadratic", "squared-error", "binary-cross-entropy", "cross-entropy", "huber")
#: The costs defined on all reals, under which a skip may enter an elementwise output.
REAL_COSTS = ("quadratic", "squared-error", "huber")
_counter = itertools.count()


@dataclass(frozen=True)
class Case:
    """One random network and the seed of its data and parameters."""

    spec: Spec
    batch: int
    seed: int


@dataclass(frozen=True)
class Outcome:
    """What one case measured: worst FD ratio (<= 1 passes), worst oracle error, resamples."""

    fd_ratio: float
    oracle_error: float
    resamples: int
    parameters: int


def costs_for(output_activation: str, width: int) -> list[str]:
    """The costs chainrule accepts for this output layer."""
    costs = ["quadratic", "squared-error", "huber"]
    if output_activation in ("sigmoid", "softmax"):
        costs.append("binary-cross-entropy")
    if output_activation == "softmax" and width >= 2:
        costs.append("cross-entropy")
    return costs


def _sizes(draw: st.DrawFn, depth: int) -> list[int]:
    """n_0..n_L. A third of the networks are a residual stack: every layer after the
    input has one width. In the others each layer's size is either fresh or a repeat of
    an earlier one (about half the time). So residual connections between equal sizes
    are often possible, and some layers feed two skips."""
    sizes = [draw(st.integers(1, 6))]
    if draw(st.sampled_from((False, False, True))):
        return sizes + [draw(st.integers(1, 6))] * depth
    for _ in range(depth):
        if draw(st.booleans()):
            sizes.append(sizes[draw(st.integers(0, len(sizes) - 1))])
        else:
            sizes.append(draw(st.integers(1, 6)))
    return sizes


def _skips(draw: st.DrawFn, sizes: list[int], output: str, cost: str) -> list[int | None]:
    """One ``skip_from`` per layer: None, or any earlier layer 0..l-1 of the same size
    (about half the time when there is one). No skip enters a softmax output or an output
    whose cost is computed on the logits (binary-cross-entropy, cross-entropy)."""
    depth = len(sizes) - 1
    skips: list[int | None] = []
    for layer in range(1, depth + 1):
        sources = [k for k in range(layer) if sizes[k] == sizes[layer]]
        if layer == depth and (output == "softmax" or cost not in REAL_COSTS):
            sources = []
        skips.append(draw(st.sampled_from(sources)) if sources and draw(st.booleans()) else None)
    return skips


def _penalty(draw: st.DrawFn) -> float:
    """A penalty coefficient: 0 (no term) about a third of the time, else from 1e-4 to 1."""
    if not draw(st.sampled_from((False, True, True))):
        return 0.0
    return draw(st.floats(1e-4, 1.0))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A random valid network, batch size and seed.

    The cost is drawn first (uniformly), then an output layer it accepts, so that the
    costs that need a sigmoid or softmax output are as common as the others. Then the
    residual connections (:func:`_skips`) and the L2 and L1 coefficients.
    """
    depth = draw(st.integers(min_value=1, max_value=4))
    sizes = _sizes(draw, depth)
    cost = draw(st.sampled_from(COSTS))
    if cost == "cross-entropy":
        output = "softmax"
    elif cost == "binary-cross-entropy":
        output = draw(st.sampled_from(["sigmoid", "softmax"]))
    else:
        output = draw(st.sampled_from((*ELEMENTWISE, "softmax")))
    if output == "softmax":
        sizes[-1] = max(sizes[-1], 2)
    hidden = [draw(st.sampled_from(ELEMENTWISE)) for _ in range(depth - 1)]
    biases = [draw(st.booleans()) for _ in range(depth)]
    skips = _skips(draw, sizes, output, cost)
    batch = draw(st.integers(min_value=1, max_value=3))
    # Batch norm on hidden layers only, with at least two examples (a batch of one has
    # no variance); such a layer has no bias.
    norms = [batch >= 2 and draw(st.booleans()) for _ in range(depth - 1)] + [False]
    # Dropout on hidden layers without batch norm, p from 0.05 to 0.7, about half the time.
    drops = [
        0.0 if norm or not draw(st.booleans()) else draw(st.floats(0.05, 0.7))
        for norm in norms[:-1]
    ]
    layers = tuple(
        Layer(size, act, bias and not norm, skip, norm, dropout=drop)
        for size, act, bias, skip, norm, drop in zip(
            sizes[1:], [*hidden, output], biases, skips, norms, [*drops, 0.0], strict=True
        )
    )
    spec = Spec(
        input_size=sizes[0],
        layers=layers,
        cost=cost,
        layout=draw(st.sampled_from(["columns", "rows"])),
        name="battery",
        l2=_penalty(draw),
        l1=_penalty(draw),
    )
    return Case(spec, batch, draw(st.integers(0, 2**16)))


def build_module(
    spec: Spec, folder: Path, generate: Callable[[Spec], str] = generate_module
) -> ModuleType:
    """Generate (by ``generate``: another form's generator), lint, write (atomically) and
    import the module of ``spec``."""
    path = write_module(generate(spec), folder / f"battery_{next(_counter)}.py")
    loader = importlib.util.spec_from_file_location(f"_battery_{path.stem}", path)
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def _data(spec: Spec, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n_in, n_out = spec.sizes[0], spec.sizes[-1]
    x = rng.standard_normal((n_in, batch)) * 1.5
    if spec.cost == "cross-entropy":
        y = rng.random((n_out, batch)) + 0.05
        y /= y.sum(axis=0, keepdims=True)  # the stated assumption: columns sum to one
    elif spec.cost == "binary-cross-entropy":
        y = rng.random((n_out, batch))
    else:
        y = rng.standard_normal((n_out, batch))
    if spec.layout == "rows":
        return np.ascontiguousarray(x.T), np.ascontiguousarray(y.T)
    return x, y


#: Factor on the initial weights: larger weights push units into their nonlinear ranges
#: (and past kinks, and softmax into saturation), where mistakes show.
WEIGHT_SCALE = 1.7


def run_case(
    case: Case, folder: Path, build: Callable[[Spec, Path], ModuleType] | None = None
) -> Outcome:
    """Generate the case's module (by ``build``, default :func:`build_module`); check it by
    finite differences and against the oracle."""
    spec = case.spec
    data = spec.to_dict()
    module = (build or build_module)(spec, folder)
    rng = np.random.default_rng(case.seed)
    masks = None
    for resamples in range(200):
        params = {
            k: np.array(v, dtype=np.float64)
            for k, v in module.init_params(case.seed + resamples).items()
        }
        params = {k: v * WEIGHT_SCALE for k, v in params.items()}
        for key in params:  # batch norm's gamma and beta moved off 1 and 0
            if key.startswith("gamma"):
                params[key] = 1.0 + 0.5 * rng.standard_normal(params[key].shape)
            elif key.startswith("beta"):
                params[key] = 0.5 * rng.standard_normal(params[key].shape)
        x, y = _data(spec, case.batch, rng)
        if spec.dropout_layers:  # the masks loss and loss_and_grad draw with this seed
            masks = module.dropout_masks(case.batch, case.seed + resamples)
        if not oracle.near_kink(data, params, x, KINK_MARGIN, masks):
            break
    else:
        raise AssertionError(f"every sample lies near a kink: {data}")

    seed = case.seed + resamples  # fixes the dropout masks (ignored without dropout)
    loss, grads = module.loss_and_grad(params, x, y, seed=seed)
    assert sorted(grads) == sorted(params)
    numeric = oracle.central_differences(lambda p: module.loss(p, x, y, seed=seed), params)
    ref_loss, ref_grads = oracle.loss_and_grad(data, params, x, y, masks)
    return measure(loss, grads, numeric, ref_loss, ref_grads, resamples, spec.parameter_count)


def worst(ratios: np.ndarray | float) -> float:
    """The largest ratio, or inf when any ratio is NaN or inf.

    Python's ``max(worst, nan)`` keeps ``worst`` and NumPy's ``max`` of a NaN array is
    NaN, which a later ``<=`` would fail only by luck: a NaN is made an explicit inf here.
    """
    ratios = np.asarray(ratios, dtype=np.float64)
    if ratios.size == 0:
        return 0.0
    if not np.all(np.isfinite(ratios)):
        return float("inf")
    return float(ratios.max())


def measure(
    loss: float,
    grads: dict[str, np.ndarray],
    numeric: dict[str, np.ndarray],
    ref_loss: float,
    ref_grads: dict[str, np.ndarray],
    resamples: int = 0,
    parameters: int = 0,
) -> Outcome:
    """Worst FD ratio and worst oracle error of one module's loss and gradient.

    Any NaN or inf in the loss, a gradient, the numeric estimate or the reference makes
    the measure inf, so that it fails ``check_outcome``.
    """
    values = [loss, ref_loss, *grads.values(), *numeric.values(), *ref_grads.values()]
    if not all(np.all(np.isfinite(np.asarray(v, dtype=np.float64))) for v in values):
        return Outcome(float("inf"), float("inf"), resamples, parameters)
    fd_ratio = 0.0
    for key, n in numeric.items():
        g = np.asarray(grads[key], dtype=np.float64)
        assert g.shape == n.shape, (key, g.shape, n.shape)
        ratio = np.abs(g - n) / (ABS_TOL * max(1.0, abs(loss)) + REL_TOL * np.abs(n))
        fd_ratio = max(fd_ratio, worst(ratio))
    # Relative error, with the floor the modules' own check_gradient uses:
    # |g - r| / (|r| + 0.01 * max(1, |loss|)). Without a floor, an entry that is pure
    # rounding (tanh'(17) = 1 - a^2 ~ 1e-15) would count as a 100% disagreement.
    floor = 0.01 * max(1.0, abs(ref_loss))
    oracle_error = worst(abs(loss - ref_loss) / max(1.0, abs(ref_loss)))
    for key, ref in ref_grads.items():
        err = np.abs(np.asarray(grads[key]) - ref) / (np.abs(ref) + floor)
        oracle_error = max(oracle_error, worst(err))
    return Outcome(fd_ratio, oracle_error, resamples, parameters)


def check_outcome(case: Case, outcome: Outcome) -> None:
    """Fail with the network's description when either check does not hold."""
    where = f"{case.spec.to_dict()} batch={case.batch} seed={case.seed}"
    # Written as `<=` with a finiteness test: a NaN or inf ratio fails.
    fd_ok = np.isfinite(outcome.fd_ratio) and outcome.fd_ratio <= 1.0
    assert fd_ok, f"finite differences: ratio {outcome.fd_ratio:.3g} for {where}"
    oracle_ok = np.isfinite(outcome.oracle_error) and outcome.oracle_error <= ORACLE_RTOL
    assert oracle_ok, f"oracle: relative error {outcome.oracle_error:.3g} for {where}"


BATTERY = settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.slow
@BATTERY
@given(case=cases())
def test_random_architectures(case: Case, tmp_path_factory: Any) -> None:
    folder = tmp_path_factory.mktemp("battery")
    check_outcome(case, run_case(case, folder))


def test_every_activation_and_cost_is_in_the_battery() -> None:
    named = {"sigmoid", "tanh", "relu", "leaky-relu", "softplus", "linear"}
    named |= {"elu", "selu", "gelu", "mish"}
    assert named <= set(ELEMENTWISE)
    assert {"x*sigmoid(x)", "max(x, 0.1*x)", "softplus(x) - log(2)"} <= set(ELEMENTWISE)
    all_costs = set()
    for act in (*ELEMENTWISE, "softmax"):
        all_costs.update(costs_for(act, 3))
    assert all_costs == {
        "quadratic",
        "squared-error",
        "binary-cross-entropy",
        "cross-entropy",
        "huber",
    }


@pytest.mark.slow
def test_the_strategy_draws_skips_and_penalties() -> None:
    """In 200 derandomized cases of the strategy, residual connections, batch norm, dropout,
    l2 and l1 (zero and not) occur in a good share; skips come from the input, enter the output,
    and some hidden layer feeds two."""
    seen: list[Spec] = []

    @settings(BATTERY, max_examples=200)
    @given(case=cases())
    def collect(case: Case) -> None:
        seen.append(case.spec)

    collect()
    with_skip = [s for s in seen if s.skips]
    assert len(with_skip) >= len(seen) // 4
    assert any(0 in s.skips.values() for s in seen)
    assert any(s.depth in s.skips for s in seen)
    assert any(sorted(s.skips.values()).count(k) >= 2 for s in seen for k in range(1, s.depth))
    assert len([s for s in seen if s.batch_norm_layers]) >= len(seen) // 10
    assert any(s.batch_norm_layers and s.skips for s in seen)
    assert len([s for s in seen if s.dropout_layers]) >= len(seen) // 10
    assert any(s.dropout_layers and s.skips for s in seen)
    for key in ("l2", "l1"):
        penalized = sum(bool(getattr(s, key)) for s in seen)
        assert len(seen) // 5 <= penalized <= len(seen) - len(seen) // 10, key


def test_real_costs_are_those_a_skip_may_enter_an_output_under() -> None:
    """The strategy's REAL_COSTS agree with the spec's rule for a skip into the output."""
    for cost in COSTS:
        output = "sigmoid" if cost == "binary-cross-entropy" else "tanh"
        layers = (Layer(2, "tanh"), Layer(2, output, skip_from=1))
        try:
            Spec(input_size=2, layers=layers, cost=cost, name="battery")
        except SpecError:
            assert cost not in REAL_COSTS, cost
        else:
            assert cost in REAL_COSTS, cost


def test_the_oracle_catches_a_wrong_gradient(tmp_path: Path) -> None:
    """The harness itself: a 0.1% error in one gradient entry fails both checks."""
    spec = Spec.from_sizes([3, 4, 2], ["tanh", "softmax"], "cross-entropy", name="battery")
    case = Case(spec, 3, 7)
    module = build_module(spec, tmp_path)
    real = module.loss_and_grad

    def off_by_a_little(params: dict, x: np.ndarray, y: np.ndarray, seed: Any = None) -> tuple:
        loss, grads = real(params, x, y, seed=seed)
        grads = dict(grads)
        grads["W1"] = grads["W1"].copy()
        grads["W1"][0, 0] *= 1.001
        return loss, grads

    module.loss_and_grad = off_by_a_little
    original = build_module
    try:
        globals()["build_module"] = lambda s, f: module
        outcome = run_case(case, tmp_path)
    finally:
        globals()["build_module"] = original
    assert outcome.fd_ratio > 1.0
    assert outcome.oracle_error > ORACLE_RTOL


def test_the_oracle_agrees_with_the_complex_step_on_named_activations() -> None:
    z = np.linspace(-4, 4, 41) + 0.013
    for name in ("sigmoid", "tanh", "softplus", "linear"):
        act = oracle.NAMED[name]
        step = np.imag(act.f(z + 1e-30j)) / 1e-30 if name != "linear" else np.ones_like(z)
        np.testing.assert_allclose(act.df(z), step, rtol=1e-13, atol=1e-15)


def test_kinks_are_seen_for_resampling() -> None:
    spec = Spec.from_sizes(
        [2, 3, 2], ["relu", "min(x, 1) + 0.1*x"], "quadratic", bias=False, name="battery"
    )
    data = spec.to_dict()
    params = {"W1": np.ones((3, 2)), "W2": np.full((2, 3), 1 / 3)}
    assert oracle.near_kink(data, params, np.zeros((2, 1)), KINK_MARGIN)  # relu at z = 0
    # z^1 = 1.5 (no ReLU kink), z^2 = 1.5 exactly: the kink of min(x, 1) is at 1, not here.
    assert not oracle.near_kink(data, params, np.full((2, 1), 0.75), KINK_MARGIN)
    # z^2 = 1.0002: within 1e-3 of the kink at 1.
    assert oracle.near_kink(data, params, np.full((2, 1), 0.5001), KINK_MARGIN)


@pytest.mark.slow
def test_a_batch_norm_unit_of_small_spread_is_resampled(tmp_path: Path) -> None:
    """CI found a network whose batch-normalized unit had sigma = 0.017 over two examples:
    central differences were 0.5% off there (ratio 10.3), the module and the oracle
    agreed to 1e-12. Such a point is now resampled, and the case passes."""
    layers = (
        Layer(4, "x*tanh(softplus(x))", False, 0, True),
        Layer(4, "tanh(x)**2 + x/4", False, 1, True),
        Layer(4, "max(x, 0.1*x)", False, 2, dropout=0.6897086410033315),
        Layer(2, "softmax"),
    )
    spec = Spec(input_size=4, layers=layers, cost="cross-entropy", name="battery", l2=1.0)
    case = Case(spec, batch=2, seed=214)
    outcome = run_case(case, tmp_path)
    assert outcome.resamples >= 1
    check_outcome(case, outcome)
    # The spread test itself: two equal examples leave no spread at all.
    data = Spec(
        input_size=2,
        layers=(Layer(2, "tanh", False, batch_norm=True), Layer(1, "linear")),
        cost="quadratic",
        name="battery",
    ).to_dict()
    params = {
        "W1": np.eye(2),
        "gamma1": np.ones((2, 1)),
        "beta1": np.zeros((2, 1)),
        "W2": np.ones((1, 2)),
        "b2": np.zeros((1, 1)),
    }
    assert oracle.near_kink(data, params, np.array([[1.0, 1.05], [-1.0, 1.0]]), KINK_MARGIN)
    assert not oracle.near_kink(data, params, np.array([[1.0, 1.5], [-1.0, 1.0]]), KINK_MARGIN)


def test_a_saturated_sigmoid_output_found_by_the_soak(tmp_path: Path) -> None:
    """Soak seed 20260 found the sigmoid output saturating (a = 1 - 1e-7): the module's
    logits form was right; the oracle had to stop computing 1 - a."""
    spec = Spec(
        input_size=4,
        layers=(Layer(4, "softplus"), Layer(1, "softplus", False), Layer(2, "sigmoid")),
        cost="binary-cross-entropy",
        layout="rows",
        name="battery",
    )
    case = Case(spec, 2, 55167)
    check_outcome(case, run_case(case, tmp_path))


def test_saturated_tanh_outputs_found_by_the_soak(tmp_path: Path) -> None:
    """Soak seed 7: tanh outputs at z = 17 leave gradient entries that are pure rounding
    (1 - a^2 ~ 1e-15); module and oracle agree to 1e-15 absolute, which the relative
    measure must not call a disagreement."""
    spec = Spec(
        input_size=1,
        layers=(
            Layer(1, "max(x, 0.1*x)", False),
            Layer(1, "min(x, 1) + 0.1*x"),
            Layer(6, "min(x, 1) + 0.1*x"),
            Layer(6, "tanh"),
        ),
        cost="quadratic",
        name="battery",
    )
    case = Case(spec, 1, 3)
    outcome = run_case(case, tmp_path)
    check_outcome(case, outcome)
    assert outcome.oracle_error < 1e-13
