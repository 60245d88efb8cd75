"""``chainrule train``: a generated module learns real data with its own ``train()``.

Digits (scikit-learn's bundled 8x8 images) and ``.npz`` files, through the Python
API and the command line; a few epochs each, accuracy well above chance, clear
one-line errors for data that does not fit. Nothing here is timed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from chainrule.derive.spec import Spec

from chainrule.cmd_train import (
    DataError,
    Dataset,
    digits_dataset,
    fit,
    module_from_spec,
    npz_dataset,
    split,
    targets,
)

DIGITS_NET = ["--sizes", "64,32,10", "--activations", "relu,softmax", "--cost", "cross-entropy"]


def _blobs(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian blobs in 4 dimensions, integer labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centers = np.array([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    return centers[labels] + 0.5 * rng.standard_normal((n, 4)), labels


def test_split_is_disjoint_complete_and_seeded():
    train, test = split(100, seed=3)
    assert len(test) == 25 and len(train) == 75
    assert sorted(np.concatenate([train, test])) == list(range(100))
    again = split(100, seed=3)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)


def test_targets_one_hot_labels_and_check_the_width():
    data = Dataset("t", np.zeros((3, 2)), np.array([0, 2, 1]))
    np.testing.assert_array_equal(targets(data, 3), np.eye(3)[[0, 2, 1]])
    with pytest.raises(DataError, match="labels go up to 2 but the network has 2 outputs"):
        targets(data, 2)


@pytest.mark.slow
def test_digits_train_well_above_chance_in_a_few_epochs():
    pytest.importorskip("sklearn")
    data = digits_dataset()
    assert data.x.shape == (1797, 64) and data.x.max() == 1.0
    module = module_from_spec(Spec.from_sizes([64, 32, 10], ["relu", "softmax"], "cross-entropy"))
    result = fit(module, data, epochs=4, batch_size=32, lr=0.3, seed=0)
    assert len(result.losses) == 4 and result.losses[-1] < result.losses[0]
    assert result.test_accuracy > 0.8  # chance is 0.1
    assert all(s >= 0 for s in result.seconds)


@pytest.mark.parametrize(
    "spec",
    [
        Spec.from_sizes([4, 8, 3], ["sigmoid", "sigmoid"], "quadratic"),
        Spec.from_sizes([4, 8, 3], ["tanh", "softmax"], "cross-entropy", layout="rows"),
        Spec.from_sizes([4, 8, 3], ["relu", "softmax"], "cross-entropy", dtype="float32"),
    ],
    ids=["sigmoid-quadratic", "rows", "float32"],
)
def test_any_layout_and_dtype_learns_separable_data(spec):
    x, labels = _blobs()
    module = module_from_spec(spec)
    lr = 2.0 if spec.cost == "quadratic" else 0.3
    result = fit(module, Dataset("blobs", x, labels), epochs=15, batch_size=16, lr=lr, seed=1)
    assert result.test_accuracy > 0.9  # chance is 1/3


@pytest.mark.slow
def test_npz_file_trains_through_the_cli(tmp_path, run_cli):
    x, labels = _blobs()
    path = tmp_path / "blobs.npz"
    np.savez(path, x=x, y=labels)
    done = run_cli(
        "train",
        "--sizes",
        "4,8,3",
        "--activations",
        "relu,softmax",
        "--cost",
        "cross-entropy",
        "--data",
        str(path),
        "--epochs",
        "10",
        "--batch-size",
        "16",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert set(summary) == {"test_accuracy", "epochs", "seconds_per_epoch", "history"}
    assert summary["epochs"] == 10 and summary["test_accuracy"] > 0.9
    history = summary["history"]
    assert [h["epoch"] for h in history] == list(range(1, 11))
    assert all(set(h) == {"epoch", "loss", "test_accuracy", "seconds"} for h in history)
    assert history[-1]["test_accuracy"] == summary["test_accuracy"]
    assert history[-1]["loss"] < history[0]["loss"]


@pytest.mark.slow
def test_digits_through_the_cli_prints_each_epoch(run_cli):
    pytest.importorskip("sklearn")
    done = run_cli("train", *DIGITS_NET, "--dataset", "digits", "--epochs", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [
        ["epoch", "1"],
        ["epoch", "2"],
        ["epoch", "3"],
    ]
    assert "test accuracy" in lines[0] and lines[-1].startswith("64-32-10 on digits")
    accuracy = float(lines[2].split("test accuracy")[1].split()[0])
    assert accuracy > 0.5


@pytest.mark.slow
def test_plot_writes_a_png(tmp_path, run_cli):
    pytest.importorskip("matplotlib")
    x, labels = _blobs(80)
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=labels)
    png = tmp_path / "loss.png"
    args = ["--sizes", "4,5,3", "--activations", "tanh,softmax", "--cost", "cross-entropy"]
    done = run_cli("train", *args, "--data", str(data), "--epochs", "2", "--plot", str(png))
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("arrays", "field", "words"),
    [
        ({"x": np.zeros((10, 4))}, "data", "has no array 'y'"),
        ({"x": np.zeros(10), "y": np.zeros(10, int)}, "data.x", "expected a 2-D real array"),
        ({"x": np.zeros((10, 4)), "y": np.zeros(9, int)}, "data.y", "has 9 examples"),
        ({"x": np.zeros((10, 4)), "y": np.full(10, 0.5)}, "data.y", "whole numbers"),
        ({"x": np.full((10, 4), np.nan), "y": np.zeros(10, int)}, "data", "NaN"),
        ({"x": np.zeros((10, 4)), "y": np.zeros((10, 2, 2))}, "data.y", "expected integer"),
    ],
    ids=["no-y", "x-1d", "length", "fractional-labels", "nan", "y-3d"],
)
def test_bad_npz_files_give_one_clear_line(tmp_path, arrays, field, words):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as info:
        npz_dataset(path)
    assert info.value.field == field and words in str(info.value)


@pytest.mark.parametrize(
    ("sizes", "words"),
    [
        ("5,8,3", "the examples have 4 features but the network has 5 inputs"),
        ("4,8,2", "labels go up to 2 but the network has 2 outputs"),
    ],
)
@pytest.mark.slow
def test_cli_names_the_misfit_and_exits_2(tmp_path, run_cli, sizes, words):
    x, labels = _blobs(40)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=labels)
    args = ["--sizes", sizes, "--activations", "relu,softmax", "--cost", "cross-entropy"]
    done = run_cli("train", *args, "--data", str(path), "--epochs", "1")
    assert done.returncode == 2
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_cli_rejects_missing_files_and_bad_numbers(tmp_path, run_cli):
    missing = run_cli("train", *DIGITS_NET, "--data", str(tmp_path / "nope.npz"))
    assert missing.returncode == 2 and "is not a file" in missing.stderr
    zero = run_cli("train", *DIGITS_NET, "--epochs", "0")
    assert zero.returncode == 2 and "--epochs" in zero.stderr
    negative = run_cli("train", *DIGITS_NET, "--lr", "-1")
    assert negative.returncode == 2 and "--lr" in negative.stderr
    not_npz = tmp_path / "x.npz"
    not_npz.write_text("hello")
    garbage = run_cli("train", *DIGITS_NET, "--data", str(not_npz))
    assert garbage.returncode == 2 and "cannot read" in garbage.stderr


@pytest.mark.slow
def test_a_generated_file_trains_with_module(tmp_path, run_cli):
    x, labels = _blobs(80)
    data = tmp_path / "d.npz"
    np.savez(data, x=x, y=labels)
    module = tmp_path / "net.py"
    args = ["--sizes", "4,6,3", "--activations", "sigmoid,softmax", "--cost", "cross-entropy"]
    assert run_cli("generate", *args, "-o", str(module)).returncode == 0
    done = run_cli(
        "train",
        "--module",
        str(module),
        "--data",
        str(data),
        "--epochs",
        "30",
        "--lr",
        "1",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["test_accuracy"] > 0.8
    both = run_cli("train", "--module", str(module), *args, "--data", str(data))
    assert both.returncode == 2 and "give a module or a network" in both.stderr


def test_targets_outside_the_cost_rows_range_are_refused_naming_it():
    data = Dataset("t", np.zeros((2, 2)), np.array([[0.5, -5.0], [1.0, 0.0]]))
    with pytest.raises(DataError) as info:
        targets(data, 2, "binary-cross-entropy")
    assert "[0, 1]" in str(info.value) and "-5" in str(info.value)
    assert targets(data, 2, "quadratic").shape == (2, 2)
    probabilities = Dataset("p", np.zeros((1, 2)), np.array([[0.3, 0.3]]))
    with pytest.raises(DataError, match="sum to one"):
        targets(probabilities, 2, "cross-entropy")
    labels = Dataset("l", np.zeros((2, 2)), np.array([0, 1]))
    np.testing.assert_array_equal(targets(labels, 2, "cross-entropy"), np.eye(2))
