"""Hostile input to the L2/L1 penalty, the optimizers and residual connections.

Each test here failed before its fix: a Keras regularizer read differently from Keras,
and optimizer state or counts that ``train`` took and then misused.
"""

from __future__ import annotations

import numpy as np
import pytest
from chainrule.derive.errors import SpecError


def _keras_model(reg: object) -> dict:
    """A Keras 3 style Sequential 3-4-2 (relu, softmax), ``reg`` on both Dense layers."""
    dense = [
        {
            "class_name": "Dense",
            "config": {"name": f"d{i}", "units": u, "activation": a, "kernel_regularizer": reg},
        }
        for i, (u, a) in enumerate(((4, "relu"), (2, "softmax")))
    ]
    layers = [{"class_name": "InputLayer", "config": {"batch_shape": [None, 3]}}, *dense]
    return {"class_name": "Sequential", "config": {"name": "reg", "layers": layers}}


@pytest.mark.parametrize(
    "kind, l2, l1",
    [("L2", 0.02, 0.0), ("L1", 0.0, 0.01), ("L1L2", 0.0, 0.0)],
)
def test_keras_regularizer_without_coefficient_takes_keras_default(kind, l2, l1) -> None:
    """Keras reads ``L2()`` as l2 = 0.01 and ``L1()`` as l1 = 0.01 (L1L2's are 0):
    a config without the coefficient is that default, not no penalty."""
    from chainrule.importers import spec_from_keras

    spec = spec_from_keras(_keras_model({"class_name": kind, "config": {}}), "cross-entropy")
    assert (spec.l2, spec.l1) == (l2, l1)


@pytest.mark.parametrize(
    "config, field, words",
    [
        ({"l1": 0.5}, "kernel_regularizer.config", "no setting 'l1'"),  # L2 has no l1
        ({"l2": 0.01, "extra": 5}, "kernel_regularizer.config", "no setting 'extra'"),
        ({"l2": -0.01}, "kernel_regularizer.l2", "-0.01 is out of range"),
        ({"l2": 600000}, "kernel_regularizer.l2", "600000 is out of range"),
        ({"l2": float("nan")}, "kernel_regularizer.l2", "nan is out of range"),
        ({"l2": 10**400}, "kernel_regularizer.l2", "out of range"),
    ],
)
def test_keras_regularizer_bad_settings_name_the_keras_field(config, field, words) -> None:
    """Keras refuses a setting its class lacks and a negative coefficient; the error
    names the Keras field and the value as written (not chainrule's doubled l2)."""
    from chainrule.importers import spec_from_keras

    with pytest.raises(SpecError) as caught:
        spec_from_keras(_keras_model({"class_name": "L2", "config": config}), "cross-entropy")
    text = str(caught.value)
    assert field in text and words in text
    assert "(0.01" not in text and "\n" not in text


def test_keras_regularizer_largest_coefficient_is_accepted() -> None:
    """The top of the range the error gives (Keras l2 500000, chainrule's 1e6) works."""
    from chainrule.importers import spec_from_keras

    model = _keras_model({"class_name": "L2", "config": {"l2": 500000}})
    assert spec_from_keras(model, "cross-entropy").l2 == 1e6


# -- train: optimizer_state and counts a careless caller passes ------------------------------


@pytest.fixture(scope="module")
def net(load_source):
    """A 3-4-2 tanh/sigmoid module, its parameters and 12 examples."""
    from chainrule.codegen.render import generate_module
    from chainrule.derive.spec import Spec

    spec = Spec.from_sizes([3, 4, 2], ["tanh", "sigmoid"], "quadratic")
    module = load_source(generate_module(spec))
    rng = np.random.default_rng(0)
    return module, rng.normal(size=(3, 12)), rng.uniform(size=(2, 12))


def _filled(module, x, y, optimizer, **options):
    """Parameters after one epoch and the optimizer_state that epoch filled."""
    params, state = module.init_params(0), {}
    module.train(
        params, x, y, epochs=1, batch_size=4, lr=0.01, optimizer=optimizer,
        optimizer_state=state, **options,
    )  # fmt: skip
    return params, state


def test_read_only_state_array_is_refused_before_any_step(net) -> None:
    """A read-only array in optimizer_state failed halfway through a step, after some
    parameters had moved; now it is refused first, naming the array."""
    module, x, y = net
    params, state = _filled(module, x, y, "momentum", momentum=0.9)
    state["velocity"]["b2"].flags.writeable = False
    before = {key: value.copy() for key, value in params.items()}
    with pytest.raises(ValueError, match=r"optimizer_state\['velocity'\]\['b2'\]: .*writeable"):
        module.train(
            params, x, y, epochs=1, batch_size=4, lr=0.01, optimizer="momentum",
            momentum=0.9, optimizer_state=state,
        )  # fmt: skip
    assert all(np.array_equal(params[key], before[key]) for key in params)


