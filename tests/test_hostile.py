"""Hostile and careless use: NaN in a checked module, exits, pipes, odd output paths.

Each test pins a promise of the README's Safety section that once failed under use
like this; ``tests/soak_hostile.py`` repeats the concurrency and hostile cases at length.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from chainrule.codegen.render import generate_module
from chainrule.derive.spec import spec_from_dict
from conftest import REPO, cli_env

from chainrule.check import check_file

SMALL = spec_from_dict(
    {
        "input": 2,
        "layers": [{"size": 3, "activation": "tanh"}, {"size": 2, "activation": "sigmoid"}],
        "cost": "quadratic",
    }
)

#: The line of the module that writes dC/db^1; a NaN is planted in dC/dW^1 after it.
_LAST_GRADIENT = '    dC_db1 = np.matmul(delta1, ws["ones"], out=out["b1"])\n'
_LOSS = "    C = np.sum(1 / 2 * (a2 - y) ** 2) / m\n"


def _broken_module(tmp_path: Path, old: str, new: str, count: int = -1) -> Path:
    source = generate_module(SMALL)
    assert old in source
    path = tmp_path / "broken.py"
    path.write_text(source.replace(old, new, count), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        # The first entry of W1: max(0.0, nan) kept 0.0, so the check passed.
        (_LAST_GRADIENT, _LAST_GRADIENT + "    dC_dW1[0, 0] = np.nan\n", "W1[0, 0]: the gradient"),
        (_LAST_GRADIENT, _LAST_GRADIENT + "    dC_db1[1, 0] = np.inf\n", "b1[1, 0]: the gradient"),
        # loss() (not loss_and_grad) gives NaN: every estimate is NaN.
        (_LOSS, _LOSS.replace("/ m\n", "/ m + np.nan\n"), "the finite-difference estimate"),
        (_LOSS, _LOSS.replace("/ m\n", "/ m * np.inf\n"), "the loss is"),
    ],
)
def test_check_fails_on_nan_and_inf(
    tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess], old, new, where
) -> None:
    count = 1 if "nan" in new and old == _LOSS else -1
    path = _broken_module(tmp_path, old, new, count)
    report = check_file(path)
    assert not report.passed
    assert any(where in note for note in report.nonfinite), report.nonfinite
    done = run_cli("check", str(path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "gradient check: FAILED" in done.stdout
    assert where in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "args", [("--version",), ("--help",), ("generate", "--help"), ("presets",)]
)
def test_full_standard_output_is_one_line_and_status_2(args: tuple[str, ...]) -> None:
    # argparse swallowed the OSError of --help and --version: exit 0, nothing written.
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "chainrule", *args],
            cwd=REPO,
            env=cli_env(),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2
    assert done.stderr == (
        "chainrule: error: cannot write to standard output: No space left on device\n"
    )


@pytest.mark.slow
def test_compare_plot_fix_followed_literally_works(
    tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess]
) -> None:
    # It said "add --sweep depth=1:8"; adding it then failed: a sweep takes no network.
    refused = run_cli("compare", "--preset", "3b1b-chain", "--plot", "p.svg", cwd=tmp_path)
    assert refused.returncode == 2
    assert "leave out the network and add --sweep depth=1:8" in refused.stderr
    done = run_cli("compare", "--plot", "p.svg", "--sweep", "depth=1:8", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.svg").read_bytes().startswith(b"<?xml")


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ("generate", "--preset", "3b1b-chain", "-o", "{deep}.py"),
        ("derive", "--preset", "3b1b-chain", "-o", "{deep}.md"),
        ("graph", "--preset", "3b1b-chain", "-o", "{deep}.svg"),
        ("check", "{deep}.py"),
        ("generate", "{deep}.toml"),
        ("train", "--preset", "3b1b-chain", "--data", "{deep}.npz"),
    ],
)
def test_a_path_of_4000_characters_gives_a_short_line(
    tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess], args: tuple[str, ...]
) -> None:
    # Each error quoted the whole path: a 4,000-character "one line".
    deep = "cc/" * 1300 + "net"
    done = run_cli(*(a.format(deep=deep) for a in args), cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chainrule: error: ")
    assert len(lines[0]) < 250, lines[0][:300]
    assert "..." in lines[0]  # the quoted path, cut in its middle


@pytest.mark.parametrize(
    "body",
    [
        "class M(torch.nn.Module):\n    def __init__(self):\n        raise SystemExit(0)\n",
        "def M():\n    raise SystemExit(0)\n",
        "def M():\n    raise ValueError('no model')\n",
    ],
)
@pytest.mark.slow
def test_from_torch_name_that_exits_when_called_is_one_line(
    tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess], body: str
) -> None:
    # The import was guarded; calling NAME() was not, and SystemExit(0) gave exit 0.
    pytest.importorskip("torch")
    (tmp_path / "model.py").write_text("import torch\n\n" + body, encoding="utf-8")
    done = run_cli(
        "generate", "--from-torch", "model.py:M", "--cost", "quadratic", "-o", "n.py", cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr.startswith("chainrule: error: from-torch: calling M() raised ")
    assert len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "n.py").exists()


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("train", "--preset", "3b1b-chain", "--lr", "\uff11"), "--lr"),  # fullwidth 1
        (("train", "--preset", "3b1b-chain", "--lr", "\u0663e-1"), "--lr"),  # Arabic-Indic 3
        (("train", "--preset", "3b1b-chain", "--lr", "nan"), "--lr"),
        (("train", "--preset", "3b1b-chain", "--lr", "1e400"), "--lr"),
        (("compare", "--sweep", "depth=\u0661:\u0663"), "sweep"),
        (("compare", "--sweep", "width=1:" + "9" * 5000), "sweep"),
        (("train", "--preset", "3b1b-chain", "--epochs", "\u0663"), "--epochs"),
        (("train", "--preset", "3b1b-chain", "--batch-size", "\uff18"), "--batch-size"),
        (("compare", "--preset", "3b1b-chain", "--budget", "\uff12e7"), "--budget"),
        (("compare", "--sweep", "depth=1:3", "--width", "\u00b3"), "--width"),
        (("check", "net.py", "--seed", "\u0663"), "--seed"),
        (
            ("generate", "--sizes", "\u00b2,3", "--activations", "sigmoid", "--cost", "quadratic"),
            "--sizes",
        ),
    ],
)
def test_unicode_digits_in_numeric_options_are_one_line(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], flag: str
) -> None:
    # float() and int() read Unicode digits: "--lr \uff11" trained with lr 1.0.
    from chainrule.cli import main

    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"chainrule: error: {flag}")
    assert len(err.splitlines()) == 1 and len(err) < 250


@pytest.mark.parametrize("data", ["digits", "labels", "targets"])
@pytest.mark.slow
def test_train_input_width_fix_followed_literally_trains(
    tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess], data: str
) -> None:
    # It suggested "--sizes 64,32,10" alone, which is refused without --activations.
    import re

    import numpy as np

    rng = np.random.default_rng(0)
    source = ["--dataset", "digits"]
    if data != "digits":
        y = rng.standard_normal((40, 2)) if data == "targets" else rng.integers(0, 2, 40)
        np.savez(tmp_path / "d.npz", x=rng.standard_normal((40, 5)), y=y)
        source = ["--data", "d.npz"]
    refused = run_cli("-q", "train", "--preset", "nielsen", *source, "--epochs", "1", cwd=tmp_path)
    assert refused.returncode == 2
    found = re.search(r"e\.g\. (--sizes .*) in place of the network named", refused.stderr)
    assert found, refused.stderr
    done = run_cli("-q", "train", *found.group(1).split(), *source, "--epochs", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout


@pytest.mark.slow
def test_soak_hostile_cases_pass_on_a_few_networks(tmp_path: Path) -> None:
    import soak_hostile

    assert soak_hostile.run(3, 7, tmp_path) == []


#: SMALL with a batch-normalized layer and a layer with dropout and a skip before its
#: output (so that its generation reuses SMALL's derivation of the output).
SOAKED = spec_from_dict(
    {
        "input": 2,
        "layers": [
            {"size": 3, "activation": "tanh", "batch_norm": True},
            {"size": 3, "activation": "tanh", "dropout": 0.3, "skip_from": 1},
            {"size": 2, "activation": "sigmoid"},
        ],
        "cost": "quadratic",
        "l2": 0.01,
    }
)


def _soak_network(build: Callable) -> tuple:
    """SOAKED and its module, from the session's cache."""
    return SOAKED, build(SOAKED)


