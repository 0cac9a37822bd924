"""A tokenized split, the value the data pipeline and the packer both read, and how its rows are
read: `take_rows` and `row_lengths` read a split kept on disk (`token_store.py`) through the file,
so that the rows training draws at random never become resident memory of the process."""

from __future__ import annotations

import dataclasses
import mmap
import os

import numpy as np


@dataclasses.dataclass(frozen=True)
class Examples:
    """A tokenized split: `src` [n, max_src_len] and `tgt` [n, max_tgt_len] int32, filled with
    their vocabularies' pad ids `src_pad` and `tgt_pad`.

    `tgt` holds the decoder's targets (ending in EOS); the decoder reads them shifted right behind
    BOS. `texts` keeps the raw (src, tgt) strings, whole, for reporting and the text metrics; None
    for a split kept on disk (`token_store.py`: `src` and `tgt` are then read-only `np.memmap`s of
    its files), which is trained on, never scored. `cut_sources` / `cut_targets`: how many rows
    hold a source / target cut to fit (a dialogue's history left out counts as a cut source).
    """

    src: np.ndarray
    tgt: np.ndarray
    texts: list[tuple[str, str]] | None
    src_pad: int
    tgt_pad: int
    cut_sources: int = 0
    cut_targets: int = 0

    def __len__(self) -> int:
        return len(self.src)


def _file_position(array: np.ndarray) -> tuple[str, int] | None:
    """(file, byte offset of the first element) of a C-contiguous `np.memmap` (a slice of one
    included); None for any other array."""
    if not isinstance(array, np.memmap) or array._mmap is None or not array.flags.c_contiguous:
        return None
    mapped = np.frombuffer(array._mmap, np.uint8)  # the mapping, which starts at a page boundary
    start = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY
    return array.filename, start + array.ctypes.data - mapped.ctypes.data


def _read(fd: int, buffer: memoryview, position: int) -> None:
    if os.preadv(fd, [buffer], position) != len(buffer):
        raise OSError(f"short read at byte {position}: the file was cut")


def take_rows(array: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """`array[indices]` ([len(indices), *array.shape[1:]]) for a 1-D array of row indices.

    Rows of a memory-mapped file are read with `os.pread`, not through the mapping: pages
    touched through a mapping stay in the process's resident memory (the kernel also maps the
    neighbours of each page it faults in), so random rows drawn over a long run would make the
    whole file resident. Read this way, only the page cache holds them, which the kernel evicts
    under pressure. Any other array is indexed as usual."""
    indices = np.asarray(indices)
    position = _file_position(array)
    if position is None:
        return np.asarray(array[indices])
    path, offset = position
    row_bytes = array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    out = np.empty((len(indices), *array.shape[1:]), array.dtype)
    view = memoryview(out).cast("B")
    fd = os.open(path, os.O_RDONLY)
    try:
        for i, row in enumerate(indices.tolist()):
            if not 0 <= row < len(array):
                raise IndexError(f"row {row} of an array of {len(array)} rows")
            _read(fd, view[i * row_bytes : (i + 1) * row_bytes], offset + row * row_bytes)
    finally:
        os.close(fd)
    return out


def take_range(array: np.ndarray, start: int, stop: int) -> np.ndarray:
    """`array[start:stop]` as an array of its own; of a memory-mapped file, one read."""
    position = _file_position(array)
    if position is None:
        return np.asarray(array[start:stop])
    out = np.empty((stop - start, *array.shape[1:]), array.dtype)
    fd = os.open(position[0], os.O_RDONLY)
    try:
        if len(out):
            _read(fd, memoryview(out).cast("B"), position[1] + start * out[0].nbytes)
    finally:
        os.close(fd)
    return out


def row_lengths(array: np.ndarray, pad: int, chunk_rows: int = 65_536) -> np.ndarray:
    """Tokens that are not `pad` in each row of a 2-D array: [n] int32, read `chunk_rows` rows
    at a time (`take_range`), so that no temporary of the whole array is made."""
    lengths = np.empty(len(array), np.int32)
    for start in range(0, len(array), chunk_rows):
        stop = min(start + chunk_rows, len(array))
        lengths[start:stop] = (take_range(array, start, stop) != pad).sum(1)
    return lengths
