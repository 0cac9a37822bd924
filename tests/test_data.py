import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ADDITION_TEST_SPLITS, ROOT

from flax_s2s.data import order, pipeline, tasks
from flax_s2s.data.vocab import EOS, PAD, SymbolVocab


@pytest.fixture(scope="module")
def addition_texts(addition_data_dir):
    builder = tasks.prepare("addition", addition_data_dir)
    return {split: pipeline.read_split(builder, split) for split in ("train", "validation", "test")}


def test_builder_prepares_offline_with_disjoint_splits(addition_texts):
    # The session's data is the task's builder at test size (conftest); the full cut also fits.
    sizes = {split: len(pairs) for split, pairs in addition_texts.items()}
    assert sizes == ADDITION_TEST_SPLITS
    assert sum(tasks.Addition.SPLIT_SIZES.values()) <= (tasks.Addition.MAX_OPERAND + 1) ** 2
    sources = {split: {src for src, _ in pairs} for split, pairs in addition_texts.items()}
    assert not sources["train"] & sources["test"]
    assert not sources["train"] & sources["validation"]
    assert not sources["validation"] & sources["test"]
    for src, tgt in addition_texts["test"][:100]:
        a, b = src.split("+")
        assert int(tgt) == int(a) + int(b) and max(int(a), int(b)) <= 999


def test_prepare_twice_reuses_the_prepared_files(addition_data_dir, addition_texts):
    again = pipeline.read_split(tasks.prepare("addition", addition_data_dir), "test")
    assert again == addition_texts["test"]


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="'nope'"):
        tasks.prepare("nope", "/nonexistent")


PAIRS = [("1+2", "3"), ("10+20", "30"), ("123+456", "579"), ("5+5", "10")]
VOCAB = SymbolVocab.build([s for s, _ in PAIRS] + [t for _, t in PAIRS])


def test_tokenize_pads_and_ends_targets_with_eos():
    examples = pipeline.tokenize(PAIRS, VOCAB, VOCAB, max_src_len=7, max_tgt_len=4)
    assert examples.src.shape == (4, 7) and examples.tgt.shape == (4, 4)
    assert VOCAB.decode(examples.src[2]) == "123+456"
    assert list(examples.tgt[0]) == [VOCAB.encode("3", False)[0], EOS, PAD, PAD]


def test_too_long_examples_are_dropped_with_a_count(capsys):
    examples = pipeline.tokenize(PAIRS, VOCAB, VOCAB, max_src_len=5, max_tgt_len=4, split="x")
    assert [t for _, t in examples.texts] == ["3", "30", "10"]
    assert "dropped 1 of 4" in capsys.readouterr().out


def test_too_long_examples_can_be_an_error_naming_them():
    with pytest.raises(ValueError, match=r"example 2.*'123\+456'"):
        pipeline.tokenize(PAIRS, VOCAB, VOCAB, 5, 4, too_long="error", split="train")


def _examples(n=10):
    pairs = [(f"{i}+{i}", str(2 * i)) for i in range(n)]
    vocab = SymbolVocab.build([s for s, _ in pairs])
    return pipeline.tokenize(pairs, vocab, vocab, 6, 4)


def test_train_batches_are_seeded_reshuffled_per_epoch_and_resumable():
    examples = _examples()
    dataset = pipeline.train_dataset(examples, batch_size=5, seed=7)
    first = [dataset[i]["src_tokens"] for i in range(4)]
    again = pipeline.train_dataset(examples, batch_size=5, seed=7)
    assert all(np.array_equal(a, again[i]["src_tokens"]) for i, a in enumerate(first))
    epoch0 = np.concatenate(first[:2]).tolist()
    epoch1 = np.concatenate(first[2:]).tolist()
    assert sorted(epoch0) == sorted(examples.src.tolist()) == sorted(epoch1)
    assert epoch0 != epoch1

    iterator = pipeline.train_iterator(dataset)
    next(iterator)
    state = iterator.get_state()
    expected = next(iterator)["src_tokens"]
    resumed = pipeline.train_iterator(pipeline.train_dataset(examples, 5, seed=7))
    resumed.set_state(state)
    assert np.array_equal(next(resumed)["src_tokens"], expected)


def test_processes_take_disjoint_slices_of_the_same_global_batch():
    examples = _examples()
    whole = pipeline.train_dataset(examples, 4, seed=1)[3]["src_tokens"]
    halves = [pipeline.train_dataset(examples, 4, 1, i, 2)[3]["src_tokens"] for i in range(2)]
    assert np.array_equal(np.concatenate(halves), whole)


def test_eval_batches_pad_the_last_batch_with_zero_weight():
    batches = list(pipeline.eval_batches(_examples(10), batch_size=4))
    assert [b["src_tokens"].shape for b in batches] == [(4, 6)] * 3
    assert batches[-1]["weights"].tolist() == [1, 1, 0, 0]
    assert not batches[-1]["src_tokens"][2:].any()


@pytest.mark.slow
def test_two_runs_preparing_the_same_dataset_at_once_take_turns(tmp_path):
    """Two processes prepare one task into one fresh data directory at the same moment (runs side
    by side share `tfds/`): both succeed and read the same examples. Without the lock, TFDS has
    the second crash renaming its copy onto the first's (FileExistsError)."""
    code = textwrap.dedent("""
        import sys
        from flax_s2s.data import pipeline, tasks

        class Reverse(tasks.Reverse, skip_registration=True):  # big enough to overlap
            name = "reverse"
            SPLIT_SIZES = {"test": 500, "validation": 500, "train": 20_000}

        builder = tasks.prepare_once(Reverse, sys.argv[1])
        print(pipeline.read_split(builder, "test")[:3])
    """)
    processes = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err[-2000:]
    first, second = (out.splitlines()[-1] for out, _ in outputs)  # after TFDS's own messages
    assert first == second and first.startswith("[(")


def test_the_epoch_order_is_a_fresh_seeded_permutation_each_epoch_read_alike_by_batch_and_by_index():
    n, batch_size = 10, 4  # 10 % 4 != 0: batches cross from one epoch into the next
    stream = order.shuffled_indices(n, seed=5)
    positions = [int(stream[p]) for p in range(4 * n)]
    epochs = [positions[e * n : (e + 1) * n] for e in range(4)]
    assert all(sorted(epoch) == list(range(n)) for epoch in epochs)  # each example once an epoch
    assert len({tuple(epoch) for epoch in epochs}) == 4  # reshuffled each epoch
    batches = order.shuffled_batches(n, batch_size, seed=5)
    assert np.concatenate([batches[b] for b in range(10)]).tolist() == positions
    assert [int(order.shuffled_indices(n, seed=5)[p]) for p in range(4 * n)] == positions
    assert [int(order.shuffled_indices(n, seed=6)[p]) for p in range(n)] != epochs[0]
    # far positions are computed without the ones before them, and agree with an iterator's
    far = 10**12 * n + 3
    iterator = iter(stream.to_iter_dataset())
    iterator.set_state({"next_index": far})
    assert next(iterator) == int(stream[far]) == int(order.EpochOrder(n, 5).permutation(10**12)[3])
