"""From a prepared TFDS split to numpy batches of static shape.

The examples of a split are tokenized once into two padded int32 matrices, each pair under the
length policy of `encoding.encode_pair` (a training split drops, refuses or truncates a pair over
the limits; an evaluated split keeps every pair, cut where it must be); the train split's may be
memory-mapped from its token store (`token_store.py`) and read by `examples.take_rows`. Training
batches come from a grain `MapDataset` over the epoch order of `order.py` (a fresh seeded
permutation each epoch), cut into consecutive batches. Its iterator state (how many batches were
drawn) is saved in every checkpoint, so a resumed run sees exactly the batches an uninterrupted
one would. With length buckets, each batch holds examples of one bucket, cut to that bucket's
static shape (one compile per bucket). With packing (`packing.py`), each row holds several
examples, with their segment ids and positions.

For evaluation against several references (a word with alternative pronunciations),
`group_references` gathers the unique sources of a split with all their targets.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Iterator, Sequence

import grain
import ml_collections
import numpy as np

from flax_s2s import config_checks
from flax_s2s.data import encoding, order, packing
from flax_s2s.data.examples import Examples, row_lengths, take_rows
from flax_s2s.data.vocab import Vocab
from flax_s2s.errors import ConfigError, DataError


def read_split(builder, split: str) -> list[tuple[str, str]]:
    """All (src, tgt) text pairs of a prepared TFDS split, in the builder's stored order."""
    source = builder.as_data_source(split)
    records = source.__getitems__(list(range(len(source))))
    return [(r["src"].decode("utf-8"), r["tgt"].decode("utf-8")) for r in records]


def check_config(config: ml_collections.ConfigDict) -> None:
    """Lengths and what happens over them, the train batch, length buckets, packing."""
    config_checks.one_of(config, "too_long", encoding.TOO_LONG_POLICIES)
    config_checks.positive(config, "batch_size")
    for key in ("max_src_len", "max_tgt_len"):
        if config[key] < 2:
            raise ConfigError(f"config.{key}={config[key]}: must be >= 2")
    boundaries = list(config.bucket_boundaries)
    if any(not isinstance(b, int) or b < 1 for b in boundaries) or boundaries != sorted(set(boundaries)):
        raise ConfigError(
            f"config.bucket_boundaries={config.bucket_boundaries!r}: must be increasing ints >= 1"
        )
    if config.pack and boundaries:
        raise ConfigError(
            f"config.pack=True with config.bucket_boundaries={tuple(boundaries)}: "
            "packed rows are filled to max_src_len / max_tgt_len; use one or the other"
        )


encode_source = encoding.encode_source  # where the decode CLI encodes its lines


def tokenize(
    pairs: Sequence[tuple[str, str]],
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    max_src_len: int,
    max_tgt_len: int,
    too_long: str = "drop",
    split: str = "?",
    src_eos: bool = False,
    evaluated: bool = False,
) -> Examples:
    """Tokenizes pairs (`encoding.encode_pair`) into padded matrices: a training split applies
    `too_long` to a pair over the limits (drop, error naming it, or truncate); an `evaluated`
    split keeps every pair, its source and target ids cut where they must be. What was dropped
    or cut is printed and counted in the Examples.

    Source sequences carry no EOS unless `src_eos` (see `encode_source`); target sequences end
    in EOS, which counts towards max_tgt_len.
    """
    limits = encoding.Limits(max_src_len, max_tgt_len, too_long, src_eos, evaluated)
    src_pad, tgt_pad = src_vocab.special_tokens.pad, tgt_vocab.special_tokens.pad
    src = np.full((len(pairs), max_src_len), src_pad, np.int32)
    tgt = np.full((len(pairs), max_tgt_len), tgt_pad, np.int32)
    texts, counts = [], encoding.CutCounts()
    for index, pair in enumerate(pairs):
        src_text, tgt_text = pair
        try:
            encoded = encoding.encode_pair(src_text, tgt_text, src_vocab, tgt_vocab, limits)
        except encoding.LengthError as error:
            where = getattr(pair, "origin", None) or f"split {split!r}, example {index}"
            raise DataError(f"{where}: {error}; config.too_long='drop' skips such pairs, "
                            "'truncate' cuts them, or raise config.max_src_len / "
                            "max_tgt_len") from None
        counts.add(encoded)
        if encoded is None:
            continue
        src[len(texts), : len(encoded.src)] = encoded.src
        tgt[len(texts), : len(encoded.tgt)] = encoded.tgt
        texts.append((src_text, tgt_text))
    counts.report(split, limits)
    if not texts:
        raise DataError(no_example_fits(split, max_src_len, max_tgt_len, len(pairs)))
    kept = len(texts)
    return Examples(src[:kept], tgt[:kept], texts, src_pad, tgt_pad,
                    cut_sources=counts.cut_sources, cut_targets=counts.cut_targets)


