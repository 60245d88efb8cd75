"""Refuse before allocating: huge networks and ``.npz`` files claiming huge arrays.

A network of 10**10 weights is refused in one line with the memory figure before
anything is derived, written or allocated; ``train --data`` reads only ``x`` and ``y``,
each after its header (dtype, shape) is checked against a cap.
"""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from chainrule.cli import main
from chainrule.cmd_train import npz_dataset
from chainrule.limits import MAX_NPZ_ENTRIES, ResourceError, memory_needed

HUGE = ["--sizes", "100000,100000,10", "--activations", "sigmoid,sigmoid", "--cost", "quadratic"]


def _one_line_about_memory(err: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "GiB of memory" in err and "100000-100000-10" in err, err


def test_memory_estimate_counts_the_weights() -> None:
    need = memory_needed((100_000, 100_000, 10), 4)
    assert 3 * 8 * 10**10 < need < 3 * 8 * 10**10 * 1.01


def test_generate_check_refuses_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "big.py"
    assert main(["generate", *HUGE, "--check", "-o", str(target)]) == 2
    _one_line_about_memory(capsys.readouterr().err)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_check_of_a_huge_module_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "big.py"
    assert main(["generate", *HUGE, "-o", str(target)]) == 0
    capsys.readouterr()
    assert main(["check", str(target)]) == 2
    _one_line_about_memory(capsys.readouterr().err)


def test_train_refuses_a_huge_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "wide.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.standard_normal((8, 100_000)), y=np.arange(8) % 10)
    assert main(["train", *HUGE, "--data", str(data), "--epochs", "1"]) == 2
    _one_line_about_memory(capsys.readouterr().err)


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 ``.npy`` header (``descr``, ``shape``), data to follow."""
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    pad = 63 - (10 + len(text)) % 64
    size = (len(text) + pad + 1).to_bytes(2, "little")
    return b"\x93NUMPY\x01\x00" + size + text + b" " * pad + b"\n"


def _npy(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value)
    return buffer.getvalue()


def test_train_data_claiming_a_huge_array_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "claims.npz"
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", _npy_header("<f8", (2**23, 2**23)) + bytes(64))
        archive.writestr("y.npy", _npy(np.arange(8)))
    assert data.stat().st_size < 1024
    with pytest.raises(ResourceError, match=r"data\.x: claims shape \(8388608, 8388608\)"):
        npz_dataset(data)
    status = main(["train", "--preset", "nielsen", "--data", str(data), "--epochs", "1"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "claims shape" in err, err
    assert 2**46 > MAX_NPZ_ENTRIES


def test_train_data_refuses_object_arrays_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "objects.npz"
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("x.npy", _npy_header("|O", (8, 4)) + bytes(64))
        archive.writestr("y.npy", _npy(np.arange(8)))
    status = main(["train", "--preset", "nielsen", "--data", str(data), "--epochs", "1"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.slow
def test_train_data_reads_only_x_and_y(tmp_path: Path) -> None:
    data = tmp_path / "padded.npz"
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", _npy(rng.standard_normal((16, 4))))
        archive.writestr("y.npy", _npy(np.arange(16) % 3))
        with archive.open("unused.npy", "w", force_zip64=True) as member:
            member.write(_npy_header("<f8", (2**24,)))  # 128 MiB of zeros
            for _ in range(128):
                member.write(bytes(2**20))
    assert data.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        dataset = npz_dataset(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert dataset.x.shape == (16, 4) and dataset.y.shape == (16,)
    assert peak < 10_000_000, f"peak {peak / 1e6:.0f} MB"
