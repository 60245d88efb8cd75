"""``chainrule train``: train a generated module on real data with its own ``train()``.

The module is generated in memory from the spec (or loaded from a given file), linted,
and trained by mini-batch SGD (or momentum, Nesterov or Adam: :mod:`chainrule.optimizers`)
on scikit-learn's bundled 8x8 digits (1797 images, shipped inside scikit-learn:
``pip install 'chainrule[data]'``), on an ``.npz`` file
with arrays ``x`` (examples first, shape (N, n0)) and ``y`` (integer labels of shape
(N,), or targets of shape (N, nL)), or on MNIST's IDX files (:mod:`chainrule.mnist`).
``--save`` writes the trained weights through the module's ``save_params``. A held-out
test split measures accuracy after every epoch; the command prints per-epoch loss, test
accuracy and seconds, or with ``--json`` one object ``{"test_accuracy", "epochs",
"seconds_per_epoch", "history"}`` (and ``"validation_accuracy"`` for MNIST), where
``history`` holds each epoch's ``{"epoch", "loss", "test_accuracy", "seconds"}``.

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chainrule.cliargs import (
    add_spec_arguments,
    count_type,
    positive_number,
    quoted,
    seed_type,
    spec_from_args,
)
from chainrule.derive.errors import ChainruleError, SpecError
from chainrule.derive.spec import Spec
from chainrule.limits import npz_array, require_memory
from chainrule.optimizers import add_optimizer_arguments
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
    #: Held-out examples scored after every epoch; None holds out a seeded random
    #: :data:`TEST_FRACTION` of ``x`` instead.
    test: Dataset | None = None
    #: Held-out examples scored once, after the last epoch (MNIST's 10,000).
    validation: Dataset | None = None


@dataclass(frozen=True)
class TrainResult:
    """Per-epoch history of one training run, and the parameters it ended with."""

    losses: tuple[float, ...]
    test_accuracies: tuple[float, ...]
    seconds: tuple[float, ...]
    #: The trained parameters, as the module's ``init_params`` shapes them.
    params: dict = field(default_factory=dict, compare=False, repr=False)
    #: Accuracy on :attr:`Dataset.validation` after the last epoch, when there is one.
    validation_accuracy: float | None = None

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


def accuracy(
    module: types.ModuleType,
    params: dict,
    x: np.ndarray,
    labels: np.ndarray,
    state: dict | None = None,
) -> float:
    """Fraction of examples classified right: the largest output is the label's class, or
    for one output, the output and the target lie on the same side of the threshold.

    ``labels`` holds class indices, or for a one-output network the targets themselves;
    ``state`` holds the running statistics of batch-normalized layers (inference).
    """
    out = module.forward(params, x, state)
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


def _arrays(module: types.ModuleType, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """(x, y, labels): inputs and targets in the module's layout and dtype, labels for
    :func:`accuracy` (class indices, or for one output the targets), each of N examples."""
    labels = y[:, 0] if y.shape[1] == 1 else np.argmax(y, axis=1)
    dtype = np.dtype(module.DTYPE)
    return _as_layout(module, x, dtype), _as_layout(module, y, dtype), labels


def _splits(module: types.ModuleType, dataset: Dataset, seed: int) -> tuple[tuple, tuple]:
    """:func:`_arrays` of the training and the test examples: the data set's own test
    set, or a seeded random :data:`TEST_FRACTION` of its examples held out."""
    outputs, cost = module.LAYER_SIZES[-1], module.COST
    if dataset.test is not None:
        test = dataset.test
        return (
            _arrays(module, dataset.x, targets(dataset, outputs, cost)),
            _arrays(module, test.x, targets(test, outputs, cost)),
        )
    y_all = targets(dataset, outputs, cost)
    train_idx, test_idx = split(dataset.x.shape[0], seed)
    return (
        _arrays(module, dataset.x[train_idx], y_all[train_idx]),
        _arrays(module, dataset.x[test_idx], y_all[test_idx]),
    )


def _check_inputs(module: types.ModuleType, dataset: Dataset, batch_size: int) -> None:
    """Refuse examples whose width is not the network's input width, and a run too big."""
    sizes = module.LAYER_SIZES
    for part in (dataset, dataset.test, dataset.validation):
        if part is not None and part.x.shape[1] != sizes[0]:
            raise DataError(
                "data.x",
                f"the examples have {part.x.shape[1]} features but the network has "
                f"{sizes[0]} inputs",
                f"make the input {part.x.shape[1]} wide, e.g. {_one_liner_for(part)} "
                "in place of the network named",
            )
    # The accuracy runs on a whole held-out set at once.
    held = [len(part.x) for part in (dataset.test, dataset.validation) if part is not None]
    examples = max(batch_size, *held) if held else max(batch_size, len(dataset.x))
    require_memory(sizes, examples, "training", np.dtype(module.DTYPE).itemsize)


