"""A pretrained checkpoint's tokenizer as a `Vocab`, read from its `save_pretrained` directory:
ByT5's bytes, T5's SentencePiece model, BART's byte-level BPE (`tokenizer.json`), Marian's
source.spm / target.spm over vocab.json or PEGASUS's offset spiece.model (`piece_vocab.py`), with
the special ids of its config.json (`SpecialTokens.from_hf_config`). No model is built to read
them.
"""

from __future__ import annotations

import json
import pathlib

from flax_s2s.data.piece_vocab import marian_vocabs, pegasus_vocab
from flax_s2s.data.vocab import ByteVocab, SentencePieceVocab, TokenizerVocab, Vocab
from flax_s2s.hf_files import PretrainedError, architecture, read_config
from flax_s2s.special_tokens import SpecialTokens


def _tokenizer_class(directory: pathlib.Path) -> str:
    """tokenizer_config.json's `tokenizer_class`, or "" without one."""
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return ""
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("tokenizer_class", ""))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise PretrainedError(f"{path}: not a JSON object ({error})") from None


def tokenizer_vocabs(directory: str | pathlib.Path) -> tuple[Vocab, Vocab]:
    """The source and the target vocabulary of a save_pretrained directory: Marian's two
    SentencePiece models over its one vocab.json, or `tokenizer_vocab` on both sides."""
    directory = pathlib.Path(directory)
    hf = read_config(directory)
    if architecture(hf, directory) != "marian":
        vocab = tokenizer_vocab(directory)
        return vocab, vocab
    source, target = marian_vocabs(directory, SpecialTokens.from_hf_config(hf))
    _check_specials(target, SpecialTokens.from_hf_config(hf), directory)
    return source, target


def _check_specials(vocab: Vocab, specials: SpecialTokens, directory: pathlib.Path) -> None:
    if vocab.special_tokens != specials:
        raise PretrainedError(f"{directory}: the tokenizer's special tokens {vocab.special_tokens} are "
                              f"not config.json's {specials}")


def tokenizer_vocab(directory: str | pathlib.Path) -> Vocab:
    """The vocabulary of a save_pretrained directory: ByT5's bytes (its tokenizer_config.json
    names ByT5Tokenizer), Marian's source side (`tokenizer_vocabs` gives both), PEGASUS's
    offset `spiece.model`, T5's `spiece.model` (SentencePiece), else a `tokenizer.json` (BART's
    byte-level BPE), with the special ids of its config.json; BART's texts start with `<s>`
    (config.json's bos_token_id), as its tokenizer writes them."""
    directory = pathlib.Path(directory)
    hf = read_config(directory)
    kind = architecture(hf, directory)
    specials = SpecialTokens.from_hf_config({**hf, "model_type": kind})
    if kind == "marian":
        vocab = marian_vocabs(directory, specials)[0]
    elif kind == "pegasus":
        vocab = pegasus_vocab(directory, specials)
    elif _tokenizer_class(directory) == "ByT5Tokenizer":  # bytes: no vocabulary file
        vocab = ByteVocab()
    elif (directory / "spiece.model").is_file():
        vocab = SentencePieceVocab.load(directory / "spiece.model")
    elif (directory / "tokenizer.json").is_file():
        prefix = [hf["bos_token_id"]] if hf.get("model_type") == "bart" and "bos_token_id" in hf else []
        vocab = TokenizerVocab((directory / "tokenizer.json").read_text(encoding="utf-8"), specials, prefix)
    else:
        raise PretrainedError(f"{directory}: no tokenizer (spiece.model, tokenizer.json, or a "
                              "tokenizer_config.json naming ByT5Tokenizer)")
    _check_specials(vocab, specials, directory)
    return vocab
