"""A pretrained checkpoint's tokenizer as a `Vocab`, read from its `save_pretrained` directory:
ByT5's bytes, T5's SentencePiece model, BART's byte-level BPE (`tokenizer.json`), mBART's
SentencePiece model in fairseq's ids (`sentencepiece.bpe.model`, `fairseq_vocab.py`), Marian's
source.spm / target.spm over vocab.json or PEGASUS's offset spiece.model (`piece_vocab.py`), with
the special ids of its config.json (`SpecialTokens.from_hf_config`). No model is built to read
them.

`tokenizer_vocabs` gives a run's two sides: the source framed with its language code (mBART),
the target starting with a forced first token (`config.forced_bos`, e.g. mBART's target
language code), as the reference's tokenizers frame them; Marian's two SentencePiece models.
"""

from __future__ import annotations

import json
import pathlib

from flax_s2s.data.fairseq_vocab import MBART50_LANGUAGE_CODES, MBART_LANGUAGE_CODES, FairseqVocab
from flax_s2s.data.piece_vocab import marian_vocabs, pegasus_vocab
from flax_s2s.data.vocab import ByteVocab, SentencePieceVocab, TokenizerVocab, Vocab
from flax_s2s.hf_files import PretrainedError, architecture, read_config
from flax_s2s.special_tokens import SpecialTokens

MBART_SPM = "sentencepiece.bpe.model"  # mBART's SentencePiece model (fairseq's ids)
NO_FORCED_BOS = "none"  # config.forced_bos: no forced first token, whatever config.json says


def _tokenizer_class(directory: pathlib.Path) -> str:
    """tokenizer_config.json's `tokenizer_class`, or "" without one."""
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return ""
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("tokenizer_class", ""))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise PretrainedError(f"{path}: not a JSON object ({error})") from None


def _mbart_vocab(directory: pathlib.Path, vocab_size: int) -> FairseqVocab:
    """mBART's SentencePiece model in fairseq's ids with its language codes and <mask>: the 52
    of mBART-50 when tokenizer_config.json names MBart50Tokenizer, else cc25's 25."""
    tokenizer_class = _tokenizer_class(directory)
    codes = MBART50_LANGUAGE_CODES if tokenizer_class.startswith("MBart50") else MBART_LANGUAGE_CODES
    path = directory / MBART_SPM
    try:
        vocab = FairseqVocab(path.read_bytes(), (*codes, "<mask>"))
    except RuntimeError:
        raise PretrainedError(f"{path}: not a SentencePiece model") from None
    if len(vocab) > vocab_size:
        raise PretrainedError(f"{path}: {len(vocab)} tokens (pieces, {len(codes)} language codes of "
                              f"{tokenizer_class or 'MBartTokenizer'}, <mask>) exceed config.json's "
                              f"vocab_size {vocab_size}")
    return vocab


def tokenizer_vocab(directory: str | pathlib.Path) -> Vocab:
    """The vocabulary of a save_pretrained directory: ByT5's bytes (its tokenizer_config.json
    names ByT5Tokenizer), mBART's `sentencepiece.bpe.model` (fairseq's ids), Marian's source side
    (`tokenizer_vocabs` gives both), PEGASUS's offset `spiece.model`, T5's `spiece.model`
    (SentencePiece), else a `tokenizer.json` (BART's byte-level BPE), with the
    special ids of its config.json; BART's texts start with `<s>` (config.json's bos_token_id),
    as its tokenizer writes them. Unframed (`tokenizer_vocabs` frames the sides)."""
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
    elif kind == "mbart":
        if not (directory / MBART_SPM).is_file():
            raise PretrainedError(f"{directory / MBART_SPM}: no such file (mBART's tokenizer)")
        vocab = _mbart_vocab(directory, hf["vocab_size"])
    elif (directory / "spiece.model").is_file():
        vocab = SentencePieceVocab.load(directory / "spiece.model")
    elif (directory / "tokenizer.json").is_file():
        prefix = [hf["bos_token_id"]] if kind == "bart" and "bos_token_id" in hf else []
        vocab = TokenizerVocab((directory / "tokenizer.json").read_text(encoding="utf-8"), specials, prefix)
    else:
        raise PretrainedError(f"{directory}: no tokenizer (spiece.model, tokenizer.json, "
                              f"{MBART_SPM}, or a tokenizer_config.json naming ByT5Tokenizer)")
    if vocab.special_tokens != specials:
        raise PretrainedError(f"{directory}: the tokenizer's special tokens {vocab.special_tokens} are "
                              f"not config.json's {specials}")
    return vocab


def _token_id(vocab: Vocab, token: str, field: str) -> int:
    """The id of `token` (a name or digits) in a vocabulary that can look tokens up."""
    if not hasattr(vocab, "token_id"):
        raise PretrainedError(f"{field}={token!r}: the checkpoint's {type(vocab).__name__} frames "
                              "no texts (mBART's and BART's tokenizers do)")
    try:
        return vocab.token_id(token)
    except ValueError as error:
        raise PretrainedError(f"{field}: {error}") from None


def tokenizer_vocabs(
    directory: str | pathlib.Path, src_lang: str = "", forced_bos: str = ""
) -> tuple[Vocab, Vocab]:
    """(source, target) vocabularies of a save_pretrained directory (`tokenizer_vocab`).

    src_lang: a language code (mBART) that every source carries as the reference's tokenizer
      places it: first for MBart50Tokenizer ([code] X </s>), last for MBartTokenizer
      (X </s> [code]). "": sources as `tokenizer_vocab` frames them.
    forced_bos: a token (name or id) every target starts with, so a model learns to emit it
      first (mBART-50: the target language code, the decoder reading </s> before it); it
      replaces BART's <s>. "": targets as `tokenizer_vocab` frames them.
    """
    directory = pathlib.Path(directory)
    vocab = tokenizer_vocab(directory)
    src, tgt = vocab, vocab
    if architecture(read_config(directory), directory) == "marian":  # target.spm on its side
        tgt = marian_vocabs(directory, vocab.special_tokens)[1]
    if src_lang:
        if not isinstance(vocab, FairseqVocab):
            raise PretrainedError(f"src_lang={src_lang!r}: {directory} is not mBART's (no "
                                  "language codes)")
        code = _token_id(vocab, src_lang, "src_lang")
        mbart50 = _tokenizer_class(directory).startswith("MBart50")
        src = vocab.framed(prefix=[code]) if mbart50 else vocab.framed(suffix=[code])
    if forced_bos and forced_bos != NO_FORCED_BOS:
        first = _token_id(vocab, forced_bos, "forced_bos")
        if isinstance(vocab, FairseqVocab):
            tgt = vocab.framed(prefix=[first])
        else:
            tgt = TokenizerVocab(vocab.tokenizer_json, vocab.special_tokens, [first])
    return src, tgt


def forced_bos_id(vocab: Vocab, forced_bos: str) -> int | None:
    """The id of `forced_bos` (a name or digits) in the target vocabulary; None for "" and
    NO_FORCED_BOS."""
    if not forced_bos or forced_bos == NO_FORCED_BOS:
        return None
    return _token_id(vocab, forced_bos, "forced_bos")
