"""The number task of `bench/exposure_study.py`: digits -> English number words, character level,
with one in-distribution and two shifted test splits, built in code.

The in-distribution numbers are 1_000 .. 99_999 drawn uniformly, plus numbers 1 .. 999 as a
rare magnitude (`RARE_SHARE` of each in-distribution split). Two shifts, each a new
combination of pieces training shows (every word and word bigram of `test_pattern`'s targets
occurs in the training targets; tests/test_exposure_data.py checks it):
- `test_pattern`: an internal zero group in a held-out range, numbers 30_000 .. 99_999 whose
  hundreds digit is 0 (45_080 -> "forty-five thousand and eighty"). Training holds the zero
  hundreds digit below 30_000 ("seven thousand and eighty", "twenty-five thousand and five")
  and every thousands group above it, never the two together.
- `test_magnitude`: numbers 1 .. 999 ("seven hundred and forty-five": the end of a longer
  number's words, which must stop there), the magnitude that is `RARE_SHARE` of training.
Every source occurs in one split only. The words come from a `words(int) -> str` function
(`num2words` in the study, a stand-in in the tests).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

RARE_SHARE = 0.02  # numbers in RARE_RANGE in train / validation / test
SPLIT_SIZES = {"train": 4_000, "validation": 500, "test": 1_000, "test_pattern": 1_000,
               "test_magnitude": 800}  # 800 of the 1_000 numbers below 1_000 the rest leave
SPLITS = tuple(SPLIT_SIZES)


PATTERN_FROM = 30_000  # the held-out pattern: a hundreds digit 0 from here to 99_999
RARE_RANGE = (1, 1_000)  # the rare magnitude, [low, high) ("zero" is in no other number)


def held_out_pattern(n: int) -> bool:
    """A number PATTERN_FROM .. 99_999 with 0 as its hundreds digit (45_080, 30_001)."""
    return PATTERN_FROM <= n < 100_000 and (n // 100) % 10 == 0


def _draw(rng: random.Random, rare: bool) -> int:
    """One number outside the held-out pattern: in RARE_RANGE when `rare`, else 1_000 .. 99_999."""
    while True:
        n = rng.randrange(*RARE_RANGE) if rare else rng.randrange(1_000, 100_000)
        if not held_out_pattern(n):
            return n


def _draw_pattern(rng: random.Random) -> int:
    """A number in the held-out pattern."""
    while True:
        n = rng.randrange(PATTERN_FROM, 100_000)
        if held_out_pattern(n):
            return n


def split_numbers(seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, list[int]]:
    """{split: numbers}, every number in one split only (drawn without replacement across all).

    In-distribution splits hold round(RARE_SHARE * size) numbers in RARE_RANGE, the rest in
    1_000 .. 99_999; none holds a `held_out_pattern` number; `test_magnitude` holds RARE_RANGE numbers
    only, `test_pattern` five-digit pattern numbers only."""
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