def test_soak_draws_batch_norm_and_dropout_on_a_third_of_hidden_layers_each() -> None:
    import numpy as np
    import soak_hostile

    rng = np.random.default_rng(0)
    specs = [soak_hostile.random_spec(rng) for _ in range(600)]
    hidden = [layer for spec in specs for layer in spec.layers[:-1]]
    normalized = [layer for layer in hidden if layer.batch_norm]
    dropped = [layer for layer in hidden if layer.dropout]
    assert all(not layer.bias and not layer.dropout for layer in normalized)
    assert all(not spec.layers[-1].batch_norm and not spec.layers[-1].dropout for spec in specs)
    assert {layer.dropout for layer in dropped} == {0.1, 0.3, 0.5}
    spread = (1 / 3 * 2 / 3 / len(hidden)) ** 0.5  # the standard deviation of a share
    for share in (len(normalized) / len(hidden), len(dropped) / len(hidden)):
        assert abs(share - 1 / 3) < 4 * spread, share


@pytest.mark.slow
def test_soak_hostile_cases_pass_on_a_network_with_batch_norm_and_dropout(
    tmp_path: Path, build: Callable
) -> None:
    import soak_hostile

    spec, net = _soak_network(build)
    source = Path(net.__file__).read_text(encoding="utf-8")
    assert soak_hostile.concurrency(net, spec, repeats=3) == []
    assert soak_hostile.nan_check(source, tmp_path) == []
    assert soak_hostile.header_bomb(net, tmp_path) == []
    (tmp_path / "paths").mkdir()
    assert soak_hostile.hostile_paths(tmp_path / "paths") == []


