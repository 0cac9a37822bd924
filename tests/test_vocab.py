import re

import pytest

from flax_s2s.data.vocab import BOS, EOS, PAD, UNK, SymbolVocab
from flax_s2s.errors import FileFormatError


def test_special_ids_are_fixed():
    assert (PAD, BOS, EOS, UNK) == (0, 1, 2, 3)


@pytest.mark.parametrize(
    "texts, separator, sample",
    [
        (["12+7", "999+1"], "", "91+27"),
        (["HH AH L OW", "W ER L D"], " ", "W OW L D"),
    ],
)
def test_round_trip(tmp_path, texts, separator, sample):
    vocab = SymbolVocab.build(texts, separator)
    ids = vocab.encode(sample)
    assert ids[-1] == EOS and min(ids[:-1]) > UNK
    assert vocab.decode(ids) == sample
    vocab.save(tmp_path / "v.json")
    assert SymbolVocab.load(tmp_path / "v.json") == vocab
    assert SymbolVocab.load(tmp_path / "v.json").encode(sample) == ids


def test_unknown_symbols_become_unk_and_are_counted():
    vocab = SymbolVocab.build(["123"])
    assert vocab.encode("1x2y", add_eos=False) == [vocab.encode("1", False)[0], UNK,
                                                  vocab.encode("2", False)[0], UNK]
    assert vocab.unk_count == 2


def test_decode_stops_at_eos_and_skips_pad_and_bos():
    vocab = SymbolVocab.build(["ab"])
    a, b = vocab.encode("ab", add_eos=False)
    assert vocab.decode([BOS, a, PAD, b, EOS, a, a]) == "ab"


def test_rejects_duplicates_and_specials():
    with pytest.raises(ValueError, match="repeated"):
        SymbolVocab(["a", "a"])
    with pytest.raises(ValueError, match="special"):
        SymbolVocab(["<pad>"])


def test_token_text_names_each_id_by_its_symbol():
    vocab = SymbolVocab(["HH", "AH", "L", "OW"], separator=" ")
    ids = vocab.encode("L OW HH")
    assert [vocab.token_text(i) for i in ids] == ["L", "OW", "HH", "</s>"]
    assert [vocab.token_text(i) for i in (PAD, BOS, UNK)] == ["<pad>", "<s>", "<unk>"]


@pytest.mark.parametrize("content, detail", [
    (b'{"symbols": ["a", ', r"not a symbol vocabulary: Expecting value at line 1 column 19"),
    (b'["a", "b"]', r"not a symbol vocabulary \(expected JSON"),
    (b'{"symbols": ["a", 1], "separator": ""}', r"not a symbol vocabulary \(expected JSON"),
    (b'{"symbols": ["a"]}', r"not a symbol vocabulary \(expected JSON"),
    (b'{"symbols": ["a", "a"], "separator": ""}', r"vocabulary symbols must be unique; repeated: \['a'\]"),
    (b"\xff\xfe", r"not a symbol vocabulary: not UTF-8 at byte 0"),
])
def test_a_corrupt_vocabulary_file_names_itself_and_what_was_expected(tmp_path, content, detail):
    path = tmp_path / "src_vocab.json"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=rf"^{re.escape(str(path))}: {detail}"):
        SymbolVocab.load(path)
