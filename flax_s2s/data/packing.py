"""Packed training batches: several (source, target) pairs per row, as T5X and seqio pack them.

A packed row of `max_src_len` source and `max_tgt_len` target tokens holds consecutive examples
of the shuffled data order, each side laid out one example after another. Beside the tokens a
packed batch carries, for each side, its segment ids (0 on padding, 1, 2, ... the example's index
in the row) and its positions (restarting at 0 at each example), under `PACKED_KEYS`:

    src_tokens [rows, max_src_len], src_segment_ids, src_positions   (int32, the same shape)
    tgt_tokens [rows, max_tgt_len], tgt_segment_ids, tgt_positions

The rows come from grain's first-fit packer (`grain.experimental.FirstFitPackIterDataset`): the
examples, in the order of the seeded shuffle, fill `batch_size` open rows, each going into the
first row where both its source and its target still fit; when one fits in none, the open rows
become one batch and the example starts the next. So every example of an epoch is packed exactly
once, nothing is cut, the order depends only on the seed, and the iterator's state (a position in
the shuffled order plus the packer's) is checkpointed like the unpacked one's.
"""

from __future__ import annotations

import grain
import numpy as np

from flax_s2s.data import order
from flax_s2s.data.examples import Examples, row_lengths, take_rows

SIDES = ("src", "tgt")
SEGMENT_IDS = "{side}_segment_ids"
POSITIONS = "{side}_positions"
# The keys a packed batch has beside src_tokens / tgt_tokens; the train step packs by them.
PACKED_KEYS = tuple(key.format(side=side) for side in SIDES for key in (SEGMENT_IDS, POSITIONS))


def is_packed(batch) -> bool:
    """Whether `batch` (a dict of arrays) is a packed one (has segment ids and positions)."""
    return all(key in batch for key in PACKED_KEYS)


def segments(batch, side: str):
    """{"segment_ids", "positions"} of one side ("src" or "tgt") of a packed batch, None for an
    unpacked one: what `Seq2Seq.encode` / `forward` take as `segments`."""
    if not is_packed(batch):
        return None
    return {"segment_ids": batch[SEGMENT_IDS.format(side=side)],
            "positions": batch[POSITIONS.format(side=side)]}


def unpadded_examples(examples: Examples, indices: grain.MapDataset) -> grain.MapDataset:
    """The examples at the indices `indices` holds, each {"src", "tgt"} cut to its real tokens
    (1-D int32 arrays of its source and target lengths, EOS included)."""
    src_lengths = row_lengths(examples.src, examples.src_pad)
    tgt_lengths = row_lengths(examples.tgt, examples.tgt_pad)

    def example(index: int) -> dict[str, np.ndarray]:
        index = np.array([index])
        return {"src": take_rows(examples.src, index)[0, : src_lengths[index[0]]],
                "tgt": take_rows(examples.tgt, index)[0, : tgt_lengths[index[0]]]}

    return indices.map(example)


def pack_rows(
    stream: grain.IterDataset, max_src_len: int, max_tgt_len: int, num_rows: int,
    src_pad: int, tgt_pad: int,
) -> grain.IterDataset:
    """Packed rows from a stream of unpadded {"src", "tgt"} examples: grain's first-fit over
    `num_rows` open rows (see the module docstring), renamed to the batch keys. Each row is
    {"src_tokens" [max_src_len], "src_segment_ids", "src_positions", "tgt_tokens"
    [max_tgt_len], ...}, padding filled with the pad ids (segment id 0, position 0)."""
    packed = grain.experimental.FirstFitPackIterDataset(
        stream, length_struct={"src": max_src_len, "tgt": max_tgt_len},
        num_packing_bins=num_rows, shuffle_bins=False, padding_struct={"src": src_pad, "tgt": tgt_pad},
    )

    def rename(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        renamed = {}
        for side in SIDES:
            renamed[f"{side}_tokens"] = row[side].astype(np.int32)
            renamed[SEGMENT_IDS.format(side=side)] = row[f"{side}_segment_ids"].astype(np.int32)
            renamed[POSITIONS.format(side=side)] = row[f"{side}_positions"].astype(np.int32)
        return renamed

    return packed.map(rename)


def packed_train_dataset(
    examples: Examples, batch_size: int, seed: int, rows: slice
) -> grain.IterDataset:
    """Endless packed batches of `batch_size` rows (this process's `rows` of each): the
    examples shuffled per epoch from `seed` (as the unpacked batches are), packed by
    `pack_rows` over `batch_size` open rows, so that each batch is one round of the packer.

    Every process packs the whole global stream and keeps its rows, so the global batch does not
    depend on the number of processes.
    """
    max_src_len, max_tgt_len = examples.src.shape[1], examples.tgt.shape[1]
    stream = unpadded_examples(examples, order.shuffled_indices(len(examples), seed)).to_iter_dataset()
    packed = pack_rows(stream, max_src_len, max_tgt_len, batch_size, examples.src_pad,
                       examples.tgt_pad)
    return packed.batch(batch_size, drop_remainder=True).map(
        lambda batch: {key: value[rows] for key, value in batch.items()}
    )

