"""A small made-up lexicon in the `WORD<TAB>PHONES` format of CMUdict G2P files, for tests."""

from __future__ import annotations

import random
from pathlib import Path

# One phone (or two) per letter: a rule simple enough for a tiny model to start learning.
LETTER_PHONES = {
    "A": "AE", "B": "B", "C": "K", "D": "D", "E": "EH", "F": "F", "G": "G", "H": "HH", "I": "IH",
    "J": "JH", "K": "K", "L": "L", "M": "M", "N": "N", "O": "AA", "P": "P", "Q": "K", "R": "R",
    "S": "S", "T": "T", "U": "AH", "V": "V", "W": "W", "X": "K S", "Y": "Y", "Z": "Z", "'": "",
}
VOWELS = ("AE", "EH", "IH", "AA")


def pronounce(word: str) -> str:
    return " ".join(p for p in (LETTER_PHONES[c] for c in word) if p)


def lexicon_pairs(num_words: int = 300, seed: int = 0) -> list[tuple[str, str]]:
    """(WORD, PHONES) pairs in alphabetical order; every 5th word with a vowel also gets an
    alternative pronunciation (its first vowel reduced to AH) on the next line."""
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < num_words:
        words.add("".join(rng.choice("ABCDEFGHIJKLMNOPRSTUVWYZ") for _ in range(rng.randint(2, 9))))
    pairs = []
    for index, word in enumerate(sorted(words)):
        phones = pronounce(word)
        pairs.append((word, phones))
        vowel = next((p for p in phones.split() if p in VOWELS), None)
        if index % 5 == 0 and vowel:
            pairs.append((word, phones.replace(vowel, "AH", 1)))
    return pairs


def write_lexicon(path: str | Path, pairs: list[tuple[str, str]]) -> Path:
    path = Path(path)
    path.write_text("".join(f"{word}\t{phones}\n" for word, phones in pairs), encoding="utf-8")
    return path
