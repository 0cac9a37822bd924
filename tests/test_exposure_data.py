"""The number task of bench/exposure_study.py: its shifted test splits hold what they must and the
other splits none of it; no number is in two splits. Checked on the digits themselves, not
through the builder's own predicate."""

import importlib.util
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


exposure_data = _load("exposure_data")
SIZES = {"train": 3000, "validation": 200, "test": 400, "test_pattern": 300, "test_magnitude": 300}


def _pattern(n: int) -> bool:
    digits = str(n)
    return len(digits) >= 4 and digits[-3] == "0"


@pytest.fixture(scope="module")
def splits():
    return exposure_data.split_numbers(seed=3, sizes=SIZES)


def test_sizes_and_no_number_in_two_splits(splits):
    assert {split: len(numbers) for split, numbers in splits.items()} == SIZES
    everything = [n for numbers in splits.values() for n in numbers]
    assert len(set(everything)) == len(everything)


def test_shifted_splits_hold_their_shift_and_no_other_split_does(splits):
    assert all(_pattern(n) and n < 100_000 for n in splits["test_pattern"])
    assert all(len(str(n)) == 6 and not _pattern(n) for n in splits["test_magnitude"])
    for split in ("train", "validation", "test"):
        assert not any(_pattern(n) for n in splits[split]), split
        six = sum(len(str(n)) == 6 for n in splits[split])
        assert six == round(0.015 * SIZES[split]), split  # the rare magnitude, 1.5%
        assert all(0 <= n < 1_000_000 for n in splits[split])


def test_files_have_a_header_and_one_number_a_line(tmp_path):
    counts = exposure_data.write_splits(str(tmp_path), lambda n: f"<{n}>", seed=1)
    lines = (tmp_path / "test_pattern.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "source\ttarget"
    assert len(lines) - 1 == counts["test_pattern"]
    source, target = lines[1].split("\t")
    assert target == f"<{source}>" and _pattern(int(source))
