"""The order a training run reads its examples in: every epoch a fresh permutation of the
examples, drawn from (seed, epoch) alone, so any position of the endless order can be computed
without reading the ones before it (a resumed run continues it exactly).

This is grain's `MapDataset.shuffle(seed).repeat()` with the permutation drawn by NumPy, once
per epoch, instead of by grain's per-index Feistel bijection (`index_shuffle`): that one costs
about 500 us an index at 32 examples and 34 us at 1,000 (3.5 us at 100,000), which made a tiny
model's run spend more time ordering its data than training (`bench/RESULTS.md`, beside the
test suite's timings). The price is one int32 array of the split's size per epoch held (two at most).
"""

from __future__ import annotations

import functools
import threading

import grain
import numpy as np


class EpochOrder:
    """The endless order of `num_examples` example indices: position p holds
    `permutation(p // num_examples)[p % num_examples]`. Thread-safe (grain's reader threads)."""

    def __init__(self, num_examples: int, seed: int) -> None:
        self.num_examples, self.seed = num_examples, seed
        self._lock = threading.Lock()
        self._permutation = functools.lru_cache(maxsize=2)(self._draw)

    def _draw(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        return rng.permutation(self.num_examples).astype(np.int32)

    def permutation(self, epoch: int) -> np.ndarray:
        """[num_examples] int32: the example indices of `epoch`, in reading order."""
        with self._lock:
            return self._permutation(epoch)

    def indices(self, start: int, count: int) -> np.ndarray:
        """[count] int32: the example indices at positions start, ..., start + count - 1 (a
        stretch may cross from one epoch into the next)."""
        positions = np.arange(start, start + count, dtype=np.int64)
        epochs, within = np.divmod(positions, self.num_examples)
        out = np.empty(count, np.int32)
        for epoch in np.unique(epochs):  # one or two epochs for a batch
            here = epochs == epoch
            out[here] = self.permutation(int(epoch))[within[here]]
        return out


ENDLESS = 2**62  # positions; a grain iterator's state is the next one


def shuffled_batches(num_examples: int, batch_size: int, seed: int) -> grain.MapDataset:
    """Endless [batch_size] int32 arrays of example indices: consecutive stretches of the
    epoch order (the last batch of an epoch may take the first indices of the next)."""
    order = EpochOrder(num_examples, seed)
    return grain.MapDataset.range(ENDLESS // batch_size).map(
        lambda batch: order.indices(int(batch) * batch_size, batch_size))


def shuffled_indices(num_examples: int, seed: int) -> grain.MapDataset:
    """The epoch order one index at a time (int), for streams consumed example by example."""
    order = EpochOrder(num_examples, seed)
    return grain.MapDataset.range(ENDLESS).map(
        lambda position: int(order.indices(int(position), 1)[0]))
