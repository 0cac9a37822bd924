"""The number task of bench/exposure_study.py: its shifted test splits hold what they must and the
other splits none of it; no number is in two splits. Checked on the digits themselves, not
through the builder's own predicate."""


import pytest
from conftest import load_bench

exposure_data = load_bench("exposure_data")
SIZES = {"train": 3000, "validation": 200, "test": 400, "test_pattern": 300, "test_magnitude": 300}


def _pattern(n: int) -> bool:
    digits = str(n)
    return len(digits) == 5 and digits[0] in "3456789" and digits[-3] == "0"


ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _below_thousand(n: int) -> str:
    """British English words of 1 <= n < 1000 ("three hundred and five")."""
    hundreds, rest = divmod(n, 100)
    tail = ONES[rest] if rest < 20 else TENS[rest // 10] + (f"-{ONES[rest % 10]}" if rest % 10
                                                            else "")
    if not hundreds:
        return tail
    return f"{ONES[hundreds]} hundred" + (f" and {tail}" if rest else "")


def _words(n: int) -> str:
    """British English words of 0 <= n < 1_000_000, written here independently of num2words."""
    if n < 1000:
        return _below_thousand(n) if n else "zero"
    thousands, rest = divmod(n, 1000)
    head = f"{_below_thousand(thousands)} thousand"
    if not rest:
        return head
    return head + (", " if rest >= 100 else " and ") + _below_thousand(rest)


def _tokens(n: int) -> list[str]:
    return _words(n).replace(",", " ,").split()


def test_words_stand_in_spells_numbers_as_expected():
    assert [_words(n) for n in (0, 12, 100, 7080, 40005, 45600, 75812, 123456)] == [
        "zero", "twelve", "one hundred", "seven thousand and eighty", "forty thousand and five",
        "forty-five thousand, six hundred", "seventy-five thousand, eight hundred and twelve",
        "one hundred and twenty-three thousand, four hundred and fifty-six"]


@pytest.fixture(scope="module")
def splits():
    return exposure_data.split_numbers(seed=3, sizes=SIZES)


def test_sizes_and_no_number_in_two_splits(splits):
    assert {split: len(numbers) for split, numbers in splits.items()} == SIZES
    everything = [n for numbers in splits.values() for n in numbers]
    assert len(set(everything)) == len(everything)


def test_shifted_splits_hold_their_shift_and_no_other_split_does(splits):
    assert all(_pattern(n) for n in splits["test_pattern"])
    assert all(1 <= n < 1000 for n in splits["test_magnitude"])
    for split in ("train", "validation", "test"):
        assert not any(_pattern(n) for n in splits[split]), split
        small = sum(n < 1000 for n in splits[split])
        assert small == round(0.02 * SIZES[split]), split  # the rare magnitude, 2%
        assert all(0 <= n < 100_000 for n in splits[split])


def test_training_shows_each_half_of_the_pattern_but_never_both(splits):
    digits = [str(n) for n in splits["train"]]
    assert sum(len(d) == 5 and d[0] in "3456789" and d[-3] != "0" for d in digits) > 100
    assert sum(len(d) >= 4 and d[-3] == "0" for d in digits) > 20  # below 30_000


def test_shifted_targets_use_only_words_and_word_pairs_of_training(splits):
    """The shifts are new combinations of seen pieces, not unseen vocabulary (the comma a word of
    its own: "forty-five thousand , six hundred")."""
    seen = [_tokens(n) for n in splits["train"]]
    words = {w for t in seen for w in t}
    pairs = {p for t in seen for p in zip(t, t[1:], strict=False)}
    for split in ("test_pattern", "test_magnitude"):
        for n in splits[split]:
            target = _tokens(n)
            assert set(target) <= words, (split, n)
            assert set(zip(target, target[1:], strict=False)) <= pairs, (split, n)


def test_files_have_a_header_and_one_number_a_line(tmp_path):
    counts = exposure_data.write_splits(str(tmp_path), lambda n: f"<{n}>", seed=1)
    lines = (tmp_path / "test_pattern.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "source\ttarget"
    assert len(lines) - 1 == counts["test_pattern"]
    source, target = lines[1].split("\t")
    assert target == f"<{source}>" and _pattern(int(source))
