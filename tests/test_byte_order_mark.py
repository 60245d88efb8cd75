"""A UTF-8 byte-order mark (as some editors write) is read past, in every text file taken."""

from __future__ import annotations

import json
from pathlib import Path

from chainrule.derive.spec import load_spec
from chainrule.derive.values import load_values
from mazur import MAZUR_POINT, MAZUR_SPEC

from chainrule.importers import spec_from_keras

BOM = "\ufeff"


def _write(path: Path, text: str) -> Path:
    path.write_text(BOM + text, encoding="utf-8")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    return path


def test_spec_files_with_a_bom_read_like_without(tmp_path: Path) -> None:
    plain = tmp_path / "plain.toml"
    plain.write_text(MAZUR_SPEC)
    marked = _write(tmp_path / "marked.toml", MAZUR_SPEC)
    assert load_spec(marked).to_dict() | {"name": ""} == load_spec(plain).to_dict() | {"name": ""}
    as_json = json.dumps(load_spec(plain).to_dict())
    assert load_spec(_write(tmp_path / "marked.json", as_json)).sizes == (2, 2, 2)


def test_values_files_with_a_bom_read_like_without(tmp_path: Path) -> None:
    spec_path = tmp_path / "net.toml"
    spec_path.write_text(MAZUR_SPEC)
    spec = load_spec(spec_path)
    text = json.dumps(MAZUR_POINT)
    plain = tmp_path / "plain.json"
    plain.write_text(text)
    marked = _write(tmp_path / "marked.json", text)
    assert load_values(marked, spec) == load_values(plain, spec) == MAZUR_POINT
    toml = "x = [0.05, 0.10]\ny = [0.01, 0.99]\n[params]\nW1 = [[0.15, 0.20], [0.25, 0.30]]\n"
    assert load_values(_write(tmp_path / "marked.toml", toml))["params"]["W1"][1] == [0.25, 0.3]


def test_keras_json_with_a_bom_reads(tmp_path: Path) -> None:
    model = {
        "class_name": "Sequential",
        "config": {
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 3]}},
                {"class_name": "Dense", "config": {"units": 2, "activation": "sigmoid"}},
            ]
        },
    }
    path = _write(tmp_path / "model.json", json.dumps(model))
    assert spec_from_keras(path, "quadratic").sizes == (3, 2)


def test_params_that_are_not_a_table_get_advice_for_both_formats(tmp_path: Path) -> None:
    from chainrule.derive.errors import SpecError
    from chainrule.derive.values import read_point

    spec_path = tmp_path / "net.toml"
    spec_path.write_text(MAZUR_SPEC)
    bad = dict(MAZUR_POINT, params=[1, 2])
    try:
        read_point(load_spec(spec_path), bad)
    except SpecError as exc:
        text = str(exc)
    else:
        raise AssertionError("a list of params was taken")
    assert "params" in text and "[params] in TOML" in text and "an object in JSON" in text
    json_point = json.loads(json.dumps(dict(MAZUR_POINT)))
    assert isinstance(json_point["params"], dict)  # the advised JSON shape reads
    assert read_point(load_spec(spec_path), json_point) is not None
