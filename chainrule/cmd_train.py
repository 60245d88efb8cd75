"""``chainrule train``: train a generated module on real data with its own ``train()``.

The module is generated in memory from the spec (or loaded from a given file), linted,
and trained by mini-batch SGD on scikit-learn's bundled 8x8 digits (1797 images,
shipped inside scikit-learn: ``pip install 'chainrule[data]'``) or on an ``.npz`` file
with arrays ``x`` (examples first, shape (N, n0)) and ``y`` (integer labels of shape
(N,), or targets of shape (N, nL)). A held-out test split measures accuracy after
every epoch; the command prints per-epoch loss, test accuracy and seconds, or with
``--json`` one object ``{"test_accuracy", "epochs", "seconds_per_epoch"}``.

Examples
--------
>>> data = digits_dataset()  # doctest: +SKIP
>>> data.x.shape, data.y.shape  # doctest: +SKIP
((1797, 64), (1797,))
"""

from __future__ import annotations

import argparse
import json
import time
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chainrule.cliargs import (
    add_spec_arguments,
    count_type,
    positive_number,
    seed_type,
    spec_from_args,
)
from chainrule.derive.errors import ChainruleError, SpecError
from chainrule.derive.spec import Spec
from chainrule.limits import npz_array, require_memory
from chainrule.outfiles import plot_format, refuse_foreign_picture, save_figure

EXIT_OK = 0
#: Labels of a 1-D y stay below this (the widest layer a spec allows).
MAX_CLASSES = 100_000
#: Fraction of the examples held out for the test accuracy.
TEST_FRACTION = 0.25


class DataError(ChainruleError):
    """A data set is missing, unreadable or does not fit the network."""


@dataclass(frozen=True)
class Dataset:
    """Examples-first data: inputs ``x`` (N, n0) as floats, ``y`` labels (N,) or targets (N, k)."""

    name: str
    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class TrainResult:
    """Per-epoch history of one training run."""

    losses: tuple[float, ...]
    test_accuracies: tuple[float, ...]
    seconds: tuple[float, ...]

    @property
    def test_accuracy(self) -> float:
        """Accuracy on the held-out split after the last epoch."""
        return self.test_accuracies[-1]

    @property
    def seconds_per_epoch(self) -> float:
        """Mean wall time of one epoch of ``train()`` (evaluation not included)."""
        return float(np.mean(self.seconds))


