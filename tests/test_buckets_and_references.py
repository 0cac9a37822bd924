"""Length-bucketed training batches and references grouped by source."""

import numpy as np
import pytest

from flax_s2s.data import pipeline
from flax_s2s.data.vocab import PAD, SymbolVocab

WORDS = [("A" * n + "B" * (n % 3), "X " * (n % 5) + "Y") for n in range(1, 14) for _ in range(8)]
VOCAB_TGT = SymbolVocab.build((p for _, p in WORDS), separator=" ")


def _examples():
    pairs = [(w + str(i % 10), p) for i, (w, p) in enumerate(WORDS)]  # distinct rows
    src_vocab = SymbolVocab.build(w for w, _ in pairs)
    return pipeline.tokenize(pairs, src_vocab, VOCAB_TGT, max_src_len=20, max_tgt_len=8)


def test_bucket_shapes_and_assignment():
    assert pipeline.bucket_shapes(20, 8, (4, 10)) == [(4, 4), (10, 8), (20, 8)]
    examples = _examples()
    shapes = pipeline.bucket_shapes(20, 8, (4, 10))
    buckets = pipeline.assign_buckets(examples, shapes)
    for row, bucket in enumerate(buckets):
        src_len, tgt_len = (examples.src[row] != PAD).sum(), (examples.tgt[row] != PAD).sum()
        fitting = [b for b, (s, t) in enumerate(shapes) if src_len <= s and tgt_len <= t]
        assert bucket == min(fitting)


def test_bucketed_epoch_covers_each_example_once_in_bucket_shapes_and_resumes():
    examples, batch_size = _examples(), 8
    shapes = pipeline.bucket_shapes(20, 8, (4, 10))
    dataset = pipeline.train_dataset(examples, batch_size, seed=3, bucket_boundaries=(4, 10))
    buckets = pipeline.assign_buckets(examples, shapes)
    per_epoch = sum(int((buckets == b).sum()) // batch_size for b in range(len(shapes)))
    full_rows = {tuple(r) for r in examples.src.tolist()}
    seen = []
    for index in range(per_epoch):
        batch = dataset[index]
        shape = (batch["src_tokens"].shape[1], batch["tgt_tokens"].shape[1])
        assert shape in shapes and batch["src_tokens"].shape[0] == batch_size
        for src in batch["src_tokens"].tolist():
            padded = tuple(src + [PAD] * (20 - len(src)))
            assert padded in full_rows  # nothing cut off but padding
            seen.append(padded)
    assert len(seen) == len(set(seen))  # no example twice in an epoch
    assert len(examples) - len(seen) < batch_size * len(shapes)  # only bucket remainders wait
    next_epoch = [tuple(dataset[per_epoch + i]["src_tokens"][0]) for i in range(3)]
    assert next_epoch != [tuple(dataset[i]["src_tokens"][0]) for i in range(3)]  # reshuffled

    again = pipeline.train_dataset(examples, batch_size, seed=3, bucket_boundaries=(4, 10))
    iterator = pipeline.train_iterator(again)
    for _ in range(per_epoch + 1):
        next(iterator)
    state = iterator.get_state()
    expected = next(iterator)["src_tokens"]
    resumed = pipeline.train_iterator(
        pipeline.train_dataset(examples, batch_size, 3, bucket_boundaries=(4, 10))
    )
    resumed.set_state(state)
    assert np.array_equal(next(resumed)["src_tokens"], expected)
    assert np.array_equal(expected, dataset[per_epoch + 1]["src_tokens"])


def test_bucketed_processes_take_slices_of_the_same_global_batch():
    examples = _examples()
    whole = pipeline.train_dataset(examples, 8, 1, bucket_boundaries=(4,))[5]["src_tokens"]
    halves = [pipeline.train_dataset(examples, 8, 1, i, 2, bucket_boundaries=(4,))[5]["src_tokens"]
              for i in range(2)]
    assert np.array_equal(np.concatenate(halves), whole)


PAIRS = [("CAT", "K AE T"), ("READ", "R IY D"), ("DOG", "D AO G"), ("READ", "R EH D"), ("CAT", "K AE T")]


def test_group_references_keeps_each_source_once_with_all_its_targets():
    src_vocab = SymbolVocab.build(w for w, _ in PAIRS)
    tgt_vocab = SymbolVocab.build((p for _, p in PAIRS), separator=" ")
    examples = pipeline.tokenize(PAIRS, src_vocab, tgt_vocab, 6, 5)
    grouped = pipeline.group_references(examples)
    assert grouped.sources == ["CAT", "READ", "DOG"]
    assert grouped.references == [["K AE T"], ["R IY D", "R EH D"], ["D AO G"]]
    assert [src_vocab.decode(row) for row in grouped.src] == grouped.sources

    raw = pipeline.group_pairs(PAIRS, src_vocab, max_src_len=6)
    assert raw.references == grouped.references and raw.src.shape == (3, 6)
    assert np.array_equal(raw.src, grouped.src)


@pytest.mark.parametrize("boundaries", [(), (4, 10)])
def test_too_few_examples_for_a_batch_is_an_error(boundaries):
    with pytest.raises(ValueError, match="batch_size"):
        pipeline.train_dataset(_examples(), 1000, 0, bucket_boundaries=boundaries)
