"""From a prepared TFDS split to numpy batches of static shape.

The examples of a split are tokenized once into two padded int32 matrices. Training batches come
from a grain `MapDataset` over example indices: seeded shuffle (a fresh permutation each epoch),
repeat, batch. Its iterator state (how many batches were drawn) is saved in every checkpoint, so a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import grain
import numpy as np

from flax_s2s.data.vocab import PAD, SymbolVocab


@dataclasses.dataclass(frozen=True)
class Examples:
    """A tokenized split: `src` [n, max_src_len] and `tgt` [n, max_tgt_len] int32, PAD-filled.

    `tgt` holds the decoder's targets (ending in EOS); the decoder reads them shifted right behind
    BOS. `texts` keeps the raw (src, tgt) strings for reporting.
    """

    src: np.ndarray
    tgt: np.ndarray
    texts: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.src)


def read_split(builder, split: str) -> list[tuple[str, str]]:
    """All (src, tgt) text pairs of a prepared TFDS split, in the builder's stored order."""
    source = builder.as_data_source(split)
    records = source.__getitems__(list(range(len(source))))
    return [(r["src"].decode("utf-8"), r["tgt"].decode("utf-8")) for r in records]


def tokenize(
    pairs: Sequence[tuple[str, str]],
    src_vocab: SymbolVocab,
    tgt_vocab: SymbolVocab,
    max_src_len: int,
    max_tgt_len: int,
    too_long: str = "drop",
    split: str = "?",
) -> Examples:
    """Tokenizes and pads pairs; pairs longer than the limits are dropped (with a printed count)
    or raise (naming the first one), as `too_long` says.

    Source sequences carry no EOS; target sequences end in EOS, which counts towards max_tgt_len.
    """
    if too_long not in ("drop", "error"):
        raise ValueError(f"too_long must be 'drop' or 'error', got {too_long!r}")
    src = np.full((len(pairs), max_src_len), PAD, np.int32)
    tgt = np.full((len(pairs), max_tgt_len), PAD, np.int32)
    kept, texts = 0, []
    for index, (src_text, tgt_text) in enumerate(pairs):
        src_ids = src_vocab.encode(src_text, add_eos=False)
        tgt_ids = tgt_vocab.encode(tgt_text, add_eos=True)
        if len(src_ids) > max_src_len or len(tgt_ids) > max_tgt_len or not src_ids:
            if too_long == "error":
                raise ValueError(
                    f"split {split!r}, example {index}: source length {len(src_ids)} "
                    f"(max_src_len={max_src_len}) / target length {len(tgt_ids)} incl. EOS "
                    f"(max_tgt_len={max_tgt_len}): {src_text!r} -> {tgt_text!r}"
                )
            continue
        src[kept, : len(src_ids)] = src_ids
        tgt[kept, : len(tgt_ids)] = tgt_ids
        texts.append((src_text, tgt_text))
        kept += 1
    if kept < len(pairs):
        print(
            f"split {split!r}: dropped {len(pairs) - kept} of {len(pairs)} examples longer than "
            f"max_src_len={max_src_len} / max_tgt_len={max_tgt_len} (or with an empty source)"
        )
    if kept == 0:
        raise ValueError(f"split {split!r}: no example fits max_src_len / max_tgt_len")
    return Examples(src[:kept], tgt[:kept], texts)


def train_dataset(
    examples: Examples,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """Endless shuffled batches {"src_tokens", "tgt_tokens"} of this process's rows.

    Every process draws the same global batch of `batch_size` indices and keeps its own
    contiguous slice, so the global batch does not depend on the number of processes.
    """
    if batch_size % process_count:
        raise ValueError(f"batch_size={batch_size} is not divisible by {process_count} processes")
    if len(examples) < batch_size:
        raise ValueError(f"{len(examples)} training examples are fewer than batch_size={batch_size}")
    local = batch_size // process_count
    rows = slice(process_index * local, (process_index + 1) * local)

    def gather(indices: np.ndarray) -> dict[str, np.ndarray]:
        indices = np.asarray(indices)[rows]
        return {"src_tokens": examples.src[indices], "tgt_tokens": examples.tgt[indices]}

    return (
        grain.MapDataset.range(len(examples))
        .shuffle(seed=seed)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .map(gather)
    )


def train_iterator(dataset: grain.MapDataset) -> grain.DatasetIterator:
    """A checkpointable iterator (`get_state` / `set_state`) over `train_dataset` batches."""
    return iter(dataset.to_iter_dataset())


def eval_batches(examples: Examples, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches over a whole split in order; the last one is padded with PAD rows of weight 0 so
    every batch has the same static shape."""
    for start in range(0, len(examples), batch_size):
        src = examples.src[start : start + batch_size]
        tgt = examples.tgt[start : start + batch_size]
        weights = np.ones(len(src), np.float32)
        missing = batch_size - len(src)
        if missing:
            src = np.pad(src, ((0, missing), (0, 0)))
            tgt = np.pad(tgt, ((0, missing), (0, 0)))
            weights = np.pad(weights, (0, missing))
        yield {"src_tokens": src, "tgt_tokens": tgt, "weights": weights}
