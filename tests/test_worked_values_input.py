"""Bad ``--at`` values files: one line naming the field, exit status 2, nothing printed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from chainrule.derive.errors import SpecError
from chainrule.derive.spec import Spec
from chainrule.derive.values import load_values, read_point
from mazur import MAZUR_POINT
from mazur import MAZUR_SPEC as SPEC

from chainrule.cli import main

GOOD = {
    "x": "[0.05, 0.10]",
    "y": "[0.01, 0.99]",
    "lr": "0.5",
    "W1": "[[0.15, 0.20], [0.25, 0.30]]",
    "b1": "[0.35, 0.35]",
    "W2": "[[0.40, 0.45], [0.50, 0.55]]",
    "b2": "[0.60, 0.60]",
}


def toml(**changes: str | None) -> str:
    """The good values file with some entries replaced (None: left out)."""
    fields = {k: v for k, v in {**GOOD, **changes}.items() if v is not None}
    top = [f"{k} = {v}" for k, v in fields.items() if k in ("x", "y", "lr")]
    params = [f"{k} = {v}" for k, v in fields.items() if k not in ("x", "y", "lr")]
    return "\n".join([*top, "[params]", *params])


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, name: str) -> str:
    spec = tmp_path / "net.toml"
    spec.write_text(SPEC)
    values = tmp_path / name
    values.write_text(text)
    status = main(["derive", str(spec), "--at", str(values)])
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"W1": "[[0.15, 0.20, 0.1], [0.25, 0.30, 0.1]]"}, "params.W1: expected shape (2, 2)"),
        ({"W1": "[0.15, 0.20, 0.25, 0.30]"}, "params.W1: expected shape (2, 2), got a flat list"),
        ({"b2": "[0.6, 0.6, 0.6]"}, "params.b2: expected shape (2, 1) or a flat list"),
        ({"W2": "[[0.4, nan], [0.5, 0.55]]"}, "params.W2[0][1]: nan is not a finite number"),
        ({"b1": "[inf, 0.35]"}, "params.b1[0]: inf is not a finite number"),
        ({"W1": '[["a", 0.2], [0.25, 0.3]]'}, "params.W1[0][0]: expected a number, got 'a'"),
        ({"W1": "[[true, 0.2], [0.25, 0.3]]"}, "params.W1[0][0]: expected a number, got True"),
        ({"x": "[0.05]"}, "x: expected 2 number(s) per example"),
        ({"y": None}, "y: missing from the values"),
        ({"b2": None}, "params.b2: missing"),
        ({"W3": "[[1.0]]"}, "params.W3: not a parameter of this network"),
        ({"lr": "-0.5"}, "lr: -0.5 is not positive"),
        ({"lr": '"fast"'}, "lr: expected a number"),
        ({"y": "[[0.01, 0.99], [0.5, 0.5]]"}, "y: 2 target example(s) for 1 input example(s)"),
    ],
)
def test_bad_values_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict, expected: str
) -> None:
    assert expected in run(tmp_path, capsys, toml(**changes), "values.toml")


def test_an_unknown_top_level_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = run(tmp_path, capsys, "eta = 0.5\n" + toml(), "values.toml")
    assert "eta: unknown key in the values; use only: x, y, lr, seed, params" in line


def test_json_nan_and_malformed_toml_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {"x": [0.05, 0.1], "y": [0.01, 0.99], "params": {}}
    text = json.dumps(data).replace('"params": {}', '"params": {"W1": [[NaN, 1], [1, 1]]}')
    assert "--at: unreadable values (NaN is not a finite number)" in run(
        tmp_path, capsys, text, "v.json"
    )
    assert "--at: malformed TOML" in run(tmp_path, capsys, "x = [0.05,", "v.toml")
    assert "neither .toml nor .json" in run(tmp_path, capsys, "x = 1", "v.yaml")


def test_a_missing_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "net.toml"
    spec.write_text(SPEC)
    status = main(["derive", str(spec), "--at", str(tmp_path / "nope.toml")])
    _, err = capsys.readouterr()
    assert status == 2
    assert "--at: " in err and "is not a file" in err


def test_targets_outside_the_cost_range_are_refused() -> None:
    spec = Spec.from_sizes([2, 1], ["sigmoid"], "binary-cross-entropy")
    point = {"x": [1, 2], "y": [1.5], "params": {"W1": [[0.1, 0.2]], "b1": [0.0]}}
    with pytest.raises(SpecError, match=r"^y: binary-cross-entropy takes targets in \[0, 1\]"):
        read_point(spec, point)


def test_rows_layout_takes_the_module_shapes() -> None:
    # In the rows layout W1 is (n0, n1) and a bias one row, as the generated module has them.
    spec = Spec.from_sizes([3, 2], ["sigmoid"], "quadratic", layout="rows")
    point = {"x": [1, 2, 3], "y": [0.5, 0.5], "params": {"W1": [[1, 2], [3, 4], [5, 6]]}}
    point["params"]["b1"] = [0.1, 0.2]
    assert read_point(spec, point).param("b1") == ((0.1, 0.2),)
    point["params"]["W1"] = [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(SpecError, match=r"^params\.W1: expected shape \(3, 2\)"):
        read_point(spec, point)


def test_too_many_examples_for_the_network_are_refused() -> None:
    spec = Spec.from_sizes([784, 30, 10], ["sigmoid", "sigmoid"], "quadratic")
    point = {"x": [[0.0] * 784] * 50, "y": [[0.0] * 10] * 50, "params": {}}
    with pytest.raises(SpecError, match=r"^x: 50 examples .* give at most 41 example"):
        read_point(spec, point)


def test_json_and_toml_values_files_read_the_same(tmp_path: Path) -> None:
    spec = Spec.from_sizes([2, 2, 2], ["sigmoid", "sigmoid"], "quadratic")
    toml_file, json_file = tmp_path / "v.toml", tmp_path / "v.json"
    toml_file.write_text(toml())
    data = copy.deepcopy(MAZUR_POINT)
    json_file.write_text(json.dumps(data))
    from_toml = read_point(spec, load_values(toml_file))
    assert from_toml == read_point(spec, load_values(json_file))
    assert from_toml.param("b1") == ((0.35,), (0.35,))
    assert from_toml.m == 1 and from_toml.lr == 0.5


def test_duplicate_json_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.json"
    path.write_text('{"x": [1, 2], "x": [3, 4]}')
    with pytest.raises(SpecError, match="duplicate key 'x'"):
        load_values(path)
