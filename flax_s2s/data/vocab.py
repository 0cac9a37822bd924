"""Vocabularies and their special token ids (`vocab.special_tokens`, a `SpecialTokens`).

`SymbolVocab` maps characters or whitespace-separated symbols (phones), with the default ids
PAD=0, BOS=1, EOS=2, UNK=3; `SentencePieceVocab` wraps a SentencePiece model (trained on a training
split, or any other, such as T5's `spiece.model`) and reads its ids from the model, e.g. T5's
pad 0, eos 1, unk 2 (no bos: the decoder starts from pad); `TokenizerVocab` wraps a Hugging Face
`tokenizer.json` (BART's byte-level BPE) with its checkpoint's ids (BART: pad 1, eos 2, unk 3,
the decoder starting from eos). All offer `encode`, `decode`,
`token_text`, `len`, `save`, `load` and `special_tokens`. The model is built with the target vocabulary's
special tokens (`model_special_tokens`), and padding, decoding and metrics read them from it.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import sentencepiece as spm

from flax_s2s.data.fairseq_vocab import FairseqVocab
from flax_s2s.data.piece_vocab import PieceVocab
from flax_s2s.errors import FileFormatError
from flax_s2s.special_tokens import DEFAULT_SPECIAL_TOKENS, SpecialTokens

# SymbolVocab's ids (the default ones) and the special symbols at those ids. SentencePiece models
# trained here use the same unless told otherwise; others bring their own.
PAD, BOS, EOS, UNK = (DEFAULT_SPECIAL_TOKENS.pad, DEFAULT_SPECIAL_TOKENS.bos,
                      DEFAULT_SPECIAL_TOKENS.eos, DEFAULT_SPECIAL_TOKENS.unk)
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
SP_MODEL_TYPES = ("unigram", "bpe")  # the SentencePiece algorithms `SentencePieceVocab.train` offers


def split_symbols(text: str, separator: str) -> list[str]:
    """The symbols of `text`: its characters when `separator` is "", else the non-empty pieces
    between separators (phones, words). Vocabularies, the decode CLI and text metrics all split
    text this way."""
    return list(text) if separator == "" else [s for s in text.split(separator) if s]


class SymbolVocab:
    """Maps symbols (characters, or whitespace-separated tokens such as phones) to ids.

    Args:
      symbols: the non-special symbols, in id order (ids start after the four specials).
      separator: "" for character sequences ("12+7"), " " for token sequences ("HH AH0 L OW").
    """

    def __init__(self, symbols: Sequence[str], separator: str = "") -> None:
        if len(set(symbols)) != len(symbols):
            repeated = sorted(s for s, n in Counter(symbols).items() if n > 1)
            raise ValueError(f"vocabulary symbols must be unique; repeated: {repeated}")
        clash = sorted(set(symbols) & set(SPECIALS))
        if clash:
            raise ValueError(f"vocabulary symbols clash with the special symbols: {clash}")
        self.separator = separator
        self.symbols: list[str] = list(SPECIALS) + list(symbols)
        self._ids = {s: i for i, s in enumerate(self.symbols)}
        self.unk_count = 0  # symbols mapped to UNK by encode(), for reporting

    special_tokens = DEFAULT_SPECIAL_TOKENS  # the four specials come first, in SPECIALS order

    @classmethod
    def build(cls, texts: Iterable[str], separator: str = "") -> SymbolVocab:
        """Builds a vocabulary of every symbol seen in `texts`, sorted for determinism."""
        seen: set[str] = set()
        for text in texts:
            seen.update(split_symbols(text, separator))
        return cls(sorted(seen), separator)

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        """Text -> ids; unknown symbols become UNK and are counted in `unk_count`."""
        ids = []
        for symbol in split_symbols(text, self.separator):
            token = self._ids.get(symbol, UNK)
            self.unk_count += token == UNK
            ids.append(token)
        return ids + [EOS] if add_eos else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text, stopping at the first EOS and skipping PAD and BOS."""
        out = []
        for token in ids:
            token = int(token)
            if token == EOS:
                break
            if token in (PAD, BOS):
                continue
            out.append(self.symbols[token] if 0 <= token < len(self.symbols) else SPECIALS[UNK])
        return self.separator.join(out)

    def token_text(self, token: int) -> str:
        """The symbol of one id, a special by its name ("</s>"); for labels, not for decoding."""
        return self.symbols[int(token)]

    def to_dict(self) -> dict:
        return {"symbols": self.symbols[len(SPECIALS):], "separator": self.separator}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> SymbolVocab:
        """The vocabulary `save` wrote; a file that is not one raises FileFormatError naming it."""
        expected = 'expected JSON {"symbols": [strings], "separator": string}'
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise FileFormatError(f"{path}: not a symbol vocabulary: {error.msg} at line "
                                  f"{error.lineno} column {error.colno} ({expected})") from None
        except UnicodeDecodeError as error:
            raise FileFormatError(f"{path}: not a symbol vocabulary: not UTF-8 at byte "
                                  f"{error.start} ({expected})") from None
        symbols = data.get("symbols") if isinstance(data, dict) else None
        separator = data.get("separator") if isinstance(data, dict) else None
        if not (isinstance(symbols, list) and all(isinstance(s, str) for s in symbols)
                and isinstance(separator, str)):
            raise FileFormatError(f"{path}: not a symbol vocabulary ({expected})")
        try:
            return cls(symbols, separator)
        except ValueError as error:
            raise FileFormatError(f"{path}: {error}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SymbolVocab) and self.to_dict() == other.to_dict()


class SentencePieceVocab:
    """A SentencePiece model (unigram or BPE); its special ids are the model's own.

    The model must define pad, eos and unk pieces (pad fills batches; eos ends targets). A model
    without a bos piece (T5's) starts the decoder from pad. `decode` returns detokenized text, so
    BLEU and chrF score what a user would read.
    """

    separator = " "  # error rates over decoded text count whitespace-separated words

    def __init__(self, model_proto: bytes) -> None:
        self.model_proto = model_proto
        self._processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self.special_tokens = _sentencepiece_special_tokens(self._processor)
        self.unk_count = 0

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
        max_sentences: int = 1_000_000,
        special_tokens: SpecialTokens = DEFAULT_SPECIAL_TOKENS,
    ) -> SentencePieceVocab:
        """Trains on `texts` (at most `max_sentences` of them, sampled by SentencePiece).

        `vocab_size` counts the specials; on a small corpus the vocabulary may come out smaller
        (hard_vocab_limit=False) rather than fail. `special_tokens` places the special pieces
        (default: PAD=0, BOS=1, EOS=2, UNK=3); bos == pad trains a model without a bos piece.
        """
        ids = special_tokens
        no_bos = ids.bos in (ids.pad, ids.eos)  # no piece of its own
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            hard_vocab_limit=False,
            pad_id=ids.pad, bos_id=-1 if no_bos else ids.bos, eos_id=ids.eos, unk_id=ids.unk,
            pad_piece=SPECIALS[PAD], bos_piece=SPECIALS[BOS],
            eos_piece=SPECIALS[EOS], unk_piece=SPECIALS[UNK],
            minloglevel=2,  # its per-iteration INFO lines are noise in logs
        )
        return cls(model.getvalue())

    def __len__(self) -> int:
        return self._processor.get_piece_size()

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        ids = self._processor.encode(text)
        self.unk_count += sum(token == self.special_tokens.unk for token in ids)
        return ids + [self.special_tokens.eos] if add_eos else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> detokenized text, stopping at the first EOS and skipping PAD and BOS."""
        specials, kept = self.special_tokens, []
        for token in ids:
            token = int(token)
            if token == specials.eos:
                break
            if token not in specials.never_emitted and 0 <= token < len(self):
                kept.append(token)
        return self._processor.decode(kept)

    def token_text(self, token: int) -> str:
        """The piece of one id ("▁the"), a special by its name ("</s>"); for labels, not for
        decoding."""
        return self._processor.id_to_piece(int(token))

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.model_proto)

    @classmethod
    def load(cls, path: str | Path) -> SentencePieceVocab:
        """The model `save` wrote; a file that is not one raises FileFormatError naming it."""
        try:
            return cls(Path(path).read_bytes())
        except RuntimeError:  # sentencepiece's parse failure: its message names a source line
            raise FileFormatError(f"{path}: not a SentencePiece model (the serialized model "
                                  "proto that SentencePiece writes)") from None
        except ValueError as error:  # a model without the pieces a vocabulary needs
            raise FileFormatError(f"{path}: {error}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SentencePieceVocab) and self.model_proto == other.model_proto


class TokenizerVocab:
    """A Hugging Face `tokenizers` tokenizer (a `tokenizer.json`, e.g. BART's byte-level BPE)
    with the special ids of the checkpoint it came with, and the ids it puts before every text
    (`prefix`: BART's `<s>`, which its post-processor adds to sources and targets alike).

    `encode` gives prefix + the tokenizer's ids (its own special tokens not added) + eos;
    `decode` stops at eos and detokenizes with the tokenizer's special tokens skipped. Saved as
    one JSON file: {"tokenizer": the tokenizer.json text, "special_tokens": {...}, "prefix": [...]}.
    """

    separator = " "  # error rates over decoded text count whitespace-separated words

    def __init__(
        self, tokenizer_json: str, special_tokens: SpecialTokens, prefix: Sequence[int] = ()
    ) -> None:
        from tokenizers import Tokenizer  # imported here: only pretrained BART runs need it

        self.tokenizer_json = tokenizer_json
        self._tokenizer = Tokenizer.from_str(tokenizer_json)
        self.special_tokens = special_tokens
        self.prefix = [int(token) for token in prefix]
        self.unk_count = 0

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        self.unk_count += sum(token == self.special_tokens.unk for token in ids)
        ids = self.prefix + ids
        return ids + [self.special_tokens.eos] if add_eos else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> detokenized text, stopping at the first EOS, special tokens skipped."""
        kept = []
        for token in ids:
            token = int(token)
            if token == self.special_tokens.eos:
                break
            if 0 <= token < len(self):
                kept.append(token)
        return self._tokenizer.decode(kept, skip_special_tokens=True)

    def token_text(self, token: int) -> str:
        """The token of one id (byte-level BPE shows a leading space as "Ġ")."""
        return self._tokenizer.id_to_token(int(token)) or f"<{int(token)}>"

    def token_id(self, token: str) -> int:
        """The id of a token given by name ("<s>") or as digits."""
        found = int(token) if token.isdigit() else self._tokenizer.token_to_id(token)
        if found is None or not 0 <= found < len(self):
            raise ValueError(f"token {token!r} is not in the vocabulary")
        return found

    def to_dict(self) -> dict:
        specials = dataclasses.asdict(self.special_tokens)
        return {"tokenizer": self.tokenizer_json, "special_tokens": specials, "prefix": self.prefix}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> TokenizerVocab:
        """The vocabulary `save` wrote; a file that is not one raises FileFormatError naming it."""
        expected = ('expected JSON {"tokenizer": string, "special_tokens": {pad, bos, eos, unk}, '
                    '"prefix": [ids]}')
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(data["tokenizer"], SpecialTokens(**data["special_tokens"]), data["prefix"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
            raise FileFormatError(f"{path}: not a tokenizer vocabulary ({error}; {expected})") from None
        except Exception as error:  # tokenizers' own error for a tokenizer it cannot parse
            raise FileFormatError(f"{path}: not a tokenizer vocabulary ({error})") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenizerVocab) and self.to_dict() == other.to_dict()


class ByteVocab:
    """ByT5's vocabulary: a text's UTF-8 bytes, each as its value + 3 after the three specials
    (pad 0, eos 1, unk 2; the decoder starts from pad), as transformers' ByT5Tokenizer has it.
    No file describes it, so it saves as a small JSON that names it."""

    separator = " "  # error rates over decoded text count whitespace-separated words
    special_tokens = SpecialTokens(pad=0, bos=0, eos=1, unk=2)
    OFFSET = 3  # ids below are the specials
    unk_count = 0  # every byte has an id

    def __len__(self) -> int:
        return self.OFFSET + 256

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        ids = [byte + self.OFFSET for byte in text.encode("utf-8")]
        return ids + [self.special_tokens.eos] if add_eos else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text, stopping at the first EOS; specials and ids past the bytes (ByT5's
        extra ids) skipped, and an incomplete UTF-8 sequence dropped (as the reference does)."""
        kept = bytearray()
        for token in ids:
            token = int(token)
            if token == self.special_tokens.eos:
                break
            if self.OFFSET <= token < len(self):
                kept.append(token - self.OFFSET)
        return kept.decode("utf-8", errors="ignore")

    def token_text(self, token: int) -> str:
        token = int(token)
        names = {0: "<pad>", 1: "</s>", 2: "<unk>"}
        return names.get(token) or (repr(bytes([token - self.OFFSET])) if token < len(self) else f"<{token}>")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"vocabulary": "bytes", "offset": self.OFFSET}))

    @classmethod
    def load(cls, path: str | Path) -> ByteVocab:
        """The vocabulary `save` wrote; a file that is not one raises FileFormatError naming it."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise FileFormatError(f"{path}: not a byte vocabulary ({error})") from None
        if data != {"vocabulary": "bytes", "offset": cls.OFFSET}:
            raise FileFormatError(f'{path}: not a byte vocabulary (expected {{"vocabulary": "bytes", '
                                  f'"offset": {cls.OFFSET}}})')
        return cls()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteVocab)


def _sentencepiece_special_tokens(processor: spm.SentencePieceProcessor) -> SpecialTokens:
    """A SentencePiece model's special ids; bos is pad when the model has no bos piece."""
    pad, bos, eos, unk = (processor.pad_id(), processor.bos_id(), processor.eos_id(),
                          processor.unk_id())
    missing = [name for name, i in (("pad", pad), ("eos", eos), ("unk", unk)) if i < 0]
    if missing:
        raise ValueError(f"SentencePiece model has no {'/'.join(missing)} piece (special ids "
                         f"pad={pad}, bos={bos}, eos={eos}, unk={unk}); padding and decoding "
                         "need pad, eos and unk")
    return SpecialTokens(pad=pad, bos=pad if bos < 0 else bos, eos=eos, unk=unk)


class Vocab(Protocol):
    """What the pipeline, training and decoding need from a vocabulary."""

    separator: str
    special_tokens: SpecialTokens

    def __len__(self) -> int: ...
    def encode(self, text: str, add_eos: bool = True) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def token_text(self, token: int) -> str: ...
    def save(self, path: str | Path) -> None: ...


# File suffix of each vocabulary kind in a workdir: `src_vocab.json`, `tgt_vocab.model`, ...
VOCAB_SUFFIXES: dict[str, tuple[str, type]] = {
    "symbol": (".json", SymbolVocab),
    "sentencepiece": (".model", SentencePieceVocab),
    "tokenizer": (".tokenizer.json", TokenizerVocab),  # a checkpoint's (pretrained_tokenizer.py)
    "bytes": (".bytes.json", ByteVocab),  # ByT5's
    "fairseq": (".fairseq.json", FairseqVocab),  # mBART's (fairseq_vocab.py)
    "pieces": (".pieces.json", PieceVocab),  # Marian's and PEGASUS's (piece_vocab.py)
}


VOCAB_KINDS = tuple(VOCAB_SUFFIXES)


def model_special_tokens(src_vocab: Vocab, tgt_vocab: Vocab) -> SpecialTokens:
    """The special tokens a model over these vocabularies is built with: the target's. The model
    reads only pad on the source side (its padding mask), so the source must pad with that id."""
    src_pad, tgt_pad = src_vocab.special_tokens.pad, tgt_vocab.special_tokens.pad
    if src_pad != tgt_pad:
        raise ValueError(f"the source vocabulary pads with id {src_pad} but the target vocabulary "
                         f"with {tgt_pad}; one model needs one pad id")
    return tgt_vocab.special_tokens


def load_vocab(path_stem: str | Path) -> Vocab | None:
    """The vocabulary saved at `path_stem` + a kind's suffix, or None when none is there."""
    found = [(kind, Path(f"{path_stem}{suffix}"), cls)
             for kind, (suffix, cls) in VOCAB_SUFFIXES.items() if Path(f"{path_stem}{suffix}").exists()]
    if len(found) > 1:
        raise ValueError(f"{path_stem}: vocabularies of several kinds: {[str(p) for _, p, _ in found]}")
    return found[0][2].load(found[0][1]) if found else None


def vocab_kind(vocab: Vocab) -> str:
    return next(kind for kind, (_, cls) in VOCAB_SUFFIXES.items() if isinstance(vocab, cls))


def save_vocab(vocab: Vocab, path_stem: str | Path) -> None:
    vocab.save(f"{path_stem}{VOCAB_SUFFIXES[vocab_kind(vocab)][0]}")
