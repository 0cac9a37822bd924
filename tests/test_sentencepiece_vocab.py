"""SentencePiece vocabularies: special ids, round trip, saved and reloaded by kind."""

import pytest
import sentencepiece as spm

from flax_s2s.data.vocab import (
    BOS,
    EOS,
    PAD,
    UNK,
    SentencePieceVocab,
    SymbolVocab,
    load_vocab,
    save_vocab,
)
from flax_s2s.errors import FileFormatError

WORDS = ["house", "mouse", "horse", "small", "tall", "ball", "green", "the", "a", "is"]
CORPUS = [f"the {a} is {b}" for a in WORDS for b in WORDS]


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def vocab(request):
    return SentencePieceVocab.train(CORPUS, vocab_size=60, model_type=request.param)


def test_special_ids_and_round_trip(vocab, tmp_path):
    assert vocab.decode([PAD, BOS, EOS, UNK]) == ""  # EOS stops decoding at once
    text = "the green mouse is small"
    ids = vocab.encode(text)
    assert ids[-1] == EOS and min(ids[:-1]) > UNK
    assert vocab.decode([BOS, *ids, PAD, PAD]) == text
    assert len(vocab) <= 60

    save_vocab(vocab, tmp_path / "tgt_vocab")
    assert (tmp_path / "tgt_vocab.model").exists()
    loaded = load_vocab(tmp_path / "tgt_vocab")
    assert isinstance(loaded, SentencePieceVocab) and loaded == vocab
    assert loaded.encode(text) == ids


def test_unknown_characters_are_counted(vocab):
    before = vocab.unk_count
    vocab.encode("the 𝄞 is small", add_eos=False)
    assert vocab.unk_count > before


def test_load_vocab_finds_the_saved_kind(tmp_path):
    assert load_vocab(tmp_path / "src_vocab") is None
    symbols = SymbolVocab.build(["HH AH L OW"], separator=" ")
    save_vocab(symbols, tmp_path / "src_vocab")
    assert load_vocab(tmp_path / "src_vocab") == symbols


def test_token_text_names_each_id_by_its_piece(vocab):
    reference = spm.SentencePieceProcessor(model_proto=vocab.model_proto)
    ids = vocab.encode("the green mouse")
    assert [vocab.token_text(i) for i in ids] == [reference.id_to_piece(i) for i in ids]
    assert [vocab.token_text(i) for i in (PAD, BOS, EOS, UNK)] == ["<pad>", "<s>", "</s>", "<unk>"]


def test_a_file_that_is_not_a_sentencepiece_model_names_itself(tmp_path):
    path = tmp_path / "tgt_vocab.model"
    path.write_bytes(b"not a model proto")
    with pytest.raises(FileFormatError, match=f"^{path}: not a SentencePiece model"):
        SentencePieceVocab.load(path)
    with pytest.raises(FileFormatError, match="tgt_vocab.model: not a SentencePiece model"):
        load_vocab(tmp_path / "tgt_vocab")