@pytest.mark.parametrize("alias", ["other slot", "parameter", "view of a parameter"])
def test_state_array_sharing_memory_is_refused(net, alias) -> None:
    """Adam's m and v in one array, or a moment that is a parameter, silently trained
    something else; now it is refused before any step."""
    module, x, y = net
    params, state = _filled(module, x, y, "adam")
    source = {
        "other slot": state["m"]["W1"],
        "parameter": params["W1"],
        "view of a parameter": params["W1"][:, :],
    }[alias]
    state["v"]["W1"] = source
    before = params["W1"].copy()
    with pytest.raises(ValueError, match=r"optimizer_state\['v'\]\['W1'\]: shares memory"):
        module.train(params, x, y, epochs=1, batch_size=4, lr=0.01, optimizer="adam",
                     optimizer_state=state)  # fmt: skip
    assert np.array_equal(params["W1"], before)


def test_small_numpy_step_count_does_not_wrap(net) -> None:
    """A step count stored as np.int8(127) wrapped to -128 and gave NaN parameters;
    it is now continued as a Python int, as Adam with step 127 would be."""
    module, x, y = net
    params, state = _filled(module, x, y, "adam")
    reference = {key: value.copy() for key, value in params.items()}
    ref_state = {"optimizer": "adam", "step": 127, "m": state["m"], "v": state["v"]}
    ref_state = {k: ({n: a.copy() for n, a in v.items()} if isinstance(v, dict) else v)
                 for k, v in ref_state.items()}  # fmt: skip
    state["step"] = np.int8(127)
    for p, s in ((params, state), (reference, ref_state)):
        module.train(p, x, y, epochs=1, batch_size=4, lr=0.01, optimizer="adam",
                     optimizer_state=s)  # fmt: skip
    assert state["step"] == 130 and type(state["step"]) is int
    assert all(np.array_equal(params[key], reference[key]) for key in params)


def test_batch_size_beyond_int64_is_a_whole_number(net) -> None:
    """batch_size=2**64 was refused as 'not a whole number >= 1'; it is one whole batch."""
    module, x, y = net
    big, whole = module.init_params(0), module.init_params(0)
    module.train(big, x, y, epochs=1, batch_size=2**64, lr=0.1)
    module.train(whole, x, y, epochs=1, batch_size=12, lr=0.1)
    assert all(np.array_equal(big[key], whole[key]) for key in big)


# -- chainrule train --eps ----------------------------------------------------------------


