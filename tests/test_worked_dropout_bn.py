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


def test_a_mask_of_another_seed_fails_the_check(monkeypatch):
    from chainrule import worked_check

    real = worked_check.with_masks

    def other_seed(point, module):  # noqa: ANN001, ANN202 - the masks of seed + 1, not seed
        drawn = real(dataclasses.replace(point, seed=point.seed + 1), module)
        return dataclasses.replace(drawn, seed=point.seed)

    monkeypatch.setattr(worked_check, "with_masks", other_seed)
    with pytest.raises(DerivationError, match="generated module gives"):
        chainrule.derivation(DROPOUT, at=POINT)


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
