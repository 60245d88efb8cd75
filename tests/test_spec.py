"""The architecture spec: presets, the Python API, TOML and JSON files, and validation.

Every route (Python, file, preset, one-liner) goes through the same validation and
names the same field when something is wrong.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import sympy as sp
from chainrule.derive.errors import ChainruleError, SpecError
from chainrule.derive.spec import (
    Layer,
    Spec,
    load_spec,
    preset,
    preset_description,
    preset_names,
    preset_source,
)

import chainrule

#: The design card's table of seed networks, as (sizes, activations, cost, bias, layout).
PRESETS = {
    "3b1b-chain": ((1, 1, 1, 1), ("sigmoid",) * 3, "squared-error", True, "columns", "004"),
    "nielsen": ((784, 30, 10), ("sigmoid",) * 2, "quadratic", True, "columns", "002"),
    "two-layer-nobias": ((4, 5, 3), ("sigmoid",) * 2, "quadratic", False, "columns", "001"),
    "cheatsheet-relu": ((1, 1, 1), ("relu",) * 2, "quadratic", False, "rows", "003"),
    "deep-relu-sigmoid": (
        (12, 8, 8, 8, 1),
        ("relu", "relu", "relu", "sigmoid"),
        "binary-cross-entropy",
        True,
        "columns",
        "000",
    ),
}


def test_preset_names_in_order():
    assert preset_names() == tuple(PRESETS)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_matches_the_seed_table(name):
    sizes, acts, cost, bias, layout, seed = PRESETS[name]
    spec = preset(name)
    assert spec.sizes == sizes
    assert spec.activations == acts
    assert spec.cost == cost
    assert all(layer.bias is bias for layer in spec.layers)
    assert (spec.layout, spec.dtype, spec.name) == (layout, "float64", name)
    assert spec.source == f"preset {name}"
    assert preset_description(name).startswith(f"seed {seed}:")
    source = preset_source(name)
    assert len(source) > 30 and "seed" not in source
    assert chainrule.preset(name) == spec


def test_nielsen_sizes_depth_and_parameter_count():
    spec = preset("nielsen")
    assert spec.depth == 2
    assert spec.input_size == 784
    assert spec.parameter_count == 784 * 30 + 30 + 30 * 10 + 10
    assert preset("two-layer-nobias").parameter_count == 4 * 5 + 5 * 3


def test_spec_is_frozen_and_hashable():
    spec = preset("nielsen")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.cost = "squared-error"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.layers[0].size = 3  # type: ignore[misc]
    assert hash(spec) == hash(preset("nielsen"))
    assert isinstance(spec.layers, tuple)


def test_from_sizes_builds_layers_with_one_bias_flag():
    spec = Spec.from_sizes([3, 4, 2], ["tanh", "softmax"], "cross-entropy", bias=False)
    assert spec.layers == (Layer(4, "tanh", False), Layer(2, "softmax", False))
    assert not spec.layers[0].is_custom
    assert Layer(4, "x*sigmoid(x)").is_custom


def test_replace_validates_again():
    spec = preset("nielsen").replace(input_size=6, layout="rows", dtype="float32")
    assert (spec.sizes, spec.layout, spec.dtype) == ((6, 30, 10), "rows", "float32")
    assert spec.source == "preset nielsen"
    with pytest.raises(SpecError) as info:
        preset("nielsen").replace(cost="cross-entropy")
    assert info.value.field == "cost"


def test_to_dict_round_trips_through_json_and_toml(tmp_path):
    spec = Spec(
        3,
        (Layer(4, "x*sigmoid(x)", True), Layer(2, "sigmoid", False)),
        "binary-cross-entropy",
        "rows",
        "float32",
        "my net",
    )
    path = tmp_path / "net.json"
    path.write_text(json.dumps(spec.to_dict()), encoding="utf-8")
    loaded = load_spec(path)
    assert loaded == spec
    assert "net.json" in loaded.source and not loaded.source.startswith("preset")
    toml = tmp_path / "net.toml"
    toml.write_text(
        'name = "my net"\ninput = 3\ncost = "binary-cross-entropy"\nlayout = "rows"\n'
        'dtype = "float32"\n\n[[layers]]\nsize = 4\nactivation = "x*sigmoid(x)"\n\n'
        '[[layers]]\nsize = 2\nactivation = "sigmoid"\nbias = false\n',
        encoding="utf-8",
    )
    assert load_spec(toml) == spec
    assert chainrule.load_spec(str(toml)) == spec


def test_file_defaults_are_columns_float64_and_biases_on(tmp_path):
    path = tmp_path / "net.toml"
    path.write_text('input = 2\ncost = "quadratic"\n[[layers]]\nsize = 1\nactivation = "tanh"\n')
    spec = load_spec(path)
    assert (spec.layout, spec.dtype, spec.name, spec.layers[0].bias) == (
        "columns",
        "float64",
        "network",
        True,
    )


def _layers(*pairs):
    return tuple(Layer(size, act) for size, act in pairs)


#: (constructor arguments, field named, fragment of the message)
BAD_SPECS = {
    "size-zero": (dict(input_size=0), "input", "not positive"),
    "size-bool": (dict(input_size=True), "input", "whole number"),
    "size-float": (dict(layers=_layers((2.0, "tanh"))), "layers[0].size", "whole number"),
    "too-wide": (dict(layers=_layers((10**6, "tanh"))), "layers[0].size", "larger"),
    "no-layers": (dict(layers=()), "layers", "no layers"),
    "unknown-activation": (
        dict(layers=_layers((2, "sigmod"))),
        "layers[0].activation",
        "did you mean 'sigmoid'",
    ),
    "softmax-hidden": (
        dict(layers=_layers((3, "softmax"), (2, "tanh"))),
        "layers[0].activation",
        "output layer",
    ),
    "softmax-one-unit": (dict(layers=_layers((1, "softmax"))), "layers[0].size", "constant"),
    "ce-one-output": (
        dict(layers=_layers((1, "sigmoid")), cost="cross-entropy"),
        "cost",
        "at least 2 outputs",
    ),
    "ce-without-softmax": (
        dict(layers=_layers((2, "sigmoid")), cost="cross-entropy"),
        "cost",
        "softmax",
    ),
    "bce-unbounded-output": (
        dict(layers=_layers((2, "linear")), cost="binary-cross-entropy"),
        "cost",
        "sigmoid",
    ),
    "unknown-cost": (dict(cost="mse"), "cost", "unknown value"),
    "bad-layout": (dict(layout="cols"), "layout", "did you mean 'columns'"),
    "bad-dtype": (dict(dtype="float16"), "dtype", "float64"),
    "empty-name": (dict(name=""), "name", "non-empty"),
    "bias-not-bool": (dict(layers=(Layer(2, "tanh", 1),)), "layers[0].bias", "true or false"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_invalid_spec_names_the_field(case):
    changes, field, fragment = BAD_SPECS[case]
    args = dict(input_size=3, layers=_layers((2, "sigmoid")), cost="quadratic") | changes
    with pytest.raises(SpecError) as info:
        Spec(**args)
    assert info.value.field == field
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"{field}: ")
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ChainruleError) and info.value.fix


@pytest.mark.parametrize(
    "text",
    ["__import__('os')", "x.__class__", "open('f')", "x**1000", "lambda x: x", "x if x else 1"],
)
def test_custom_activation_outside_the_whitelist_is_a_spec_error(text):
    with pytest.raises(SpecError) as info:
        Spec(3, (Layer(2, text), Layer(1, "sigmoid")), "quadratic")
    assert info.value.field == "layers[0].activation"


def test_from_sizes_count_mismatch_and_too_few_sizes():
    with pytest.raises(SpecError) as info:
        Spec.from_sizes([3, 4, 2], ["sigmoid"], "quadratic")
    assert info.value.field == "activations"
    with pytest.raises(SpecError) as info:
        Spec.from_sizes([3], [], "quadratic")
    assert info.value.field == "sizes"


@pytest.mark.parametrize(
    ("name", "text", "field"),
    [
        ("nan.json", '{"input": NaN, "cost": "quadratic", "layers": []}', "spec"),
        ("inf.json", '{"input": Infinity, "cost": "quadratic", "layers": []}', "spec"),
        ("dup.json", '{"input": 3, "input": 3, "cost": "quadratic", "layers": []}', "input"),
        ("bad.json", '{"input": 3,', "spec"),
        ("list.json", "[1, 2]", "spec"),
        ("bad.toml", "input = = 3", "spec"),
        ("missing.toml", 'input = 3\n[[layers]]\nsize = 2\nactivation = "tanh"\n', "cost"),
        ("extra.toml", 'input = 3\ncost = "quadratic"\nwidth = 2\nlayers = []\n', "width"),
        ("layer.toml", 'input = 3\ncost = "quadratic"\n[[layers]]\nsize = 2\n', None),
        ("net.yaml", "input: 3", "spec"),
    ],
)
def test_bad_files_name_the_field(tmp_path, name, text, field):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.field == (field or "layers[0].activation")


def test_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "absent.toml")
    assert info.value.field == "spec" and "does not exist" in str(info.value)


def test_unknown_preset_suggests_the_closest_name():
    with pytest.raises(SpecError) as info:
        preset("nielson")
    assert info.value.field == "preset"
    assert "did you mean 'nielsen'" in str(info.value)


def test_public_api_generates_a_module():
    source = chainrule.generate(preset("3b1b-chain"))
    assert "def loss_and_grad(params, x, y, out=None, seed=None):" in source
    assert "LAYER_SIZES = (1, 1, 1, 1)" in source


def test_output_and_cost_compatibility_is_read_from_the_rows(monkeypatch):
    """A cost row added at run time is validated by its ranges alone, not by its name."""
    from chainrule.derive import tables
    from chainrule.derive.tables import UNIT, CostRow

    row = CostRow("log-only", -tables.Y * sp.log(tables.A), "-y log a", output=UNIT)
    monkeypatch.setitem(tables.COSTS, "log-only", row)
    assert Spec.from_sizes([2, 3], ["sigmoid"], "log-only").cost == "log-only"
    assert Spec.from_sizes([2, 3], ["softmax"], "log-only").cost == "log-only"
    with pytest.raises(SpecError) as info:
        Spec.from_sizes([2, 3], ["tanh"], "log-only")
    assert "outputs in (0, 1)" in str(info.value) and "(-1, 1)" in str(info.value)
    assert "sigmoid" in info.value.fix


@pytest.mark.slow
def test_every_row_range_is_consistent_with_its_expression():
    """Each activation's stated output range holds its values on a grid (and its kinks
    are where SymPy's derivative jumps)."""
    import numpy as np
    from chainrule.derive.numeric import real_value
    from chainrule.derive.tables import ACTIVATIONS

    x = sp.Symbol("x", real=True)
    grid = np.linspace(-15, 15, 2401)  # where float64 keeps open ends open
    for row in ACTIVATIONS.values():
        if row.expr is None:
            continue
        values = [real_value(row.expr, {x: float(v)}) for v in grid]
        assert row.output.holds(np.array(values)), row.name
        d = sp.diff(row.expr, x)
        for kink in row.kinks:
            left = real_value(d, {x: kink - 1e-9})
            right = real_value(d, {x: kink + 1e-9})
            assert abs(left - right) > 1e-3, (row.name, kink)


def test_each_preset_names_a_different_source_text() -> None:
    sources = [preset_source(name) for name in preset_names()]
    assert len(set(sources)) == len(sources)
    with pytest.raises(SpecError, match="unknown preset"):
        preset_source("nielson")


def test_the_readme_preset_table_names_the_same_source_texts() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for name in preset_names():
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"| {preset_source(name)} |" in row
        assert f"| {preset_description(name).split(':')[0].removeprefix('seed ')} |" in row
