"""``chainrule train --optimizer``: the flags reach the module's ``train``, bad ones are one line.

Every refusal exits with status 2 and one line naming the flag, before any training
(a ``--save`` file is never written). A run with an optimizer learns, and its state
(velocity, Adam's moments and step count) goes from one epoch's ``train`` call to the
next, so that the command trains one run, not one per epoch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from chainrule.derive.spec import Spec

from chainrule.cli import main
from chainrule.cmd_train import Dataset, fit, module_from_spec
from chainrule.optimizers import optimizer_options

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
NET = ["--sizes", "4,8,3", "--activations", "relu,softmax", "--cost", "cross-entropy"]


def _blobs(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian blobs in 4 dimensions, integer labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centers = np.array([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    return centers[labels] + 0.5 * rng.standard_normal((n, 4)), labels


@pytest.fixture
def data(tmp_path) -> str:
    x, labels = _blobs()
    path = tmp_path / "blobs.npz"
    np.savez(path, x=x, y=labels)
    return str(path)


BAD = [
    (["--optimizer", "Adam"], "--optimizer"),
    (["--optimizer", ""], "--optimizer"),
    (["--optimizer", "momentum", "--momentum", "nan"], "--momentum"),
    (["--optimizer", "momentum", "--momentum", "inf"], "--momentum"),
    (["--optimizer", "momentum", "--momentum", "1e999"], "--momentum"),
    (["--optimizer", "momentum", "--momentum", "1"], "--momentum"),
    (["--optimizer", "momentum", "--momentum", "0"], "--momentum"),
    (["--optimizer", "nesterov", "--momentum", "-0.5"], "--momentum"),
    (["--optimizer", "momentum", "--momentum", "\uff10.9"], "--momentum"),
    (["--optimizer", "momentum", "--momentum", "0.9x"], "--momentum"),
    (["--momentum", "0.9"], "--momentum"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum"),
    (["--optimizer", "adam", "--betas", "0.9"], "--betas"),
    (["--optimizer", "adam", "--betas", "0.9,0.999,0.5"], "--betas"),
    (["--optimizer", "adam", "--betas", "1,0.999"], "--betas item 1"),
    (["--optimizer", "adam", "--betas", "0.9,nan"], "--betas item 2"),
    (["--optimizer", "adam", "--betas", "0.9,"], "--betas item 2"),
    (["--optimizer", "adam", "--betas", "\u0660.9,0.999"], "--betas item 1"),
    (["--betas", "0.9,0.999"], "--betas"),
    (["--optimizer", "nesterov", "--eps", "1e-8"], "--eps"),
    (["--optimizer", "adam", "--eps", "0"], "--eps"),
    (["--optimizer", "adam", "--eps", "-1e-8"], "--eps"),
    (["--optimizer", "adam", "--eps", "inf"], "--eps"),
    (["--optimizer", "adam", "--eps", "nan"], "--eps"),
]


@pytest.mark.parametrize(
    ("extra", "flag"), BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_a_bad_optimizer_flag_is_one_line_and_nothing_is_written(
    tmp_path, data, capsys, extra, flag
):
    saved = tmp_path / "w.npz"
    argv = ["train", *NET, "--data", data, "--epochs", "1", "--save", str(saved), *extra]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert lines[0].startswith(f"chainrule: error: {flag}") or (
        lines[0].startswith("chainrule: error: arguments: ") and flag in lines[0]
    ), lines[0]
    assert not saved.exists()


@pytest.mark.parametrize(
    "extra",
    [
        ["--optimizer", "momentum", "--lr", "0.05"],
        ["--optimizer", "nesterov", "--momentum", "0.5", "--lr", "0.1"],
        ["--optimizer", "adam"],
        ["--optimizer", "adam", "--betas", "0.8,0.99", "--eps", "1e-6", "--lr", "0.01"],
    ],
    ids=["momentum", "nesterov", "adam-defaults", "adam-betas-eps"],
)
def test_each_optimizer_learns_through_the_command_line(data, capsys, extra):
    argv = ["train", *NET, "--data", data, "--epochs", "40", "--batch-size", "16", "--json"]
    assert main([*argv, *extra]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 40 and summary["test_accuracy"] > 0.9


def _args(**given) -> argparse.Namespace:
    fields = {"optimizer": None, "momentum": None, "betas": None, "eps": None, "lr": None}
    return argparse.Namespace(**{**fields, **given})


def test_the_flags_become_trains_keyword_arguments_with_the_documented_defaults():
    plain = _args()
    assert optimizer_options(plain) == {} and plain.lr == 0.3
    assert optimizer_options(_args(optimizer="sgd", lr=0.1)) == {}
    momentum = _args(optimizer="momentum")
    assert optimizer_options(momentum) == {"optimizer": "momentum", "momentum": 0.9}
    assert momentum.lr == 0.3
    nesterov = _args(optimizer="nesterov", momentum=0.5)
    assert optimizer_options(nesterov) == {"optimizer": "nesterov", "momentum": 0.5}
    adam = _args(optimizer="adam")
    assert optimizer_options(adam) == {"optimizer": "adam", "betas": (0.9, 0.999), "eps": 1e-8}
    assert adam.lr == 0.001
    tuned = _args(optimizer="adam", betas=(0.5, 0.9), eps=1e-3, lr=0.01)
    assert optimizer_options(tuned) == {"optimizer": "adam", "betas": (0.5, 0.9), "eps": 1e-3}
    assert tuned.lr == 0.01


@pytest.mark.parametrize("name", ["adam", "nesterov"])
def test_fit_carries_the_optimizer_state_from_epoch_to_epoch(name):
    module = module_from_spec(Spec.from_sizes([4, 8, 3], ["relu", "softmax"], "cross-entropy"))
    x, labels = _blobs()
    calls = []
    train = module.train

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return train(*args, **kwargs)

    module.train = recording
    options = {"optimizer": "adam"} if name == "adam" else {"optimizer": name, "momentum": 0.9}
    fit(module, Dataset("blobs", x, labels), epochs=3, batch_size=16, lr=0.01, optimizer=options)
    assert len(calls) == 3 and all(call["optimizer"] == name for call in calls)
    state = calls[0]["optimizer_state"]
    assert all(call["optimizer_state"] is state for call in calls)
    if name == "adam":
        batches = -(-90 // 16)  # 90 of the 120 examples train: a quarter is held out
        assert state["step"] == 3 * batches
    assert np.any(state["velocity" if name == "nesterov" else "m"]["W1"] != 0)


@pytest.mark.slow
def test_adam_with_its_defaults_on_digits_reaches_the_readmes_figure():
    """README: with --optimizer adam and its defaults (lr 0.001), the digits network
    (64-32-10 ReLU + softmax, 60 epochs, batch 32, seed 0) reaches 96.2%."""
    pytest.importorskip("sklearn")
    from chainrule.cmd_train import digits_dataset

    module = module_from_spec(Spec.from_sizes([64, 32, 10], ["relu", "softmax"], "cross-entropy"))
    args = _args(optimizer="adam")
    options = optimizer_options(args)
    result = fit(
        module, digits_dataset(), epochs=60, batch_size=32, lr=args.lr, seed=0, optimizer=options
    )
    assert abs(result.test_accuracy - 0.962) < 0.005
    assert "digits network above reaches 96.2% test accuracy in 60 epochs (seed 0)" in " ".join(
        README.split()
    )
    assert "whose `--lr` is 0.001 when not given" in " ".join(README.split())


def test_the_help_shows_an_optimizer_example_that_runs(data, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    example = "chainrule train net.toml --data data.npz --optimizer adam --betas 0.9,0.99"
    assert example in text and "--momentum MU" in text
    argv = ["train", *NET, "--data", data, "--optimizer", "adam", "--betas", "0.9,0.99"]
    assert main([*argv, "--epochs", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2


@pytest.mark.slow
def test_batch_norm_residual_adam_on_digits_matches_the_readmes_table():
    """README: seed 0 of the batch-norm + residual table, against the plain network."""
    pytest.importorskip("sklearn")
    from chainrule.derive.spec import load_spec

    from chainrule.cmd_train import digits_dataset

    data = digits_dataset()
    plain = module_from_spec(
        Spec.from_sizes([64, 32, 32, 10], ["relu", "relu", "softmax"], "cross-entropy")
    )
    plain_run = fit(plain, data, epochs=60, batch_size=32, lr=0.3, seed=0)
    spec = load_spec(Path(__file__).resolve().parents[1] / "examples" / "digits-bn-residual.toml")
    assert spec.layers[1].skip_from == 1 and spec.layers[0].batch_norm
    args = _args(optimizer="adam", lr=0.01)
    bn_run = fit(
        module_from_spec(spec),
        data,
        epochs=60,
        batch_size=32,
        lr=0.01,
        seed=0,
        optimizer=optimizer_options(args),
    )
    target = plain_run.test_accuracy
    first_plain = next(i + 1 for i, a in enumerate(plain_run.test_accuracies) if a >= target)
    first_bn = next(i + 1 for i, a in enumerate(bn_run.test_accuracies) if a >= target)
    assert abs(target - 0.9733) < 0.005 and abs(bn_run.test_accuracy - 0.98) < 0.005
    assert bn_run.test_accuracy >= target and first_bn < first_plain
    text = " ".join(README.split())
    assert "| 0 | 97.33% | 9 | 98.00% | 6 |" in text
    assert "It reaches the plain network's final accuracy in fewer epochs on every seed" in text
