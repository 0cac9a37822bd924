"""The number task of `bench/exposure_study.py`: digits -> English number words, character level,
with one in-distribution and two shifted test splits, built in code.

The in-distribution numbers are 0 .. 99_999 drawn uniformly, plus six-digit numbers as a rare
magnitude (`RARE_SHARE` of each in-distribution split). Two shifts:
- `test_pattern`: held-out digit patterns, numbers of at least four digits whose hundreds digit is
  0 (40_005 -> "forty thousand and five", 7_080 -> "seven thousand and eighty"). No split but this
  one holds such a number, so the model never reads "thousand and" before its last group.
- `test_magnitude`: six-digit numbers, the magnitude that is `RARE_SHARE` of training.
Every source occurs in one split only. The words come from a `words(int) -> str` function
(`num2words` in the study, a stand-in in the tests).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

RARE_SHARE = 0.015  # six-digit numbers in train / validation / test
SPLIT_SIZES = {"train": 4_000, "validation": 500, "test": 1_000, "test_pattern": 1_000,
               "test_magnitude": 1_000}
SPLITS = tuple(SPLIT_SIZES)


def held_out_pattern(n: int) -> bool:
    """A number of four or more digits with 0 as its hundreds digit (40_005, 1_020, 300_099)."""
    return n >= 1000 and (n // 100) % 10 == 0


def _draw(rng: random.Random, rare: bool) -> int:
    """One number outside the held-out pattern: six digits when `rare`, else below 100_000."""
    while True:
        n = rng.randrange(100_000, 1_000_000) if rare else rng.randrange(0, 100_000)
        if not held_out_pattern(n):
            return n


def _draw_pattern(rng: random.Random) -> int:
    """A number below 100_000 in the held-out pattern."""
    while True:
        n = rng.randrange(1000, 100_000)
        if held_out_pattern(n):
            return n


def split_numbers(seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, list[int]]:
    """{split: numbers}, every number in one split only (drawn without replacement across all).

    In-distribution splits hold round(RARE_SHARE * size) six-digit numbers, the rest below
    100_000; none holds a `held_out_pattern` number; `test_magnitude` holds six-digit numbers
    only, `test_pattern` pattern numbers below 100_000 only."""
    sizes = sizes or SPLIT_SIZES
    rng = random.Random(seed)
    used: set[int] = set()

    def fresh(draw: Callable[[], int], count: int) -> list[int]:
        out = []
        while len(out) < count:
            n = draw()
            if n not in used:
                used.add(n)
                out.append(n)
        return out

    splits = {}
    for split in ("test", "validation", "train"):  # the tests first: train takes what is left
        rare = round(RARE_SHARE * sizes[split])
        numbers = fresh(lambda: _draw(rng, True), rare) + fresh(lambda: _draw(rng, False),
                                                                 sizes[split] - rare)
        rng.shuffle(numbers)
        splits[split] = numbers
    splits["test_pattern"] = fresh(lambda: _draw_pattern(rng), sizes["test_pattern"])
    splits["test_magnitude"] = fresh(lambda: _draw(rng, True), sizes["test_magnitude"])
    return {split: splits[split] for split in sizes}


def write_splits(directory: str, words: Callable[[int], str], seed: int = 0) -> dict[str, int]:
    """Writes `{split}.tsv` (a header row `source TAB target`, then digits TAB words, one number a
    line) for every split into
    `directory`, each file renamed into place; returns the line count of each."""
    os.makedirs(directory, exist_ok=True)
    counts = {}
    for split, numbers in split_numbers(seed).items():
        path = os.path.join(directory, f"{split}.tsv")
        with open(path + ".partial", "w", encoding="utf-8") as f:
            f.write("source\ttarget\n")
            for n in numbers:
                f.write(f"{n}\t{words(n)}\n")
        os.replace(path + ".partial", path)
        counts[split] = len(numbers)
    return counts
