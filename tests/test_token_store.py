"""The train split kept on disk (flax_s2s/data/token_store.py): the batches of the in-memory path,
across a resume too; rebuilt when stale; never read half written."""

import json
import os

import numpy as np
import pytest

from configs import default
from flax_s2s.data import parallel_text, pipeline, task_data, token_store
from flax_s2s.data.examples import take_range, take_rows
from flax_s2s.errors import FileFormatError

LETTERS = "abcdefgh"


def _write(directory, pairs, split="train"):
    for side, column in (("src", 0), ("tgt", 1)):
        with open(directory / f"{split}.{side}", "w", encoding="utf-8") as f:
            f.write("".join(pair[column] + "\n" for pair in pairs))


@pytest.fixture
def corpus(tmp_path):
    """237 pairs (a word -> its letters reversed, spaced), some over max_src_len=9: dropped."""
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list(LETTERS), rng.integers(1, 12))) for _ in range(237)]
    directory = tmp_path / "data"
    directory.mkdir()
    _write(directory, [(w, " ".join(reversed(w))) for w in words])
    _write(directory, [("abc", "c b a")], "validation")
    return directory


def _config(directory, **overrides):
    config = default.get_config()
    config.task, config.data_path = "parallel_text", str(directory)
    config.max_src_len, config.max_tgt_len = 9, 10
    config.vocab.tgt_separator = " "
    config.eval_splits, config.final_eval_split = ("validation",), "validation"
    config.update(overrides)
    return config


def _stores(workdir):
    root = workdir / token_store.DIRECTORY
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_the_store_holds_the_in_memory_split_and_gives_its_batches_across_a_resume(corpus, tmp_path):
    config = _config(corpus)
    stored = task_data.load_task_data(config, str(tmp_path / "w"), ("train",))
    examples = stored.splits["train"]
    assert isinstance(examples.src, np.memmap) and examples.texts is None
    # The reference: the whole file read and tokenized at once, as without the store.
    pairs = parallel_text.read_parallel_dir(corpus, ["train"])["train"]
    whole = pipeline.tokenize(pairs, stored.src_vocab, stored.tgt_vocab, 9, 10)
    assert len(whole) < len(pairs)  # some were dropped, in both
    assert np.array_equal(examples.src, whole.src) and np.array_equal(examples.tgt, whole.tgt)
    for options in ({}, {"bucket_boundaries": (4, 7)}, {"pack": True}):
        expected = pipeline.train_iterator(pipeline.train_dataset(whole, 8, 3, **options))
        iterator = pipeline.train_iterator(pipeline.train_dataset(examples, 8, 3, **options))
        for _ in range(40):  # more than an epoch (about 25 batches)
            _assert_same(next(iterator), next(expected))
        state = iterator.get_state()
        del iterator
        # resumed: the store opened again (not rebuilt), the iterator set to the saved state
        reopened = task_data.load_task_data(config, str(tmp_path / "w"), ("train",))
        resumed = pipeline.train_iterator(pipeline.train_dataset(reopened.splits["train"], 8, 3,
                                                                 **options))
        resumed.set_state(json.loads(json.dumps(state)))  # as a checkpoint keeps it
        for _ in range(10):
            _assert_same(next(resumed), next(expected))
    assert len(_stores(tmp_path / "w")) == 1


def _assert_same(batch, expected):
    assert batch.keys() == expected.keys()
    for key, value in expected.items():
        assert batch[key].dtype == value.dtype and np.array_equal(batch[key], value), key


def test_rows_read_through_the_file_equal_numpy_indexing(tmp_path):
    array = np.arange(700 * 5, dtype=np.int32).reshape(700, 5)
    np.save(tmp_path / "a.npy", array)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")[123:]  # a view that starts mid-file
    rows = np.array([0, 576, 3, 3, 200])
    assert np.array_equal(take_rows(mapped, rows), array[123:][rows])
    assert np.array_equal(take_range(mapped, 10, 20), array[133:143])
    with pytest.raises(IndexError):
        take_rows(mapped, np.array([577]))


def test_a_stale_store_is_rebuilt_and_removed(corpus, tmp_path):
    workdir = tmp_path / "w"
    config = _config(corpus)
    first = task_data.load_task_data(config, str(workdir), ("train",)).splits["train"]
    [old] = _stores(workdir)
    with open(corpus / "train.src", "a") as src, open(corpus / "train.tgt", "a") as tgt:
        src.write("hgf\n")
        tgt.write("f g h\n")
    second = task_data.load_task_data(config, str(workdir), ("train",)).splits["train"]
    assert len(second) == len(first) + 1 and old not in _stores(workdir)
    # the new last row: symbol ids follow the 4 specials, in sorted order
    assert list(second.src[-1][:4]) == [LETTERS.index(c) + 4 for c in "hgf"] + [0]
    # a manifest of another key under this key's name: rebuilt from the files, not trusted
    [current] = _stores(workdir)
    manifest = workdir / token_store.DIRECTORY / current / token_store.MANIFEST
    saved = json.loads(manifest.read_text())
    saved["key"]["max_src_len"], saved["rows"] = 5, 3
    manifest.write_text(json.dumps(saved))
    third = task_data.load_task_data(config, str(workdir), ("train",)).splits["train"]
    assert np.array_equal(third.src, second.src)
    assert json.loads(manifest.read_text())["rows"] == len(second)
    # a changed length limit is another store
    shorter = task_data.load_task_data(_config(corpus, max_src_len=6), str(workdir), ("train",))
    assert shorter.splits["train"].src.shape[1] == 6 and current not in _stores(workdir)


