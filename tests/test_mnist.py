"""MNIST's IDX files and ``chainrule train --save``: small IDX files written here.

A tiny separable "MNIST" (4x4 images of three classes) trains through the command
line; every hostile file gives one line naming the file and exits 2; ``--save`` writes
weights that ``load_params`` reads back to the same accuracy, atomically, and never
over a file chainrule did not save.
"""

from __future__ import annotations

import gzip
import json
import re
import signal
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from chainrule.derive.spec import Spec

from chainrule.cli import main
from chainrule.cmd_train import accuracy, mnist_dataset, module_from_spec, targets
from chainrule.mnist import FILES, IMAGES_MAGIC, LABELS_MAGIC, IdxError, load_mnist, read_idx
from chainrule.outfiles import NPZ_MARK, npz_is_ours

NET = ["--sizes", "16,8,3", "--activations", "sigmoid,sigmoid", "--cost", "quadratic"]
TRAIN = ["--epochs", "8", "--batch-size", "10", "--lr", "3.0"]


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8, 1 or 3 dimensions) as an IDX file: magic, big-endian dims, data."""
    header = struct.pack(">I", 0x800 + array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as IDX, gzipped when ``path`` ends in .gz."""
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 4x4 uint8 images of three classes (class c lights row c) and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 4, 4))
    images[np.arange(n), labels, :] += 180
    return images.astype(np.uint8), labels


