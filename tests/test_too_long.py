"""Length limits: a training split drops, refuses or truncates an example over them; an evaluated
split keeps every example under every policy, cut where it must be, and its eval says so."""

import jax
import numpy as np
import pytest
from conftest import LETTERS, REVERSE_PAIRS, ROLLED, tiny_config

from flax_s2s import training
from flax_s2s.data import pipeline, task_data
from flax_s2s.data.vocab import EOS, PAD, SymbolVocab
from flax_s2s.models import build_model

# A test split in line-aligned files; at max_src_len 6 / max_tgt_len 7 (EOS included), lines 2
# and 3 have sources and targets over the limits.
TEST_PAIRS = [("ab", "ba"), ("abcdefg", "gfedcba"), ("hgfedcbaa", "aabcdefgh"), ("cde", "edc"),
              ("abcdef", "fedcba")]
# What the model reads of each: sources cut to 6, targets cut to their first 7 gold ids.
CUT_SOURCES = ["ab", "abcdef", "hgfedc", "cde", "abcdef"]
CUT_TARGETS = [("ba", True), ("gfedcba", False), ("aabcdef", False), ("edc", True), ("fedcba", True)]


def _write_split(directory, split, pairs):
    (directory / f"{split}.src").write_text("".join(f"{s}\n" for s, _ in pairs))
    (directory / f"{split}.tgt").write_text("".join(f"{t}\n" for _, t in pairs))


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reversal")
    _write_split(directory, "train", [*REVERSE_PAIRS, (LETTERS, LETTERS[::-1])])
    _write_split(directory, "test", TEST_PAIRS)
    return directory


def _padded(vocab, text, length, eos):
    ids = vocab.encode(text, add_eos=eos)
    return ids + [PAD] * (length - len(ids))


@pytest.mark.parametrize("policy", ["drop", "error", "truncate"])
def test_an_evaluated_split_keeps_every_example_under_each_policy(tmp_path, data_path, policy):
    config = tiny_config(task="parallel_text", data_path=str(data_path), max_src_len=6,
                         max_tgt_len=7, too_long=policy)
    # Under "error" the train split's long example would stop the run: read the test split alone.
    splits = ("test",) if policy == "error" else ("train", "test")
    data = task_data.load_task_data(config, str(tmp_path), splits)
    test, vocab = data.splits["test"], data.src_vocab
    lines = len((data_path / "test.src").read_text().splitlines())
    assert len(test) == lines == 5
    assert test.cut_sources == 2 and test.cut_targets == 2
    assert test.src.tolist() == [_padded(vocab, s, 6, False) for s in CUT_SOURCES]
    assert test.tgt.tolist() == [_padded(vocab, t, 7, eos) for t, eos in CUT_TARGETS]
    assert test.texts == TEST_PAIRS  # whole references for the text metrics
    assert pipeline.group_references(test).references[2] == ["aabcdefgh"]


VOCAB = SymbolVocab.build(LETTERS)
TRAIN_PAIRS = [("abcdefgh", "hgfedcba"), ("ab", "ba"), ("abcde", "edcb")]


def test_truncate_keeps_the_source_eos_and_ends_targets_in_eos(capsys):
    examples = pipeline.tokenize(TRAIN_PAIRS, VOCAB, VOCAB, 6, 5, "truncate", "train", src_eos=True)
    ids = VOCAB.encode
    # "abcde" + EOS is 6 ids: it fits; "abcdefgh" keeps 5 letters and its EOS.
    assert examples.src.tolist() == [ids("abcde", False) + [EOS], ids("ab", False) + [EOS, PAD, PAD, PAD],
                                     ids("abcde", False) + [EOS]]
    assert examples.tgt.tolist() == [ids("hgfe", False) + [EOS], ids("ba", False) + [EOS, PAD, PAD],
                                     ids("edcb", False) + [EOS]]
    assert (examples.cut_sources, examples.cut_targets) == (1, 1)
    assert "cut 1 sources and 1 targets of 3 examples" in capsys.readouterr().out
    dropped = pipeline.tokenize(TRAIN_PAIRS, VOCAB, VOCAB, 6, 5, "drop", "train", src_eos=True)
    assert [s for s, _ in dropped.texts] == ["ab", "abcde"]
    with pytest.raises(ValueError, match=r"split 'train', example 0: source length 9"):
        pipeline.tokenize(TRAIN_PAIRS, VOCAB, VOCAB, 6, 5, "error", "train", src_eos=True)


def test_grouped_pairs_cut_their_sources_to_max_src_len():
    grouped = pipeline.group_pairs([*TRAIN_PAIRS, ("ab", "b")], VOCAB, 4)
    ids = VOCAB.encode
    assert grouped.src.tolist() == [ids("abcd", False), ids("ab", False) + [PAD, PAD], ids("abcd", False)]
    assert grouped.cut_sources == 2 and grouped.references[1] == ["ba", "b"]


def test_the_eval_result_counts_every_example_and_the_cut_sources(tmp_path):
    """The library's `evaluate`, as a training run's evals call it, on a tiny untrained model at
    lengths whose scans run rolled (quick to compile): every line of the test file is scored."""
    _write_split(tmp_path, "train", [*REVERSE_PAIRS, (LETTERS, LETTERS[::-1])])
    test_pairs = [(s * 2, t * 2) for s, t in TEST_PAIRS]  # 4 to 18 letters: 2 sources over 13
    _write_split(tmp_path, "test", test_pairs)
    config = tiny_config(task="parallel_text", data_path=str(tmp_path), eval_batch_size=4, **ROLLED)
    data = task_data.load_task_data(config, str(tmp_path / "run"), ("test",))
    model = build_model(config, len(data.src_vocab), len(data.tgt_vocab))
    rows = np.zeros((config.eval_batch_size, config.max_src_len), np.int32)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), rows, rows)
    result = training.evaluate(training.make_evaluator(model, config), variables, data.splits["test"],
                               config.eval_batch_size, ("wer",), data.tgt_vocab)
    assert result["examples"] == len((tmp_path / "test.src").read_text().splitlines()) == 5
    assert result["cut_sources"] == 2 and 0.0 <= result["wer"] <= 100.0
