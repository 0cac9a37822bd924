"""Symbol vocabularies with fixed special ids: PAD=0, BOS=1, EOS=2, UNK=3.

PAD must be 0 because every padded batch and every post-EOS position is filled with zeros.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


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
            seen.update(cls._split(text, separator))
        return cls(sorted(seen), separator)

    @staticmethod
    def _split(text: str, separator: str) -> list[str]:
        return list(text) if separator == "" else text.split(separator)

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        """Text -> ids; unknown symbols become UNK and are counted in `unk_count`."""
        ids = []
        for symbol in self._split(text, self.separator):
            if symbol == "":
                continue
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
