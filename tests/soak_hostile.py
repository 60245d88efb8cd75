"""Concurrency and hostile cases at length, for ``python -m tests.soak``.

Each round generates a random network's module and then: calls ``loss_and_grad``,
``sgd_step`` and ``train`` from several threads at once, each thread with its own batch
size, and compares every result with the same call made alone; plants a NaN in the
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
    and l2 and l1 each 0 or not."""
    depth = int(rng.integers(1, 4))
    sizes = [int(n) for n in rng.integers(1, 4, depth + 1)]
    layers: list[dict[str, object]] = []
    for index, n in enumerate(sizes[1:], start=1):
        layer: dict[str, object] = {
            "size": n,
            "activation": str(rng.choice(["tanh", "sigmoid"])),
            "bias": bool(rng.random() < 0.7),
        }
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


def _calls(net: ModuleType, index: int) -> Callable[[], list[np.ndarray]]:
    """The work of thread ``index``: its own batch size, parameters and data."""
    m = 1 + 7 * index
    x, y = _batch(net, m, index)

    def work() -> list[np.ndarray]:
        params = net.init_params(seed=index)
        cost, grads = net.loss_and_grad(params, x, y)
        out = [np.array(cost)] + [grads[k].copy() for k in sorted(grads)]
        out.append(np.array(net.sgd_step(params, x, y, 0.1)))
        out.append(np.array(net.train(params, x, y, epochs=2, batch_size=3, lr=0.1, seed=index)))
        return out + [params[k] for k in sorted(params)]

    return work


def concurrency(net: ModuleType, repeats: int = 10) -> list[str]:
    """Every thread's results, called together, equal the same calls made alone."""
    works = [_calls(net, i) for i in range(THREADS)]
    expected = [work() for work in works]
    barrier = threading.Barrier(THREADS)
    wrong: list[str] = []

    def run(index: int) -> None:
        barrier.wait()
        for repeat in range(repeats):
            got = works[index]()
            if any(not np.array_equal(a, b) for a, b in zip(got, expected[index], strict=True)):
                wrong.append(f"thread {index} (batch {1 + 7 * index}), repeat {repeat}")

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
    return [f"concurrent calls differ from lone calls: {w}" for w in wrong]


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


def run(rounds: int, seed: int, folder: Path) -> list[str]:
    """``rounds`` random networks through every case; returns the failures."""
    rng = np.random.default_rng(seed)
    failures: list[str] = []
    for round_ in range(rounds):
        spec = random_spec(rng)
        where = f" (round {round_}: {spec.to_dict()})"
        here = folder / f"round{round_}"
        here.mkdir()
        source = generate_module(spec)
        path = here / "net.py"
        path.write_text(source, encoding="utf-8")
        net = import_path(path)
        found = concurrency(net) + nan_check(source, here) + header_bomb(net, here)
        failures += [line + where for line in found]
    paths = folder / "paths"
    paths.mkdir()
    failures += hostile_paths(paths)
    return failures
