"""``derive --at`` on a network with dropout: the values' ``seed`` fixes the masks, drawn by
the generated module's own ``dropout_masks``; the worked numbers equal the module's
``loss_and_grad(..., seed=seed)`` and ``sgd_step(..., seed=seed)``; a bad, missing or
needless seed is refused in one line naming the field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from chainrule.derive import naming
from chainrule.derive.errors import DerivationError
from chainrule.derive.spec import Layer, Spec

import chainrule
from chainrule.cli import main
from chainrule.cmd_train import module_from_spec

#: Dropout on a 3-unit tanh layer, a sigmoid output, three examples.
DROPOUT = Spec(2, (Layer(3, "tanh", dropout=0.4), Layer(1, "sigmoid")), "quadratic")

DROPOUT_TOML = """\
input = 2
cost = "quadratic"
[[layers]]
size = 3
activation = "tanh"
dropout = 0.4
[[layers]]
size = 1
activation = "sigmoid"
"""

PARAMS = {
    "W1": [[0.1, -0.2], [0.3, 0.4], [0.5, -0.6]],
    "b1": [0.1, 0.0, -0.1],
    "W2": [[0.2, -0.3, 0.4]],
    "b2": [0.05],
}
POINT = {
    "x": [[0.5, -1.0], [1.5, 0.25], [-0.3, 0.8]],
    "y": [[1.0], [0.0], [1.0]],
    "lr": 0.5,
    "seed": 3,
    "params": PARAMS,
}


def _arrays(point: dict, layout: str = "columns") -> tuple[dict, np.ndarray, np.ndarray]:
    params = {k: np.array(v, dtype=float) for k, v in point["params"].items()}
    params = {k: v.reshape(-1, 1) if v.ndim == 1 else v for k, v in params.items()}
    x, y = np.array(point["x"], dtype=float), np.array(point["y"], dtype=float)
    return (params, x.T.copy(), y.T.copy()) if layout == "columns" else (params, x, y)


def _as_array(matrix) -> np.ndarray:  # noqa: ANN001 - a SymPy matrix of worked numbers
    return np.array(matrix.tolist(), dtype=float)


@pytest.mark.slow
def test_the_worked_numbers_equal_the_module_with_the_same_seed():
    doc = chainrule.derivation(DROPOUT, at=POINT)
    env = doc.worked.env
    module = module_from_spec(DROPOUT)
    params, x, y = _arrays(POINT)
    masks = module.dropout_masks(3, 3)
    np.testing.assert_array_equal(_as_array(env["D1"]), masks["D1"])
    assert 0 < np.count_nonzero(masks["D1"]) < masks["D1"].size  # some kept, some dropped
    cost, grads = module.loss_and_grad(params, x, y, seed=3)
    assert abs(float(env["C"][0, 0]) - cost) <= 1e-12
    for name, grad in grads.items():
        np.testing.assert_allclose(_as_array(env[naming.grad(name)]), grad, rtol=1e-10, atol=1e-14)
    # another seed draws other masks, and so another cost: the seed is what fixes them
    assert abs(module.loss(params, x, y, seed=4) - cost) > 1e-6
    module.sgd_step(params, x, y, 0.5, seed=3)
    text = doc.to_text()
    w = params["W1"][2, 1]  # w²₃₂ after the step, as the worked section prints it
    assert f"w²₃₂ ← -0.6 - 0.5 × (-0.005137997298) = {w:.10g}" in text


def test_the_masks_are_shown_as_numbers():
    text = chainrule.derivation(DROPOUT, at=POINT).to_text()
    lines = [line.strip() for line in text.splitlines()]
    title = (
        "Dropout masks, drawn with seed 3 as the module's dropout_masks(3, 3) draws them "
        "(one column per example)"
    )
    assert title in lines
    masks = module_from_spec(DROPOUT).dropout_masks(3, 3)["D1"]
    row = "; ".join(", ".join(f"{v:.10g}" for v in r) for r in masks)
    assert lines[lines.index(title) + 1] == f"D² = [{row}]"
    # BP4 for a hidden weight shows the mask as a factor of the chain rule
    assert "∂C/∂w²₂₁ = ∂C/∂a²₂ D²₂ tanh'(z²₂) x₁" in lines


@pytest.mark.slow
def test_a_mask_of_another_seed_fails_the_check(monkeypatch):
    from chainrule import worked_check

    real = worked_check.with_masks

    def other_seed(point, module):  # noqa: ANN001, ANN202 - the masks of seed + 1, not seed
        drawn = real(dataclasses.replace(point, seed=point.seed + 1), module)
        return dataclasses.replace(drawn, seed=point.seed)

    monkeypatch.setattr(worked_check, "with_masks", other_seed)
    with pytest.raises(DerivationError, match="generated module gives"):
        chainrule.derivation(DROPOUT, at=POINT)


@pytest.mark.slow
def test_a_dropout_network_in_rows_with_a_skip_is_worked_out():
    spec = Spec(
        2,
        (Layer(2, "tanh"), Layer(2, "sigmoid", dropout=0.5, skip_from=1), Layer(1, "sigmoid")),
        "quadratic",
        layout="rows",
        l2=0.01,
    )
    point = {
        "x": [[0.5, -1.0], [1.5, 0.25]],
        "y": [[1.0], [0.0]],
        "seed": 11,
        "params": {
            "W1": [[0.1, -0.2], [0.3, 0.4]],
            "b1": [0.1, 0.0],
            "W2": [[0.2, -0.3], [0.5, 0.1]],
            "b2": [0.0, 0.2],
            "W3": [[0.4], [-0.7]],
            "b3": [0.05],
        },
    }
    doc = chainrule.derivation(spec, "cheatsheet", at=point)
    assert doc.worked.checked
    module = module_from_spec(spec)
    params, x, y = _arrays(point, "rows")
    params = {k: v.reshape(1, -1) if k.startswith("b") else v for k, v in params.items()}
    cost, _ = module.loss_and_grad(params, x, y, seed=11)
    assert abs(float(doc.worked.env["C"][0, 0]) - cost) <= 1e-12


# ------------------------------------------------------------------------------ the seed


def _refusal(tmp_path: Path, capsys, spec_text: str, values: str, name: str) -> str:
    (tmp_path / "net.toml").write_text(spec_text, encoding="utf-8")
    (tmp_path / name).write_text(values, encoding="utf-8")
    status = main(["derive", str(tmp_path / "net.toml"), "--at", str(tmp_path / name)])
    out, err = capsys.readouterr()
    assert status == 2 and out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


#: NaN is a TOML float (JSON has no NaN).
TOML_NAN = (
    "seed = nan\nx = [0.5, -1.0]\ny = [1.0]\n[params]\nW1 = [[0.1, -0.2], [0.3, 0.4], "
    "[0.5, -0.6]]\nb1 = [0.1, 0.0, -0.1]\nW2 = [[0.2, -0.3, 0.4]]\nb2 = [0.05]\n"
)


def _json(seed: object) -> str:
    return json.dumps({**POINT, "seed": seed}, ensure_ascii=False)


@pytest.mark.parametrize(
    ("values", "name", "words"),
    [
        (_json(-1), "v.json", "seed: -1 is outside 0 to 9223372036854775807"),
        (_json(2.0), "v.json", "seed: expected a whole number >= 0, got 2.0"),
        (_json(True), "v.json", "seed: expected a whole number >= 0, got True"),
        (_json("7"), "v.json", "seed: expected a whole number >= 0, got '7'"),
        (_json("٣"), "v.json", "seed: expected a whole number >= 0, got '٣'"),
        (_json(2**64), "v.json", "seed: 18446744073709551616 is outside 0 to"),
        (_json(None), "v.json", "seed: expected a whole number >= 0, got None"),
        (TOML_NAN, "v.toml", "seed: expected a whole number >= 0, got nan"),
    ],
)
def test_a_bad_seed_is_refused_in_one_line_naming_the_field(tmp_path, capsys, values, name, words):
    line = _refusal(tmp_path, capsys, DROPOUT_TOML, values, name)
    assert line.startswith(f"chainrule: error: {words}"), line


def test_a_missing_seed_is_refused_with_the_fix(tmp_path, capsys):
    values = {k: v for k, v in POINT.items() if k != "seed"}
    line = _refusal(tmp_path, capsys, DROPOUT_TOML, json.dumps(values), "v.json")
    assert line == (
        "chainrule: error: seed: missing: this network has dropout, and its masks are drawn "
        "from a seed; give seed = 0 (any whole number >= 0), as loss_and_grad(..., seed=0) takes"
    )


def test_a_seed_for_a_network_without_dropout_is_refused(tmp_path, capsys):
    plain = DROPOUT_TOML.replace("dropout = 0.4\n", "")
    line = _refusal(tmp_path, capsys, plain, _json(1), "v.json")
    assert line == (
        "chainrule: error: seed: this network has no dropout, so there is no mask to draw; "
        "remove seed"
    )


@pytest.mark.slow
def test_the_command_works_a_dropout_network_out(tmp_path, capsys):
    (tmp_path / "net.toml").write_text(DROPOUT_TOML, encoding="utf-8")
    (tmp_path / "v.json").write_text(json.dumps(POINT), encoding="utf-8")
    assert main(["derive", str(tmp_path / "net.toml"), "--at", str(tmp_path / "v.json")]) == 0
    out = capsys.readouterr().out
    assert "Every number agrees with the generated module's loss_and_grad." in out
    assert "Dropout masks, drawn with seed 3" in out


def test_the_readme_documents_the_seed():
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    flat = " ".join(readme.split())
    assert "seed = 3 # required with dropout: a whole number from 0 to 2**63 - 1" in flat
    assert "a `seed` for a network without dropout is refused" in flat


# ------------------------------------------------------------------------------ batch norm

#: Batch norm on layer 1, dropout on layer 2 with a skip from layer 1, L2, a softmax output.
BATCH_NORM = Spec(
    2,
    (
        Layer(3, "relu", batch_norm=True),
        Layer(3, "tanh", dropout=0.25, skip_from=1),
        Layer(2, "softmax"),
    ),
    "cross-entropy",
    l2=0.01,
)
BN_POINT = {
    "x": [[0.5, -1.0], [1.5, 0.25], [-0.3, 0.8]],
    "y": [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]],
    "lr": 0.5,
    "seed": 3,
    "params": {
        "W1": [[0.1, -0.2], [0.3, 0.4], [0.5, -0.6]],
        "gamma1": [1.0, 1.5, 0.5],
        "beta1": [0.0, 0.1, -0.2],
        "W2": [[0.2, -0.3, 0.4], [0.1, 0.2, 0.3], [-0.4, 0.2, 0.1]],
        "b2": [0.0, 0.1, 0.2],
        "W3": [[0.3, 0.1, -0.2], [0.2, 0.2, 0.1]],
        "b3": [0.05, -0.05],
    },
}
#: The same network without dropout (forward with batch statistics is then the output).
PLAIN_BN = Spec(
    2,
    (Layer(3, "relu", batch_norm=True), Layer(3, "tanh", skip_from=1), Layer(2, "softmax")),
    "cross-entropy",
    l2=0.01,
)
PLAIN_POINT = {k: v for k, v in BN_POINT.items() if k != "seed"}


def test_batch_norm_worked_numbers_equal_the_module():
    doc = chainrule.derivation(PLAIN_BN, at=PLAIN_POINT)
    env = doc.worked.env
    module = module_from_spec(PLAIN_BN)
    params, x, y = _arrays(PLAIN_POINT)
    cost, grads = module.loss_and_grad(params, x, y)
    assert abs(float(env["C"][0, 0]) - cost) <= 1e-12
    assert set(grads) == {"W1", "gamma1", "beta1", "W2", "b2", "W3", "b3"}
    for name, grad in grads.items():
        np.testing.assert_allclose(_as_array(env[naming.grad(name)]), grad, rtol=1e-10, atol=1e-14)
    # forward with the batch's statistics (state None) is the worked output
    np.testing.assert_allclose(_as_array(env["a3"]), module.forward(params, x), rtol=1e-12)
    # the batch statistics by hand from u = W1 x, and the three-term error from the gradient
    u = params["W1"] @ x
    np.testing.assert_allclose(_as_array(env["mean1"]), u.mean(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(_as_array(env["var1"]), u.var(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(
        _as_array(env["deltau1"]) @ x.T / 3, grads["W1"] - 0.01 * params["W1"]
    )
    module.sgd_step(params, x, y, 0.5)
    text = doc.to_text()
    assert "γ²₂ ← 1.5 - 0.5 × " in text and f"= {params['gamma1'][1, 0]:.10g}" in text


def test_batch_norm_with_dropout_is_worked_out_on_the_whole_batch():
    doc = chainrule.derivation(BATCH_NORM, "course", at=BN_POINT)
    assert doc.worked.checked
    module = module_from_spec(BATCH_NORM)
    params, x, y = _arrays(BN_POINT)
    cost, _ = module.loss_and_grad(params, x, y, seed=3)
    assert abs(float(doc.worked.env["C"][0, 0]) - cost) <= 1e-12
    lines = [line.strip() for line in doc.to_text().splitlines()]
    assert "Batch statistics of layer 1 (per unit, over the 3 examples)" in lines
    title = next(
        i for i, line in enumerate(lines) if line.startswith("Three-term error of layer 1")
    )
    assert lines[title + 1].startswith(
        "unit 1, example 1: m ∂C/∂u¹₁ = γ¹₁/(√(v¹₁ + ε)) (dz¹₁ - ∂C/∂β¹₁ - x̂¹₁ ∂C/∂γ¹₁) = "
    )
    # no one-example numbers: batch norm needs two examples
    assert not any("first of 3 examples" in line for line in lines)


def test_a_batch_of_one_is_refused_for_batch_norm(tmp_path, capsys):
    spec_text = (
        'input = 2\ncost = "quadratic"\n[[layers]]\nsize = 2\nactivation = "tanh"\n'
        'batch_norm = true\n[[layers]]\nsize = 1\nactivation = "sigmoid"\n'
    )
    values = json.dumps(
        {
            "x": [0.5, -1.0],
            "y": [1.0],
            "params": {
                "W1": [[0.1, 0.2], [0.3, 0.4]],
                "gamma1": [1, 1],
                "beta1": [0, 0],
                "W2": [[0.5, 0.6]],
                "b2": [0],
            },
        }
    )
    line = _refusal(tmp_path, capsys, spec_text, values, "v.json")
    assert line == (
        "chainrule: error: x: 1 example: batch normalization needs at least 2 (the variance of "
        "one is 0); give two or more examples, one per row"
    )


def _fake(real, forward):  # noqa: ANN001, ANN202 - the module with another _forward
    import types

    names = (
        "loss_and_grad",
        "loss",
        "forward",
        "sgd_step",
        "dropout_masks",
        "_loss_and_grad",
        "FORWARD_VALUES",
    )
    kept = {n: getattr(real, n) for n in names if hasattr(real, n)}
    return types.SimpleNamespace(**kept, _forward=forward)


def test_a_wrong_batch_statistic_in_the_module_fails_the_check(monkeypatch):
    real = module_from_spec(PLAIN_BN)

    def cache(params, x, *rest):  # noqa: ANN001, ANN202 - var1 off by 1e-7
        mean1, var1, *others = real._forward(params, x, *rest)  # u1: x-hat1's buffer
        return (mean1, var1 * (1 + 1e-7), *others)

    monkeypatch.setattr("chainrule.cmd_train.module_from_spec", lambda spec: _fake(real, cache))
    with pytest.raises(DerivationError, match=r"forward cache on the batch: var1\[0, 0\]"):
        chainrule.derivation(PLAIN_BN, at=PLAIN_POINT)


def test_a_forward_cache_of_another_length_is_an_error_not_skipped(monkeypatch):
    real = module_from_spec(PLAIN_BN)

    def cache(params, x, *rest):  # noqa: ANN001, ANN202 - one value short
        return real._forward(params, x, *rest)[1:]

    monkeypatch.setattr("chainrule.cmd_train.module_from_spec", lambda spec: _fake(real, cache))
    with pytest.raises(DerivationError, match="_forward gives 10 values for 11 statements"):
        chainrule.derivation(PLAIN_BN, at=PLAIN_POINT)


def test_forward_values_other_than_the_program_s_are_an_error(monkeypatch):
    real = module_from_spec(PLAIN_BN)
    fake = _fake(real, real._forward)
    fake.FORWARD_VALUES = ("var1", "mean1", *real.FORWARD_VALUES[2:])  # out of order
    monkeypatch.setattr("chainrule.cmd_train.module_from_spec", lambda spec: fake)
    with pytest.raises(DerivationError, match="are not the program's forward statements"):
        chainrule.derivation(PLAIN_BN, at=PLAIN_POINT)
    fake.FORWARD_VALUES = real.FORWARD_VALUES[1:]  # a^l or z^l missing, not only u^l
    with pytest.raises(DerivationError, match="are not the program's forward statements"):
        chainrule.derivation(PLAIN_BN, at=PLAIN_POINT)


def test_the_fast_module_s_x_hat_is_checked_and_its_u_left_out(monkeypatch):
    real = module_from_spec(PLAIN_BN)
    # the fast module computes x-hat1 in u1's buffer: u1 is not among its forward values
    assert "u1" not in real.FORWARD_VALUES and real.FORWARD_VALUES[:3] == ("mean1", "var1", "xhat1")
    assert chainrule.derivation(PLAIN_BN, at=PLAIN_POINT).worked.checked

    def cache(params, x, *rest):  # noqa: ANN001, ANN202 - x-hat1 off by 1e-7
        mean1, var1, xhat1, *others = real._forward(params, x, *rest)
        return (mean1, var1, xhat1 * (1 + 1e-7), *others)

    monkeypatch.setattr("chainrule.cmd_train.module_from_spec", lambda spec: _fake(real, cache))
    with pytest.raises(DerivationError, match=r"forward cache on the batch: xhat1\[0, 0\]"):
        chainrule.derivation(PLAIN_BN, at=PLAIN_POINT)


@pytest.mark.slow
def test_the_command_works_batch_norm_out(tmp_path, capsys):
    spec_text = (
        'input = 2\ncost = "cross-entropy"\n[[layers]]\nsize = 3\nactivation = "relu"\n'
        'batch_norm = true\n[[layers]]\nsize = 2\nactivation = "softmax"\n'
    )
    values = {
        "x": BN_POINT["x"],
        "y": BN_POINT["y"],
        "params": {k: BN_POINT["params"][k] for k in ("W1", "gamma1", "beta1")}
        | {"W2": [[0.3, 0.1, -0.2], [0.2, 0.2, 0.1]], "b2": [0.05, -0.05]},
    }
    (tmp_path / "net.toml").write_text(spec_text, encoding="utf-8")
    (tmp_path / "v.json").write_text(json.dumps(values), encoding="utf-8")
    for fmt in ("text", "md", "tex"):
        argv = ["derive", str(tmp_path / "net.toml"), "--at", str(tmp_path / "v.json")]
        assert main([*argv, "--format", fmt]) == 0
        out = capsys.readouterr().out
        assert "Every number agrees with the generated module" in out
        assert "Batch statistics of layer" in out


@pytest.mark.slow
@pytest.mark.parametrize("notation", ["nielsen", "3b1b", "cheatsheet", "course"])
def test_the_worked_batch_norm_document_compiles_to_pdf(tmp_path, capsys, notation):
    import shutil

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed")
    spec_text = (
        'input = 2\ncost = "cross-entropy"\nl2 = 0.01\n[[layers]]\nsize = 3\nactivation = "relu"\n'
        'batch_norm = true\n[[layers]]\nsize = 3\nactivation = "tanh"\ndropout = 0.25\n'
        'skip_from = 1\n[[layers]]\nsize = 2\nactivation = "softmax"\n'
    )
    (tmp_path / "net.toml").write_text(spec_text, encoding="utf-8")
    (tmp_path / "v.json").write_text(json.dumps(BN_POINT), encoding="utf-8")
    out = tmp_path / "d.pdf"
    argv = ["derive", str(tmp_path / "net.toml"), "--at", str(tmp_path / "v.json")]
    assert main([*argv, "--notation", notation, "-o", str(out)]) == 0, capsys.readouterr().err
    assert out.read_bytes().startswith(b"%PDF-")


def test_the_readme_says_derive_at_works_batch_norm_out():
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    flat = " ".join(readme.split())
    assert "`derive --at` works a batch-normalized network out on the whole batch" in flat
    assert "`derive --at`, `compare`, `graph` and `--form unrolled` refuse batch norm" not in flat


def test_batch_norm_in_rows_with_dropout_below_is_worked_out():
    spec = Spec(
        2,
        (Layer(2, "relu", dropout=0.25), Layer(2, "tanh", batch_norm=True), Layer(1, "sigmoid")),
        "quadratic",
        layout="rows",
    )
    point = {
        "x": [[0.5, -1.0], [1.5, 0.25], [-0.3, 0.8], [0.1, 0.1]],
        "y": [[1.0], [0.0], [1.0], [0.5]],
        "lr": 0.1,
        "seed": 5,
        "params": {
            "W1": [[0.1, -0.2], [0.3, 0.4]],
            "b1": [0.1, 0.25],
            "W2": [[0.2, -0.3], [0.1, 0.2]],
            "gamma2": [1.0, 2.0],
            "beta2": [0.1, -0.1],
            "W3": [[0.3], [-0.5]],
            "b3": [0.05],
        },
    }
    doc = chainrule.derivation(spec, "cheatsheet", at=point)
    assert doc.worked.checked
    lines = [line.strip() for line in doc.to_text().splitlines()]
    assert "unit 2: μ₁,₂ = -0.001166666667, v₁,₂ = 0.01124141667" in lines
    module = module_from_spec(spec)
    params, x, y = _arrays(point, "rows")
    params = {
        k: v.reshape(1, -1) if v.shape[1] == 1 and k[0] in "bg" else v for k, v in params.items()
    }
    u = (
        module.dropout_masks(4, 5)["D1"] * np.maximum(x @ params["W1"] + params["b1"], 0)
    ) @ params["W2"]
    np.testing.assert_allclose(u.mean(axis=0)[1], -0.001166666667, rtol=1e-9)
