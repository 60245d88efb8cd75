"""Concurrency and hostile cases at length, for ``python -m tests.soak``.

Each round generates a random network's module (some layers batch-normalized, some with
dropout) and then: calls ``loss_and_grad``, ``sgd_step`` and ``train`` from several
threads at once, each thread with its own batch size, dropout seed and batch-norm
``state``, and compares every result with the same call made alone (calls with
``seed=None`` run among them and must give finite results); plants a NaN in the
module's gradient and requires ``chainrule check`` to fail; feeds ``load_params`` an
archive whose header claims an enormous array; and points the one file writer at a
symbolic link, a FIFO, a directory and a file chainrule did not write, requiring a
refusal that leaves the path as it was. :func:`run` returns the failures, one line each.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chainrule.codegen.emit import is_generated, write_file  # noqa: E402
from chainrule.codegen.render import generate_module  # noqa: E402
from chainrule.derive.errors import ChainruleError  # noqa: E402
from chainrule.derive.spec import Spec, spec_from_dict  # noqa: E402
from conftest import import_path  # noqa: E402

from chainrule.check import check_file  # noqa: E402

THREADS = 4


def random_spec(rng: np.random.Generator) -> Spec:
    """A small random network: 1 to 3 layers, a hidden tanh or sigmoid, a quadratic cost;
    sizes 1 to 3 (so that equal sizes, and so residual connections, are common), a
    ``skip_from`` from an earlier layer of the same size half the time one is possible,
    and l2 and l1 each 0 or not. About a third of the hidden layers are batch-normalized
    (with no bias) and another third have dropout; the output layer has neither."""
    depth = int(rng.integers(1, 4))
    sizes = [int(n) for n in rng.integers(1, 4, depth + 1)]
    layers: list[dict[str, object]] = []
    for index, n in enumerate(sizes[1:], start=1):
        layer: dict[str, object] = {
            "size": n,
            "activation": str(rng.choice(["tanh", "sigmoid"])),
            "bias": bool(rng.random() < 0.7),
        }
        kind = rng.random()
        if index < depth and kind < 1 / 3:
            layer.update(batch_norm=True, bias=False)
        elif index < depth and kind < 2 / 3:
            layer["dropout"] = float(rng.choice([0.1, 0.3, 0.5]))
        sources = [k for k in range(index) if sizes[k] == n]
        if sources and rng.random() < 0.5:
            layer["skip_from"] = int(rng.choice(sources))
        layers.append(layer)
    layout = str(rng.choice(["columns", "rows"]))
    penalty = {key: float(rng.choice([0.0, 0.01, 0.3])) for key in ("l2", "l1")}
    return spec_from_dict(
        {"input": sizes[0], "layers": layers, "cost": "quadratic", "layout": layout, **penalty}
    )


def _batch(net: ModuleType, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((net.LAYER_SIZES[0], m))
    y = rng.uniform(0.1, 0.9, (net.LAYER_SIZES[-1], m))
    return (x.T.copy(), y.T.copy()) if net.LAYOUT == "rows" else (x, y)


#: The batch_size of every thread's ``train``.
TRAIN_BATCH = 3


def _examples(spec: Spec, index: int) -> int:
    """Thread ``index``'s number of examples m. Batch norm needs at least 2 examples in
    every batch: m = 2 + 6 index leaves train a last batch of 2 (of TRAIN_BATCH = 3)."""
    return 2 + 6 * index if spec.batch_norm_layers else 1 + 7 * index


def _calls(net: ModuleType, spec: Spec, index: int) -> Callable[[], list[np.ndarray]]:
    """The work of thread ``index``: its own batch size, parameters, data, dropout seed
    and (with batch norm) running statistics from its own ``init_state()``."""
    x, y = _batch(net, _examples(spec, index), index)
    seed = 100 + index  # fixes the dropout masks of every call

    def work() -> list[np.ndarray]:
        params = net.init_params(seed=index)
        state = net.init_state() if spec.batch_norm_layers else None
        cost, grads = net.loss_and_grad(params, x, y, seed=seed)
        out = [np.array(cost)] + [grads[k].copy() for k in sorted(grads)]
        out.append(np.array(net.sgd_step(params, x, y, 0.1, seed=seed)))
        out.append(np.array(net.sgd_step(params, x, y, 0.1, seed=seed, state=state)))
        step = {"epochs": 2, "batch_size": TRAIN_BATCH, "lr": 0.1, "seed": index}
        out.append(np.array(net.train(params, x, y, **step, state=state)))
        if state is not None:
            out.append(net.forward(params, x, state))
            out += [state[k].copy() for k in sorted(state)]
        return out + [params[k] for k in sorted(params)]

    return work


def _unseeded(net: ModuleType, spec: Spec, index: int) -> Callable[[], list[str]]:
    """Thread ``index``'s calls with ``seed=None`` (fresh dropout masks): they must run
    and give a finite cost and gradient of the parameters' shapes; returns what did not."""
    x, y = _batch(net, _examples(spec, index), index)

    def work() -> list[str]:
        params = net.init_params(seed=index)
        cost, grads = net.loss_and_grad(params, x, y, seed=None)
        costs = [cost, net.sgd_step(params, x, y, 0.1, seed=None)]
        costs += net.train(params, x, y, epochs=1, batch_size=TRAIN_BATCH, lr=0.1, seed=None)
        wrong = [f"cost {c}" for c in costs if not np.isfinite(c)]
        for key, shape in net.PARAM_SHAPES.items():
            if grads[key].shape != shape or not np.all(np.isfinite(grads[key])):
                wrong.append(f"gradient {key} {grads[key].shape}")
        return [f"seed=None: {w}" for w in wrong]

    return work


