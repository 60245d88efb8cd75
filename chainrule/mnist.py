"""Read the MNIST database from its four IDX files, refusing hostile files in one line.

An IDX file is a big-endian header, then unsigned bytes: the magic number
``0x00000803`` (ubyte, 3 dimensions: images, rows, columns) or ``0x00000801`` (ubyte,
1 dimension: labels), each dimension as a uint32, then the data, row by row. Each of
the four files may be plain or gzip-compressed (``NAME`` or ``NAME.gz``); when both are
in the folder the plain one is read. A header is checked against the file's size
before anything is allocated, and a gzip file is decompressed only up to the size its
header claims, so neither a lying header nor a gzip bomb can fill the memory.
Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chainrule.derive.errors import ChainruleError
from chainrule.limits import MAX_NPZ_ENTRIES, available_memory

#: The four files of the MNIST database, each read as ``NAME`` or ``NAME.gz``.
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
#: Magic numbers of unsigned-byte IDX files: 0x08 is ubyte, the last byte the dimensions.
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
#: Deflate shrinks data at most about 1032-fold, so a larger claim cannot be true.
MAX_GZIP_RATIO = 1100
#: Nielsen's split of the 60,000 training images: the first 50,000 train the network.
TRAINING_EXAMPLES = 50_000
CLASSES = 10
_WHERE = "the MNIST database page (yann.lecun.com/exdb/mnist) or a mirror of it"


class IdxError(ChainruleError):
    """An IDX file is missing, unreadable, corrupt or claims more than it holds."""


@dataclass(frozen=True)
class Mnist:
    """MNIST as arrays: images (N, 784) scaled to [0, 1], integer labels (N,) in 0..9.

    ``train_*`` hold the 60,000 images of the training file in order, ``test_*`` the
    10,000 of t10k.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def locate(folder: Path, name: str) -> Path:
    """``folder/name``, else ``folder/name.gz``; a missing file says what to download."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    raise IdxError(
        "--data-dir",
        f"no {name} (nor {name}.gz) in {str(folder)!r}",
        f"download {', '.join(f + '.gz' for f in FILES)} from {_WHERE} "
        "into that folder; chainrule downloads nothing itself",
    )


def _claimed(path: Path, handle: object, magic: int) -> tuple[int, ...]:
    """The dimensions an IDX header claims, after its magic number is checked."""
    head = handle.read(4)  # type: ignore[attr-defined]
    dims = magic & 0xFF
    if len(head) < 4 or struct.unpack(">I", head)[0] != magic:
        kind = "images (0x00000803)" if magic == IMAGES_MAGIC else "labels (0x00000801)"
        raise IdxError(
            str(path),
            f"does not start with the IDX magic number of {kind}",
            f"give the original {path.name.removesuffix('.gz')} file of the MNIST database",
        )
    raw = handle.read(4 * dims)  # type: ignore[attr-defined]
    if len(raw) < 4 * dims:
        raise IdxError(str(path), "ends inside its header", "download the file again")
    return struct.unpack(f">{dims}I", raw)


def _refuse_size(path: Path, shape: tuple[int, ...], size: int, gzipped: bool) -> None:
    """Refuse a header whose data could not be in a file of ``size`` bytes, or fit in memory."""
    need = int(np.prod(shape, dtype=object))
    possible = size * MAX_GZIP_RATIO if gzipped else size - 4 - 4 * len(shape)
    impossible = need > possible if gzipped else need != possible
    if impossible:
        held = "could hold" if gzipped else "holds"
        raise IdxError(
            str(path),
            f"header claims shape {shape} ({need:,} bytes of data), but the file {held} "
            f"{max(possible, 0):,}",
            "download the file again (it is truncated, padded or not MNIST)",
        )
    have = available_memory()
    if need > MAX_NPZ_ENTRIES or (have is not None and 9 * need > have):
        raise IdxError(
            str(path), f"header claims shape {shape}, too large for memory", "give MNIST's file"
        )


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file (plain or ``.gz``), shaped as its header says.

    Raises
    ------
    IdxError
        Naming the file when it is not a regular file, cannot be read, is corrupt gzip,
        has another magic number, or holds more or fewer bytes than its header claims.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels"
    >>> _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> read_idx(path, LABELS_MAGIC)
    array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    gzipped = path.name.endswith(".gz")
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a folder, FIFO or device: never opened
            what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise IdxError(str(path), f"is {what}", f"put the {path.name} file there")
        with path.open("rb") as raw:
            handle = gzip.GzipFile(fileobj=raw) if gzipped else raw
            shape = _claimed(path, handle, magic)
            _refuse_size(path, shape, info.st_size, gzipped)
            need = int(np.prod(shape))
            data = handle.read(need)  # a gzip file is decompressed up to ``need`` bytes only
            extra = handle.read(1) if gzipped else b""
    except (OSError, EOFError, zlib.error) as exc:
        broken = gzipped and not isinstance(exc, PermissionError | FileNotFoundError)
        raise IdxError(
            str(path),
            "is not a valid gzip file" if broken else f"cannot be read ({type(exc).__name__})",
            "download the file again" if broken else "make it readable",
        ) from None
    if len(data) != need or extra:
        raise IdxError(
            str(path),
            f"holds {'more' if extra else len(data)} bytes of data, its header claims {need:,}",
            "download the file again (it is truncated, padded or not MNIST)",
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _pair(folder: Path, images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, rows * cols) scaled to [0, 1] and labels (N,) from two IDX files."""
    x = read_idx(images_path := locate(folder, images), IMAGES_MAGIC)
    y = read_idx(labels_path := locate(folder, labels), LABELS_MAGIC)
    if x.size == 0:  # no images, or images of no pixels: nothing to learn or score
        raise IdxError(str(images_path), f"holds no pixels (shape {x.shape})", "give MNIST's file")
    if x.shape[0] != y.shape[0]:
        raise IdxError(
            str(labels_path),
            f"holds {y.shape[0]:,} labels but {images_path.name} holds {x.shape[0]:,} images",
            "give the two files of the same set",
        )
    if y.size and int(y.max()) >= CLASSES:
        raise IdxError(
            str(labels_path), f"has the label {int(y.max())}", "MNIST labels are digits 0-9"
        )
    return x.reshape(x.shape[0], -1) / np.float64(255.0), y.astype(np.int64)


def load_mnist(folder: str | Path) -> Mnist:
    """The four MNIST files in ``folder``, checked; images scaled to [0, 1].

    Raises
    ------
    IdxError
        When ``folder`` is not a directory, or a file is missing (naming the four files
        to download) or hostile (see :func:`read_idx`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise IdxError(
            "--data-dir",
            f"{str(folder)!r} is not a directory",
            f"give the folder holding {', '.join(FILES)} (each may end in .gz)",
        )
    for name in FILES:
        locate(folder, name)  # every missing file is reported before any is read
    train_x, train_y = _pair(folder, FILES[0], FILES[1])
    test_x, test_y = _pair(folder, FILES[2], FILES[3])
    if train_x.shape[1] != test_x.shape[1]:
        raise IdxError(
            "--data-dir",
            f"training images have {train_x.shape[1]} pixels, test images {test_x.shape[1]}",
            "give the four files of one database",
        )
    return Mnist(train_x, train_y, test_x, test_y)
