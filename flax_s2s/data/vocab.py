"""Vocabularies with fixed special ids: PAD=0, BOS=1, EOS=2, UNK=3.

`SymbolVocab` maps characters or whitespace-separated symbols (phones); `SentencePieceVocab` wraps a
SentencePiece model trained on a training split. Both offer `encode`, `decode`, `token_text`, `len`,
`save` and `load`. PAD must be 0 because every padded batch and every post-EOS position is filled with zeros.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import sentencepiece as spm

PAD, BOS, EOS, UNK = 0, 1, 2, 3
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
        data = json.loads(Path(path).read_text())
        return cls(data["symbols"], data["separator"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SymbolVocab) and self.to_dict() == other.to_dict()


class SentencePieceVocab:
    """A SentencePiece model (unigram or BPE) whose special ids are PAD=0, BOS=1, EOS=2, UNK=3.

    `decode` returns detokenized text, so BLEU and chrF score what a user would read.
    """

    separator = " "  # error rates over decoded text count whitespace-separated words

    def __init__(self, model_proto: bytes) -> None:
        self.model_proto = model_proto
        self._processor = spm.SentencePieceProcessor(model_proto=model_proto)
        specials = (self._processor.pad_id(), self._processor.bos_id(),
                    self._processor.eos_id(), self._processor.unk_id())
        if specials != (PAD, BOS, EOS, UNK):
            raise ValueError(f"SentencePiece model has special ids {specials}; need {(PAD, BOS, EOS, UNK)}")
        self.unk_count = 0

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
        max_sentences: int = 1_000_000,
    ) -> SentencePieceVocab:
        """Trains on `texts` (at most `max_sentences` of them, sampled by SentencePiece).

        `vocab_size` counts the four specials; on a small corpus the vocabulary may come out
        smaller (hard_vocab_limit=False) rather than fail.
        """
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
            pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK,
            pad_piece=SPECIALS[PAD], bos_piece=SPECIALS[BOS],
            eos_piece=SPECIALS[EOS], unk_piece=SPECIALS[UNK],
            minloglevel=2,  # its per-iteration INFO lines are noise in logs
        )
        return cls(model.getvalue())

    def __len__(self) -> int:
        return self._processor.get_piece_size()

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        ids = self._processor.encode(text)
        self.unk_count += sum(token == UNK for token in ids)
        return ids + [EOS] if add_eos else ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> detokenized text, stopping at the first EOS and skipping PAD and BOS."""
        kept = []
        for token in ids:
            token = int(token)
            if token == EOS:
                break
            if token not in (PAD, BOS) and 0 <= token < len(self):
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
        return cls(Path(path).read_bytes())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SentencePieceVocab) and self.model_proto == other.model_proto


class Vocab(Protocol):
    """What the pipeline, training and decoding need from a vocabulary."""

    separator: str

    def __len__(self) -> int: ...
    def encode(self, text: str, add_eos: bool = True) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def token_text(self, token: int) -> str: ...
    def save(self, path: str | Path) -> None: ...


# File suffix of each vocabulary kind in a workdir: `src_vocab.json`, `tgt_vocab.model`, ...
VOCAB_SUFFIXES: dict[str, tuple[str, type]] = {
    "symbol": (".json", SymbolVocab),
    "sentencepiece": (".model", SentencePieceVocab),
}


VOCAB_KINDS = tuple(VOCAB_SUFFIXES)


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