def concurrency(net: ModuleType, spec: Spec, repeats: int = 10) -> list[str]:
    """Every thread's results, called together, equal the same calls made alone; with
    dropout, calls with ``seed=None`` run among them."""
    works = [_calls(net, spec, i) for i in range(THREADS)]
    unseeded = [_unseeded(net, spec, i) for i in range(THREADS)] if spec.dropout_layers else []
    expected = [work() for work in works]
    barrier = threading.Barrier(THREADS)
    wrong: list[str] = []

    def run(index: int) -> None:
        where = f"thread {index} (batch {_examples(spec, index)})"
        barrier.wait()
        for repeat in range(repeats):
            try:
                got = works[index]()
                problems = unseeded[index]() if unseeded else []
            except Exception as exc:  # noqa: BLE001 - a thread's exception is a failure
                wrong.append(f"{where}, repeat {repeat} raised {type(exc).__name__}: {exc}")
                return
            if any(not np.array_equal(a, b) for a, b in zip(got, expected[index], strict=True)):
                wrong.append(f"{where}, repeat {repeat}: results differ from the lone calls")
            wrong.extend(f"{where}, repeat {repeat}: {p}" for p in problems)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    return [f"concurrent calls: {w}" for w in wrong]


def nan_check(source: str, folder: Path) -> list[str]:
    """``chainrule check`` fails a module whose gradient holds a NaN, naming the entry."""
    marker = "    grads = {\n"
    if marker not in source:
        return ["nan check: the module has no 'grads = {' line to plant a NaN before"]
    planted = source.replace(marker, "    dC_dW1.flat[0] = np.nan\n" + marker, 1)
    path = folder / "nan_module.py"
    path.write_text(planted, encoding="utf-8")
    report = check_file(path)
    if report.passed or not any(note.startswith("W1[") for note in report.nonfinite):
        return [f"chainrule check passed a NaN gradient: {report}"]
    return []


def header_bomb(net: ModuleType, folder: Path) -> list[str]:
    """``load_params`` refuses a 1 KB archive claiming 2**46 entries, without reading it."""
    key = sorted(net.PARAM_SHAPES)[0]
    header = {"descr": "<f8", "fortran_order": False, "shape": (2**23, 2**23)}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    path = folder / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name in net.PARAM_SHAPES:
            archive.writestr(f"{name}.npy", buffer.getvalue() if name == key else b"")
    try:
        net.load_params(path)
    except ValueError as error:
        return [] if "shape" in str(error) or key in str(error) else [f"header bomb: {error}"]
    except MemoryError:
        return ["load_params allocated for a header that claims 2**46 entries"]
    return ["load_params accepted an archive claiming 2**46 entries"]


def hostile_paths(folder: Path) -> list[str]:
    """The one writer refuses a link, broken link, FIFO, directory and foreign file."""
    failures = []
    (folder / "theirs.txt").write_text("their text\n", encoding="utf-8")
    (folder / "link.py").symlink_to(folder / "theirs.txt")
    (folder / "broken.py").symlink_to(folder / "nowhere")
    os.mkfifo(folder / "fifo.py")
    (folder / "dir.py").mkdir()
    for name in ("theirs.txt", "link.py", "broken.py", "fifo.py", "dir.py"):
        path = folder / name
        before = os.lstat(path)
        forces = (False,) if name == "theirs.txt" else (False, True)
        for force in forces:
            try:
                write_file(path, b"new\n", force=force, ours=is_generated)
                failures.append(f"write_file wrote {name} (force={force})")
            except ChainruleError:
                pass
        after = os.lstat(path)
        if (before.st_mode, before.st_ino, before.st_size) != (
            after.st_mode,
            after.st_ino,
            after.st_size,
        ):
            failures.append(f"write_file changed {name} while refusing it")
    return failures


def networks(rounds: int, seed: int) -> list[Spec]:
    """The ``rounds`` random networks that :func:`run` checks with this ``seed``."""
    rng = np.random.default_rng(seed)
    return [random_spec(rng) for _ in range(rounds)]


def run(rounds: int, seed: int, folder: Path) -> list[str]:
    """``rounds`` random networks through every case; returns the failures."""
    failures: list[str] = []
    for round_, spec in enumerate(networks(rounds, seed)):
        where = f" (round {round_}: {spec.to_dict()})"
        here = folder / f"round{round_}"
        here.mkdir()
        source = generate_module(spec)
        path = here / "net.py"
        path.write_text(source, encoding="utf-8")
        net = import_path(path)
        try:
            found = concurrency(net, spec) + nan_check(source, here) + header_bomb(net, here)
        except Exception as exc:  # noqa: BLE001 - a soak records every failure
            found = [f"raised {type(exc).__name__}: {exc}"]
        failures += [line + where for line in found]
    paths = folder / "paths"
    paths.mkdir()
    failures += hostile_paths(paths)
    return failures
