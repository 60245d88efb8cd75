"""Generated modules save and load their parameters as .npz, checking keys and shapes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from chainrule.codegen.render import generate_module
from chainrule.derive.spec import Spec, preset


def _module(spec: Spec, tmp_path: Path, stem: str):
    path = tmp_path / f"{stem}.py"
    path.write_text(generate_module(spec), encoding="utf-8")
    loader = importlib.util.spec_from_file_location(stem, path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def test_round_trip_keeps_every_array(tmp_path: Path) -> None:
    net = _module(preset("deep-relu-sigmoid"), tmp_path, "deep")
    params = net.init_params(seed=5)
    net.save_params(tmp_path / "weights.npz", params)
    loaded = net.load_params(tmp_path / "weights.npz")
    assert list(loaded) == list(params) == ["W1", "b1", "W2", "b2", "W3", "b3", "W4", "b4"]
    for key in params:
        np.testing.assert_array_equal(loaded[key], params[key])
    assert net.PARAM_SHAPES["W1"] == (8, 12) and net.PARAM_SHAPES["b4"] == (1, 1)
    x = np.random.default_rng(0).standard_normal((12, 5))
    assert net.loss(loaded, x, np.ones((1, 5))) == net.loss(params, x, np.ones((1, 5)))


def test_rows_layout_and_float32(tmp_path: Path) -> None:
    spec = preset("cheatsheet-relu").replace(dtype="float32")
    net = _module(spec, tmp_path, "relu32")
    params = {"W1": np.array([[0.5]]), "W2": np.array([[-2.0]])}  # float64 in
    net.save_params(tmp_path / "p.npz", params)
    loaded = net.load_params(tmp_path / "p.npz")
    assert loaded["W2"].dtype == np.float32 and loaded["W2"][0, 0] == -2.0


def test_wrong_network_is_refused(tmp_path: Path) -> None:
    chain = _module(preset("3b1b-chain"), tmp_path, "chain")
    nobias = _module(preset("two-layer-nobias"), tmp_path, "nobias")
    chain.save_params(tmp_path / "chain.npz", chain.init_params())
    with pytest.raises(ValueError, match="expected"):
        nobias.load_params(tmp_path / "chain.npz")
    wrong = nobias.init_params()
    wrong["W2"] = wrong["W2"].T
    nobias.save_params(tmp_path / "wrong.npz", wrong)
    with pytest.raises(ValueError, match=r"W2 has shape \(5, 3\), expected \(3, 5\)"):
        nobias.load_params(tmp_path / "wrong.npz")


def test_pickled_objects_are_not_loaded(tmp_path: Path) -> None:
    chain = _module(preset("3b1b-chain"), tmp_path, "chain2")
    np.savez(tmp_path / "evil.npz", W1=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        chain.load_params(tmp_path / "evil.npz")