def test_an_interrupted_build_leaves_no_store_to_read(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(token_store, "CHUNK_PAIRS", 16)
    workdir = tmp_path / "w"
    config = _config(corpus)
    task_data.load_task_data(config, str(workdir), ("train",))  # saves the vocabularies
    # a line that is not UTF-8 past the first chunks: the build stops naming it
    lines = (corpus / "train.src").read_bytes().split(b"\n")
    lines[99] = b"ab\xffc"
    (corpus / "train.src").write_bytes(b"\n".join(lines))
    with pytest.raises(FileFormatError, match=r"train\.src:100: not valid UTF-8"):
        task_data.load_task_data(config, str(workdir), ("train",))
    assert _stores(workdir) == []  # the stale store removed, the new one never renamed in
    # what a killed build left (its process gone) is removed, never read; others' files stay
    root = workdir / token_store.DIRECTORY
    killed = root / f".train-tmp-{2**22 + 12345}-x"
    killed.mkdir()
    (killed / "src.npy").write_bytes(b"half")
    (root / "notes").mkdir()
    lines[99] = b"abc"
    (corpus / "train.src").write_bytes(b"\n".join(lines))
    examples = task_data.load_task_data(config, str(workdir), ("train",)).splits["train"]
    assert len(_stores(workdir)) == 2 and "notes" in _stores(workdir)
    pairs = parallel_text.read_parallel_dir(corpus, ["train"])["train"]
    assert len(examples) == sum(len(s) <= 9 for s, _ in pairs)


def test_a_directory_in_the_stores_place_that_is_not_one_is_named_not_removed(corpus, tmp_path):
    workdir = tmp_path / "w"
    config = _config(corpus)
    task_data.load_task_data(config, str(workdir), ("train",))
    [name] = _stores(workdir)
    store = workdir / token_store.DIRECTORY / name
    os.remove(store / token_store.MANIFEST)
    with pytest.raises(FileFormatError, match="not a token store"):
        task_data.load_task_data(config, str(workdir), ("train",))
    assert (store / "src.npy").exists()


def test_unpaired_lines_are_named_and_an_evaluated_train_split_stays_in_memory(corpus, tmp_path):
    with open(corpus / "train.tgt", "a") as f:
        f.write("x\n")
    with pytest.raises(FileFormatError, match=r"train\.tgt:238: no partner line in .*train\.src \(.*"
                       r"train\.src has 237 lines, .*train\.tgt has 238; expected line-aligned"):
        task_data.load_task_data(_config(corpus), str(tmp_path / "w"), ("train",))
    (corpus / "train.tgt").write_text("".join((corpus / "train.tgt").read_text().splitlines(True)[:-1]))
    data = task_data.load_task_data(_config(corpus, eval_splits=("train",)), str(tmp_path / "v"),
                                    ("train",))
    assert data.splits["train"].texts is not None and _stores(tmp_path / "v") == []


def test_a_jsonl_split_with_dialogues_is_stored_as_tokenized_whole_with_its_cuts(tmp_path):
    """JSON lines (dialogue contexts among them) under too_long='truncate': the store streams
    them through the text-file reader and holds the ids and the cut counts of the whole split
    tokenized at once."""
    rng = np.random.default_rng(1)
    rows = []
    for index in range(60):
        words = ["".join(rng.choice(list(LETTERS), rng.integers(1, 14))) for _ in range(3)]
        source = ({"context": words} if index % 3 == 0 else {"source": words[0]})
        rows.append({**source, "target": " ".join(reversed(words[-1]))})
    directory = tmp_path / "data"
    directory.mkdir()
    for split, split_rows in (("train", rows), ("validation", rows[:2])):
        (directory / f"{split}.jsonl").write_text(
            "".join(json.dumps(row) + "\n" for row in split_rows), encoding="utf-8")
    config = _config(directory, too_long="truncate")
    stored = task_data.load_task_data(config, str(tmp_path / "w"), ("train",))
    examples = stored.splits["train"]
    assert isinstance(examples.src, np.memmap)
    config.token_store = False
    whole = task_data.load_task_data(config, str(tmp_path / "w2"), ("train",)).splits["train"]
    assert len(whole) == len(rows)  # truncate keeps every pair
    assert np.array_equal(examples.src, whole.src) and np.array_equal(examples.tgt, whole.tgt)
    assert (examples.cut_sources, examples.cut_targets) == (whole.cut_sources, whole.cut_targets)
    assert whole.cut_sources > 0 and whole.cut_targets > 0