def _running_state(module: types.ModuleType, x_train: np.ndarray, batch_size: int) -> dict:
    """The module's running statistics (``{}`` without batch norm); a batch norm network
    refuses a batch size that leaves a last batch of one example."""
    state = module.init_state()
    examples = x_train.shape[0 if module.LAYOUT == "rows" else 1]
    if state and (examples < 2 or examples % batch_size == 1):
        raise DataError(
            "batch-size",
            f"{batch_size} leaves a batch of 1 of the {examples} training examples",
            "batch norm needs at least 2 per batch: choose another --batch-size",
        )
    return state


def fit(
    module: types.ModuleType,
    dataset: Dataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    on_epoch: object = None,
    optimizer: dict | None = None,
) -> TrainResult:
    """Train ``module`` on ``dataset`` with its own ``train()``, one epoch per call.

    ``optimizer`` holds the keyword arguments of ``train()`` that pick the update rule
    (``{"optimizer": "adam", "betas": (0.9, 0.999)}``; None or empty for plain SGD);
    its state (velocity, Adam's moments and step count) carries over from one epoch's
    call to the next through ``train()``'s ``optimizer_state``, so the run is one run.

    A network with batch norm keeps its running statistics from epoch to epoch (through
    ``train()``'s ``state``), and its accuracies use them, as inference does.

    The test accuracy after each epoch is measured on ``dataset.test``, or without one
    on a seeded random quarter of the examples held out; the validation accuracy, on
    ``dataset.validation`` after the last epoch. ``on_epoch(epoch, loss,
    test_accuracy, seconds)`` is called after every epoch.
    """
    _check_inputs(module, dataset, batch_size)
    (x_train, y_train, _), (x_test, _, test_labels) = _splits(module, dataset, seed)
    params = module.init_params(seed)
    state = _running_state(module, x_train, batch_size)
    options = dict(optimizer or {})
    if options:
        options["optimizer_state"] = {}
    losses, accs, seconds = [], [], []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        history = module.train(
            params,
            x_train,
            y_train,
            epochs=1,
            batch_size=batch_size,
            lr=lr,
            seed=seed + epoch,
            state=state,
            **options,
        )
        elapsed = time.perf_counter() - start
        losses.append(float(history[-1]))
        accs.append(accuracy(module, params, x_test, test_labels, state))
        seconds.append(elapsed)
        if not np.isfinite(losses[-1]):
            raise DataError(
                "lr", f"the loss diverged at epoch {epoch} with lr {lr:g}", "try a smaller --lr"
            )
        if on_epoch is not None:
            on_epoch(epoch, losses[-1], accs[-1], elapsed)
    validation = None
    if dataset.validation is not None:
        part = dataset.validation
        x_val, _, val_labels = _arrays(module, part.x, targets(part, module.LAYER_SIZES[-1]))
        validation = accuracy(module, params, x_val, val_labels, state)
    return TrainResult(tuple(losses), tuple(accs), tuple(seconds), params, validation)


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


def mnist_dataset(folder: str | Path) -> Dataset:
    """MNIST split as Nielsen splits it: of the training file's 60,000 images the first
    50,000 (five sixths) train and the last 10,000 validate; t10k's 10,000 test."""
    from chainrule.mnist import load_mnist

    data = load_mnist(folder)
    cut = len(data.train_x) - len(data.train_x) // 6
    validation = None
    if cut < len(data.train_x):
        validation = Dataset("MNIST validation", data.train_x[cut:], data.train_y[cut:])
    test = Dataset("MNIST t10k", data.test_x, data.test_y)
    return Dataset("MNIST", data.train_x[:cut], data.train_y[:cut], test, validation)


