"""The text files a user brings (JSON lines, TSV, CSV, .src/.tgt): each parsed into hand-written
pairs, bad lines named by file, line and field or counted and skipped, and dialogue sources."""

import itertools
import re

import numpy as np
import pytest
from conftest import tiny_config

from flax_s2s.data import dialogue, encoding, parallel_text, pipeline, text_files
from flax_s2s.data.vocab import EOS, PAD, SymbolVocab
from flax_s2s.errors import ConfigError, FileFormatError
from flax_s2s.training.config import validate_config

BOM = b"\xef\xbb\xbf"


def _read(directory, split="test", **fields):
    return parallel_text.read_parallel_dir(directory, (split,), text_files.TextFields(**fields))[split]


def test_jsonl_with_a_bom_references_and_a_dialogue(tmp_path):
    (tmp_path / "test.jsonl").write_bytes(BOM + "\r\n".join([
        '{"source": "ein Haus", "target": "a house", "id": 7}',
        '{"target": ["two", "2"], "source": "zwei"}',
        '{"context": ["hi", "how are you?"], "target": "fine"}',
        '{"source": "Grüße \\u00e9", "target": "greetings"}',
    ]).encode() + b"\n")
    pairs = _read(tmp_path)
    assert pairs == [("ein Haus", "a house"), ("zwei", "two"), ("zwei", "2"),
                     ("hi | how are you?", "fine"), ("Grüße é", "greetings")]
    assert isinstance(pairs[3][0], dialogue.Dialogue) and pairs[3][0].turns == ("hi", "how are you?")
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "test.jsonl").write_text('{"question": "q", "answer": "a", "context": "a passage"}\n')
    assert _read(renamed, src_field="question", tgt_field="answer", context_field="") == [("q", "a")]
    assert _read(tmp_path, turn_separator=" <t> ")[3] == ("hi <t> how are you?", "fine")


def test_tsv_and_csv_read_columns_by_header_name(tmp_path):
    (tmp_path / "train.tsv").write_bytes(BOM + b"target\tid\tsource\r\nx y\t1\ta, \"b\"\nz\t2\tc\n")
    assert _read(tmp_path, "train") == [('a, "b"', "x y"), ("c", "z")]
    (tmp_path / "test.csv").write_text(
        'id,source,target\n1,"a, b","say ""hi"""\n2,"two\nlines",t\n3,plain,\u00fc\n')
    assert _read(tmp_path) == [("a, b", 'say "hi"'), ("two\nlines", "t"), ("plain", "ü")]


def test_line_aligned_files_with_a_bom(tmp_path):
    (tmp_path / "test.src").write_bytes(BOM + b"ab\r\ncd\n")
    (tmp_path / "test.tgt").write_bytes(b"ba\ndc")
    assert _read(tmp_path) == [("ab", "ba"), ("cd", "dc")]


BAD_LINES = [  # (file, its text, the line and field named)
    ("test.jsonl", '{"source": "a", "target": "b"}\n{"source": "a", "target": "b"\n', r"2: not valid JSON"),
    ("test.jsonl", '["a", "b"]\n', r"1: a list, not a JSON object"),
    ("test.jsonl", '{"source": "a", "target": "b"}\n{"source": "a"}\n', r"2: field 'target' is missing"),
    ("test.jsonl", '{"target": "b"}\n', r"1: field 'source' \(or 'context'\) is missing"),
    ("test.jsonl", '{"source": 3, "target": "b"}\n', r"1: field 'source' is a number; expected a string"),
    ("test.jsonl", '{"source": "a", "target": " \\t"}\n', r"1: field 'target' is empty or whitespace"),
    ("test.jsonl", '{"source": "a", "target": ["b", ""]}\n', r"1: field 'target\[1\]' is empty"),
    ("test.jsonl", '{"source": "a", "target": []}\n', r"1: field 'target' is an empty list"),
    ("test.jsonl", '{"source": "a", "context": ["b"], "target": "c"}\n',
     r"1: fields 'source' and 'context' are both present"),
    ("test.jsonl", '{"context": "b", "target": "c"}\n', r"1: field 'context' is a string; expected a list"),
    ("test.jsonl", '{"context": ["b", "  "], "target": "c"}\n', r"1: field 'context\[1\]' is empty"),
    ("test.jsonl", '{"source": "a", "target": "b"}\n\n', r"2: not valid JSON"),
    ("test.tsv", "source\ttarget\na\tb\nc\td\te\n", r"3: 3 columns, the header has 2"),
    ("test.tsv", "source\ttarget\na\t\n", r"2: field 'target' is empty or whitespace"),
    ("test.csv", 'source,target\na,b\n"c\nd",e\nf\n', r"5: 1 columns, the header has 2"),
    ("test.csv", "source,target\n ,b\n", r"2: field 'source' is empty or whitespace"),
]


@pytest.mark.parametrize("name, text, named", BAD_LINES)
def test_a_bad_line_is_named_by_file_line_and_field(tmp_path, name, text, named):
    (tmp_path / name).write_text(text)
    with pytest.raises(FileFormatError, match=rf"^{re.escape(str(tmp_path / name))}:{named}"):
        _read(tmp_path)


