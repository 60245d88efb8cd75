"""The plain form (``--form plain``): one readable NumPy statement per equation.

The plain module prints the same mini-batch program as the vectorized one, without work
buffers. It must compute the same thing: its loss and gradient equal the vectorized
module's (to rounding) and the independent oracles', pass central finite differences
in float64 and its own ``check_gradient``, on every preset, the fixed architectures of
``test_generated_modules`` and random architectures of the battery.

The checks the vectorized modules pass are run again here on plain modules: the tests
imported from ``test_generated_modules``, ``test_stability`` and ``test_module_safety``
take their module from the ``build`` fixture, which this file overrides to give the
plain form.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import test_random_architectures as battery
from chainrule.codegen.emit import lint_module
from chainrule.codegen.plain import build_plain_program, generate_plain
from chainrule.codegen.render import generate_module
from chainrule.derive.layers import derive_network
from chainrule.derive.spec import Spec, preset, preset_names
from conftest import GENERATED, REPO
from hypothesis import given, settings
from layout_specs import LAYOUT_SPECS, WRAPPED, covers_every_feature

# The vectorized modules' checks (the test_* names), run on the plain modules: see ``build``.
from test_generated_modules import (  # noqa: F401
    ALL_SPECS,
    ARCHITECTURES,
    _problem,
    test_agrees_with_the_oracle,
    test_chainrule_checker_passes_every_module,
    test_finite_differences_catch_a_wrong_gradient,
    test_finite_differences_on_every_entry,
    test_float32_module_keeps_float32,
    test_module_constants_and_init_params,
    test_relu_gradient_is_zero_exactly_at_the_kink,
    test_sgd_step_and_own_check_gradient,
    test_softmax_cross_entropy_module_states_the_target_assumption,
    test_train_lowers_the_cost_of_a_fixed_problem,
)
from test_module_safety import (  # noqa: F401
    test_check_gradient_fails_on_nan_and_inf,
    test_entry_points_refuse_wrong_shapes,
)
from test_stability import (  # noqa: F401
    test_other_activations_at_800,
    test_overflow_is_still_reported,
    test_saturated_sigmoid_layers_give_exact_gradients,
    test_sgd_step_and_train_do_not_report_underflow,
    test_sigmoid_binary_cross_entropy_at_extreme_inputs,
    test_softmax_binary_cross_entropy_at_extreme_logits,
    test_softmax_binary_cross_entropy_with_tied_largest_logits,
    test_softmax_cross_entropy_at_extreme_logits,
)

from chainrule.cli import main


def _key(spec: Spec) -> tuple:
    return (repr(spec.to_dict()), spec.source)


@pytest.fixture(scope="session")
def build(load_source: Callable[[str], ModuleType]) -> Callable[[Spec], ModuleType]:
    """The plain module of a spec (once per session), linted as the CLI does, imported."""
    cache: dict[tuple, ModuleType] = {}

    def make(spec: Spec) -> ModuleType:
        if _key(spec) not in cache:
            source = generate_plain(spec)
            lint_module(source)
            module = load_source(source)
            assert module.FORM == "plain"
            cache[_key(spec)] = module
        return cache[_key(spec)]

    return make


@pytest.fixture(scope="session")
def build_fast(load_source: Callable[[str], ModuleType]) -> Callable[[Spec], ModuleType]:
    """The vectorized module of a spec (once per session)."""
    cache: dict[tuple, ModuleType] = {}

    def make(spec: Spec) -> ModuleType:
        if _key(spec) not in cache:
            cache[_key(spec)] = load_source(generate_module(spec))
        return cache[_key(spec)]

    return make


def _assert_same(plain: tuple, fast: tuple) -> None:
    """Loss and every gradient entry equal to rounding: the two forms only order the
    same floating-point operations differently (the vectorized one divides delta^L by m).

    Rounding is bounded by the largest gradient entry of the network, not of each key: a
    batch-normalized layer's backward pass subtracts terms the size of the gradients
    above it, and what is left for the layers below can be 1e-6 of them (W1's entries of
    4e-6 differed by 2e-18, 6e-12 relative, when the largest entry was 4.7).
    """
    (loss, grads), (fast_loss, fast_grads) = plain, fast
    assert loss == pytest.approx(fast_loss, rel=1e-13, abs=1e-300)
    assert sorted(grads) == sorted(fast_grads)
    scale = max(float(np.max(np.abs(g), initial=0.0)) for g in fast_grads.values())
    for key, want in fast_grads.items():
        assert grads[key].shape == want.shape and grads[key].dtype == want.dtype, key
        np.testing.assert_allclose(grads[key], want, rtol=1e-12, atol=1e-14 * scale, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(ALL_SPECS))
def test_plain_and_vectorized_modules_agree(build, build_fast, key):
    spec = ALL_SPECS[key]
    plain, fast = build(spec), build_fast(spec)
    for seed in (3, 4):
        _, params, x, y = _problem(spec, seed, m=4)
        _assert_same(plain.loss_and_grad(params, x, y), fast.loss_and_grad(params, x, y))
        assert plain.loss(params, x, y) == pytest.approx(fast.loss(params, x, y), rel=1e-13)
        np.testing.assert_allclose(
            plain.forward(params, x), fast.forward(params, x), rtol=1e-13, atol=1e-300
        )


def test_out_is_filled_and_returned(build):
    spec = ARCHITECTURES["tanh-softmax-ce-rows"]
    module = build(spec)
    _, params, x, y = _problem(spec, 5)
    cost, grads = module.loss_and_grad(params, x, y)
    out = module.new_gradient()
    cost_out, grads_out = module.loss_and_grad(params, x, y, out=out)
    assert cost_out == cost
    for key in params:
        assert grads_out[key] is out[key]
        np.testing.assert_array_equal(out[key], grads[key])


# -------------------------------------------------------------------------- random networks
PLAIN_BATTERY = settings(battery.BATTERY, max_examples=20)


def _build_plain(spec: Spec, folder: Path) -> ModuleType:
    return battery.build_module(spec, folder, generate_plain)


@pytest.mark.slow
@PLAIN_BATTERY
@given(case=battery.cases())
def test_random_architectures_in_plain_form(case, tmp_path_factory):
    """Finite differences and the battery's oracle, as for the vectorized modules; then the
    vectorized module of the same network gives the same loss and gradient."""
    folder = tmp_path_factory.mktemp("plain")
    battery.check_outcome(case, battery.run_case(case, folder, _build_plain))
    plain, fast = _build_plain(case.spec, folder), battery.build_module(case.spec, folder)
    rng = np.random.default_rng(case.seed)
    params = {k: v * battery.WEIGHT_SCALE for k, v in plain.init_params(case.seed).items()}
    x, y = battery._data(case.spec, case.batch, rng)
    same = case.seed  # one seed, so that both forms draw the same dropout masks
    _assert_same(
        plain.loss_and_grad(params, x, y, seed=same), fast.loss_and_grad(params, x, y, seed=same)
    )


def test_the_battery_fails_a_wrong_plain_module(tmp_path):
    """The harness above catches a plain module whose delta^L is off by 0.1%."""
    spec = Spec.from_sizes([3, 4, 2], ["tanh", "sigmoid"], "quadratic", name="battery")
    source = generate_plain(spec)
    assert source.count("    delta2 = a2 * (1 - a2) * (a2 - y)\n") == 1
    wrong = source.replace(
        "delta2 = a2 * (1 - a2) * (a2 - y)", "delta2 = 1.001 * a2 * (1 - a2) * (a2 - y)"
    )
    outcome = battery.run_case(
        battery.Case(spec, 3, 7), tmp_path, lambda s, f: battery.build_module(s, f, lambda _: wrong)
    )
    assert outcome.fd_ratio > 1.0 and outcome.oracle_error > battery.ORACLE_RTOL


# ------------------------------------------------------------------------------ the source
def _body(source: str, function: str) -> str:
    """The source of one top-level function of a module."""
    start = source.index(f"\ndef {function}(")
    end = source.find("\n\n\n", start)
    return source[start:end]


def test_nielsen_reads_like_the_book():
    source = generate_plain(preset("nielsen"))
    forward, grad = _body(source, "_forward"), _body(source, "loss_and_grad")
    for line in ("z1 = W1 @ a0 + b1", "a1 = _sigmoid(z1)", "z2 = W2 @ a1 + b2"):
        assert f"\n    {line}\n" in forward, line
    for line in (
        "delta2 = a2 * (1 - a2) * (a2 - y)",
        "dC_dW2 = delta2 @ a1.T / m",
        "dC_db2 = np.sum(delta2, axis=1, keepdims=True) / m",
        "sp1 = a1 * (1 - a1)",
        "delta1 = (W2.T @ delta2) * sp1",
        "dC_dW1 = delta1 @ a0.T / m",
    ):
        assert f"\n    {line}\n" in grad, line
    # Each statement sits under its equation, the same comment the batch program gives it.
    assert "    # BP2: delta1 = (W2^T delta2) * sp1\n    delta1 = (W2.T @ delta2) * sp1\n" in grad
    assert "    # BP4: dC/dW2 = (1/m) delta2 a1^T\n    dC_dW2 = delta2 @ a1.T / m\n" in grad


def test_rows_layout_multiplies_in_the_rows_order():
    source = generate_plain(preset("cheatsheet-relu"))
    assert preset("cheatsheet-relu").layout == "rows"
    grad = _body(source, "loss_and_grad")
    assert "\n    z1 = a0 @ W1\n" in _body(source, "_forward")
    for line in ("dC_dW2 = a1.T @ delta2 / m", "sp1 = z1 > 0", "delta1 = (delta2 @ W2.T) * sp1"):
        assert f"\n    {line}\n" in grad, line
    rows = Spec.from_sizes([3, 4, 2], ["tanh", "sigmoid"], "quadratic", layout="rows")
    assert "\n    dC_db1 = np.sum(delta1, axis=0, keepdims=True) / m\n" in generate_plain(rows)


def _commented_assignments(body: str) -> list[tuple[str, str]]:
    """(comment, assignment) for each assignment of a function body under a comment block;
    a comment wrapped over several lines is joined again."""
    pairs, comment = [], []
    for line in body.splitlines():
        if line.startswith("    # "):
            comment.append(line[len("    # ") :])
        elif comment and re.match(r"    \w+ = ", line):
            pairs.append((" ".join(comment), line.strip()))
            comment = []
        else:
            comment = []
    return pairs


@pytest.mark.parametrize("name", preset_names())
def test_one_statement_per_equation_and_no_work_buffers(name):
    spec = preset(name)
    source = generate_plain(spec)
    program = build_plain_program(derive_network(spec))
    # Every statement of the batch program is one assignment, under its own equation;
    # no temporaries, no in-place updates.
    for part, function in ((program.forward, "_forward"), (program.backward, "loss_and_grad")):
        pairs = _commented_assignments(_body(source, function))
        if function == "loss_and_grad":
            pairs = pairs[1:]  # the cost comes first
        want = [(f"{s.label}: {s.equation}", f"{s.target} = {s.code}") for s in part]
        assert pairs == want
        assert all(s.source is not None and not s.updates and s.buffer is None for s in part)
    assert program.buffers == ()
    for word in ("_workspace", "ws[", "threading", "_t0"):
        assert word not in source, word
    for function in ("_forward", "loss", "loss_and_grad", "sgd_step"):
        body = _body(source, function)
        assert "out=" not in body.replace("out=None", ""), function
        assert "+=" not in body and "*=" not in body, function


def test_only_a_line_too_long_gets_temporaries():
    # mish's derivative, tanh(softplus(z1)) twice, does not fit one line: the repeated
    # part comes first, under its own comment; the short statements stay one line each.
    spec = ARCHITECTURES["mish-relu-quadratic"]
    source = generate_plain(spec)
    program = build_plain_program(derive_network(spec))
    temporaries = [s for s in program.backward if s.source is None]
    assert [s.target for s in temporaries] == ["_t0"]
    assert "\n    _t0 = np.tanh(np.logaddexp(0, z1))\n" in source
    assert "\n    sp1 = _t0 + z1 * (1 - _t0**2) * _sigmoid(z1)\n" in source
    code = [ln for ln in _body(source, "loss_and_grad").splitlines() if "#" not in ln]
    assert max(len(line) for line in code) <= 88


def test_a_new_activation_as_an_expression_needs_no_template_change(build, build_fast):
    # Nothing in the templates or the printer knows sin(x) + x/3; its derivative is SymPy's.
    templates = "".join(p.read_text() for p in (REPO / "codegen" / "templates").glob("*.j2"))
    assert re.search(r"\b(sin|cos)\b", templates) is None
    spec = Spec.from_sizes([2, 3, 2], ["sin(x) + x/3", "sigmoid"], "quadratic")
    module = build(spec)
    assert "\n    sp1 = np.cos(z1) + 1 / 3\n" in generate_plain(spec)
    rng = np.random.default_rng(1)
    params, x, y = module.init_params(1), rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    assert module.check_gradient(params, x, y) <= 1e-6
    fast = build_fast(spec)
    _assert_same(module.loss_and_grad(params, x, y), fast.loss_and_grad(params, x, y))


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_plain_modules_pass_ruff_check_and_format_in_isolation(tmp_path):
    # With the networks of layout_specs (batch norm, dropout, skips, L2/L1, rows, float32,
    # wide and deep), whose long lines the renderer breaks as ruff does.
    assert covers_every_feature(LAYOUT_SPECS) == []
    specs = {f"preset_{n}": preset(n) for n in preset_names()} | dict(ARCHITECTURES)
    specs |= {f"layout_{k}": s for k, s in LAYOUT_SPECS.items()}
    names, text = [], ""
    for key, spec in sorted(specs.items()):
        path = tmp_path / f"plain_{key.replace('-', '_')}.py"
        source = generate_plain(spec)
        path.write_text(source, encoding="utf-8")
        names.append(str(path))
        text += source
    done = _ruff("check", "--isolated", *names)
    assert done.returncode == 0, done.stdout
    done = _ruff("format", "--isolated", "--check", *names)
    assert done.returncode == 0, done.stdout
    # Every layout past one line was checked but a call's arguments on a line of their
    # own, which are the vectorized form's (np.add(..., out=...)).
    missing = [name for name, wrapped in WRAPPED.items() if wrapped not in text]
    assert missing == ["call arguments"]


# ------------------------------------------------------------------------- CLI and README
@pytest.mark.slow
def test_generate_form_plain_and_regenerate_round_trip(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--preset", "nielsen", "--form", "plain", "-o", "x.py"]) == 0
    text = (tmp_path / "x.py").read_text(encoding="utf-8")
    assert text == generate_plain(preset("nielsen"))
    assert "Regenerate with: chainrule generate --preset nielsen --form plain -o FILE" in text
    assert main(["regenerate", "--check", "x.py"]) == 0
    (tmp_path / "x.py").write_text(text.replace("a1 = _sigmoid(z1)", "a1 = z1"), encoding="utf-8")
    assert main(["regenerate", "--check", "x.py"]) == 1
    assert main(["regenerate", "x.py"]) == 0
    assert (tmp_path / "x.py").read_text(encoding="utf-8") == text

    # A network given by a spec (rows layout, custom activation) round-trips too.
    args = ["--sizes", "3,4,2", "--activations", "x*sigmoid(x),softmax", "--cost"]
    args += ["cross-entropy", "--layout", "rows", "--form", "plain", "-o", "net.py"]
    assert main(["generate", *args, "--check"]) == 0
    net = (tmp_path / "net.py").read_text(encoding="utf-8")
    assert 'FORM = "plain"' in net and "_workspace" not in net
    (tmp_path / "net.py").write_text(net.replace("# BP1", "# BPx"), encoding="utf-8")
    assert main(["regenerate", "net.py"]) == 0
    assert (tmp_path / "net.py").read_text(encoding="utf-8") == net
    assert "gradient check: passed" in capsys.readouterr().out


def test_vectorized_stays_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--preset", "two-layer-nobias", "-o", "v.py"]) == 0
    assert (tmp_path / "v.py").read_text(encoding="utf-8") == generate_module(
        preset("two-layer-nobias")
    )


def test_regenerate_refuses_an_unknown_form(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    source = generate_plain(preset("3b1b-chain")).replace('FORM = "plain"', 'FORM = "fancy"')
    (tmp_path / "m.py").write_text(source, encoding="utf-8")
    assert main(["regenerate", "m.py"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "unknown FORM 'fancy'" in err
    assert (tmp_path / "m.py").read_text(encoding="utf-8") == source


def _readme_block(after: str) -> list[str]:
    """The lines of the first ```python block after the README line ``after``."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("```python\n", text.index(after)) + len("```python\n")
    return text[start : text.index("```", start)].splitlines()