def write_set(folder: Path, *, gz: bool = True, n_train: int = 600, n_test: int = 150) -> Path:
    """The four files of a small separable set in ``folder`` (gzipped or plain)."""
    folder.mkdir(exist_ok=True)
    suffix = ".gz" if gz else ""
    train_x, train_y = separable(n_train, 0)
    test_x, test_y = separable(n_test, 1)
    for name, array in zip(FILES, (train_x, train_y, test_x, test_y), strict=True):
        write_idx(folder / f"{name}{suffix}", array)
    return folder


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``chainrule ARGS`` in this process: (status, stdout, stderr)."""
    status = main(["--quiet", *args])
    out, err = capsys.readouterr()
    return status, out, err


def refused(capsys: pytest.CaptureFixture, folder: Path, *more: str) -> str:
    """The one stderr line of a refused ``train --dataset mnist`` (status 2 checked)."""
    status, out, err = run(
        capsys, "train", *NET, "--dataset", "mnist", "--data-dir", str(folder), *more
    )
    assert status == 2 and out == "", (status, out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_plain_and_gzip_read_the_same_array(tmp_path: Path) -> None:
    images, labels = separable(7, 3)
    plain = read_idx(write_idx(tmp_path / "a-idx3-ubyte", images), IMAGES_MAGIC)
    packed = read_idx(write_idx(tmp_path / "b-idx3-ubyte.gz", images), IMAGES_MAGIC)
    assert plain.shape == (7, 4, 4) and np.array_equal(plain, images)
    assert np.array_equal(packed, images)
    assert np.array_equal(read_idx(write_idx(tmp_path / "l.gz", labels), LABELS_MAGIC), labels)


def test_dataset_is_scaled_split_as_nielsen_and_one_hot(tmp_path: Path) -> None:
    folder = write_set(tmp_path / "m", gz=False, n_train=600, n_test=150)
    data = mnist_dataset(folder)
    # five sixths train (50,000 of MNIST's 60,000), the last sixth validates, t10k tests
    assert data.x.shape == (500, 16) and data.validation.x.shape == (100, 16)
    assert data.test.x.shape == (150, 16)
    raw_x, raw_y = separable(600, 0)
    np.testing.assert_array_equal(data.x, raw_x[:500].reshape(500, 16) / 255.0)
    np.testing.assert_array_equal(data.validation.y, raw_y[500:])
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0
    one_hot = targets(data, 10)
    assert one_hot.shape == (500, 10) and np.array_equal(one_hot.argmax(axis=1), raw_y[:500])
    assert np.all(one_hot.sum(axis=1) == 1.0)


def test_plain_file_wins_over_its_gzip(tmp_path: Path) -> None:
    folder = write_set(tmp_path / "m", gz=True)
    plain_labels = np.zeros(150, dtype=np.uint8)  # differs from the gzipped labels
    write_idx(folder / "t10k-labels-idx1-ubyte", plain_labels)
    assert np.array_equal(load_mnist(folder).test_y, plain_labels)


def test_small_idx_set_trains_well_above_chance(tmp_path: Path, capsys) -> None:
    folder = write_set(tmp_path / "m", gz=True)
    status, out, err = run(
        capsys, "train", *NET, "--dataset", "mnist", "--data-dir", str(folder), *TRAIN, "--json"
    )
    assert status == 0, err
    summary = json.loads(out)
    assert summary["test_accuracy"] > 0.9 and summary["validation_accuracy"] > 0.9  # chance 1/3
    assert summary["epochs"] == 8


def test_accuracy_improves_over_epochs(tmp_path: Path, capsys) -> None:
    folder = write_set(tmp_path / "m", gz=False)
    status, out, err = run(
        capsys,
        "train",
        *NET,
        "--dataset",
        "mnist",
        "--data-dir",
        str(folder),
        *TRAIN,
        "--lr",
        "0.2",
    )
    assert status == 0, err
    lines = [line for line in out.splitlines() if line.startswith("epoch")]
    accuracies = [float(line.split("test accuracy")[1].split()[0]) for line in lines]
    assert len(accuracies) == 8 and accuracies[-1] > accuracies[0] and accuracies[-1] > 0.9
    assert re.search(r"\(validation [01]\.\d{4}\) after 8 epochs", out.splitlines()[-1])


def test_missing_file_names_the_four_files_and_the_folder(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_set(tmp_path / "mnist-files", gz=True)
    (tmp_path / "mnist-files" / "t10k-images-idx3-ubyte.gz").unlink()
    err = refused(capsys, Path("mnist-files"))
    assert "no t10k-images-idx3-ubyte (nor t10k-images-idx3-ubyte.gz) in 'mnist-files'" in err
    assert all(f"{name}.gz" in err for name in FILES)
    assert "downloads nothing" in err


def test_folder_flags_are_checked(tmp_path: Path, capsys) -> None:
    err = refused(capsys, tmp_path / "nowhere")
    assert "is not a directory" in err and "nowhere" in err
    status, _, err = run(capsys, "train", *NET, "--dataset", "mnist")
    assert status == 2 and "--data-dir DIR" in err
    status, _, err = run(capsys, "train", *NET, "--data-dir", str(tmp_path))
    assert status == 2 and "given without --dataset mnist" in err


def _hostile(folder: Path, case: str) -> str:
    """Spoil one file of the set in ``folder`` as ``case`` says; returns its file name."""
    images = folder / "train-images-idx3-ubyte"
    labels = folder / "train-labels-idx1-ubyte"
    if case == "wrong magic":
        images.write_bytes(b"\x00\x00\x08\x01" + images.read_bytes()[4:])
    elif case == "truncated":
        images.write_bytes(images.read_bytes()[:-7])
    elif case == "padded":
        images.write_bytes(images.read_bytes() + b"\x00")
    elif case == "huge header":
        images.write_bytes(struct.pack(">IIII", IMAGES_MAGIC, 60_000, 50_000, 50_000) + b"\1")
    elif case == "count mismatch":
        write_idx(labels, np.zeros(599, dtype=np.uint8))
        return labels.name
    elif case == "label above 9":
        write_idx(labels, np.full(600, 10, dtype=np.uint8))
        return labels.name
    elif case == "directory":
        images.unlink()
        images.mkdir()
    elif case == "no images":
        write_idx(images, np.zeros((0, 28, 28), dtype=np.uint8))
    elif case == "no pixels":
        write_idx(images, np.zeros((600, 0, 4), dtype=np.uint8))
    elif case == "header cut":
        images.write_bytes(struct.pack(">II", IMAGES_MAGIC, 600))
    return images.name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("wrong magic", "IDX magic number of images"),
        (
            "truncated",
            "header claims shape (600, 4, 4) (9,600 bytes of data), but the file holds 9,593",
        ),
        ("padded", "but the file holds 9,601"),
        ("huge header", "header claims shape (60000, 50000, 50000)"),
        ("count mismatch", "holds 599 labels but train-images-idx3-ubyte holds 600 images"),
        ("label above 9", "has the label 10; MNIST labels are digits 0-9"),
        ("directory", "is a directory"),
        ("header cut", "ends inside its header"),
        ("no images", "holds no pixels (shape (0, 28, 28))"),
        ("no pixels", "holds no pixels (shape (600, 0, 4))"),
    ],
)
def test_hostile_plain_files_give_one_line_naming_the_file(
    tmp_path: Path, capsys, case: str, words: str
) -> None:
    folder = write_set(tmp_path / "m", gz=False)
    name = _hostile(folder, case)
    err = refused(capsys, folder)
    assert words in err and str(folder / name) in err


def test_gzip_bomb_is_read_only_as_far_as_its_header_claims(tmp_path: Path) -> None:
    # 3 labels claimed, 100 MB of zeros behind them: never decompressed whole
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.GzipFile(path, "wb", compresslevel=1) as stream:
        stream.write(struct.pack(">II", LABELS_MAGIC, 3))
        block = bytes(1 << 20)
        for _ in range(100):
            stream.write(block)
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(IdxError, match="holds more bytes of data, its header claims 3"):
            read_idx(path, LABELS_MAGIC)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # the 100 MB were never held


def test_gzip_claiming_more_than_it_could_hold_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(struct.pack(">IIII", IMAGES_MAGIC, 60_000, 28, 28)))
    with pytest.raises(IdxError, match=r"header claims shape \(60000, 28, 28\).*could hold"):
        read_idx(path, IMAGES_MAGIC)


@pytest.mark.parametrize(
    "spoil",
    [lambda data: b"not gzip at all" + data, lambda data: data[: len(data) // 2]],
    ids=["corrupt", "truncated"],
)
def test_broken_gzip_gives_one_line(tmp_path: Path, capsys, spoil) -> None:
    folder = write_set(tmp_path / "m", gz=True)
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(spoil(path.read_bytes()))
    err = refused(capsys, folder)
    assert f"{path}: is not a valid gzip file; download the file again" in err


def test_unreadable_file_gives_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    folder = write_set(tmp_path / "m", gz=False)
    real_open = Path.open

    def deny(self: Path, *args, **kwargs):
        if self.name == "train-labels-idx1-ubyte":
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    err = refused(capsys, folder)
    assert "train-labels-idx1-ubyte: cannot be read (PermissionError); make it readable" in err


def test_inputs_that_do_not_match_the_spec_give_one_line(tmp_path: Path, capsys) -> None:
    folder = write_set(tmp_path / "m", gz=True)
    status, out, err = run(
        capsys, "train", "--preset", "nielsen", "--dataset", "mnist", "--data-dir", str(folder)
    )
    assert status == 2 and err.count("\n") == 1
    assert "the examples have 16 features but the network has 784 inputs" in err
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(600, 9, dtype=np.uint8))
    err = refused(capsys, folder)
    assert "labels go up to 9 but the network has 3 outputs" in err


def test_save_round_trips_to_the_same_accuracy(tmp_path: Path, capsys) -> None:
    folder = write_set(tmp_path / "m", gz=True)
    weights = tmp_path / "w.npz"
    args = ["train", *NET, "--dataset", "mnist", "--data-dir", str(folder), *TRAIN]
    status, out, err = run(capsys, *args, "--json", "--save", str(weights))
    assert status == 0, err
    assert npz_is_ours(weights) and weights.read_bytes().endswith(NPZ_MARK)
    module = module_from_spec(Spec.from_sizes([16, 8, 3], ["sigmoid", "sigmoid"], "quadratic"))
    params = module.load_params(weights)
    data = mnist_dataset(folder)
    reloaded = accuracy(module, params, data.test.x.T, data.test.y)
    assert reloaded == json.loads(out)["test_accuracy"] and reloaded > 0.9
    assert set(params) == {"W1", "b1", "W2", "b2"}
    # A second run may replace what chainrule saved.
    status, out, err = run(capsys, *args, "--epochs", "1", "--save", str(weights))
    assert status == 0 and f"wrote {weights}" in out, err
    assert module.load_params(weights)["W1"].shape == (8, 16)


def test_save_refuses_a_users_file_unless_forced(tmp_path: Path, capsys) -> None:
    folder = write_set(tmp_path / "m", gz=True)
    users = tmp_path / "mine.npz"
    np.savez(users, W1=np.ones(3))  # an .npz chainrule did not write
    before = users.read_bytes()
    args = ["train", *NET, "--dataset", "mnist", "--data-dir", str(folder), "--epochs", "1"]
    err = refused(capsys, folder, "--epochs", "1", "--save", str(users))
    assert "exists and was not generated by chainrule" in err and "--force" in err
    assert users.read_bytes() == before
    status, _, err = run(capsys, *args, "--save", str(users), "--force")
    assert status == 0 and npz_is_ours(users), err
    (tmp_path / "d.npz").mkdir()
    for bad, words in [("w.npy", "does not end in .npz"), (tmp_path / "d.npz", "is a directory")]:
        status, _, err = run(capsys, *args, "--save", str(bad))
        assert status == 2 and words in err, err
    link = tmp_path / "link.npz"
    link.symlink_to(tmp_path / "w.npz")
    status, _, err = run(capsys, *args, "--save", str(link))
    assert status == 2 and "symbolic link" in err and not (tmp_path / "w.npz").exists()


def test_the_mark_is_exact_not_a_word_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, chainrule_parameters=np.frombuffer(NPZ_MARK, dtype=np.uint8))
    assert not npz_is_ours(path)
    path.write_bytes(b"PK\x05\x06" + bytes(16) + b"\x10\x00" + NPZ_MARK)  # length 16, not 20
    assert not npz_is_ours(path)


_INTERRUPTED = """
import sys
from chainrule.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_ctrl_c_during_training_writes_nothing(tmp_path: Path) -> None:
    folder = write_set(tmp_path / "m", gz=False, n_train=6000, n_test=60)
    weights = tmp_path / "w.npz"
    child = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED, "--quiet", "train", *NET, "--dataset", "mnist"]
        + ["--data-dir", str(folder), "--epochs", "1000", "--batch-size", "1"]
        + ["--save", str(weights)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().startswith("epoch   1")  # training is under way
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130 and "interrupted" in err
    assert not weights.exists() and list(tmp_path.iterdir()) == [folder]