def test_a_header_without_the_field_is_named(tmp_path):
    (tmp_path / "test.csv").write_text("src,target\na,b\n")
    with pytest.raises(FileFormatError, match=r"test\.csv:1: the header has no column 'source'"):
        _read(tmp_path)


def test_whitespace_only_src_tgt_lines_are_refused_or_skipped_with_a_count(tmp_path, capsys):
    (tmp_path / "test.src").write_text("ab\n  \ncd\nef\n")
    (tmp_path / "test.tgt").write_text("ba\nx\n\nfe\n")
    with pytest.raises(FileFormatError, match=r"test\.src:2: an empty or whitespace-only line"):
        _read(tmp_path)
    assert _read(tmp_path, skip_bad_lines=True) == [("ab", "ba"), ("ef", "fe")]
    out = capsys.readouterr().out
    assert "test.src: skipped 1 bad lines" in out and "test.tgt: skipped 1 bad lines" in out


def test_skip_bad_lines_counts_and_keeps_the_good_ones(tmp_path, capsys):
    (tmp_path / "test.jsonl").write_text('{"source": "a", "target": "b"}\nnot json\n{"source": "c"}\n'
                                         '{"source": "d", "target": "e"}\n[1]\n')
    assert _read(tmp_path, skip_bad_lines=True) == [("a", "b"), ("d", "e")]
    assert re.search(r"test\.jsonl: skipped 3 bad lines .*the first: .*test\.jsonl:2: not valid JSON",
                     capsys.readouterr().out)


def test_one_format_per_split_and_a_missing_split_names_what_it_looks_for(tmp_path):
    (tmp_path / "test.jsonl").write_text('{"source": "a", "target": "b"}\n')
    (tmp_path / "test.tsv").write_text("source\ttarget\na\tb\n")
    with pytest.raises(FileFormatError, match=r"both test\.jsonl and test\.tsv"):
        _read(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"validation\.src: no such file.*validation\.jsonl"):
        _read(tmp_path, "validation")
    (tmp_path / "train.tgt").write_text("b\n")
    with pytest.raises(FileNotFoundError, match=r"train\.src: no such file"):
        _read(tmp_path, "train")


@pytest.mark.parametrize("overrides, message", [
    ({"tgt_field": "source"}, "config.tgt_field='source' is also config.src_field"),
    ({"context_field": "target"}, "config.context_field='target' is also config.tgt_field"),
    ({"src_field": ""}, "config.src_field is empty"),
    ({"turn_separator": ""}, "config.turn_separator is empty"),
])
def test_the_fields_are_checked_by_name(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(tiny_config(**overrides))


VOCAB = SymbolVocab.build("abcdefgh |")


def _fit_by_every_suffix(turns, separator, max_len, eos):
    """The longest suffix of turns whose joined ids fit, else the latest turn (brute force)."""
    for cut in range(len(turns)):
        ids = VOCAB.encode(separator.join(turns[cut:]), add_eos=eos)
        if len(ids) <= max_len:
            return ids, cut
    return VOCAB.encode(turns[-1], add_eos=eos), len(turns) - 1


def test_a_dialogue_keeps_its_latest_turns_that_fit():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(60):
        turns = ["".join(rng.choice(list("abcdefgh"), rng.integers(1, 7)))
                 for _ in range(rng.integers(1, 6))]
        for max_len, eos, separator in itertools.product((3, 6, 10, 40), (False, True), (" | ", "|")):
            joined = dialogue.join_turns(turns, separator)
            assert str(joined) == separator.join(turns)
            got = encoding.fit_source(VOCAB, joined, max_len, eos)
            assert got == _fit_by_every_suffix(turns, separator, max_len, eos)
            checked += got[1] > 0
    assert checked > 50  # the history was cut often


def test_tokenize_cuts_dialogue_history_and_applies_the_policy_to_a_last_turn_over(capsys):
    pairs = [(dialogue.join_turns(["abc", "de", "f"]), "x"),  # 10 ids: keeps "de | f" (6)
             (dialogue.join_turns(["ab", "cdefghh"]), "y")]  # the last turn alone is over 6
    ids = VOCAB.encode
    dropped = pipeline.tokenize(pairs, VOCAB, VOCAB, 6, 3, "drop", "train")
    assert dropped.src.tolist() == [ids("de | f", False)]
    assert dropped.cut_sources == 1
    out = capsys.readouterr().out
    assert "cut the history of 1 dialogues (1 earlier turns)" in out and "dropped 1 of 2" in out
    cut = pipeline.tokenize(pairs, VOCAB, VOCAB, 6, 3, "truncate", "train", src_eos=True)
    # with EOS, "de | f" is 7 ids: only "f" fits; "cdefghh" is cut, its last id EOS
    assert cut.src.tolist() == [ids("f", False) + [EOS, PAD, PAD, PAD, PAD], ids("cdefg", False) + [EOS]]
    assert cut.cut_sources == 2 and cut.texts == pairs
