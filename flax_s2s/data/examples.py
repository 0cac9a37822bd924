"""A tokenized split, the value the data pipeline and the packer both read."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Examples:
    """A tokenized split: `src` [n, max_src_len] and `tgt` [n, max_tgt_len] int32, filled with
    their vocabularies' pad ids `src_pad` and `tgt_pad`.

    `tgt` holds the decoder's targets (ending in EOS); the decoder reads them shifted right behind
    BOS. `texts` keeps the raw (src, tgt) strings, whole, for reporting and the text metrics.
    `cut_sources` / `cut_targets`: how many rows hold a source / target cut to fit (a dialogue's
    history left out counts as a cut source).
    """

    src: np.ndarray
    tgt: np.ndarray
    texts: list[tuple[str, str]]
    src_pad: int
    tgt_pad: int
    cut_sources: int = 0
    cut_targets: int = 0

    def __len__(self) -> int:
        return len(self.src)
