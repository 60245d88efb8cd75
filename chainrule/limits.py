"""Refuse before allocating: memory estimates and ``.npz`` headers read before the data.

A gradient check or a training run of a network with 10**10 weights would die in a
MemoryError traceback after minutes of work; an ``.npz`` file of 1 KB can claim an array
of 8 TiB. Both are refused here in one line, from sizes alone, before anything is
allocated or written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from chainrule.derive.errors import ChainruleError

#: Largest ``.npz`` array chainrule reads: 2**31 entries (16 GiB of float64).
MAX_NPZ_ENTRIES = 2**31
GIB = 2**30


class ResourceError(ChainruleError):
    """A run would need more memory than the machine has, or a file claims too much."""


def parameter_count(sizes: Sequence[int]) -> int:
    """Weights and biases of a network with layer sizes ``sizes`` (n_0, ..., n_L)."""
    return sum(sizes[i] * sizes[i + 1] + sizes[i + 1] for i in range(len(sizes) - 1))


def memory_needed(sizes: Sequence[int], batch: int, itemsize: int = 8) -> int:
    """Bytes a gradient check or a training step needs at least, from sizes alone.

    The parameters are held three times (the module's, their float64 copy or the update,
    and the gradient); each batch of ``batch`` examples has about six values per unit
    (z, a, delta and their work buffers).
    """
    return itemsize * (3 * parameter_count(sizes) + 6 * sum(sizes) * batch)


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def require_memory(sizes: Sequence[int], batch: int, what: str, itemsize: int = 8) -> None:
    """Raise :class:`ResourceError` when ``what`` would need more memory than is available.

    Examples
    --------
    >>> require_memory((2, 3, 1), 4, "the gradient check")
    """
    need = memory_needed(sizes, batch, itemsize)
    have = available_memory()
    if have is not None and need > have:
        layers = "-".join(map(str, sizes))
        raise ResourceError(
            "sizes",
            f"{what} of a {layers} network needs at least {need / GIB:.1f} GiB of memory, "
            f"and {have / GIB:.1f} GiB is available",
            "use smaller layers",
        )


def npz_array(archive: np.lib.npyio.NpzFile, key: str, field: str) -> np.ndarray:
    """Array ``key`` of an open ``.npz`` archive, its header checked before its data.

    Only real numbers (bool, integer, float) of at most :data:`MAX_NPZ_ENTRIES` entries
    are read: a small file may claim an array of any size, and decompressing it would
    allocate all of it.

    Raises
    ------
    ResourceError
        When the header claims too many entries, or more than the memory available.
    ValueError
        When the member is not a plain ``.npy`` array of real numbers.
    """
    try:
        member = archive.zip.open(f"{key}.npy")
    except KeyError:
        member = archive.zip.open(key)
    with member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    if dtype.kind not in "biuf":
        raise ValueError(f"{field} has dtype {dtype}, not real numbers")
    entries = int(np.prod(shape, dtype=object))
    if entries > MAX_NPZ_ENTRIES:
        raise ResourceError(
            field,
            f"claims shape {shape} ({entries:.3g} entries), more than {MAX_NPZ_ENTRIES:,}",
            "give a smaller array",
        )
    # Under the cap, a 1 MB file of compressed zeros still claims gigabytes; the data is
    # used as float64, so that is what it must fit in.
    need, have = entries * max(dtype.itemsize, 8), available_memory()
    if have is not None and need > have:
        raise ResourceError(
            field,
            f"claims shape {shape}: {need / GIB:.1f} GiB as float64, "
            f"and {have / GIB:.1f} GiB of memory is available",
            "give a smaller array",
        )
    return archive[key]


__all__ = [
    "MAX_NPZ_ENTRIES",
    "ResourceError",
    "available_memory",
    "memory_needed",
    "npz_array",
    "parameter_count",
    "require_memory",
]
