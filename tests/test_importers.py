"""Keras JSON and PyTorch nn.Sequential become specs; their weights give the same gradient."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from chainrule.codegen.render import generate_module
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Layer

from chainrule.cli import main
from chainrule.importers import params_from_keras, spec_from_keras


def _dense(units, activation="linear", use_bias=True, name="dense", **extra):
    return {"class_name": "Dense", "config": {"name": name, "units": units,
            "activation": activation, "use_bias": use_bias, **extra}}  # fmt: skip


#: The shape of tf.keras 2.x ``model.to_json()``: InputLayer with batch_input_shape, alpha.
KERAS2 = {
    "class_name": "Sequential",
    "config": {
        "name": "sequential",
        "layers": [
            {
                "class_name": "InputLayer",
                "config": {"batch_input_shape": [None, 4], "dtype": "float32", "name": "in"},
            },
            _dense(6, "tanh", name="dense"),
            _dense(5, "linear", name="dense_1"),
            {"class_name": "LeakyReLU", "config": {"name": "leaky", "alpha": 0.01}},
            _dense(3, "softmax", use_bias=False, name="dense_2"),
        ],
    },
    "keras_version": "2.15.0",
    "backend": "tensorflow",
}

#: The shape of Keras 3 ``model.to_json()``: module/registered_name, batch_shape,
#: DTypePolicy objects, build_config, negative_slope.
_POLICY = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}
KERAS3 = {
    "module": "keras",
    "class_name": "Sequential",
    "config": {
        "name": "sequential_3",
        "trainable": True,
        "dtype": _POLICY,
        "layers": [
            {
                "module": "keras.layers",
                "class_name": "InputLayer",
                "config": {"batch_shape": [None, 3], "dtype": "float32", "name": "input_layer"},
                "registered_name": None,
            },
            {
                "module": "keras.layers",
                "class_name": "Dense",
                "config": {
                    "name": "dense",
                    "dtype": _POLICY,
                    "units": 4,
                    "activation": "relu",
                    "use_bias": True,
                },  # fmt: skip
                "registered_name": None,
                "build_config": {"input_shape": [None, 3]},
            },
            {
                "module": "keras.layers",
                "class_name": "Dense",
                "config": {
                    "name": "dense_1",
                    "units": 2,
                    "activation": "linear",
                    "use_bias": True,
                },  # fmt: skip
                "registered_name": None,
            },
            {
                "module": "keras.layers",
                "class_name": "Activation",
                "config": {"name": "act", "activation": "sigmoid"},
                "registered_name": None,
            },
        ],
        "build_input_shape": [None, 3],
    },
    "registered_name": None,
    "build_config": {"input_shape": [None, 3]},
}


def _load(source: str, tmp_path: Path, stem: str):
    path = tmp_path / f"{stem}.py"
    path.write_text(source, encoding="utf-8")
    loader = importlib.util.spec_from_file_location(stem, path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def test_keras2_json_becomes_spec() -> None:
    spec = spec_from_keras(json.dumps(KERAS2), "cross-entropy")
    assert spec.sizes == (4, 6, 5, 3)
    assert spec.activations == ("tanh", "leaky-relu", "softmax")
    assert [layer.bias for layer in spec.layers] == [True, True, False]
    assert spec.layout == "rows"
    assert spec.name == "sequential"


def test_keras3_json_file_becomes_spec(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(KERAS3), encoding="utf-8")
    spec = spec_from_keras(path, "binary-cross-entropy")
    assert spec.sizes == (3, 4, 2)
    assert spec.activations == ("relu", "sigmoid")
    assert spec.layers[1] == Layer(2, "sigmoid", True)


def test_keras3_without_input_layer_uses_build_config() -> None:
    data = json.loads(json.dumps(KERAS3))
    del data["config"]["layers"][0]
    del data["config"]["build_input_shape"]
    assert spec_from_keras(data, "quadratic").sizes == (3, 4, 2)


@pytest.mark.parametrize(
    ("change", "field_part", "message_part"),
    [
        (
            lambda d: d["config"]["layers"].insert(
                1, {"class_name": "Conv2D", "config": {"name": "conv"}}
            ),
            "'conv'",
            "Conv2D",
        ),  # fmt: skip
        (lambda d: d["config"]["layers"][3]["config"].update(alpha=0.3), "negative_slope", "0.3"),
        (
            lambda d: d["config"]["layers"][1]["config"].update(activation="gelu"),
            "activation",
            "gelu",
        ),  # fmt: skip
        (
            lambda d: d["config"]["layers"][0]["config"].update(batch_input_shape=[None, 2, 2]),
            "batch_input_shape",
            "[None, 2, 2]",
        ),  # fmt: skip
        (lambda d: d.update(class_name="Functional"), "from-keras", "Functional"),
    ],
)
def test_keras_unsupported_is_a_clear_error(change, field_part, message_part) -> None:
    data = json.loads(json.dumps(KERAS2))
    change(data)
    with pytest.raises(SpecError) as info:
        spec_from_keras(data, "cross-entropy")
    assert field_part in info.value.field
    assert message_part in info.value.message
    assert info.value.fix


def test_keras_json_rejects_nan_and_duplicate_keys() -> None:
    with pytest.raises(SpecError, match="NaN"):
        spec_from_keras('{"class_name": "Sequential", "config": {"x": NaN}}', "quadratic")
    with pytest.raises(SpecError, match="duplicate"):
        spec_from_keras('{"class_name": "Sequential", "class_name": "Sequential"}', "quadratic")


def _reference_rows(params: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """KERAS2 by hand in rows layout (tanh, leaky relu, softmax, cross-entropy)."""
    h1 = np.tanh(x @ params["W1"] + params["b1"])
    z2 = h1 @ params["W2"] + params["b2"]
    h2 = np.where(z2 > 0, z2, 0.01 * z2)
    z3 = h2 @ params["W3"]
    logp = z3 - z3.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    return float(-(y * logp).sum() / len(x)), np.exp(logp)


def test_keras_weights_give_the_same_loss_and_gradient(tmp_path: Path) -> None:
    spec = spec_from_keras(KERAS2, "cross-entropy")
    rng = np.random.default_rng(3)
    # model.get_weights(): kernel (n_in, n_out) then bias, per Dense layer.
    weights = [rng.standard_normal(s) for s in [(4, 6), (6,), (6, 5), (5,), (5, 3)]]
    x = rng.standard_normal((7, 4))
    y = np.eye(3)[rng.integers(0, 3, 7)]
    for layout in ("rows", "columns"):
        spec_l = spec.replace(layout=layout)
        module = _load(generate_module(spec_l), tmp_path, f"keras_{layout}")
        params = params_from_keras(weights, spec_l)
        xs, ys = (x, y) if layout == "rows" else (x.T, y.T)
        cost, grads = module.loss_and_grad(params, xs, ys)
        ref_params = params_from_keras(weights, spec.replace(layout="rows"))
        ref_cost, probs = _reference_rows(ref_params, x, y)
        assert cost == pytest.approx(ref_cost, rel=1e-12)
        # dC/dz^3 = (softmax - y)/m, so dC/dW^3 = h2^T (p - y) / m in rows layout.
        z2 = np.tanh(x @ ref_params["W1"] + ref_params["b1"]) @ ref_params["W2"]
        h2 = np.where(
            z2 + ref_params["b2"] > 0, z2 + ref_params["b2"], 0.01 * (z2 + ref_params["b2"])
        )
        expected = h2.T @ (probs - y) / len(x)
        got = grads["W3"] if layout == "rows" else grads["W3"].T
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)
        assert "b3" not in grads


def test_params_from_keras_checks_count() -> None:
    spec = spec_from_keras(KERAS2, "cross-entropy")
    with pytest.raises(SpecError, match="5 expected"):
        params_from_keras([np.zeros((4, 6))], spec)


def test_cli_generate_from_keras(tmp_path: Path, capsys) -> None:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(KERAS2), encoding="utf-8")
    out = tmp_path / "net.py"
    status = main(
        ["generate", "--from-keras", str(path), "--cost", "cross-entropy", "-o", str(out)]
    )
    assert status == 0
    module = _load(out.read_text(encoding="utf-8"), tmp_path, "net_cli")
    assert module.LAYER_SIZES == (4, 6, 5, 3)
    assert module.ACTIVATIONS == ("tanh", "leaky-relu", "softmax")
    assert module.LAYOUT == "rows"


def test_cli_import_needs_a_cost(tmp_path: Path, capsys) -> None:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(KERAS2), encoding="utf-8")
    assert main(["generate", "--from-keras", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cost" in err and "--cost" in err


# ----------------------------------------------------------------------------- PyTorch


@pytest.fixture
def torch():
    """PyTorch, or a skip when it is absent (it is optional: pip install torch==2.13.0)."""
    return pytest.importorskip("torch", reason="PyTorch is optional: pip install torch==2.13.0")


def test_from_torch_without_torch_says_how_to_install(monkeypatch) -> None:
    from chainrule.importers import from_torch

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(SpecError, match=r"pip install torch==2\.13\.0"):
        from_torch(object(), "quadratic")


def _torch_net(torch):
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(
        nn.Linear(5, 7),
        nn.Tanh(),
        nn.Linear(7, 6, bias=False),
        nn.LeakyReLU(0.01),
        nn.Sequential(nn.Linear(6, 4), nn.Softplus()),
        nn.Linear(4, 3),
        nn.Softmax(dim=-1),
    ).double()


@pytest.mark.slow
def test_from_torch_reads_the_architecture(torch) -> None:
    from chainrule.importers import from_torch

    spec = from_torch(_torch_net(torch), "cross-entropy")
    assert spec.sizes == (5, 7, 6, 4, 3)
    assert spec.activations == ("tanh", "leaky-relu", "softplus", "softmax")
    assert [layer.bias for layer in spec.layers] == [True, False, True, True]
    assert spec.layout == "columns"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "message"),
    [
        (lambda nn: nn.Sequential(nn.Linear(2, 3), nn.LeakyReLU(0.2)), "0.2"),
        (lambda nn: nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5)), "Dropout"),
        (lambda nn: nn.Sequential(nn.Linear(2, 3), nn.Softplus(beta=2)), "beta"),
        (lambda nn: nn.Sequential(nn.Linear(2, 3), nn.Linear(4, 1)), "in_features 4"),
        (lambda nn: nn.Linear(2, 3), "nn.Sequential"),
    ],
)
def test_from_torch_unsupported_is_a_clear_error(torch, module, message) -> None:
    from chainrule.importers import from_torch

    with pytest.raises(SpecError) as info:
        from_torch(module(torch.nn), "quadratic")
    assert message in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["columns", "rows"])
@pytest.mark.parametrize("cost", ["cross-entropy", "quadratic"])
def test_torch_weights_give_the_same_loss_and_gradient(torch, tmp_path: Path, layout, cost) -> None:
    from chainrule.importers import from_torch, params_from_torch

    net = _torch_net(torch)
    spec = from_torch(net, cost, layout=layout)
    module = _load(generate_module(spec), tmp_path, f"torch_{layout}_{cost.replace('-', '_')}")
    params = params_from_torch(net, spec)

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(9, 5, generator=gen, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (9,), generator=gen), 3).double()
    out = net(x)
    if cost == "cross-entropy":
        torch_loss = -(y * torch.log(out)).sum() / len(x)
    else:
        torch_loss = 0.5 * ((out - y) ** 2).sum() / len(x)
    net.zero_grad()
    torch_loss.backward()

    xs, ys = (x.numpy(), y.numpy()) if layout == "rows" else (x.numpy().T, y.numpy().T)
    cost_value, grads = module.loss_and_grad(params, xs, ys)
    assert cost_value == pytest.approx(torch_loss.item(), rel=1e-12)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    for l, lin in enumerate(linears, start=1):  # noqa: E741
        expected_w = lin.weight.grad.numpy()
        got_w = grads[f"W{l}"] if layout == "columns" else grads[f"W{l}"].T
        np.testing.assert_allclose(got_w, expected_w, rtol=1e-10, atol=1e-13)
        if lin.bias is None:
            assert f"b{l}" not in grads
        else:
            np.testing.assert_allclose(
                grads[f"b{l}"].reshape(-1), lin.bias.grad.numpy(), rtol=1e-10, atol=1e-13
            )


@pytest.mark.slow
def test_cli_generate_from_torch_file(torch, tmp_path: Path) -> None:
    model = tmp_path / "model.py"
    model.write_text(
        "import torch\n"
        "net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(),\n"
        "                          torch.nn.Linear(4, 1), torch.nn.Sigmoid())\n",
        encoding="utf-8",
    )
    out = tmp_path / "net.py"
    argv = ["generate", "--from-torch", f"{model}:net", "--cost", "binary-cross-entropy"]
    assert main([*argv, "-o", str(out)]) == 0
    module = _load(out.read_text(encoding="utf-8"), tmp_path, "torch_cli")
    assert module.LAYER_SIZES == (3, 4, 1)
    assert module.ACTIVATIONS == ("relu", "sigmoid")
    assert module.NAME == "net"
    assert main(["generate", "--from-torch", f"{model}:missing", "--cost", "quadratic"]) == 2
    assert not any(name.startswith("_chainrule_user_model") for name in sys.modules)


# ----------------------------------------------------------------------------- Keras itself


#: Set by .ci/run: a missing Keras fails the run instead of skipping the comparison.
REQUIRE_KERAS = os.environ.get("CHAINRULE_REQUIRE_KERAS") == "1"


def _keras_reference() -> dict:
    """Keras's model, weights, forward pass, loss and gradient (tests/keras_reference.py).

    It runs in a child process so that KERAS_BACKEND=torch is set before Keras is imported
    and Keras's global settings (floatx float64, seeds) stay out of this process.
    """
    missing = "Keras is optional: pip install keras==3.15.1 (it runs on the torch backend)"
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("torch") is None:
        if REQUIRE_KERAS:
            pytest.fail(f"CHAINRULE_REQUIRE_KERAS=1 but {missing}")
        pytest.skip(missing)
    script = Path(__file__).with_name("keras_reference.py")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("required", [True, False])
def test_missing_keras_fails_when_required_and_skips_otherwise(monkeypatch, required) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "keras" else real_find_spec(name)
    )
    monkeypatch.setattr(sys.modules[__name__], "REQUIRE_KERAS", required)
    outcome = pytest.fail.Exception if required else pytest.skip.Exception
    with pytest.raises(outcome, match=r"pip install keras==3\.15\.1"):
        _keras_reference()


#: Worst relative error allowed against Keras, by the dtype Keras computed in. Keras 3.15's
#: type promotion maps float64 to float32 (``keras.backend.result_type("float64", "float64")``
#: is "float32"), so on the torch backend a Dense layer's matrix product runs in float32 even
#: with float64 weights and floatx float64: unit roundoff 6e-8. Measured on this model:
#: forward 9.3e-8, loss 1.7e-8, gradient 2.7e-7 (relative to each array's largest entry).
#: 1e-6 leaves a margin of about 4 over that; the test checks that the same network with
#: ReLU in place of LeakyReLU(0.01) misses it by far. Should Keras compute in float64, the
#: bound becomes float64's.
KERAS_RTOL = {"float32": 1e-6, "float64": 1e-12}


@pytest.mark.slow
def test_real_keras_model_gives_the_same_forward_loss_and_gradient(tmp_path: Path) -> None:
    """Keras 3 (torch backend, float64 weights): its own JSON, weights, forward, loss, autograd."""
    ref = _keras_reference()
    assert ref["backend"] == "torch" and set(ref["weight_dtypes"]) == {"float64"}
    rtol = KERAS_RTOL[ref["output_dtype"]]
    spec = spec_from_keras(ref["json"], "cross-entropy")
    assert spec.sizes == (4, 6, 5, 3)
    assert spec.activations == ("tanh", "leaky-relu", "softmax")
    assert [layer.bias for layer in spec.layers] == [True, True, False]
    module = _load(generate_module(spec), tmp_path, "keras_real")
    params = params_from_keras(ref["weights"], spec)
    x, y = np.array(ref["x"]), np.array(ref["y"])

    def close(ours: np.ndarray, theirs: list) -> None:
        theirs = np.array(theirs)
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * np.abs(theirs).max())

    close(module.forward(params, x), ref["forward"])
    cost, grads = module.loss_and_grad(params, x, y)
    assert cost == pytest.approx(ref["loss"], rel=rtol)
    got = [grads["W1"], grads["b1"].reshape(-1), grads["W2"], grads["b2"].reshape(-1), grads["W3"]]
    for ours, theirs in zip(got, ref["grads"], strict=True):
        close(ours, theirs)
    # The bound tells networks apart: slope 0 instead of 0.01 on the hidden layer misses it.
    layers = (spec.layers[0], Layer(5, "relu"), spec.layers[2])
    relu = spec.replace(layers=layers)
    _, wrong = _load(generate_module(relu), tmp_path, "keras_relu").loss_and_grad(params, x, y)
    assert np.abs(wrong["W2"] - got[2]).max() > 100 * rtol * np.abs(got[2]).max()


def test_keras2_float32_rounded_leaky_slope_is_the_slope_it_rounds_from() -> None:
    data = json.loads(json.dumps(KERAS2))
    data["config"]["layers"][3]["config"]["alpha"] = 0.009999999776482582  # float32(0.01)
    assert spec_from_keras(data, "cross-entropy").activations == ("tanh", "leaky-relu", "softmax")
    data["config"]["layers"][3]["config"]["alpha"] = 0.0101
    with pytest.raises(SpecError, match="negative_slope"):
        spec_from_keras(data, "cross-entropy")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"class_name": "Sequential", "config": "abc"}', "expected an object with the layers"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"a": ' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
    ],
)
def test_hostile_keras_json_is_one_line_and_exit_2(tmp_path: Path, capsys, text, words) -> None:
    path = tmp_path / "model.json"
    path.write_text(text)
    assert main(["generate", "--from-keras", str(path), "--cost", "quadratic"]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda nn: nn.Softplus(beta=2.0), "beta"),
        (lambda nn: nn.Softplus(threshold=1.0), "threshold"),
    ],
)
def test_torch_softplus_settings_are_refused_not_dropped(torch, make, field) -> None:
    from chainrule.importers import from_torch

    with pytest.raises(SpecError) as info:
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 3), make(torch.nn)), "quadratic")
    assert f".{field}" in info.value.field and "softplus" in str(info.value)


_NEW_TORCH_ACTIVATIONS = {
    "elu": lambda nn: nn.ELU(alpha=1.0),
    "selu": lambda nn: nn.SELU(),
    "gelu": lambda nn: nn.GELU(approximate="tanh"),
    "mish": lambda nn: nn.Mish(),
}


@pytest.mark.parametrize("cost", ["huber", "quadratic"])
@pytest.mark.parametrize("name", sorted(_NEW_TORCH_ACTIVATIONS))
@pytest.mark.slow
def test_new_activations_match_torch_autograd_in_float64(torch, tmp_path: Path, name, cost) -> None:
    from chainrule.importers import from_torch, params_from_torch

    torch.manual_seed(3)
    nn = torch.nn
    make = _NEW_TORCH_ACTIVATIONS[name]
    net = nn.Sequential(nn.Linear(5, 4), make(nn), nn.Linear(4, 3), make(nn)).double()
    spec = from_torch(net, cost, layout="rows")
    assert spec.activations == (name, name)
    module = _load(generate_module(spec), tmp_path, f"torch_new_{name}_{cost}")
    params = params_from_torch(net, spec)
    gen = torch.Generator().manual_seed(4)
    x = 2 * torch.randn(11, 5, generator=gen, dtype=torch.float64)
    y = 3 * torch.randn(11, 3, generator=gen, dtype=torch.float64)  # both huber pieces
    out = net(x)
    if cost == "huber":
        torch_loss = nn.HuberLoss(reduction="sum", delta=1.0)(out, y) / len(x)
    else:
        torch_loss = 0.5 * ((out - y) ** 2).sum() / len(x)
    net.zero_grad()
    torch_loss.backward()
    cost_value, grads = module.loss_and_grad(params, x.numpy(), y.numpy())
    assert cost_value == pytest.approx(torch_loss.item(), rel=1e-12)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    for l, lin in enumerate(linears, start=1):  # noqa: E741
        np.testing.assert_allclose(grads[f"W{l}"].T, lin.weight.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(
            grads[f"b{l}"].reshape(-1), lin.bias.grad.numpy(), rtol=1e-9, atol=1e-12
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "field", "words"),
    [
        (lambda nn: nn.GELU(), "approximate", "approximate='tanh'"),
        (lambda nn: nn.ELU(alpha=0.5), "alpha", "nn.ELU()"),
    ],
)
def test_torch_exact_gelu_and_other_elu_are_refused_in_one_line(torch, make, field, words) -> None:
    from chainrule.importers import from_torch

    with pytest.raises(SpecError) as info:
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 3), make(torch.nn)), "quadratic")
    assert info.value.field.endswith(f".{field}") and words in str(info.value)
    assert "\n" not in str(info.value)
    if field == "approximate":
        assert "tanh form" in str(info.value)


def test_keras_maps_the_new_activations_and_refuses_exact_gelu() -> None:
    data = json.loads(json.dumps(KERAS2))
    layers = data["config"]["layers"]
    layers[1]["config"]["activation"] = "selu"
    layers[3] = {"class_name": "ELU", "config": {"name": "elu", "alpha": 1.0}}
    layers[4]["config"]["activation"] = "mish"
    spec = spec_from_keras(data, "huber")
    assert spec.activations == ("selu", "elu", "mish") and spec.cost == "huber"
    layers[1]["config"]["activation"] = "gelu"
    with pytest.raises(SpecError) as info:
        spec_from_keras(data, "huber")
    assert "exact (erf) GELU" in str(info.value) and "tanh form" in str(info.value)