def test_soak_concurrency_reports_a_call_that_raises_in_a_thread(
    build: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An exception in a thread only reaches threading.excepthook: the check must catch it.
    import threading

    import soak_hostile

    spec, net = _soak_network(build)
    train = net.train

    def main_thread_only(*args: object, **kwargs: object) -> list[float]:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("planted")
        return train(*args, **kwargs)

    monkeypatch.setattr(net, "train", main_thread_only)
    found = soak_hostile.concurrency(net, spec, repeats=1)
    assert len(found) == soak_hostile.THREADS
    assert all("raised RuntimeError: planted" in line for line in found), found


def test_soak_concurrency_compares_each_threads_batch_norm_state(
    build: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One state dict for every thread: the parameters still agree, the statistics do not.
    import soak_hostile

    spec, net = _soak_network(build)
    shared = net.init_state()
    monkeypatch.setattr(net, "init_state", lambda: shared)
    found = soak_hostile.concurrency(net, spec, repeats=1)
    assert found
    assert all("results differ from the lone calls" in line for line in found), found


def test_npz_array_under_the_cap_but_over_the_memory_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Below 2**31 entries nothing else was checked: 778 KB of compressed zeros
    # claiming (20000, 5000) made train --data peak at 1.6 GB before any refusal.
    import numpy as np

    from chainrule import limits

    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, x=np.zeros((1000, 500)))
    monkeypatch.setattr(limits, "available_memory", lambda: 1_000_000)
    read: list[str] = []
    with np.load(path) as archive:
        monkeypatch.setattr(type(archive), "__getitem__", lambda self, key: read.append(key))
        with pytest.raises(limits.ResourceError, match=r"data\.x: claims shape \(1000, 500\)"):
            limits.npz_array(archive, "x", "data.x")
    assert read == []


DIGITS = spec_from_dict(
    {
        "input": 64,
        "layers": [{"size": 8, "activation": "tanh"}, {"size": 10, "activation": "softmax"}],
        "cost": "cross-entropy",
    }
)


@pytest.mark.parametrize(
    ("command", "function", "raised"),
    [
        ("check", "init_params", "raise SystemExit(0)"),
        ("check", "loss_and_grad", "raise SystemExit(0)"),
        ("check", "loss_and_grad", "raise KeyError('b2')"),
        ("train", "init_params", "raise SystemExit(0)"),
        ("train", "train", "raise SystemExit(0)"),
        ("train", "forward", "raise RuntimeError('boom')"),
    ],
)
@pytest.mark.slow
def test_module_code_that_exits_while_running_is_one_line(
    tmp_path: Path,
    run_cli: Callable[..., subprocess.CompletedProcess],
    command: str,
    function: str,
    raised: str,
) -> None:
    # Only the import was guarded: a module whose loss_and_grad (check) or train
    # (train --module) raised SystemExit(0) made the command exit 0 with no output.
    # A definition at the end replaces the generated one.
    source = generate_module(DIGITS) + f"\n\ndef {function}(*args, **kwargs):\n    {raised}\n"
    (tmp_path / "m.py").write_text(source, encoding="utf-8")
    args = ("check", "m.py") if command == "check" else ("-q", "train", "--module", "m.py")
    done = (
        run_cli(*args, "--epochs", "1", cwd=tmp_path)
        if command == "train"
        else run_cli(*args, cwd=tmp_path)
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("chainrule: error: ")
    assert f"raised {raised.split()[1].split('(')[0]}" in done.stderr