def no_example_fits(split: str, max_src_len: int, max_tgt_len: int, pairs: int) -> str:
    """The message of a split where none of its `pairs` fits the lengths, with the way out."""
    return (f"split {split!r}: none of its {pairs} example(s) fits max_src_len={max_src_len} / "
            f"max_tgt_len={max_tgt_len} (or each has an empty source); raise "
            "config.max_src_len / config.max_tgt_len, or set config.too_long='truncate'")


def train_dataset(
    examples: Examples,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    bucket_boundaries: Sequence[int] = (),
    pack: bool = False,
) -> grain.MapDataset | grain.IterDataset:
    """Endless shuffled batches {"src_tokens", "tgt_tokens"} of this process's rows.

    Every process draws the same global batch of `batch_size` indices and keeps its own
    contiguous slice, so the global batch does not depend on the number of processes. With
    `bucket_boundaries`, see `bucketed_train_dataset`; with `pack`, batches of `batch_size`
    packed rows, each holding several examples (`packing.packed_train_dataset`).
    """
    if batch_size % process_count:
        raise ValueError(f"batch_size={batch_size} is not divisible by {process_count} processes")
    if len(examples) < batch_size:
        raise ValueError(f"{len(examples)} training examples are fewer than batch_size={batch_size}")
    local = batch_size // process_count
    rows = slice(process_index * local, (process_index + 1) * local)
    if pack and bucket_boundaries:
        raise ValueError("packed rows are filled to the maximum lengths: pack and "
                         "bucket_boundaries exclude each other")
    if pack:
        return packing.packed_train_dataset(examples, batch_size, seed, rows)
    if bucket_boundaries:
        return bucketed_train_dataset(examples, batch_size, seed, rows, bucket_boundaries)

    def gather(indices: np.ndarray) -> dict[str, np.ndarray]:
        indices = indices[rows]
        return {"src_tokens": take_rows(examples.src, indices),
                "tgt_tokens": take_rows(examples.tgt, indices)}

    return order.shuffled_batches(len(examples), batch_size, seed).map(gather)


def train_iterator(dataset: grain.MapDataset | grain.IterDataset) -> grain.DatasetIterator:
    """A checkpointable iterator (`get_state` / `set_state`) over `train_dataset` batches."""
    if isinstance(dataset, grain.IterDataset):
        return iter(dataset)
    return iter(dataset.to_iter_dataset())


def first_batch(dataset: grain.MapDataset | grain.IterDataset) -> dict[str, np.ndarray]:
    """The first batch of a `train_dataset` (its shapes initialise the model)."""
    if isinstance(dataset, grain.IterDataset):
        return next(iter(dataset))
    return dataset[0]