def test_readme_shows_real_lines_of_both_forms():
    plain_lines = _readme_block(
        "The plain form, from `chainrule generate --preset nielsen --form plain`:"
    )
    fast_lines = _readme_block("The vectorized form, from `generated/nielsen.py`:")
    plain_source = generate_plain(preset("nielsen")).splitlines()
    fast_source = (GENERATED / "nielsen.py").read_text(encoding="utf-8").splitlines()
    assert len(plain_lines) >= 8 and len(fast_lines) >= 8
    for shown, source in ((plain_lines, plain_source), (fast_lines, fast_source)):
        # The excerpt is a run of consecutive lines of the real module.
        first = source.index(shown[0])
        assert source[first : first + len(shown)] == shown


def test_api_generate_takes_the_form():
    import chainrule
    from chainrule.api import generate

    spec = preset("two-layer-nobias")
    assert generate(spec, form="plain") == generate_plain(spec)
    assert generate(spec) == generate(spec, form="vectorized") == generate_module(spec)
    with pytest.raises(chainrule.CodegenError, match="^form: unknown form 'fast'"):
        generate(spec, form="fast")


@pytest.mark.parametrize("x_dtype", [np.float64, np.float32, np.int64])
@pytest.mark.parametrize("param_dtype", [np.float32, np.float64])
def test_values_have_the_vectorized_forms_dtype(build, build_fast, x_dtype, param_dtype):
    # The vectorized form computes into buffers of the parameters' dtype, whatever x and y
    # hold; the plain form converts the batch to that dtype first.
    spec = ARCHITECTURES["tanh-tanh-quadratic-mixed-f32"]
    plain, fast = build(spec), build_fast(spec)
    _, params, x, y = _problem(spec, 2)
    params = {k: v.astype(param_dtype) for k, v in params.items()}
    x, y = (np.round(x * 3).astype(x_dtype), np.round(y * 3).astype(x_dtype))
    for module in (plain, fast):
        assert module.forward(params, x).dtype == param_dtype
        cost, grads = module.loss_and_grad(params, x, y)
        assert {g.dtype for g in grads.values()} == {np.dtype(param_dtype)}
        assert cost == module.loss(params, x, y)
    rtol = 1e-5 if param_dtype == np.float32 else 1e-12
    want = fast.loss_and_grad(params, x, y)
    assert plain.loss(params, x, y) == pytest.approx(want[0], rel=rtol)
    for key, g in plain.loss_and_grad(params, x, y)[1].items():
        scale = float(np.max(np.abs(want[1][key])))
        np.testing.assert_allclose(g, want[1][key], rtol=rtol, atol=rtol * scale, err_msg=key)