@pytest.fixture
def blobs(tmp_path) -> str:
    """An .npz of 60 examples in 4 dimensions with labels 0..2."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    path = tmp_path / "blobs.npz"
    np.savez(path, x=np.eye(4)[labels] * 3 + rng.standard_normal((60, 4)), y=labels)
    return str(path)


NET = ["--sizes", "4,8,3", "--activations", "relu,softmax", "--cost", "cross-entropy"]


@pytest.mark.slow
def test_eps_that_is_zero_in_float32_is_one_line_before_training(tmp_path, blobs, capsys):
    """--eps 1e-50 with --dtype float32 passed the flag's check and then raised a
    traceback (exit 1) from the module's train; it is one line naming --eps now, and the
    fix it gives works."""
    from chainrule.cli import main

    saved = tmp_path / "w.npz"
    argv = ["train", *NET, "--data", blobs, "--epochs", "1", "--dtype", "float32"]
    argv += ["--optimizer", "adam", "--save", str(saved)]
    assert main([*argv, "--eps", "1e-50"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chainrule: error: --eps: 1e-50 is 0 in float32")
    assert not saved.exists()
    fix = lines[0].rsplit("such as ", 1)[1]
    assert main([*argv, "--eps", fix]) == 0 and saved.exists()


def test_eps_error_suggests_an_eps(blobs, capsys):
    """--eps 0's fix named 0.3, the learning rate's example, as an eps."""
    from chainrule.cli import main

    argv = ["train", *NET, "--data", blobs, "--epochs", "1", "--optimizer", "adam"]
    assert main([*argv, "--eps", "-0"]) == 2
    assert capsys.readouterr().err.rstrip().endswith("such as 1e-8")


# -- loss_and_grad(out=...) ---------------------------------------------------------------


@pytest.mark.parametrize("form", ["vectorized", "plain"])
@pytest.mark.parametrize("mistake", ["out is params", "one array for two keys"])
def test_out_that_is_a_parameter_or_repeated_is_refused(load_source, form, mistake) -> None:
    """out=params made the vectorized form overwrite W2 with its gradient before
    delta1 used it (a wrong gradient, no error); one array under two keys kept the last
    gradient written. Both are refused now, before anything is written."""
    from chainrule.derive.spec import Spec

    from chainrule.api import generate

    spec = Spec.from_sizes([3, 3, 3, 3], ["tanh", "tanh", "linear"], "quadratic")
    module = load_source(generate(spec, form=form))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    params = module.init_params(0)
    if mistake == "out is params":
        out, key = params, "W1"
    else:
        out, key = module.new_gradient(), "W2"
        out["W2"] = out["W1"]
    before = {k: v.copy() for k, v in params.items()}
    with pytest.raises(ValueError, match=rf"out\['{key}'\]: shares memory with a parameter"):
        module.loss_and_grad(params, x, y, out=out)
    assert all(np.array_equal(params[k], before[k]) for k in params)


# -- chainrule check under an L1 penalty ----------------------------------------------------


def test_check_passes_with_a_random_weight_next_to_l1_kink(load_source, monkeypatch) -> None:
    """A random weight within the finite-difference step of 0 put |w|'s kink inside
    the stencil, and `chainrule check` failed a correct module (nielsen with --l1 0.01
    failed at --seed 29 and 52); weights are now moved off the kink first."""
    from chainrule.codegen.render import generate_module
    from chainrule.derive.spec import Spec

    from chainrule.check import check_module

    spec = Spec.from_sizes([3, 4, 2], ["tanh", "linear"], "quadratic", l1=0.5)
    module = load_source(generate_module(spec))
    drawn = module.init_params

    def near_zero(seed: int = 0) -> dict:
        params = drawn(seed)
        params["W1"][0, 0] = 1e-9
        return params

    monkeypatch.setattr(module, "init_params", near_zero)
    assert check_module(module).passed


@pytest.mark.parametrize("change", ["extra key", "step removed"])
def test_state_with_wrong_keys_says_which_keys(net, change) -> None:
    """A filled Adam state with a key added or removed was refused as "not the state of
    'adam' (it is 'adam')"; the error now lists the keys expected and found."""
    module, x, y = net
    _, state = _filled(module, x, y, "adam")
    if change == "extra key":
        state["note"] = 1
    else:
        del state["step"]
    with pytest.raises(ValueError) as caught:
        module.train(module.init_params(0), x, y, epochs=1, batch_size=4, lr=0.01,
                     optimizer="adam", optimizer_state=state)  # fmt: skip
    text = str(caught.value)
    assert "(it is 'adam')" not in text
    assert "['m', 'optimizer', 'step', 'v']" in text and repr(sorted(state)) in text


def test_graph_draws_a_penalty_given_as_a_flag(tmp_path, capsys) -> None:
    """`graph --sizes ... --l1 0.1` once refused the penalty; it now draws it."""
    from chainrule.cli import main

    argv = ["graph", "--sizes", "2,2", "--activations", "sigmoid", "--cost", "quadratic"]
    assert main([*argv, "--l1", "0.1", "-o", str(tmp_path / "g.dot")]) == 0
    assert "P^1" in (tmp_path / "g.dot").read_text() or "P¹" in (tmp_path / "g.dot").read_text()


def test_json_l2_of_many_digits_is_not_told_to_give_sizes(tmp_path) -> None:
    """ "l2": 1 followed by 40 zeros in JSON was refused with "give sizes of a few
    digits", advice about a field the user did not write."""
    from chainrule.derive.spec import load_spec

    path = tmp_path / "net.json"
    path.write_text(
        '{"input": 2, "cost": "quadratic", "l2": 1' + "0" * 40 + ","
        ' "layers": [{"size": 2, "activation": "sigmoid"}]}',
        encoding="utf-8",
    )
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert "sizes" not in str(caught.value) and "at most 30 digits" in str(caught.value)


@pytest.mark.slow
@pytest.mark.parametrize(
    "flag, value",
    [("--l2", "0.5"), ("--l1", "0.5"), ("--dtype", "float32"), ("--layout", "rows"),
     ("--no-bias", None), ("--cost", "quadratic"), ("--from-keras", "model.json")],
)  # fmt: skip
def test_train_module_with_a_network_flag_is_refused(tmp_path, blobs, capsys, flag, value):
    """`train --module FILE --l2 0.5` trained FILE without any penalty, the flag unread
    (so did --dtype, --layout, ...); it is one line naming the flag now, and dropping the
    flag (its fix) trains."""
    from chainrule.cli import main

    module = tmp_path / "net.py"
    assert main(["generate", *NET, "-o", str(module)]) == 0
    argv = ["train", "--module", str(module), "--data", blobs, "--epochs", "1"]
    capsys.readouterr()
    assert main([*argv, flag] + ([value] if value else [])) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"chainrule: error: {flag}: given with --module")
    assert main(argv) == 0