def eval_batches(
    examples: Examples, batch_size: int, predicted: np.ndarray | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Batches over a whole split in order; the last one is padded with PAD rows of weight 0 so
    every batch has the same static shape. `predicted` [n, max_tgt_len] (decoded outputs, one per
    example) rides along as "predicted_tokens"."""
    fill = {"src_tokens": examples.src_pad, "tgt_tokens": examples.tgt_pad,
            "predicted_tokens": examples.tgt_pad, "weights": 0}
    for start in range(0, len(examples), batch_size):
        batch = {"src_tokens": examples.src[start : start + batch_size],
                 "tgt_tokens": examples.tgt[start : start + batch_size]}
        if predicted is not None:
            batch["predicted_tokens"] = predicted[start : start + batch_size]
        rows = len(batch["src_tokens"])
        batch["weights"] = np.ones(rows, np.float32)
        missing = batch_size - rows
        if missing:
            batch = {key: np.pad(value, ((0, missing),) + ((0, 0),) * (value.ndim - 1),
                                 constant_values=fill[key])
                     for key, value in batch.items()}
        yield batch


def bucket_shapes(max_src_len: int, max_tgt_len: int, boundaries: Sequence[int]) -> list[tuple[int, int]]:
    """(src_len, tgt_len) of each bucket: one per boundary below the maximum lengths, both sides
    cut at the boundary, then the full (max_src_len, max_tgt_len) for everything longer."""
    shapes = [(min(b, max_src_len), min(b, max_tgt_len)) for b in sorted(set(boundaries))]
    shapes.append((max_src_len, max_tgt_len))
    return list(dict.fromkeys(shapes))


def assign_buckets(examples: Examples, shapes: Sequence[tuple[int, int]]) -> np.ndarray:
    """Index of the first (smallest) bucket that fits each example's source and target: [n]
    int8. The lengths are counted in chunks (`row_lengths`): no [n, length] temporary."""
    src_lengths = row_lengths(examples.src, examples.src_pad)
    tgt_lengths = row_lengths(examples.tgt, examples.tgt_pad)  # EOS included
    bucket_of = np.full(len(examples), len(shapes) - 1, np.int8)  # the last bucket always fits
    for bucket in reversed(range(len(shapes) - 1)):
        src_len, tgt_len = shapes[bucket]
        bucket_of[(src_lengths <= src_len) & (tgt_lengths <= tgt_len)] = bucket
    return bucket_of


def bucketed_train_dataset(
    examples: Examples,
    batch_size: int,
    seed: int,
    rows: slice,
    boundaries: Sequence[int],
) -> grain.MapDataset:
    """Batches of `batch_size` examples from one length bucket, cut to its shape.

    Each epoch shuffles every bucket with a generator seeded by (seed, epoch), cuts it into full
    batches (the remainder of a bucket waits for a later epoch's shuffle) and shuffles the order
    of all batches. The plan depends only on (seed, epoch), so the dataset is indexable by batch
    number and a checkpointed iterator position resumes exactly.
    """
    max_src_len, max_tgt_len = examples.src.shape[1], examples.tgt.shape[1]
    shapes = bucket_shapes(max_src_len, max_tgt_len, boundaries)
    bucket_of = assign_buckets(examples, shapes)
    # int32 row numbers: 4 bytes an example, the plan's only memory that grows with the split
    bucket_rows = [np.flatnonzero(bucket_of == b).astype(np.int32) for b in range(len(shapes))]
    batches_per_epoch = sum(len(r) // batch_size for r in bucket_rows)
    if batches_per_epoch == 0:
        raise ValueError(f"no length bucket holds batch_size={batch_size} examples: {shapes}")

    planning = threading.Lock()  # grain's reader threads ask at once: plan each epoch once

    @functools.lru_cache(maxsize=2)
    def plan(epoch: int) -> tuple[list[np.ndarray], np.ndarray]:
        rng = np.random.default_rng([seed, epoch])
        shuffled = [rng.permutation(indices) for indices in bucket_rows]
        batches = np.array([(bucket, start) for bucket, rows_of in enumerate(shuffled)
                            for start in range(0, len(rows_of) - batch_size + 1, batch_size)],
                           np.int64).reshape(-1, 2)
        return shuffled, batches[rng.permutation(len(batches))]

    def epoch_plan(epoch: int) -> tuple[list[np.ndarray], np.ndarray]:
        """(each bucket's rows shuffled, the epoch's batches in order as (bucket, first
        position) [batches, 2])."""
        with planning:
            return plan(epoch)

    def gather(batch_number: int) -> dict[str, np.ndarray]:
        epoch, index = divmod(int(batch_number), batches_per_epoch)
        shuffled, batches = epoch_plan(epoch)
        bucket, start = (int(v) for v in batches[index])
        src_len, tgt_len = shapes[bucket]
        indices = shuffled[bucket][start : start + batch_size][rows]
        return {"src_tokens": take_rows(examples.src, indices)[:, :src_len],
                "tgt_tokens": take_rows(examples.tgt, indices)[:, :tgt_len]}

    endless = 2**62  # batch numbers; grain's iterator state is the next one
    return grain.MapDataset.range(endless).map(gather)


@dataclasses.dataclass(frozen=True)
class GroupedReferences:
    """The unique sources of a split, each with every reference target it has.

    `src` [n_sources, src_len] int32 (filled with the source pad id), `sources` and `references`
    the texts, in the order each source first appears; `source_index` [n_examples] is each grouped
    example's (or pair's) row in them; `cut_sources`: sources cut to fit `src`
    (`group_pairs`; a tokenized split counts its own, `Examples.cut_sources`).
    """

    src: np.ndarray
    sources: list[str]
    references: list[list[str]]
    source_index: np.ndarray
    cut_sources: int = 0

    def __len__(self) -> int:
        return len(self.sources)


def _group(
    pairs: Sequence[tuple[str, str]],
) -> tuple[dict[str, int], dict[str, list[str]], np.ndarray]:
    first_row: dict[str, int] = {}
    references: dict[str, list[str]] = {}
    for row, (src_text, tgt_text) in enumerate(pairs):
        first_row.setdefault(src_text, row)
        references.setdefault(src_text, [])
        if tgt_text not in references[src_text]:
            references[src_text].append(tgt_text)
    order = {src_text: i for i, src_text in enumerate(first_row)}  # first-appearance order
    source_index = np.array([order[src_text] for src_text, _ in pairs], np.int64)
    return first_row, references, source_index


def group_references(examples: Examples) -> GroupedReferences:
    """Groups a tokenized split by source text (reusing its source rows)."""
    if examples.texts is None:
        raise ValueError("a split kept in the token store has no texts to score against: "
                         "evaluate a split read whole (config.token_store=False)")
    first_row, references, source_index = _group(examples.texts)
    rows = list(first_row.values())
    return GroupedReferences(examples.src[rows], list(first_row), list(references.values()),
                             source_index)


def group_pairs(
    pairs: Sequence[tuple[str, str]], src_vocab: Vocab, max_src_len: int, src_eos: bool = False
) -> GroupedReferences:
    """Groups raw (source, target) pairs by source and tokenizes the sources as an evaluated
    split does (`encoding.source_within`): [n_sources, max_src_len], a longer source cut (a
    dialogue to its latest turns that fit), counted in `cut_sources` and printed. Nothing is
    dropped, so every source is scored."""
    first_row, references, source_index = _group(pairs)
    src = np.full((len(first_row), max_src_len), src_vocab.special_tokens.pad, np.int32)
    cut_sources = 0
    for row, source in enumerate(first_row):
        ids, cut = encoding.source_within(src_vocab, source, max_src_len, src_eos)
        src[row, : len(ids)] = ids
        cut_sources += cut
    if cut_sources:
        print(f"cut {cut_sources} of {len(first_row)} sources to max_src_len={max_src_len}; every "
              "source is scored against its whole references")
    return GroupedReferences(src, list(first_row), list(references.values()), source_index,
                             cut_sources)