def _dataset_of(args: argparse.Namespace) -> Dataset:
    """The data set the arguments name: digits (the default), an .npz file, or MNIST."""
    if args.data_dir is not None and args.dataset != "mnist":
        raise SpecError("--data-dir", "given without --dataset mnist", "add --dataset mnist")
    if args.dataset == "mnist":
        if args.data_dir is None:
            raise SpecError(
                "--dataset",
                "mnist needs the folder holding its four IDX files",
                "add --data-dir DIR (see 'chainrule train --help')",
            )
        return mnist_dataset(args.data_dir)
    return npz_dataset(args.data) if args.data else digits_dataset()


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse before training a --plot or --save path that could not be written at the end."""
    from chainrule.codegen.emit import check_target
    from chainrule.outfiles import npz_is_ours

    if args.plot:
        plot_format(args.plot, "--plot")
        refuse_foreign_picture(args.plot, force=args.force)
    if args.save:
        if Path(args.save).suffix.lower() != ".npz":
            raise SpecError("--save", f"{quoted(args.save)} does not end in .npz", "name it W.npz")
        check_target(args.save, force=args.force, ours=npz_is_ours)


def save_weights(
    module: types.ModuleType, params: dict, path: str | Path, *, force: bool = False
) -> None:
    """Write ``params`` to ``path`` with the module's own ``save_params``, atomically.

    The archive carries chainrule's mark (its zip comment), and replaces only an
    ``.npz`` file chainrule saved, unless ``force``; ``load_params`` reads it back.
    """
    import io

    from chainrule.codegen.emit import write_file
    from chainrule.outfiles import mark_npz, npz_is_ours

    buffer = io.BytesIO()
    module.save_params(buffer, params)
    write_file(path, mark_npz(buffer.getvalue()), force=force, ours=npz_is_ours)


def _module_of(args: argparse.Namespace) -> types.ModuleType:
    """The module to train: the --module file, or the network's, generated in memory."""
    from chainrule.check import load_module

    if not args.module:
        return module_from_spec(spec_from_args(args))
    if args.spec or args.preset or args.sizes is not None:
        raise SpecError("--module", "given with a network", "give a module or a network")
    network = ("l2", "l1", "cost", "activations", "no_bias", "layout", "dtype", "name")
    for key in (*network, "from_keras", "from_torch"):
        if getattr(args, key, None) not in (None, False):  # the module fixed them in its code
            flag = "--" + key.replace("_", "-")
            raise SpecError(
                flag,
                "given with --module, whose network is fixed in its code",
                f"regenerate the module with {flag}, or drop it",
            )
    module = load_module(args.module)
    if args.save and not callable(getattr(module, "save_params", None)):
        raise SpecError("--save", f"{quoted(args.module)} has no save_params", "regenerate it")
    return module