def digits_dataset() -> Dataset:
    """scikit-learn's 8x8 digits, pixels scaled from 0..16 to 0..1, integer labels 0..9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError(
            "dataset",
            "digits needs scikit-learn, which is not installed",
            "pip install 'chainrule[data]' (or scikit-learn), or give --data FILE.npz",
        ) from None
    bunch = load_digits()
    return Dataset("digits", bunch.data.astype(np.float64) / 16.0, bunch.target.astype(np.int64))


def npz_dataset(path: str | Path) -> Dataset:
    """Read arrays ``x`` (N, n0) and ``y`` ((N,) integer labels or (N, k) targets) from ``path``."""
    path = Path(path)
    if not path.is_file():
        raise DataError("data", f"{str(path)!r} is not a file", "give an .npz file with x and y")
    try:
        with np.load(path, allow_pickle=False) as archive:
            # Only x and y are read, each after its header (dtype, shape) is checked.
            names = sorted(archive.files)
            arrays = {k: npz_array(archive, k, f"data.{k}") for k in ("x", "y") if k in names}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(
            "data",
            f"cannot read {str(path)!r} as .npz ({type(exc).__name__})",
            "save it with numpy.savez(path, x=..., y=...)",
        ) from None
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise DataError(
            "data",
            f"{str(path)!r} has no array {missing[0]!r} (it has {names})",
            "save it with numpy.savez(path, x=inputs, y=labels_or_targets)",
        )
    x, y = arrays["x"], arrays["y"]
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise DataError(
            "data.x",
            f"expected a 2-D real array (examples, features), got shape {x.shape} of {x.dtype}",
            "store one example per row",
        )
    if y.ndim not in (1, 2) or not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
        raise DataError(
            "data.y",
            f"expected integer labels (N,) or targets (N, k), got shape {y.shape} of {y.dtype}",
            "store labels as integers 0..k-1 or one target row per example",
        )
    if y.shape[0] != x.shape[0]:
        raise DataError(
            "data.y",
            f"has {y.shape[0]} examples but x has {x.shape[0]}",
            "give one label or target row per example of x",
        )
    if x.shape[0] < 4:
        raise DataError("data.x", f"only {x.shape[0]} examples", "give at least 4 examples")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise DataError("data", "x or y holds NaN or infinity", "clean the data first")
    if y.ndim == 1 and y.max() >= MAX_CLASSES:  # before the cast, which would overflow
        raise DataError(
            "data.y",
            f"a label is {float(y.max()):.3g}, more classes than a layer may have",
            f"store class labels 0..k-1 with k at most {MAX_CLASSES:,}",
        )
    if y.ndim == 1 and not (np.all(y == np.round(y)) and y.min() >= 0):
        raise DataError(
            "data.y",
            "1-D y must hold class labels 0, 1, 2, ... (whole numbers)",
            "store labels as integers, or targets as a 2-D array",
        )
    return Dataset(path.name, x.astype(np.float64), y if y.ndim == 2 else y.astype(np.int64))


def targets(dataset: Dataset, outputs: int, cost: str | None = None) -> np.ndarray:
    """Targets of shape (N, outputs): one-hot rows for labels, the array itself for targets.

    With ``cost`` given, the targets must lie in that cost row's target range (a
    binary cross-entropy target of -5 is refused, naming the range).
    """
    y = dataset.y
    if y.ndim == 2:
        if y.shape[1] != outputs:
            raise DataError(
                "data.y",
                f"targets have {y.shape[1]} columns but the network has {outputs} outputs",
                f"make the last layer {y.shape[1]} units wide",
            )
        out = y.astype(np.float64)
    else:
        classes = int(y.max()) + 1
        if classes > outputs:
            raise DataError(
                "data.y",
                f"labels go up to {classes - 1} but the network has {outputs} outputs",
                f"make the last layer {classes} units wide",
            )
        out = np.zeros((y.shape[0], outputs))
        out[np.arange(y.shape[0]), y] = 1.0
    if cost is not None:
        _check_target_range(out, cost)
    return out


def _check_target_range(y: np.ndarray, cost: str) -> None:
    """Refuse targets outside the range the cost row gives (never a test of the name)."""
    from chainrule.derive.tables import COSTS

    allowed = COSTS[cost].targets
    if not allowed.holds(y):
        bad = y[~np.isfinite(y) | (y != np.clip(y, allowed.low, allowed.high))]
        shown = f" (e.g. {bad.flat[0]:g})" if bad.size else ""
        raise DataError(
            "data.y",
            f"{cost} takes targets in {allowed.text}, and some lie outside{shown}",
            f"rescale the targets into {allowed.text} or choose another --cost",
        )
    if allowed.simplex and not np.allclose(y.sum(axis=1), 1.0, atol=1e-6):
        raise DataError(
            "data.y",
            f"{cost} takes targets in {allowed.text}, and some rows do not sum to one",
            "give class labels or probability rows",
        )


def split(n: int, seed: int, test_fraction: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, test) index arrays; the test split holds ``test_fraction`` of n."""
    test_fraction = TEST_FRACTION if test_fraction is None else test_fraction
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(test_fraction * n)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def module_from_spec(spec: Spec) -> types.ModuleType:
    """Generate, lint and load the module of ``spec`` in memory (no file is written)."""
    from chainrule.codegen.emit import lint_module
    from chainrule.codegen.render import generate_module

    source = generate_module(spec)
    lint_module(source)
    module = types.ModuleType(f"chainrule_generated_{spec.name}")
    # The source is chainrule's own output and has just passed the lint above.
    exec(compile(source, f"<chainrule module {spec.name}>", "exec"), module.__dict__)  # noqa: S102
    return module