def _summary(
    args: argparse.Namespace,
    result: TrainResult,
    sizes: str,
    name: str,
    history: list[dict[str, float]],
) -> None:
    """Print the closing line (or the JSON object, with ``history``: one entry per epoch,
    the figures of its printed line) and each file written."""
    summary = {
        "test_accuracy": result.test_accuracy,
        "epochs": args.epochs,
        "seconds_per_epoch": result.seconds_per_epoch,
        "history": history,
    }
    if result.validation_accuracy is not None:
        summary["validation_accuracy"] = result.validation_accuracy
    if args.json:
        print(json.dumps(summary))
        return
    validation = ""
    if result.validation_accuracy is not None:
        validation = f" (validation {result.validation_accuracy:.4f})"
    print(
        f"{sizes} on {name}: test accuracy {result.test_accuracy:.4f}{validation} after "
        f"{args.epochs} epochs, {result.seconds_per_epoch * 1000:.2f} ms per epoch"
    )
    for path in (args.plot, args.save):
        if path:
            print(f"wrote {path}")


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``chainrule train``; returns the exit status."""
    from chainrule.optimizers import check_eps_dtype, optimizer_options
    from chainrule.progress import progress

    options = optimizer_options(args)  # sets args.lr when not given
    if not (np.isfinite(args.lr) and args.lr > 0):
        raise SpecError("--lr", f"must be a positive number, got {args.lr}", "try --lr 0.3")
    if args.dataset and args.data:
        raise SpecError("--data", "given with --dataset", "choose one data source")
    _check_outputs(args)  # refuse a bad name or a user's file before training
    module = _module_of(args)
    check_eps_dtype(options, str(module.DTYPE))
    dataset = _dataset_of(args)

    history: list[dict[str, float]] = []

    def report(epoch: int, loss: float, acc: float, seconds: float) -> None:
        history.append({"epoch": epoch, "loss": loss, "test_accuracy": acc, "seconds": seconds})
        line = f"epoch {epoch:>3}  loss {loss:.4f}  test accuracy {acc:.4f}  {seconds:.3f} s"
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
                optimizer=options,
            )
        if args.save:  # only after the last epoch: an interrupted run writes nothing
            save_weights(module, result.params, args.save, force=args.force)
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
    _summary(args, result, sizes, dataset.name, history)
    return EXIT_OK


def configure(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``chainrule train``."""
    parser.description = (
        "Generate a network's module in memory and train it with its own train() "
        "(mini-batch SGD, or --optimizer momentum, nesterov or adam), reporting per-epoch "
        "loss, test accuracy and time."
    )
    parser.epilog = (
        "examples:\n"
        "  chainrule train --sizes 64,32,10 --activations relu,softmax --cost cross-entropy "
        "--dataset digits\n"
        "  chainrule train net.toml --data data.npz --epochs 20 --json\n"
        "  chainrule train net.toml --data data.npz --optimizer adam --betas 0.9,0.99\n"
        "  chainrule train --preset nielsen --dataset mnist --data-dir mnist/ --epochs 30 "
        "--batch-size 10 --lr 3.0 --save nielsen.npz\n\n"
        ".npz files hold x (examples, features) and y (integer labels, or one target row "
        "per example). A one-output network counts an example right when output and "
        "target lie on the same side of 0.5 (of 0 for a tanh output).\n\n"
        "--dataset mnist reads train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte from --data-dir, each plain or "
        "gzipped (.gz; when both are there the plain file is read); nothing is downloaded. "
        "Pixels are scaled to [0, 1] and labels one-hot encoded. As in Nielsen's book, "
        "the first 50,000 training images train, the last 10,000 are held out for a "
        "validation accuracy printed at the end, and the test accuracy after each epoch "
        "is measured on t10k's 10,000 images.\n\n"
        "--save writes the trained weights after the last epoch (an interrupted run "
        "writes nothing) as an .npz archive that the module's load_params reads; it "
        "replaces only a weights file chainrule saved, unless --force.\n\n"
        "--optimizer momentum and nesterov take --momentum (0.9), adam --betas and --eps, "
        "each as torch.optim's SGD and Adam; the optimizer's state carries over from epoch "
        "to epoch."
    )
    add_spec_arguments(parser)
    parser.add_argument("--module", help="train this generated .py file instead of a network")
    parser.add_argument(
        "--dataset",
        choices=("digits", "mnist"),
        help="digits: scikit-learn's 8x8 digits (the default); mnist: the IDX files in --data-dir",
    )
    parser.add_argument("--data", help="an .npz file with arrays x (N, n0) and y")
    parser.add_argument(
        "--data-dir", metavar="DIR", help="the folder holding MNIST's four IDX files"
    )
    parser.add_argument(
        "--epochs", type=count_type("--epochs"), default=60, help="passes over the data (60)"
    )
    parser.add_argument(
        "--batch-size", type=count_type("--batch-size"), default=32, help="examples per step (32)"
    )
    parser.add_argument(
        "--lr",
        type=lambda text: positive_number(text, "--lr"),
        help="learning rate eta (0.3; 0.001 with --optimizer adam)",
    )
    add_optimizer_arguments(parser)
    parser.add_argument(
        "--seed", type=seed_type, default=0, help="seed of split, weights, shuffles (0 or more)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", help="draw loss and accuracy per epoch to FILE.png or FILE.svg")
    parser.add_argument(
        "--save", metavar="FILE.npz", help="write the trained weights there (see below)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="let --plot and --save replace a file chainrule did not write",
    )
    parser.set_defaults(func=cmd_train)