def _as_layout(module: types.ModuleType, rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Examples-first data in the module's layout: itself (rows) or its transpose (columns)."""
    out = rows if module.LAYOUT == "rows" else rows.T
    return np.ascontiguousarray(out, dtype=dtype)


def decision_threshold(module: types.ModuleType) -> float:
    """Where a one-output network's decision flips: 0 for tanh (range -1..1), else 0.5."""
    return 0.0 if tuple(module.ACTIVATIONS)[-1] == "tanh" else 0.5


def accuracy(module: types.ModuleType, params: dict, x: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of examples classified right: the largest output is the label's class, or
    for one output, the output and the target lie on the same side of the threshold.

    ``labels`` holds class indices, or for a one-output network the targets themselves.
    """
    out = module.forward(params, x)
    if module.LAYER_SIZES[-1] == 1:
        threshold = decision_threshold(module)
        predicted = np.asarray(out).reshape(-1) > threshold
        return float(np.mean(predicted == (np.asarray(labels).reshape(-1) > threshold)))
    predicted = np.argmax(out, axis=1 if module.LAYOUT == "rows" else 0)
    return float(np.mean(predicted == labels))


def _outputs_needed(dataset: Dataset, outputs: int) -> int:
    """How many outputs the data needs: the target columns, or at least one per class."""
    if dataset.y.ndim == 2:
        return int(dataset.y.shape[1])
    return max(outputs, int(dataset.y.max()) + 1)


def _one_liner_for(dataset: Dataset) -> str:
    """A whole one-liner that trains on ``dataset`` (``--sizes`` alone is refused)."""
    outputs = _outputs_needed(dataset, 1)
    if dataset.y.ndim == 2:
        head = "linear --cost squared-error"
    elif outputs == 1:
        head = "sigmoid --cost binary-cross-entropy"
    else:
        head = "softmax --cost cross-entropy"
    return f"--sizes {dataset.x.shape[1]},32,{outputs} --activations relu,{head}"


def fit(
    module: types.ModuleType,
    dataset: Dataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    on_epoch: object = None,
) -> TrainResult:
    """Train ``module`` on ``dataset`` with its own ``train()``, one epoch per call.

    ``on_epoch(epoch, loss, test_accuracy, seconds)`` is called after every epoch.
    """
    sizes = module.LAYER_SIZES
    if dataset.x.shape[1] != sizes[0]:
        raise DataError(
            "data.x",
            f"the examples have {dataset.x.shape[1]} features but the network has "
            f"{sizes[0]} inputs",
            f"make the input {dataset.x.shape[1]} wide, e.g. {_one_liner_for(dataset)} "
            "in place of the network named",
        )
    examples = max(batch_size, dataset.x.shape[0])  # the accuracy runs on a whole split
    require_memory(sizes, examples, "training", np.dtype(module.DTYPE).itemsize)
    y_all = targets(dataset, sizes[-1], module.COST)
    labels = y_all[:, 0] if sizes[-1] == 1 else np.argmax(y_all, axis=1)
    train_idx, test_idx = split(dataset.x.shape[0], seed)
    dtype = np.dtype(module.DTYPE)
    x_train = _as_layout(module, dataset.x[train_idx], dtype)
    y_train = _as_layout(module, y_all[train_idx], dtype)
    x_test = _as_layout(module, dataset.x[test_idx], dtype)
    params = module.init_params(seed)
    losses, accs, seconds = [], [], []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        history = module.train(
            params, x_train, y_train, epochs=1, batch_size=batch_size, lr=lr, seed=seed + epoch
        )
        elapsed = time.perf_counter() - start
        losses.append(float(history[-1]))
        accs.append(accuracy(module, params, x_test, labels[test_idx]))
        seconds.append(elapsed)
        if not np.isfinite(losses[-1]):
            raise DataError(
                "lr", f"the loss diverged at epoch {epoch} with lr {lr:g}", "try a smaller --lr"
            )
        if on_epoch is not None:
            on_epoch(epoch, losses[-1], accs[-1], elapsed)
    return TrainResult(tuple(losses), tuple(accs), tuple(seconds))


def plot_losses(result: TrainResult, path: str | Path, *, force: bool = False) -> None:
    """Draw the per-epoch training loss and test accuracy to a .png or .svg file (matplotlib).

    The picture replaces only a picture chainrule drew, unless ``force``.
    """
    plot_format(path, "--plot")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DataError(
            "plot", "matplotlib is not installed", "pip install matplotlib, or drop --plot"
        ) from None
    epochs = np.arange(1, len(result.losses) + 1)
    fig, left = plt.subplots(figsize=(6, 4))
    left.plot(epochs, result.losses, color="tab:blue", label="training loss")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss", color="tab:blue")
    right = left.twinx()
    right.plot(epochs, result.test_accuracies, color="tab:orange", label="test accuracy")
    right.set_ylabel("test accuracy", color="tab:orange")
    fig.tight_layout()
    try:
        save_figure(fig, path, force=force, flag="--plot")
    finally:
        plt.close(fig)


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``chainrule train``; returns the exit status."""
    from chainrule.check import load_module
    from chainrule.progress import progress

    if not (np.isfinite(args.lr) and args.lr > 0):
        raise SpecError("--lr", f"must be a positive number, got {args.lr}", "try --lr 0.3")
    if args.dataset and args.data:
        raise SpecError("--data", "given with --dataset", "choose one data source")
    if args.plot:
        plot_format(args.plot, "--plot")  # refuse a bad name or a user's file before training
        refuse_foreign_picture(args.plot, force=args.force)
    if args.module:
        if args.spec or args.preset or args.sizes is not None:
            raise SpecError("--module", "given with a network", "give a module or a network")
        module = load_module(args.module)
    else:
        module = module_from_spec(spec_from_args(args))
    dataset = npz_dataset(args.data) if args.data else digits_dataset()

    lines: list[str] = []

    def report(epoch: int, loss: float, acc: float, seconds: float) -> None:
        line = f"epoch {epoch:>3}  loss {loss:.4f}  test accuracy {acc:.4f}  {seconds:.3f} s"
        lines.append(line)
        if not args.json:
            print(line, flush=True)
        bar.note(f"loss {loss:.3f}, test accuracy {acc:.3f}")
        bar.advance()

    sizes = "-".join(map(str, module.LAYER_SIZES))
    try:
        with progress(f"training {sizes} on {dataset.name}", total=args.epochs) as bar:
            result = fit(
                module,
                dataset,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                on_epoch=report,
            )
    except (KeyboardInterrupt, ChainruleError):
        raise
    except BaseException as exc:
        if not args.module:  # chainrule's own module: a bug, with its traceback
            raise
        # The file's own code ran here and raised or exited (SystemExit(0) gave status 0).
        raise SpecError(
            "--module",
            f"{args.module!r} raised {type(exc).__name__}: {str(exc)[:200]} while training",
            "regenerate the module",
        ) from None
    if args.plot:
        plot_losses(result, args.plot, force=args.force)
    summary = {
        "test_accuracy": result.test_accuracy,
        "epochs": args.epochs,
        "seconds_per_epoch": result.seconds_per_epoch,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{sizes} on {dataset.name}: test accuracy {result.test_accuracy:.4f} after "
            f"{args.epochs} epochs, {result.seconds_per_epoch * 1000:.2f} ms per epoch"
        )
        if args.plot:
            print(f"wrote {args.plot}")
    return EXIT_OK


def configure(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``chainrule train``."""
    parser.description = (
        "Generate a network's module in memory and train it with its own train() "
        "(mini-batch SGD), reporting per-epoch loss, test accuracy and time."
    )
    parser.epilog = (
        "examples:\n"
        "  chainrule train --sizes 64,32,10 --activations relu,softmax --cost cross-entropy "
        "--dataset digits\n"
        "  chainrule train net.toml --data data.npz --epochs 20 --json\n\n"
        ".npz files hold x (examples, features) and y (integer labels, or one target row "
        "per example). A one-output network counts an example right when output and "
        "target lie on the same side of 0.5 (of 0 for a tanh output)."
    )
    add_spec_arguments(parser)
    parser.add_argument("--module", help="train this generated .py file instead of a network")
    parser.add_argument(
        "--dataset", choices=("digits",), help="scikit-learn's 8x8 digits (the default)"
    )
    parser.add_argument("--data", help="an .npz file with arrays x (N, n0) and y")
    parser.add_argument(
        "--epochs", type=count_type("--epochs"), default=60, help="passes over the data (60)"
    )
    parser.add_argument(
        "--batch-size", type=count_type("--batch-size"), default=32, help="examples per step (32)"
    )
    parser.add_argument(
        "--lr",
        type=lambda text: positive_number(text, "--lr"),
        default=0.3,
        help="learning rate eta (0.3)",
    )
    parser.add_argument(
        "--seed", type=seed_type, default=0, help="seed of split, weights, shuffles (0 or more)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", help="draw loss and accuracy per epoch to FILE.png or FILE.svg")
    parser.add_argument(
        "--force", action="store_true", help="let --plot replace a file chainrule did not draw"
    )
    parser.set_defaults(func=cmd_train)
